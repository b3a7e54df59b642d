import PropertyBased
import Testing
@testable import AegisStore

/// Issue 14, item 3: a shard's table grows and shrinks a bounded slice per
/// operation, never all at once on the reactor.
@Suite struct IncrementalGrowthTests {
    /// Generous against the expected handful, far below a whole table.
    static let movedPerOperationMax = 256

    @Test func growthMovesABoundedNumberOfEntriesPerInsert() {
        let h = Harness()
        var worst = 0
        for i in 0..<200_000 {
            let before = h.store.movedEntries
            h.set(key(i), [1])
            worst = max(worst, h.store.movedEntries - before)
        }
        #expect(h.store.count == 200_000)
        #expect(worst <= Self.movedPerOperationMax, "one insert moved \(worst) entries")
        #expect(h.problems.isEmpty)
    }

    /// The FIFO rings hold a pointer per entry, and each entry its ring
    /// position: a ring that grows, shrinks or compacts must not rewrite
    /// all of them in one operation either.
    @Test func ringsRepositionABoundedNumberOfEntriesPerOperation() {
        let h = Harness()
        var worstInsert = 0
        for i in 0..<200_000 {
            let before = h.store.ringRepositionedEntries
            h.set(key(i), [1])
            worstInsert = max(worstInsert, h.store.ringRepositionedEntries - before)
        }
        var worstDelete = 0
        for i in 0..<200_000 where i % 5 != 0 {  // holes all over the ring, then a shrink
            let before = h.store.ringRepositionedEntries
            h.delete(key(i))
            worstDelete = max(worstDelete, h.store.ringRepositionedEntries - before)
        }
        var worstChurn = 0
        for i in 200_000..<400_000 {  // inserts and deletes: holes to compact
            let before = h.store.ringRepositionedEntries
            h.set(key(i), [1])
            h.delete(key(i - 100_000))
            worstChurn = max(worstChurn, h.store.ringRepositionedEntries - before)
        }
        #expect(worstInsert <= Self.movedPerOperationMax, "one insert repositioned \(worstInsert) entries")
        #expect(worstDelete <= Self.movedPerOperationMax, "one delete repositioned \(worstDelete) entries")
        #expect(worstChurn <= Self.movedPerOperationMax, "one insert + delete repositioned \(worstChurn) entries")
        #expect(h.problems.isEmpty)
    }

    @Test func shrinkingMovesABoundedNumberOfEntriesPerDelete() {
        let h = Harness()
        for i in 0..<200_000 { h.set(key(i), [1]) }
        var worst = 0
        for i in 0..<200_000 {
            let before = h.store.movedEntries
            #expect(h.delete(key(i)))
            worst = max(worst, h.store.movedEntries - before)
        }
        #expect(h.store.count == 0)
        #expect(worst <= Self.movedPerOperationMax, "one delete moved \(worst) entries")
        #expect(h.store.tableCapacity == 8)
        #expect(h.problems.isEmpty)
    }
}

/// The store against the dictionary model while a resize is under way.
@Suite struct ResizeInProgressTests {
    /// Fills a store to just past a growth trigger, so the next operations run mid-resize.
    static func growing(keys: Int, limit: Int = 0) -> (Harness, Model) {
        let h = Harness(limit: limit)
        var model = Model()
        var i = 0
        while i < keys || !h.store.isResizing {
            let v = bytes(i % 40, seed: i)
            #expect(h.set(key(i), v) == model.set(key(i), v, 0))
            i += 1
        }
        return (h, model)
    }

    static let ops = zip(Gen.int(in: 0...91), Gen.int(in: 0...5999), Gen.int(in: 0...200), Gen.int(in: 0...140))
        .map { Op.make($0.0, $0.1, $0.2, $0.3) }
        .array(of: 50...300)

    /// Random gets, sets, deletes, expiry changes, sweeps and clock moves on a
    /// table that is being grown: every answer matches the model, every
    /// invariant (both tables, which home is where) holds after every step.
    @Test func matchesTheModelMidResize() async {
        await propertyCheck(count: 25, input: Self.ops) { ops in
            let (h, startModel) = Self.growing(keys: 3000)
            var model = startModel
            var now: Int64 = 1_000
            var stepsMidResize = 0
            for (step, op) in ops.enumerated() {
                let ctx = Comment(rawValue: "step \(step): \(op)")
                if h.store.isResizing { stepsMidResize += 1 }
                switch op {
                case let .set(k, n, ttl):
                    let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                    let value = bytes(n, seed: k)
                    #expect(h.set(key(k), value, expiry: expiry, now: now) == model.set(key(k), value, expiry), ctx)
                case let .get(k):
                    #expect(h.get(key(k), now: now) == model.get(key(k), now), ctx)
                case let .delete(k):
                    #expect(h.delete(key(k), now: now) == model.delete(key(k), now), ctx)
                case let .expire(k, ttl):
                    let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                    #expect(h.setExpiry(key(k), expiry, now: now) == model.setExpiry(key(k), expiry, now), ctx)
                case let .sweep(maxSlots):
                    let removed = h.store.expireSweep(nowMs: now, maxSlots: maxSlots)
                    var gone = 0
                    for (k, s) in model.entries where h.peek(k) == nil {
                        #expect(model.expired(s, now), "\(ctx): sweep removed a live key")
                        model.entries[k] = nil
                        gone += 1
                    }
                    #expect(gone == removed, ctx)
                case let .advance(ms):
                    now += Int64(ms)
                default:
                    break
                }
                let problems = h.problems
                #expect(problems.isEmpty, "\(ctx): \(problems.prefix(5))")
                #expect(h.store.count == model.entries.count, ctx)
                #expect(h.ledger.usedBytes == h.store.chargedBytes, ctx)
                if !problems.isEmpty { return }
            }
            #expect(stepsMidResize > 0, "the operations ran while the table was resizing")
            for (k, s) in model.entries { #expect(h.peek(k) == s) }
        }
    }

    /// A scan that starts before a growth, runs through it and through the
    /// shrink after it visits every key that was there all along.
    @Test func scanAcrossResizesVisitsEveryStableKey() async {
        await propertyCheck(count: 20, input: Gen.int(in: 1...40)) { perCall in
            let (h, model) = Self.growing(keys: 2000)
            let stable = Array(model.entries.keys)
            var extra = 10_000
            var sawResize = false
            let (keys, cursors) = h.scanAll(perCall: perCall) { step in
                if h.store.isResizing { sawResize = true }
                if step < 60 {
                    for _ in 0..<50 { h.set(key(extra), [2]); extra += 1 }
                } else if step == 60 {
                    for k in 10_000..<extra { h.delete(key(k)) }
                }
            }
            #expect(sawResize)
            #expect(cursors.last == 0)
            let missed = Set(stable).subtracting(keys)
            #expect(missed.isEmpty, "\(missed.count) of \(stable.count) stable keys not visited")
            #expect(h.problems.isEmpty)
        }
    }

    /// Eviction pops entries from the FIFO rings, which may still sit in the
    /// old table: they are found and removed there.
    @Test func evictionMidResize() {
        let (h, _) = Self.growing(keys: 4000, limit: 0)
        h.ledger.limitBytes = h.ledger.usedBytes / 2
        var evictedMidResize = false
        for i in 100_000..<100_200 {
            let before = h.ledger.evictions
            let resizing = h.store.isResizing
            h.set(key(i), bytes(30, seed: i))
            if resizing && h.ledger.evictions > before { evictedMidResize = true }
            let problems = h.problems
            #expect(problems.isEmpty, "\(problems.prefix(3))")
            if !problems.isEmpty { return }
        }
        #expect(evictedMidResize)
        #expect(h.ledger.usedBytes <= h.ledger.limitBytes)
    }

    /// Keys that expire while they wait in the old table are swept once moved.
    @Test func expiredKeysInTheOldTableAreSwept() {
        let h = Harness()
        for i in 0..<3000 { h.set(key(i), [1], expiry: i % 2 == 0 ? 500 : 0, now: 0) }
        var i = 3000
        while !h.store.isResizing { h.set(key(i), [1], now: 0); i += 1 }
        var removed = 0
        var sweeps = 0
        while h.store.count > i - 1500 && sweeps < 10_000 {
            removed += h.store.expireSweep(nowMs: 1_000, maxSlots: 64)
            sweeps += 1
        }
        #expect(removed == 1500)
        #expect(!h.store.isResizing)
        #expect(h.problems.isEmpty)
        for k in 0..<3000 { #expect((h.peek(key(k)) != nil) == (k % 2 == 1)) }
    }
}

/// FLUSHALL ASYNC at the store: the shard empties in O(1), the memory is
/// freed by the batch's thread (or in steps by the caller), and the ledger
/// follows.
@Suite struct LazyFreeTests {
    static func waitUntilFreed(_ batch: LazyFreeBatch) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !batch.isFinished && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
    }

    @Test func removeAllDeferredHandsEverythingToTheBatch() async throws {
        let h = Harness()
        for i in 0..<20_000 { h.set(key(i), bytes(i % 100, seed: i)) }
        let charged = h.ledger.usedBytes
        let batch = LazyFreeBatch()
        h.store.removeAll(deferringTo: batch)
        #expect(h.store.count == 0)
        #expect(h.get(key(1)) == nil)
        #expect(h.problems.isEmpty)
        #expect(batch.entries == 20_000)
        // Nothing is freed by the shard: the ledger still charges all of it, plus the fresh table.
        #expect(batch.freedBytes == 0)
        #expect(batch.chargedBytes == charged)
        #expect(h.ledger.usedBytes == charged + h.store.state.pointee.tableCharge)
        batch.start(ledger: h.ledger)
        h.set(key(1), [1])  // the shard takes writes while the batch is freed
        try await Self.waitUntilFreed(batch)
        #expect(batch.isFinished)
        #expect(batch.freedEntries == 20_000)
        #expect(h.store.expireSweep(nowMs: 0, maxSlots: 16) == 0)  // a tick collects
        #expect(h.ledger.lazyFreePendingEntries == 0)
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
        #expect(h.get(key(1))?.value == [1])
    }

    @Test func removeAllDeferredMidResize() async throws {
        let (h, _) = ResizeInProgressTests.growing(keys: 6000)
        #expect(h.store.isResizing)
        let batch = LazyFreeBatch()
        h.store.removeAll(deferringTo: batch)
        #expect(!h.store.isResizing)
        #expect(h.problems.isEmpty)
        batch.start(ledger: h.ledger)
        try await Self.waitUntilFreed(batch)
        h.ledger.collectLazyFree()
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
    }

    /// A reactor frees a dropped copy a slice at a time between requests
    /// (Reactor+Routing.swift): each step frees at most what it was given,
    /// the ledger charges the rest until it is freed, and the last step
    /// frees the tables too, also the old table of a resize.
    @Test func aBatchFreedInStepsFreesAtMostAStepAtATime() {
        for resizing in [false, true] {
            let h = resizing ? ResizeInProgressTests.growing(keys: 6000).0 : Harness()
            if !resizing { for i in 0..<6000 { h.set(key(i), bytes(i % 100, seed: i)) } }
            #expect(h.store.isResizing == resizing)
            let entries = h.store.count
            let batch = LazyFreeBatch()
            h.store.removeAll(deferringTo: batch)
            #expect(batch.beginFreeingInSteps(ledger: h.ledger), "above inlineEntriesMax: freed by the caller's steps")
            #expect(h.ledger.lazyFreePendingEntries == entries)
            var steps = 0
            var done = false
            while !done {
                let before = batch.freedEntries
                done = batch.freeSome(entriesMax: 256)
                steps += 1
                #expect(batch.freedEntries - before <= 256)
                h.ledger.collectLazyFree()
                #expect(h.ledger.usedBytes == h.store.chargedBytes + batch.chargedBytes - batch.freedBytes)
                h.set(key(steps), [1])  // the shard takes writes between the steps
            }
            #expect(steps >= entries / 256, "resizing \(resizing): \(steps) steps for \(entries) entries")
            #expect(batch.isFinished)
            #expect(batch.freedEntries == entries)
            #expect(h.ledger.lazyFreePendingEntries == 0)
            #expect(h.ledger.usedBytes == h.store.chargedBytes)
            #expect(h.problems.isEmpty)
        }
    }

    @Test func aSmallBatchIsFreedInline() {
        let h = Harness()
        for i in 0..<100 { h.set(key(i), [1]) }
        let batch = LazyFreeBatch()
        h.store.removeAll(deferringTo: batch)
        batch.start(ledger: h.ledger)
        #expect(batch.isFinished)
        #expect(h.ledger.lazyFreePendingEntries == 0)
        #expect(h.ledger.usedBytes == h.store.chargedBytes)
    }
}
