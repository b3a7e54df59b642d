import Foundation
import Glibc
import Testing
@testable import AegisServer
import AegisConfig

/// A datagram socket standing in for systemd's notification socket.
final class NotifySocket: @unchecked Sendable {
    let fd: Int32
    /// The NOTIFY_SOCKET value: a path, or "@name" for an abstract socket.
    let address: String
    private let path: String?

    init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket failed") }
        let name = abstract ? "@aegis-notify-\(UUID().uuidString.prefix(12))"
            : FileManager.default.temporaryDirectory.path + "/aegis-notify-\(UUID().uuidString.prefix(12)).sock"
        address = name
        path = abstract ? nil : name
        var sockaddr = sockaddr_un()
        sockaddr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &sockaddr.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
            if abstract { raw[0] = 0 }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &sockaddr) { $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw HarnessError("bind \(name) failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram's assignments; nil on timeout.
    func receive() -> [String]? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Drops every datagram already queued.
    func discardPending() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, 4096, Int32(MSG_DONTWAIT)) }) > 0 {}
    }

    /// Datagrams until one holds `field`; that one, or nil on timeout.
    func receive(until field: String) -> [String]? {
        while let message = receive() {
            if message.contains(field) { return message }
        }
        return nil
    }

    deinit {
        close(fd)
        if let path { unlink(path) }
    }
}

@Suite(.serialized)
struct SystemdNotifyTests {
    @Test(arguments: [false, true])
    func lifecycleIsReportedOnTheNotifySocket(abstract: Bool) throws {
        let socket = try NotifySocket(abstract: abstract)
        // 200 ms watchdog: pings every 100 ms.
        let node = try SpawnedNode(arguments: ["--reactors", "2"],
                                   environment: ["NOTIFY_SOCKET": socket.address, "WATCHDOG_USEC": "200000"])
        var stopped = false
        defer { if !stopped { node.stop() } }
        let ready = try #require(socket.receive(until: "READY=1"), "no READY=1: \(node.log())")
        #expect(ready.contains("STATUS=serving clients on 127.0.0.1:\(node.port)"), "\(ready)")
        #expect(socket.receive(until: "WATCHDOG=1") != nil)
        #expect(socket.receive(until: "WATCHDOG=1") != nil)

        node.signal(SIGHUP)
        let reloading = try #require(socket.receive(until: "RELOADING=1"))
        #expect(reloading.contains { $0.hasPrefix("MONOTONIC_USEC=") && Int($0.dropFirst(15)) != nil }, "\(reloading)")
        #expect(socket.receive(until: "READY=1") != nil)

        node.signal(SIGTERM)
        let stopping = try #require(socket.receive(until: "STOPPING=1"))
        #expect(stopping.contains("STATUS=draining"))
        #expect(node.stop() == 0)
        stopped = true
    }

    /// Stops one reactor thread with ptrace (the rest of the process runs
    /// on) until the node withholds its watchdog pings, then lets it go.
    static let stopOneReactor = """
        import ctypes, os, sys, time
        pid, log = int(sys.argv[1]), sys.argv[2]
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        tid = next(int(t) for t in os.listdir(f"/proc/{pid}/task")
                   if open(f"/proc/{pid}/task/{t}/comm").read().strip() == "aegis-reactor-0")
        if libc.ptrace(0x4206, tid, None, None) != 0:  # PTRACE_SEIZE
            print("ptrace not permitted: errno", ctypes.get_errno()); sys.exit(77)
        libc.ptrace(0x4207, tid, None, None)  # PTRACE_INTERRUPT: only this thread stops
        os.waitpid(tid, 0x40000000)  # __WALL
        deadline = time.time() + 60
        while "watchdog pings withheld" not in open(log).read() and time.time() < deadline:
            time.sleep(0.02)
        seen = "watchdog pings withheld" in open(log).read()
        libc.ptrace(17, tid, None, None)  # PTRACE_DETACH
        sys.exit(0 if seen else 1)
        """

    @Test func aStoppedReactorWithholdsWatchdogPings() throws {
        let socket = try NotifySocket(abstract: false)
        let node = try SpawnedNode(arguments: ["--reactors", "2"],
                                   environment: ["NOTIFY_SOCKET": socket.address, "WATCHDOG_USEC": "200000"])
        defer { #expect(node.stop() == 0) }
        #expect(socket.receive(until: "READY=1") != nil)
        #expect(socket.receive(until: "WATCHDOG=1") != nil)
        let result = try runTool("python3", ["-c", Self.stopOneReactor, String(node.pid), node.logPath])
        if result.status == 77 {
            Issue.record("cannot test: \(result.output)")
            return
        }
        #expect(result.status == 0, "\(result.output)\n\(node.log())")
        let withheld = node.logLines().first { $0.contains("watchdog pings withheld") } ?? ""
        #expect(withheld.contains("error") && withheld.contains("reactors=0"), "\(withheld)")
        #expect(node.waitForLog { $0.contains("watchdog pings resumed") })
        // Whatever was queued before now is dropped; a ping still arrives.
        socket.discardPending()
        #expect(socket.receive(until: "WATCHDOG=1") != nil)
    }

    @Test func notifierReadsTheEnvironmentLikeSdNotify() {
        #expect(!SystemdNotifier(environment: [:]).isEnabled)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).socketPath == nil)
        let plain = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x"])
        #expect(plain.isEnabled && plain.watchdogIntervalMs == nil)
        let watched = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"], pid: 42)
        #expect(watched.watchdogIntervalMs == 15_000)
        let mine = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"], pid: 42)
        #expect(mine.watchdogIntervalMs == 15_000)
        let other = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"], pid: 42)
        #expect(other.watchdogIntervalMs == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"]).watchdogIntervalMs == nil)
    }

    @Test func sendingToAMissingSocketReportsTheError() {
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent/aegis.sock"])
        #expect(notifier.send(["READY=1"]) == -ENOENT)
        #expect(SystemdNotifier(environment: [:]).send(["READY=1"]) == 0)
    }

    /// A reactor whose loop counter does not move is stalled, unless it
    /// sleeps in epoll and iterates when woken.
    @Test func watchdogGateNeedsProgressFromEveryReactor() throws {
        var config = AegisConfig.defaults
        config.numShards = 4
        let node = try NodeContext(config: config, reactorCount: 2, logger: .init(label: "test"))
        let gate = WatchdogGate(node: node, settleMs: 20)
        #expect(!gate.allReactorsProgressed(node))
        #expect(gate.stalled == [0, 1])

        var snapshot = ReactorStatsSnapshot()
        snapshot.loopIterations = 5
        node.stats[0].publish(snapshot)
        node.stats[1].publish(snapshot)
        #expect(gate.allReactorsProgressed(node))

        // Reactor 1 "sleeps" but no thread answers its wake-up: stalled, like a stopped thread.
        snapshot.loopIterations = 6
        node.stats[0].publish(snapshot)
        _ = node.interconnect.prepareToSleep(1)
        #expect(!gate.allReactorsProgressed(node))
        #expect(gate.stalled == [1])
    }
}
