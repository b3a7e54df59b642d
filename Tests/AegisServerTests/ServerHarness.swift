import CSupport
import Foundation
import Glibc
import Testing

/// Starts the real `aegiskv` binary on an ephemeral loopback port and stops
/// it by PID. The binary sits next to the test bundle in the build folder
/// (or is named by AEGISKV_BINARY).
final class ServerHarness: @unchecked Sendable {
    let process: Process
    let port: UInt16
    /// The HTTP operations port (health_addr): each test server gets its own,
    /// so parallel tests never fight over the default 7702.
    let healthPort: UInt16
    let logPath: String
    let pidFile: String
    private let logHandle: FileHandle

    static var binaryPath: String {
        if let explicit = ProcessInfo.processInfo.environment["AEGISKV_BINARY"] { return explicit }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // swift test runs <build>/debug/AegisKVPackageTests.xctest
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("aegiskv").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return executable.deletingLastPathComponent().appendingPathComponent("aegiskv").path
    }

    /// A data_dir of the test's own unless the test names one (flag, config
    /// file or environment). The default, /var/lib/aegiskv, is the host's
    /// real path: a node writes its lease terms there once it exists, and
    /// every test node on the machine (and the runbook run, which layers
    /// over /var/lib) then shares one file. Not created here: a missing
    /// data_dir is a case of its own (a node creates it only when needed).
    static func ownDataDir(_ path: String, arguments: [String], environment: [String: String]) -> [String] {
        var named = arguments.contains("--data-dir") || environment["AEGIS_DATA_DIR"] != nil
        if let flag = arguments.firstIndex(of: "--config"), arguments.indices.contains(flag + 1) {
            let file = (try? String(contentsOfFile: arguments[flag + 1], encoding: .utf8)) ?? ""
            named = named || file.contains("\"data_dir\"")
        }
        return named ? [] : ["--data-dir", path]
    }

    /// Picks two free ports and starts the server on them. A port that
    /// `freePort` handed out can be taken by someone else before the server
    /// binds it (tests run in parallel, and some open thousands of client
    /// sockets); a start that fails only because a port was taken is
    /// retried on new ports.
    init(arguments: [String] = [], environment: [String: String] = [:], reactors: Int = 2, waitUntilReady: Bool = true) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        logPath = directory.appendingPathComponent("server.log").path
        pidFile = directory.appendingPathComponent("aegiskv.pid").path
        var attempt = 0
        while true {
            attempt += 1
            let client = try freePort()
            let health = try freePort()
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binaryPath)
            // Gossip on an ephemeral port too: every node listens for peers,
            // and parallel tests must not fight over 7701.
            let gossip = arguments.contains("--gossip-bind-addr") ? [] : ["--gossip-bind-addr", "127.0.0.1:0"]
            process.arguments = gossip + Self.ownDataDir(directory.appendingPathComponent("data").path, arguments: arguments, environment: environment)
                + ["--bind-addr", "127.0.0.1:\(client)", "--health-addr", "127.0.0.1:\(health)",
                   "--reactors", "\(reactors)", "--pid-file", pidFile, "--max-memory-mb", "256"] + arguments
            var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AEGIS_") }
            env.merge(environment) { $1 }
            process.environment = env
            process.standardError = handle
            process.standardOutput = handle
            try process.run()
            if waitUntilReady && attempt < 5 && Self.failedOnTakenPort(process, logPath: logPath) {
                try? handle.close()
                continue
            }
            self.process = process
            port = client
            healthPort = health
            logHandle = handle
            break
        }
        if waitUntilReady { try waitForPort() }
    }

    /// Waits until the server says "serving" or exits; true when it exited
    /// because a port it was given was in use.
    private static func failedOnTakenPort(_ process: Process, logPath: String) -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if log.contains("serving") { return false }
            if !process.isRunning { return log.contains("cannot listen") && log.contains("in use") }
            usleep(10_000)
        }
        return false
    }

    var pid: Int32 { process.processIdentifier }

    func waitForPort(timeoutSeconds: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if !process.isRunning { throw HarnessError("aegiskv exited early: \(log())") }
            if let socket = try? TestSocket(port: port) { socket.close(); return }
            usleep(20_000)
        }
        throw HarnessError("aegiskv did not open port \(port): \(log())")
    }

    /// Base URL of the operations endpoints.
    var healthURL: String { "http://127.0.0.1:\(healthPort)" }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeoutSeconds: Double = 20) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(pid, signal)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() } }

    /// RSS of the server process in bytes (from /proc).
    func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

extension TestSocket {
    /// Sends `SET key value` and returns the reply's first 5 bytes or more
    /// (`+OK\r\n` when stored): the large values tests load before they
    /// pipeline GETs of them.
    func set(_ key: String, _ value: String) throws -> [UInt8] {
        try send("*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n")
        return try receive { $0.count >= 5 }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A free port on 127.0.0.1 (see `freePort(on:)`).
func freePort() throws -> UInt16 { try freePort(on: "127.0.0.1") }

/// A blocking loopback TCP client socket with a receive timeout.
final class TestSocket: @unchecked Sendable {
    let fd: Int32

    init(host: String = "127.0.0.1", port: UInt16, timeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = port.bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if connected != 0 {
            let error = errno
            close() // deinit runs for this fully initialized object too; close() makes that a no-op
            throw HarnessError("connect failed: errno \(error)")
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw HarnessError("send failed: errno \(errno)") }
            sent += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads whatever arrives next; [] when the peer closed, throws on timeout.
    func receiveSome(max: Int = 65536) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, 0) }
        if n < 0 { throw HarnessError("recv failed: errno \(errno)") }
        return Array(buffer[0..<n])
    }

    /// Reads until `complete` says the accumulated bytes hold a full answer.
    func receive(until complete: ([UInt8]) -> Bool) throws -> [UInt8] {
        var all: [UInt8] = []
        while !complete(all) {
            let chunk = try receiveSome()
            if chunk.isEmpty { throw HarnessError("connection closed after \(all.count) bytes") }
            all += chunk
        }
        return all
    }

    /// True when the server closed the connection (reads EOF or reset) within the timeout.
    func waitForClose() -> Bool {
        while true {
            guard let chunk = try? receiveSome() else { return errno == ECONNRESET }
            if chunk.isEmpty { return true }
        }
    }

    /// Says "no more requests" (a FIN) while still reading replies.
    func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    private var isClosed = false

    /// Closes once: a second close(2) could hit a descriptor number another
    /// thread has been given since (tests run in parallel).
    func close() {
        if isClosed { return }
        isClosed = true
        Glibc.close(fd)
    }

    deinit { close() }
}

/// Work (a client script, say) on a thread of its own while the test goes
/// on to stop, pause or restart nodes under it; `result()` waits for it.
final class BackgroundWork<Value>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<Value, Error>?

    init(_ body: @escaping @Sendable () throws -> Value) {
        Thread.detachNewThread {
            self.outcome = Result { try body() }
            self.done.signal()
        }
    }

    /// Waits for the work; the semaphore orders `outcome`'s write before this read.
    func result() throws -> Value {
        done.wait()
        return try outcome!.get()
    }
}

/// Runs a command line tool (found on PATH), returning its standard output
/// and error together, and its exit status.
///
/// posix_spawn and waitpid rather than Foundation's Process: on this
/// toolchain Process.waitUntilExit sometimes never returns for a child that
/// exits quickly, which hung tests that run many short commands.
@discardableResult
func runTool(_ executable: String, _ arguments: [String], input: String? = nil) throws -> (output: String, status: Int32) {
    var outputPipe: [Int32] = [0, 0]
    var inputPipe: [Int32] = [0, 0]
    // Close-on-exec from birth: set afterwards, a child another test's thread
    // spawned in between kept the write end, and the read below waited for
    // that child (a node, or a namespace's 600 s sleep) to exit.
    let outputMade = aegis_pipe_cloexec(&outputPipe)
    guard outputMade == 0 else { throw HarnessError("pipe failed: errno \(-outputMade)") }
    let inputMade = aegis_pipe_cloexec(&inputPipe)
    guard inputMade == 0 else {
        Glibc.close(outputPipe[0])
        Glibc.close(outputPipe[1])
        throw HarnessError("pipe failed: errno \(-inputMade)")
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, inputPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 2)
    closeInheritedDescriptors(&actions)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var attributes = childAttributes()
    defer { posix_spawnattr_destroy(&attributes) }
    var pid: pid_t = 0
    let spawned = posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
    Glibc.close(outputPipe[1])
    Glibc.close(inputPipe[0])
    guard spawned == 0 else {
        Glibc.close(outputPipe[0])
        Glibc.close(inputPipe[1])
        throw HarnessError("cannot run \(executable): errno \(spawned)")
    }
    if let input {
        let bytes = Array(input.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(inputPipe[1], $0.baseAddress! + written, bytes.count - written) }
            if n <= 0 { break }
            written += n
        }
    }
    Glibc.close(inputPipe[1])
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(outputPipe[0], $0.baseAddress, 65536) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += chunk[0..<n]
    }
    Glibc.close(outputPipe[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exitStatus = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (String(decoding: output, as: UTF8.self), exitStatus)
}

/// Adds to `actions` the closing of every descriptor above stderr in the
/// child. The test runner's sockets are not close-on-exec (TestSocket and
/// others), and tests run in parallel: a long-lived child (a node, an
/// attacker script, a namespace's sleep) that inherited another test's
/// socket kept that connection open after its test closed it.
func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    // It fails only for lack of memory; a child that then inherited the
    // runner's sockets would bring back the hangs this exists to prevent,
    // silently, so the test run stops here instead.
    let result = aegis_spawn_actions_close_from(&actions, 3)
    precondition(result == 0, "posix_spawn_file_actions_addclosefrom_np failed: \(result)")
}

/// Spawn attributes giving the child an empty signal mask: the test runner's
/// threads block SIGTERM, and a child would otherwise inherit that and
/// ignore a polite stop.
func childAttributes() -> posix_spawnattr_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    return attributes
}

/// Starts a long-running tool (found on PATH) with its output discarded;
/// returns its PID. Stop it with `stopProcess`.
func startProcess(_ executable: String, _ arguments: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    closeInheritedDescriptors(&actions)
    var attributes = childAttributes()
    defer { posix_spawnattr_destroy(&attributes) }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
    guard spawned == 0 else { throw HarnessError("cannot run \(executable): errno \(spawned)") }
    return pid
}

/// SIGTERM, then SIGKILL after the grace period; reaps the child.
func stopProcess(_ pid: pid_t, graceSeconds: Double = 10) {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    let deadline = Date().addingTimeInterval(graceSeconds)
    while Date() < deadline {
        if waitpid(pid, &status, WNOHANG) == pid { return }
        usleep(10_000)
    }
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
}
