import CSupport
import Glibc
import Logging

/// The service manager's notification protocol (sd_notify(3)): newline-
/// separated `KEY=value` assignments in one datagram to the AF_UNIX socket
/// named by `NOTIFY_SOCKET`. Without that variable (not started by systemd
/// with Type=notify) every call does nothing.
public struct SystemdNotifier: Sendable {
    /// Where datagrams go; nil when not supervised.
    public let socketPath: String?
    /// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, as
    /// sd_watchdog_enabled(3) recommends. Nil when no watchdog is set for us.
    public let watchdogIntervalMs: Int?

    public init(environment: [String: String], pid: Int32 = getpid()) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        // WATCHDOG_PID names the process the watchdog is meant for; a child
        // that inherited the variables must not ping on the parent's behalf.
        let forUs = environment["WATCHDOG_PID"].map { Int32($0) == pid } ?? true
        if path != nil, forUs, let usec = environment["WATCHDOG_USEC"].flatMap(Int.init), usec > 0 {
            watchdogIntervalMs = max(usec / 2000, 1)
        } else {
            watchdogIntervalMs = nil
        }
    }

    /// The variables of this process.
    public static func fromProcessEnvironment() -> SystemdNotifier {
        var environment: [String: String] = [:]
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return SystemdNotifier(environment: environment)
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends the assignments; returns 0 or -errno (0 as well when not supervised).
    @discardableResult
    public func send(_ assignments: [String]) -> Int32 {
        guard let socketPath else { return 0 }
        let text = assignments.joined(separator: "\n") + "\n"
        return text.withCString { aegis_unix_datagram_send(socketPath, $0, strlen($0)) }
    }

    func ready(status: String) -> Int32 { send(["READY=1", "STATUS=" + status]) }
    func stopping(status: String) -> Int32 { send(["STOPPING=1", "STATUS=" + status]) }
    /// systemd 253 and later want the monotonic time of the reload's start
    /// with RELOADING=1 (to match it against its own SIGHUP); older
    /// versions ignore the extra field.
    func reloading() -> Int32 {
        send(["RELOADING=1", "MONOTONIC_USEC=\(aegis_monotonic_ns() / 1000)", "STATUS=reloading configuration"])
    }
    func watchdog() -> Int32 { send(["WATCHDOG=1"]) }
}

/// Decides whether a watchdog ping may be sent: only while every reactor
/// makes progress, so a reactor stuck in a loop (or blocked in a system
/// call) stops the pings and systemd restarts the node.
///
/// A reactor counts as alive when its published loop counter moved since
/// the last check. One whose counter did not move but that sleeps in
/// epoll_wait is idle rather than stuck only if it answers a wake-up: it
/// is woken and given `settleMs` to iterate. (Its maintenance timer makes
/// it iterate anyway unless maintenance_interval is longer than the ping
/// interval; a sleeping flag alone would also cover a thread that is
/// stopped inside epoll_wait.)
final class WatchdogGate {
    private var lastIterations: [Int]
    private(set) var stalled: [Int] = []
    let settleMs: Int

    init(node: NodeContext, settleMs: Int = 250) {
        self.settleMs = settleMs
        lastIterations = node.stats.map { $0.loopIterations.load(ordering: .relaxed) }
    }

    /// Checks every reactor and remembers the counters for next time.
    /// May block the calling (main) thread for up to `settleMs`; signals
    /// stay pending meanwhile.
    func allReactorsProgressed(_ node: NodeContext) -> Bool {
        func iterations(_ reactor: Int) -> Int { node.stats[reactor].loopIterations.load(ordering: .relaxed) }
        var unmoved: [Int] = []
        for reactor in 0..<node.reactorCount where iterations(reactor) == lastIterations[reactor] {
            unmoved.append(reactor)
        }
        let sleepers = unmoved.filter { node.interconnect.isAsleep($0) }
        if !sleepers.isEmpty {
            for reactor in sleepers { node.interconnect.wake(reactor) }
            let deadline = aegis_monotonic_ns() + Int64(settleMs) * 1_000_000
            while unmoved.contains(where: { iterations($0) == lastIterations[$0] }) && aegis_monotonic_ns() < deadline {
                usleep(2_000)
            }
        }
        stalled = unmoved.filter { iterations($0) == lastIterations[$0] }
        lastIterations = (0..<node.reactorCount).map(iterations)
        return stalled.isEmpty
    }
}
