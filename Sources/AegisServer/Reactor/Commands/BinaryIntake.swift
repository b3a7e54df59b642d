import AegisProtocol
import AegisStore

/// Stage 1 and 2 for AegisKV binary v1 connections (wire-protocol.md):
/// parse one frame, answer connection-level commands here, and run GET, SET
/// and DEL on the shard owner.
extension Reactor {
    /// Returns the bytes consumed (0 when the frame is incomplete).
    /// What a binary client may send before AUTH when a token is set: a
    /// frame with room for a token, as `RESPLimits.unauthenticated` allows
    /// a RESP client.
    static let binaryLimitsBeforeAuth = BinaryLimits(maxKeyLength: 1024, maxValueLength: 16 * 1024)

    func intakeBinary(_ connection: Connection, _ view: UnsafeRawBufferPointer) -> Int {
        let authenticated = connection.authenticated
        switch BinaryFrameParser.parse(view, limits: authenticated ? scratch.binaryLimits : Self.binaryLimitsBeforeAuth) {
        case .incomplete:
            connection.binaryFrameNeeded = view.count >= BinaryWire.lengthPrefix
                ? BinaryWire.lengthPrefix + Int(view.loadBigEndian(fromByteOffset: 0, as: UInt32.self)) : 0
            return 0
        case .invalid(var message, let requestID):
            // A broken frame leaves no way to find the next one: answer where
            // the request id is known, then close this connection only.
            counters.protocolErrors &+= 1
            if !authenticated && (message == "frame too large" || message == "key too long" || message == "value too long") {
                message = "request too large before AUTH (key at most 1024 bytes, value at most 16384): send AUTH first"
            }
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: requestID ?? 0, errorText: message, into: $0) }
            connection.closeAfterFlush = true
            return view.count
        case .oversized(let message, let requestID, let frameLength):
            if connection.binaryFrameNeeded != 0 { connection.binaryFrameNeeded = 0 }
            counters.commands &+= 1
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: requestID, errorText: message, into: $0) }
            return frameLength
        case .complete(let frame):
            if connection.binaryFrameNeeded != 0 { connection.binaryFrameNeeded = 0 }
            counters.commands &+= 1
            dispatchBinary(connection, frame, request: UnsafeRawBufferPointer(rebasing: view[0..<frame.frameLength]))
            return frame.frameLength
        }
    }

    private func dispatchBinary(_ connection: Connection, _ frame: BinaryRequest, request: UnsafeRawBufferPointer) {
        let id = CommandMetricsLayout.binaryID(frame.commandCode)
        commandMetrics.count(id)
        guard let command = BinaryCommand(rawValue: frame.commandCode) else {
            withRejectedReply(connection, id) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: "unknown command code \(frame.commandCode)", into: $0) }
            return
        }
        if !connection.authenticated && command != .auth {
            guard !node.clientAuth.tokenRequired else {
                withRejectedReply(connection, id) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, error: "authentication required: send AUTH first", into: $0) }
                return
            }
            // The token was removed by a reload since this client connected.
            connection.authenticated = true
        }
        if command != .auth && !admitRequest() {
            withRejectedReply(connection, id) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: rateLimitMessage, into: $0) }
            return
        }
        switch command {
        case .get, .set, .del:
            let key = UnsafeRawBufferPointer(rebasing: request[frame.keyOffset..<(frame.keyOffset + frame.keyLength)])
            let hash = KeyHash.hash(key)
            let shard = KeyHash.shard(of: hash, shardCount: shards.count)
            let target = route(shard: shard)
            if leases.enforced && parkOrRefuse(connection, shard: shard, isWrite: command != .get, bytes: request, commandID: id) {
                return
            }
            if target == index {
                let store = shards[shard]!
                // Only SET and DEL may have to wait for the log or their
                // quorum; a GET's value is written in place, with no copy
                // through the scratch.
                if (!repliesMayBeHeld || command == .get) && !(command == .get && readAwaitsQuorum(shard)) {
                    withCountedReply(connection, id) { executeBinaryKeyed(frame, request: request, key: key, hash: hash, store: store, into: $0) }
                    if replica.justWroteShard >= 0 { noteLastWrite(connection) }
                } else {
                    scratch.reply.clear()
                    executeBinaryKeyed(frame, request: request, key: key, hash: hash, store: store, into: scratch.reply)
                    countErrorReply(scratch.reply, wire: .binary, id: id)
                    deliverLocal(connection, scratch.reply)
                }
            } else {
                forward(to: target, connection: connection, bytes: request, shard: shard, readOnly: command == .get)
            }
        case .ping:
            withReply(connection) { BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, into: $0) }
        case .stats:
            let totals = node.totals()
            let text = "{\"items\":\(totals.items),\"used_memory_bytes\":\(totals.usedMemoryBytes),\"connections\":\(totals.connections),\"commands\":\(totals.commands),\"evictions\":\(totals.evictions),\"expired\":\(totals.expired),\"keyspace_hits\":\(totals.keyspaceHits),\"keyspace_misses\":\(totals.keyspaceMisses)}"
            withReply(connection) { out in
                var json = text
                json.withUTF8 { BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, value: UnsafeRawBufferPointer($0), into: out) }
            }
        case .auth:
            let value = UnsafeRawBufferPointer(rebasing: request[frame.valueOffset..<(frame.valueOffset + frame.valueLength)])
            answerBinaryAuth(connection, frame, token: value, id: id)
        case .pong, .redirect:
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: "command code \(frame.commandCode) is reserved", into: $0) }
        case .replicate, .replicateAck, .sync, .syncAck:
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: "command code \(frame.commandCode) is node-to-node only and not accepted on the client port", into: $0) }
        }
    }

    /// A forwarded GET, SET or DEL: find the key's shard here, then run it.
    func executeForwardedBinary(_ frame: BinaryRequest, request: UnsafeRawBufferPointer, into out: WireBuffer) {
        let key = UnsafeRawBufferPointer(rebasing: request[frame.keyOffset..<(frame.keyOffset + frame.keyLength)])
        let hash = KeyHash.hash(key)
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        guard let store = shards[shard] else {
            preconditionFailure("shard \(shard) routed to reactor \(index), which does not own it")
        }
        executeBinaryKeyed(frame, request: request, key: key, hash: hash, store: store, into: out)
    }

    /// GET, SET or DEL on a shard this reactor owns; the caller has hashed the key.
    func executeBinaryKeyed(_ frame: BinaryRequest, request: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer,
                            hash: UInt64, store: ShardStore, into out: WireBuffer) {
        switch BinaryCommand(rawValue: frame.commandCode) {
        case .get:
            let entry = store.get(key, hash: hash, nowMs: now)
            if entry != nil { counters.keyspaceHits &+= 1 } else { counters.keyspaceMisses &+= 1 }
            writeBinaryGet(entry, requestID: frame.requestID, into: out)
            if readQuorum.readQuorum >= 2 { noteQuorumRead(key, hash: hash, store: store, form: .binary(requestID: frame.requestID)) }
        case .set:
            // 0 or negative: no expiry, as AegisKV v1 servers read it (v1 clients send either).
            guard let expiry = frame.ttlMs <= 0 ? 0 : absoluteExpiry(frame.ttlMs, unit: .milliseconds) else {
                BinaryResponseWriter.write(status: .error, requestID: frame.requestID, error: "invalid ttl: too large", into: out)
                return
            }
            if let wal = log.wal, !wal.acceptsWrites {
                BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: Self.walRefusalBinary, into: out)
                return
            }
            if leases.enforced, lacksLease(KeyHash.shard(of: hash, shardCount: shards.count)) {
                BinaryResponseWriter.write(status: .error, requestID: frame.requestID,
                                           errorText: leaseRefusalText(KeyHash.shard(of: hash, shardCount: shards.count)), into: out)
                return
            }
            let value = UnsafeRawBufferPointer(rebasing: request[frame.valueOffset..<(frame.valueOffset + frame.valueLength)])
            if log.wal != nil { keepPreviousState(key, hash: hash, store: store) }
            let previous = store.lastWriteVersion
            let version = store.set(key, hash: hash, value: value, expiryMs: expiry, nowMs: now)
            // The log's record is made from the request's bytes (no lookup);
            // followers get those same bytes.
            let shard = KeyHash.shard(of: hash, shardCount: shards.count)
            replica.justWroteShard = shard
            replica.justWroteVersion = version
            if quorum.writeQuorum >= 2 { awaitQuorum(shard: shard, version: version) }
            if let wal = log.wal {
                logOwnWrite(wal, shard: shard, version: version, previous: previous) { filling in
                    WALRecord.append(to: filling, operation: .set, shard: shard, version: version, expiryMs: expiry, key: key, value: value)
                }
            } else if replica.enabled {
                replicateKeyState(key, hash: hash, store: store, previous: previous)
            }
            // Binary v1 has 8 bytes for a version: the seq, which alone grows
            // with every write to the shard; the term is in the log and (next)
            // in replication, which carry all 96 bits.
            BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, version: version.seq, into: out)
        case .del:
            if let wal = log.wal, !wal.acceptsWrites {
                BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: Self.walRefusalBinary, into: out)
                return
            }
            if leases.enforced, lacksLease(KeyHash.shard(of: hash, shardCount: shards.count)) {
                BinaryResponseWriter.write(status: .error, requestID: frame.requestID,
                                           errorText: leaseRefusalText(KeyHash.shard(of: hash, shardCount: shards.count)), into: out)
                return
            }
            if log.wal != nil || replica.enabled {
                recordedWrite(key, hash: hash, store: store) { _ = store.delete(key, hash: hash, nowMs: now) }
            } else {
                _ = store.delete(key, hash: hash, nowMs: now)
            }
            BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, into: out)
        default:
            preconditionFailure("binary command \(frame.commandCode) is not keyed")
        }
    }
}
