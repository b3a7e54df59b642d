import AegisConfig
import Glibc

/// Where one reactor's log lives and how its files are named:
///
///     <wal_dir>/layout                      reactors=N num_shards=M
///     <wal_dir>/reactor-<i>/segment-<n>.wal numbered from 1, in write order
///     <wal_dir>/reactor-<i>/snapshot-<n>.snap covers every segment below n
///     <wal_dir>/reactor-<i>/*.tmp           a snapshot being written
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
        guard let directory = opendir(path) else { throw .system("opendir", path, errno) }
        defer { closedir(directory) }
        var listing = Listing()
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
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

    /// Creates the directory and its parents (like mkdir -p).
    static func create(_ path: String) throws(WALError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o750) != 0 && errno != EEXIST { throw .system("mkdir", prefix, errno) }
        }
    }

    /// fsync on a directory makes the names created or removed in it durable.
    static func syncDirectory(_ path: String) throws(WALError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw .system("open", path, errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw .system("fsync", path, errno) }
    }
}

/// Checks that the log was written with the same reactor and shard layout:
/// a reactor's log holds exactly the shards that reactor owned, so replaying
/// it under another layout would put keys on the wrong reactor.
enum WALLayout {
    static func verifyOrRecord(walDirectory: String, reactors: Int, shards: Int) throws(WALError) {
        let path = walDirectory + "/layout"
        let layout = "reactors=\(reactors) num_shards=\(shards)"
        let expected = layout + "\n"
        if let existing = Platform.readText(path, limit: 4096) {
            if existing == expected { return }
            let found = existing.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            throw .layoutMismatch(path: path, found: found, expected: layout)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        if fd < 0 { throw .system("open", path, errno) }
        defer { close(fd) }
        let written = expected.withCString { write(fd, $0, strlen($0)) }
        if written != expected.utf8.count { throw .system("write", path, written < 0 ? errno : EIO) }
        if fsync(fd) != 0 { throw .system("fsync", path, errno) }
        try WALDirectory.syncDirectory(walDirectory)
    }
}

/// What can go wrong with the log, phrased for the operator reading the log line.
enum WALError: Error, CustomStringConvertible {
    case system(String, String, Int32)
    case corruption(file: String, offset: Int, reason: String)
    case layoutMismatch(path: String, found: String, expected: String)

    static let recoveryAdvice = "the node does not start on a damaged log. To recover: stop the node, keep a copy of the data directory (runbook: Data Corruption Recovery), clear the WAL directory, and start again; the node then starts empty and is refilled from its replicas (or from an aegiskv-cli dump with `aegiskv-cli restore`)"

    var description: String {
        switch self {
        case .system(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        case .corruption(let file, let offset, let reason):
            return "WAL corruption in \(file) at offset \(offset): \(reason); " + Self.recoveryAdvice
        case .layoutMismatch(let path, let found, let expected):
            return "the WAL was written with \(found) but this node runs with \(expected) (\(path)): start with the same `reactors` and `num_shards` settings, or move the WAL directory aside to start empty"
        }
    }
}
