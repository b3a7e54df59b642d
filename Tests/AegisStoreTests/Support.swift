@testable import AegisStore

/// What a test observes of one entry.
struct Snapshot: Equatable, CustomStringConvertible {
    var value: [UInt8]
    var expiryMs: Int64
    var version: EntryVersion

    init(_ ref: EntryRef) {
        value = Array(ref.value)
        expiryMs = ref.expiryMs
        version = ref.version
    }

    init(value: [UInt8], expiryMs: Int64, version: EntryVersion) {
        self.value = value
        self.expiryMs = expiryMs
        self.version = version
    }

    var description: String { "(\(value.count) bytes, exp \(expiryMs), v\(version.term).\(version.seq))" }
}

/// One shard on its own ledger, driven with byte arrays.
final class Harness {
    let ledger: MemoryLedger
    let store: ShardStore

    /// `epochsMax`: the shard's bound of tabled version epochs (nil = the default).
    init(limit: Int = 0, ratio: Double = 1.0, epochsMax: Int? = nil) {
        let ledger = MemoryLedger(limitBytes: limit, evictionRatio: ratio)
        self.ledger = ledger
        store = epochsMax.map { ShardStore(ledger: ledger, epochsMax: $0) } ?? ShardStore(ledger: ledger)
    }

    /// Stores `value` with the version it was given elsewhere (the log's path).
    func restore(_ key: [UInt8], _ value: [UInt8], version: EntryVersion, expiry: Int64 = 0, now: Int64 = 0) {
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                store.restore(k, hash: KeyHash.hash(k), value: v, expiryMs: expiry, nowMs: now, version: version)
            }
        }
    }

    @discardableResult
    func set(_ key: [UInt8], _ value: [UInt8], expiry: Int64 = 0, now: Int64 = 0) -> EntryVersion {
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                store.set(k, hash: KeyHash.hash(k), value: v, expiryMs: expiry, nowMs: now)
            }
        }
    }

    func get(_ key: [UInt8], now: Int64 = 0) -> Snapshot? {
        key.withUnsafeBytes { k in store.get(k, hash: KeyHash.hash(k), nowMs: now).map(Snapshot.init) }
    }

    func peek(_ key: [UInt8]) -> Snapshot? {
        key.withUnsafeBytes { k in store.peek(k, hash: KeyHash.hash(k)).map(Snapshot.init) }
    }

    @discardableResult
    func delete(_ key: [UInt8], now: Int64 = 0) -> Bool {
        key.withUnsafeBytes { k in store.delete(k, hash: KeyHash.hash(k), nowMs: now) }
    }

    @discardableResult
    func setExpiry(_ key: [UInt8], _ expiry: Int64, now: Int64 = 0) -> Bool {
        key.withUnsafeBytes { k in store.setExpiry(k, hash: KeyHash.hash(k), expiryMs: expiry, nowMs: now) }
    }

    /// Runs a full scan, `perCall` at a time, calling `between` after each step.
    func scanAll(perCall: Int, now: Int64 = 0, between: (Int) -> Void = { _ in }) -> (keys: [[UInt8]], cursors: [UInt64]) {
        var keys: [[UInt8]] = []
        var cursors: [UInt64] = []
        var cursor: UInt64 = 0
        var step = 0
        repeat {
            cursor = store.scan(cursor: cursor, count: perCall, nowMs: now) { keys.append(Array($0.key)) }
            cursors.append(cursor)
            between(step)
            step += 1
        } while cursor != 0 && step < 100_000
        return (keys, cursors)
    }

    var problems: [String] { store.checkInvariants() }
}

func key(_ i: Int) -> [UInt8] { Array("key:\(i)".utf8) }

func bytes(_ count: Int, seed: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
}
