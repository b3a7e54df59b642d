import AegisProtocol
import AegisStore

/// Commands over more than one key or the whole keyspace that do not split
/// into independent per-key parts: KEYS, RANDOMKEY, MSETNX, RENAME,
/// RENAMENX, COPY.
///
/// Atomicity, as other clients see it: a reactor runs one command at a time
/// on the shards it owns, so a command whose keys all live in shards of one
/// reactor is atomic (nobody sees half of it). MSETNX, RENAME, RENAMENX and
/// COPY are sent whole to that reactor when their keys share one (always,
/// with `reactors: 1`). When their keys' shards belong to different
/// reactors of this node, MSETNX is coordinated in steps
/// (MSetNXAcrossReactors.swift: all or nothing, with a window of one
/// message in which part of it is visible) and RENAME, RENAMENX and COPY
/// move the value in two steps (KeyMoves.swift) with a window in which both
/// keys exist, never one in which neither does. Keys whose primaries are on
/// different nodes get `CROSSSLOT Keys in request don't hash to the same
/// slot`, the error Redis Cluster gives.
extension Reactor {
    func dispatchKeyspace(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, raw: UnsafeRawBufferPointer) {
        let id = Int(command.rawValue)
        switch command {
        case .keys, .randomkey:
            let aggregate: ReplyQueue.Aggregate = command == .keys ? .arrayConcat : .anyNonNull
            runOnEveryReactor(command, args, connection, raw: raw,
                              sequence: connection.replies.openPending(parts: node.reactorCount, aggregate: aggregate))
        case .msetnx:
            guard args.count % 2 == 1 else {
                withRejectedReply(connection, id) { RESPWriter.error("ERR wrong number of arguments for 'msetnx' command", into: $0) }
                return
            }
            var keys: [Int] = []
            var i = 1
            while i < args.count { keys.append(i); i += 2 }
            runOnCommonOwner(command, args, keyIndices: keys, connection, raw: raw)
        case .rename, .renamenx, .copy:
            routeTwoKeys(command, args, connection, raw: raw)
        default:
            preconditionFailure("\(command) is not a keyspace command")
        }
    }

    /// Runs the command where every key's shard lives, or answers CROSSSLOT.
    private func runOnCommonOwner(_ command: RESPCommand, _ args: ArgumentsView, keyIndices: [Int], _ connection: Connection,
                                  raw: UnsafeRawBufferPointer) {
        let id = Int(command.rawValue)
        for i in keyIndices where args.bytes(i).count > Self.maxKeyLength {
            withRejectedReply(connection, id) { RESPWriter.error("ERR key is larger than 65536 bytes", into: $0) }
            return
        }
        let shardsOfKeys = keyIndices.map { KeyHash.shard(of: KeyHash.hash(args.bytes($0)), shardCount: shards.count) }
        let owners = shardsOfKeys.map { route(shard: $0) }
        let target = owners[0]
        if owners.contains(where: { $0 != target }) {
            if command == .msetnx && !owners.contains(routes.clusterEndpoint) {
                startMSetNXAcrossReactors(args, owners: owners, connection)
            } else {
                withRejectedReply(connection, id) { RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: $0) }
            }
            return
        }
        if target != index {
            forward(to: target, connection: connection, bytes: raw, shard: shardsOfKeys[0])
            return
        }
        scratch.reply.clear()
        executeMultiKeyOwned(command, args, version: connection.respVersion, into: scratch.reply)
        countErrorReply(scratch.reply, wire: connection.wire ?? .resp2, id: id)
        deliverLocal(connection, scratch.reply)
    }

    /// MSETNX, RENAME, RENAMENX and COPY with every key in a shard this
    /// reactor owns: one step, so atomic. A request that reached a reactor
    /// not owning all its keys (another node routes by its own map) gets an
    /// error, never a touch of a shard this reactor does not own.
    func executeMultiKeyOwned(_ command: RESPCommand, _ args: ArgumentsView, version: RESPVersion, into out: WireBuffer) {
        let keyIndices: [Int]
        switch command {
        case .msetnx: keyIndices = Array(stride(from: 1, to: args.count, by: 2))
        default: keyIndices = [1, 2]
        }
        var located: [(key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore)] = []
        for i in keyIndices {
            let key = args.bytes(i)
            let hash = KeyHash.hash(key)
            guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)] else {
                // A move's destination may be another reactor's: KeyMoves.swift.
                if command != .msetnx && i == 2 { continue }
                RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: out)
                return
            }
            located.append((key, hash, store))
        }
        if let wal = log.wal, !wal.acceptsWrites {
            RESPWriter.error(string: Self.walRefusalRESP, into: out)
            return
        }
        if let unleased = located.lazy.map({ KeyHash.shard(of: $0.hash, shardCount: self.shards.count) }).first(where: { self.lacksLease($0) }) {
            RESPWriter.error(string: leaseRefusalText(unleased), into: out)
            return
        }
        switch command {
        case .msetnx:
            if located.contains(where: { $0.store.get($0.key, hash: $0.hash, nowMs: now) != nil }) {
                RESPWriter.integer(0, into: out)
                return
            }
            for (position, key) in located.enumerated() {
                recordedWrite(key.key, hash: key.hash, store: key.store) {
                    key.store.set(key.key, hash: key.hash, value: args.bytes(keyIndices[position] + 1), expiryMs: 0, nowMs: now)
                }
            }
            RESPWriter.integer(1, into: out)
        default:
            executeMoveOwned(command, args, source: located[0], destination: located.count > 1 ? located[1] : nil, into: out)
        }
    }

    /// This reactor's share of KEYS (an array of its matching keys) or
    /// RANDOMKEY (one of its keys, or null).
    func executeKeyspacePart(_ command: RESPCommand, _ args: ArgumentsView, version: RESPVersion, into out: WireBuffer) {
        if command == .randomkey {
            writeRandomKey(version: version, into: out)
            return
        }
        let pattern = args.bytes(1)
        let everything = pattern.count == 1 && pattern[0] == UInt8(ascii: "*")
        var found = 0
        scratch.scan.clear()
        for shard in shards.ownedIndices {
            let store = shards[shard]!
            var cursor: UInt64 = 0
            repeat {
                cursor = store.scan(cursor: cursor, count: 1024, nowMs: now) { entry in
                    if everything || globMatch(pattern: pattern, subject: entry.key) {
                        RESPWriter.bulk(entry.key, into: scratch.scan)
                        found += 1
                    }
                }
            } while cursor != 0
        }
        RESPWriter.arrayHeader(found, into: out)
        out.append(scratch.scan.readableView)
        scratch.scan.releaseIfIdle(keep: 64 * 1024)
    }

    /// A key chosen at random among this reactor's: a shard picked with
    /// probability proportional to its keys, then the first key at a random
    /// position of its hash space.
    private func writeRandomKey(version: RESPVersion, into out: WireBuffer) {
        var total = 0
        for shard in shards.ownedIndices { total += shards[shard]!.count }
        guard total > 0 else {
            RESPWriter.null(version, into: out)
            return
        }
        var pick = Int.random(in: 0..<total)
        var chosen: ShardStore? = nil
        for shard in shards.ownedIndices {
            let store = shards[shard]!
            if pick < store.count { chosen = store; break }
            pick -= store.count
        }
        guard let store = chosen else {
            RESPWriter.null(version, into: out)
            return
        }
        var cursor = UInt64.random(in: 0..<(1 << 40))
        var wrapped = false
        var written = false
        // Counts can include entries that expired but were not swept yet,
        // so a shard may turn out empty; a full lap ends the search.
        while !written {
            let start = cursor
            cursor = store.scan(cursor: cursor, count: 1, nowMs: now) { entry in
                if !written {
                    RESPWriter.bulk(entry.key, into: out)
                    written = true
                }
            }
            if written { break }
            if cursor == 0 {
                if wrapped || start == 0 { break }
                wrapped = true
            }
        }
        if !written { RESPWriter.null(version, into: out) }
    }
}
