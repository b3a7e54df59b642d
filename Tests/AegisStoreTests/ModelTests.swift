import PropertyBased
import Testing
@testable import AegisStore

/// One step of the model-based test.
enum Op: Sendable, CustomStringConvertible {
    case set(key: Int, valueCount: Int, ttl: Int)  // ttl 0 = no expiry
    case get(key: Int)
    case delete(key: Int)
    case expire(key: Int, ttl: Int)  // ttl 0 = persist
    case sweep(maxSlots: Int)
    case advance(ms: Int)
    case fill(from: Int, count: Int)  // many sets: forces growth
    case drain(from: Int, count: Int)  // many deletes: forces shrink
    case term(UInt32)

    static func make(_ kind: Int, _ k: Int, _ n: Int, _ t: Int) -> Op {
        switch kind {
        case 0..<34: return .set(key: k, valueCount: n > 180 ? 600 + n : n, ttl: t < 60 ? 0 : t - 59)
        case 34..<56: return .get(key: k)
        case 56..<68: return .delete(key: k)
        case 68..<76: return .expire(key: k, ttl: t < 20 ? 0 : t - 19)
        case 76..<82: return .sweep(maxSlots: n % 40 + 1)
        case 82..<92: return .advance(ms: t / 2)
        case 92..<95: return .fill(from: k, count: n * 2)
        case 95..<98: return .drain(from: k / 2, count: n * 3)
        default: return .term(UInt32(t % 5 + 1))
        }
    }

    var description: String {
        switch self {
        case let .set(k, n, t): "set(\(k), \(n)b, ttl \(t))"
        case let .get(k): "get(\(k))"
        case let .delete(k): "del(\(k))"
        case let .expire(k, t): "expire(\(k), \(t))"
        case let .sweep(m): "sweep(\(m))"
        case let .advance(ms): "advance(\(ms))"
        case let .fill(f, c): "fill(\(f), \(c))"
        case let .drain(f, c): "drain(\(f), \(c))"
        case let .term(t): "term(\(t))"
        }
    }
}

/// The reference: a dictionary with the same expiry and versioning rules.
struct Model {
    var entries: [[UInt8]: Snapshot] = [:]
    var seq: UInt64 = 0
    var term: UInt32 = 1
    /// The version of the last write: a DEL has one too (issue 14).
    var lastVersion = EntryVersion.zero

    mutating func nextVersion() -> EntryVersion {
        seq += 1
        lastVersion = EntryVersion(term: term, seq: seq)
        return lastVersion
    }

    func expired(_ s: Snapshot, _ now: Int64) -> Bool { s.expiryMs != 0 && s.expiryMs <= now }

    mutating func get(_ k: [UInt8], _ now: Int64) -> Snapshot? {
        guard let s = entries[k] else { return nil }
        if expired(s, now) { entries[k] = nil; return nil }
        return s
    }

    mutating func set(_ k: [UInt8], _ v: [UInt8], _ expiry: Int64) -> EntryVersion {
        let version = nextVersion()
        entries[k] = Snapshot(value: v, expiryMs: expiry, version: version)
        return version
    }

    mutating func delete(_ k: [UInt8], _ now: Int64) -> Bool {
        guard let s = entries.removeValue(forKey: k) else { return false }
        if expired(s, now) { return false }
        _ = nextVersion()
        return true
    }

    mutating func setExpiry(_ k: [UInt8], _ expiry: Int64, _ now: Int64) -> Bool {
        guard var s = entries[k] else { return false }
        if expired(s, now) { entries[k] = nil; return false }
        s.expiryMs = expiry
        s.version = nextVersion()
        entries[k] = s
        return true
    }
}

@Suite struct ModelTests {
    static let ops = zip(Gen.int(in: 0...99), Gen.int(in: 0...299), Gen.int(in: 0...200), Gen.int(in: 0...140))
        .map { Op.make($0.0, $0.1, $0.2, $0.3) }
        .array(of: 1...250)

    /// Random operation sequences against a Dictionary model with unlimited memory:
    /// every result matches, and all invariants hold after every step.
    @Test func matchesDictionaryModel() async {
        await propertyCheck(count: 100, input: Self.ops) { ops in
            Self.run(ops)
        }
    }

    /// A long fixed-seed run that certainly grows and shrinks the table several times.
    @Test func longRunGrowsAndShrinks() {
        var rng = SplitMix(seed: 42)
        var ops: [Op] = []
        for _ in 0..<3000 {
            ops.append(Op.make(Int(rng.next() % 100), Int(rng.next() % 300), Int(rng.next() % 201), Int(rng.next() % 141)))
        }
        let capacities = Self.run(ops)
        #expect(capacities.count >= 4)
    }

    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Runs `ops` on a store and the model; returns the table capacities seen.
    @discardableResult
    static func run(_ ops: [Op]) -> Set<Int> {
        let h = Harness()
        var model = Model()
        var now: Int64 = 1_000
        var capacities: Set<Int> = [h.store.tableCapacity]
        for (step, op) in ops.enumerated() {
            let ctx = Comment(rawValue: "step \(step): \(op)")
            switch op {
            case let .set(k, n, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                let value = bytes(n, seed: k &+ Int(model.seq))
                let expected = model.set(key(k), value, expiry)
                #expect(h.set(key(k), value, expiry: expiry, now: now) == expected, ctx)
            case let .get(k):
                #expect(h.get(key(k), now: now) == model.get(key(k), now), ctx)
            case let .delete(k):
                #expect(h.delete(key(k), now: now) == model.delete(key(k), now), ctx)
            case let .expire(k, ttl):
                let expiry: Int64 = ttl == 0 ? 0 : now + Int64(ttl)
                #expect(h.setExpiry(key(k), expiry, now: now) == model.setExpiry(key(k), expiry, now), ctx)
            case let .sweep(maxSlots):
                let removed = h.store.expireSweep(nowMs: now, maxSlots: maxSlots)
                #expect(removed <= maxSlots, ctx)
                // Whatever the sweep removed must have been expired.
                var gone = 0
                for (k, s) in model.entries where h.peek(k) == nil {
                    #expect(model.expired(s, now), "\(ctx): sweep removed a live key")
                    model.entries[k] = nil
                    gone += 1
                }
                #expect(gone == removed, ctx)
            case let .advance(ms):
                now += Int64(ms)
            case let .fill(from, count):
                for k in from..<(from + count) {
                    let value = bytes(k % 40, seed: k)
                    let expected = model.set(key(k), value, 0)
                    #expect(h.set(key(k), value, now: now) == expected, ctx)
                }
            case let .drain(from, count):
                for k in from..<(from + count) {
                    #expect(h.delete(key(k), now: now) == model.delete(key(k), now), ctx)
                }
            case let .term(t):
                h.store.term = t
                model.term = t
            }
            capacities.insert(h.store.tableCapacity)
            let problems = h.problems
            #expect(problems.isEmpty, "\(ctx): \(problems.prefix(5))")
            #expect(h.store.count == model.entries.count, ctx)
            #expect(h.store.lastWriteVersion == model.lastVersion, ctx)
            #expect(h.ledger.usedBytes == h.store.chargedBytes, ctx)
            if !problems.isEmpty { return capacities }
            if step % 16 == 0 || step == ops.count - 1 {
                for (k, s) in model.entries {
                    #expect(h.peek(k) == s, "\(ctx): key \(String(decoding: k, as: UTF8.self))")
                }
            }
        }
        // Scan sees exactly the live model keys.
        let (keys, _) = h.scanAll(perCall: 13, now: now)
        let live = Set(model.entries.filter { !model.expired($0.value, now) }.keys)
        #expect(Set(keys) == live)
        return capacities
    }
}
