import Glibc
import PropertyBased
import Testing
@testable import AegisStore

/// The chunked FIFO ring against an array model: order, removal from the
/// middle, popping, chunk release and the incremental compaction.
@Suite struct EntryRingTests {
    /// Entry blocks with just the header the ring uses (position, queue bit).
    final class Blocks {
        var all: [UnsafeMutableRawPointer] = []
        func make() -> Entry {
            let raw = Malloc.allocate(Entry.headerSize)
            memset(raw, 0, Entry.headerSize)
            all.append(raw)
            return Entry(raw)
        }
        deinit { for raw in all { free(raw) } }
    }

    static let programs = zip(Gen.int(in: 0...99), Gen.int(in: 1...3000)).array(of: 1...40)

    @Test func matchesAnArrayModel() async {
        await propertyCheck(count: 60, input: Self.programs) { program in
            let blocks = Blocks()
            var ring = EntryRing()
            var model: [UnsafeMutableRawPointer] = []
            var charge = 0
            var rng = ModelTests.SplitMix(seed: UInt64(program.count))
            for (step, (kind, n)) in program.enumerated() {
                for _ in 0..<n {
                    if kind < 45 || model.isEmpty {  // push
                        let e = blocks.make()
                        charge += ring.push(e, Malloc.usableSize)
                        model.append(e.raw)
                    } else if kind < 85 {  // remove from anywhere
                        let i = Int(rng.next() % UInt64(model.count))
                        charge += ring.remove(Entry(model.remove(at: i)), Malloc.usableSize)
                    } else {  // pop the oldest
                        let popped = ring.popOldest()
                        #expect(popped?.raw == model.first, "step \(step): popped out of order")
                        if popped != nil { model.removeFirst() }
                        charge += ring.trimIfOversized(Malloc.usableSize)
                    }
                }
                var problems: [String] = []
                ring.checkInvariants(main: false, Malloc.usableSize, &problems)
                #expect(problems.isEmpty, "step \(step): \(problems.prefix(3))")
                #expect(ring.live == model.count)
                #expect(charge == ring.chargedBytes, "step \(step): reported charge deltas add up")
                var order: [UnsafeMutableRawPointer] = []
                ring.forEach { _, e in order.append(e.raw) }
                #expect(order == model, "step \(step): FIFO order kept")
                // Holes stay bounded: at most one per entry plus a chunk, plus what a compaction has not reached.
                #expect(ring.used <= 3 * ring.live + 2 * EntryRing.chunkSlots + 8 * n, "step \(step): \(ring.used) slots for \(ring.live)")
                if !problems.isEmpty { return }
            }
            charge += ring.reset()
            #expect(charge == 0)
        }
    }
}
