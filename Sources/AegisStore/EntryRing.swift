import Glibc

/// A FIFO of entry blocks with O(1) removal from the middle: each entry
/// records its ring position (`Entry.queuePosition`), removal clears that
/// slot to nil (a hole), and `popOldest` skips holes.
///
/// No operation touches more than a bounded number of slots or entries, so
/// a ring of millions never stalls its reactor: positions are 32-bit
/// sequence numbers (wrapping) that never change when the ring grows, the
/// slots live in fixed chunks of `chunkSlots` pointers (a page) found
/// through a small circular directory, and a chunk is allocated when the
/// tail enters it and freed when the head or the tail leaves it. Holes are
/// squeezed out by an incremental compaction (`compactRead` /
/// `compactWrite`, a few slots per push and removal) that keeps the order.
///
/// Not thread-safe; owned by one `ShardState` (see its confinement rule).
///
/// Positions compare through `offset(_:)`, their distance from `base`:
/// every live position is within 2^32 of it because a ring never holds
/// 2^31 slots. Invariants (checked by `checkInvariants`):
/// - `directory` is nil iff `directoryCapacity == 0`; `chunkCount <= directoryCapacity`,
///   a power of two; chunk `k` covers positions `base + k * chunkSlots ..< base + (k + 1) * chunkSlots`;
/// - `offset(head) <= offset(tail) <= chunkCount * chunkSlots`;
/// - the slots from `head` to `tail` hold the `live` entries in insertion
///   order plus nil holes; every other slot of every chunk is nil;
/// - every non-nil slot at position `p` holds an entry whose `queuePosition == p`;
/// - while compacting, `head <= compactWrite <= compactRead <= tail` (by offset)
///   and the slots in `compactWrite ..< compactRead` are nil;
/// - `chargedBytes` is the ledger charge of the chunks and the directory; 0 when empty.
@usableFromInline
struct EntryRing {
    @usableFromInline typealias Chunk = UnsafeMutablePointer<UnsafeMutableRawPointer?>

    @usableFromInline static let chunkShift = 9
    @usableFromInline static let chunkSlots = 1 << chunkShift  // 4 KiB of pointers
    /// Slots examined by each step of a compaction under way.
    static let compactionStepSlots = 8

    @usableFromInline var directory: UnsafeMutablePointer<Chunk?>? = nil
    @usableFromInline var directoryCapacity = 0
    @usableFromInline var directoryHead = 0
    @usableFromInline var chunkCount = 0
    @usableFromInline var base: UInt32 = 0
    @usableFromInline var head: UInt32 = 0
    @usableFromInline var tail: UInt32 = 0
    @usableFromInline var live = 0
    /// Ledger charge of the chunks and the directory.
    @usableFromInline var chargedBytes = 0
    var compacting = false
    var compactWrite: UInt32 = 0
    var compactRead: UInt32 = 0
    /// Entries given a new ring position so far (by compaction). For tests.
    var repositioned = 0

    init() {}

    @inline(__always) @usableFromInline
    func offset(_ position: UInt32) -> Int { Int(position &- base) }

    /// Slots from head to tail, holes included.
    var used: Int { Int(tail &- head) }

    @inline(__always) @usableFromInline
    func slot(_ position: UInt32) -> Chunk {
        let o = offset(position)
        let chunk = directory.unsafelyUnwrapped[(directoryHead &+ (o >> Self.chunkShift)) & (directoryCapacity &- 1)]
        return chunk.unsafelyUnwrapped + (o & (Self.chunkSlots &- 1))
    }

    /// Appends `entry` as the newest element. Returns the change in charged bytes.
    @inline(__always) @usableFromInline
    mutating func push(_ entry: Entry, _ usable: Malloc.UsableSizeFunction) -> Int {
        var delta = 0
        if offset(tail) == chunkCount &<< Self.chunkShift { delta = appendChunk(usable) }
        slot(tail).pointee = entry.raw
        entry.queuePosition = Int(tail)
        tail &+= 1
        live &+= 1
        return delta &+ maintain()
    }

    /// Clears the slot of an entry known to be in this ring. Returns the change in charged bytes.
    @inline(__always) @usableFromInline
    mutating func remove(_ entry: Entry, _ usable: Malloc.UsableSizeFunction) -> Int {
        let position = UInt32(truncatingIfNeeded: entry.queuePosition)
        assert(holds(entry), "entry not at its recorded ring position")
        slot(position).pointee = nil
        live &-= 1
        // An empty queue holds no memory (a shard emptied by deletes returns
        // to its table-only baseline).
        if live == 0 { return reset() }
        // Trim a trailing hole so a push right after a removal reuses the slot.
        if position &+ 1 == tail && !(compacting && compactRead == tail) { tail = position }
        return maintain()
    }

    /// Replaces the pointer of an entry whose block moved (realloc).
    @inline(__always) @usableFromInline
    func replace(_ old: Entry, with new: Entry) {
        let s = slot(UInt32(truncatingIfNeeded: new.queuePosition))
        assert(s.pointee == old.raw)
        s.pointee = new.raw
    }

    /// Removes and returns the oldest entry, skipping holes. Chunks it
    /// leaves behind are freed by the next push, removal or trim (which
    /// report the charge).
    @inline(__always) @usableFromInline
    mutating func popOldest() -> Entry? {
        while head != tail {
            let s = slot(head)
            let p = s.pointee
            s.pointee = nil
            head &+= 1
            if compacting {
                if offset(compactWrite) < offset(head) { compactWrite = head }
                if offset(compactRead) < offset(head) { compactRead = head }
            }
            if let p {
                live &-= 1
                return Entry(p)
            }
        }
        return nil
    }

    /// Releases what popping left behind. Returns the charge delta.
    @inline(__always) @usableFromInline
    mutating func trimIfOversized(_ usable: Malloc.UsableSizeFunction) -> Int {
        if live == 0 { return directory == nil ? 0 : reset() }
        return maintain()
    }

    /// Bounded housekeeping after every change: free chunks the head and the
    /// tail have left, start a compaction when holes outnumber entries, and
    /// move one compaction step along.
    @inline(__always)
    mutating func maintain() -> Int {
        var delta = 0
        if offset(head) >= Self.chunkSlots { delta &+= releaseHeadChunks() }
        if !compacting {
            if used > 2 &* live &+ Self.chunkSlots {
                compacting = true
                compactWrite = head
                compactRead = head
            } else {
                return delta
            }
        }
        return delta &+ compactStep()
    }

    /// Moves up to `compactionStepSlots` slots of the compaction along; the
    /// live entries among them go to the write finger, keeping their order.
    mutating func compactStep() -> Int {
        var n = Self.compactionStepSlots
        while n > 0 && compactRead != tail {
            let r = slot(compactRead)
            if let p = r.pointee {
                if compactWrite != compactRead {
                    slot(compactWrite).pointee = p
                    r.pointee = nil
                    Entry(p).queuePosition = Int(compactWrite)
                    repositioned &+= 1
                }
                compactWrite &+= 1
            }
            compactRead &+= 1
            n &-= 1
        }
        if compactRead != tail { return 0 }
        tail = compactWrite
        compacting = false
        return releaseTailChunks()
    }

    mutating func appendChunk(_ usable: Malloc.UsableSizeFunction) -> Int {
        var delta = 0
        if chunkCount == directoryCapacity {
            let grown = Swift.max(4, directoryCapacity &* 2)
            precondition(grown << Self.chunkShift < (1 << 31), "FIFO ring too large for 32-bit positions")
            let raw = Malloc.allocateZeroed(grown, MemoryLayout<Chunk?>.stride)
            let fresh = raw.bindMemory(to: Chunk?.self, capacity: grown)
            if let old = directory {
                for k in 0..<chunkCount { fresh[k] = old[(directoryHead &+ k) & (directoryCapacity &- 1)] }
                delta &-= Malloc.charge(UnsafeMutableRawPointer(old), usable)
                free(old)
            }
            directory = fresh
            directoryCapacity = grown
            directoryHead = 0
            delta &+= Malloc.charge(raw, usable)
        }
        let chunk = Malloc.allocateZeroed(Self.chunkSlots, MemoryLayout<UnsafeMutableRawPointer?>.stride)
        directory.unsafelyUnwrapped[(directoryHead &+ chunkCount) & (directoryCapacity &- 1)] =
            chunk.bindMemory(to: UnsafeMutableRawPointer?.self, capacity: Self.chunkSlots)
        chunkCount &+= 1
        delta &+= Malloc.charge(chunk, Self.usableOf)
        chargedBytes &+= delta
        return delta
    }

    /// Frees the chunks wholly before the head.
    mutating func releaseHeadChunks() -> Int {
        var delta = 0
        while offset(head) >= Self.chunkSlots {
            let k = directoryHead
            let chunk = directory.unsafelyUnwrapped[k].unsafelyUnwrapped
            delta &-= Malloc.charge(UnsafeMutableRawPointer(chunk), Self.usableOf)
            free(chunk)
            directory.unsafelyUnwrapped[k] = nil
            directoryHead = (directoryHead &+ 1) & (directoryCapacity &- 1)
            chunkCount &-= 1
            base &+= UInt32(Self.chunkSlots)
        }
        chargedBytes &+= delta
        return delta
    }

    /// Frees the chunks wholly at or after the tail.
    mutating func releaseTailChunks() -> Int {
        var delta = 0
        while chunkCount > 1 && offset(tail) <= (chunkCount &- 1) &<< Self.chunkShift {
            let k = (directoryHead &+ chunkCount &- 1) & (directoryCapacity &- 1)
            let chunk = directory.unsafelyUnwrapped[k].unsafelyUnwrapped
            delta &-= Malloc.charge(UnsafeMutableRawPointer(chunk), Self.usableOf)
            free(chunk)
            directory.unsafelyUnwrapped[k] = nil
            chunkCount &-= 1
        }
        chargedBytes &+= delta
        return delta
    }

    /// The process's `malloc_usable_size` (chunks are charged like every other block).
    static var usableOf: Malloc.UsableSizeFunction { Malloc.usableSize }

    /// Forgets every entry (the caller frees them) and releases the chunks.
    /// Returns the charge delta (negative).
    mutating func reset() -> Int {
        forEachChunk { free($0) }
        if let directory { free(directory) }
        let delta = -chargedBytes
        let kept = repositioned
        self = EntryRing()
        repositioned = kept
        return delta
    }

    /// Hands the chunks and the directory to `batch` and forgets them (FLUSHALL ASYNC).
    mutating func handOver(to batch: LazyFreeBatch) {
        var chunkBytes = 0
        forEachChunk {
            let c = Malloc.charge(UnsafeMutableRawPointer($0), Self.usableOf)
            chunkBytes += c
            batch.add(array: UnsafeMutableRawPointer($0), charge: c)
        }
        batch.add(array: UnsafeMutableRawPointer(directory), charge: chargedBytes - chunkBytes)
        let kept = repositioned
        self = EntryRing()
        repositioned = kept
    }

    func forEachChunk(_ body: (Chunk) -> Void) {
        guard let directory else { return }
        for k in 0..<chunkCount {
            if let chunk = directory[(directoryHead &+ k) & (directoryCapacity &- 1)] { body(chunk) }
        }
    }

    /// True when `entry` is at its recorded position in this ring.
    func holds(_ entry: Entry) -> Bool {
        let position = UInt32(truncatingIfNeeded: entry.queuePosition)
        guard directory != nil, offset(position) >= offset(head), offset(position) < offset(tail) else { return false }
        return slot(position).pointee == entry.raw
    }

    /// Entries from oldest to newest (tests and invariant checks).
    func forEach(_ body: (Int, Entry) -> Void) {
        var p = head
        while p != tail {
            if let e = slot(p).pointee { body(Int(p), Entry(e)) }
            p &+= 1
        }
    }

    func checkInvariants(main: Bool, _ usable: Malloc.UsableSizeFunction, _ problems: inout [String]) {
        let name = main ? "main ring" : "small ring"
        guard let directory else {
            if directoryCapacity != 0 || chunkCount != 0 || live != 0 || chargedBytes != 0 {
                problems.append("\(name): state without a directory")
            }
            return
        }
        if directoryCapacity.nonzeroBitCount != 1 || chunkCount > directoryCapacity {
            problems.append("\(name): directory \(directoryCapacity) with \(chunkCount) chunks")
            return
        }
        let span = chunkCount << Self.chunkShift
        if !(0 <= offset(head) && offset(head) <= offset(tail) && offset(tail) <= span) {
            problems.append("\(name): head \(offset(head)) tail \(offset(tail)) of \(span) slots")
            return
        }
        var charge = Malloc.charge(UnsafeMutableRawPointer(directory), usable)
        forEachChunk { charge += Malloc.charge(UnsafeMutableRawPointer($0), usable) }
        if charge != chargedBytes { problems.append("\(name): charged \(chargedBytes) != real \(charge)") }
        if compacting && !(offset(head) <= offset(compactWrite) && offset(compactWrite) <= offset(compactRead)
                           && offset(compactRead) <= offset(tail)) {
            problems.append("\(name): compaction fingers out of order")
        }
        var seen = 0
        for k in 0..<chunkCount {
            guard let chunk = directory[(directoryHead + k) & (directoryCapacity - 1)] else {
                problems.append("\(name): chunk \(k) missing")
                continue
            }
            for i in 0..<Self.chunkSlots {
                let o = k << Self.chunkShift + i
                let inSpan = o >= offset(head) && o < offset(tail)
                guard let p = chunk[i] else { continue }
                if !inSpan { problems.append("\(name): entry outside the span at offset \(o)"); continue }
                if compacting && o >= offset(compactWrite) && o < offset(compactRead) {
                    problems.append("\(name): entry inside the compaction gap at offset \(o)")
                }
                seen += 1
                let e = Entry(p)
                let position = base &+ UInt32(o)
                if UInt32(truncatingIfNeeded: e.queuePosition) != position {
                    problems.append("\(name): entry at \(position) records \(e.queuePosition)")
                }
                if e.inMain != main { problems.append("\(name): entry at \(position) has wrong queue bit") }
            }
        }
        if seen != live { problems.append("\(name): live \(live) but \(seen) entries in span") }
    }
}
