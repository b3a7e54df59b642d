import Glibc

/// The S3-FIFO ghost: fingerprints (hash bits 32..63) of keys recently
/// evicted from the small queue. A new key whose fingerprint is remembered
/// enters the main queue directly.
///
/// Approximate FIFO in a direct-mapped table: a fingerprint lives in the one
/// slot its bits select, and a newer eviction landing in the same slot
/// replaces it. With as many slots as the shard has entries, a fingerprint
/// recorded k evictions ago is still remembered with probability about
/// e^(-k/slots), i.e. the ghost remembers roughly the last `slots` evictions,
/// like the paper's ghost FIFO sized to the cache. It costs 4 bytes per slot
/// and one memory access per lookup. Measured against an exact FIFO (ring of
/// fingerprints + hash multiset, about 11 bytes per remembered key) with
/// `aegiskv-store-bench hit-ratio`, it gave equal or better hit ratios at
/// 1%, 10% and 30% cache sizes because the saved bytes hold more entries.
/// False positives (a different key with the same fingerprint) only change
/// which queue a key starts in, never correctness.
///
/// Not thread-safe; owned by one `ShardState` (see its confinement rule).
///
/// Invariants (checked by `checkInvariants`):
/// - `slots` is nil iff `capacity == 0`, and then `occupied == 0` and `chargedBytes == 0`;
/// - a nonzero slot `i` holds a fingerprint whose `index` is `i` (0 marks an empty slot;
///   fingerprints are never 0);
/// - `occupied` is the number of nonzero slots; `chargedBytes` is the ledger charge of `slots`.
@usableFromInline
struct GhostQueue {
    var slots: UnsafeMutablePointer<UInt32>? = nil
    var capacity = 0
    var occupied = 0
    @usableFromInline var chargedBytes = 0

    /// Slots per entry of the shard.
    static let slotsPerEntry = 1
    static let minimumCapacity = 16

    init() {}

    @inline(__always) @usableFromInline
    static func fingerprint(_ hash: UInt64) -> UInt32 {
        let fp = UInt32(truncatingIfNeeded: hash >> 32)
        return fp == 0 ? 1 : fp
    }

    @inline(__always)
    func index(_ fp: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(fp) &* UInt64(truncatingIfNeeded: capacity)) >> 32)
    }

    /// Remembered fingerprints.
    var count: Int { occupied }

    /// True when `fp` was recently evicted.
    @inline(__always) @usableFromInline
    func contains(_ fp: UInt32) -> Bool {
        guard let slots else { return false }
        return slots[index(fp)] == fp
    }

    /// Forgets `fp` (after a ghost hit the key is back in the cache).
    @inline(__always) @usableFromInline
    mutating func forget(_ fp: UInt32) {
        guard let slots else { return }
        let i = index(fp)
        if slots[i] == fp {
            slots[i] = 0
            occupied -= 1
        }
    }

    /// Remembers an eviction. `entries` is the shard's entry count, which sizes
    /// the table. Returns the change in charged bytes.
    @usableFromInline
    mutating func insert(_ fp: UInt32, entries: Int, _ usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        let target = Swift.max(Self.minimumCapacity, entries * Self.slotsPerEntry)
        if capacity < target / 2 || capacity > target * 2 { resize(target, usable) }
        let slots = self.slots.unsafelyUnwrapped
        let i = index(fp)
        if slots[i] == 0 { occupied += 1 }
        slots[i] = fp
        return chargedBytes - before
    }

    /// Rebuilds at `newCapacity` slots, keeping what fits (colliding fingerprints are dropped).
    mutating func resize(_ newCapacity: Int, _ usable: Malloc.UsableSizeFunction) {
        precondition(newCapacity > 0 && newCapacity <= 1 << 32)
        let raw = Malloc.allocateZeroed(newCapacity, 4)
        let fresh = raw.bindMemory(to: UInt32.self, capacity: newCapacity)
        let old = slots
        let oldCapacity = capacity
        slots = fresh
        capacity = newCapacity
        occupied = 0
        if let old {
            for j in 0..<oldCapacity where old[j] != 0 {
                let i = index(old[j])
                if fresh[i] == 0 { occupied += 1 }
                fresh[i] = old[j]
            }
            free(old)
        }
        chargedBytes = Malloc.charge(raw, usable)
    }

    /// Forgets everything and releases the table. Returns the change in charged bytes (negative).
    mutating func reset() -> Int {
        if let slots { free(slots) }
        let delta = -chargedBytes
        self = GhostQueue()
        return delta
    }

    func checkInvariants(_ usable: Malloc.UsableSizeFunction, _ problems: inout [String]) {
        guard let slots else {
            if capacity != 0 || occupied != 0 || chargedBytes != 0 { problems.append("ghost: state without a table") }
            return
        }
        if chargedBytes != Malloc.charge(UnsafeMutableRawPointer(slots), usable) {
            problems.append("ghost: charged \(chargedBytes) is not the real one")
        }
        var n = 0
        for i in 0..<capacity where slots[i] != 0 {
            n += 1
            if index(slots[i]) != i { problems.append("ghost: fingerprint in slot \(i) belongs elsewhere") }
        }
        if n != occupied { problems.append("ghost: occupied \(occupied) but \(n) fingerprints") }
    }
}
