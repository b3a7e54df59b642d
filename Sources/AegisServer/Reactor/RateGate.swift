/// The reactor's side of the node-wide rate limit (RateLimiter.swift):
/// whether a limit is on, and how many requests this reactor may still
/// admit before it takes more from the shared bucket. Admitting is plain
/// memory unless the allowance is used up.
///
/// Invariant: `allowance` was granted under the limit `seenRate`; a changed
/// limit drops it (`refresh`).
struct RateGate {
    private(set) var isLimited = false
    private var seenRate = 0
    private var allowance = 0

    /// True when a request may run without asking the shared bucket.
    @inline(__always) mutating func admitFromAllowance() -> Bool {
        if !isLimited { return true }
        if allowance > 0 {
            allowance -= 1
            return true
        }
        return false
    }

    /// `granted` requests taken from the shared bucket, one of them for the current request.
    mutating func grant(_ granted: Int) {
        allowance = granted - 1
    }

    mutating func refresh(rate: Int) {
        if rate != seenRate {
            seenRate = rate
            isLimited = rate > 0
            allowance = 0
        }
    }
}
