import Testing
@testable import AegisStore

/// The store-level argument of shard streams (issue 12 item 2, docs/replication.md
/// "Shard streams"): a follower that replaces its shard at the walk's start
/// version S, applies the walk's entries at or below S, then the primary's
/// writes after S in order, holds what the primary holds, whatever the
/// writes did during the walk (overwrites, deletes, a FLUSHALL, table growth
/// and shrinking) and whatever the follower held before.
@Suite struct ShardStreamModelTests {
    static func v(_ seq: UInt64, term: UInt32 = 1) -> EntryVersion { EntryVersion(term: term, seq: seq) }

    static func replicated() -> Harness {
        let h = Harness()
        h.store.keepTombstones(limits: TombstoneLimits(countMax: 1 << 20, ageMsMax: 1 << 40))
        return h
    }

    @discardableResult
    static func apply(_ h: Harness, _ k: [UInt8], _ value: [UInt8], _ v: EntryVersion) -> Bool {
        k.withUnsafeBytes { kb in
            value.withUnsafeBytes { vb in
                h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .set(value: vb, expiryMs: 0), version: v, nowMs: 0)
            }
        }
    }

    @Test func aStreamStartReplacesEntriesTombstonesAndAHigherFloor() {
        let follower = Self.replicated()
        for seq in UInt64(1)...5 { Self.apply(follower, key(Int(seq)), [1], Self.v(seq)) }
        // A history the stream replaces: a delete and a flush above the stream's start.
        key(6).withUnsafeBytes { _ = follower.store.applyIfNewer($0, hash: KeyHash.hash($0), .delete, version: Self.v(40), nowMs: 0) }
        #expect(follower.store.tombstoneCount == 1)
        #expect(follower.store.applyFlushIfNewer(version: Self.v(50)))
        Self.apply(follower, key(8), [8], Self.v(51))
        follower.store.replaceForStream()
        #expect(follower.store.count == 0 && follower.store.tombstoneCount == 0)
        // The walk's entries at or below the start apply, once, below the replaced floor and tombstone.
        #expect(Self.apply(follower, key(6), [6], Self.v(8)))
        #expect(!Self.apply(follower, key(6), [6], Self.v(8)))
        #expect(Self.apply(follower, key(5), [5], Self.v(3)))
        follower.store.completeStream(streamStart: Self.v(12))
        #expect(follower.store.lastWriteVersion == Self.v(12))
        #expect(follower.get(key(1)) == nil, "a key the stream did not bring is gone")
        // An absent key's write at or below the start is refused: it was absent on the primary then.
        #expect(!Self.apply(follower, key(7), [7], Self.v(10)))
        // The tail after the start applies, a FLUSHALL included.
        #expect(Self.apply(follower, key(7), [7], Self.v(13)))
        #expect(follower.store.applyFlushIfNewer(version: Self.v(14)))
        #expect(follower.store.count == 0)
        #expect(follower.problems.isEmpty)
    }

    /// A copy dropped because the node no longer replicates the shard
    /// keeps no floor: taken on again, the holder's records from the
    /// shard's first write apply (they did not when the drop was made as a
    /// FLUSHALL ASYNC, whose version is above them all, and the node
    /// acknowledged them as applied while it held nothing).
    @Test func aDroppedCopyTakesTheSameRecordsAgain() {
        let follower = Self.replicated()
        for seq in UInt64(1)...5 { Self.apply(follower, key(Int(seq)), [1], Self.v(seq)) }
        key(6).withUnsafeBytes { _ = follower.store.applyIfNewer($0, hash: KeyHash.hash($0), .delete, version: Self.v(6), nowMs: 0) }
        let batch = LazyFreeBatch()
        follower.store.dropCopy(deferringTo: batch)
        #expect(follower.store.count == 0 && follower.store.tombstoneCount == 0)
        #expect(follower.store.lastWriteVersion == .zero)
        for seq in UInt64(1)...5 { #expect(Self.apply(follower, key(Int(seq)), [2], Self.v(seq)), "record \(seq) applies again") }
        #expect(Self.apply(follower, key(6), [6], Self.v(7)))
        #expect(follower.store.count == 6)
        #expect(follower.store.lastWriteVersion == Self.v(7))
        // The old copy's memory is charged until the batch frees it (inline: a small one).
        #expect(follower.ledger.usedBytes > follower.store.chargedBytes)
        #expect(!batch.beginFreeingInSteps(ledger: follower.ledger))
        #expect(follower.ledger.usedBytes == follower.store.chargedBytes)
        #expect(follower.problems.isEmpty)
    }

    enum Write {
        case set([UInt8], [UInt8], EntryVersion)
        case delete([UInt8], EntryVersion)
        case flush(EntryVersion)
    }

    /// A small deterministic generator: the seed is in every failure message.
    struct Random {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    static func write(_ h: Harness, _ random: inout Random, keys: Int, flushes: Bool) -> Write? {
        let k = key(random.next(keys))
        switch random.next(100) {
        case 0..<60:
            let value = [UInt8(random.next(256)), UInt8(random.next(256))]
            return .set(k, value, h.set(k, value))
        case 60..<97:
            return h.delete(k) ? .delete(k, h.store.lastWriteVersion) : nil
        default:
            guard flushes else { return nil }
            h.store.removeAll()
            return .flush(h.store.lastWriteVersion)
        }
    }

    static func replay(_ write: Write, on h: Harness) {
        switch write {
        case .set(let k, let value, let v): apply(h, k, value, v)
        case .delete(let k, let v): _ = k.withUnsafeBytes { h.store.applyIfNewer($0, hash: KeyHash.hash($0), .delete, version: v, nowMs: 0) }
        case .flush(let v): h.store.applyFlushIfNewer(version: v)
        }
    }

    @Test(arguments: 1...60)
    func walkThenTailEqualsThePrimaryWhateverHappenedDuringTheWalk(seed: Int) {
        var random = Random(state: UInt64(seed))
        let keys = 40 + random.next(400)
        let primary = Self.replicated()
        for _ in 0..<(keys * 2) { _ = Self.write(primary, &random, keys: keys, flushes: false) }
        let follower = Self.replicated()
        // What the follower held before: stale and extra keys, a tombstone.
        for i in 0..<(keys / 2) { Self.apply(follower, key(i + keys / 3), [9], Self.v(UInt64(i + 1))) }
        key(0).withUnsafeBytes { _ = follower.store.applyIfNewer($0, hash: KeyHash.hash($0), .delete, version: Self.v(UInt64(keys * 9)), nowMs: 0) }

        let start = primary.store.lastWriteVersion
        var slices: [(key: [UInt8], value: [UInt8], version: EntryVersion)] = []
        var tail: [Write] = []
        var cursor: UInt64 = 0
        var steps = 0
        repeat {
            cursor = primary.store.scan(cursor: cursor, count: 1 + random.next(8), nowMs: 0) { entry in
                if entry.version <= start { slices.append((Array(entry.key), Array(entry.value), entry.version)) }
            }
            for _ in 0..<random.next(6) {
                if let write = Self.write(primary, &random, keys: keys * 2, flushes: seed % 3 == 0) { tail.append(write) }
            }
            steps += 1
        } while cursor != 0 && steps < 100_000

        follower.store.replaceForStream()
        for entry in slices { Self.apply(follower, entry.key, entry.value, entry.version) }
        follower.store.completeStream(streamStart: start)
        for write in tail { Self.replay(write, on: follower) }
        for i in 0..<(keys * 2) {
            #expect(follower.get(key(i))?.value == primary.get(key(i))?.value, "seed \(seed), key \(i)")
            #expect(follower.get(key(i))?.version == primary.get(key(i))?.version, "seed \(seed), key \(i)")
        }
        #expect(follower.store.count == primary.store.count, "seed \(seed)")
        #expect(follower.problems.isEmpty, "seed \(seed)")
    }
}
