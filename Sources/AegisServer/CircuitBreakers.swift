import AegisConfig
import CSupport
import Synchronization

/// When a breaker opens by itself and when it tries again.
public struct CircuitBreakerPolicy: Sendable, Equatable {
    /// Failures / calls in the window at or above which the breaker opens.
    public var errorRateThreshold: Double
    /// Calls the window must hold before the error rate counts (a single
    /// failed call out of one must not open a breaker).
    public var minimumCalls: Int
    /// The sliding window, kept as one bucket per second.
    public var windowSeconds: Int
    /// How long an automatically opened breaker fails fast before it lets
    /// trial calls through (half-open).
    public var coolDownMs: Int64
    /// Trial calls allowed while half-open; all succeeding closes the breaker,
    /// any failing opens it again.
    public var halfOpenTrials: Int

    public init(errorRateThreshold: Double = 0.5, minimumCalls: Int = 20, windowSeconds: Int = 10,
                coolDownMs: Int64 = 30_000, halfOpenTrials: Int = 3) {
        self.errorRateThreshold = errorRateThreshold
        self.minimumCalls = minimumCalls
        self.windowSeconds = max(windowSeconds, 1)
        self.coolDownMs = coolDownMs
        self.halfOpenTrials = max(halfOpenTrials, 1)
    }
}

public enum CircuitState: String, Sendable {
    case closed
    case open
    case halfOpen = "half-open"
}

/// What `/admin/circuit-breaker/status` shows of one breaker.
public struct CircuitBreakerStatus: Sendable, Equatable {
    public var service: String
    public var state: CircuitState
    /// True when an operator opened it: it then stays open until reset.
    public var manual: Bool
    public var windowCalls: Int
    public var windowFailures: Int
    public var totalSuccesses: Int
    public var totalFailures: Int
    /// Calls refused because the breaker was open.
    public var totalRejected: Int
    public var trips: Int
    /// Monotonic ms when it last opened (0 = never).
    public var openedAtMs: Int64
    /// While open after an automatic trip: ms until it half-opens.
    public var retryInMs: Int64?
}

/// Named circuit breakers for the node's outbound dependencies: the
/// well-known services (`replication`, `forwarding`, `downstream`) exist from
/// the start, a peer's breaker (named by its node id) on first use.
///
/// Semantics (also in docs/operations.md):
/// - `allow` before an outbound call, `record` after it. A closed breaker
///   opens by itself when the failure rate over the window reaches the
///   threshold (with at least `minimumCalls` calls in it); after the
///   cool-down it half-opens and lets `halfOpenTrials` calls through.
/// - `trip` (admin) opens a breaker by hand, creating it when the name is
///   new (an operator may cut off a peer before the node ever called it);
///   a manually opened breaker stays open until `reset`.
/// - `reset` closes a breaker and clears its window; an unknown name is
///   an error (the admin endpoint answers 404), so a typo is not silently
///   "reset".
/// - `setPolicy` (SIGHUP reload) replaces the policy of every breaker,
///   existing and future, keeping their state and counts.
///
/// Calls are rare next to client requests (once per replication batch or
/// peer message), so one Mutex around the table and the policy is simple and
/// cheap enough, and every decision sees one policy, never half of an old
/// one and half of a new one.
public final class CircuitBreakerRegistry: Sendable {
    public static let wellKnownServices = ["replication", "forwarding", "downstream"]

    private struct Table {
        var policy: CircuitBreakerPolicy
        var breakers: [String: Breaker]

        /// The breaker named `service`, created (closed) if new.
        mutating func breaker(_ service: String) -> Breaker {
            if let existing = breakers[service] { return existing }
            let created = Breaker(windowSeconds: policy.windowSeconds)
            breakers[service] = created
            return created
        }
    }

    private let table: Mutex<Table>

    public init(policy: CircuitBreakerPolicy = CircuitBreakerPolicy()) {
        var initial: [String: Breaker] = [:]
        for name in Self.wellKnownServices { initial[name] = Breaker(windowSeconds: policy.windowSeconds) }
        table = Mutex(Table(policy: policy, breakers: initial))
    }

    /// The policy every breaker follows now.
    public var policy: CircuitBreakerPolicy { table.withLock { $0.policy } }

    /// Replaces the policy of every breaker. Open breakers keep their
    /// opening time, so a changed cool-down counts from when they opened;
    /// window counts of the seconds the new window still covers are kept.
    public func setPolicy(_ policy: CircuitBreakerPolicy) {
        table.withLock { table in
            table.policy = policy
            for breaker in table.breakers.values { breaker.resizeWindow(to: policy.windowSeconds) }
        }
    }

    /// Service names: 1–128 characters of letters, digits and `._:-`
    /// (node ids and host:port pairs fit).
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 128 && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "-")
        }
    }

    /// May a call to `service` go ahead now? False = fail fast.
    public func allow(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> Bool {
        table.withLock { table in
            table.breaker(service).allow(nowMs: nowMs, policy: table.policy)
        }
    }

    /// The outcome of a call that `allow` let through.
    public func record(_ service: String, success: Bool, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) {
        table.withLock { table in
            table.breaker(service).record(success: success, nowMs: nowMs, policy: table.policy)
        }
    }

    /// Opens `service` by hand (creating it if new). Returns its status.
    @discardableResult
    public func trip(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus {
        table.withLock { table in
            let breaker = table.breaker(service)
            breaker.open(nowMs: nowMs, manual: true)
            return breaker.status(service, nowMs: nowMs, policy: table.policy)
        }
    }

    /// Closes `service`; nil when no breaker has that name.
    public func reset(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus? {
        table.withLock { table in
            guard let breaker = table.breakers[service] else { return nil }
            breaker.close()
            return breaker.status(service, nowMs: nowMs, policy: table.policy)
        }
    }

    /// Every breaker, by name.
    public func statuses(nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> [CircuitBreakerStatus] {
        snapshot(nowMs: nowMs).statuses
    }

    /// The policy and every breaker (by name), read together so a report
    /// never pairs counts with a policy they were not judged by.
    public func snapshot(nowMs: Int64 = aegis_monotonic_ns() / 1_000_000)
        -> (policy: CircuitBreakerPolicy, statuses: [CircuitBreakerStatus]) {
        table.withLock { table in
            let policy = table.policy
            let statuses = table.breakers.keys.sorted().map { name in
                let breaker = table.breakers[name]!
                breaker.advance(nowMs: nowMs, policy: policy)
                return breaker.status(name, nowMs: nowMs, policy: policy)
            }
            return (policy, statuses)
        }
    }

    public func status(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus? {
        table.withLock { table in
            guard let breaker = table.breakers[service] else { return nil }
            breaker.advance(nowMs: nowMs, policy: table.policy)
            return breaker.status(service, nowMs: nowMs, policy: table.policy)
        }
    }
}

/// One breaker's state; only ever touched under the registry's lock.
private final class Breaker: @unchecked Sendable {
    var state = CircuitState.closed
    var manual = false
    var openedAtMs: Int64 = 0
    /// Trial calls let through since the breaker half-opened. Counting
    /// those started (not those left) lets a reload that changes
    /// halfOpenTrials apply to a breaker that is half-open already.
    var trialsStarted = 0
    var trialSuccesses = 0
    var trips = 0
    var totalSuccesses = 0
    var totalFailures = 0
    var totalRejected = 0
    // One bucket per second of the window: (second, calls, failures).
    var bucketSecond: [Int64]
    var bucketCalls: [Int]
    var bucketFailures: [Int]

    init(windowSeconds: Int) {
        bucketSecond = Array(repeating: -1, count: windowSeconds)
        bucketCalls = Array(repeating: 0, count: windowSeconds)
        bucketFailures = Array(repeating: 0, count: windowSeconds)
    }

    /// Open → half-open once an automatic trip's cool-down has passed;
    /// half-open → closed when enough trials succeeded (a reload may have
    /// lowered halfOpenTrials below the successes already seen).
    func advance(nowMs: Int64, policy: CircuitBreakerPolicy) {
        if state == .open && !manual && nowMs - openedAtMs >= policy.coolDownMs {
            state = .halfOpen
            trialsStarted = 0
            trialSuccesses = 0
        }
        if state == .halfOpen && trialSuccesses >= policy.halfOpenTrials { close() }
    }

    func allow(nowMs: Int64, policy: CircuitBreakerPolicy) -> Bool {
        advance(nowMs: nowMs, policy: policy)
        switch state {
        case .closed:
            return true
        case .open:
            totalRejected += 1
            return false
        case .halfOpen:
            if trialsStarted < policy.halfOpenTrials {
                trialsStarted += 1
                return true
            }
            totalRejected += 1
            return false
        }
    }

    func record(success: Bool, nowMs: Int64, policy: CircuitBreakerPolicy) {
        if success { totalSuccesses += 1 } else { totalFailures += 1 }
        advance(nowMs: nowMs, policy: policy)
        switch state {
        case .closed:
            let slot = bucket(for: nowMs)
            bucketCalls[slot] += 1
            if !success { bucketFailures[slot] += 1 }
            let (calls, failures) = window(nowMs: nowMs)
            if calls >= policy.minimumCalls && Double(failures) >= policy.errorRateThreshold * Double(calls) {
                open(nowMs: nowMs, manual: false)
            }
        case .halfOpen:
            if !success {
                open(nowMs: nowMs, manual: false)
            } else {
                trialSuccesses += 1
                if trialSuccesses >= policy.halfOpenTrials { close() }
            }
        case .open:
            break // a call that was let through before the trip; the breaker is open already
        }
    }

    func open(nowMs: Int64, manual: Bool) {
        if state != .open { trips += 1 }
        state = .open
        self.manual = manual
        openedAtMs = nowMs
        trialsStarted = 0
    }

    func close() {
        state = .closed
        manual = false
        trialsStarted = 0
        trialSuccesses = 0
        for i in bucketSecond.indices {
            bucketSecond[i] = -1
            bucketCalls[i] = 0
            bucketFailures[i] = 0
        }
    }

    /// Re-buckets the window for a new length, keeping the seconds it
    /// still covers (when two seconds share a slot, the newer wins: the
    /// older one is outside the window).
    func resizeWindow(to seconds: Int) {
        guard seconds != bucketSecond.count else { return }
        var newSecond = Array(repeating: Int64(-1), count: seconds)
        var newCalls = Array(repeating: 0, count: seconds)
        var newFailures = Array(repeating: 0, count: seconds)
        for i in bucketSecond.indices where bucketSecond[i] >= 0 {
            let slot = Int(bucketSecond[i] % Int64(seconds))
            if bucketSecond[i] > newSecond[slot] {
                newSecond[slot] = bucketSecond[i]
                newCalls[slot] = bucketCalls[i]
                newFailures[slot] = bucketFailures[i]
            }
        }
        bucketSecond = newSecond
        bucketCalls = newCalls
        bucketFailures = newFailures
    }

    private func bucket(for nowMs: Int64) -> Int {
        let second = nowMs / 1000
        let slot = Int(second % Int64(bucketSecond.count))
        if bucketSecond[slot] != second {
            bucketSecond[slot] = second
            bucketCalls[slot] = 0
            bucketFailures[slot] = 0
        }
        return slot
    }

    func window(nowMs: Int64) -> (calls: Int, failures: Int) {
        let second = nowMs / 1000
        var calls = 0
        var failures = 0
        for i in bucketSecond.indices where bucketSecond[i] >= 0 && second - bucketSecond[i] < Int64(bucketSecond.count) {
            calls += bucketCalls[i]
            failures += bucketFailures[i]
        }
        return (calls, failures)
    }

    func status(_ service: String, nowMs: Int64, policy: CircuitBreakerPolicy) -> CircuitBreakerStatus {
        let (calls, failures) = window(nowMs: nowMs)
        return CircuitBreakerStatus(
            service: service, state: state, manual: manual, windowCalls: calls, windowFailures: failures,
            totalSuccesses: totalSuccesses, totalFailures: totalFailures, totalRejected: totalRejected,
            trips: trips, openedAtMs: openedAtMs,
            retryInMs: state == .open && !manual ? max(policy.coolDownMs - (nowMs - openedAtMs), 0) : nil)
    }
}

extension CircuitBreakerPolicy {
    /// The policy the breaker_* keys describe. The cool-down is rounded up
    /// to whole milliseconds so that a positive setting never means "no
    /// cool-down at all".
    public init(_ config: AegisConfig) {
        let (seconds, attoseconds) = config.breakerCooldown.components
        let coolDownMs = seconds * 1_000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        self.init(errorRateThreshold: config.breakerErrorRate, minimumCalls: config.breakerMinCalls,
                  windowSeconds: Int(config.breakerWindow.components.seconds), coolDownMs: coolDownMs,
                  halfOpenTrials: config.breakerHalfOpenTrials)
    }

    /// The config keys this policy is made from.
    public static let configKeys: Set<String> = [
        "breaker_error_rate", "breaker_min_calls", "breaker_window", "breaker_cooldown", "breaker_half_open_trials",
    ]
}
