import Glibc

/// The S3-FIFO ghost queue: fingerprints (32 bits of the key hash) of keys
/// recently evicted from the small queue, oldest first, with a hash multiset
/// for O(1) membership. A new key whose fingerprint is here goes straight to
/// the main queue. False positives (two keys sharing a fingerprint) only
/// affect which queue a key starts in, never correctness.
///
/// Not thread-safe; owned by one `ShardState` (see its confinement rule).
///
/// Invariants (checked by `checkInvariants`):
/// - fingerprints are never 0 (0 marks an empty set slot);
/// - `ringCount <= ringCapacity`; the `ringCount` slots from `ringHead` are the FIFO;
/// - the set is a linear-probing multiset (home = top bits of fp * capacity),
///   without tombstones: every element is reachable from its home without
///   crossing an empty slot; `setCount < setCapacity`;
/// - every set element also occurs in the ring (the set may hold fewer
///   copies than the ring: a ghost hit removes the set copy only);
/// - `chargedBytes` is the ledger charge of both arrays.
@usableFromInline
struct GhostQueue {
    var ring: UnsafeMutablePointer<UInt32>? = nil
    var ringCapacity = 0
    var ringHead = 0
    var ringCount = 0
    var set: UnsafeMutablePointer<UInt32>? = nil
    var setCapacity = 0
    var setCount = 0
    @usableFromInline var chargedBytes = 0
    var ringCharge = 0
    var setCharge = 0

    init() {}

    @inline(__always) @usableFromInline
    static func fingerprint(_ hash: UInt64) -> UInt32 {
        let fp = UInt32(truncatingIfNeeded: hash >> 32)
        return fp == 0 ? 1 : fp
    }

    @inline(__always)
    func home(_ fp: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(fp) &* UInt64(setCapacity)) >> 32)
    }

    /// True when `fp` was recently evicted.
    @inline(__always) @usableFromInline
    func contains(_ fp: UInt32) -> Bool {
        guard let set else { return false }
        var i = home(fp)
        while true {
            let v = set[i]
            if v == 0 { return false }
            if v == fp { return true }
            i += 1
            if i == setCapacity { i = 0 }
        }
    }

    /// Removes one copy of `fp` from the membership set (ghost hit).
    @usableFromInline
    mutating func forget(_ fp: UInt32) {
        guard let set else { return }
        var i = home(fp)
        while true {
            let v = set[i]
            if v == 0 { return }
            if v == fp { break }
            i += 1
            if i == setCapacity { i = 0 }
        }
        // Backward-shift deletion.
        var gap = i
        var j = i + 1
        if j == setCapacity { j = 0 }
        while true {
            let v = set[j]
            if v == 0 { break }
            let h = home(v)
            let distJ = j >= h ? j - h : j + setCapacity - h
            let distGap = j >= gap ? j - gap : j + setCapacity - gap
            if distJ >= distGap {
                set[gap] = v
                gap = j
            }
            j += 1
            if j == setCapacity { j = 0 }
        }
        set[gap] = 0
        setCount -= 1
    }

    /// Records an eviction; keeps at most `limit` fingerprints (oldest dropped).
    /// Returns the change in charged bytes.
    @usableFromInline
    mutating func insert(_ fp: UInt32, limit: Int, _ usable: Malloc.UsableSizeFunction) -> Int {
        let before = chargedBytes
        let limit = Swift.max(limit, 1)
        while ringCount >= limit { dropOldest() }
        if ringCount == ringCapacity {
            resizeRing(Swift.max(16, Swift.min(ringCapacity * 2, limit + limit / 4)), usable)
        } else if ringCapacity > 64 && ringCount * 4 < ringCapacity && limit * 2 < ringCapacity {
            resizeRing(Swift.max(16, ringCount * 2), usable)
        }
        var idx = ringHead + ringCount
        if idx >= ringCapacity { idx -= ringCapacity }
        ring![idx] = fp
        ringCount += 1
        if (setCount + 1) * 4 > setCapacity * 3 {
            resizeSet(Swift.max(16, setCapacity * 2), usable)
        } else if setCapacity > 64 && setCount * 8 < setCapacity {
            resizeSet(Swift.max(16, setCount * 3), usable)
        }
        insertIntoSet(fp)
        return chargedBytes - before
    }

    mutating func dropOldest() {
        guard ringCount > 0, let ring else { return }
        let fp = ring[ringHead]
        ringHead += 1
        if ringHead == ringCapacity { ringHead = 0 }
        ringCount -= 1
        forget(fp)
    }

    mutating func insertIntoSet(_ fp: UInt32) {
        let set = self.set!
        var i = home(fp)
        while set[i] != 0 {
            i += 1
            if i == setCapacity { i = 0 }
        }
        set[i] = fp
        setCount += 1
    }

    mutating func resizeRing(_ newCapacity: Int, _ usable: Malloc.UsableSizeFunction) {
        let raw = Malloc.allocate(newCapacity * 4)
        let fresh = raw.bindMemory(to: UInt32.self, capacity: newCapacity)
        let keep = Swift.min(ringCount, newCapacity)
        let skip = ringCount - keep
        for _ in 0..<skip { dropOldest() }
        if let ring {
            var idx = ringHead
            for k in 0..<keep {
                fresh[k] = ring[idx]
                idx += 1
                if idx == ringCapacity { idx = 0 }
            }
            free(ring)
        }
        ring = fresh
        ringCapacity = newCapacity
        ringHead = 0
        ringCount = keep
        let charge = Malloc.charge(raw, usable)
        chargedBytes += charge - ringCharge
        ringCharge = charge
    }

    mutating func resizeSet(_ newCapacity: Int, _ usable: Malloc.UsableSizeFunction) {
        let raw = Malloc.allocateZeroed(newCapacity, 4)
        let old = set
        let oldCapacity = setCapacity
        set = raw.bindMemory(to: UInt32.self, capacity: newCapacity)
        setCapacity = newCapacity
        setCount = 0
        if let old {
            for i in 0..<oldCapacity where old[i] != 0 { insertIntoSet(old[i]) }
            free(old)
        }
        let charge = Malloc.charge(raw, usable)
        chargedBytes += charge - setCharge
        setCharge = charge
    }

    /// Drops everything. Returns the change in charged bytes (negative).
    mutating func reset() -> Int {
        if let ring { free(ring) }
        if let set { free(set) }
        let delta = -chargedBytes
        self = GhostQueue()
        return delta
    }

    var count: Int { ringCount }

    func checkInvariants(_ usable: Malloc.UsableSizeFunction, _ problems: inout [String]) {
        var expected = 0
        if let ring { expected += Malloc.charge(UnsafeMutableRawPointer(ring), usable) }
        if let set { expected += Malloc.charge(UnsafeMutableRawPointer(set), usable) }
        if expected != chargedBytes { problems.append("ghost: charged \(chargedBytes) != real \(expected)") }
        if ringCount > ringCapacity { problems.append("ghost: ring overfull") }
        guard let set else {
            if setCount != 0 { problems.append("ghost: count without set") }
            return
        }
        if setCount >= setCapacity { problems.append("ghost: set full") }
        var inRing: [UInt32: Int] = [:]
        if let ring {
            var idx = ringHead
            for _ in 0..<ringCount {
                if ring[idx] == 0 { problems.append("ghost: zero fingerprint in ring") }
                inRing[ring[idx], default: 0] += 1
                idx += 1
                if idx == ringCapacity { idx = 0 }
            }
        }
        var n = 0
        var inSet: [UInt32: Int] = [:]
        for i in 0..<setCapacity where set[i] != 0 {
            n += 1
            let fp = set[i]
            inSet[fp, default: 0] += 1
            var j = home(fp)
            while j != i {
                if set[j] == 0 { problems.append("ghost: fingerprint at \(i) unreachable from home"); break }
                j += 1
                if j == setCapacity { j = 0 }
            }
        }
        if n != setCount { problems.append("ghost: setCount \(setCount) but \(n) elements") }
        for (fp, c) in inSet where c > inRing[fp, default: 0] {
            problems.append("ghost: fingerprint \(fp) more often in set than ring")
        }
    }
}
