import AegisConfig
import Logging

/// One log record and its rendering. Pure, so tests can check every format.
///
/// Formats (each record ends with a newline):
/// - text, not the journal: `2026-11-29T04:16:17.123Z notice serving node_id=n1 pid=42`
/// - text, journal: `<5>notice serving node_id=n1 pid=42` (journald strips
///   `<5>` into the record's priority and adds its own timestamp)
/// - json: `{"time":"…","level":"notice","message":"serving","node_id":"n1","pid":"42"}`,
///   and under the journal the same object after the `<N>` prefix, so the
///   journal's MESSAGE field is exactly the JSON object and its PRIORITY is right.
///
/// A message of several lines becomes several text lines, each with the
/// prefix, so no line reaches the journal without its priority; the
/// key=value metadata follows the last. JSON keeps one line per record.
public struct LogRecord: Sendable {
    public var level: Logger.Level
    public var message: String
    public var metadata: Logger.Metadata
    public var label: String
    public var time: WallClock

    /// The label every `aegiskv` logger has unless a part names itself; only
    /// other labels are shown.
    static let defaultLabel = "aegiskv"

    public init(level: Logger.Level, message: String, metadata: Logger.Metadata, label: String, time: WallClock) {
        self.level = level
        self.message = message
        self.metadata = metadata
        self.label = label
        self.time = time
    }

    /// The syslog priority journald reads from a `<N>` prefix.
    public static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func render(format: LogOutputFormat, journal: Bool) -> String {
        let prefix = journal ? "<\(Self.syslogPriority(level))>" : ""
        switch format {
        case .json:
            return prefix + json() + "\n"
        case .text:
            let head = prefix + (journal ? "" : time.iso8601 + " ") + level.rawValue + " "
                + (label == Self.defaultLabel ? "" : "[\(label)] ")
            var lines = message.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            let pairs = metadata.keys.sorted().map { "\($0)=\(Self.textValue(metadata[$0]!))" }
            if !pairs.isEmpty {
                lines[lines.count - 1] += (lines[lines.count - 1].isEmpty ? "" : " ") + pairs.joined(separator: " ")
            }
            return lines.map { head + $0 + "\n" }.joined()
        }
    }

    /// Keys the JSON object itself uses; metadata with one of these names is
    /// written with a leading underscore instead of overwriting it.
    static let reservedJSONKeys: Set<String> = ["time", "level", "message", "logger"]

    func json() -> String {
        var out = "{\"time\":" + JSONText.string(time.iso8601)
        out += ",\"level\":" + JSONText.string(level.rawValue)
        out += ",\"message\":" + JSONText.string(message)
        if label != Self.defaultLabel { out += ",\"logger\":" + JSONText.string(label) }
        for key in metadata.keys.sorted() {
            let name = Self.reservedJSONKeys.contains(key) ? "_" + key : key
            out += "," + JSONText.string(name) + ":" + JSONText.value(metadata[key]!)
        }
        return out + "}"
    }

    /// A bare value when it is plain, else a double-quoted one with escapes,
    /// so `key=value` pairs always split back unambiguously.
    static func textValue(_ value: Logger.MetadataValue) -> String {
        let text: String
        switch value {
        case .string(let string): text = string
        case .stringConvertible(let convertible): text = convertible.description
        case .array, .dictionary: text = value.description
        }
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy {
            $0.value > 0x20 && $0.value != 0x7F && $0 != "\"" && $0 != "=" && $0 != "\\"
        }
        if plain { return text }
        return "\"" + text.unicodeScalars.map { scalar -> String in
            switch scalar {
            case "\"": return "\\\""
            case "\\": return "\\\\"
            case "\n": return "\\n"
            case "\r": return "\\r"
            case "\t": return "\\t"
            default: return scalar.value < 0x20 || scalar.value == 0x7F ? "\\x" + hex2(scalar.value) : String(scalar)
            }
        }.joined() + "\""
    }
}

func hex2(_ value: UInt32) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(value >> 4) & 15], digits[Int(value) & 15]])
}

/// JSON text for the log's JSON lines.
enum JSONText {
    static func string(_ text: String) -> String { JSONString.quoted(text) }

    static func value(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let text): return string(text)
        case .stringConvertible(let convertible): return string(convertible.description)
        case .array(let items): return "[" + items.map(Self.value).joined(separator: ",") + "]"
        case .dictionary(let members):
            return "{" + members.keys.sorted().map { string($0) + ":" + Self.value(members[$0]!) }.joined(separator: ",") + "}"
        }
    }
}
