import AegisConfig
import Glibc

/// Where one reactor's log lives and how its files are named:
///
///     <wal_dir>/layout                      reactors=N num_shards=M
///     <wal_dir>/reactor-<i>/segment-<n>.wal numbered from 1, in write order
///     <wal_dir>/reactor-<i>/snapshot-<n>.snap covers every segment below n
///     <wal_dir>/reactor-<i>/*.tmp           a snapshot being written, or the
///                                           next segment being prepared
///
/// Numbers are zero-padded to 20 digits so `ls` lists files in log order.
struct WALDirectory {
    let path: String

    init(walDirectory: String, reactor: Int) {
        path = walDirectory + "/reactor-\(reactor)"
    }

    func segmentPath(_ number: UInt64) -> String { path + "/segment-" + Self.padded(number) + ".wal" }
    func snapshotPath(_ number: UInt64) -> String { path + "/snapshot-" + Self.padded(number) + ".snap" }
    func snapshotTemporaryPath(_ number: UInt64) -> String { snapshotPath(number) + ".tmp" }
    /// The next segment, written with zeros ahead of need (fsync mode).
    var preparedSegmentPath: String { path + "/prepared-segment.tmp" }

    static func padded(_ number: UInt64) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    struct Listing {
        var segments: [UInt64] = []
        var snapshots: [UInt64] = []
        var temporaries: [String] = []
    }

    /// The numbered files present, each list sorted ascending.
    func list() throws(WALError) -> Listing {
        guard let names = Self.names(in: path) else { throw .system("opendir", path, errno) }
        var listing = Listing()
        for name in names {
            if name.hasSuffix(".tmp") {
                listing.temporaries.append(path + "/" + name)
            } else if name.hasPrefix("segment-"), name.hasSuffix(".wal"),
                      let number = UInt64(name.dropFirst(8).dropLast(4)) {
                listing.segments.append(number)
            } else if name.hasPrefix("snapshot-"), name.hasSuffix(".snap"),
                      let number = UInt64(name.dropFirst(9).dropLast(5)) {
                listing.snapshots.append(number)
            }
        }
        listing.segments.sort()
        listing.snapshots.sort()
        return listing
    }

    /// The names in a directory other than . and .., or nil when it cannot be opened.
    static func names(in path: String) -> [String]? {
        guard let directory = opendir(path) else { return nil }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Creates the directory and its parents (like mkdir -p).
    static func create(_ path: String) throws(WALError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o750) != 0 && errno != EEXIST { throw .system("mkdir", prefix, errno) }
        }
    }

    /// fsync on a directory makes the names created or removed in it durable.
    static func syncDirectory(_ path: String, door: KernelDoor = .production) throws(WALError) {
        let synced = door.syncDirectory(path)
        if synced != 0 { throw .system("fsync", path, -synced) }
    }
}

/// The reactor and shard layout a log was written with. A reactor's log
/// holds exactly the shards that reactor owned, so a log is replayed under
/// its own layout; a changed reactor count is re-laid out first
/// (WALRelayout), a changed shard count is refused.
enum WALLayout {
    static func line(reactors: Int, shards: Int) -> String { "reactors=\(reactors) num_shards=\(shards)" }

    static func verifyOrRecord(walDirectory: String, reactors: Int, shards: Int) throws(WALError) {
        let path = walDirectory + "/layout"
        let expected = line(reactors: reactors, shards: shards)
        if let existing = Platform.readText(path, limit: 4096) {
            let found = existing.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            if found == expected { return }
            throw .layoutMismatch(path: path, found: found, expected: expected)
        }
        try write(walDirectory: walDirectory, reactors: reactors, shards: shards)
        try WALDirectory.syncDirectory(walDirectory)
    }

    /// The layout recorded in `<directory>/layout`, if it is there and readable.
    static func recorded(walDirectory: String) -> (reactors: Int, shards: Int)? {
        guard let text = Platform.readText(walDirectory + "/layout", limit: 4096),
              let first = text.split(whereSeparator: \.isNewline).first else { return nil }
        var reactors: Int?
        var shards: Int?
        for field in first.split(separator: " ") {
            let parts = field.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            if parts[0] == "reactors" { reactors = Int(parts[1]) }
            if parts[0] == "num_shards" { shards = Int(parts[1]) }
        }
        guard let reactors, let shards, reactors > 0, shards > 0 else { return nil }
        return (reactors, shards)
    }

    /// Writes and fsyncs `<directory>/layout` (the caller syncs the directory).
    static func write(walDirectory: String, reactors: Int, shards: Int) throws(WALError) {
        let path = walDirectory + "/layout"
        let text = line(reactors: reactors, shards: shards) + "\n"
        let door = KernelDoor.production
        let fd = door.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640, file: .layout)
        if fd < 0 { throw .system("open", path, -fd) }
        defer { door.close(fd) }
        let written = text.withCString { door.pwrite(fd, $0, strlen($0), 0, file: .layout) }
        if written != text.utf8.count { throw .system("write", path, written < 0 ? Int32(-written) : EIO) }
        let synced = door.fsync(fd, file: .layout)
        if synced != 0 { throw .system("fsync", path, -synced) }
    }
}

/// What can go wrong with the log, phrased for the operator reading the log line.
enum WALError: Error, CustomStringConvertible {
    case system(String, String, Int32)
    case corruption(file: String, offset: Int, reason: String)
    case layoutMismatch(path: String, found: String, expected: String)
    /// A segment the log needs is gone: replaying without it would lose its writes silently.
    case missingSegment(file: String, reason: String)
    /// `AEGISKV_WAL_FAULTS` (test fault injection) holds a rule that cannot be read.
    case faultPlan(rule: String)
    /// A log file of a format this build does not read (a newer release wrote it).
    case unsupportedFormat(file: String, format: UInt8)

    static let recoveryAdvice = "the node does not start on a damaged log. To recover: stop the node, keep a copy of the data directory (runbook: Data Corruption Recovery), clear the WAL directory, and start again; the node then starts empty and is refilled from its replicas (or from an aegiskv-cli dump with `aegiskv-cli restore`)"

    var description: String {
        switch self {
        case .system(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        case .corruption(let file, let offset, let reason):
            return "WAL corruption in \(file) at offset \(offset): \(reason); " + Self.recoveryAdvice
        case .missingSegment(let file, let reason):
            return "WAL segment missing: \(file) (\(reason)); the writes logged in it would be lost silently. If the file was moved, put it back; otherwise "
                + Self.recoveryAdvice
        case .faultPlan(let rule):
            return "\(KernelFaultPlan.environmentVariable) / \(KernelFaultPlan.walEnvironmentVariable): cannot read the fault rule \"\(rule)\" (expected <call>[.<file>]=<ERRNO>[@<first>][x<count>][+<delay ms>])"
        case .layoutMismatch(let path, let found, let expected):
            return "the WAL was written with \(found) but this node runs with \(expected) (\(path)): a changed `reactors` is re-laid out at start, but a changed `num_shards` is not; start with the same `num_shards`, or move the WAL directory aside to start empty"
        case .unsupportedFormat(let file, let format):
            let known = WALFormat.allCases.map { String($0.rawValue) }.joined(separator: " and ")
            return "\(file) is in write-ahead log format \(format), which this aegiskv does not read (it reads formats \(known)): "
                + "start the aegiskv release that wrote it (or a newer one), or dump the data with that release's `aegiskv-cli dump`, "
                + "move the WAL directory aside, start this one and `aegiskv-cli restore` the dump"
        }
    }
}
