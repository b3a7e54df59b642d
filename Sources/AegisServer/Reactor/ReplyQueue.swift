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
        case integerSum    // DEL/UNLINK over several shards: sum of ":n" parts
        case countSum      // EXISTS/DBSIZE over several shards: the same sum, but a read (see below)
        case allOK         // MSET over several shards: "+OK" once every part answered
        case scanPage      // SCAN: one part per reactor, merged into one page (ScanPage)
        case arrayConcat   // KEYS over every reactor: one array of every part's elements
        case anyNonNull    // RANDOMKEY over every reactor: the first part that found a key
        case bulkConcat    // CLIENT LIST over every reactor: one bulk string of every part's text
        case verbatimConcat // the same, as a RESP3 verbatim string
        case killedOne     // CLIENT KILL addr: "+OK" when a part closed a client, else an error
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
    //   of MSET/DEL/UNLINK and the reactors of FLUSHALL/FLUSHDB.
    //   The keys whose parts succeeded hold their new values.
    // A read (EXISTS, DBSIZE) changed nothing, so "applied in part" would
    // be wrong and a partial count is no answer: one failed part fails it
    // with that part's error, unchanged.

    struct Slot {
        var start: Int = 0        // logical position in staging
        var length: Int = 0
        var pendingParts: Int32
        var parts: Int32 = 1
        var succeededParts: Int32 = 0
        var aggregate: Aggregate
        var sum: Int = 0
        var failed: Bool = false  // an aggregate part answered with an error
        var discard: Bool = false // CLIENT REPLY OFF/SKIP: never sent
    }

    private var slots: [Slot] = []
    /// The parts of outstanding SCAN pages, by sequence (rare: a dictionary is fine).
    private var scanPages: [UInt64: ScanPage] = [:]
    /// Elements gathered so far per open `.arrayConcat` slot, by sequence
    /// (KEYS only, so a dictionary off the hot path is fine).
    private var gathered: [UInt64: (count: Int, bytes: [UInt8])] = [:]
    private var headIndex = 0
    private var baseSequence: UInt64 = 0          // sequence number of slots[0]
    private(set) var nextSequence: UInt64 = 0
    let staging = WireBuffer()
    private var stagingConsumed = 0               // logical position of staging.readIndex
    /// The connection's reactor (debug builds check it).
    private var ownerThread = OwnerThread()

    /// Bound on outstanding slots: past it the connection stops being read.
    static let maxOutstanding = 8192

    /// CLIENT REPLY OFF/SKIP: replies opened or committed while set are dropped.
    var discarding = false

    @inline(__always) var isEmpty: Bool { headIndex == slots.count }
    @inline(__always) var outstanding: Int { slots.count - headIndex }

    @inline(__always) private var stagingLogicalEnd: Int { stagingConsumed + staging.readableBytes }

    /// Logical write position: call before writing a ready reply into `staging`.
    @inline(__always) func beginReady() -> Int { stagingLogicalEnd }

    /// True once the reply of slot `sequence` has left the queue.
    func isSent(_ sequence: UInt64) -> Bool {
        isEmpty ? sequence < nextSequence : sequence < baseSequence &+ UInt64(headIndex)
    }

    /// Records the bytes written into `staging` since `beginReady()` as one complete reply.
    @inline(__always) func commitReady(from start: Int) {
        if slots.isEmpty { baseSequence = nextSequence }
        slots.append(Slot(start: start, length: stagingLogicalEnd - start, pendingParts: 0, aggregate: .none, discard: discarding))
        nextSequence &+= 1
    }

    /// Opens a slot that `parts` answers will fill; returns its sequence number.
    @inline(__always) func openPending(parts: Int, aggregate: Aggregate) -> UInt64 {
        ownerThread.assertOwner("a connection's reply queue")
        if slots.isEmpty { baseSequence = nextSequence }
        slots.append(Slot(pendingParts: Int32(parts), parts: Int32(parts), aggregate: aggregate, discard: discarding))
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
        case .arrayConcat, .bulkConcat, .verbatimConcat:
            gather(sequence: sequence, index: index, bytes)
        case .anyNonNull:
            // A bulk reply ("$n" with n >= 0) is a key; "$-1", "_" and errors are not.
            let isKey = bytes.count > 1 && bytes[0] == UInt8(ascii: "$") && bytes[1] != UInt8(ascii: "-")
            if slots[index].length == 0 || (isKey && !slots[index].failed) {
                slots[index].start = stagingLogicalEnd
                staging.append(bytes)
                slots[index].length = bytes.count
                slots[index].failed = isKey  // here: "a key was chosen, keep it"
            }
        case .integerSum, .countSum, .allOK, .killedOne, .scanPage:
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
        let aggregate = slots[index].aggregate
        if slots[index].pendingParts == 0 && slots[index].aggregate == .scanPage {
            // Every part ran the same arguments: an error is the same error
            // from each, and the first one is the answer.
            if !slots[index].failed, let page = scanPages[sequence] {
                slots[index].start = stagingLogicalEnd
                page.merged(into: staging)
                slots[index].length = stagingLogicalEnd - slots[index].start
            }
            scanPages[sequence] = nil
        } else if slots[index].pendingParts == 0 && (aggregate == .arrayConcat || aggregate == .bulkConcat || aggregate == .verbatimConcat) {
            let whole = gathered.removeValue(forKey: sequence) ?? (0, [])
            slots[index].start = stagingLogicalEnd
            if whole.count < 0 {
                staging.append(whole.bytes)
            } else if aggregate != .arrayConcat {
                let verbatim = aggregate == .verbatimConcat
                staging.append(byte: UInt8(ascii: verbatim ? "=" : "$"))
                staging.appendDecimal(whole.bytes.count + (verbatim ? 4 : 0))
                staging.append(verbatim ? "\r\ntxt:" : "\r\n")
                staging.append(whole.bytes)
                staging.append("\r\n")
            } else {
                staging.append(byte: UInt8(ascii: "*"))
                staging.appendDecimal(whole.count)
                staging.append("\r\n")
                staging.append(whole.bytes)
            }
            slots[index].length = stagingLogicalEnd - slots[index].start
        } else if slots[index].pendingParts == 0 && slots[index].aggregate != .none && slots[index].aggregate != .anyNonNull {
            if !slots[index].failed {
                slots[index].start = stagingLogicalEnd
                if slots[index].aggregate == .integerSum || slots[index].aggregate == .countSum {
                    staging.append(byte: UInt8(ascii: ":"))
                    staging.appendDecimal(slots[index].sum)
                    staging.append("\r\n")
                } else if slots[index].aggregate == .killedOne {
                    staging.append(slots[index].sum > 0 ? "+OK\r\n" : "-ERR No such client\r\n")
                } else {
                    staging.append("+OK\r\n")
                }
                slots[index].length = stagingLogicalEnd - slots[index].start
            } else if slots[index].succeededParts > 0 && slots[index].aggregate != .countSum {
                notePartialSuccess(index)
            }
        }
    }

    /// Adds one part to the slot's gathering: an array's elements ("*n\r\n"
    /// then n elements) or a bulk string's text; an error part replaces
    /// the whole reply (count -1).
    private func gather(sequence: UInt64, index: Int, _ bytes: UnsafeRawBufferPointer) {
        var whole = gathered[sequence] ?? (0, [])
        if whole.count < 0 { return }
        let expected = UInt8(ascii: slots[index].aggregate == .arrayConcat ? "*" : "$")
        guard bytes.first == expected, let headerEnd = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            gathered[sequence] = (-1, Array(bytes))
            return
        }
        if expected == UInt8(ascii: "*") {
            whole.count += Self.parseInteger(UnsafeRawBufferPointer(rebasing: bytes[0..<headerEnd]))
            whole.bytes.append(contentsOf: bytes[(headerEnd + 1)...])
        } else {
            let length = Self.parseInteger(UnsafeRawBufferPointer(rebasing: bytes[0..<headerEnd]))
            if length > 0 { whole.bytes.append(contentsOf: bytes[(headerEnd + 1)..<(headerEnd + 1 + length)]) }
        }
        gathered[sequence] = whole
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
            if !slot.discard {
                let view = staging.readableView
                let offset = slot.start - stagingConsumed
                output.append(UnsafeRawBufferPointer(rebasing: view[offset..<(offset + slot.length)]))
            }
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
        gathered.removeAll()
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
