/// The counters behind a `MemoryLedger`, kept in manually allocated memory so
/// that the shards can update them through a pointer without Swift's dynamic
/// exclusivity checks on class properties (this is on every write).
///
/// Invariant: `thresholdBytes == MemoryLedger.threshold(limitBytes, evictionRatio, clientBufferBytes)`.
@usableFromInline
struct LedgerCounters {
    @usableFromInline var usedBytes: Int = 0
    @usableFromInline var limitBytes: Int
    @usableFromInline var evictionRatio: Double
    @usableFromInline var thresholdBytes: Int
    @usableFromInline var evictions: Int = 0
    @usableFromInline var expiredRemovals: Int = 0
    @usableFromInline var clientBufferBytes: Int = 0
    /// FLUSHALL ASYNC batches still being freed; their charges are in `usedBytes` until collected.
    var lazyFree: [LazyFreeBatch] = []
    /// Every shard charging this ledger, for eviction across them.
    var shards: [UnsafeMutablePointer<ShardState>] = []
    /// The shard the next cross-shard eviction tries first.
    var evictionCursor = 0

    init(limitBytes: Int, evictionRatio: Double) {
        self.limitBytes = limitBytes
        self.evictionRatio = evictionRatio
        self.thresholdBytes = MemoryLedger.threshold(limitBytes: limitBytes, ratio: evictionRatio)
    }

    /// Takes off `usedBytes` what lazy-free threads have freed since the last call.
    mutating func collectLazyFree() {
        if lazyFree.isEmpty { return }
        var i = 0
        while i < lazyFree.count {
            let batch = lazyFree[i]
            let freed = batch.freedBytes
            usedBytes &-= freed &- batch.collectedBytes
            batch.collectedBytes = freed
            if freed == batch.chargedBytes { lazyFree.remove(at: i) } else { i += 1 }
        }
    }
}

/// Memory accounting shared by all shards of one reactor.
///
/// Thread confinement: a ledger is owned by one reactor thread, like the
/// shards that charge it. It is deliberately not `Sendable`; no locks, no
/// atomics. Another thread may only read it through that reactor (for
/// example by asking it over a ring for a stats snapshot).
///
/// Accounting rule (exact, not an estimate): `usedBytes` is the sum, over
/// every live entry of every shard charging this ledger, of
/// `malloc_usable_size(block) + 8` (the 8 bytes of malloc's chunk header),
/// plus the same charge for each shard's table array, FIFO rings and ghost
/// arrays.
public final class MemoryLedger {
    @usableFromInline
    let counters: UnsafeMutablePointer<LedgerCounters>

    /// - Parameters:
    ///   - limitBytes: memory limit; 0 = unlimited (no eviction).
    ///   - evictionRatio: eviction starts when `usedBytes` exceeds
    ///     `limitBytes * evictionRatio`.
    public init(limitBytes: Int, evictionRatio: Double) {
        precondition(limitBytes >= 0, "limitBytes must not be negative")
        counters = .allocate(capacity: 1)
        counters.initialize(to: LedgerCounters(limitBytes: limitBytes, evictionRatio: evictionRatio))
    }

    deinit {
        counters.deinitialize(count: 1)
        counters.deallocate()
    }

    /// Bytes charged by all shards using this ledger (see the accounting rule).
    public internal(set) var usedBytes: Int {
        get { counters.pointee.usedBytes }
        set { counters.pointee.usedBytes = newValue }
    }

    /// Memory limit in bytes; 0 = unlimited.
    public var limitBytes: Int {
        get { counters.pointee.limitBytes }
        set {
            precondition(newValue >= 0, "limitBytes must not be negative")
            counters.pointee.limitBytes = newValue
            counters.pointee.thresholdBytes = Self.threshold(limitBytes: newValue, ratio: evictionRatio, clientBufferBytes: clientBufferBytes)
        }
    }

    /// Fraction of `limitBytes` above which a write evicts.
    public var evictionRatio: Double {
        get { counters.pointee.evictionRatio }
        set {
            counters.pointee.evictionRatio = newValue
            counters.pointee.thresholdBytes = Self.threshold(limitBytes: limitBytes, ratio: newValue, clientBufferBytes: clientBufferBytes)
        }
    }

    /// `Int(Double(limitBytes) * evictionRatio)` less `clientBufferBytes`,
    /// `Int.max` when unlimited.
    public var evictionThresholdBytes: Int { counters.pointee.thresholdBytes }

    /// Bytes the reactor's client connections hold in their buffers (input,
    /// output, replies waiting for their turn). Not part of `usedBytes`,
    /// which is exactly what the shards charge, but eviction makes room for
    /// it: data and client buffers together stay under the threshold, so
    /// `max_memory_mb` bounds both, as Redis's maxmemory counts its
    /// clients' buffers.
    public var clientBufferBytes: Int {
        get { counters.pointee.clientBufferBytes }
        set {
            precondition(newValue >= 0, "clientBufferBytes must not be negative")
            counters.pointee.clientBufferBytes = newValue
            counters.pointee.thresholdBytes = Self.threshold(limitBytes: limitBytes, ratio: evictionRatio, clientBufferBytes: newValue)
        }
    }

    /// Entries removed by eviction, all shards of this ledger.
    public internal(set) var evictions: Int {
        get { counters.pointee.evictions }
        set { counters.pointee.evictions = newValue }
    }

    /// Takes off `usedBytes` what FLUSHALL ASYNC threads have freed so far
    /// (every expiry sweep does this too).
    public func collectLazyFree() { counters.pointee.collectLazyFree() }

    /// Entries handed to FLUSHALL ASYNC threads and not freed yet.
    public var lazyFreePendingEntries: Int {
        counters.pointee.lazyFree.reduce(0) { $0 + $1.entries - $1.freedEntries }
    }

    /// Expired entries removed (lazily on access or by `expireSweep`).
    public internal(set) var expiredRemovals: Int {
        get { counters.pointee.expiredRemovals }
        set { counters.pointee.expiredRemovals = newValue }
    }

    static func threshold(limitBytes: Int, ratio: Double, clientBufferBytes: Int = 0) -> Int {
        if limitBytes == 0 { return Int.max }
        let t = Double(limitBytes) * ratio
        if !(t > 0) { return 0 }  // also NaN
        if t >= Double(Int.max) { return Int.max }
        return Swift.max(0, Int(t) - clientBufferBytes)
    }
}
