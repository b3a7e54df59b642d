import Testing
@testable import AegisStore

/// New keys that arrive in hash order (a shard stream, a snapshot replay, a
/// dump restored through clients) grow the table once to what the rest of
/// hash space needs, instead of piling up in one cluster of a table grown
/// step by step (ShardState.noteInsertOrder).
@Suite struct HashOrderedLoadTests {
    static func hashOf(_ key: [UInt8]) -> UInt64 { key.withUnsafeBytes { KeyHash.hash($0) } }

    static func keysInHashOrder(_ count: Int, from first: Int = 0) -> [[UInt8]] {
        (first..<(first + count)).map { key($0) }.sorted { hashOf($0) < hashOf($1) }
    }

    @Test func keysInHashOrderGrowTheTableOnceToWhatTheyNeed() {
        let h = Harness()
        for (i, k) in Self.keysInHashOrder(20_000).enumerated() {
            h.restore(k, [UInt8](repeating: 7, count: 8), version: EntryVersion(term: 1, seq: UInt64(i + 1)))
        }
        #expect(h.store.count == 20_000)
        #expect(h.problems.isEmpty)
        // Grown step by step, every entry moves about three times over
        // (N + 2N/3 + 4N/9 ...); reserved early, hardly any.
        #expect(h.store.movedEntries < 2_000, "entries moved by growth: \(h.store.movedEntries)")
        #expect(h.store.tableCapacity >= 25_000 && h.store.tableCapacity <= 45_000, "capacity \(h.store.tableCapacity)")
        for k in Self.keysInHashOrder(20_000).prefix(50) { #expect(h.get(k) != nil) }
    }

    @Test func keysInAnyOtherOrderGrowStepByStep() {
        let h = Harness()
        for i in 0..<20_000 { h.set(key(i), [1]) }
        #expect(h.store.movedEntries > 20_000, "no reservation: \(h.store.movedEntries) entries moved")
        #expect(h.problems.isEmpty)
    }

    @Test func aSortedLoadIntoAShardHoldingKeysReservesForTheRestOnly() {
        let h = Harness()
        for i in 0..<10_000 { h.set(key(i), [1]) }  // any order: no run
        let capacityBefore = h.store.tableCapacity
        for k in Self.keysInHashOrder(10_000, from: 10_000) { h.set(k, [2]) }
        #expect(h.store.count == 20_000)
        #expect(h.store.tableCapacity <= 45_000, "about what 20,000 need: \(h.store.tableCapacity), from \(capacityBefore)")
        #expect(h.problems.isEmpty)
    }

    @Test func anEstimateTooHighIsBoundedAndAStreamsEndShrinksIt() {
        // 64 keys of the lowest hashes among a million: a run whose density
        // says millions more are coming.
        let h = Harness()
        let low = (0..<200_000).map { key($0) }.sorted { Self.hashOf($0) < Self.hashOf($1) }.prefix(64)
        for k in low { h.set(k, [1]) }
        #expect(h.store.tableCapacity <= (64 + 64 * 64) * 3 / 2 + 1, "at most 64 slots per key of the run: \(h.store.tableCapacity)")
        #expect(h.store.tableCapacity > 1_000, "the run grew it")
        for i in 300_000..<300_200 { h.set(key(i), [1]) }  // each write moves a slice of the growth, to its end
        #expect(!h.store.isResizing)
        h.store.completeStream(streamStart: h.store.lastWriteVersion)
        #expect(h.store.tableCapacity < 1_000, "the stream's end shrinks a table left below load 1/8: \(h.store.tableCapacity)")
        #expect(h.problems.isEmpty)
    }
}

extension HashOrderedLoadTests {
    /// A scan walks its table home by home; keys that share a home come in
    /// any order, so a stream is in hash order only home by home.
    @Test func keysInHashOrderHomeByHomeGrowTheTableOnceToo() {
        var keys = Self.keysInHashOrder(20_000)
        // Swap neighbours two by two: every other key comes before the one below it.
        for i in stride(from: 0, to: keys.count - 1, by: 2) { keys.swapAt(i, i + 1) }
        let h = Harness()
        for k in keys { h.set(k, [1]) }
        #expect(h.store.movedEntries < 2_000, "entries moved by growth: \(h.store.movedEntries)")
        #expect(h.problems.isEmpty)
    }
}
