import AegisProtocol
import AegisStore

/// Where the reply to a RENAME, RENAMENX or COPY goes once it is known.
enum MoveReplyTarget {
    /// A client of this reactor, into an open slot.
    case local(connectionIndex: UInt32, generation: UInt32, sequence: UInt64)
    /// Another endpoint forwarded the request; answer it with this header.
    case forwarded(header: ForwardHeader, source: Int)
}

/// RENAME, RENAMENX and COPY waiting for the destination's owner.
struct PendingMove {
    var command: RESPCommand
    var replyTo: MoveReplyTarget
    var sourceKey: [UInt8]
    /// The value as copied, to tell whether the source changed meanwhile.
    var value: [UInt8]
}

/// A reactor's moves in flight (KeyMoves.swift). Confined to its reactor.
struct MoveTable {
    /// Set by whoever runs a move command, so that a move that must wait
    /// for another reactor knows where its reply goes; taken (set to nil)
    /// by a move that waits, which tells the caller not to answer now.
    var replyTo: MoveReplyTarget?
    var deferred = false
    var pending: [UInt64: PendingMove] = [:]
    var nextID: UInt64 = 0
}

/// RENAME, RENAMENX and COPY across reactors, in two steps.
///
/// The source key's owner (A) runs the command. When the destination's
/// shard is also A's, it is one step and atomic. Otherwise A reads the
/// source and sends the destination's owner (B) an internal request: "store
/// this value and expiry under the destination" (only if absent, for
/// RENAMENX and COPY without REPLACE). B answers whether it stored it. Then
/// A, for RENAME and RENAMENX, deletes the source, unless the source was
/// written in between (that later write wins and stays), and answers the
/// client.
///
/// What other clients can see: before B's step, only the source; after A's
/// step, only the destination; between the two (one ring hop), both keys,
/// with the same value. Never neither: a reader that looks for the value
/// under either name always finds it. A later command of the same client
/// sees the move complete (its reply comes first). Across nodes of a
/// cluster the destination's owner is another process; such a move answers
/// `CROSSSLOT Keys in request don't hash to the same slot`, as Redis
/// Cluster does for keys of different slots.
///
/// The internal request is never a client command: it travels with
/// `connectionIndex == moveMarker`, which no connection has, so a client
/// cannot send it and its reply comes back to `completeMove`.
extension Reactor {
    static let moveMarker = UInt32.max

    func routeTwoKeys(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, raw: UnsafeRawBufferPointer) {
        let id = Int(command.rawValue)
        if args.bytes(1).count > Self.maxKeyLength || args.bytes(2).count > Self.maxKeyLength {
            withRejectedReply(connection, id) { RESPWriter.error("ERR key is larger than 65536 bytes", into: $0) }
            return
        }
        let sourceShard = KeyHash.shard(of: KeyHash.hash(args.bytes(1)), shardCount: shards.count)
        let destinationShard = KeyHash.shard(of: KeyHash.hash(args.bytes(2)), shardCount: shards.count)
        let sourceTarget = route(shard: sourceShard)
        let destinationTarget = route(shard: destinationShard)
        if sourceTarget != destinationTarget && (sourceTarget == routes.clusterEndpoint || destinationTarget == routes.clusterEndpoint) {
            withRejectedReply(connection, id) { RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: $0) }
            return
        }
        if sourceTarget != index {
            if destinationTarget != sourceTarget { connection.moveSlot = connection.replies.nextSequence }
            forward(to: sourceTarget, connection: connection, bytes: raw, shard: sourceShard)
            return
        }
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        moves.replyTo = .local(connectionIndex: connection.index, generation: connection.generation, sequence: sequence)
        moves.deferred = false
        scratch.reply.clear()
        executeMultiKeyOwned(command, args, version: connection.respVersion, into: scratch.reply)
        moves.replyTo = nil
        if moves.deferred {
            connection.moveSlot = sequence
            return
        }
        countErrorReply(scratch.reply, wire: connection.wire ?? .resp2, id: id)
        fillLocal(connection, sequence: sequence, scratch.reply.readableView)
    }

    /// RENAME/RENAMENX/COPY on the source key's owner. `destination` is nil
    /// when another reactor owns the destination's shard.
    func executeMoveOwned(_ command: RESPCommand, _ args: ArgumentsView,
                          source: (key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore),
                          destination: (key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore)?, into out: WireBuffer) {
        var replace = command == .rename
        if command == .copy {
            var i = 3
            while i < args.count {
                if args.matches(i, "REPLACE") {
                    replace = true
                } else if args.matches(i, "DB") && i + 1 < args.count {
                    guard let database = args.integer(i + 1), database >= Int64(Int32.min), database <= Int64(Int32.max) else {
                        RESPWriter.error("ERR value is not an integer or out of range", into: out)
                        return
                    }
                    guard database == 0 else {
                        RESPWriter.error("ERR DB index is out of range", into: out)
                        return
                    }
                    i += 1
                } else {
                    RESPWriter.error("ERR syntax error", into: out)
                    return
                }
                i += 1
            }
            if source.key.elementsEqual(args.bytes(2)) {
                RESPWriter.error("ERR source and destination objects are the same", into: out)
                return
            }
        }
        guard let entry = source.store.get(source.key, hash: source.hash, nowMs: now) else {
            if command == .copy { RESPWriter.integer(0, into: out) } else { RESPWriter.error("ERR no such key", into: out) }
            return
        }
        if source.key.elementsEqual(args.bytes(2)) {
            if command == .renamenx { RESPWriter.integer(0, into: out) } else { RESPWriter.simpleString("OK", into: out) }
            return
        }
        guard let destination else {
            startMove(command, args, source: source, value: entry.value, expiryMs: entry.expiryMs, replace: replace, into: out)
            return
        }
        if !replace && destination.store.get(destination.key, hash: destination.hash, nowMs: now) != nil {
            RESPWriter.integer(0, into: out)
            return
        }
        // The value is copied first: the source's bytes may move when the destination is written.
        scratch.value.clear()
        scratch.value.append(entry.value)
        let expiry = entry.expiryMs
        recordedWrite(destination.key, hash: destination.hash, store: destination.store) {
            destination.store.set(destination.key, hash: destination.hash, value: scratch.value.readableView, expiryMs: expiry, nowMs: now)
        }
        scratch.value.releaseIfIdle(keep: 1 << 20)
        if command != .copy {
            recordedWrite(source.key, hash: source.hash, store: source.store) {
                _ = source.store.delete(source.key, hash: source.hash, nowMs: now)
            }
        }
        writeMoveReply(command, stored: true, into: out)
    }

    private func writeMoveReply(_ command: RESPCommand, stored: Bool, into out: WireBuffer) {
        if command == .rename {
            RESPWriter.simpleString("OK", into: out)
        } else {
            RESPWriter.integer(stored ? 1 : 0, into: out)
        }
    }

    /// Step one on A: ask the destination's owner to store the value.
    private func startMove(_ command: RESPCommand, _ args: ArgumentsView,
                           source: (key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore),
                           value: UnsafeRawBufferPointer, expiryMs: Int64, replace: Bool, into out: WireBuffer) {
        let destinationShard = KeyHash.shard(of: KeyHash.hash(args.bytes(2)), shardCount: shards.count)
        let target = route(shard: destinationShard)
        guard let replyTo = moves.replyTo, target != routes.clusterEndpoint, target != index else {
            RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: out)
            return
        }
        let id = moves.nextID
        moves.nextID &+= 1
        moves.pending[id] = PendingMove(command: command, replyTo: replyTo, sourceKey: Array(source.key), value: Array(value))
        moves.deferred = true
        scratch.part.clear()
        scratch.part.append("*4\r\n")
        RESPWriter.bulk(string: replace ? "REPLACE" : "NX", into: scratch.part)
        RESPWriter.bulk(args.bytes(2), into: scratch.part)
        RESPWriter.bulk(value, into: scratch.part)
        RESPWriter.bulk(string: String(expiryMs), into: scratch.part)
        forwarding.awaitedReplies += 1
        let header = ForwardHeader(kind: .request, wire: .resp2, connectionIndex: Self.moveMarker, connectionGeneration: 0,
                                   slotSequence: id, payloadLength: scratch.part.readableBytes)
        sendRecord(to: target, header: header, payload: scratch.part.readableView)
    }

    /// Step two, on B: store the value under the destination. Replies ":1"
    /// when stored, ":0" when the destination existed and the move may not
    /// replace it.
    func executeMoveIn(_ request: UnsafeRawBufferPointer, into out: WireBuffer) {
        guard case .complete = RESPRequestParser.parse(request, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
            preconditionFailure("a move request this node encoded must parse")
        }
        let args = ArgumentsView(base: request.baseAddress!, arguments: scratch.forwardedArguments)
        let key = args.bytes(1)
        let hash = KeyHash.hash(key)
        guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)] else {
            RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: out)
            return
        }
        if let wal = log.wal, !wal.acceptsWrites {
            RESPWriter.error(string: Self.walRefusalRESP, into: out)
            return
        }
        if lacksLease(KeyHash.shard(of: hash, shardCount: shards.count)) {
            RESPWriter.error(string: leaseRefusalText(KeyHash.shard(of: hash, shardCount: shards.count)), into: out)
            return
        }
        if args.matches(0, "NX") && store.get(key, hash: hash, nowMs: now) != nil {
            RESPWriter.integer(0, into: out)
            return
        }
        let expiry = args.integer(3) ?? 0
        recordedWrite(key, hash: hash, store: store) {
            if expiry != 0 && expiry <= now {
                _ = store.delete(key, hash: hash, nowMs: now)
            } else {
                store.set(key, hash: hash, value: args.bytes(2), expiryMs: expiry, nowMs: now)
            }
        }
        RESPWriter.integer(1, into: out)
    }

    /// Step three, on A: B answered; drop the source (RENAME, RENAMENX) and
    /// answer the client.
    func completeMove(id: UInt64, reply: UnsafeRawBufferPointer) {
        guard let move = moves.pending.removeValue(forKey: id) else {
            assertionFailure("a move reply for no pending move")
            return
        }
        let stored = reply.count >= 2 && reply[0] == UInt8(ascii: ":") && reply[1] == UInt8(ascii: "1")
        scratch.reply.clear()
        if reply.first == UInt8(ascii: "-") {
            scratch.reply.append(reply)
        } else {
            if stored && move.command != .copy {
                move.sourceKey.withUnsafeBytes { key in
                    let hash = KeyHash.hash(key)
                    guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)],
                          let current = store.get(key, hash: hash, nowMs: now),
                          current.value.elementsEqual(move.value) else { return }
                    recordedWrite(key, hash: hash, store: store) { _ = store.delete(key, hash: hash, nowMs: now) }
                }
            }
            writeMoveReply(move.command, stored: stored, into: scratch.reply)
        }
        switch move.replyTo {
        case .local(let connectionIndex, let generation, let sequence):
            guard let connection = table.connection(slot: Int(connectionIndex), generation: generation), !connection.isClosed else {
                log.replyAwaitsLog = false
                return
            }
            countErrorReply(scratch.reply, wire: connection.wire ?? .resp2, id: Int(move.command.rawValue))
            fillLocal(connection, sequence: sequence, scratch.reply.readableView)
            markDirty(connection)
        case .forwarded(let header, let source):
            answerForwarded(header.reply(payloadLength: scratch.reply.readableBytes), to: source, scratch.reply.readableView)
        }
    }
}
