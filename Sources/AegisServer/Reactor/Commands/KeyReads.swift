import AegisProtocol
import AegisStore

/// A read-only command on one key, reduced to what its answer needs besides
/// the key's entry. A read at read_quorum >= 2 keeps it with its held reply,
/// so that when a follower turns out to hold a newer state, the answer is
/// written again from that state by the same code that wrote the first one.
enum KeyRead: Equatable {
    case get, exists, strlen, type
    case ttl, pttl, expireTime, pexpireTime
    case range(start: Int64, end: Int64)

    /// nil for a GETRANGE whose offsets are not integers (an error, not a read).
    init?(_ command: RESPCommand, _ args: ArgumentsView) {
        switch command {
        case .get: self = .get
        case .exists: self = .exists
        case .strlen: self = .strlen
        case .type: self = .type
        case .ttl: self = .ttl
        case .pttl: self = .pttl
        case .expiretime: self = .expireTime
        case .pexpiretime: self = .pexpireTime
        case .getrange, .substr:
            guard let start = args.integer(2), let end = args.integer(3) else { return nil }
            self = .range(start: start, end: end)
        default:
            preconditionFailure("\(command) is not a read-only keyed command")
        }
    }
}

extension RESPCommand {
    /// The read-only commands on one key: each is answered by `KeyRead`, and
    /// at read_quorum >= 2 from the newest of R replicas.
    var readsOneKey: Bool {
        switch self {
        case .get, .exists, .strlen, .type, .ttl, .pttl, .expiretime, .pexpiretime, .getrange, .substr: return true
        default: return false
        }
    }
}

extension Reactor {
    /// Runs a read-only keyed command; at read_quorum >= 2 on the shard's
    /// primary its reply is then held until R replicas answered
    /// (ReactorReadQuorum.swift).
    func executeKeyRead(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64,
                        version: RESPVersion, into out: WireBuffer) {
        assert(command.readsOneKey, "a read the intake writes in place at R >= 2 would leave its quorum read pending")
        guard let read = KeyRead(command, args) else {
            RESPWriter.error("ERR value is not an integer or out of range", into: out)
            return
        }
        let key = args.bytes(1)
        let entry = store.get(key, hash: hash, nowMs: now)
        if case .get = read {
            if entry != nil { counters.keyspaceHits &+= 1 } else { counters.keyspaceMisses &+= 1 }
        }
        writeKeyRead(read, entry, version: version, into: out)
        if readQuorum.readQuorum >= 2 { noteQuorumRead(key, hash: hash, store: store, form: .resp(read, version)) }
    }

    /// The answer to `read` when the key's live entry is `entry` (nil: absent),
    /// as redis-server 7.0 gives it.
    func writeKeyRead(_ read: KeyRead, _ entry: EntryRef?, version: RESPVersion, into out: WireBuffer) {
        switch read {
        case .get:
            if let entry { RESPWriter.bulk(entry.value, into: out) } else { RESPWriter.null(version, into: out) }
        case .exists:
            RESPWriter.integer(entry != nil ? 1 : 0, into: out)
        case .strlen:
            RESPWriter.integer(entry?.value.count ?? 0, into: out)
        case .type:
            RESPWriter.simpleString(entry != nil ? "string" : "none", into: out)
        case .ttl, .pttl, .expireTime, .pexpireTime:
            guard let entry else {
                RESPWriter.integer(-2, into: out)
                return
            }
            guard entry.expiryMs != 0 else {
                RESPWriter.integer(-1, into: out)
                return
            }
            let remaining = max(entry.expiryMs - now, 0)
            switch read {
            case .ttl: RESPWriter.integer(Int((remaining + 500) / 1000), into: out)
            case .pttl: RESPWriter.integer(Int(remaining), into: out)
            case .expireTime: RESPWriter.integer(Int(entry.expiryMs / 1000), into: out)
            default: RESPWriter.integer(Int(entry.expiryMs), into: out)
            }
        case .range(let start, let end):
            let value = entry?.value ?? UnsafeRawBufferPointer(start: nil, count: 0)
            let range = Self.redisRange(start: start, end: end, length: value.count)
            RESPWriter.bulk(UnsafeRawBufferPointer(rebasing: value[range]), into: out)
        }
    }

    /// A binary GET's answer when the key's live entry is `entry`.
    func writeBinaryGet(_ entry: EntryRef?, requestID: UInt64, into out: WireBuffer) {
        if let entry {
            let ttl = entry.expiryMs == 0 ? 0 : max(entry.expiryMs - now, 1)
            // Binary v1 has 8 bytes for a version: the seq.
            BinaryResponseWriter.write(status: .ok, requestID: requestID, value: entry.value, ttlMs: ttl, version: entry.version.seq, into: out)
        } else {
            BinaryResponseWriter.write(status: .notFound, requestID: requestID, into: out)
        }
    }
}
