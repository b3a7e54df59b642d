import Testing
@testable import AegisStore

/// The entry keeps a 16-bit epoch index and the low 48 bits of its seq; the
/// shard's `VersionEpochs` keeps the rest. Nothing of a version may be lost
/// however many epochs a shard holds.
@Suite struct VersionEpochsTests {
    static func epochs(_ h: Harness) -> VersionEpochs { h.store.state.pointee.epochs }

    /// Versions of every shape, including the ones no table slot is left
    /// for, read back exactly and keep the accounting exact.
    @Test func versionsOfManyEpochsReadBackWhole() {
        let h = Harness(epochsMax: 3)
        var written: [[UInt8]: EntryVersion] = [:]
        for i in 0..<40 {
            let v = EntryVersion(term: UInt32(1 + i % 5) * 0x1000_0001, seq: UInt64(i % 8) << 48 | UInt64(0xABCD_0000 + i))
            h.restore(key(i), bytes(i % 20, seed: i), version: v)
            written[key(i)] = v
        }
        #expect(Self.epochs(h).spills > 0, "40 epochs in a table of 3 must spill")
        #expect(Self.epochs(h).used == 3)
        for (k, v) in written { #expect(h.get(k)?.version == v) }
        #expect(h.problems.isEmpty)
        let terms = written.values.map(\.term).max()!
        #expect(h.store.term == terms)
        // Overwrites (in place and moving), expiry changes and deletes of spilled and tabled entries alike.
        for i in 0..<40 {
            switch i % 4 {
            case 0: written[key(i)] = h.set(key(i), bytes(i % 7, seed: 100 + i))
            case 1: written[key(i)] = h.set(key(i), bytes(300 + i, seed: 100 + i))
            case 2:
                #expect(h.setExpiry(key(i), 1_000_000))
                written[key(i)] = h.store.lastWriteVersion
            default:
                #expect(h.delete(key(i)))
                written[key(i)] = nil
            }
            #expect(h.problems.isEmpty, "after step \(i)")
        }
        for i in 0..<40 { #expect(h.get(key(i))?.version == written[key(i)]) }
        h.store.removeAll()
        #expect(h.problems.isEmpty)
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
        #expect(Self.epochs(h).chargedBytes == 0)
    }

    /// An epoch no entry holds any more gives its slot to the next new one,
    /// so a bounded table serves an unbounded run of terms without spilling.
    @Test func aFreedSlotServesTheNextEpoch() {
        let h = Harness(epochsMax: 2)
        for term in UInt32(1)...50 {
            h.store.term = term
            let v = h.set(key(Int(term)), [UInt8(term)])
            #expect(h.delete(key(Int(term) - 1)) == (term > 1))
            #expect(h.get(key(Int(term)))?.version == v)
        }
        #expect(Self.epochs(h).spills == 0)
        #expect(Self.epochs(h).used <= 2)
        #expect(h.problems.isEmpty)
    }

    /// A seq that crosses 2^48 starts a new epoch in the same term. (Not
    /// UInt64.max itself: the store traps before its next version would wrap.)
    @Test func seqCrossingFortyEightBitsKeepsItsTopBits() {
        let h = Harness(epochsMax: 2)
        h.restore(key(0), [0], version: EntryVersion(term: 9, seq: (1 << 48) - 1))
        let next = h.set(key(1), [1])
        #expect(next == EntryVersion(term: 9, seq: 1 << 48))
        #expect(h.get(key(0))?.version == EntryVersion(term: 9, seq: (1 << 48) - 1))
        #expect(h.get(key(1))?.version == next)
        #expect(Self.epochs(h).used == 2)
        h.restore(key(2), [2], version: EntryVersion(term: 9, seq: UInt64.max - 1))
        #expect(h.get(key(2))?.version == EntryVersion(term: 9, seq: UInt64.max - 1))
        #expect(Self.epochs(h).spills == 1)
        #expect(h.problems.isEmpty)
    }

    /// Eviction frees spilled versions' blocks with their entries: the
    /// ledger, which counts them, stays exact while it evicts.
    @Test func evictionOfSpilledEntriesKeepsTheLedgerExact() {
        let h = Harness(limit: 64 * 1024, epochsMax: 1)
        for i in 0..<5000 {
            h.store.term = UInt32(1 + i / 10)
            h.set(key(i), bytes(40, seed: i))
        }
        #expect(h.ledger.evictions > 0)
        #expect(Self.epochs(h).spills > 0)
        #expect(h.problems.isEmpty)
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
    }

    /// FLUSHALL ASYNC hands spilled versions' blocks and the epochs' table
    /// to the batch, which frees all it was charged for.
    @Test func lazyFreeFreesSpilledVersionsAndTheTable() async throws {
        let h = Harness(epochsMax: 1)
        for i in 0..<6000 { h.restore(key(i), [UInt8(i & 0xFF)], version: EntryVersion(term: UInt32(1 + i % 3), seq: UInt64(i + 1))) }
        #expect(Self.epochs(h).spills > 0)
        let charged = h.ledger.usedBytes
        let batch = LazyFreeBatch()
        h.store.removeAll(deferringTo: batch)
        #expect(batch.chargedBytes == charged)
        #expect(Self.epochs(h).chargedBytes == 0)
        #expect(h.problems.isEmpty)
        batch.start(ledger: h.ledger)
        try await LazyFreeTests.waitUntilFreed(batch)
        #expect(batch.isFinished)
        h.ledger.collectLazyFree()
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
        h.set(key(1), [1])
        #expect(h.get(key(1))?.version.term == 3)
        #expect(h.problems.isEmpty)
    }
}
