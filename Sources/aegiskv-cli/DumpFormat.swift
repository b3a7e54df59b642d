import AegisProtocol
import Foundation

/// The dump file: ONE JSON document, laid out one entry per line so that
/// `restore` can read it a line at a time in constant memory (docs/cli.md
/// has the full description):
///
///     {"format":"aegiskv-dump","version":1,"source":"…","started_at_ms":…,"entries":[
///     {"key":"user:1","value":"alice"},
///     {"key":"s","value_b64":"AAEC/w==","ttl_ms":59874,"expires_at_ms":1764390059874}
///     ],"count":2,"skipped":0,"finished_at_ms":…}
///
/// Keys and values that are valid UTF-8 are JSON strings (`key`, `value`);
/// any other bytes are base64 in `key_b64` / `value_b64`.
enum DumpFormat {
    static let formatName = "aegiskv-dump"
    static let version = 1

    // MARK: - Writing

    static func writeHeader(source: String, startedAtMs: Int64, into out: WireBuffer) {
        out.append(string: #"{"format":"\#(formatName)","version":\#(version),"source":"#)
        appendString(Array(source.utf8), into: out)
        out.append(string: #","started_at_ms":\#(startedAtMs),"entries":["#)
    }

    /// One entry on its own line; `first` decides whether the previous line
    /// needs its separating comma.
    static func writeEntry(key: [UInt8], value: [UInt8], ttlMs: Int64?, expiresAtMs: Int64?, first: Bool, into out: WireBuffer) {
        out.append(first ? "\n{" : ",\n{")
        appendField("key", key, into: out)
        out.append(byte: UInt8(ascii: ","))
        appendField("value", value, into: out)
        if let ttlMs, let expiresAtMs {
            out.append(#","ttl_ms":"#)
            out.appendDecimal(Int(ttlMs))
            out.append(#","expires_at_ms":"#)
            out.appendDecimal(Int(expiresAtMs))
        }
        out.append(byte: UInt8(ascii: "}"))
    }

    static func writeTrailer(count: Int, skipped: Int, finishedAtMs: Int64, into out: WireBuffer) {
        out.append(string: "\n],\"count\":\(count),\"skipped\":\(skipped),\"finished_at_ms\":\(finishedAtMs)}\n")
    }

    /// `"name":"text"` for valid UTF-8, else `"name_b64":"base64"`.
    private static func appendField(_ name: StaticString, _ bytes: [UInt8], into out: WireBuffer) {
        out.append(byte: UInt8(ascii: "\""))
        out.append(name)
        if String(validating: bytes, as: UTF8.self) != nil {
            out.append("\":")
            appendString(bytes, into: out)
        } else {
            out.append("_b64\":\"")
            out.append(string: Data(bytes).base64EncodedString())
            out.append(byte: UInt8(ascii: "\""))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A JSON string of valid UTF-8 bytes: quotes, backslashes and control
    /// characters escaped, everything else copied in runs. Reads through a
    /// typed pointer with numeric literals so debug builds stay fast too.
    static func appendString(_ bytes: [UInt8], into out: WireBuffer) {
        out.append(byte: 0x22)
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            let count = buffer.count
            var runStart = 0
            var index = 0
            while index < count {
                let byte = base[index]
                if byte >= 0x20 && byte != 0x22 && byte != 0x5C {
                    index += 1
                    continue
                }
                if runStart < index { out.append(UnsafeRawBufferPointer(start: base + runStart, count: index - runStart)) }
                switch byte {
                case 0x22: out.append("\\\"")
                case 0x5C: out.append("\\\\")
                case 0x0A: out.append("\\n")
                case 0x0D: out.append("\\r")
                case 0x09: out.append("\\t")
                default:
                    out.append("\\u00")
                    out.append(byte: hexDigits[Int(byte >> 4)])
                    out.append(byte: hexDigits[Int(byte & 0xF)])
                }
                index += 1
                runStart = index
            }
            if runStart < count { out.append(UnsafeRawBufferPointer(start: base + runStart, count: count - runStart)) }
        }
        out.append(byte: 0x22)
    }

    // MARK: - Reading

    struct Header: Decodable {
        var format: String
        var version: Int
    }

    struct Trailer: Decodable {
        var count: Int
    }

    struct Entry {
        var key: [UInt8]
        var value: [UInt8]
        /// Remaining time to live when dumped, and the absolute expiry (unix ms); both or neither.
        var ttlMs: Int64?
        var expiresAtMs: Int64?
    }

    private static let headerSuffix = Array(#""entries":["#.utf8)

    /// The first line: `{...,"entries":[`, checked as JSON by closing it.
    static func parseHeader(_ line: UnsafeRawBufferPointer) throws(LineProblem) -> Header {
        guard line.first == UInt8(ascii: "{"), line.count >= headerSuffix.count,
              Array(line[(line.count - headerSuffix.count)...]) == headerSuffix
        else {
            throw LineProblem("not an aegiskv-cli dump: the first line must be {\"format\":\"aegiskv-dump\",...,\"entries\":[ as dump writes it (a file reformatted by jq or an editor cannot be streamed)")
        }
        var document = Data(line)
        document.append(contentsOf: Array("]}".utf8))
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: document)
        } catch {
            throw LineProblem("not an aegiskv-cli dump header: \(describe(error))")
        }
        guard header.format == formatName else {
            throw LineProblem("not an aegiskv-cli dump: format is \"\(header.format)\", expected \"\(formatName)\"")
        }
        guard header.version == version else {
            throw LineProblem("dump format version \(header.version) is not supported (this aegiskv-cli reads version \(version))")
        }
        return header
    }

    /// A line that starts with `]`: the end of the entries and the counts.
    static func parseTrailer(_ line: UnsafeRawBufferPointer) throws(LineProblem) -> Trailer {
        var document = Data(#"{"entries":["#.utf8)
        document.append(contentsOf: line)
        do {
            return try JSONDecoder().decode(Trailer.self, from: document)
        } catch {
            throw LineProblem("the closing line is not ],\"count\":N,...}: \(describe(error))")
        }
    }

    /// The fields of an entry line; their lengths differ, which makes matching cheap.
    private enum Field: Int {
        case key, keyBase64, value, valueBase64, ttl, expiresAt

        static let names: [[UInt8]] = ["key", "key_b64", "value", "value_b64", "ttl_ms", "expires_at_ms"].map { Array($0.utf8) }

        init?(_ name: [UInt8]) {
            let candidate: Field
            switch name.count {
            case 3: candidate = .key
            case 7: candidate = .keyBase64
            case 5: candidate = .value
            case 9: candidate = .valueBase64
            case 6: candidate = .ttl
            case 13: candidate = .expiresAt
            default: return nil
            }
            guard name == Field.names[candidate.rawValue] else { return nil }
            self = candidate
        }

        var name: String { String(decoding: Field.names[rawValue], as: UTF8.self) }
    }

    /// One entry line without its separating comma.
    static func parseEntry(_ line: UnsafeRawBufferPointer) throws(LineProblem) -> Entry {
        var key: [UInt8]? = nil, value: [UInt8]? = nil
        var ttlMs: Int64? = nil, expiresAtMs: Int64? = nil
        var seen = 0
        try FlatJSON.parseObject(line) { name, content throws(LineProblem) in
            // Names not listed are later minor additions to version 1: ignored.
            guard let field = Field(name) else { return }
            guard seen & (1 << field.rawValue) == 0 else { throw LineProblem("the field \"\(field.name)\" appears twice") }
            seen |= 1 << field.rawValue
            switch field {
            case .key, .keyBase64:
                if key != nil { throw LineProblem("the entry has both key and key_b64") }
                key = try bytes(content, name: field.name, base64: field == .keyBase64)
            case .value, .valueBase64:
                if value != nil { throw LineProblem("the entry has both value and value_b64") }
                value = try bytes(content, name: field.name, base64: field == .valueBase64)
            case .ttl:
                ttlMs = try positive(content, name: field.name)
            case .expiresAt:
                expiresAtMs = try positive(content, name: field.name)
            }
        }
        guard let key else { throw LineProblem("the entry has no key (nor key_b64)") }
        guard let value else { throw LineProblem("the entry has no value (nor value_b64)") }
        guard (ttlMs == nil) == (expiresAtMs == nil) else {
            throw LineProblem("an entry with a TTL needs both ttl_ms and expires_at_ms")
        }
        return Entry(key: key, value: value, ttlMs: ttlMs, expiresAtMs: expiresAtMs)
    }

    private static func bytes(_ field: FlatJSON.Value, name: String, base64: Bool) throws(LineProblem) -> [UInt8] {
        guard case .string(let text) = field else { throw LineProblem("\"\(name)\" must be a string") }
        guard base64 else { return text }
        guard let data = Data(base64Encoded: Data(text)) else { throw LineProblem("\"\(name)\" is not valid base64") }
        return Array(data)
    }

    private static func positive(_ field: FlatJSON.Value, name: String) throws(LineProblem) -> Int64? {
        switch field {
        case .null: return nil
        case .integer(let number) where number > 0: return number
        default: throw LineProblem("\"\(name)\" must be an integer above 0 (or null)")
        }
    }

    private static func describe(_ error: Error) -> String {
        guard let error = error as? DecodingError else { return "not valid JSON" }
        switch error {
        case .dataCorrupted: return "not valid JSON"
        case .keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            let field = context.codingPath.last?.stringValue ?? "value"
            return "field \"\(field)\" has the wrong type"
        @unknown default: return "not valid JSON"
        }
    }
}

/// What is wrong with one line of a dump; the reader adds the file and line number.
struct LineProblem: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
