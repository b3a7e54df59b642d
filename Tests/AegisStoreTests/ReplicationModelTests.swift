import PropertyBased
import Testing
@testable import AegisStore

/// `applyIfNewer` against a dictionary model: replicated writes with
/// versions drawn from a small range (so many are stale, equal or newer)
/// mixed with local writes, lazy expiry and term changes.
@Suite struct ReplicationModelTests {
    enum Step: Sendable, CustomStringConvertible {
        case localSet(key: Int, ttl: Int)
        case localDelete(key: Int)
        case replicatedSet(key: Int, term: UInt32, seq: UInt64, ttl: Int)
        case replicatedDelete(key: Int, term: UInt32, seq: UInt64)
        case get(key: Int)
        case advance(ms: Int)
        case term(UInt32)

        /// `seqShift` spreads replicated seqs over the top 16 bits too
        /// (each shift of 46 gives them 16 values there: 16 epochs per term).
        static func make(_ kind: Int, _ k: Int, _ t: Int, _ s: Int, seqShift: UInt64 = 0) -> Step {
            let term = UInt32(t % 4 + 1)
            let seq = UInt64(s) << seqShift
            switch kind {
            case 0..<20: return .localSet(key: k, ttl: s % 3 == 0 ? s % 50 + 1 : 0)
            case 20..<30: return .localDelete(key: k)
            case 30..<60: return .replicatedSet(key: k, term: term, seq: seq, ttl: s % 4 == 0 ? s % 50 + 1 : 0)
            case 60..<75: return .replicatedDelete(key: k, term: term, seq: seq)
            case 75..<90: return .get(key: k)
            case 90..<97: return .advance(ms: s % 40)
            default: return .term(term)
            }
        }

        var description: String {
            switch self {
            case let .localSet(k, ttl): "set(\(k), ttl \(ttl))"
            case let .localDelete(k): "del(\(k))"
            case let .replicatedSet(k, t, s, ttl): "rset(\(k), \(t).\(s), ttl \(ttl))"
            case let .replicatedDelete(k, t, s): "rdel(\(k), \(t).\(s))"
            case let .get(k): "get(\(k))"
            case let .advance(ms): "advance(\(ms))"
            case let .term(t): "term(\(t))"
            }
        }
    }

    /// The reference: newer means (term, seq) greater than the live entry's.
    struct ReplicaModel {
        var model = Model()

        func live(_ k: [UInt8], _ now: Int64) -> Snapshot? {
            guard let s = model.entries[k], !model.expired(s, now) else { return nil }
            return s
        }

        mutating func adoptClock(_ v: EntryVersion) {
            model.term = max(model.term, v.term)
            model.seq = max(model.seq, v.seq)
        }

        mutating func applySet(_ k: [UInt8], _ value: [UInt8], _ expiry: Int64, _ v: EntryVersion, _ now: Int64) -> Bool {
            adoptClock(v)
            if let current = live(k, now), current.version >= v { return false }
            model.entries[k] = Snapshot(value: value, expiryMs: expiry, version: v)
            model.lastVersion = max(model.lastVersion, v)
            return true
        }

        mutating func applyDelete(_ k: [UInt8], _ v: EntryVersion, _ now: Int64) -> Bool {
            adoptClock(v)
            guard let current = live(k, now), current.version < v else { return false }
            model.entries[k] = nil
            model.lastVersion = max(model.lastVersion, v)
            return true
        }
    }

    static let steps = zip(Gen.int(in: 0...99), Gen.int(in: 0...15), Gen.int(in: 0...7), Gen.int(in: 0...60))
        .map { Step.make($0.0, $0.1, $0.2, $0.3) }
        .array(of: 1...200)

    @Test func applyIfNewerMatchesTheDictionaryModel() async {
        await propertyCheck(count: 200, input: Self.steps) { steps in
            Self.run(steps)
        }
    }

    static let manyEpochSteps = zip(Gen.int(in: 0...99), Gen.int(in: 0...15), Gen.int(in: 0...7), Gen.int(in: 0...60))
        .map { Step.make($0.0, $0.1, $0.2, $0.3, seqShift: 46) }
        .array(of: 1...200)

    /// Up to 64 epochs (4 terms, 16 values of the seq's top bits) in a shard
    /// that tables 2 of them: versions spill out of their entries, come back
    /// when a slot frees, and every one still reads back whole and compares
    /// as the model says.
    @Test func versionsOfManyEpochsMatchTheModelWhenTheTableOverflows() async {
        await propertyCheck(count: 200, input: Self.manyEpochSteps) { steps in
            Self.run(steps, epochsMax: 2)
        }
    }

    /// Applying the same stream of SETs twice (a catch-up that overlaps
    /// what was already applied) changes nothing the second time. (A SET
    /// replayed after its key's DEL would be applied again: without
    /// tombstones an absent key has no version to compare; the stream's
    /// per-shard order is what rules that out, see ReplicatedWrite.)
    @Test func replayingAStreamOfSetsIsANoOp() {
        let h = Harness()
        let stream = (0..<50).map { i in (key(i % 7), EntryVersion(term: UInt32(1 + i / 20), seq: UInt64(i + 1))) }
        var afterFirst: [[UInt8]: Snapshot] = [:]
        for pass in 0..<2 {
            for (k, v) in stream {
                let applied = k.withUnsafeBytes { kb in
                    [UInt8(v.seq)].withUnsafeBytes { vb in
                        h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .set(value: vb, expiryMs: 0), version: v, nowMs: 0)
                    }
                }
                #expect(applied == (pass == 0), "\(v) in pass \(pass)")
            }
            if pass == 0 { for i in 0..<7 { afterFirst[key(i)] = h.peek(key(i)) } }
        }
        for i in 0..<7 { #expect(h.peek(key(i)) == afterFirst[key(i)]) }
        // Each key holds its newest write: the last of the stream for it.
        #expect(h.peek(key(0))?.version == EntryVersion(term: 3, seq: 50))
        #expect(h.problems.isEmpty)
    }

    static func run(_ steps: [Step], epochsMax: Int? = nil) {
        let h = Harness(epochsMax: epochsMax)
        var replica = ReplicaModel()
        var now: Int64 = 1_000
        for (index, step) in steps.enumerated() {
            let ctx = Comment(rawValue: "step \(index): \(step)")
            switch step {
            case let .localSet(k, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                let value = bytes(k % 9, seed: index)
                #expect(h.set(key(k), value, expiry: expiry, now: now) == replica.model.set(key(k), value, expiry), ctx)
            case let .localDelete(k):
                #expect(h.delete(key(k), now: now) == replica.model.delete(key(k), now), ctx)
            case let .replicatedSet(k, t, s, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                let value = bytes(k % 11 + 1, seed: index)
                let version = EntryVersion(term: t, seq: s)
                let applied = key(k).withUnsafeBytes { kb in
                    value.withUnsafeBytes { vb in
                        h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .set(value: vb, expiryMs: expiry), version: version, nowMs: now)
                    }
                }
                #expect(applied == replica.applySet(key(k), value, expiry, version, now), ctx)
            case let .replicatedDelete(k, t, s):
                let version = EntryVersion(term: t, seq: s)
                let applied = key(k).withUnsafeBytes { kb in
                    h.store.applyIfNewer(kb, hash: KeyHash.hash(kb), .delete, version: version, nowMs: now)
                }
                #expect(applied == replica.applyDelete(key(k), version, now), ctx)
            case let .get(k):
                #expect(h.get(key(k), now: now) == replica.model.get(key(k), now), ctx)
            case let .advance(ms):
                now += Int64(ms)
            case let .term(t):
                h.store.term = t
                replica.model.term = t
            }
            #expect(h.store.term == replica.model.term, ctx)
            #expect(h.store.lastWriteVersion == replica.model.lastVersion, ctx)
            let problems = h.problems
            #expect(problems.isEmpty, "\(ctx): \(problems.prefix(3))")
            if !problems.isEmpty { return }
            for (k, s) in replica.model.entries {
                #expect(h.peek(k) == s, "\(ctx): key \(String(decoding: k, as: UTF8.self))")
            }
        }
    }
}
