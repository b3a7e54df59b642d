import Glibc

/// What a reactor does when accept4 fails for want of resources (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM): the waiting connection stays in the backlog, so
/// the level-triggered listening socket stays readable and every loop
/// iteration would try, fail and log again. Measured before this existed:
/// with nofile 1024 and 1,100 idle clients, both reactors at 100% CPU and
/// 2M warning lines in 10 s. nginx answers the same way (it disables accept
/// events for a while); libuv instead keeps a spare descriptor to accept and
/// close one connection, which does not help a process whose other reactors
/// would race for the freed descriptor.
///
/// So the reactor stops polling its listener until the next maintenance
/// tick, tries once more then, and reports the outage once per
/// `reportIntervalMs` with a count, and once more when accepting works again.
struct AcceptPause {
    /// Whether the listener is out of the epoll set right now.
    private(set) var isPaused = false
    /// Failed accepts since the last report line.
    private var failuresUnreported = 0
    /// Failed accepts since accepting last worked.
    private var failuresInOutage = 0
    private var nextReportMs: Int64 = 0

    static let reportIntervalMs: Int64 = 10_000

    /// What to say in one warning line.
    struct Report {
        var failures: Int
        var error: Int32
    }

    /// Records a failed accept and pauses; returns a report when one is due
    /// (the first failure of an outage, then at most one per interval).
    mutating func noteFailure(error: Int32, nowMs: Int64) -> Report? {
        isPaused = true
        failuresUnreported += 1
        failuresInOutage += 1
        guard nowMs >= nextReportMs else { return nil }
        nextReportMs = nowMs + Self.reportIntervalMs
        defer { failuresUnreported = 0 }
        return Report(failures: failuresUnreported, error: error)
    }

    /// The listener goes back into the epoll set.
    mutating func resume() {
        isPaused = false
    }

    /// Records an accepted connection; returns how many accepts failed in
    /// the outage that just ended, or nil when there was none.
    @inline(__always) mutating func noteAccepted() -> Int? {
        guard failuresInOutage > 0 else { return nil }
        defer {
            failuresInOutage = 0
            failuresUnreported = 0
            nextReportMs = 0
        }
        return failuresInOutage
    }

    /// accept4 errors that concern only the connection being accepted (it
    /// was reset or refused by a filter before we took it): the next one
    /// may be fine, so there is nothing to pause for.
    static func concernsOneConnection(_ error: Int32) -> Bool {
        error == ECONNABORTED || error == EPROTO || error == EPERM
    }
}
