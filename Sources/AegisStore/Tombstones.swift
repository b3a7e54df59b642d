import Glibc

/// Bounds on how long a replicated shard remembers its deleted keys.
///
/// A tombstone is needed only while a write older than the delete can still
/// reach this replica. The replication stream delivers a shard's records in
/// version order, so that happens only through out-of-order paths (a shard
/// stream racing with a delete, a record resent after a reconnect). Once
/// every replica acknowledged past a tombstone it is dropped
/// (`Tombstones.dropAcknowledged`). The bounds below catch the rest (a
/// follower that never acknowledges, a shard nobody replicates to any more):
/// a tombstone forgotten for them raises `absentFloor` to its version, and a
/// replicated write for an absent key at or below the floor is refused. So
/// forgetting never brings a key back; the price is that an older write for
/// an absent key that was never deleted is refused too, which is a cache
/// miss on this replica, not a wrong value.
public struct TombstoneLimits: Sendable, Equatable {
    /// Most tombstones remembered per shard (`Tombstones.fifo` entries: a
    /// key deleted again counts again until its older entry leaves).
    public var countMax: Int
    /// Oldest a tombstone may get, in ms, counted from the delete.
    public var ageMsMax: Int64

    public init(countMax: Int, ageMsMax: Int64) {
        precondition(countMax > 0 && ageMsMax > 0, "tombstone limits must be positive")
        self.countMax = countMax
        self.ageMsMax = ageMsMax
    }

    /// 1,024 per shard: at about 100 bytes each (block, table slot, FIFO
    /// slot) that is 100 KB per shard, 26 MB for a node primary or follower
    /// for all 256 shards of the default num_shards, charged to
    /// max_memory_mb like the data. A follower that keeps up acknowledges
    /// within a batch timeout (milliseconds), so 1,024 unacknowledged
    /// deletes per shard means one that does not. 60 s: far longer than
    /// acknowledging takes, short enough that a silent follower does not
    /// pin memory for long.
    public static let standard = TombstoneLimits(countMax: 1_024, ageMsMax: 60_000)
}

/// The deleted keys of one replicated shard, each with the version of its
/// delete, oldest first.
///
/// Memory ownership (the unsafe part, kept here):
/// - Each remembered key is one malloc'd block laid out as
///   `[hash: UInt64][count: UInt32][pad: UInt32][key bytes]`, owned by
///   `versions`: a `Key` in `versions` points at its block's key bytes, and
///   the block is freed exactly when that `Key` leaves `versions`.
/// - `fifo` holds a block pointer for every recording, in recording order.
///   A key deleted again keeps its block and gets a newer version in
///   `versions` plus a second `fifo` entry; the older entry then no longer
///   matches `versions` and is skipped when it reaches the front. Every
///   `fifo` entry of a block precedes the one that matches, so a block is
///   never freed while a `fifo` entry ahead of it still points at it, and
///   entries behind the matching one do not exist.
/// - `chargedBytes` is the blocks' malloc charges plus the two containers'
///   capacities times their element strides; the shard passes every change
///   of it to the ledger.
struct Tombstones {
    /// A key by its bytes; equality compares bytes, hashing uses the key hash.
    struct Key: Hashable {
        let hash: UInt64
        let bytes: UnsafeRawBufferPointer

        static func == (a: Key, b: Key) -> Bool {
            a.hash == b.hash && a.bytes.count == b.bytes.count
                && (a.bytes.count == 0 || memcmp(a.bytes.baseAddress!, b.bytes.baseAddress!, a.bytes.count) == 0)
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    }

    struct Recorded {
        let block: UnsafeMutableRawPointer
        let version: EntryVersion
        let madeMs: Int64
    }

    static let headerBytes = 16

    let limits: TombstoneLimits
    private(set) var versions: [Key: EntryVersion] = [:]
    private var fifo: [Recorded] = []
    private var fifoHead = 0
    private var blockBytes = 0
    /// A replicated write for an absent key at or below this version is
    /// older than a FLUSHALL or a forgotten tombstone: refused.
    private(set) var absentFloor = EntryVersion.zero
    /// Tombstones let go before every replica acknowledged them (size or age bound).
    private(set) var forgotten = 0
    /// The newest tombstone let go because every replica acknowledged its
    /// delete (`dropAcknowledged`). Not an absent floor: no replicated write
    /// is refused for it. A read at read_quorum >= 2 on the primary counts
    /// an absent key as known at least this new, so that a replica's older
    /// state of a key deleted and forgotten here is stale, not newer: a
    /// replica out of the shard's routing when the delete was acknowledged
    /// (dead, cut off) comes back still holding the key (`chaos/run --seed
    /// 106`: a healed former holder's value came back over a DEL).
    private(set) var acknowledgedFloor = EntryVersion.zero

    init(limits: TombstoneLimits) { self.limits = limits }

    var count: Int { versions.count }
    var pending: Int { fifo.count - fifoHead }

    var chargedBytes: Int {
        blockBytes &+ versions.capacity &* (MemoryLayout<Key>.stride &+ MemoryLayout<EntryVersion>.stride)
            &+ fifo.capacity &* MemoryLayout<Recorded>.stride
    }

    /// The version of the newest thing known about an absent key: its
    /// tombstone's, or the floor's when that is newer.
    func barrier(_ key: UnsafeRawBufferPointer, hash: UInt64) -> EntryVersion {
        let own = versions.isEmpty ? nil : versions[Key(hash: hash, bytes: key)]
        guard let own else { return absentFloor }
        return Swift.max(own, absentFloor)
    }

    /// Remembers that `key` was deleted at `version` (kept only if newer
    /// than what is remembered), then applies the bounds. Returns the change
    /// in `chargedBytes`.
    mutating func record(_ key: UnsafeRawBufferPointer, hash: UInt64, version: EntryVersion, nowMs: Int64,
                         usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        if version > absentFloor {
            let probe = Key(hash: hash, bytes: key)
            if let index = versions.index(forKey: probe) {
                let (stored, known) = versions[index]
                if version > known {
                    versions[stored] = version
                    fifo.append(Recorded(block: Self.block(of: stored), version: version, madeMs: nowMs))
                }
            } else {
                let block = Malloc.allocate(Self.headerBytes &+ key.count)
                block.storeBytes(of: hash, as: UInt64.self)
                block.storeBytes(of: UInt32(key.count), toByteOffset: 8, as: UInt32.self)
                if key.count > 0 { (block + Self.headerBytes).copyMemory(from: key.baseAddress!, byteCount: key.count) }
                blockBytes &+= Malloc.charge(block, usable)
                let stored = Self.key(of: block)
                versions[stored] = version
                fifo.append(Recorded(block: block, version: version, madeMs: nowMs))
            }
        }
        forgetBeyondLimits(nowMs: nowMs, usable: usable)
        return chargedBytes &- before
    }

    /// Drops every tombstone at or below `acknowledged`: every replica has
    /// applied the deletes, so no older write for those keys is in flight.
    /// Returns the change in `chargedBytes`.
    mutating func dropAcknowledged(_ acknowledged: EntryVersion, usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        while fifoHead < fifo.count && fifo[fifoHead].version <= acknowledged {
            popFront(raisingFloor: false, usable: usable)
        }
        compactFIFO()
        return chargedBytes &- before
    }

    /// Applies the age bound alone (the size bound is applied when recording).
    /// Returns the change in `chargedBytes`.
    mutating func forgetOld(nowMs: Int64, usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        forgetBeyondLimits(nowMs: nowMs, usable: usable)
        return chargedBytes &- before
    }

    /// Forgets every tombstone; later replicated writes for absent keys at
    /// or below `floor` are refused (a FLUSHALL at `floor`). Returns the
    /// change in `chargedBytes`.
    mutating func reset(floor: EntryVersion) -> Int {
        let before = chargedBytes
        freeAll()
        if floor > absentFloor { absentFloor = floor }
        return chargedBytes &- before
    }

    /// A FLUSHALL at `floor` that this shard may have seen newer deletes
    /// than (replayed, or replicated after records that overtook it): the
    /// floor covers every tombstone at or below it, and those go; a newer
    /// one stays, or the SET it deleted could come back above the floor.
    /// Returns the change in `chargedBytes`.
    mutating func flush(floor: EntryVersion, usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        if floor > absentFloor { absentFloor = floor }
        var kept: [Recorded] = []
        for index in fifoHead..<fifo.count {
            let recorded = fifo[index]
            let stored = Self.key(of: recorded.block)
            // An older entry of a key deleted again: its block is freed, if
            // at all, at the newer entry, which comes later.
            guard versions[stored] == recorded.version else { continue }
            if recorded.version > floor {
                kept.append(recorded)
                continue
            }
            versions[stored] = nil
            blockBytes &-= Malloc.charge(recorded.block, usable)
            free(recorded.block)
        }
        fifo = kept
        fifoHead = 0
        if versions.isEmpty { versions = [:] }
        return chargedBytes &- before
    }

    /// Forgets every tombstone and sets the absent floor to `floor` even
    /// when it was higher: the shard is about to become a copy of another
    /// replica's shard (a shard stream), and a floor left from the history
    /// that copy replaces would refuse the copy's own entries. Returns the
    /// change in `chargedBytes`.
    mutating func replace(floor: EntryVersion) -> Int {
        let before = chargedBytes
        freeAll()
        absentFloor = floor
        acknowledgedFloor = .zero
        return chargedBytes &- before
    }

    /// Frees every block and both containers' storage.
    mutating func freeAll() {
        for stored in versions.keys { free(Self.block(of: stored)) }
        versions = [:]
        fifo = []
        fifoHead = 0
        blockBytes = 0
    }

    private mutating func forgetBeyondLimits(nowMs: Int64, usable: Malloc.UsableSizeFunction) {
        var changed = false
        while fifoHead < fifo.count
            && (fifo.count &- fifoHead > limits.countMax || nowMs &- fifo[fifoHead].madeMs > limits.ageMsMax) {
            popFront(raisingFloor: true, usable: usable)
            changed = true
        }
        if changed { compactFIFO() }
    }

    private mutating func popFront(raisingFloor: Bool, usable: Malloc.UsableSizeFunction) {
        let front = fifo[fifoHead]
        fifoHead &+= 1
        let stored = Self.key(of: front.block)
        // An older entry of a key deleted again: its block belongs to the newer one.
        guard versions[stored] == front.version else { return }
        versions[stored] = nil
        blockBytes &-= Malloc.charge(front.block, usable)
        free(front.block)
        if raisingFloor {
            forgotten &+= 1
            if front.version > absentFloor { absentFloor = front.version }
        } else if front.version > acknowledgedFloor {
            acknowledgedFloor = front.version
        }
    }

    /// Gives back the FIFO's consumed front once it is most of the array,
    /// and both containers' storage once nothing is remembered.
    private mutating func compactFIFO() {
        if fifoHead == fifo.count {
            fifo = []
            fifoHead = 0
            if versions.isEmpty { versions = [:] }
        } else if fifoHead >= 64 && fifoHead &* 2 >= fifo.count {
            fifo.removeFirst(fifoHead)
            fifoHead = 0
        }
    }

    private static func key(of block: UnsafeMutableRawPointer) -> Key {
        let count = Int(block.load(fromByteOffset: 8, as: UInt32.self))
        return Key(hash: block.load(as: UInt64.self),
                   bytes: UnsafeRawBufferPointer(start: block + headerBytes, count: count))
    }

    private static func block(of key: Key) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(mutating: key.bytes.baseAddress! - headerBytes)
    }

    /// Every violated invariant, described. For tests.
    func problems(usable: Malloc.UsableSizeFunction) -> [String] {
        var found: [String] = []
        var bytes = 0
        for (stored, version) in versions {
            bytes &+= Malloc.charge(Self.block(of: stored), usable)
            if version <= .zero { found.append("tombstone with version zero") }
        }
        if bytes != blockBytes { found.append("tombstone blocks charge \(blockBytes), sum \(bytes)") }
        if pending < versions.count { found.append("fifo \(pending) shorter than tombstones \(versions.count)") }
        var matching = 0
        for r in fifo[fifoHead...] where versions[Self.key(of: r.block)] == r.version { matching &+= 1 }
        if matching != versions.count { found.append("\(versions.count) tombstones, \(matching) matching fifo entries") }
        return found
    }
}
