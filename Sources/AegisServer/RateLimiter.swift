import CSupport
import Synchronization

/// The node-wide token bucket behind `rate_limit` / `rate_burst`
/// (RuntimeSettings; 0 = off).
///
/// Reactors never touch it per request: each keeps a small local allowance
/// in plain memory and comes here only when that runs out, to take the next
/// chunk (`take`). So the shared atomics are touched once per chunk, not once
/// per request, and reactors share the budget by demand: whoever has
/// traffic draws from the same bucket. What the chunking costs in precision
/// is at most one chunk per reactor held unused, which `chunkSize` keeps to
/// about 1% of a second's budget.
///
/// Refill is lazy and lock-free: whoever takes tokens first adds what the
/// elapsed time earned, advancing `lastRefillNs` by compare-and-exchange so
/// that two reactors refilling at once cannot both add the same interval.
public final class RateLimiter: Sendable {
    let runtime: RuntimeSettings
    private let tokens = Atomic<Int>(0)
    private let lastRefillNs = Atomic<Int64>(0)
    /// The (rate, burst) the bucket was last set up for; a change (admin
    /// endpoint, reload) refills the bucket to the new burst. Read without
    /// the lock on every take; the lock only serialises reconfiguring.
    private let configuredRate = Atomic<Int>(0)
    private let configuredBurst = Atomic<Int>(0)
    private let reconfiguring = Mutex(())
    let reactorCount: Int

    public init(runtime: RuntimeSettings, reactorCount: Int) {
        self.runtime = runtime
        self.reactorCount = max(reactorCount, 1)
    }

    /// Tokens a reactor takes at a time: about 1% of a second's budget per
    /// reactor, at least 1 (so low limits stay exact), at most 1000.
    public func chunkSize(rate: Int) -> Int {
        min(max(rate / (reactorCount * 100), 1), 1000)
    }

    /// Takes up to `wanted` tokens; returns how many were granted, 0 when the
    /// node is over its limit. With no limit set, grants everything.
    public func take(_ wanted: Int, nowNs: Int64 = aegis_monotonic_ns()) -> Int {
        let rate = runtime.currentRateLimit
        if rate <= 0 { return wanted }
        let burst = max(runtime.currentRateBurst, 1)
        if rate != configuredRate.load(ordering: .relaxed) || burst != configuredBurst.load(ordering: .relaxed) {
            reconfigure(rate: rate, burst: burst, nowNs: nowNs)
        }
        refill(rate: rate, burst: burst, nowNs: nowNs)
        var available = tokens.load(ordering: .relaxed)
        while available > 0 {
            let granted = min(available, wanted)
            let (exchanged, current) = tokens.compareExchange(
                expected: available, desired: available - granted, ordering: .relaxed)
            if exchanged { return granted }
            available = current
        }
        return 0
    }

    /// Sets the bucket up for the current settings now rather than at the
    /// next request (so /stats shows the new bucket at once).
    public func applyCurrentSettings(nowNs: Int64 = aegis_monotonic_ns()) {
        let rate = runtime.currentRateLimit
        if rate > 0 { reconfigure(rate: rate, burst: max(runtime.currentRateBurst, 1), nowNs: nowNs) }
    }

    /// Tokens in the shared bucket now (not counting reactors' local allowances).
    public var availableTokens: Int { max(tokens.load(ordering: .relaxed), 0) }

    private func reconfigure(rate: Int, burst: Int, nowNs: Int64) {
        reconfiguring.withLock { _ in
            guard configuredRate.load(ordering: .relaxed) != rate || configuredBurst.load(ordering: .relaxed) != burst else { return }
            tokens.store(burst, ordering: .relaxed)
            lastRefillNs.store(nowNs, ordering: .relaxed)
            configuredBurst.store(burst, ordering: .relaxed)
            configuredRate.store(rate, ordering: .relaxed)
        }
    }

    private func refill(rate: Int, burst: Int, nowNs: Int64) {
        let last = lastRefillNs.load(ordering: .relaxed)
        let elapsed = nowNs - last
        if elapsed <= 0 { return }
        // Double: elapsed × rate overflows Int64 after ~4 s at the largest rates.
        let earned = min(Double(elapsed) * Double(rate) / 1e9, Double(burst))
        let whole = Int(earned)
        if whole == 0 { return }
        // Advance by exactly the time those tokens took, keeping the
        // remainder for the next refill; a full bucket drops the rest.
        let advanced = whole >= burst ? nowNs : last + Int64(Double(whole) * 1e9 / Double(rate))
        guard lastRefillNs.compareExchange(expected: last, desired: advanced, ordering: .relaxed).exchanged else {
            return // another reactor refilled this interval
        }
        var current = tokens.load(ordering: .relaxed)
        while true {
            let next = min(current + whole, burst)
            let (exchanged, seen) = tokens.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return }
            current = seen
        }
    }
}
