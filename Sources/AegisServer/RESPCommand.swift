import AegisProtocol

/// The RESP commands this node understands, with the routing each needs.
enum RESPCommand: UInt8, CaseIterable {
    case unknown
    // Connection and server commands, answered by the reactor that holds the connection.
    case ping, echo, hello, auth, select, quit, client, command, info, config, time
    case slowlog, latency, wait
    // Commands on one key, run by the reactor that owns the key's shard.
    case get, set, setnx, setex, psetex, getdel, getex, expire, pexpire, expireat, pexpireat
    case ttl, pttl, persist, incr, decr, incrby, decrby, append, strlen, type
    case getset, incrbyfloat, getrange, setrange, substr, expiretime, pexpiretime
    // Commands whose key is argument 2 (after a subcommand).
    case object, memory
    // Two keys that may live on different reactors (see KeyMoves.swift).
    case rename, renamenx, copy
    // Commands that may span shards: split per key, answered in order.
    case mget, mset, del, unlink, exists, msetnx
    // Commands on every shard or a cursor's shard.
    case dbsize, flushall, flushdb, scan, keys, randomkey

    enum Routing {
        case connection     // local to the connection's reactor
        case keyed          // argument 1 is the key
        case multiKey       // every key argument, possibly on several reactors
        case everyReactor   // one part per reactor, aggregated
        case cursor         // SCAN: the shard named by the cursor
        case subcommandKeyed // argument 2 is the key (OBJECT ENCODING key, MEMORY USAGE key)
        case twoKeys        // RENAME, RENAMENX, COPY: run by the source key's owner
        case special        // MSETNX, KEYS, RANDOMKEY: their own plan (KeyspaceCommands.swift)
    }

    var routing: Routing {
        switch self {
        case .unknown, .ping, .echo, .hello, .auth, .select, .quit, .client, .command, .info, .config, .time,
             .slowlog, .latency, .wait:
            return .connection
        case .object, .memory:
            return .subcommandKeyed
        case .rename, .renamenx, .copy:
            return .twoKeys
        case .msetnx, .keys, .randomkey:
            return .special
        case .mget, .mset, .del, .unlink, .exists:
            return .multiKey
        case .dbsize, .flushall, .flushdb:
            return .everyReactor
        case .scan:
            return .cursor
        default:
            return .keyed
        }
    }

    var name: String { String(describing: self) }

    /// One key, in argument 1: the command runs as it is on that key's
    /// shard (a one-key DEL or EXISTS too, and the parts MGET, MSET and DEL
    /// are split into).
    func actsOnOneKey(argumentCount: Int) -> Bool {
        routing == .keyed || (routing == .multiKey && argumentCount == 2 && self != .mget)
    }

    /// Redis arity: positive = exactly that many arguments (with the name),
    /// negative = at least that many.
    var arity: Int {
        switch self {
        case .unknown: return -1
        case .ping: return -1
        case .echo: return 2
        case .hello: return -1
        case .auth: return -2
        case .select: return 2
        case .quit: return -1
        case .client: return -2
        case .command: return -1
        case .info: return -1
        case .config: return -2
        case .time: return 1
        case .get: return 2
        case .set: return -3
        case .setnx: return 3
        case .setex, .psetex: return 4
        case .getdel: return 2
        case .getex: return -2
        case .expire, .pexpire, .expireat, .pexpireat: return -3
        case .ttl, .pttl, .persist, .incr, .decr, .strlen, .type: return 2
        case .incrby, .decrby, .append: return 3
        case .mget: return -2
        case .mset: return -3
        case .del, .unlink, .exists: return -2
        case .dbsize: return 1
        case .flushall, .flushdb: return -1
        case .scan: return -2
        case .slowlog, .latency: return -2
        case .wait: return 3
        case .getset: return 3
        case .incrbyfloat: return 3
        case .getrange, .substr: return 4
        case .setrange: return 4
        case .expiretime, .pexpiretime: return 2
        case .object, .memory: return -2
        case .rename, .renamenx: return 3
        case .copy: return -3
        case .msetnx: return -3
        case .keys: return 2
        case .randomkey: return 1
        }
    }

    /// Commands that write: COMMAND's flags, and later the WAL.
    var isWrite: Bool {
        switch self {
        case .set, .setnx, .setex, .psetex, .getdel, .getex, .expire, .pexpire, .expireat, .pexpireat,
             .persist, .incr, .decr, .incrby, .decrby, .append, .mset, .del, .unlink, .flushall, .flushdb,
             .getset, .incrbyfloat, .setrange, .rename, .renamenx, .copy, .msetnx:
            return true
        default:
            return false
        }
    }

    var allowedBeforeAuth: Bool { self == .auth || self == .hello || self == .quit }

    func arityAccepts(_ count: Int) -> Bool {
        arity >= 0 ? count == arity : count >= -arity
    }

    /// Case-insensitive lookup by the command's name, without allocating:
    /// the name is folded to lower case into two words and compared against
    /// a table ordered by how often commands are sent (GET and SET first).
    static func lookup(_ name: UnsafeRawBufferPointer) -> RESPCommand {
        guard name.count >= 3 && name.count <= 16 else { return .unknown }
        var folded: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &folded) { out in
            for i in 0..<name.count {
                let byte = name[i]
                out[i] = byte >= 65 && byte <= 90 ? byte | 0x20 : byte
            }
        }
        for entry in table where entry.low == folded.0 && entry.high == folded.1 {
            return entry.command
        }
        return .unknown
    }

    private struct Entry {
        var low: UInt64
        var high: UInt64
        var command: RESPCommand
    }

    private static let table: [Entry] = {
        let byFrequency: [RESPCommand] = [.get, .set, .mget, .mset, .del, .incr, .exists, .expire, .ttl, .ping]
        let rest = RESPCommand.allCases.filter { $0 != .unknown && !byFrequency.contains($0) }
        return (byFrequency + rest).map { command in
            var folded: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &folded) { out in
                for (i, byte) in command.name.utf8.enumerated() { out[i] = byte }
            }
            return Entry(low: folded.0, high: folded.1, command: command)
        }
    }()
}
