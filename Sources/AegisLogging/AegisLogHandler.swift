import Glibc
import Logging
import Synchronization

/// The swift-log backend of `aegiskv`: writes each record to stderr in the
/// format `LogControl` says, with one write(2) per record.
///
/// The level is the shared one in `LogControl` (changed by reload) unless a
/// logger set its own.
public struct AegisLogHandler: LogHandler {
    public let label: String
    let control: LogControl
    public var metadata: Logger.Metadata = [:]
    private var ownLevel: Logger.Level?

    public init(label: String, control: LogControl) {
        self.label = label
        self.control = control
    }

    public var logLevel: Logger.Level {
        get { ownLevel ?? control.level }
        set { ownLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let record = LogRecord(
            level: event.level, message: event.message.description, metadata: merged, label: label,
            time: WallClock.now())
        StandardError.write(record.render(format: control.format, journal: control.stderrIsJournal))
    }
}

/// Seconds and nanoseconds since the epoch (UTC).
public struct WallClock: Sendable, Equatable {
    public var seconds: Int
    public var nanoseconds: Int

    public init(seconds: Int, nanoseconds: Int) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    static func now() -> WallClock {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return WallClock(seconds: spec.tv_sec, nanoseconds: spec.tv_nsec)
    }

    /// RFC 3339 in UTC with milliseconds: 2026-11-29T04:16:17.123Z.
    var iso8601: String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
            + "T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))"
            + ".\(pad(Int32(nanoseconds / 1_000_000), 3))Z"
    }
}

/// Writes whole records to fd 2. A lock keeps records from two threads
/// from interleaving when the kernel takes a record in more than one write.
enum StandardError {
    private static let lock = Mutex<Void>(())

    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        lock.withLock { _ in
            bytes.withUnsafeMutableBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return } // stderr gone: nowhere left to report it
                    offset += n
                }
            }
        }
    }
}
