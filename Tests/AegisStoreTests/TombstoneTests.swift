import PropertyBased
import Testing
@testable import AegisStore

/// Tombstones of a replicated shard (issue 12, item 1): a delete leaves its
/// version so that an older replicated write never brings the key back.
@Suite struct TombstoneTests {
    static let roomy = TombstoneLimits(countMax: 1 << 20, ageMsMax: 1 << 40)

    static func replicated(_ limits: TombstoneLimits = roomy) -> Harness {
        let h = Harness()
        h.store.keepTombstones(limits: limits)
        return h
    }

    @discardableResult
    static func replicatedSet(_ h: Harness, _ k: [UInt8], _ value: [UInt8], _ v: EntryVersion,
                              expiry: Int64 = 0, now: Int64 = 0) -> Bool {
        k.withUnsafeBytes { kb in
            value.withUnsafeBytes { vb in
                h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .set(value: vb, expiryMs: expiry), version: v, nowMs: now)
            }
        }
    }

    @discardableResult
    static func replicatedDelete(_ h: Harness, _ k: [UInt8], _ v: EntryVersion, now: Int64 = 0) -> Bool {
        k.withUnsafeBytes { kb in h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .delete, version: v, nowMs: now) }
    }

    static func v(_ seq: UInt64, term: UInt32 = 1) -> EntryVersion { EntryVersion(term: term, seq: seq) }

    @Test func anOlderSetArrivingAfterTheDeleteDoesNotResurrectTheKey() {
        let h = Self.replicated()
        #expect(Self.replicatedSet(h, key(1), [1], Self.v(5)))
        #expect(Self.replicatedDelete(h, key(1), Self.v(7)))
        #expect(!Self.replicatedSet(h, key(1), [2], Self.v(6)))
        #expect(!Self.replicatedSet(h, key(1), [3], Self.v(7)))
        #expect(h.get(key(1)) == nil)
        // A write newer than the delete is a new life for the key.
        #expect(Self.replicatedSet(h, key(1), [4], Self.v(8)))
        #expect(h.get(key(1))?.value == [4])
        #expect(h.problems.isEmpty)
    }

    /// What a read at read_quorum >= 2 compares replicas by: the version a
    /// replicated write would have to beat, for a live key, a deleted one and
    /// one never seen.
    @Test func knownVersionIsWhatAReplicatedWriteMustBeat() {
        let h = Self.replicated()
        func known(_ k: [UInt8]) -> EntryVersion { k.withUnsafeBytes { h.store.knownVersion($0, hash: KeyHash.hash($0), nowMs: 0) } }
        #expect(known(key(1)) == .zero, "never seen")
        Self.replicatedSet(h, key(1), [1], Self.v(5))
        #expect(known(key(1)) == Self.v(5))
        Self.replicatedDelete(h, key(1), Self.v(7))
        #expect(known(key(1)) == Self.v(7), "the tombstone's version")
        #expect(!Self.replicatedSet(h, key(1), [2], known(key(1))), "a write at the known version is refused")
        Self.replicatedDelete(h, key(2), Self.v(9))
        #expect(known(key(2)) == Self.v(9), "a delete of a key never held")
        #expect(h.problems.isEmpty)
    }

    @Test func aDeleteThatArrivesFirstStillStopsTheOlderSet() {
        let h = Self.replicated()
        #expect(!Self.replicatedDelete(h, key(1), Self.v(9)))
        #expect(h.store.tombstoneCount == 1)
        #expect(!Self.replicatedSet(h, key(1), [1], Self.v(8)))
        #expect(h.get(key(1)) == nil)
        #expect(h.store.term == 1 && h.store.lastWriteVersion < Self.v(9))
        #expect(h.problems.isEmpty)
    }

    @Test func localDeletesAndExpiryLeaveTombstones() {
        let h = Self.replicated()
        let written = h.set(key(1), [1])
        #expect(h.delete(key(1)))
        #expect(!Self.replicatedSet(h, key(1), [9], written))
        // Expired and removed on read: its version stays behind.
        let expiring = h.set(key(2), [2], expiry: 100, now: 0)
        #expect(h.get(key(2), now: 100) == nil)
        #expect(!Self.replicatedSet(h, key(2), [9], expiring, now: 100))
        // Expired and removed by the sweep.
        let swept = h.set(key(3), [3], expiry: 100, now: 0)
        #expect(h.store.expireSweep(nowMs: 200, maxSlots: 1_000) == 1)
        #expect(!Self.replicatedSet(h, key(3), [9], swept, now: 200))
        #expect(h.store.tombstoneCount == 3)
        #expect(h.problems.isEmpty)
    }

    @Test func tombstonesAreInvisibleToReadsScansAndCounts() {
        let h = Self.replicated()
        for i in 0..<10 { h.set(key(i), [UInt8(i)]) }
        for i in 0..<5 { #expect(h.delete(key(i))) }
        #expect(h.store.count == 5)
        #expect(h.store.tombstoneCount == 5)
        let scanned = Set(h.scanAll(perCall: 3).keys)
        #expect(scanned == Set((5..<10).map(key)))
        for i in 0..<5 { #expect(h.get(key(i)) == nil) }
    }

    @Test func tombstonesAreChargedToTheLedgerAndGiveItBack() {
        let h = Self.replicated()
        for i in 0..<100 { h.set(key(i), [1]) }
        for i in 0..<100 { h.delete(key(i)) }
        let stats = h.store.stats
        #expect(stats.tombstones == 100)
        #expect(stats.tombstoneBytes > 100 * (Tombstones.headerBytes + key(0).count))
        #expect(h.store.chargedBytes == stats.totalBytes)
        #expect(h.ledger.usedBytes == h.store.chargedBytes, "the shard's ledger holds its charges, tombstones included")
        #expect(h.problems.isEmpty)
        let before = h.ledger.usedBytes
        h.store.dropTombstones(acknowledgedThrough: h.store.lastWriteVersion)
        #expect(h.store.tombstoneCount == 0)
        #expect(h.store.stats.tombstoneBytes == 0)
        #expect(h.ledger.usedBytes == before - stats.tombstoneBytes, "every tombstone byte went back to the ledger")
        #expect(h.store.chargedBytes == h.store.stats.totalBytes)
        #expect(h.problems.isEmpty)
    }

    @Test func acknowledgedTombstonesGoAndTheRestStay() {
        let h = Self.replicated()
        for seq in UInt64(1)...10 { Self.replicatedDelete(h, key(Int(seq)), Self.v(seq)) }
        h.store.dropTombstones(acknowledgedThrough: Self.v(6))
        #expect(h.store.tombstoneCount == 4)
        #expect(h.store.tombstonesForgotten == 0)
        // Still remembered: the older SET is refused.
        #expect(!Self.replicatedSet(h, key(8), [1], Self.v(7)))
        // Dropped after every replica had it: nothing refuses an absent key then.
        #expect(Self.replicatedSet(h, key(2), [1], Self.v(11)))
        #expect(h.problems.isEmpty)
    }

    /// A tombstone dropped once every replica acknowledged it leaves no
    /// absent floor (a replicated write is not refused for it), but a read
    /// at read_quorum >= 2 must not take a replica's older state of the key
    /// for newer than its absence here: a replica that was out of the
    /// routing when the delete was acknowledged still holds the key.
    /// `knownVersion`, what such a read compared by before, says `.zero`.
    @Test func aTombstoneDroppedOnAcknowledgementStillOutranksOlderStatesInAQuorumRead() {
        let h = Self.replicated()
        func known(_ k: [UInt8]) -> EntryVersion { k.withUnsafeBytes { h.store.knownVersion($0, hash: KeyHash.hash($0), nowMs: 0) } }
        func forRead(_ k: [UInt8]) -> EntryVersion {
            k.withUnsafeBytes { h.store.readQuorumVersion($0, hash: KeyHash.hash($0), nowMs: 0) }
        }
        Self.replicatedSet(h, key(1), [1], Self.v(5, term: 9))
        Self.replicatedDelete(h, key(1), Self.v(2, term: 10))
        Self.replicatedSet(h, key(3), [3], Self.v(3, term: 10))
        h.store.dropTombstones(acknowledgedThrough: Self.v(3, term: 10))
        #expect(h.store.tombstoneCount == 0)
        #expect(known(key(1)) == .zero, "no absent floor: the drop refuses no replicated write")
        #expect(forRead(key(1)) == Self.v(2, term: 10), "the forgotten delete outranks the replica's SET at 9.5")
        #expect(forRead(key(2)) == Self.v(2, term: 10), "so does it any absent key's older state")
        #expect(forRead(key(3)) == Self.v(3, term: 10), "a live key compares by its own version")
        #expect(Self.replicatedSet(h, key(1), [2], Self.v(6, term: 9)), "not a floor for replicated writes")
        #expect(forRead(key(1)) == Self.v(6, term: 9), "a key present again is its own version")
        // A stream replaces the copy and what it knew of deletes.
        h.store.replaceForStream()
        #expect(forRead(key(2)) == .zero)
        #expect(h.problems.isEmpty)
    }

    @Test func theCountBoundForgetsTheOldestAndRaisesTheFloor() {
        let h = Self.replicated(TombstoneLimits(countMax: 4, ageMsMax: 1 << 40))
        for seq in UInt64(1)...10 { Self.replicatedDelete(h, key(Int(seq)), Self.v(seq)) }
        #expect(h.store.tombstoneCount == 4)
        #expect(h.store.tombstonesForgotten == 6)
        // Forgotten, but its version is below the floor: still refused.
        #expect(!Self.replicatedSet(h, key(1), [1], Self.v(1)))
        // Any absent key's write at or below the floor is refused (the price of forgetting).
        #expect(!Self.replicatedSet(h, key(99), [1], Self.v(6)))
        #expect(Self.replicatedSet(h, key(99), [1], Self.v(11)))
        #expect(h.problems.isEmpty)
    }

    @Test func theAgeBoundForgetsOnTheSweep() {
        let h = Self.replicated(TombstoneLimits(countMax: 100, ageMsMax: 1_000))
        Self.replicatedDelete(h, key(1), Self.v(3), now: 0)
        Self.replicatedDelete(h, key(2), Self.v(4), now: 800)
        _ = h.store.expireSweep(nowMs: 1_500, maxSlots: 10)
        #expect(h.store.tombstoneCount == 1)
        #expect(h.store.tombstonesForgotten == 1)
        #expect(!Self.replicatedSet(h, key(1), [1], Self.v(2)))
        #expect(h.problems.isEmpty)
    }

    @Test func aKeyDeletedAgainKeepsOneTombstoneWithTheNewestVersion() {
        let h = Self.replicated()
        for round in 0..<5 {
            h.set(key(1), [UInt8(round)])
            #expect(h.delete(key(1)))
        }
        #expect(h.store.tombstoneCount == 1)
        let last = h.store.lastWriteVersion
        // Dropping through an older delete keeps the newest one.
        h.store.dropTombstones(acknowledgedThrough: EntryVersion(term: last.term, seq: last.seq - 1))
        #expect(h.store.tombstoneCount == 1)
        #expect(!Self.replicatedSet(h, key(1), [9], EntryVersion(term: last.term, seq: last.seq - 1)))
        h.store.dropTombstones(acknowledgedThrough: last)
        #expect(h.store.tombstoneCount == 0)
        #expect(h.problems.isEmpty)
    }

    @Test func aFlushIsAFloorForEveryAbsentKey() {
        let h = Self.replicated()
        for seq in UInt64(1)...5 { Self.replicatedSet(h, key(Int(seq)), [1], Self.v(seq)) }
        Self.replicatedDelete(h, key(1), Self.v(6))
        #expect(h.store.applyFlushIfNewer(version: Self.v(10)))
        #expect(h.store.count == 0 && h.store.tombstoneCount == 0)
        #expect(!h.store.applyFlushIfNewer(version: Self.v(9)))
        for seq in UInt64(1)...10 { #expect(!Self.replicatedSet(h, key(Int(seq)), [1], Self.v(UInt64(seq)))) }
        #expect(Self.replicatedSet(h, key(1), [1], Self.v(11)))
        // A local FLUSHALL on a replicated shard is a floor too.
        h.store.removeAll()
        #expect(!Self.replicatedSet(h, key(2), [1], Self.v(11)))
        #expect(h.problems.isEmpty)
    }

    /// A flush that arrives after a newer write (a read repair, a stream or
    /// another holder's record came first) removes what is older than it
    /// and keeps the rest; before, it changed nothing, and the keys it
    /// should have removed stayed. A tombstone newer than the flush stays
    /// too, or the SET it deleted could come back above the floor.
    @Test func aFlushAfterANewerWriteRemovesWhatIsOlderAndKeepsTheRest() {
        let h = Self.replicated()
        for seq in UInt64(1)...200 { Self.replicatedSet(h, key(Int(seq)), [1], Self.v(seq)) }
        Self.replicatedSet(h, key(500), [2], Self.v(300))
        Self.replicatedDelete(h, key(501), Self.v(301))
        #expect(h.store.count == 201 && h.store.tombstoneCount == 1)
        #expect(h.store.applyFlushIfNewer(version: Self.v(250)))
        #expect(h.store.count == 1 && h.get(key(500)) != nil)
        #expect(h.store.lastWriteVersion == Self.v(300))
        #expect(h.store.tombstoneCount == 1)
        #expect(!Self.replicatedSet(h, key(501), [3], Self.v(260)), "older than its delete")
        #expect(!Self.replicatedSet(h, key(7), [3], Self.v(250)), "at or below the flush")
        #expect(Self.replicatedSet(h, key(7), [3], Self.v(251)))
        #expect(!h.store.applyFlushIfNewer(version: Self.v(240)), "nothing at or below it is left")
        #expect(h.problems.isEmpty)
    }

    /// A delete of an absent key leaves the shard's last write where it was,
    /// so a flush between the two is newer than the last write and empties
    /// the shard; the delete's tombstone, newer than the flush, stays (it
    /// went with the flush before, and the SET it deleted came back).
    @Test func aFlushNewerThanEveryEntryKeepsANewerTombstone() {
        let h = Self.replicated()
        Self.replicatedSet(h, key(1), [1], Self.v(5))
        Self.replicatedDelete(h, key(2), Self.v(15))
        #expect(h.store.lastWriteVersion == Self.v(5) && h.store.tombstoneCount == 1)
        #expect(h.store.applyFlushIfNewer(version: Self.v(10)))
        #expect(h.store.count == 0 && h.store.tombstoneCount == 1)
        #expect(!Self.replicatedSet(h, key(2), [2], Self.v(12)), "the SET the delete at 15 deleted stays deleted")
        #expect(h.problems.isEmpty)
    }

    @Test func withoutReplicationNothingIsRemembered() {
        let h = Harness()
        h.set(key(1), [1])
        let written = h.store.lastWriteVersion
        #expect(h.delete(key(1)))
        #expect(h.store.tombstoneCount == 0)
        #expect(h.store.stats.tombstoneBytes == 0)
        // The unreplicated rule is unchanged: an absent key takes any write.
        #expect(Self.replicatedSet(h, key(1), [2], written))
    }

    @Test func destroyingAShardWithTombstonesGivesBackEveryByte() {
        let ledger = MemoryLedger(limitBytes: 0, evictionRatio: 1)
        do {
            let store = ShardStore(ledger: ledger)
            store.keepTombstones(limits: Self.roomy)
            for i in 0..<50 {
                key(i).withUnsafeBytes { kb in
                    _ = store.applyIfNewer(kb, hash: KeyHash.hash(kb), .delete, version: Self.v(UInt64(i + 1)), nowMs: 0)
                }
            }
            #expect(store.tombstoneCount == 50)
        }
        #expect(ledger.usedBytes == 0)
    }

    // MARK: - Against a model

    enum Step: Sendable, CustomStringConvertible {
        case localSet(key: Int, ttl: Int)
        case localDelete(key: Int)
        case localFlush
        case replicatedSet(key: Int, seq: UInt64, ttl: Int)
        case replicatedDelete(key: Int, seq: UInt64)
        case replicatedFlush(seq: UInt64)
        case get(key: Int)
        case advance(ms: Int)

        static func make(_ kind: Int, _ k: Int, _ s: Int) -> Step {
            let seq = UInt64(s)
            switch kind {
            case 0..<20: return .localSet(key: k, ttl: s % 3 == 0 ? s % 50 + 1 : 0)
            case 20..<30: return .localDelete(key: k)
            case 30..<31: return .localFlush
            case 31..<60: return .replicatedSet(key: k, seq: seq, ttl: s % 4 == 0 ? s % 50 + 1 : 0)
            case 60..<75: return .replicatedDelete(key: k, seq: seq)
            case 75..<77: return .replicatedFlush(seq: seq)
            case 77..<92: return .get(key: k)
            default: return .advance(ms: s % 40)
            }
        }

        var description: String {
            switch self {
            case let .localSet(k, ttl): "set(\(k), ttl \(ttl))"
            case let .localDelete(k): "del(\(k))"
            case .localFlush: "flushall"
            case let .replicatedSet(k, s, ttl): "rset(\(k), \(s), ttl \(ttl))"
            case let .replicatedDelete(k, s): "rdel(\(k), \(s))"
            case let .replicatedFlush(s): "rflush(\(s))"
            case let .get(k): "get(\(k))"
            case let .advance(ms): "advance(\(ms))"
            }
        }
    }

    /// The reference: a key's barrier is its entry's version (expired or
    /// not), else the newest of its tombstone and the floor.
    struct TombstoneModel {
        var model = Model()
        var tombstones: [[UInt8]: EntryVersion] = [:]
        var floor = EntryVersion.zero

        func barrier(_ k: [UInt8]) -> EntryVersion {
            if let s = model.entries[k] { return s.version }
            return max(tombstones[k] ?? .zero, floor)
        }

        mutating func remember(_ k: [UInt8], _ v: EntryVersion) {
            if v > floor && v > (tombstones[k] ?? .zero) { tombstones[k] = v }
        }

        mutating func rememberIfExpired(_ k: [UInt8], _ now: Int64) {
            if let s = model.entries[k], model.expired(s, now) { remember(k, s.version) }
        }

        mutating func adoptClock(_ v: EntryVersion) {
            model.term = max(model.term, v.term)
            model.seq = max(model.seq, v.seq)
        }

        mutating func get(_ k: [UInt8], _ now: Int64) -> Snapshot? {
            rememberIfExpired(k, now)
            return model.get(k, now)
        }

        mutating func delete(_ k: [UInt8], _ now: Int64) -> Bool {
            rememberIfExpired(k, now)
            let deleted = model.delete(k, now)
            if deleted { remember(k, model.lastVersion) }
            return deleted
        }

        mutating func flush() {
            _ = model.nextVersion()
            model.entries = [:]
            tombstones = [:]
            floor = max(floor, model.lastVersion)
        }

        mutating func applySet(_ k: [UInt8], _ value: [UInt8], _ expiry: Int64, _ v: EntryVersion) -> Bool {
            adoptClock(v)
            if barrier(k) >= v { return false }
            model.entries[k] = Snapshot(value: value, expiryMs: expiry, version: v)
            model.lastVersion = max(model.lastVersion, v)
            return true
        }

        mutating func applyDelete(_ k: [UInt8], _ v: EntryVersion, _ now: Int64) -> Bool {
            adoptClock(v)
            if barrier(k) >= v { return false }
            if let s = model.entries[k], !model.expired(s, now) {
                model.entries[k] = nil
                model.lastVersion = max(model.lastVersion, v)
                remember(k, v)
                return true
            }
            rememberIfExpired(k, now)
            model.entries[k] = nil
            remember(k, v)
            return false
        }

        /// Every entry and tombstone at or below the flush goes, newer ones
        /// stay (applied before the flush though made after it).
        mutating func applyFlush(_ v: EntryVersion) -> Bool {
            let newerThanEverything = model.lastVersion < v
            let entriesBefore = model.entries.count
            adoptClock(v)
            model.entries = model.entries.filter { $0.value.version > v }
            model.lastVersion = max(model.lastVersion, v)
            tombstones = tombstones.filter { $0.value > v }
            floor = max(floor, v)
            return newerThanEverything || model.entries.count < entriesBefore
        }
    }

    static let steps = zip(Gen.int(in: 0...99), Gen.int(in: 0...15), Gen.int(in: 0...60))
        .map { Step.make($0.0, $0.1, $0.2) }
        .array(of: 1...200)

    @Test func applyIfNewerWithTombstonesMatchesTheModel() async {
        await propertyCheck(count: 200, input: Self.steps) { steps in
            Self.run(steps)
        }
    }

    static func run(_ steps: [Step]) {
        let h = Self.replicated()
        var replica = TombstoneModel()
        var now: Int64 = 1_000
        for (index, step) in steps.enumerated() {
            let ctx = Comment(rawValue: "step \(index): \(step)")
            switch step {
            case let .localSet(k, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                let value = bytes(k % 9, seed: index)
                #expect(h.set(key(k), value, expiry: expiry, now: now) == replica.model.set(key(k), value, expiry), ctx)
            case let .localDelete(k):
                #expect(h.delete(key(k), now: now) == replica.delete(key(k), now), ctx)
            case .localFlush:
                h.store.removeAll()
                replica.flush()
            case let .replicatedSet(k, s, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                let value = bytes(k % 11 + 1, seed: index)
                let applied = Self.replicatedSet(h, key(k), value, Self.v(s), expiry: expiry, now: now)
                #expect(applied == replica.applySet(key(k), value, expiry, Self.v(s)), ctx)
            case let .replicatedDelete(k, s):
                #expect(Self.replicatedDelete(h, key(k), Self.v(s), now: now) == replica.applyDelete(key(k), Self.v(s), now), ctx)
            case let .replicatedFlush(s):
                #expect(h.store.applyFlushIfNewer(version: Self.v(s)) == replica.applyFlush(Self.v(s)), ctx)
            case let .get(k):
                #expect(h.get(key(k), now: now) == replica.get(key(k), now), ctx)
            case let .advance(ms):
                now += Int64(ms)
            }
            #expect(h.store.lastWriteVersion == replica.model.lastVersion, ctx)
            #expect(h.store.tombstoneCount == replica.tombstones.count, ctx)
            let problems = h.problems
            #expect(problems.isEmpty, "\(ctx): \(problems.prefix(3))")
            if !problems.isEmpty { return }
            for (k, s) in replica.model.entries {
                #expect(h.peek(k) == s, "\(ctx): key \(String(decoding: k, as: UTF8.self))")
            }
        }
    }
}
