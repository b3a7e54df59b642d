import AegisConfig
import Synchronization

/// The settings that may change while the node runs (SIGHUP reload, admin
/// endpoints). Everything else in `AegisConfig` is fixed at start.
///
/// Each value is its own relaxed atomic: readers (reactors checking
/// timeouts once a second, the rate limiter refilling its tokens) only
/// need to see a new value soon, never a consistent set of several.
public final class RuntimeSettings: Sendable {
    let readTimeoutMs = Atomic<Int64>(0)
    let writeTimeoutMs = Atomic<Int64>(0)
    let idleTimeoutMs = Atomic<Int64>(0)
    /// Node-wide operations per second; 0 means no limit.
    let rateLimit = Atomic<Int>(0)
    /// Tokens the bucket may hold; 0 means "same as rateLimit".
    let rateBurst = Atomic<Int>(0)
    let seeds: Mutex<[String]>

    public init(_ config: AegisConfig) {
        seeds = Mutex(config.seeds)
        apply(config)
    }

    /// Stores every reloadable value of `config`.
    public func apply(_ config: AegisConfig) {
        readTimeoutMs.store(Int64(config.readTimeout.milliseconds), ordering: .relaxed)
        writeTimeoutMs.store(Int64(config.writeTimeout.milliseconds), ordering: .relaxed)
        idleTimeoutMs.store(Int64(config.idleTimeout.milliseconds), ordering: .relaxed)
        rateLimit.store(config.rateLimit, ordering: .relaxed)
        rateBurst.store(config.rateBurst, ordering: .relaxed)
        seeds.withLock { $0 = config.seeds }
    }

    public var currentRateLimit: Int { rateLimit.load(ordering: .relaxed) }
    public var currentRateBurst: Int {
        let burst = rateBurst.load(ordering: .relaxed)
        return burst == 0 ? currentRateLimit : burst
    }

    public func setRateLimit(opsPerSecond: Int, burst: Int? = nil) {
        rateLimit.store(opsPerSecond, ordering: .relaxed)
        if let burst { rateBurst.store(burst, ordering: .relaxed) }
    }
}
