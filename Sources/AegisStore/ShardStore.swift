/// One shard of the key space: key → (value, expiry, version), with lazy and
/// bounded active expiry, S3-FIFO eviction under the reactor's memory limit,
/// and an incremental scan.
///
/// Thread confinement: a `ShardStore` (and the `MemoryLedger` it charges) is
/// owned by exactly one reactor thread; only that thread may call it, ever.
/// Other reactors reach a shard by forwarding the request to its owner over
/// a ring. That is why nothing here locks, uses atomics or is `Sendable`.
///
/// Entry references (`EntryRef`) point into the shard's memory and are valid
/// only until the next call that may mutate the same shard (set, delete,
/// setExpiry, get of an expired key, expireSweep, removeAll). A `scan`
/// visitor must not call back into the store.
///
/// Memory: each entry is one malloc'd block (24-byte header, key, value); the
/// table costs 8 bytes per slot at 53-80% load while growing (it shrinks to
/// 50% below 12.5%), plus the previous table while a resize moves entries
/// over a few at a time; each entry has one 8-byte pointer in a FIFO ring; an
/// evicting shard also keeps a 4-byte ghost fingerprint slot per entry. All
/// of it is charged to the ledger (see `MemoryLedger`), and so is the
/// shard's small table of version epochs (16 bytes per epoch, see
/// `VersionEpochs`). For 16-byte keys and 32-byte values that is about 99
/// bytes per item (perf/StoreBench bytes-per-item), 115 while the entry
/// header carried the 32-bit term itself (28 bytes, one glibc chunk class up).
public final class ShardStore {
    @usableFromInline let state: UnsafeMutablePointer<ShardState>
    /// The ledger this shard charges (kept alive by the store).
    public let ledger: MemoryLedger

    public convenience init(ledger: MemoryLedger) {
        self.init(ledger: ledger, epochsMax: VersionEpochs.defaultEpochsMax)
    }

    /// `epochsMax`: how many version epochs the shard tables before versions
    /// spill out of their entries (see `VersionEpochs`); tests lower it.
    init(ledger: MemoryLedger, epochsMax: Int) {
        self.ledger = ledger
        state = .allocate(capacity: 1)
        state.initialize(to: ShardState(ledger: ledger.counters, epochsMax: epochsMax))
        state.pointee.selfPointer = state
        ledger.counters.pointee.shards.append(state)
    }

    deinit {
        if let i = ledger.counters.pointee.shards.firstIndex(of: state) { ledger.counters.pointee.shards.remove(at: i) }
        state.pointee.destroy()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Live entries (expired-but-not-yet-removed ones are counted).
    public var count: Int { state.pointee.count }

    /// Current term, used for the versions of new writes (starts at 1).
    /// Kept whole (32 bits); it only grows in a cluster, and replaying or
    /// applying a write of a later term moves it up to that term.
    public var term: UInt32 {
        get { state.pointee.term }
        set { state.pointee.term = newValue }
    }

    /// Lookup. Removes the entry and returns nil when expired (lazy expiry);
    /// marks the entry accessed for eviction.
    @inlinable
    public func get(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryRef? {
        state.pointee.getRef(key, hash: hash, nowMs: nowMs)
    }

    /// Memory and eviction facts of a live entry, without touching it.
    public func facts(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryFacts? {
        state.pointee.facts(key, hash: hash, nowMs: nowMs)
    }

    /// Insert or overwrite; assigns version (term, seq + 1). `expiryMs` is
    /// absolute unix ms, 0 = none (an entry is expired once `expiryMs <= now`).
    /// Then evicts from this shard while the ledger is above its eviction
    /// threshold, never evicting the entry just written; when this shard has
    /// nothing else left, from the ledger's other shards in rotation.
    @inlinable @discardableResult
    public func set(_ key: UnsafeRawBufferPointer, hash: UInt64, value: UnsafeRawBufferPointer,
                    expiryMs: Int64, nowMs: Int64) -> EntryVersion {
        state.pointee.set(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs)
    }

    /// Stores a write replayed from the write-ahead log, keeping its version;
    /// the shard's term and sequence move up to it so later writes stay newer.
    @inlinable
    public func restore(_ key: UnsafeRawBufferPointer, hash: UInt64, value: UnsafeRawBufferPointer,
                        expiryMs: Int64, nowMs: Int64, version: EntryVersion) {
        state.pointee.restore(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs, version: version)
    }

    /// A deletion replayed from the write-ahead log: removes the key (if
    /// there) and moves the shard's term and sequence up to its version.
    @inlinable
    public func restoreDeletion(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64, version: EntryVersion) {
        if !state.pointee.delete(key, hash: hash, nowMs: nowMs, version: version) { state.pointee.adopt(version) }
    }

    /// A FLUSHALL replayed from the write-ahead log: drops everything and
    /// moves the shard's term and sequence up to the flush's version.
    @inlinable
    public func restoreFlush(version: EntryVersion) {
        state.pointee.flush(at: version)
    }

    /// The version of this shard's last write: the one given to the last
    /// set, delete of a live key, expiry change or removeAll, or the newest
    /// of the writes replayed or applied (they can come in any order).
    /// Logging a DEL or FLUSHALL, whose key keeps no entry to carry it,
    /// reads it here.
    @inlinable
    public var lastWriteVersion: EntryVersion { state.pointee.lastVersion }

    /// Changes whenever a client's command changed this shard (not on expiry
    /// or eviction); compare before and after a command to see if it wrote.
    @inlinable
    public var mutationStamp: UInt64 { state.pointee.mutations }

    /// Returns true when a live entry was removed (an expired one is removed
    /// too, returning false). A removal of a live entry is a write: it gets
    /// the next version (see `lastWriteVersion`).
    @inlinable @discardableResult
    public func delete(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> Bool {
        state.pointee.delete(key, hash: hash, nowMs: nowMs)
    }

    /// Changes only the expiry of a live entry (0 = persist; a time not after
    /// `nowMs` makes it expired). Returns false when absent/expired. Bumps seq.
    @inlinable @discardableResult
    public func setExpiry(_ key: UnsafeRawBufferPointer, hash: UInt64, expiryMs: Int64, nowMs: Int64) -> Bool {
        state.pointee.setExpiry(key, hash: hash, expiryMs: expiryMs, nowMs: nowMs)
    }

    /// Bounded active expiry: examines at most `maxSlots` table slots from a
    /// rotating cursor (and at most one pass), removes expired entries,
    /// returns how many it removed.
    @inlinable
    public func expireSweep(nowMs: Int64, maxSlots: Int) -> Int {
        state.pointee.expireSweep(nowMs: nowMs, maxSlots: maxSlots)
    }

    /// Drops everything (FLUSHALL); the ledger goes down accordingly. A
    /// write: it gets the next version (see `lastWriteVersion`).
    @inlinable
    public func removeAll() {
        state.pointee.removeAll()
    }

    /// Drops everything at once without freeing it here (FLUSHALL ASYNC):
    /// the memory goes to `batch`, whose `start(ledger:)` frees it off this
    /// thread. The ledger keeps charging it until it is freed.
    public func removeAll(deferringTo batch: LazyFreeBatch) {
        state.pointee.removeAll(deferringTo: batch)
    }

    /// A copy this node stops replicating is dropped (its memory to
    /// `batch`, as `removeAll(deferringTo:)`), leaving no version behind:
    /// taken on again later, the shard accepts its holder's records from
    /// the first, as a stream's start would.
    public func dropCopy(deferringTo batch: LazyFreeBatch) {
        state.pointee.dropCopy(deferringTo: batch)
    }

    /// Incremental iteration that survives table growth/shrink: cursor 0
    /// starts, a returned 0 means done. Every entry present for the whole
    /// iteration is visited at least once (some may be visited twice after a
    /// shrink). Cursors are positions in hash space and fit in 40 bits. Visits
    /// about `count` entries per call, skipping expired ones. The visitor
    /// must not call into this store.
    @inlinable
    public func scan(cursor: UInt64, count: Int, nowMs: Int64, _ visit: (EntryRef) -> Void) -> UInt64 {
        state.pointee.scan(cursor: cursor, count: count, nowMs: nowMs, visit)
    }

    /// Bytes this shard has charged to its ledger.
    public var chargedBytes: Int { state.pointee.chargedBytes }

    /// Where this shard's memory goes (for INFO-style reporting and benchmarks).
    public var stats: ShardStats { state.pointee.stats }

    /// Lookup without side effects (no lazy expiry, no access mark), expired entries included. For tests.
    func peek(_ key: UnsafeRawBufferPointer, hash: UInt64) -> EntryRef? {
        let (i, found) = state.pointee.find(key, hash)
        return found ? state.pointee.ref(ShardState.entry(state.pointee.slots[i])) : nil
    }

    /// Entries moved between tables by growth and shrinking so far. For tests and benchmarks.
    var movedEntries: Int { state.pointee.movedEntries }

    /// Entries given a new position in a FIFO ring so far. For tests.
    var ringRepositionedEntries: Int { state.pointee.small.repositioned + state.pointee.main.repositioned }

    /// True while a resize is moving entries from the previous table. For tests.
    var isResizing: Bool { state.pointee.oldSlots != nil }

    /// Table capacity in slots. For tests.
    var tableCapacity: Int { state.pointee.capacity }

    /// Every violated invariant, described; empty when all hold. O(table size): for tests.
    func checkInvariants() -> [String] { state.pointee.checkInvariants() }
}

/// A snapshot of one shard's memory use; all byte counts are ledger charges.
public struct ShardStats: Sendable, Equatable {
    /// Entries in the small / main FIFO.
    public var smallEntries: Int
    public var mainEntries: Int
    /// Fingerprints remembered by the ghost FIFO.
    public var ghostEntries: Int
    public var tableSlots: Int
    public var entryBytes: Int
    public var tableBytes: Int
    /// Small and main rings.
    public var queueBytes: Int
    public var ghostBytes: Int
    /// Deleted keys remembered for replication, and what they cost.
    public var tombstones: Int = 0
    public var tombstoneBytes: Int = 0

    public var totalBytes: Int { entryBytes + tableBytes + queueBytes + ghostBytes + tombstoneBytes }
}

/// One entry as OBJECT and MEMORY USAGE describe it.
public struct EntryFacts {
    /// The value, valid until the shard next changes.
    public var value: UnsafeRawBufferPointer
    /// Bytes the entry holds: its block (header, key, value, malloc's
    /// rounding) and its two 8-byte slots (hash table, FIFO ring).
    public var bytes: Int
    /// S3-FIFO's access counter, 0...3 (saturating).
    public var frequency: Int
    /// In the main queue (accessed while in the small one) rather than the small one.
    public var inMainQueue: Bool
}
