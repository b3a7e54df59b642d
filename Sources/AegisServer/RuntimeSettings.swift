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
    let drainTimeoutMs = Atomic<Int64>(0)
    let maxConns = Atomic<Int>(0)
    /// Cluster timings, kept here for the membership layer to read.
    let gossipIntervalMs = Atomic<Int64>(0)
    let suspectTimeoutMs = Atomic<Int64>(0)
    let deadTimeoutMs = Atomic<Int64>(0)
    /// Node-wide operations per second; 0 means no limit.
    let rateLimit = Atomic<Int>(0)
    /// Tokens the bucket may hold; 0 means "same as rateLimit".
    let rateBurst = Atomic<Int>(0)
    /// stream_rate_limit_mb: MiB/s of shard streams for the whole node; 0 = no limit.
    let streamRateLimitMB = Atomic<Int>(0)
    /// SLOWLOG and LATENCY thresholds (microseconds, -1 = off; milliseconds, 0 = off) and length.
    let slowlogThresholdUs = Atomic<Int>(-1)
    let slowlogMaxLen = Atomic<Int>(0)
    let latencyThresholdMs = Atomic<Int>(0)
    let seeds: Mutex<[String]>
    /// The whole configuration as it runs now: the start-up one plus every
    /// reloaded key. For readers that show settings (CONFIG GET, /stats);
    /// hot paths read the atomics above.
    private let runningConfig: Mutex<AegisConfig>

    public init(_ config: AegisConfig) {
        seeds = Mutex(config.seeds)
        runningConfig = Mutex(config)
        apply(config)
    }

    public var running: AegisConfig { runningConfig.withLock { $0 } }

    /// Records what a reload left running (after `apply`).
    public func setRunning(_ config: AegisConfig) {
        runningConfig.withLock { $0 = config }
    }

    /// Stores every reloadable value of `config`.
    public func apply(_ config: AegisConfig) {
        apply(config, keys: Set(AegisConfig.reloadableKeys))
    }

    /// Stores the values of `keys` only, so a reload that changed the log
    /// level leaves a rate limit set through the admin endpoint alone.
    /// `log_level` lives in the logging system, not here.
    public func apply(_ config: AegisConfig, keys: Set<String>) {
        func store(_ key: String, _ atomic: borrowing Atomic<Int64>, _ value: Duration) {
            if keys.contains(key) { atomic.store(value.milliseconds, ordering: .relaxed) }
        }
        store("read_timeout", readTimeoutMs, config.readTimeout)
        store("write_timeout", writeTimeoutMs, config.writeTimeout)
        store("idle_timeout", idleTimeoutMs, config.idleTimeout)
        store("drain_timeout", drainTimeoutMs, config.drainTimeout)
        store("gossip_interval", gossipIntervalMs, config.gossipInterval)
        store("suspect_timeout", suspectTimeoutMs, config.suspectTimeout)
        store("dead_timeout", deadTimeoutMs, config.deadTimeout)
        if keys.contains("max_conns") { maxConns.store(config.maxConns, ordering: .relaxed) }
        if keys.contains("rate_limit") { rateLimit.store(config.rateLimit, ordering: .relaxed) }
        if keys.contains("rate_burst") { rateBurst.store(config.rateBurst, ordering: .relaxed) }
        if keys.contains("stream_rate_limit_mb") { streamRateLimitMB.store(config.streamRateLimitMB, ordering: .relaxed) }
        if keys.contains("seeds") { seeds.withLock { $0 = config.seeds } }
        if keys.contains("slowlog_log_slower_than") { slowlogThresholdUs.store(config.slowlogLogSlowerThan, ordering: .relaxed) }
        if keys.contains("slowlog_max_len") { slowlogMaxLen.store(config.slowlogMaxLen, ordering: .relaxed) }
        if keys.contains("latency_monitor_threshold") { latencyThresholdMs.store(config.latencyMonitorThreshold, ordering: .relaxed) }
    }

    public var currentRateLimit: Int { rateLimit.load(ordering: .relaxed) }
    public var currentRateBurst: Int {
        let burst = rateBurst.load(ordering: .relaxed)
        return burst == 0 ? currentRateLimit : burst
    }
    public var currentSeeds: [String] { seeds.withLock { $0 } }
    public var currentStreamRateLimitMB: Int { streamRateLimitMB.load(ordering: .relaxed) }
    public var currentReadTimeoutMs: Int64 { readTimeoutMs.load(ordering: .relaxed) }
    public var currentIdleTimeoutMs: Int64 { idleTimeoutMs.load(ordering: .relaxed) }

    public func setRateLimit(opsPerSecond: Int, burst: Int? = nil) {
        rateLimit.store(opsPerSecond, ordering: .relaxed)
        if let burst { rateBurst.store(burst, ordering: .relaxed) }
    }
}
