import AegisConfig
import Glibc

/// An exclusive lock on a directory a node writes (data_dir, a wal_dir of
/// its own), held for the life of the process. Two nodes on one directory
/// would interleave their log appends and overwrite each other's lease
/// terms, so one of them could vote twice in a term; the second to start
/// is refused instead, naming the first one's pid.
///
/// The lock is `flock` on `<directory>/aegiskv.lock`: the kernel drops it
/// when the process exits however it ends (kill -9 included), so a stale
/// file never blocks a restart. The file holds the owner's pid for the
/// message only; its presence means nothing.
final class DataDirectoryLock {
    static let fileName = "aegiskv.lock"

    /// Invariant: `descriptor` is open and holds LOCK_EX until the process exits.
    private let descriptor: Int32

    private init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// The directories this node will write, each locked: data_dir when it
    /// exists or the node will use it (the log, or lease terms once it has
    /// seeds), and the log's directory when it lies outside data_dir.
    static func acquireAll(for config: AegisConfig) throws(StartupError) -> [DataDirectoryLock] {
        var locks: [DataDirectoryLock] = []
        let walDir = config.effectiveWALDir
        let logsInsideDataDir = config.walMode != .off && isInside(walDir, config.dataDir)
        if logsInsideDataDir || !config.seeds.isEmpty || isDirectory(config.dataDir) {
            locks.append(try acquire(config.dataDir, role: "data_dir"))
        }
        if config.walMode != .off && !logsInsideDataDir {
            locks.append(try acquire(walDir, role: "wal_dir"))
        }
        return locks
    }

    static func acquire(_ directory: String, role: String) throws(StartupError) -> DataDirectoryLock {
        do throws(WALError) {
            try WALDirectory.create(directory)
        } catch {
            throw StartupError("cannot create \(role) \(directory): \(error)")
        }
        let path = directory + "/" + fileName
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw StartupError("cannot open \(path) to lock \(role): \(SystemError(operation: "open", code: errno))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            let owner = readOwner(fd)
            Glibc.close(fd)
            if code == EWOULDBLOCK {
                throw StartupError("\(role) \(directory) is in use by another aegiskv" + (owner.map { " (pid \($0))" } ?? "")
                    + ": two nodes on one \(role) would corrupt its log and cast each other's lease votes. "
                    + "Stop that node first, or give this one its own \(role)")
            }
            throw StartupError("cannot lock \(path): \(SystemError(operation: "flock", code: code))")
        }
        let text = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return DataDirectoryLock(descriptor: fd)
    }

    private static func readOwner(_ fd: Int32) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self).split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    private static func isInside(_ path: String, _ directory: String) -> Bool {
        let base = directory.hasSuffix("/") ? directory : directory + "/"
        return path == directory || path.hasPrefix(base)
    }
}
