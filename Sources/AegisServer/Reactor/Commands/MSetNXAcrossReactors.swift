import AegisProtocol
import AegisStore

/// One MSETNX whose keys live on several reactors, run by the reactor that
/// read it (the coordinator), waiting for the others' answers.
struct PendingMSetNX {
    enum Phase {
        /// Each other owner says whether any of its keys exists.
        case checking
        /// Each other owner sets its keys, all or none (none when one exists by now).
        case setting
        /// Some owner found a key: the owners that set theirs remove them again.
        case undoing
    }

    /// The keys and values one other reactor owns, in the command's order.
    struct Part {
        var reactor: Int
        var pairs: [[UInt8]]  // key, value, key, value...
        var stored = false
    }

    var phase = Phase.checking
    var connectionIndex: UInt32
    var generation: UInt32
    var sequence: UInt64
    var parts: [Part]
    /// The pairs this reactor owns; set last, right before the reply.
    var localPairs: [[UInt8]]
    var awaiting = 0
    var anyExists = false
    /// The first error an owner answered (the log refusing writes), which
    /// becomes the reply.
    var failure: [UInt8]?
}

/// A reactor's cross-reactor MSETNX in flight. Confined to its reactor.
struct MSetNXTable {
    var pending: [UInt64: PendingMSetNX] = [:]
    var nextID: UInt64 = 0
}

/// MSETNX over keys of several reactors of one node.
///
/// Keys of one reactor are set in one step (KeyspaceCommands.swift). When
/// they belong to several, the reactor that read the command coordinates:
///
/// 1. it checks its own keys, and asks every other owner whether any of its
///    keys exists; if one does, the reply is 0 and nothing was written;
/// 2. otherwise every other owner sets its keys, all of them or, when one of
///    them was created since step 1, none; when all did, the coordinator
///    sets its own (if they are still absent) and answers 1;
/// 3. if an owner found a key in step 2 (another client created it between
///    the steps), the owners that had set theirs delete each key that still
///    holds this command's value, and the reply is 0.
///
/// What other clients see. The outcome is all or nothing: after a reply of
/// 1 every key was set by this command, after 0 none holds its value (a key
/// another client overwrote in the meantime keeps that client's value).
/// During step 2, for the time of one message between reactors, a client
/// can see some of the keys set and the others still missing, as a RENAME
/// between reactors shows both keys for that moment; and only in the race
/// of step 3 can a client see a key of this command appear and then vanish.
/// The reply comes after every write of every owner is in its log (each
/// owner holds its answer until its batch is durable, the coordinator holds
/// the reply for its own), and the client's next command waits for it, so
/// the same client always sees the command complete.
///
/// Every write is an ordinary recorded write (`recordedWrite`): logged and
/// replicated as a SET or DEL of its key. The internal requests travel with
/// `connectionIndex == msetnxMarker`, which no connection has, so a client
/// cannot send them and their replies come back to `continueMSetNX`.
extension Reactor {
    static let msetnxMarker = UInt32.max - 1

    private static let checkName: StaticString = "MSETNX-CHECK"
    private static let setName: StaticString = "MSETNX-SET"
    private static let undoName: StaticString = "MSETNX-UNDO"

    /// Starts an MSETNX whose keys (`args`, already checked for size)
    /// belong to several reactors of this node, `owners[i]` owning pair i.
    func startMSetNXAcrossReactors(_ args: ArgumentsView, owners: [Int], _ connection: Connection) {
        var localPairs: [[UInt8]] = []
        var parts: [PendingMSetNX.Part] = []
        for (pair, owner) in owners.enumerated() {
            let key = Array(args.bytes(1 + 2 * pair))
            let value = Array(args.bytes(2 + 2 * pair))
            if owner == index {
                localPairs += [key, value]
            } else if let part = parts.firstIndex(where: { $0.reactor == owner }) {
                parts[part].pairs += [key, value]
            } else {
                parts.append(PendingMSetNX.Part(reactor: owner, pairs: [key, value]))
            }
        }
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        var pending = PendingMSetNX(connectionIndex: connection.index, generation: connection.generation,
                                    sequence: sequence, parts: parts, localPairs: localPairs)
        if let refusal = (localPairs.isEmpty ? nil : localWriteRefusal()) ?? (anyLocalKeyExists(localPairs) ? Array(":0\r\n".utf8) : nil) {
            finishMSetNX(pending, reply: refusal)
            return
        }
        // The client's next requests wait for this reply (Connection.moveSlot).
        connection.moveSlot = sequence
        let id = keySets.nextID
        keySets.nextID &+= 1
        for part in parts { sendMSetNXPart(Self.checkName, part, id: id, keysOnly: true) }
        pending.awaiting = parts.count
        keySets.pending[id] = pending
    }

    /// An owner's answer to step 1, 2 or 3 of MSETNX `id`.
    func continueMSetNX(id: UInt64, from reactor: Int, reply: UnsafeRawBufferPointer) {
        guard var pending = keySets.pending[id] else {
            assertionFailure("an MSETNX answer for no pending MSETNX")
            return
        }
        pending.awaiting -= 1
        if reply.first == UInt8(ascii: "-") {
            if pending.failure == nil { pending.failure = Array(reply) }
        } else if pending.phase == .setting, let part = pending.parts.firstIndex(where: { $0.reactor == reactor }) {
            pending.parts[part].stored = reply.elementsEqual(":1\r\n".utf8)
            if !pending.parts[part].stored { pending.anyExists = true }
        } else if pending.phase == .checking && !reply.elementsEqual(":1\r\n".utf8) {
            pending.anyExists = true
        }
        guard pending.awaiting == 0 else {
            keySets.pending[id] = pending
            return
        }
        keySets.pending[id] = nil
        switch pending.phase {
        case .checking:
            if let failure = pending.failure { return finishMSetNX(pending, reply: failure) }
            if pending.anyExists || anyLocalKeyExists(pending.localPairs) { return finishMSetNX(pending, reply: Array(":0\r\n".utf8)) }
            pending.phase = .setting
            sendToEveryPart(&pending, Self.setName, id: id)
        case .setting:
            if pending.failure == nil && !pending.anyExists && !pending.localPairs.isEmpty {
                if let refusal = localWriteRefusal() {
                    pending.failure = refusal
                } else if anyLocalKeyExists(pending.localPairs) {
                    pending.anyExists = true
                }
            }
            if pending.failure == nil && !pending.anyExists {
                setLocalPairs(pending.localPairs)
                return finishMSetNX(pending, reply: Array(":1\r\n".utf8))
            }
            pending.parts.removeAll { !$0.stored }
            if pending.parts.isEmpty { return finishMSetNX(pending, reply: pending.failure ?? Array(":0\r\n".utf8)) }
            pending.phase = .undoing
            sendToEveryPart(&pending, Self.undoName, id: id)
        case .undoing:
            finishMSetNX(pending, reply: pending.failure ?? Array(":0\r\n".utf8))
        }
    }

    /// Runs one step of an MSETNX on this reactor's keys, for the coordinator.
    func executeMSetNXPart(_ request: UnsafeRawBufferPointer, into out: WireBuffer) {
        guard case .complete = RESPRequestParser.parse(request, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
            preconditionFailure("an MSETNX step this node encoded must parse")
        }
        let args = ArgumentsView(base: request.baseAddress!, arguments: scratch.forwardedArguments)
        let keysOnly = args.matches(0, Self.checkName)
        let step = keysOnly ? 1 : 2
        var located: [(key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore)] = []
        var i = 1
        while i < args.count {
            let key = args.bytes(i)
            let hash = KeyHash.hash(key)
            // The coordinator routed by the same shard map: a shard moved away
            // in between is refused, never touched.
            guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)] else {
                RESPWriter.error("CROSSSLOT Keys in request don't hash to the same slot", into: out)
                return
            }
            located.append((key, hash, store))
            i += step
        }
        let exists = located.contains { $0.store.get($0.key, hash: $0.hash, nowMs: now) != nil }
        if keysOnly {
            RESPWriter.integer(exists ? 0 : 1, into: out)
            return
        }
        if let wal = log.wal, !wal.acceptsWrites {
            RESPWriter.error(string: Self.walRefusalRESP, into: out)
            return
        }
        if let unleased = located.lazy.map({ KeyHash.shard(of: $0.hash, shardCount: self.shards.count) }).first(where: { self.lacksLease($0) }) {
            RESPWriter.error(string: leaseRefusalText(unleased), into: out)
            return
        }
        if args.matches(0, Self.undoName) {
            for (position, key) in located.enumerated() {
                let value = args.bytes(2 + 2 * position)
                guard let current = key.store.get(key.key, hash: key.hash, nowMs: now), current.value.elementsEqual(value) else { continue }
                recordedWrite(key.key, hash: key.hash, store: key.store) { _ = key.store.delete(key.key, hash: key.hash, nowMs: now) }
            }
            RESPWriter.integer(1, into: out)
            return
        }
        if exists {
            RESPWriter.integer(0, into: out)
            return
        }
        for (position, key) in located.enumerated() {
            recordedWrite(key.key, hash: key.hash, store: key.store) {
                key.store.set(key.key, hash: key.hash, value: args.bytes(2 + 2 * position), expiryMs: 0, nowMs: now)
            }
        }
        RESPWriter.integer(1, into: out)
    }

    // MARK: - the coordinator's helpers

    private func sendToEveryPart(_ pending: inout PendingMSetNX, _ name: StaticString, id: UInt64) {
        for part in pending.parts { sendMSetNXPart(name, part, id: id, keysOnly: false) }
        pending.awaiting = pending.parts.count
        keySets.pending[id] = pending
    }

    private func sendMSetNXPart(_ name: StaticString, _ part: PendingMSetNX.Part, id: UInt64, keysOnly: Bool) {
        scratch.part.clear()
        let sent = keysOnly ? stride(from: 0, to: part.pairs.count, by: 2).map { part.pairs[$0] } : part.pairs
        RESPWriter.arrayHeader(1 + sent.count, into: scratch.part)
        RESPWriter.bulk(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), into: scratch.part)
        for bytes in sent { bytes.withUnsafeBytes { RESPWriter.bulk($0, into: scratch.part) } }
        forwarding.awaitedReplies += 1
        let header = ForwardHeader(kind: .request, wire: .resp2, connectionIndex: Self.msetnxMarker, connectionGeneration: 0,
                                   slotSequence: id, payloadLength: scratch.part.readableBytes)
        sendRecord(to: part.reactor, header: header, payload: scratch.part.readableView)
    }

    private func localWriteRefusal() -> [UInt8]? {
        if let wal = log.wal, !wal.acceptsWrites { return Array("-\(Self.walRefusalRESP)\r\n".utf8) }
        return nil
    }

    private func anyLocalKeyExists(_ pairs: [[UInt8]]) -> Bool {
        stride(from: 0, to: pairs.count, by: 2).contains { pair in
            pairs[pair].withUnsafeBytes { key in
                let hash = KeyHash.hash(key)
                return shards[KeyHash.shard(of: hash, shardCount: shards.count)]!.get(key, hash: hash, nowMs: now) != nil
            }
        }
    }

    private func setLocalPairs(_ pairs: [[UInt8]]) {
        for pair in stride(from: 0, to: pairs.count, by: 2) {
            pairs[pair].withUnsafeBytes { key in
                pairs[pair + 1].withUnsafeBytes { value in
                    let hash = KeyHash.hash(key)
                    let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)]!
                    recordedWrite(key, hash: hash, store: store) { store.set(key, hash: hash, value: value, expiryMs: 0, nowMs: now) }
                }
            }
        }
    }

    /// Answers the client (held until this reactor's own writes are durable).
    private func finishMSetNX(_ pending: PendingMSetNX, reply: [UInt8]) {
        guard let connection = table.connection(slot: Int(pending.connectionIndex), generation: pending.generation),
              !connection.isClosed else {
            log.replyAwaitsLog = false  // nobody to hold a reply for
            return
        }
        scratch.reply.clear()
        scratch.reply.append(reply)
        countErrorReply(scratch.reply, wire: connection.wire ?? .resp2, id: Int(RESPCommand.msetnx.rawValue))
        fillLocal(connection, sequence: pending.sequence, scratch.reply.readableView)
        markDirty(connection)
    }
}
