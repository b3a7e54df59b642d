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
///
/// Calls are rare next to client requests (once per replication batch or
/// peer message), so one Mutex around the table is simple and cheap enough.
public final class CircuitBreakerRegistry: Sendable {
    public static let wellKnownServices = ["replication", "forwarding", "downstream"]
    public let policy: CircuitBreakerPolicy
    private let breakers: Mutex<[String: Breaker]>

    public init(policy: CircuitBreakerPolicy = CircuitBreakerPolicy()) {
        self.policy = policy
        var initial: [String: Breaker] = [:]
        for name in Self.wellKnownServices { initial[name] = Breaker(windowSeconds: policy.windowSeconds) }
        breakers = Mutex(initial)
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
        breakers.withLock { table in
            let breaker = table[service] ?? Breaker(windowSeconds: policy.windowSeconds)
            defer { table[service] = breaker }
            return breaker.allow(nowMs: nowMs, policy: policy)
        }
    }

    /// The outcome of a call that `allow` let through.
    public func record(_ service: String, success: Bool, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) {
        breakers.withLock { table in
            let breaker = table[service] ?? Breaker(windowSeconds: policy.windowSeconds)
            table[service] = breaker
            breaker.record(success: success, nowMs: nowMs, policy: policy)
        }
    }

    /// Opens `service` by hand (creating it if new). Returns its status.
    @discardableResult
    public func trip(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus {
        breakers.withLock { table in
            let breaker = table[service] ?? Breaker(windowSeconds: policy.windowSeconds)
            table[service] = breaker
            breaker.open(nowMs: nowMs, manual: true)
            return breaker.status(service, nowMs: nowMs, policy: policy)
        }
    }

    /// Closes `service`; nil when no breaker has that name.
    public func reset(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus? {
        breakers.withLock { table in
            guard let breaker = table[service] else { return nil }
            breaker.close()
            return breaker.status(service, nowMs: nowMs, policy: policy)
        }
    }

    /// Every breaker, by name.
    public func statuses(nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> [CircuitBreakerStatus] {
        breakers.withLock { table in
            table.keys.sorted().map { name in
                let breaker = table[name]!
                breaker.advance(nowMs: nowMs, policy: policy)
                return breaker.status(name, nowMs: nowMs, policy: policy)
            }
        }
    }

    public func status(_ service: String, nowMs: Int64 = aegis_monotonic_ns() / 1_000_000) -> CircuitBreakerStatus? {
        breakers.withLock { table in
            guard let breaker = table[service] else { return nil }
            breaker.advance(nowMs: nowMs, policy: policy)
            return breaker.status(service, nowMs: nowMs, policy: policy)
        }
    }
}

/// One breaker's state; only ever touched under the registry's lock.
private final class Breaker: @unchecked Sendable {
    var state = CircuitState.closed
    var manual = false
    var openedAtMs: Int64 = 0
    var trialsAllowed = 0
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

    /// Open → half-open once an automatic trip's cool-down has passed.
    func advance(nowMs: Int64, policy: CircuitBreakerPolicy) {
        if state == .open && !manual && nowMs - openedAtMs >= policy.coolDownMs {
            state = .halfOpen
            trialsAllowed = policy.halfOpenTrials
            trialSuccesses = 0
        }
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
            if trialsAllowed > 0 {
                trialsAllowed -= 1
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
        trialsAllowed = 0
    }

    func close() {
        state = .closed
        manual = false
        trialsAllowed = 0
        trialSuccesses = 0
        for i in bucketSecond.indices {
            bucketSecond[i] = -1
            bucketCalls[i] = 0
            bucketFailures[i] = 0
        }
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
