import Testing
@testable import AegisStore

/// A shard stream applies its shard's entries in hash order; the receiving
/// table reserves what the whole stream needs instead of growing step by
/// step with every key piled into one cluster (ShardStore.reserveForHashOrderedLoad).
@Suite struct HashOrderedLoadTests {
    static func keysInHashOrder(_ count: Int) -> [[UInt8]] {
        (0..<count).map { key($0) }.sorted { a, b in
            a.withUnsafeBytes { KeyHash.hash($0) } < b.withUnsafeBytes { KeyHash.hash($0) }
        }
    }

    @Test func aStreamInHashOrderGrowsTheTableOnceToWhatItNeeds() {
        let keys = Self.keysInHashOrder(20_000)
        let h = Harness()
        var lastHash: UInt64 = 0
        for (i, k) in keys.enumerated() {
            lastHash = k.withUnsafeBytes { KeyHash.hash($0) }
            h.restore(k, [UInt8](repeating: 7, count: 8), version: EntryVersion(term: 1, seq: UInt64(i + 1)))
            if i % 16 == 15 { h.store.reserveForHashOrderedLoad(seen: i + 1, lastHash: lastHash) }
        }
        #expect(h.store.count == 20_000)
        #expect(h.problems.isEmpty)
        // Growing step by step moves every entry about three times over
        // (N + 2N/3 + 4N/9 ...); reserved early, hardly any.
        #expect(h.store.movedEntries < 2_000, "entries moved by growth: \(h.store.movedEntries)")
        #expect(h.store.tableCapacity >= 25_000 && h.store.tableCapacity <= 45_000, "capacity \(h.store.tableCapacity)")
        for k in keys.prefix(100) + keys.suffix(100) { #expect(h.get(k) != nil) }
    }

    @Test func theEstimateIsBoundedAndNeedsEnoughEntries() {
        let h = Harness()
        for i in 0..<64 { h.set(key(i), [1]) }
        let before = h.store.tableCapacity
        h.store.reserveForHashOrderedLoad(seen: 63, lastHash: 1)
        #expect(h.store.tableCapacity == before, "fewer than 64 entries seen: no estimate")
        h.store.reserveForHashOrderedLoad(seen: 64, lastHash: 1)
        #expect(h.store.tableCapacity <= 64 * 1_024 * 3 / 2 + 1, "a tiny share of hash space estimates at most 1,024 times what came")
        #expect(h.store.tableCapacity > before)
        #expect(h.problems.isEmpty)
        let grown = h.store.tableCapacity
        h.store.reserveForHashOrderedLoad(seen: 64, lastHash: UInt64.max)
        #expect(h.store.tableCapacity == grown, "never shrinks")
        for i in 64..<200 { h.set(key(i), [1]) }  // each write moves a slice of the growth, to its end
        #expect(!h.store.isResizing)
        h.store.completeStream(streamStart: h.store.lastWriteVersion)
        #expect(h.store.tableCapacity < 1_000, "the stream's end shrinks a table the estimate left sparse: \(h.store.tableCapacity)")
        #expect(h.problems.isEmpty)
    }
}
