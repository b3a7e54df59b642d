import Glibc
import Logging
import Synchronization

/// How a record is written: readable text, or one JSON object per line.
public enum LogOutputFormat: UInt8, Sendable {
    case text = 0
    case json = 1
}

/// The process-wide logging state every `AegisLogHandler` reads on each
/// record: the least severe level written, the line format, and whether
/// stderr is the systemd journal.
///
/// Level and format are atomics so that a SIGHUP reload changes them for
/// every logger at once (reactors included) without a lock: a reader sees
/// the new level soon, which is all a log level needs.
public final class LogControl: Sendable {
    /// The instance `LoggingSystem` is bootstrapped with (see `AegisLogging.bootstrap`).
    public static let shared = LogControl()

    private let levelIndex = Atomic<UInt8>(LogControl.index(of: .info))
    private let formatRaw = Atomic<UInt8>(LogOutputFormat.text.rawValue)
    private let journal = Atomic<Bool>(false)

    public init() {}

    public var level: Logger.Level {
        get { Logger.Level.allCases[Int(levelIndex.load(ordering: .relaxed))] }
        set { levelIndex.store(Self.index(of: newValue), ordering: .relaxed) }
    }

    public var format: LogOutputFormat {
        get { LogOutputFormat(rawValue: formatRaw.load(ordering: .relaxed)) ?? .text }
        set { formatRaw.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// True when stderr is a journald stream: lines then carry a `<N>`
    /// priority prefix and text lines no timestamp (the journal adds one).
    public var stderrIsJournal: Bool {
        get { journal.load(ordering: .relaxed) }
        set { journal.store(newValue, ordering: .relaxed) }
    }

    private static func index(of level: Logger.Level) -> UInt8 {
        UInt8(Logger.Level.allCases.firstIndex(of: level)!)
    }
}

public enum AegisLogging {
    /// Bootstraps swift-log with `AegisLogHandler` on `LogControl.shared`,
    /// after deciding whether stderr is the journal. Call once, first thing
    /// in `main`, so even start-up errors get the priority prefix.
    public static func bootstrap(environment: [String: String]) {
        let control = LogControl.shared
        control.stderrIsJournal = JournalStream.isStandardError(environment["JOURNAL_STREAM"])
        LoggingSystem.bootstrap { label in AegisLogHandler(label: label, control: control) }
    }
}

/// systemd connects a service's stderr to journald and sets
/// `JOURNAL_STREAM=<device>:<inode>` of that stream. The variable alone is
/// not enough (it is inherited by children whose stderr was redirected), so
/// it is compared with fstat(2) of fd 2, as sd-journal documents.
public enum JournalStream {
    public static func isStandardError(_ value: String?) -> Bool {
        guard let value, let (device, inode) = parse(value) else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// "<device>:<inode>", both decimal.
    static func parse(_ value: String) -> (UInt64, UInt64)? {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return nil }
        return (device, inode)
    }
}
