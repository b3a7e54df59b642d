import Glibc

/// The versions of a shard's entries, stored in 8 bytes per entry instead
/// of 12.
///
/// A version is a 32-bit term and a 64-bit seq (see `EntryVersion`). The
/// term and the top 16 bits of seq change rarely (a leadership change; 2^48
/// writes to one shard): call that pair the version's *epoch*. A shard
/// holds few epochs at once, so each one is written once in this table and
/// an entry keeps a 16-bit index into it next to the low 48 bits of its seq.
/// That took the entry header from 28 bytes back to 24, which for 16-byte
/// keys and 32-byte values is one glibc chunk class less (96 -> 80 bytes).
///
/// An entry's *version word* (the first 8 bytes of its header) is either
///
///     bits 48..63  epoch index (< `spilledIndex`)
///     bits  0..47  seq, low 48 bits
///
/// or, when the table has no room for the version's epoch (more than
/// `epochsMax` epochs live in one shard, which takes that many leadership
/// changes with entries of each surviving),
///
///     bits 48..63  `spilledIndex`
///     bits  0..47  address of a malloc'd block holding the whole version
///                  (seq: UInt64 at offset 0, term: UInt32 at offset 8)
///
/// so no version is ever truncated or refused; a spilled entry costs one
/// more small block, charged to the entry (`extraCharge`).
///
/// Slots are reference-counted by the entries that point at them; a slot
/// whose count is 0 keeps its epoch (the next write of that epoch revives
/// it) until a new epoch needs the room. Finding an epoch that is not the
/// last one used scans the slots in use: at most `epochsMax`, which bounds
/// that rare path (a write whose epoch differs from the previous write's).
/// The table doubles from 4 slots up to `epochsMax` (16 bytes a slot: 64 KiB
/// at the default 4096) and is charged to the ledger; it shrinks only when
/// the shard is emptied (FLUSHALL), since its indices are in the entries.
///
/// Not thread-safe; owned by one `ShardState` (see its confinement rule).
///
/// Invariants (checked by `ShardState.checkInvariants`):
/// - `slots` is nil iff `capacity == 0`; `used <= capacity <= epochsMax`;
/// - `slots[i].refs` equals the number of the shard's entries whose version
///   word has index `i`, for every `i < used`; no entry has an index in
///   `used ..< spilledIndex`;
/// - no two slots below `used` hold the same epoch;
/// - `cachedIndex < used` and `slots[cachedIndex].epoch == cachedEpoch`, or
///   `cachedEpoch == noEpoch`;
/// - `chargedBytes` is the ledger charge of `slots`, 0 when nil.
@usableFromInline
struct VersionEpochs {
    @usableFromInline
    struct Slot {
        /// `term << 16 | seq >> 48`: ordered as the versions it covers.
        @usableFromInline var epoch: UInt64
        @usableFromInline var refs: Int
    }

    @usableFromInline static let indexShift: UInt64 = 48
    @usableFromInline static let lowMask: UInt64 = (1 << 48) - 1
    @usableFromInline static let spilledIndex: UInt64 = 0xFFFF
    /// Default bound of epochs tabled per shard; beyond it versions spill.
    static let defaultEpochsMax = 4096
    /// Above every real epoch (those fit in 48 bits).
    @usableFromInline static let noEpoch = UInt64.max
    static let initialCapacity = 4
    /// Bytes of a spilled version's block.
    static let spillBytes = 16

    @usableFromInline var slots: UnsafeMutablePointer<Slot>? = nil
    var capacity = 0
    @usableFromInline var used = 0
    let epochsMax: Int
    @usableFromInline var cachedEpoch = noEpoch
    @usableFromInline var cachedIndex = 0
    /// Ledger charge of `slots`.
    var chargedBytes = 0
    /// Spilled versions allocated so far. For tests.
    var spills = 0

    init(epochsMax: Int = defaultEpochsMax) {
        precondition(epochsMax >= 1 && UInt64(epochsMax) <= Self.spilledIndex, "epoch table bound out of range")
        self.epochsMax = epochsMax
    }

    @inline(__always) @usableFromInline
    static func epoch(of v: EntryVersion) -> UInt64 { UInt64(v.term) << 16 | v.seq >> 48 }

    @inline(__always) @usableFromInline
    static func isSpilled(_ word: UInt64) -> Bool { word >> indexShift == spilledIndex }

    /// The block of a spilled version word, nil for a tabled one.
    @inline(__always) @usableFromInline
    static func spillBlock(_ word: UInt64) -> UnsafeMutableRawPointer? {
        isSpilled(word) ? UnsafeMutableRawPointer(bitPattern: UInt(truncatingIfNeeded: word & lowMask)) : nil
    }

    /// The version a word stands for.
    @inline(__always) @usableFromInline
    func version(_ word: UInt64) -> EntryVersion {
        let index = word >> Self.indexShift
        if index == Self.spilledIndex {
            let block = Self.spillBlock(word).unsafelyUnwrapped
            return EntryVersion(term: block.load(fromByteOffset: 8, as: UInt32.self), seq: block.load(as: UInt64.self))
        }
        assert(Int(index) < used, "version word points past the epoch table")
        let epoch = slots.unsafelyUnwrapped[Int(index)].epoch
        return EntryVersion(term: UInt32(truncatingIfNeeded: epoch >> 16), seq: (epoch & 0xFFFF) << 48 | word & Self.lowMask)
    }

    /// A version word for `v`, counted as held by one more entry. `charge`
    /// receives the change in the table's ledger charge.
    @inline(__always) @usableFromInline
    mutating func acquire(_ v: EntryVersion, charge: inout Int) -> UInt64 {
        let epoch = Self.epoch(of: v)
        if epoch == cachedEpoch {
            slots.unsafelyUnwrapped[cachedIndex].refs &+= 1
            return UInt64(truncatingIfNeeded: cachedIndex) << Self.indexShift | v.seq & Self.lowMask
        }
        return acquireUncached(v, epoch, charge: &charge)
    }

    /// One entry no longer holds `word` (its spilled block, if any, is freed).
    @inline(__always) @usableFromInline
    mutating func release(_ word: UInt64) {
        let index = word >> Self.indexShift
        if index == Self.spilledIndex {
            free(Self.spillBlock(word))
            return
        }
        assert(Int(index) < used && slots.unsafelyUnwrapped[Int(index)].refs > 0, "epoch released more often than acquired")
        slots.unsafelyUnwrapped[Int(index)].refs &-= 1
    }

    /// Charge of what a word holds outside its entry block (a spilled version's block).
    @inline(__always) @usableFromInline
    static func extraCharge(_ word: UInt64, _ usable: Malloc.UsableSizeFunction) -> Int {
        guard let block = spillBlock(word) else { return 0 }
        return Malloc.charge(block, usable)
    }

    @usableFromInline
    mutating func acquireUncached(_ v: EntryVersion, _ epoch: UInt64, charge: inout Int) -> UInt64 {
        var reusable = -1
        for i in 0..<used {
            let slot = slots.unsafelyUnwrapped[i]
            if slot.epoch == epoch { return hold(i, v, epoch) }
            if reusable < 0 && slot.refs == 0 { reusable = i }
        }
        if reusable >= 0 {
            slots.unsafelyUnwrapped[reusable].epoch = epoch
            return hold(reusable, v, epoch)
        }
        if used == capacity && capacity < epochsMax { charge &+= grow() }
        if used < capacity {
            slots.unsafelyUnwrapped[used] = Slot(epoch: epoch, refs: 0)
            used &+= 1
            return hold(used &- 1, v, epoch)
        }
        return spill(v)
    }

    @inline(__always)
    mutating func hold(_ index: Int, _ v: EntryVersion, _ epoch: UInt64) -> UInt64 {
        slots.unsafelyUnwrapped[index].refs &+= 1
        cachedEpoch = epoch
        cachedIndex = index
        return UInt64(truncatingIfNeeded: index) << Self.indexShift | v.seq & Self.lowMask
    }

    mutating func spill(_ v: EntryVersion) -> UInt64 {
        let block = Malloc.allocate(Self.spillBytes)
        precondition(UInt64(UInt(bitPattern: block)) & ~Self.lowMask == 0, "version block above 2^48")
        block.storeBytes(of: v.seq, as: UInt64.self)
        block.storeBytes(of: v.term, toByteOffset: 8, as: UInt32.self)
        spills &+= 1
        return Self.spilledIndex << Self.indexShift | UInt64(UInt(bitPattern: block))
    }

    /// Doubles the table (up to `epochsMax`); returns the change in charge.
    mutating func grow() -> Int {
        let newCapacity = Swift.min(epochsMax, Swift.max(Self.initialCapacity, capacity &* 2))
        let raw = Malloc.allocate(newCapacity * MemoryLayout<Slot>.stride)
        let fresh = raw.bindMemory(to: Slot.self, capacity: newCapacity)
        if let old = slots {
            fresh.update(from: old, count: used)
            free(old)
        }
        slots = fresh
        capacity = newCapacity
        let before = chargedBytes
        chargedBytes = Malloc.charge(raw, Malloc.usableSize)
        return chargedBytes &- before
    }

    /// Frees the table; returns the change in charge (negative).
    mutating func destroy() -> Int {
        if let slots { free(slots) }
        let delta = -chargedBytes
        self = VersionEpochs(epochsMax: epochsMax)
        return delta
    }

    /// Checks the table against `refs`, the number of entries found holding each index.
    func checkInvariants(refs: [Int: Int], _ usable: Malloc.UsableSizeFunction, _ problems: inout [String]) {
        if (slots == nil) != (capacity == 0) || used > capacity || capacity > epochsMax {
            problems.append("epochs: used \(used), capacity \(capacity), bound \(epochsMax)")
            return
        }
        if let slots, chargedBytes != Malloc.charge(UnsafeMutableRawPointer(slots), usable) {
            problems.append("epochs: charged \(chargedBytes) is not the real one")
        } else if slots == nil && chargedBytes != 0 {
            problems.append("epochs: charged \(chargedBytes) without a table")
        }
        for (index, n) in refs where index >= used {
            problems.append("epochs: \(n) entries hold index \(index), past the \(used) in use")
        }
        var seen = Set<UInt64>()
        for i in 0..<used {
            let slot = slots.unsafelyUnwrapped[i]
            if slot.refs != refs[i, default: 0] {
                problems.append("epochs: slot \(i) counts \(slot.refs) entries, \(refs[i, default: 0]) hold it")
            }
            if !seen.insert(slot.epoch).inserted { problems.append("epochs: epoch \(slot.epoch) in two slots") }
        }
        if cachedEpoch != Self.noEpoch && !(cachedIndex < used && slots.unsafelyUnwrapped[cachedIndex].epoch == cachedEpoch) {
            problems.append("epochs: cached epoch \(cachedEpoch) is not in slot \(cachedIndex)")
        }
    }
}
