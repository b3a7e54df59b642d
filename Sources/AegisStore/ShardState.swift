import Glibc

/// The storage of one shard: an open-addressing hash table of entry blocks
/// plus the S3-FIFO eviction queues. `ShardStore` is its public face.
///
/// Thread confinement: a shard is touched only by the reactor thread that
/// owns it, so nothing here is locked or atomic and nothing is `Sendable`.
///
/// Table layout. `slots` is `capacity` 64-bit words, 0 = empty. An occupied
/// slot packs
///
///     bits 48..63  tag: bits 16..31 of the key hash (filters probes without a memory access)
///     bits  4..47  the entry block address (blocks are 16-byte aligned, below 2^48)
///     bits  0..3   distance from the home slot, saturated at 15 (15 = "15 or more":
///                  recompute from the key)
///
/// The home slot is `(hash * capacity) >> 64`, i.e. the hash's position in
/// hash space scaled to the table: home order is hash order for every
/// capacity, which is what lets a scan cursor (a position in hash space)
/// survive growth and shrinking. Collisions probe linearly (wrapping), and
/// deletion shifts later cluster members back (no tombstones).
///
/// Growth and shrinking are incremental, so no operation rehashes a whole
/// shard on the reactor (a 5M-key shard took a 0.3 s stall that way). A
/// resize allocates the new table and keeps the old one as `oldSlots`; its
/// entries move over one *old home* at a time (every entry whose home in the
/// old table is h moves together): a slice of `homesPerStep` homes per write
/// and per expiry sweep, in home order from `migrationCursor`, and, out of
/// order, the home of any key an operation looks up (`find` moves it first).
/// So every lookup, insert and delete works on the new table only, with one
/// probe sequence, and a scan moves the old homes of the hash range it is
/// about to visit before visiting it. The slice is sized when the resize
/// starts so that the last old home has moved before the new table could
/// need to grow again (see `startMigration`). New keys arriving in hash
/// order (a stream, a snapshot's replay, a restored dump) grow the table
/// early to what they will need (`noteInsertOrder`).
///
/// Invariants (all checked by `checkInvariants()`; cheap ones by `assert`):
/// 1. `minimumCapacity <= capacity`, `count < capacity` (an empty slot always
///    exists, so every probe terminates) and `count <= 0.8 * capacity` after
///    every insertion. `count` counts the entries of both tables.
/// 1a. While migrating (`oldSlots != nil`): `oldCount` entries are in the old
///    table, `0 < oldCount < oldCapacity`; an entry is in the old table iff its
///    old home is not moved yet, i.e. `home >= migrationCursor` and its bit in
///    `movedHomes` is clear. Invariants 2 and 3 hold in each table with that
///    table's capacity.
/// 2. Every occupied slot's tag equals bits 16..31 of its key's hash, and its
///    distance field equals min(15, cyclic distance from home to the slot).
/// 3. Every slot between an entry's home and its slot (cyclically) is occupied.
/// 4. No two slots hold equal keys; `count` equals the number of occupied slots.
/// 5. Every entry is in exactly one FIFO ring (`Entry.inMain` says which) at
///    `Entry.queuePosition`; `small.live + main.live == count`.
/// 6. `smallBytes` / `mainBytes` are the sums of the entries' charges
///    (`malloc_usable_size + 8` of the block, plus that of a spilled
///    version's block) of each queue; `tableCharge`, `epochs.chargedBytes`
///    and the rings' and ghost's `chargedBytes` are the charges of their
///    arrays (`oldTableCharge` and `movedHomesCharge` those of the old table
///    and its bitmap while migrating); the ledger received exactly the sum
///    of all of them (`chargedBytes`).
/// 7. Every entry's version word was acquired from `epochs` and is released
///    exactly once, when the entry is freed or given another version.
@usableFromInline
struct ShardState {
    static let minimumCapacity = 8
    static let pointerMask: UInt64 = 0x0000_FFFF_FFFF_FFF0
    static let tagMask: UInt64 = 0xFFFF_0000_0000_0000
    static let distanceMask: UInt64 = 0xF
    static let saturatedDistance = 15
    /// A small-queue entry with at least this many hits moves to main when it reaches the head.
    static let promoteThreshold: UInt32 = 1
    /// Share of the shard's entry bytes the small queue may keep before it is evicted from first.
    static let smallPercent = 10

    // Table.
    @usableFromInline var slots: UnsafeMutablePointer<UInt64>
    @usableFromInline var capacity: Int
    @usableFromInline var count = 0
    var tableCharge = 0

    // The table being migrated away from (nil when no resize is under way).
    @usableFromInline var oldSlots: UnsafeMutablePointer<UInt64>? = nil
    var oldCapacity = 0
    var oldCount = 0
    var oldTableCharge = 0
    /// One bit per old home moved out of order (by a lookup or a scan).
    var movedHomes: UnsafeMutablePointer<UInt64>? = nil
    var movedHomesCharge = 0
    /// Every old home below it has moved.
    var migrationCursor = 0
    var homesPerStep = 0

    // S3-FIFO.
    var small = EntryRing()
    var main = EntryRing()
    var ghost = GhostQueue()
    var smallBytes = 0
    var mainBytes = 0

    // Versions, expiry. Invariant: every version the shard holds, or was
    // given by the log or a primary, is at most (term, seq), so the next
    // version it assigns is newer than all of them.
    @usableFromInline var term: UInt32 = 1
    var seq: UInt64 = 0
    /// The version of the last write (one made here, replayed or replicated):
    /// what a DEL or FLUSHALL is logged with, as the key has no entry to carry it.
    @usableFromInline var lastVersion = EntryVersion.zero
    /// The epochs (term, top of seq) of the entries' versions.
    @usableFromInline var epochs: VersionEpochs
    /// Bumped by every change a client made (set, delete of a live entry,
    /// expiry change, removeAll), never by expiry or eviction: the WAL logs
    /// a key's new state exactly when this moved.
    @usableFromInline var mutations: UInt64 = 0
    var sweepCursor = 0
    /// Set while a scan calls its visitor: the visitor must not mutate the shard.
    var visiting = false
    /// Entries moved from one table to another so far (growth and shrinking):
    /// what a single operation adds here is the work it did for the table.
    var movedEntries = 0
    /// New keys inserted one after another in about increasing hash order,
    /// the first one's hash, and the highest (`noteInsertOrder`).
    var orderedRun = 0
    var orderedRunStartHash: UInt64 = 0
    var orderedRunMaxHash: UInt64 = 0
    /// Deleted keys' versions; nil while the shard is not replicated
    /// (replication_factor 1), when deletes leave nothing behind.
    var tombstones: Tombstones? = nil

    @usableFromInline let ledger: UnsafeMutablePointer<LedgerCounters>
    /// Where this state lives (set by its `ShardStore`), to tell it apart among the ledger's shards.
    var selfPointer: UnsafeMutablePointer<ShardState>? = nil
    @usableFromInline let usable: Malloc.UsableSizeFunction

    init(ledger: UnsafeMutablePointer<LedgerCounters>, epochsMax: Int = VersionEpochs.defaultEpochsMax) {
        self.ledger = ledger
        self.usable = Malloc.usableSize
        self.epochs = VersionEpochs(epochsMax: epochsMax)
        let raw = Malloc.allocateZeroed(Self.minimumCapacity, 8)
        slots = raw.bindMemory(to: UInt64.self, capacity: Self.minimumCapacity)
        capacity = Self.minimumCapacity
        tableCharge = Malloc.charge(raw, usable)
        ledger.pointee.usedBytes += tableCharge
    }

    /// Frees everything and returns all charges to the ledger.
    mutating func destroy() {
        removeAll()
        if tombstones != nil { addToLedger(-tombstones!.chargedBytes); tombstones!.freeAll() }
        TableMemory.free(slots, slots: capacity)
        ledger.pointee.usedBytes -= tableCharge
        tableCharge = 0
    }

    /// Everything this shard charged to the ledger.
    var chargedBytes: Int {
        smallBytes + mainBytes + allTablesCharge + small.chargedBytes + main.chargedBytes + ghost.chargedBytes
            + (tombstones?.chargedBytes ?? 0)
    }

    /// The hash tables and the version epochs' table.
    var allTablesCharge: Int { tableCharge + oldTableCharge + movedHomesCharge + epochs.chargedBytes }

    var stats: ShardStats {
        ShardStats(smallEntries: small.live, mainEntries: main.live, ghostEntries: ghost.count,
                   tableSlots: capacity, entryBytes: smallBytes + mainBytes, tableBytes: allTablesCharge,
                   queueBytes: small.chargedBytes + main.chargedBytes, ghostBytes: ghost.chargedBytes,
                   tombstones: tombstones?.count ?? 0, tombstoneBytes: tombstones?.chargedBytes ?? 0)
    }

    // MARK: - Slot helpers

    @inline(__always) @usableFromInline
    static func tag(_ hash: UInt64) -> UInt64 { (hash << 32) & tagMask }

    @inline(__always) @usableFromInline
    static func home(_ hash: UInt64, capacity: Int) -> Int {
        Int(truncatingIfNeeded: hash.multipliedFullWidth(by: UInt64(truncatingIfNeeded: capacity)).high)
    }

    @inline(__always) @usableFromInline
    func home(_ hash: UInt64) -> Int { Self.home(hash, capacity: capacity) }

    @inline(__always) @usableFromInline
    static func entry(_ slot: UInt64) -> Entry {
        Entry(UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: slot & pointerMask)).unsafelyUnwrapped)
    }

    @inline(__always) @usableFromInline
    static func distance(from start: Int, to end: Int, capacity: Int) -> Int {
        end >= start ? end &- start : end &+ capacity &- start
    }

    @inline(__always) @usableFromInline
    func distance(from start: Int, to end: Int) -> Int { Self.distance(from: start, to: end, capacity: capacity) }

    /// Exact distance of the slot's entry from its home, in a table of `capacity` slots.
    @inline(__always)
    static func exactDistance(_ slot: UInt64, at index: Int, capacity: Int) -> Int {
        let d = Int(truncatingIfNeeded: slot & distanceMask)
        if d < saturatedDistance { return d }
        return distance(from: home(entry(slot).hash, capacity: capacity), to: index, capacity: capacity)
    }

    @inline(__always)
    func exactDistance(_ slot: UInt64, at index: Int) -> Int { Self.exactDistance(slot, at: index, capacity: capacity) }

    @inline(__always) @usableFromInline
    func charge(_ e: Entry) -> Int { Malloc.charge(e.raw, usable) &+ VersionEpochs.extraCharge(e.versionWord, usable) }

    @inline(__always) @usableFromInline
    func version(of e: Entry) -> EntryVersion { epochs.version(e.versionWord) }

    @inline(__always) @usableFromInline
    func ref(_ e: Entry) -> EntryRef { e.ref(version: version(of: e)) }

    /// Gives `e` the word for `v`; an earlier word of `e` must be released first.
    @inline(__always) @usableFromInline
    mutating func stamp(_ e: Entry, _ v: EntryVersion) {
        var tableDelta = 0
        e.versionWord = epochs.acquire(v, charge: &tableDelta)
        if tableDelta != 0 { addToLedger(tableDelta) }
    }

    /// Frees an entry removed from the table and its ring (charges already taken off).
    @inline(__always)
    mutating func freeEntry(_ e: Entry) {
        epochs.release(e.versionWord)
        free(e.raw)
    }

    @inline(__always) @usableFromInline
    func addToLedger(_ delta: Int) { ledger.pointee.usedBytes &+= delta }

    /// Probes for `key`. Returns its slot, or the empty slot that ends its probe sequence.
    /// While a resize is under way it first moves the key's old home, so that
    /// the key, if present, is in the new table (mutating for that reason only).
    @inline(__always) @usableFromInline
    mutating func find(_ key: UnsafeRawBufferPointer, _ hash: UInt64) -> (index: Int, found: Bool) {
        if oldSlots != nil { migrateHome(of: hash) }
        let tag = Self.tag(hash)
        let slots = self.slots
        let capacity = self.capacity
        var i = home(hash)
        while true {
            let s = slots[i]
            if s == 0 { return (i, false) }
            if s & Self.tagMask == tag && Self.entry(s).keyEquals(key) { return (i, true) }
            i &+= 1
            if i == capacity { i = 0 }
        }
    }

    @inline(__always)
    func findEmpty(_ hash: UInt64) -> Int {
        var i = home(hash)
        while slots[i] != 0 {
            i &+= 1
            if i == capacity { i = 0 }
        }
        return i
    }

    /// Puts a new entry in the empty slot `index` of `hash`'s probe sequence.
    @inline(__always)
    mutating func place(_ e: Entry, hash: UInt64, at index: Int) {
        assert(slots[index] == 0)
        let d = Swift.min(distance(from: home(hash), to: index), Self.saturatedDistance)
        slots[index] = Self.tag(hash) | UInt64(UInt(bitPattern: e.raw)) | UInt64(d)
        count &+= 1
    }

    /// Backward-shift deletion of the slot at `index`.
    @usableFromInline
    mutating func removeSlot(at index: Int) {
        Self.shiftBack(slots, capacity: capacity, at: index)
        count &-= 1
    }

    /// Empties slot `index` of a table and shifts later members of its
    /// cluster back, so that no probe sequence has a hole.
    static func shiftBack(_ slots: UnsafeMutablePointer<UInt64>, capacity: Int, at index: Int) {
        var gap = index
        var j = index &+ 1
        if j == capacity { j = 0 }
        while true {
            let s = slots[j]
            if s == 0 { break }
            let d = exactDistance(s, at: j, capacity: capacity)
            let gapDistance = distance(from: gap, to: j, capacity: capacity)
            if d >= gapDistance {
                let nd = Swift.min(d &- gapDistance, saturatedDistance)
                slots[gap] = (s & ~distanceMask) | UInt64(nd)
                gap = j
            }
            j &+= 1
            if j == capacity { j = 0 }
        }
        slots[gap] = 0
    }

    // MARK: - Incremental resize

    /// Starts moving every entry into a new table of `newCapacity` slots.
    ///
    /// Step size: a write may insert one entry, and the new table must not
    /// pass 0.8 load before the old one is empty (growing again mid-way would
    /// have to finish this migration at once). With `headroom` insertions
    /// left below 0.8, moving `2 * oldCapacity / headroom` homes per write
    /// empties the old table after at most half the headroom. That is 5 homes
    /// when growing by half, and about 27 when shrinking to load 1/2 from
    /// below 1/8, where most homes are empty.
    mutating func startMigration(to newCapacity: Int) {
        precondition(newCapacity > count && newCapacity <= (1 << 40), "bad table capacity")
        // Unreachable while every write moves its slice (see above); kept so
        // that a bug costs a stall, not a corrupt table.
        if oldSlots != nil { finishMigration() }
        let fresh = TableMemory.allocate(newCapacity)
        oldSlots = slots
        oldCapacity = capacity
        oldCount = count
        oldTableCharge = tableCharge
        slots = fresh
        capacity = newCapacity
        tableCharge = TableMemory.charge(fresh, slots: newCapacity, usable)
        addToLedger(tableCharge)
        migrationCursor = 0
        if oldCount == 0 {
            releaseOldTable()
            return
        }
        let words = (oldCapacity &+ 63) >> 6
        let bits = Malloc.allocateZeroed(words, 8)
        movedHomes = bits.bindMemory(to: UInt64.self, capacity: words)
        movedHomesCharge = Malloc.charge(bits, usable)
        addToLedger(movedHomesCharge)
        let headroom = Swift.max(1, newCapacity * 4 / 5 - count)
        homesPerStep = Swift.max(4, (2 * oldCapacity + headroom - 1) / headroom)
    }

    /// One write's share of a migration under way (`homes` more on a maintenance tick).
    @inline(__always)
    mutating func migrateStep(homes: Int = 0) {
        if oldSlots == nil { return }
        let end = Swift.min(oldCapacity, migrationCursor &+ Swift.max(homes, homesPerStep))
        migrateHomes(from: migrationCursor, to: end)
        migrationCursor = end
        if migrationCursor >= oldCapacity || oldCount == 0 { releaseOldTable() }
    }

    /// Moves every remaining old home now.
    mutating func finishMigration() {
        if oldSlots == nil { return }
        if migrationCursor < oldCapacity && oldCount > 0 { migrateHomes(from: migrationCursor, to: oldCapacity) }
        releaseOldTable()
    }

    /// Moves the old home of `hash` unless it has moved already.
    @usableFromInline
    mutating func migrateHome(of hash: UInt64) {
        let h = Self.home(hash, capacity: oldCapacity)
        if h < migrationCursor || homeMoved(h) { return }
        migrateHomes(from: h, to: h &+ 1)
        markMoved(from: h, to: h &+ 1)
        if oldCount == 0 { releaseOldTable() }
    }

    /// Moves the old homes of the hashes in `[low, high]` (a scan's range).
    mutating func migrateHashRange(_ low: UInt64, _ high: UInt64) {
        if oldSlots == nil { return }
        let a = Swift.max(migrationCursor, Self.home(low, capacity: oldCapacity))
        let b = Self.home(high, capacity: oldCapacity) &+ 1
        if a >= b { return }
        migrateHomes(from: a, to: b)
        markMoved(from: a, to: b)
        if oldCount == 0 { releaseOldTable() }
    }

    @inline(__always)
    func homeMoved(_ h: Int) -> Bool {
        movedHomes.unsafelyUnwrapped[h >> 6] & (1 << UInt64(h & 63)) != 0
    }

    mutating func markMoved(from a: Int, to b: Int) {
        let bits = movedHomes.unsafelyUnwrapped
        for h in a..<b { bits[h >> 6] |= 1 << UInt64(h & 63) }
    }

    /// Moves every old-table entry whose old home is in `a ..< b` to the new
    /// table. Such entries sit between slot `a` and the first empty slot at
    /// or after `b - 1` (wrapping); `p` walks that span as a logical position
    /// (may pass `oldCapacity`), so a wrapped entry's home compares right.
    mutating func migrateHomes(from a: Int, to b: Int) {
        let old = oldSlots.unsafelyUnwrapped
        let oldCap = oldCapacity
        var p = a
        while oldCount > 0 {
            let i = p < oldCap ? p : p &- oldCap
            let s = old[i]
            if s == 0 {
                if p >= b &- 1 { break }
                p &+= 1
                continue
            }
            let logicalHome = p &- Self.exactDistance(s, at: i, capacity: oldCap)
            if logicalHome >= a && logicalHome < b {
                Self.shiftBack(old, capacity: oldCap, at: i)
                oldCount &-= 1
                adopt(s)
                continue  // the shift may have moved an unexamined entry into slot i
            }
            p &+= 1
        }
    }

    /// Puts an entry moved from the old table into the new one (`count` already includes it).
    @inline(__always)
    mutating func adopt(_ slot: UInt64) {
        let h = Self.entry(slot).hash
        let j = findEmpty(h)
        let d = Swift.min(distance(from: home(h), to: j), Self.saturatedDistance)
        slots[j] = (slot & ~Self.distanceMask) | UInt64(d)
        movedEntries &+= 1
    }

    mutating func releaseOldTable() {
        if let old = oldSlots { TableMemory.free(old, slots: oldCapacity) }
        if let bits = movedHomes { free(bits) }
        addToLedger(-(oldTableCharge &+ movedHomesCharge))
        oldSlots = nil
        movedHomes = nil
        oldCapacity = 0
        oldCount = 0
        oldTableCharge = 0
        movedHomesCharge = 0
        migrationCursor = 0
        homesPerStep = 0
    }

    @inline(__always)
    mutating func growIfNeeded() -> Bool {
        if (count &+ 1) &* 5 > capacity &* 4 {
            startMigration(to: capacity + capacity / 2)
            return true
        }
        return false
    }

    /// Keys that arrive in hash order (a shard stream and a snapshot replay
    /// walk their shard with the scan cursor, and a dump restored through
    /// clients comes in the same order) all have their homes in the first
    /// part of a table sized for the keys so far, where the earlier ones
    /// already sit: grown step by step, the table piles them into one
    /// cluster as long as the shard, which every insert probes and every
    /// entry the growth moves walks and rehashes (60% of a refilling
    /// node's CPU; a sorted load of 1M keys cost 6 times the CPU of the same
    /// keys in any other order). So every 64th key of a run of new keys in
    /// about increasing hash order grows the table at once to what the rest
    /// of hash space needs at the run's density: `count` plus the run's keys
    /// per unit of hash space times the space left above its highest.
    ///
    /// "About": the scan walks home by home, and keys sharing a home in the
    /// sender's table come in any order, so a key a few average gaps below
    /// the run's highest (8 at most, by the power of two at or below the
    /// run's length; any key above the run's start while it is shorter
    /// than 16) continues it. In any other order a run of 64 has odds of
    /// about 1 in 10^29 and never happens. Bounded by 64 times the run (so keys
    /// chosen for low hashes cost at most 64 slots each), and never while a
    /// resize is under way; returns whether the table changed. An estimate
    /// too low costs a growth as usual.
    @inline(__always)
    mutating func noteInsertOrder(_ hash: UInt64) -> Bool {
        if hash >= orderedRunMaxHash {
            orderedRunMaxHash = hash
        } else {
            let span = orderedRunMaxHash &- orderedRunStartHash
            let shift = (Int.bitWidth &- 1 &- orderedRun.leadingZeroBitCount) &- 3
            let slack = shift > 0 ? span >> UInt64(shift) : span
            guard hash > orderedRunStartHash && hash >= orderedRunMaxHash &- slack else {
                orderedRun = 1
                orderedRunStartHash = hash
                orderedRunMaxHash = hash
                return false
            }
        }
        orderedRun &+= 1
        return orderedRun & 63 == 0 && reserveForOrderedRun()
    }

    mutating func reserveForOrderedRun() -> Bool {
        guard oldSlots == nil, orderedRunMaxHash > orderedRunStartHash else { return false }
        let span = Double(orderedRunMaxHash - orderedRunStartHash)
        let left = Double(UInt64.max - orderedRunMaxHash)
        let more = Swift.min(Double(orderedRun) * left / span, Double(orderedRun) * 64)
        let expected = Double(count) + more
        // Grown only when the estimate would pass load 0.8, then to load
        // 2/3: an estimate a fifth above the last one grows it again, not
        // every estimate a little above it (each growth moves what came).
        guard Int(expected * 1.25) + 1 > capacity else { return false }
        startMigration(to: Swift.min(Int(expected * 1.5) + 1, 1 << 40))
        return true
    }

    /// Starts shrinking a very sparse table (load below 1/8) to load 1/2.
    /// Not while a migration is under way: the next removal looks again.
    @inline(__always)
    mutating func shrinkIfSparse() {
        if oldSlots != nil {
            if oldCount > 0 { return }
            releaseOldTable()
        }
        if capacity > Self.minimumCapacity && count &* 8 < capacity {
            let old = capacity
            startMigration(to: Swift.max(Self.minimumCapacity, count * 2))
            sweepCursor = Int((Double(sweepCursor) * Double(capacity) / Double(old)).rounded(.down))
            if sweepCursor >= capacity { sweepCursor = 0 }
        }
    }

    /// Replaces an empty table by a fresh one of `newCapacity` slots.
    mutating func replaceEmptyTable(_ newCapacity: Int) {
        precondition(count == 0 && oldSlots == nil)
        TableMemory.free(slots, slots: capacity)
        slots = TableMemory.allocate(newCapacity)
        capacity = newCapacity
        let newCharge = TableMemory.charge(slots, slots: newCapacity, usable)
        addToLedger(newCharge - tableCharge)
        tableCharge = newCharge
    }

    // MARK: - Entries

    @inline(__always)
    mutating func makeEntry(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, version: EntryVersion, expiryMs: Int64) -> Entry {
        let raw = Malloc.allocate(Entry.blockBytes(keyCount: key.count, valueCount: value.count, far: Entry.isFar(expiryMs)))
        precondition(UInt64(UInt(bitPattern: raw)) & ~Self.pointerMask == 0,
                     "entry block not 16-byte aligned below 2^48")
        let e = Entry(raw)
        e.initialize(versionWord: 0, expiry: 0, keyCount: key.count, valueCount: value.count)
        stamp(e, version)
        if key.count > 0 { memcpy(e.keyBase, key.baseAddress!, key.count) }
        if value.count > 0 { memcpy(e.keyBase + key.count, value.baseAddress!, value.count) }
        e.storeExpiry(expiryMs)
        return e
    }

    /// Removes the entry in slot `index` from the table and its queue, and frees it.
    @usableFromInline
    mutating func removeEntry(at index: Int, _ e: Entry) {
        removeSlot(at: index)
        let c = charge(e)
        if e.inMain {
            addToLedger(main.remove(e, usable))
            mainBytes &-= c
        } else {
            addToLedger(small.remove(e, usable))
            smallBytes &-= c
        }
        addToLedger(-c)
        freeEntry(e)
    }

    @inline(__always) @usableFromInline
    mutating func nextVersion() -> EntryVersion {
        // A trapping add: 2^64 writes are out of reach (see EntryVersion),
        // and a wrap would silently order new writes before old ones.
        seq += 1
        lastVersion = EntryVersion(term: term, seq: seq)
        return lastVersion
    }

    /// Takes in a version assigned elsewhere (the log, a primary), keeping
    /// the invariant that the next local version is newer than it. The last
    /// write never goes back: a snapshot's replay restores entries in table
    /// order and a stream joins records out of order, and a shard stream
    /// starts from it while the lease claims the newest replayed version
    /// (a start below the claim left followers behind it for good).
    @inline(__always) @usableFromInline
    mutating func adopt(_ version: EntryVersion) {
        if version.term > term { term = version.term }
        if version.seq > seq { seq = version.seq }
        if version > lastVersion { lastVersion = version }
    }

    /// A FLUSHALL made elsewhere (replayed from the log, or replicated):
    /// drops every entry at or below the flush's own version, without
    /// drawing a new one (`removeAll` would: term and sequence are each the
    /// highest seen, so their next pair can be a version nobody wrote, newer
    /// than anything the log holds). Entries newer than the flush stay: a
    /// replica can apply a later write before the flush (a read repair, a
    /// stream, a snapshot's entry written while the snapshot walked), and
    /// before 3 December 2026 a replicated flush that found one changed
    /// nothing, so the keys it should have removed stayed on that replica.
    /// Returns whether it changed anything: it was newer than the last
    /// write, or removed an entry.
    @usableFromInline @discardableResult
    mutating func flush(at version: EntryVersion) -> Bool {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        mutations &+= 1
        let newerThanEverything = lastVersion < version
        let entriesBefore = count
        if newerThanEverything {
            // Nothing here is newer (the last write never goes back).
            dropEverything()
        } else {
            dropEntries(atOrBelow: version)
        }
        adopt(version)
        if tombstones != nil { addToLedger(tombstones!.flush(floor: version, usable: usable)) }
        return newerThanEverything || count < entriesBefore
    }

    /// Removes every entry whose version is at or below `version`, leaving
    /// the table without holes. Backward-shift deletion may move a later
    /// entry into the slot just emptied, so that slot is looked at again;
    /// entries it moves from the table's start to its end were looked at
    /// already and are looked at once more, which changes nothing.
    mutating func dropEntries(atOrBelow version: EntryVersion) {
        finishMigration()
        var index = 0
        while index < capacity {
            let slot = slots[index]
            if slot != 0 {
                let e = Self.entry(slot)
                if self.version(of: e) <= version {
                    removeEntry(at: index, e)
                    continue
                }
            }
            index += 1
        }
        shrinkIfSparse()
    }

    // MARK: - Operations

    @usableFromInline
    mutating func get(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> Entry? {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        let (i, found) = find(key, hash)
        if !found { return nil }
        let e = Self.entry(slots[i])
        if e.isExpired(nowMs) {
            rememberExpired(e, hash: hash, nowMs: nowMs)
            removeEntry(at: i, e)
            ledger.pointee.expiredRemovals &+= 1
            shrinkIfSparse()
            return nil
        }
        e.touch()
        return e
    }

    /// `get` and the entry's view in one mutating call: `ShardStore`'s
    /// inlined code calling a non-mutating method on `state.pointee` from
    /// another module copies the whole ShardState to the stack first (a
    /// memcpy per GET, seen with callgrind in aegiskv-store-bench).
    @usableFromInline
    mutating func getRef(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryRef? {
        guard let e = get(key, hash: hash, nowMs: nowMs) else { return nil }
        return ref(e)
    }

    /// What OBJECT and MEMORY USAGE report, without counting an access
    /// (the frequency bump of `get`) and without removing an expired entry.
    @usableFromInline
    mutating func facts(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryFacts? {
        let (i, found) = find(key, hash)
        if !found { return nil }
        let e = Self.entry(slots[i])
        if e.isExpired(nowMs) { return nil }
        // The block as malloc charges it, plus its table slot and its FIFO ring slot.
        return EntryFacts(value: ref(e).value, bytes: charge(e) + 2 * MemoryLayout<UInt64>.size,
                          frequency: Int(e.frequency), inMainQueue: e.inMain)
    }

    @usableFromInline
    mutating func set(_ key: UnsafeRawBufferPointer, hash: UInt64, value: UnsafeRawBufferPointer,
                      expiryMs: Int64, nowMs: Int64) -> EntryVersion {
        set(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs, version: nextVersion())
    }

    /// Stores a write replayed from the log with the version it had; later
    /// writes get newer versions than any replayed one.
    @usableFromInline
    mutating func restore(_ key: UnsafeRawBufferPointer, hash: UInt64, value: UnsafeRawBufferPointer,
                          expiryMs: Int64, nowMs: Int64, version: EntryVersion) {
        adopt(version)
        _ = set(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs, version: version)
    }

    @inline(__always)
    mutating func set(_ key: UnsafeRawBufferPointer, hash: UInt64, value: UnsafeRawBufferPointer,
                      expiryMs: Int64, nowMs: Int64, version: EntryVersion) -> EntryVersion {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        precondition(key.count <= Entry.maxKeyBytes, "key longer than 64 KiB")
        precondition(value.count <= Entry.maxValueBytes, "value longer than 64 MiB")
        mutations &+= 1
        migrateStep()
        var (i, found) = find(key, hash)
        if found {
            let e = Self.entry(slots[i])
            if !e.isExpired(nowMs) {
                let written = overwrite(e, slot: i, value, version: version, expiryMs: expiryMs)
                evictIfNeeded(protecting: written)
                return version
            }
            removeEntry(at: i, e)
            ledger.pointee.expiredRemovals &+= 1
            i = findEmpty(hash)
        }
        if noteInsertOrder(hash) || growIfNeeded() {
            if oldSlots != nil { migrateHome(of: hash) }
            i = findEmpty(hash)
        }
        let e = makeEntry(key, value, version: version, expiryMs: expiryMs)
        place(e, hash: hash, at: i)
        let c = charge(e)
        let fp = GhostQueue.fingerprint(hash)
        if ghost.count > 0 && ghost.contains(fp) {
            ghost.forget(fp)
            e.inMain = true
            addToLedger(main.push(e, usable))
            mainBytes &+= c
        } else {
            addToLedger(small.push(e, usable))
            smallBytes &+= c
        }
        addToLedger(c)
        evictIfNeeded(protecting: e)
        return version
    }

    /// Writes a new value into an existing live entry; returns the entry (its block may move).
    @inline(__always)
    mutating func overwrite(_ e: Entry, slot index: Int, _ value: UnsafeRawBufferPointer,
                            version: EntryVersion, expiryMs: Int64) -> Entry {
        let spillBefore = VersionEpochs.extraCharge(e.versionWord, usable)
        epochs.release(e.versionWord)
        let keyCount = e.keyCount
        let need = Entry.blockBytes(keyCount: keyCount, valueCount: value.count, far: Entry.isFar(expiryMs))
        let have = usable(e.raw)
        var n = e
        var delta = 0
        if need <= have && have <= 2 &* need &+ 64 {
            if value.count > 0 { memmove(e.keyBase + keyCount, value.baseAddress!, value.count) }
        } else {
            let raw = Malloc.allocate(need)
            precondition(UInt64(UInt(bitPattern: raw)) & ~Self.pointerMask == 0,
                         "entry block not 16-byte aligned below 2^48")
            memcpy(raw, e.raw, Entry.headerSize &+ keyCount)
            n = Entry(raw)
            if value.count > 0 { memcpy(n.keyBase + keyCount, value.baseAddress!, value.count) }
            slots[index] = (slots[index] & ~Self.pointerMask) | UInt64(UInt(bitPattern: raw))
            if n.inMain { main.replace(e, with: n) } else { small.replace(e, with: n) }
            free(e.raw)
            delta = Malloc.charge(raw, usable) &- (have &+ Malloc.chunkHeaderBytes)
        }
        n.setValueCount(value.count)
        stamp(n, version)
        n.storeExpiry(expiryMs)
        n.touch()
        delta &+= VersionEpochs.extraCharge(n.versionWord, usable) &- spillBefore
        if delta != 0 {
            if n.inMain { mainBytes &+= delta } else { smallBytes &+= delta }
            addToLedger(delta)
        }
        return n
    }

    /// `version`: the deletion's version when it was made elsewhere (the
    /// log, a primary); nil gives it the shard's next one.
    @usableFromInline
    mutating func delete(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64, version: EntryVersion? = nil) -> Bool {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        migrateStep()
        let (i, found) = find(key, hash)
        if !found { return false }
        let e = Self.entry(slots[i])
        let expired = e.isExpired(nowMs)
        if expired { rememberExpired(e, hash: hash, nowMs: nowMs) }
        removeEntry(at: i, e)
        if expired {
            ledger.pointee.expiredRemovals &+= 1
        } else {
            mutations &+= 1
            // The delete's own version: the last write can be newer (writes applied out of order).
            let deletedAt: EntryVersion
            if let version { adopt(version); deletedAt = version } else { deletedAt = nextVersion() }
            if tombstones != nil { rememberDeleted(key, hash: hash, version: deletedAt, nowMs: nowMs) }
        }
        shrinkIfSparse()
        return !expired
    }

    @usableFromInline
    mutating func setExpiry(_ key: UnsafeRawBufferPointer, hash: UInt64, expiryMs: Int64, nowMs: Int64) -> Bool {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        let (i, found) = find(key, hash)
        if !found { return false }
        let e = Self.entry(slots[i])
        if e.isExpired(nowMs) {
            rememberExpired(e, hash: hash, nowMs: nowMs)
            removeEntry(at: i, e)
            ledger.pointee.expiredRemovals &+= 1
            shrinkIfSparse()
            return false
        }
        if Entry.blockBytes(keyCount: e.keyCount, valueCount: e.valueCount, far: Entry.isFar(expiryMs)) > usable(e.raw) {
            // A far expiry needs 8 bytes more than the block has: the entry
            // is written again, with its own value, into a block that fits.
            let written = overwrite(e, slot: i, e.value, version: nextVersion(), expiryMs: expiryMs)
            mutations &+= 1
            evictIfNeeded(protecting: written)
            return true
        }
        e.storeExpiry(expiryMs)
        let spillBefore = VersionEpochs.extraCharge(e.versionWord, usable)
        epochs.release(e.versionWord)
        stamp(e, nextVersion())
        let delta = VersionEpochs.extraCharge(e.versionWord, usable) &- spillBefore
        if delta != 0 {
            if e.inMain { mainBytes &+= delta } else { smallBytes &+= delta }
            addToLedger(delta)
        }
        mutations &+= 1
        return true
    }

    // MARK: - Eviction (S3-FIFO)

    @inline(__always)
    mutating func evictIfNeeded(protecting e: Entry) {
        if ledger.pointee.usedBytes > ledger.pointee.thresholdBytes { evict(protecting: e) }
    }

    @usableFromInline
    mutating func evict(protecting e: Entry) {
        while ledger.pointee.usedBytes > ledger.pointee.thresholdBytes {
            if !evictOne(protecting: e) { break }
        }
        addToLedger(small.trimIfOversized(usable))
        addToLedger(main.trimIfOversized(usable))
        if ledger.pointee.usedBytes > ledger.pointee.thresholdBytes { evictFromOtherShards() }
    }

    /// This shard has nothing left to evict but the ledger is still over:
    /// take one entry at a time from the ledger's other shards, in rotation.
    /// With large values most shards hold one entry or none, so eviction
    /// confined to the writing shard let the ledger run past its limit (1 MB
    /// values went 7% over max_memory_mb, 50% at 128 MB).
    mutating func evictFromOtherShards() {
        let shards = ledger.pointee.shards
        var failures = 0
        while ledger.pointee.usedBytes > ledger.pointee.thresholdBytes && failures < shards.count {
            let i = ledger.pointee.evictionCursor % shards.count
            ledger.pointee.evictionCursor = i &+ 1
            let other = shards[i]
            if other == selfPointer || !other.pointee.evictOneForLedger() {
                failures &+= 1
            } else {
                failures = 0
            }
        }
    }

    /// Evicts one entry for another shard's write; false when there is none.
    mutating func evictOneForLedger() -> Bool {
        let evicted = evictOne(protecting: nil)
        addToLedger(small.trimIfOversized(usable))
        addToLedger(main.trimIfOversized(usable))
        return evicted
    }

    /// Evicts one entry other than `protected`. Returns false when there is none.
    ///
    /// S3-FIFO: new keys enter the small queue (about 10% of the shard's entry
    /// bytes) unless the ghost queue remembers them, in which case they enter
    /// main. When the small queue is over its share, its oldest entry either
    /// moves to main (it was hit while in small) or is evicted and its
    /// fingerprint goes to the ghost queue. Otherwise main's oldest entry is
    /// reinserted with its 2-bit frequency decremented, or evicted at 0.
    @usableFromInline
    mutating func evictOne(protecting protected: Entry?) -> Bool {
        let protectedInSmall = protected.map { !$0.inMain } ?? false
        let protectedInMain = protected?.inMain ?? false
        while true {
            let smallCandidates = small.live - (protectedInSmall ? 1 : 0)
            let mainCandidates = main.live - (protectedInMain ? 1 : 0)
            if smallCandidates + mainCandidates <= 0 { return false }
            let fromSmall = smallCandidates > 0
                && (mainCandidates == 0 || smallBytes &* 100 >= (smallBytes &+ mainBytes) &* Self.smallPercent)
            if fromSmall {
                let e = small.popOldest()!
                if e == protected {
                    addToLedger(small.push(e, usable))
                    continue
                }
                if e.frequency >= Self.promoteThreshold {
                    let c = charge(e)
                    e.inMain = true
                    e.frequency = 0
                    addToLedger(main.push(e, usable))
                    smallBytes &-= c
                    mainBytes &+= c
                    continue
                }
                let h = e.hash
                addToLedger(ghost.insert(GhostQueue.fingerprint(h), entries: count, usable))
                evictPopped(e, hash: h)
                return true
            } else {
                let e = main.popOldest()!
                if e == protected || e.frequency > 0 {
                    if e != protected { e.frequency = e.frequency - 1 }
                    addToLedger(main.push(e, usable))
                    continue
                }
                evictPopped(e, hash: e.hash)
                return true
            }
        }
    }

    /// Removes from the table and frees an entry already popped from its ring.
    mutating func evictPopped(_ e: Entry, hash: UInt64) {
        if oldSlots != nil { migrateHome(of: hash) }
        var i = home(hash)
        let target = UInt64(UInt(bitPattern: e.raw))
        while slots[i] & Self.pointerMask != target {
            assert(slots[i] != 0, "evicted entry not in the table")
            i &+= 1
            if i == capacity { i = 0 }
        }
        removeSlot(at: i)
        let c = charge(e)
        if e.inMain { mainBytes &-= c } else { smallBytes &-= c }
        addToLedger(-c)
        ledger.pointee.evictions &+= 1
        freeEntry(e)
    }

    // MARK: - Expiry, flush, scan

    @usableFromInline
    mutating func expireSweep(nowMs: Int64, maxSlots: Int) -> Int {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        ledger.pointee.collectLazyFree()
        // Reads alone do not move a migration along; ticks do, at the sweep's pace.
        migrateStep(homes: maxSlots)
        // Ticks are also when tombstones past their age bound go.
        if tombstones != nil { addToLedger(tombstones!.forgetOld(nowMs: nowMs, usable: usable)) }
        if count == 0 || maxSlots <= 0 { return 0 }
        var i = sweepCursor < capacity ? sweepCursor : 0
        var examined = 0
        var advanced = 0
        var removed = 0
        while examined < maxSlots && advanced < capacity && count > 0 {
            examined += 1
            let s = slots[i]
            if s != 0 {
                let e = Self.entry(s)
                if e.isExpired(nowMs) {
                    if tombstones != nil { rememberExpired(e, hash: e.hash, nowMs: nowMs) }
                    removeEntry(at: i, e)
                    removed += 1
                    continue  // the shift may have moved an unexamined entry into slot i
                }
            }
            advanced += 1
            i += 1
            if i == capacity { i = 0 }
        }
        sweepCursor = i
        ledger.pointee.expiredRemovals &+= removed
        if removed > 0 { shrinkIfSparse() }
        return removed
    }

    @usableFromInline
    mutating func removeAll() {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        mutations &+= 1
        _ = nextVersion()
        if tombstones != nil { addToLedger(tombstones!.reset(floor: lastVersion)) }
        dropEverything()
    }

    /// Frees every entry and shrinks the table, leaving versions alone.
    mutating func dropEverything() {
        for i in 0..<capacity where slots[i] != 0 {
            freeEntry(Self.entry(slots[i]))
            slots[i] = 0
        }
        if let old = oldSlots {
            for i in 0..<oldCapacity where old[i] != 0 { freeEntry(Self.entry(old[i])) }
            releaseOldTable()
        }
        addToLedger(epochs.destroy())
        addToLedger(-(smallBytes + mainBytes))
        smallBytes = 0
        mainBytes = 0
        count = 0
        addToLedger(small.reset())
        addToLedger(main.reset())
        addToLedger(ghost.reset())
        if capacity != Self.minimumCapacity { replaceEmptyTable(Self.minimumCapacity) }
        sweepCursor = 0
    }

    /// Empties the shard in O(1): its tables (with every entry block they
    /// point to), FIFO rings and ghost go to `batch`, to be freed elsewhere.
    /// Their charges stay on the ledger until the batch reports them freed.
    mutating func removeAll(deferringTo batch: LazyFreeBatch) {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        mutations &+= 1
        // A FLUSHALL ASYNC is a write like FLUSHALL: logged and replicated with a version of its own.
        _ = nextVersion()
        if tombstones != nil { addToLedger(tombstones!.reset(floor: lastVersion)) }
        detachEverything(to: batch)
    }

    /// A copy this node no longer replicates leaves, history and all, as
    /// at the start of a stream (`replaceForStream`): no absent floor and
    /// no last write stay behind. A floor would make the shard refuse, as
    /// older than a flush, the very records that bring it back should the
    /// node replicate it again (the tail its holder sends from the shard's
    /// first write), while the node acknowledged them as applied.
    mutating func dropCopy(deferringTo batch: LazyFreeBatch) {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        mutations &+= 1
        if tombstones != nil { addToLedger(tombstones!.replace(floor: .zero)) }
        lastVersion = .zero
        detachEverything(to: batch)
    }

    /// The tables, entry blocks, FIFO rings and ghost go to `batch`, and
    /// the shard starts again with an empty table.
    private mutating func detachEverything(to batch: LazyFreeBatch) {
        batch.add(table: slots, capacity: capacity, charge: tableCharge, entries: count, entryBytes: smallBytes + mainBytes)
        if let old = oldSlots {
            batch.add(table: old, capacity: oldCapacity, charge: oldTableCharge, entries: 0, entryBytes: 0)
            batch.add(array: UnsafeMutableRawPointer(movedHomes), charge: movedHomesCharge)
            // Handed over, not freed: forget them without touching the ledger.
            oldSlots = nil
            movedHomes = nil
            oldTableCharge = 0
            movedHomesCharge = 0
            releaseOldTable()
        }
        // The batch frees spilled versions' blocks with their entries, and the epochs' table.
        batch.add(array: UnsafeMutableRawPointer(epochs.slots), charge: epochs.chargedBytes)
        epochs = VersionEpochs(epochsMax: epochs.epochsMax)
        small.handOver(to: batch)
        main.handOver(to: batch)
        batch.add(array: UnsafeMutableRawPointer(ghost.slots), charge: ghost.chargedBytes)
        ghost = GhostQueue()
        smallBytes = 0
        mainBytes = 0
        count = 0
        let raw = Malloc.allocateZeroed(Self.minimumCapacity, 8)
        slots = raw.bindMemory(to: UInt64.self, capacity: Self.minimumCapacity)
        capacity = Self.minimumCapacity
        tableCharge = Malloc.charge(raw, usable)
        addToLedger(tableCharge)
        sweepCursor = 0
    }

    /// Cursor (top 40 bits of hash space) of the first hash whose home is `h`.
    @inline(__always)
    func cursor(forHome h: Int) -> UInt64 {
        let hh = UInt64(h)
        return UInt64(capacity).dividingFullWidth((high: hh >> 24, low: hh << 40)).quotient
    }

    @usableFromInline
    mutating func scan(cursor: UInt64, count wanted: Int, nowMs: Int64, _ visit: (EntryRef) -> Void) -> UInt64 {
        if cursor >= (1 << 40) || count == 0 { return 0 }
        let cap = capacity
        let h0 = home(cursor << 24)
        let target = Swift.max(1, wanted)
        var step = cap
        if target < count {
            step = Swift.max(1, Int((Double(target) * Double(cap) / Double(count)).rounded(.up)))
        }
        var h1 = Swift.min(cap, h0 + step)
        var next: UInt64 = 0
        while h1 < cap {
            next = self.cursor(forHome: h1)
            if next > cursor { break }
            h1 += 1
            next = 0
        }
        // Hashes with a home below h1 are below (next + 1) << 24, since
        // next = floor(h1 * 2^40 / cap): move their old homes in first.
        if oldSlots != nil {
            migrateHashRange(cursor << 24, next == 0 || next + 1 >= 1 << 40 ? UInt64.max : ((next + 1) << 24) - 1)
        }
        visiting = true
        defer { visiting = false }
        // Walk from slot h0 past h1 to the end of the cluster there; "p" is a
        // logical position (may exceed cap after wrapping).
        var p = h0
        while true {
            let i = p < cap ? p : p - cap
            let s = slots[i]
            if s == 0 {
                if p >= h1 { break }
                p += 1
                continue
            }
            let logicalHome = p - exactDistance(s, at: i)
            if logicalHome >= h0 && logicalHome < h1 {
                let e = Self.entry(s)
                // Home h0 may straddle the cursor: its entries below the cursor were visited already.
                if !e.isExpired(nowMs) && (logicalHome != h0 || e.hash >> 24 >= cursor) { visit(ref(e)) }
            }
            p += 1
        }
        return next
    }

    // MARK: - Invariants

    /// Every violated invariant, described (empty when all hold). O(capacity); for tests.
    func checkInvariants() -> [String] {
        var problems: [String] = []
        if capacity < Self.minimumCapacity { problems.append("capacity \(capacity) below minimum") }
        if count >= capacity { problems.append("table has no empty slot") }
        if count * 5 > capacity * 4 { problems.append("load above 0.8: \(count)/\(capacity)") }
        if tableCharge != TableMemory.charge(slots, slots: capacity, usable) {
            problems.append("table charge \(tableCharge) is not the real one")
        }
        var tally = Tally()
        checkTable(slots, capacity: capacity, old: false, &tally, &problems)
        if let old = oldSlots {
            if !(oldCount > 0 && oldCount < oldCapacity) { problems.append("old table count \(oldCount) of \(oldCapacity)") }
            if oldTableCharge != TableMemory.charge(old, slots: oldCapacity, usable) {
                problems.append("old table charge \(oldTableCharge) is not the real one")
            }
            if movedHomesCharge != Malloc.charge(UnsafeMutableRawPointer(movedHomes!), usable) {
                problems.append("moved-homes bitmap charge \(movedHomesCharge) is not the real one")
            }
            let before = tally.occupied
            checkTable(old, capacity: oldCapacity, old: true, &tally, &problems)
            if tally.occupied - before != oldCount { problems.append("oldCount \(oldCount) but \(tally.occupied - before) old slots") }
        } else if oldCount != 0 || oldTableCharge != 0 || movedHomes != nil || movedHomesCharge != 0 {
            problems.append("migration state without an old table")
        }
        if tally.occupied != count { problems.append("count \(count) but \(tally.occupied) occupied slots") }
        if tally.inSmall != small.live { problems.append("small ring live \(small.live) but \(tally.inSmall) entries") }
        if tally.inMain != main.live { problems.append("main ring live \(main.live) but \(tally.inMain) entries") }
        if tally.smallBytes != smallBytes { problems.append("smallBytes \(smallBytes) but entries charge \(tally.smallBytes)") }
        if tally.mainBytes != mainBytes { problems.append("mainBytes \(mainBytes) but entries charge \(tally.mainBytes)") }
        epochs.checkInvariants(refs: tally.epochRefs, usable, &problems)
        small.checkInvariants(main: false, usable, &problems)
        main.checkInvariants(main: true, usable, &problems)
        ghost.checkInvariants(usable, &problems)
        if let tombstones { problems += tombstones.problems(usable: usable) }
        if ledger.pointee.usedBytes < chargedBytes {
            problems.append("ledger \(ledger.pointee.usedBytes) below this shard's charge \(chargedBytes)")
        }
        return problems
    }

    // MARK: - Tombstones

    /// Remembers a deleted key with its delete's version (replicated shards only).
    @inline(__always)
    mutating func rememberDeleted(_ key: UnsafeRawBufferPointer, hash: UInt64, version: EntryVersion, nowMs: Int64) {
        addToLedger(tombstones!.record(key, hash: hash, version: version, nowMs: nowMs, usable: usable))
    }

    /// An expired entry removed from a replicated shard leaves its own
    /// version behind, so a replicated write older than it stays refused.
    @inline(__always)
    mutating func rememberExpired(_ e: Entry, hash: UInt64, nowMs: Int64) {
        if tombstones != nil { rememberDeleted(e.key, hash: hash, version: version(of: e), nowMs: nowMs) }
    }

    struct Tally {
        var occupied = 0
        var inSmall = 0
        var inMain = 0
        var smallBytes = 0
        var mainBytes = 0
        var keysSeen = Set<[UInt8]>()
        /// Entries holding each epoch index.
        var epochRefs: [Int: Int] = [:]
    }

    /// Invariants 2, 3 and 1a for one table, and the per-entry ones.
    func checkTable(_ table: UnsafeMutablePointer<UInt64>, capacity cap: Int, old: Bool,
                    _ tally: inout Tally, _ problems: inout [String]) {
        let name = old ? "old slot" : "slot"
        let checkDuplicates = self.capacity + oldCapacity <= 1 << 17
        for i in 0..<cap {
            let s = table[i]
            if s == 0 { continue }
            tally.occupied += 1
            let e = Self.entry(s)
            if UInt64(UInt(bitPattern: e.raw)) & 0xF != 0 { problems.append("\(name) \(i): misaligned pointer") }
            let h = e.hash
            if s & Self.tagMask != Self.tag(h) { problems.append("\(name) \(i): tag does not match the key's hash") }
            let hm = Self.home(h, capacity: cap)
            let d = Self.distance(from: hm, to: i, capacity: cap)
            if Int(s & Self.distanceMask) != Swift.min(d, Self.saturatedDistance) {
                problems.append("\(name) \(i): distance field \(s & Self.distanceMask), real \(d)")
            }
            var j = hm
            while j != i {
                if table[j] == 0 { problems.append("\(name) \(i): unreachable from home \(hm)"); break }
                j += 1
                if j == cap { j = 0 }
            }
            if oldSlots != nil {
                let oh = Self.home(h, capacity: oldCapacity)
                let moved = oh < migrationCursor || homeMoved(oh)
                if moved == old { problems.append("\(name) \(i): in the wrong table for old home \(oh)") }
            }
            if e.keyCount > Entry.maxKeyBytes || e.valueCount > Entry.maxValueBytes {
                problems.append("\(name) \(i): lengths out of range")
            }
            if usable(e.raw) < Entry.blockBytes(keyCount: e.keyCount, valueCount: e.valueCount, far: e.hasFarExpiry) {
                problems.append("\(name) \(i): block smaller than its contents")
            }
            if e.frequency > 3 { problems.append("\(name) \(i): frequency out of range") }
            if !VersionEpochs.isSpilled(e.versionWord) {
                tally.epochRefs[Int(e.versionWord >> VersionEpochs.indexShift), default: 0] += 1
            }
            let ring = e.inMain ? main : small
            if !ring.holds(e) {
                problems.append("\(name) \(i): entry not at its queue position")
            }
            if e.inMain {
                tally.inMain += 1
                tally.mainBytes += charge(e)
            } else {
                tally.inSmall += 1
                tally.smallBytes += charge(e)
            }
            if checkDuplicates && !tally.keysSeen.insert(Array(e.key)).inserted {
                problems.append("\(name) \(i): duplicate key")
            }
        }
    }
}
