import Foundation
import Glibc

/// The real `aegiskv` binary started with posix_spawn, with an environment
/// the test chooses and stdout and stderr in a file the test names, so a
/// test can point JOURNAL_STREAM at that file or NOTIFY_SOCKET at a socket
/// of its own. Stopped by PID.
final class SpawnedNode: @unchecked Sendable {
    let pid: pid_t
    let port: UInt16
    let host: String
    let directory: String
    let logPath: String
    private var exitStatus: Int32?

    /// Variables of the test runner that must not leak into the child.
    static let scrubbed = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"]

    /// `journal`: set JOURNAL_STREAM to the device:inode of the log file, as
    /// systemd does when stderr is the journal. `launcher`: a command that
    /// execs the binary (such as `taskset -c 0`), so the PID stays the node's.
    /// `host`: the loopback address the client port binds (cluster nodes
    /// each get their own, 127.0.0.11 and up).
    init(arguments: [String], environment: [String: String] = [:], journal: Bool = false,
         waitForPort: Bool = true, port: UInt16? = nil, host: String = "127.0.0.1", launcher: [String] = []) throws {
        self.host = host
        self.port = try port ?? freePort(on: host)
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-ops-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + "/stderr.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let env = try Self.childEnvironment(environment, journalFile: journal ? logPath : nil)
        let command = launcher + [ServerHarness.binaryPath, "--bind-addr", "\(host):\(self.port)"]
            + ServerHarness.ownDataDir(directory + "/data", arguments: arguments, environment: environment) + Self.withHealthPort(arguments)
        pid = try Self.spawn(command[0], Array(command.dropFirst()), environment: env, output: logPath)
        if waitForPort { try self.waitForPort() }
    }

    /// The runner's environment without AEGIS_* and systemd variables, plus
    /// `extra`; with `journalFile`, JOURNAL_STREAM names that file's
    /// device:inode, as systemd does when stderr is the journal.
    static func childEnvironment(_ extra: [String: String], journalFile: String?) throws -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AEGIS_") && !scrubbed.contains($0.key) }
        if let journalFile {
            var status = stat()
            guard stat(journalFile, &status) == 0 else { throw HarnessError("stat \(journalFile) failed") }
            env["JOURNAL_STREAM"] = "\(status.st_dev):\(status.st_ino)"
        }
        env.merge(extra) { $1 }
        return env
    }

    /// Ephemeral operations and gossip ports unless the test names them, so
    /// parallel tests never fight over 7702 and 7701.
    static func withHealthPort(_ arguments: [String]) -> [String] {
        let health = arguments.contains("--health-addr") ? [] : ["--health-addr", "127.0.0.1:0"]
        let gossip = arguments.contains("--gossip-bind-addr") ? [] : ["--gossip-bind-addr", "127.0.0.1:0"]
        return health + gossip + arguments
    }

    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, output, O_WRONLY | O_APPEND, 0)
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
        closeInheritedDescriptors(&actions)
        var attributes = childAttributes()
        defer { posix_spawnattr_destroy(&attributes) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw HarnessError("cannot run \(executable): errno \(spawned)") }
        return pid
    }

    /// Runs the binary to completion (for start-up errors); returns its exit status.
    static func runToExit(_ arguments: [String], environment: [String: String] = [:], journal: Bool, output: String) throws -> Int32 {
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let env = try childEnvironment(environment, journalFile: journal ? output : nil)
        let dataDir = ServerHarness.ownDataDir(output + ".data", arguments: arguments, environment: environment)
        let pid = try spawn(ServerHarness.binaryPath, dataDir + withHealthPort(arguments), environment: env, output: output)
        return waitForExit(pid, graceSeconds: 30) ?? -1
    }

    var isRunning: Bool {
        if exitStatus != nil { return false }
        if let status = Self.waitForExit(pid, graceSeconds: 0) { exitStatus = status; return false }
        return true
    }

    func waitForPort(timeoutSeconds: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if !isRunning { throw HarnessError("aegiskv exited early: \(log())") }
            if let socket = try? TestSocket(host: host, port: port) { socket.close(); return }
            usleep(20_000)
        }
        throw HarnessError("aegiskv did not open port \(port): \(log())")
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func logLines() -> [String] { log().split(separator: "\n").map(String.init) }

    /// Polls the log until `condition` holds; false after the timeout.
    @discardableResult
    func waitForLog(timeoutSeconds: Double = 20, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if condition(log()) { return true }
            usleep(20_000)
        }
        return condition(log())
    }

    func signal(_ number: Int32) { kill(pid, number) }

    /// SIGTERM and wait; returns the exit status (SIGKILL after the grace period).
    @discardableResult
    func stop(graceSeconds: Double = 20) -> Int32 {
        if let exitStatus { return exitStatus }
        kill(pid, SIGTERM)
        if let status = Self.waitForExit(pid, graceSeconds: graceSeconds) { exitStatus = status; return status }
        kill(pid, SIGKILL)
        exitStatus = Self.waitForExit(pid, graceSeconds: 30) ?? -1
        return exitStatus!
    }

    /// The child's exit status once it exits within the grace period, else nil.
    static func waitForExit(_ pid: pid_t, graceSeconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(graceSeconds)
        var status: Int32 = 0
        repeat {
            if waitpid(pid, &status, WNOHANG) == pid {
                return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            }
            if graceSeconds > 0 { usleep(10_000) }
        } while Date() < deadline
        return nil
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = Self.waitForExit(pid, graceSeconds: 30)
        }
    }
}
