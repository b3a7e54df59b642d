import AegisProtocol
import AegisStore

/// Stage 2: commands on keys, run by the reactor that owns the shard. The
/// same code serves a local request and one forwarded from another reactor.
extension Reactor {
    /// Runs a command whose keys (or cursor shard) this reactor owns.
    func executeOwned(_ command: RESPCommand, _ args: ArgumentsView, version: RESPVersion, into out: WireBuffer) {
        switch command {
        case .flushall, .flushdb:
            if args.count > 2 || (args.count == 2 && !args.matches(1, "ASYNC") && !args.matches(1, "SYNC")) {
                RESPWriter.error("ERR syntax error", into: out)
                return
            }
            if let wal = log.wal, !wal.acceptsWrites {
                RESPWriter.error(string: Self.walRefusalRESP, into: out)
                return
            }
            if let unleased = shards.ownedIndices.first(where: { routes.isPrimaryHere($0) && lacksLease($0) }) {
                RESPWriter.error(string: leaseRefusalText(unleased), into: out)
                return
            }
            if args.count == 2 && args.matches(1, "ASYNC") {
                // The shards are emptied now; their memory is freed off this
                // reactor, so a large flush does not stall its other clients.
                let batch = LazyFreeBatch()
                for shard in shards.ownedIndices where routes.isPrimaryHere(shard) {
                    let previous = shards[shard]!.lastWriteVersion
                    shards[shard]!.removeAll(deferringTo: batch)
                    recordFlush(shard: shard, previous: previous)
                }
                batch.start(ledger: shards.ledger)
            } else {
                for shard in shards.ownedIndices where routes.isPrimaryHere(shard) {
                    let previous = shards[shard]!.lastWriteVersion
                    shards[shard]!.removeAll()
                    recordFlush(shard: shard, previous: previous)
                }
            }
            RESPWriter.simpleString("OK", into: out)
        case .dbsize:
            var items = 0
            // Shards this node is primary for: a follower's copies are counted by their primaries.
            for shard in shards.ownedIndices where routes.isPrimaryHere(shard) { items += shards[shard]!.count }
            RESPWriter.integer(items, into: out)
        case .scan:
            executeScan(args, into: out)
        case .object, .memory:
            executeKeyIntrospection(command, args, version: version, into: out)
        case .keys, .randomkey:
            executeKeyspacePart(command, args, version: version, into: out)
        case .client, .config:
            executeReactorPart(command, args, version: version, into: out)
        case .rename, .renamenx, .copy, .msetnx:
            executeMultiKeyOwned(command, args, version: version, into: out)
        default:
            let hash = KeyHash.hash(args.bytes(1))
            let shard = KeyHash.shard(of: hash, shardCount: shards.count)
            guard let store = shards[shard] else {
                preconditionFailure("shard \(shard) routed to reactor \(index), which does not own it")
            }
            executeKeyed(command, args, store: store, hash: hash, version: version, into: out)
        }
    }

    @inline(__always)
    func executeKeyed(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64, version: RESPVersion, into out: WireBuffer) {
        guard command.isWrite && (log.wal != nil || replica.enabled) else {
            applyKeyed(command, args, store: store, hash: hash, version: version, into: out)
            return
        }
        if let wal = log.wal, !wal.acceptsWrites {
            RESPWriter.error(string: Self.walRefusalRESP, into: out)
            return
        }
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        if lacksLease(shard) {
            RESPWriter.error(string: leaseRefusalText(shard), into: out)
            return
        }
        recordedWrite(args.bytes(1), hash: hash, store: store) {
            applyKeyed(command, args, store: store, hash: hash, version: version, into: out)
        }
    }

    private func applyKeyed(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64, version: RESPVersion, into out: WireBuffer) {
        let key = args.bytes(1)
        switch command {
        case .get, .exists, .strlen, .type, .ttl, .pttl, .expiretime, .pexpiretime, .getrange, .substr:
            executeKeyRead(command, args, store: store, hash: hash, version: version, into: out)
        case .set:
            executeSet(args, store: store, hash: hash, version: version, into: out)
        case .setnx:
            if store.get(key, hash: hash, nowMs: now) != nil {
                RESPWriter.integer(0, into: out)
            } else {
                store.set(key, hash: hash, value: args.bytes(2), expiryMs: 0, nowMs: now)
                RESPWriter.integer(1, into: out)
            }
        case .setex, .psetex:
            guard let amount = args.integer(2) else {
                RESPWriter.error("ERR value is not an integer or out of range", into: out)
                return
            }
            guard amount > 0, let expiry = absoluteExpiry(amount, unit: command == .setex ? .seconds : .milliseconds) else {
                RESPWriter.error(string: "ERR invalid expire time in '\(command.name)' command", into: out)
                return
            }
            store.set(key, hash: hash, value: args.bytes(3), expiryMs: expiry, nowMs: now)
            RESPWriter.simpleString("OK", into: out)
        case .getdel:
            if let entry = store.get(key, hash: hash, nowMs: now) {
                RESPWriter.bulk(entry.value, into: out)
                store.delete(key, hash: hash, nowMs: now)
            } else {
                RESPWriter.null(version, into: out)
            }
        case .getex:
            executeGetEx(args, store: store, hash: hash, version: version, into: out)
        case .del, .unlink:
            RESPWriter.integer(store.delete(key, hash: hash, nowMs: now) ? 1 : 0, into: out)
        case .expire, .pexpire, .expireat, .pexpireat:
            executeExpire(command, args, store: store, hash: hash, into: out)
        case .persist:
            guard let entry = store.get(key, hash: hash, nowMs: now), entry.expiryMs != 0 else {
                RESPWriter.integer(0, into: out)
                return
            }
            store.setExpiry(key, hash: hash, expiryMs: 0, nowMs: now)
            RESPWriter.integer(1, into: out)
        case .incr, .decr, .incrby, .decrby:
            executeIncrement(command, args, store: store, hash: hash, into: out)
        case .append:
            let suffix = args.bytes(2)
            let existing = store.get(key, hash: hash, nowMs: now)
            let combined = (existing?.value.count ?? 0) + suffix.count
            if combined > Self.maxValueLength {
                RESPWriter.error("ERR string exceeds maximum allowed size (67108864 bytes)", into: out)
                return
            }
            scratch.value.clear()
            if let existing { scratch.value.append(existing.value) }
            scratch.value.append(suffix)
            store.set(key, hash: hash, value: scratch.value.readableView, expiryMs: existing?.expiryMs ?? 0, nowMs: now)
            scratch.value.releaseIfIdle(keep: 1 << 20)
            RESPWriter.integer(combined, into: out)
        default:
            applyStringKeyed(command, args, store: store, hash: hash, version: version, into: out)
        }
    }

    enum TimeUnit { case seconds, milliseconds }

    /// now + amount, or nil on overflow.
    func absoluteExpiry(_ amount: Int64, unit: TimeUnit) -> Int64? {
        let milliseconds: Int64
        if unit == .seconds {
            let (product, overflow) = amount.multipliedReportingOverflow(by: 1000)
            if overflow { return nil }
            milliseconds = product
        } else {
            milliseconds = amount
        }
        let (sum, overflow) = milliseconds.addingReportingOverflow(now)
        return overflow ? nil : sum
    }

    /// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
    private func executeSet(_ args: ArgumentsView, store: ShardStore, hash: UInt64, version: RESPVersion, into out: WireBuffer) {
        let key = args.bytes(1)
        guard let options = StringOptions.parse(args, for: .set) else {
            RESPWriter.error("ERR syntax error", into: out)
            return
        }
        var expiry: Int64
        switch options.absoluteExpiryMs(args, nowMs: now) {
        case .success(let absolute): expiry = absolute ?? 0
        case .failure(let problem):
            StringOptions.write(problem, command: "set", into: out)
            return
        }
        if !options.onlyIfAbsent && !options.onlyIfPresent && !options.returnOld && !options.keepTTL {
            if expiry != 0 && expiry <= now {
                store.delete(key, hash: hash, nowMs: now)
            } else {
                store.set(key, hash: hash, value: args.bytes(2), expiryMs: expiry, nowMs: now)
            }
            RESPWriter.simpleString("OK", into: out)
            return
        }
        let existing = store.get(key, hash: hash, nowMs: now)
        if options.returnOld {
            if let existing { RESPWriter.bulk(existing.value, into: out) } else { RESPWriter.null(version, into: out) }
        }
        let proceed = (!options.onlyIfAbsent || existing == nil) && (!options.onlyIfPresent || existing != nil)
        if proceed {
            if options.keepTTL { expiry = existing?.expiryMs ?? 0 }
            if expiry != 0 && expiry <= now {
                store.delete(key, hash: hash, nowMs: now)
            } else {
                store.set(key, hash: hash, value: args.bytes(2), expiryMs: expiry, nowMs: now)
            }
        }
        if !options.returnOld {
            if proceed { RESPWriter.simpleString("OK", into: out) } else { RESPWriter.null(version, into: out) }
        }
    }

    /// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]. As in redis-server, a
    /// missing key answers nil before the expiry's number is looked at.
    private func executeGetEx(_ args: ArgumentsView, store: ShardStore, hash: UInt64, version: RESPVersion, into out: WireBuffer) {
        let key = args.bytes(1)
        guard let options = StringOptions.parse(args, for: .getex) else {
            RESPWriter.error("ERR syntax error", into: out)
            return
        }
        guard let entry = store.get(key, hash: hash, nowMs: now) else {
            RESPWriter.null(version, into: out)
            return
        }
        let newExpiry: Int64?
        switch options.absoluteExpiryMs(args, nowMs: now) {
        case .success(let absolute): newExpiry = absolute ?? (options.persist ? 0 : nil)
        case .failure(let problem):
            StringOptions.write(problem, command: "getex", into: out)
            return
        }
        RESPWriter.bulk(entry.value, into: out)
        if let newExpiry {
            if newExpiry != 0 && newExpiry <= now {
                store.delete(key, hash: hash, nowMs: now)
            } else {
                store.setExpiry(key, hash: hash, expiryMs: newExpiry, nowMs: now)
            }
        }
    }

    /// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key amount [NX|XX|GT|LT]
    private func executeExpire(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64, into out: WireBuffer) {
        let key = args.bytes(1)
        // The options are checked before the number, as redis-server does.
        var nx = false, xx = false, gt = false, lt = false
        for i in 3..<max(args.count, 3) {
            if args.matches(i, "NX") { nx = true }
            else if args.matches(i, "XX") { xx = true }
            else if args.matches(i, "GT") { gt = true }
            else if args.matches(i, "LT") { lt = true }
            else {
                RESPWriter.error(string: "ERR Unsupported option \(args.string(i))", into: out)
                return
            }
        }
        if nx && (xx || gt || lt) {
            RESPWriter.error("ERR NX and XX, GT or LT options at the same time are not compatible", into: out)
            return
        }
        if gt && lt {
            RESPWriter.error("ERR GT and LT options at the same time are not compatible", into: out)
            return
        }
        guard let amount = args.integer(2) else {
            RESPWriter.error("ERR value is not an integer or out of range", into: out)
            return
        }
        let absolute: Int64?
        switch command {
        case .expire: absolute = absoluteExpiry(amount, unit: .seconds)
        case .pexpire: absolute = absoluteExpiry(amount, unit: .milliseconds)
        case .expireat: absolute = amount.multipliedReportingOverflow(by: 1000).overflow ? nil : amount * 1000
        default: absolute = amount
        }
        guard let absolute else {
            RESPWriter.error(string: "ERR invalid expire time in '\(command.name)' command", into: out)
            return
        }
        guard let entry = store.get(key, hash: hash, nowMs: now) else {
            RESPWriter.integer(0, into: out)
            return
        }
        let current = entry.expiryMs
        if (nx && current != 0) || (xx && current == 0)
            || (gt && (current == 0 || absolute <= current))
            || (lt && current != 0 && absolute >= current) {
            RESPWriter.integer(0, into: out)
            return
        }
        if absolute <= now {
            store.delete(key, hash: hash, nowMs: now)
        } else {
            store.setExpiry(key, hash: hash, expiryMs: absolute, nowMs: now)
        }
        RESPWriter.integer(1, into: out)
    }

    private func executeIncrement(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64, into out: WireBuffer) {
        let key = args.bytes(1)
        var delta: Int64 = command == .decr ? -1 : 1
        if command == .incrby || command == .decrby {
            guard let amount = args.integer(2) else {
                RESPWriter.error("ERR value is not an integer or out of range", into: out)
                return
            }
            if command == .decrby {
                if amount == Int64.min {
                    RESPWriter.error("ERR decrement would overflow", into: out)
                    return
                }
                delta = -amount
            } else {
                delta = amount
            }
        }
        let existing = store.get(key, hash: hash, nowMs: now)
        var current: Int64 = 0
        var expiry: Int64 = 0
        if let existing {
            guard let parsed = parseStrictInteger(existing.value) else {
                RESPWriter.error("ERR value is not an integer or out of range", into: out)
                return
            }
            current = parsed
            expiry = existing.expiryMs
        }
        let (result, overflow) = current.addingReportingOverflow(delta)
        if overflow {
            RESPWriter.error("ERR increment or decrement would overflow", into: out)
            return
        }
        scratch.value.clear()
        scratch.value.appendDecimal(Int(result))
        store.set(key, hash: hash, value: scratch.value.readableView, expiryMs: expiry, nowMs: now)
        RESPWriter.integer(Int(result), into: out)
    }

    /// Most entries one SCAN call looks at (its COUNT), and the longest MATCH
    /// pattern: matching costs up to pattern × key length per entry, so both
    /// bound the time one call holds the reactor.
    static let scanMaxCount = 100_000
    static let scanMaxPatternLength = 1024
    /// Matching steps one SCAN call may spend (a step is one pattern byte
    /// against one key byte; a few ms of work). Matching is O(pattern × key)
    /// at worst (Glob.swift), so with long patterns and long keys COUNT
    /// alone would not bound the call.
    static let scanMatchBudget = 16 << 20

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]. The cursor is
    /// (shard << 40) | position inside the shard; the store's own cursor is a
    /// position in hash order, so growing or shrinking tables never make SCAN
    /// skip an entry that was present throughout.
    ///
    /// COUNT is the number of entries looked at, as in Redis, not the
    /// number returned: with MATCH or TYPE a call may return fewer keys, or
    /// none, with a cursor to continue from, instead of walking the whole
    /// keyspace for a pattern that matches nothing.
    ///
    /// This is one reactor's part of a page: it looks at its own shards only,
    /// up to COUNT entries, while every other reactor does the same with
    /// theirs; ScanPage merges the parts.
    private func executeScan(_ args: ArgumentsView, into out: WireBuffer) {
        guard let rawCursor = parseScanCursor(args.bytes(1)) else {
            RESPWriter.error("ERR invalid cursor", into: out)
            return
        }
        var count = 10
        var pattern: UnsafeRawBufferPointer? = nil
        var typeMatches = true
        var i = 2
        while i < args.count {
            guard i + 1 < args.count else {
                RESPWriter.error("ERR syntax error", into: out)
                return
            }
            if args.matches(i, "COUNT") {
                guard let n = args.integer(i + 1) else {
                    RESPWriter.error("ERR value is not an integer or out of range", into: out)
                    return
                }
                guard n >= 1 else {
                    RESPWriter.error("ERR syntax error", into: out)
                    return
                }
                guard n <= Self.scanMaxCount else {
                    RESPWriter.error("ERR COUNT must be at most 100000", into: out)
                    return
                }
                count = Int(n)
            } else if args.matches(i, "MATCH") {
                guard args.bytes(i + 1).count <= Self.scanMaxPatternLength else {
                    RESPWriter.error("ERR MATCH pattern must be at most 1024 bytes", into: out)
                    return
                }
                pattern = args.bytes(i + 1)
                if pattern!.count == 1 && pattern![0] == UInt8(ascii: "*") { pattern = nil }
            } else if args.matches(i, "TYPE") {
                typeMatches = args.matches(i + 1, "STRING")
            } else {
                RESPWriter.error("ERR syntax error", into: out)
                return
            }
            i += 2
        }
        var shard = Int(rawCursor >> 40)
        var inner = rawCursor & ((1 << 40) - 1)
        // This reactor's part of the page: its own shards from the cursor on
        // (the others scan theirs at the same time; ScanPage merges them).
        if shard < shards.count && shards[shard] == nil {
            inner = 0
            shard = nextOwnedShard(after: shard)
        }
        if shard >= shards.count {
            writeScanReply(cursor: 0, keys: nil, into: out)
            return
        }
        var found = 0
        var examined = 0
        scratch.scan.clear()
        var nextCursor: UInt64 = 0
        var examinedShards = 0
        // Entries are taken in chunks small enough that keys of the longest
        // length could not take the matching far past its budget; the call
        // ends, with a cursor, once the budget is spent.
        let matchCostMax = (pattern?.count ?? 0) * (Self.maxKeyLength + 1)
        var matchCost = 0
        // Empty shards cost a count check each, so a sparse keyspace still
        // fills a page; shards with entries are bounded by COUNT (their
        // entries may all have expired, and visiting them is not free).
        let shardsWithEntriesMax = max(64, count)
        while true {
            let store = shards[shard]!
            // A follower's copy of a shard is its primary's to list.
            if store.count == 0 || !routes.isPrimaryHere(shard) {
                inner = 0
            } else {
                repeat {
                    var chunk = count - examined
                    if matchCostMax > 0 { chunk = max(1, min(chunk, (Self.scanMatchBudget - matchCost) / matchCostMax)) }
                    inner = store.scan(cursor: inner, count: chunk, nowMs: now) { entry in
                        examined += 1
                        guard typeMatches else { return }
                        if let pattern {
                            matchCost += pattern.count * (entry.key.count + 1)
                            if !globMatch(pattern: pattern, subject: entry.key) { return }
                        }
                        RESPWriter.bulk(entry.key, into: scratch.scan)
                        found += 1
                    }
                } while inner != 0 && examined < count && matchCost < Self.scanMatchBudget
                examinedShards += 1
            }
            if inner != 0 {
                nextCursor = UInt64(shard) << 40 | inner
                break
            }
            nextCursor = UInt64(shard + 1) << 40
            shard = nextOwnedShard(after: shard)
            if shard >= shards.count { nextCursor = 0; break }
            if examined >= count || matchCost >= Self.scanMatchBudget || examinedShards >= shardsWithEntriesMax { break }
        }
        writeScanReply(cursor: nextCursor, keys: (found, scratch.scan), into: out)
        scratch.scan.releaseIfIdle(keep: 64 * 1024)
    }

    /// The first shard after `shard` that this reactor owns (shards.count when none).
    private func nextOwnedShard(after shard: Int) -> Int {
        var next = shard + 1
        while next < shards.count && shards[next] == nil { next += 1 }
        return next
    }

    func writeScanReply(cursor: UInt64, keys: (count: Int, encoded: WireBuffer)?, into out: WireBuffer) {
        RESPWriter.arrayHeader(2, into: out)
        var text = String(cursor)
        text.withUTF8 { RESPWriter.bulk(UnsafeRawBufferPointer($0), into: out) }
        RESPWriter.arrayHeader(keys?.count ?? 0, into: out)
        if let keys { out.append(keys.encoded.readableView) }
    }
}
