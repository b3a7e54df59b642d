import Glibc

/// A FIFO of entry blocks stored as a ring buffer of raw pointers, with O(1)
/// removal from the middle: each entry records its ring index
/// (`Entry.queuePosition`), removal clears that slot to nil (a hole), and
/// `popOldest` skips holes.
///
/// Not thread-safe; owned by one `ShardState` (see its confinement rule).
///
/// Invariants (checked by `checkInvariants`):
/// - `buffer` is nil iff `capacity == 0`; charged bytes are 0 iff nil;
/// - `0 <= live <= used <= capacity`, `0 <= head < max(capacity, 1)`;
/// - the `used` slots starting at `head` (wrapping) hold the `live` entries
///   in insertion order plus `used - live` nil holes; all other slots are nil;
/// - every non-nil slot `i` holds an entry whose `queuePosition == i`;
/// - `capacity < 2^32` (positions are stored in 32 bits).
@usableFromInline
struct EntryRing {
    @usableFromInline var buffer: UnsafeMutablePointer<UnsafeMutableRawPointer?>? = nil
    @usableFromInline var capacity = 0
    @usableFromInline var head = 0
    @usableFromInline var used = 0
    @usableFromInline var live = 0
    /// Ledger charge of `buffer`.
    @usableFromInline var chargedBytes = 0

    static let minimumCapacity = 8

    init() {}

    /// Appends `entry` as the newest element. Returns the change in charged bytes.
    @inline(__always) @usableFromInline
    mutating func push(_ entry: Entry, _ usable: Malloc.UsableSizeFunction) -> Int {
        var delta = 0
        if used == capacity { delta = makeRoom(usable) }
        var index = head &+ used
        if index >= capacity { index &-= capacity }
        buffer.unsafelyUnwrapped[index] = entry.raw
        entry.queuePosition = index
        used &+= 1
        live &+= 1
        return delta
    }

    /// Clears the slot of an entry known to be in this ring. Returns the change in charged bytes.
    @inline(__always) @usableFromInline
    mutating func remove(_ entry: Entry, _ usable: Malloc.UsableSizeFunction) -> Int {
        let index = entry.queuePosition
        assert(index < capacity && buffer![index] == entry.raw, "entry not at its recorded ring position")
        buffer.unsafelyUnwrapped[index] = nil
        live &-= 1
        // Trim trailing holes so a push right after a removal reuses the slot.
        var tail = head &+ used &- 1
        if tail >= capacity { tail &-= capacity }
        if tail == index {
            used &-= 1
        }
        if live == 0 {
            // An empty queue holds no memory (a shard emptied by deletes returns
            // to its table-only baseline).
            return reset()
        }
        if capacity > 64 && live &* 4 < capacity {
            return resize(to: Swift.max(EntryRing.minimumCapacity, live &* 2), usable)
        }
        return 0
    }

    /// Replaces the pointer of an entry whose block moved (realloc).
    @inline(__always) @usableFromInline
    func replace(_ old: Entry, with new: Entry) {
        let index = new.queuePosition
        assert(buffer![index] == old.raw)
        buffer.unsafelyUnwrapped[index] = new.raw
    }

    /// Removes and returns the oldest entry, skipping holes.
    @inline(__always) @usableFromInline
    mutating func popOldest() -> Entry? {
        guard let buf = buffer else { return nil }
        while used > 0 {
            let p = buf[head]
            buf[head] = nil
            head &+= 1
            if head == capacity { head = 0 }
            used &-= 1
            if let p {
                live &-= 1
                if used == 0 { head = 0 }
                return Entry(p)
            }
        }
        head = 0
        return nil
    }

    /// Releases slack after the ring drained through `popOldest` (eviction):
    /// at most half full → shrink to live * 1.25. Returns the charge delta.
    @inline(__always) @usableFromInline
    mutating func trimIfOversized(_ usable: Malloc.UsableSizeFunction) -> Int {
        if capacity > 64 && live &* 2 < capacity {
            if live == 0 { return reset() }
            return resize(to: Swift.max(EntryRing.minimumCapacity, live + live / 4), usable)
        }
        return 0
    }

    /// Full ring: compact in place when at least 1/8 are holes, else grow by a quarter.
    @usableFromInline
    mutating func makeRoom(_ usable: Malloc.UsableSizeFunction) -> Int {
        if capacity > 0 && live <= capacity - capacity / 8 {
            compactInPlace()
            return 0
        }
        let grown = Swift.max(EntryRing.minimumCapacity, capacity + capacity / 4)
        precondition(grown < (1 << 32), "FIFO ring too large for 32-bit positions")
        return resize(to: grown, usable)
    }

    /// Moves the live entries to the front of the used span, keeping order.
    mutating func compactInPlace() {
        guard let buf = buffer else { return }
        var r = 0
        var w = 0
        var rIndex = head
        var wIndex = head
        while r < used {
            if let p = buf[rIndex] {
                if wIndex != rIndex {
                    buf[wIndex] = p
                    buf[rIndex] = nil
                    Entry(p).queuePosition = wIndex
                }
                w += 1
                wIndex += 1
                if wIndex == capacity { wIndex = 0 }
            }
            r += 1
            rIndex += 1
            if rIndex == capacity { rIndex = 0 }
        }
        used = w
        assert(w == live)
    }

    /// Reallocates to `newCapacity` (>= live), entries first, in order. Returns the charge delta.
    mutating func resize(to newCapacity: Int, _ usable: Malloc.UsableSizeFunction) -> Int {
        precondition(newCapacity >= live)
        let raw = Malloc.allocateZeroed(newCapacity, MemoryLayout<UnsafeMutableRawPointer?>.stride)
        let fresh = raw.bindMemory(to: UnsafeMutableRawPointer?.self, capacity: newCapacity)
        var w = 0
        if let buf = buffer {
            var r = 0
            var rIndex = head
            while r < used {
                if let p = buf[rIndex] {
                    fresh[w] = p
                    Entry(p).queuePosition = w
                    w += 1
                }
                r += 1
                rIndex += 1
                if rIndex == capacity { rIndex = 0 }
            }
            free(buf)
        }
        assert(w == live)
        buffer = fresh
        capacity = newCapacity
        head = 0
        used = w
        let newCharge = Malloc.charge(raw, usable)
        let delta = newCharge - chargedBytes
        chargedBytes = newCharge
        return delta
    }

    /// Forgets every entry (the caller frees them) and releases the buffer.
    /// Returns the charge delta (negative).
    mutating func reset() -> Int {
        if let buf = buffer { free(buf) }
        let delta = -chargedBytes
        self = EntryRing()
        return delta
    }

    /// Entries from oldest to newest (tests and invariant checks).
    func forEach(_ body: (Int, Entry) -> Void) {
        guard let buf = buffer else { return }
        var r = 0
        var index = head
        while r < used {
            if let p = buf[index] { body(index, Entry(p)) }
            r += 1
            index += 1
            if index == capacity { index = 0 }
        }
    }

    func checkInvariants(main: Bool, _ usable: Malloc.UsableSizeFunction, _ problems: inout [String]) {
        let name = main ? "main ring" : "small ring"
        if (buffer == nil) != (capacity == 0) { problems.append("\(name): buffer/capacity mismatch") }
        if !(0 <= live && live <= used && used <= capacity) {
            problems.append("\(name): live \(live) used \(used) capacity \(capacity)")
            return
        }
        if capacity >= (1 << 32) { problems.append("\(name): capacity exceeds 32-bit positions") }
        guard let buf = buffer else {
            if chargedBytes != 0 { problems.append("\(name): charge without buffer") }
            return
        }
        if chargedBytes != Malloc.charge(UnsafeMutableRawPointer(buf), usable) {
            problems.append("\(name): charged \(chargedBytes) != real \(Malloc.charge(UnsafeMutableRawPointer(buf), usable))")
        }
        var seen = 0
        var inSpan = [Bool](repeating: false, count: capacity)
        var index = head
        for _ in 0..<used {
            inSpan[index] = true
            if let p = buf[index] {
                seen += 1
                let e = Entry(p)
                if e.queuePosition != index { problems.append("\(name): entry at \(index) records \(e.queuePosition)") }
                if e.inMain != main { problems.append("\(name): entry at \(index) has wrong queue bit") }
            }
            index += 1
            if index == capacity { index = 0 }
        }
        if seen != live { problems.append("\(name): live \(live) but \(seen) entries in span") }
        for i in 0..<capacity where !inSpan[i] && buf[i] != nil {
            problems.append("\(name): entry outside the used span at \(i)")
        }
    }
}
