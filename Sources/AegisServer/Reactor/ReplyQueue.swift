import AegisProtocol

/// The replies of one connection that cannot go straight to its output
/// buffer because an earlier request's reply is still outstanding (it was
/// forwarded to another reactor). Replies leave strictly in request order:
/// `drain(into:)` moves slots from the front as far as they are complete.
///
/// Slot bytes live in `staging`, a bump buffer; positions are logical
/// (counted since the buffer was created) so they survive the compaction
/// WireBuffer does on its own when space runs out.
final class ReplyQueue {
    enum Aggregate: UInt8 {
        case none          // one part whose bytes are the reply
        case integerSum    // DEL/EXISTS/UNLINK over several shards: sum of ":n" parts
        case allOK         // MSET over several shards: "+OK" once every part answered
        case scanPage      // SCAN: one part per reactor, merged into one page (ScanPage)
    }

    // What a client sees when parts of an aggregate fail. The parts of one
    // command run on different shards, each on its own, and nothing rolls
    // back the parts that succeeded (there is no transaction across
    // reactors). So a reply must not claim that nothing happened:
    // - every part succeeded: "+OK" (MSET, FLUSHALL...) or the sum (DEL...);
    // - every part failed: the first error to arrive, unchanged;
    // - some failed: the first error to arrive, its code kept (a client's
    //   error handling still works), followed by
    //   " (applied in part: <n> of <m> parts succeeded)". Parts are the keys
    //   of MSET/DEL/UNLINK/EXISTS and the reactors of FLUSHALL/FLUSHDB.
    //   The keys whose parts succeeded hold their new values.

    struct Slot {
        var start: Int = 0        // logical position in staging
        var length: Int = 0
        var pendingParts: Int32
        var parts: Int32 = 1
        var succeededParts: Int32 = 0
        var aggregate: Aggregate
        var sum: Int = 0
        var failed: Bool = false  // an aggregate part answered with an error
    }

    private var slots: [Slot] = []
    /// The parts of outstanding SCAN pages, by sequence (rare: a dictionary is fine).
    private var scanPages: [UInt64: ScanPage] = [:]
    private var headIndex = 0
    private var baseSequence: UInt64 = 0          // sequence number of slots[0]
    private(set) var nextSequence: UInt64 = 0
    let staging = WireBuffer()
    private var stagingConsumed = 0               // logical position of staging.readIndex
    /// The connection's reactor (debug builds check it).
    private var ownerThread = OwnerThread()

    /// Bound on outstanding slots: past it the connection stops being read.
    static let maxOutstanding = 8192

    @inline(__always) var isEmpty: Bool { headIndex == slots.count }
    @inline(__always) var outstanding: Int { slots.count - headIndex }

    @inline(__always) private var stagingLogicalEnd: Int { stagingConsumed + staging.readableBytes }

    /// Logical write position: call before writing a ready reply into `staging`.
    @inline(__always) func beginReady() -> Int { stagingLogicalEnd }

    /// Records the bytes written into `staging` since `beginReady()` as one complete reply.
    @inline(__always) func commitReady(from start: Int) {
        if slots.isEmpty { baseSequence = nextSequence }
        slots.append(Slot(start: start, length: stagingLogicalEnd - start, pendingParts: 0, aggregate: .none))
        nextSequence &+= 1
    }

    /// Opens a slot that `parts` answers will fill; returns its sequence number.
    @inline(__always) func openPending(parts: Int, aggregate: Aggregate) -> UInt64 {
        ownerThread.assertOwner("a connection's reply queue")
        if slots.isEmpty { baseSequence = nextSequence }
        slots.append(Slot(pendingParts: Int32(parts), parts: Int32(parts), aggregate: aggregate))
        let sequence = nextSequence
        nextSequence &+= 1
        return sequence
    }

    /// Opens a SCAN slot answered by `parts` reactors (see ScanPage).
    func openScanPage(parts: Int, shardCount: Int) -> UInt64 {
        let sequence = openPending(parts: parts, aggregate: .scanPage)
        scanPages[sequence] = ScanPage(shardCount: shardCount)
        return sequence
    }

    /// Delivers one part's reply bytes to the slot `sequence`.
    func fill(sequence: UInt64, with bytes: UnsafeRawBufferPointer) {
        ownerThread.assertOwner("a connection's reply queue")
        let index = Int(truncatingIfNeeded: sequence &- baseSequence)
        guard index >= headIndex && index < slots.count else {
            assertionFailure("reply for a slot that is not outstanding")
            return
        }
        assert(slots[index].pendingParts > 0)
        switch slots[index].aggregate {
        case .none:
            slots[index].start = stagingLogicalEnd
            staging.append(bytes)
            slots[index].length = bytes.count
        case .integerSum, .allOK, .scanPage:
            if bytes.first == UInt8(ascii: "-") {
                if !slots[index].failed {
                    slots[index].failed = true
                    slots[index].start = stagingLogicalEnd
                    staging.append(bytes)
                    slots[index].length = bytes.count
                }
            } else {
                slots[index].succeededParts += 1
                if bytes.first == UInt8(ascii: ":") { slots[index].sum += Self.parseInteger(bytes) }
                if slots[index].aggregate == .scanPage { scanPages[sequence]?.add(bytes) }
            }
        }
        slots[index].pendingParts -= 1
        if slots[index].pendingParts == 0 && slots[index].aggregate == .scanPage {
            // Every part ran the same arguments: an error is the same error
            // from each, and the first one is the answer.
            if !slots[index].failed, let page = scanPages[sequence] {
                slots[index].start = stagingLogicalEnd
                page.merged(into: staging)
                slots[index].length = stagingLogicalEnd - slots[index].start
            }
            scanPages[sequence] = nil
        } else if slots[index].pendingParts == 0 && slots[index].aggregate != .none {
            if !slots[index].failed {
                slots[index].start = stagingLogicalEnd
                if slots[index].aggregate == .integerSum {
                    staging.append(byte: UInt8(ascii: ":"))
                    staging.appendDecimal(slots[index].sum)
                    staging.append("\r\n")
                } else {
                    staging.append("+OK\r\n")
                }
                slots[index].length = stagingLogicalEnd - slots[index].start
            } else if slots[index].succeededParts > 0 {
                notePartialSuccess(index)
            }
        }
    }

    /// Rewrites a failed aggregate's reply as its first error plus how many
    /// parts did apply (see "What a client sees" above). An error path: it
    /// may copy.
    private func notePartialSuccess(_ index: Int) {
        let slot = slots[index]
        var errorLength = slot.length
        let errorOffset = slot.start - stagingConsumed
        // Room first, so the view of the first error stays valid while it is copied.
        staging.reserve(slot.length + 96)
        let view = staging.readableView
        if errorLength >= 2 && view[errorOffset + errorLength - 2] == UInt8(ascii: "\r") { errorLength -= 2 }
        let start = stagingLogicalEnd
        staging.append(UnsafeRawBufferPointer(rebasing: view[errorOffset..<(errorOffset + errorLength)]))
        staging.append(" (applied in part: ")
        staging.appendDecimal(Int(slot.succeededParts))
        staging.append(" of ")
        staging.appendDecimal(Int(slot.parts))
        staging.append(" parts succeeded)\r\n")
        slots[index].start = start
        slots[index].length = stagingLogicalEnd - start
    }

    /// Moves every complete reply at the front into `output`.
    func drain(into output: WireBuffer) {
        ownerThread.assertOwner("a connection's reply queue")
        while headIndex < slots.count && slots[headIndex].pendingParts == 0 {
            let slot = slots[headIndex]
            let view = staging.readableView
            let offset = slot.start - stagingConsumed
            output.append(UnsafeRawBufferPointer(rebasing: view[offset..<(offset + slot.length)]))
            headIndex += 1
        }
        if headIndex == slots.count {
            slots.removeAll(keepingCapacity: slots.capacity <= 4096)
            headIndex = 0
            stagingConsumed += staging.readableBytes
            staging.clear()
            staging.releaseIfIdle(keep: 64 * 1024)
        } else if headIndex >= 1024 {
            compact()
        }
    }

    /// Drops flushed slots and the staging bytes no outstanding slot needs.
    private func compact() {
        slots.removeFirst(headIndex)
        baseSequence &+= UInt64(headIndex)
        headIndex = 0
        var firstLive = stagingLogicalEnd
        for slot in slots where slot.length > 0 { firstLive = min(firstLive, slot.start) }
        staging.consume(firstLive - stagingConsumed)
        stagingConsumed = firstLive
    }

    func reset() {
        slots.removeAll()
        scanPages.removeAll()
        headIndex = 0
        stagingConsumed += staging.readableBytes
        staging.clear()
        staging.releaseIfIdle(keep: 0)
    }

    private static func parseInteger(_ bytes: UnsafeRawBufferPointer) -> Int {
        var value = 0
        var negative = false
        var index = 1
        if index < bytes.count && bytes[index] == UInt8(ascii: "-") { negative = true; index += 1 }
        while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
            value = value &* 10 &+ Int(bytes[index] - 48)
            index += 1
        }
        return negative ? -value : value
    }
}
