import AegisProtocol
@testable import AegisServer
import Testing

/// The reply queue against a model, under random interleavings drawn from a
/// printed seed: ready replies, pending slots of one or many parts (sums,
/// all-OK, errors), parts answered in random order across slots, drains at
/// random points. What leaves must be every reply, once, in request order.
struct ReplyQueueStressTests {
    /// One outstanding part, and what the model expects of its slot.
    private struct Part {
        var sequence: UInt64
        var slot: Int
        var reply: String
    }

    private struct ModelSlot {
        var aggregate: ReplyQueue.Aggregate
        var parts: Int
        var answered = 0
        var succeeded = 0
        var sum = 0
        var firstError: String?
        var single: String?

        var complete: Bool { answered == parts }

        var expected: String {
            if let single { return single }
            if let firstError {
                if succeeded == 0 { return firstError }
                // "\r\n" is one Character in Swift: cut it as UTF-8 bytes.
                return String(firstError.utf8.dropLast(2))! + " (applied in part: \(succeeded) of \(parts) parts succeeded)\r\n"
            }
            return aggregate == .integerSum ? ":\(sum)\r\n" : "+OK\r\n"
        }
    }

    @Test func randomInterleavingsKeepEveryReplyInOrder() {
        let seed = Stress.seed("ReplyQueueStressTests")
        var random = SeededGenerator(seed: seed)
        let operations = Stress.count(200_000)
        let queue = ReplyQueue()
        let output = WireBuffer()
        var model: [ModelSlot] = []
        var flushedSlots = 0
        var expected: [UInt8] = []
        var parts: [Part] = []
        var mismatches = 0

        func flushModel() {
            while flushedSlots < model.count && model[flushedSlots].complete {
                expected += Array(model[flushedSlots].expected.utf8)
                flushedSlots += 1
            }
        }
        func drainAndCheck() {
            queue.drain(into: output)
            flushModel()
            if output.readableArray() != expected { mismatches += 1 }
            output.clear()
            expected.removeAll(keepingCapacity: true)
        }

        func answer(_ part: Part) {
            Array(part.reply.utf8).withUnsafeBytes { queue.fill(sequence: part.sequence, with: $0) }
            var slot = model[part.slot]
            slot.answered += 1
            if slot.aggregate == .none {
                slot.single = part.reply
            } else if part.reply.hasPrefix("-") {
                if slot.firstError == nil { slot.firstError = part.reply }
            } else {
                slot.succeeded += 1
                if part.reply.hasPrefix(":") { slot.sum += Int(String(part.reply.utf8.dropFirst().dropLast(2))!)! }
            }
            model[part.slot] = slot
        }

        for _ in 0..<operations {
            switch random.next() % 12 {
            case 0, 1, 2:
                // A reply ready at once: straight to output when nothing is
                // outstanding, as Connection.replyTarget does.
                let text = "+r\(random.next() % 1000)\r\n"
                if queue.isEmpty {
                    output.append(string: text)
                    expected += Array(text.utf8)
                    model.append(ModelSlot(aggregate: .none, parts: 0, single: text))
                    flushedSlots = model.count
                } else {
                    let start = queue.beginReady()
                    queue.staging.append(string: text)
                    queue.commitReady(from: start)
                    model.append(ModelSlot(aggregate: .none, parts: 0, single: text))
                }
            case 3, 4:
                let kind = random.next() % 3
                let aggregate: ReplyQueue.Aggregate = kind == 0 ? .none : kind == 1 ? .integerSum : .allOK
                let count = aggregate == .none ? 1 : 1 + Int(random.next() % 4)
                let sequence = queue.openPending(parts: count, aggregate: aggregate)
                model.append(ModelSlot(aggregate: aggregate, parts: count))
                for _ in 0..<count {
                    let reply: String
                    if random.next() % 16 == 0 {
                        reply = "-ERR part \(random.next() % 100) failed\r\n"
                    } else {
                        switch aggregate {
                        case .none: reply = "$3\r\nv\(random.next() % 10)x\r\n"
                        case .integerSum: reply = ":\(random.next() % 3)\r\n"
                        case .allOK: reply = "+OK\r\n"
                        default: preconditionFailure("only none, integerSum and allOK are generated here (ScanPageTests cover SCAN pages)")
                        }
                    }
                    parts.append(Part(sequence: sequence, slot: model.count - 1, reply: reply))
                }
            case 5, 6, 7, 8, 9, 10:
                guard !parts.isEmpty else { continue }
                // Any outstanding part, of any slot, answers next.
                parts.swapAt(Int(random.next() % UInt64(parts.count)), parts.count - 1)
                answer(parts.removeLast())
            default:
                drainAndCheck()
            }
        }
        while !parts.isEmpty {
            answer(parts.removeLast())
        }
        drainAndCheck()
        #expect(mismatches == 0, "seed \(seed): \(mismatches) drains differed from the model")
        #expect(queue.isEmpty, "seed \(seed): \(queue.outstanding) slots left outstanding")
        #expect(flushedSlots == model.count, "seed \(seed): \(model.count - flushedSlots) replies never left")
    }
}
