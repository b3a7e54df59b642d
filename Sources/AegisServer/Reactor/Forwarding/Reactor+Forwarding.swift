import AegisProtocol
import AegisStore
import CSupport

/// Routing between reactors: a request whose shard another reactor owns
/// travels there as a record holding its raw bytes; the reply comes back the
/// same way, already encoded for the client, and fills the connection's
/// reply slot. Records that do not fit a full ring wait in `overflow` and
/// keep their order.
///
/// Bound: what a reactor has sent but its peers have not taken yet (the
/// overflow buffers plus the heap copies of large payloads) may exceed
/// `outboundLimitBytes` only by the requests of one read. Past it, the
/// reactor parks every client connection that becomes readable (no read,
/// no epoll interest) until the backlog is under half the limit again: a
/// stalled peer stops its clients, it does not grow the node.
extension Reactor {
    static let outboundLimitBytes = 4 << 20

    @inline(__always) var outboundIsOverLimit: Bool {
        forwarding.backlog.queuedBytes + node.interconnect.indirectBytesInFlight(from: index) > Self.outboundLimitBytes
    }

    /// Stops reading a readable connection until the backlog shrinks (its
    /// replies still go out); its bytes wait in the kernel's socket buffer,
    /// where they cost us nothing.
    func parkForBacklog(_ connection: Connection) {
        if !isParkedForBacklog(connection) {
            forwarding.backlog.park(connection)
        }
        updateInterest(connection)
    }

    @inline(__always) func isParkedForBacklog(_ connection: Connection) -> Bool {
        let slot = Int(connection.index)
        return slot < forwarding.backlog.parkedGeneration.count && forwarding.backlog.parkedGeneration[slot] == UInt64(connection.generation) + 1
    }

    /// Called every iteration while connections are parked (the loop then
    /// polls every millisecond: a peer freeing heap copies sends no wake-up).
    func resumeParkedIfBacklogShrank() {
        guard forwarding.backlog.queuedBytes + node.interconnect.indirectBytesInFlight(from: index) <= Self.outboundLimitBytes / 2 else { return }
        let parked = forwarding.backlog.parked
        forwarding.backlog.unparkAll()
        for connection in parked where !connection.isClosed {
            updateInterest(connection)
        }
    }

    /// Bytes this reactor holds for its peers, for the memory report: the
    /// overflow buffers' allocations and the heap copies not yet freed.
    var outboundMemoryBytes: Int {
        forwarding.overflow.reduce(0) { $0 + $1.capacity } + node.interconnect.indirectBytesInFlight(from: index)
    }

    @inline(__always) func owner(ofShard shard: Int) -> Int {
        node.shardOwner[shard]
    }

    /// Sends one request (raw client bytes) to `target`, answering into slot
    /// `sequence`. `shard` is needed when the target is the cluster loop
    /// (another node is the primary): the loop sends it to that primary.
    /// `readOnly`: a one-key read, which a replica's copy may answer where
    /// the primary cannot be reached (at read_quorum R >= 2 that copy asks
    /// R - 1 other replicas in turn: ReadQuorumState).
    func forwardRequest(to target: Int, connection: Connection, sequence: UInt64, bytes: UnsafeRawBufferPointer, shard: Int? = nil,
                        readOnly: Bool = false) {
        let wire = connection.wire ?? .resp2
        var route = ForwardRoute.local
        if target == routes.clusterEndpoint {
            if node.interconnect.hasExited(target) {
                // The node is stopping and its cluster loop is gone: answer
                // now rather than leave the slot waiting for a reply that
                // cannot come.
                scratch.reply.clear()
                ForwardReplies.stopping(wire: wire, request: bytes, into: scratch.reply)
                fillLocal(connection, sequence: sequence, scratch.reply.readableView)
                markDirty(connection)
                return
            }
            guard let shard else { preconditionFailure("a request for another node must name its shard") }
            route = ForwardRoute(originNode: UInt16.max, originReactor: UInt16(index), shard: UInt32(shard))
        } else {
            // Between this node's reactors; the cluster loop counts what goes to other nodes.
            counters.forwardedRequests &+= 1
        }
        connection.forwardsInFlight += 1
        forwarding.awaitedReplies += 1
        let header = ForwardHeader(
            kind: .request, wire: wire,
            connectionIndex: connection.index, connectionGeneration: connection.generation,
            slotSequence: sequence, payloadLength: bytes.count, route: route,
            flags: readOnly ? ForwardHeader.Flags.readOnly : 0)
        sendRecord(to: target, header: header, payload: bytes)
    }

    /// Forwards a whole request that gets one reply slot of its own.
    @inline(__always) func forward(to target: Int, connection: Connection, bytes: UnsafeRawBufferPointer, shard: Int? = nil,
                                   readOnly: Bool = false) {
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        forwardRequest(to: target, connection: connection, sequence: sequence, bytes: bytes, shard: shard, readOnly: readOnly)
    }

    func sendRecord(to target: Int, header: ForwardHeader, payload: UnsafeRawBufferPointer) {
        ownerThread.assertOwner("a reactor's forwarding state")
        let ring = node.interconnect.ring(from: index, to: target)
        forwarding.mustNotify[target] = true
        let inlineLength = ForwardHeader.size + payload.count
        if inlineLength <= ring.maxPayload {
            if forwarding.overflow[target].isEmpty, let destination = ring.reserve(payloadLength: inlineLength) {
                header.store(to: destination)
                if payload.count > 0 {
                    (destination + ForwardHeader.size).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
                }
                ring.commit(payloadLength: inlineLength, flags: RecordFlags.inline)
                return
            }
            queueOverflow(target: target, header: header, flags: RecordFlags.inline, payload: payload)
        } else {
            // Too large for the ring: hand over a heap copy; the consumer frees it.
            let copy = UnsafeMutableRawPointer.allocate(byteCount: payload.count, alignment: 16)
            copy.copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            node.interconnect.noteIndirectSent(from: index, bytes: payload.count)
            var address = UInt(bitPattern: copy)
            withUnsafeBytes(of: &address) { pointerBytes in
                if forwarding.overflow[target].isEmpty, let destination = ring.reserve(payloadLength: ForwardHeader.size + 8) {
                    header.store(to: destination)
                    (destination + ForwardHeader.size).copyMemory(from: pointerBytes.baseAddress!, byteCount: 8)
                    ring.commit(payloadLength: ForwardHeader.size + 8, flags: RecordFlags.indirect)
                } else {
                    queueOverflow(target: target, header: header, flags: RecordFlags.indirect, payload: pointerBytes)
                }
            }
        }
    }

    /// Overflow layout per record: [u32 length][u32 flags][header][payload].
    private func queueOverflow(target: Int, header: ForwardHeader, flags: UInt32, payload: UnsafeRawBufferPointer) {
        let buffer = forwarding.overflow[target]
        let length = ForwardHeader.size + payload.count
        forwarding.backlog.queuedBytes += 8 + length
        buffer.reserve(8 + length)
        buffer.appendBigEndian(UInt32(length))
        buffer.appendBigEndian(flags)
        let space = buffer.writableSpace(minimum: ForwardHeader.size)
        header.store(to: space.baseAddress!)
        buffer.commitWrite(ForwardHeader.size)
        buffer.append(payload)
    }

    /// Moves waiting records into their rings, in order, as far as they fit.
    func flushOverflow() {
        for target in 0..<forwarding.overflow.count where !forwarding.overflow[target].isEmpty {
            let buffer = forwarding.overflow[target]
            if node.interconnect.hasExited(target) {
                discardOverflow(target)
                continue
            }
            let ring = node.interconnect.ring(from: index, to: target)
            while !buffer.isEmpty {
                let view = buffer.readableView
                let length = Int(view.loadBigEndian(fromByteOffset: 0, as: UInt32.self))
                let flags = view.loadBigEndian(fromByteOffset: 4, as: UInt32.self)
                guard let destination = ring.reserve(payloadLength: length) else { break }
                destination.copyMemory(from: view.baseAddress! + 8, byteCount: length)
                ring.commit(payloadLength: length, flags: flags)
                buffer.consume(8 + length)
                forwarding.backlog.queuedBytes -= 8 + length
                forwarding.mustNotify[target] = true
            }
            if buffer.isEmpty { buffer.releaseIfIdle(keep: 64 * 1024) }
        }
    }

    /// A peer left its loop only after every reactor had drained, so every
    /// connection is closed: the replies queued for it have no reader and
    /// the requests no one waiting. Waiting for its ring would hang the stop.
    private func discardOverflow(_ target: Int) {
        let buffer = forwarding.overflow[target]
        while !buffer.isEmpty {
            let view = buffer.readableView
            let length = Int(view.loadBigEndian(fromByteOffset: 0, as: UInt32.self))
            let flags = view.loadBigEndian(fromByteOffset: 4, as: UInt32.self)
            if flags & RecordFlags.indirect != 0 {
                let record = UnsafeRawBufferPointer(rebasing: view[8..<(8 + length)])
                let header = ForwardHeader.load(from: record)
                let address = UInt(bitPattern: record.loadUnaligned(fromByteOffset: ForwardHeader.size, as: Int.self))
                UnsafeMutableRawPointer(bitPattern: address)!.deallocate()
                node.interconnect.noteIndirectFreed(from: index, bytes: header.payloadLength)
            }
            buffer.consume(8 + length)
            forwarding.backlog.queuedBytes -= 8 + length
        }
        buffer.releaseIfIdle(keep: 0)
    }

    func notifyTargets() {
        for target in 0..<forwarding.mustNotify.count where forwarding.mustNotify[target] {
            forwarding.mustNotify[target] = false
            node.interconnect.notify(target)
        }
    }

    /// Handles what other reactors sent: requests for our shards and replies
    /// for our connections. Bounded per ring per iteration for fairness.
    func drainInbound() {
        ownerThread.assertOwner("a reactor's inbound rings")
        let interconnect = node.interconnect
        // A request forwarded here may have reached its first reactor after
        // this loop read the clock: read it again, once per drain, before
        // running any, so an expiry is never judged by a time older than
        // the request.
        var clockRefreshed = false
        for source in 0..<interconnect.endpointCount where source != index {
            interconnect.drain(from: source, to: index) { header, payload in
                if !clockRefreshed && header.kind == .request {
                    now = aegis_now_ms()
                    clockRefreshed = true
                }
                handleRecord(header, payload: payload, from: source)
            }
        }
        sendReplicaAcks()
    }

    private func handleRecord(_ header: ForwardHeader, payload: UnsafeRawBufferPointer, from source: Int) {
        switch header.kind {
        case .request:
            scratch.reply.clear()
            let fromCopy = source == routes.clusterEndpoint && header.flags & ForwardHeader.Flags.answerFromCopy != 0
                && Int(header.route.shard) < routes.target.count
            if header.connectionIndex == Self.moveMarker {
                executeMoveIn(payload, into: scratch.reply)
            } else if header.connectionIndex == Self.msetnxMarker && source != routes.clusterEndpoint {
                executeMSetNXPart(payload, into: scratch.reply)
            } else if fromCopy, !routes.isPrimaryHere(Int(header.route.shard)) {
                answerReadFromCopy(header, request: payload, into: scratch.reply)
            } else if source == routes.clusterEndpoint, let notHere = passOnIfNotPrimary(header, request: payload, into: scratch.reply) {
                if notHere != .refused { return }
            } else {
                // Sent to a copy by a node that still names the primary it
                // cannot reach, while this node won the shard (passOnIfNotPrimary
                // found it primary here): it runs as any request of the shard,
                // counted apart from the reads a copy answers.
                if fromCopy { counters.readsFromCopyAtHolder &+= 1 }
                // A RENAME/COPY whose destination is another reactor's answers later (KeyMoves.swift).
                moves.replyTo = .forwarded(header: header, source: source)
                moves.deferred = false
                counters.commands &+= 1
                let ran = runRequest(wire: header.wire, request: payload, into: scratch.reply,
                                     parkingReplyTo: .forwarded(header: header, source: source))
                moves.replyTo = nil
                if moves.deferred || !ran { return }
            }
            answerForwarded(header.reply(payloadLength: scratch.reply.readableBytes), to: source, scratch.reply.readableView)
            scratch.reply.releaseIfIdle(keep: 1 << 20)
        case .reply:
            forwarding.awaitedReplies -= 1
            if header.connectionIndex == Self.moveMarker {
                completeMove(id: header.slotSequence, reply: payload)
                return
            }
            if header.connectionIndex == Self.msetnxMarker && source != routes.clusterEndpoint {
                continueMSetNX(id: header.slotSequence, from: source, reply: payload)
                return
            }
            if header.connectionIndex == Self.relayMarker && source == routes.clusterEndpoint {
                completeRelay(id: header.slotSequence, reply: payload)
                return
            }
            let slot = Int(header.connectionIndex)
            guard let connection = table.connection(slot: slot, generation: header.connectionGeneration), !connection.isClosed else {
                return // the client went away; its reply has nowhere to go
            }
            connection.replies.fill(sequence: header.slotSequence, with: payload)
            connection.noteForwardedReply(bytes: payload.count)
            markDirty(connection)
        case .replicate:
            applyReplicated(header, record: payload)
        case .replicaProgress:
            applyReplicaProgress(header, payload: payload)
        case .replicaAck, .streamAck, .shardFrozen, .farewell, .farewellAck:
            break  // acknowledgements and farewells go between cluster loops only; a freeze goes to the loop
        case .readProbe:
            answerReadProbe(header, key: payload)
        case .readAnswer:
            collectReadAnswer(header, record: payload)
        case .readRepair:
            applyReadRepair(header, record: payload)
        case .streamSlice:
            streamSlicesGranted(header)
        case .streamCancel:
            streamCancelled(header)
        case .streamData:
            applyStreamSlice(header, payload: payload)
        }
    }

    /// Runs a request forwarded here (or one that waited here for its
    /// shard's lease); it targets one of our shards. A one-key request that
    /// must wait for the lease is parked with `parkingReplyTo` instead, and
    /// false is returned: nothing was written to `out`. A request that
    /// waited already comes with nil and always runs.
    func runRequest(wire: WireKind, request: UnsafeRawBufferPointer, into out: WireBuffer, parkingReplyTo: MoveReplyTarget?) -> Bool {
        switch wire {
        case .binary:
            guard case .complete(let frame) = BinaryFrameParser.parse(request, limits: scratch.binaryLimits) else {
                assertionFailure("a forwarded binary frame was parsed once already")
                return true
            }
            // A read waits only behind waiting writes: with none, its key is
            // not hashed twice.
            if let parkingReplyTo, leases.enforced, let command = BinaryCommand(rawValue: frame.commandCode),
               command == .set || command == .del || (command == .get && !parked.isEmpty) {
                let key = UnsafeRawBufferPointer(rebasing: request[frame.keyOffset..<(frame.keyOffset + frame.keyLength)])
                let shard = KeyHash.shard(of: KeyHash.hash(key), shardCount: shards.count)
                if let answered = parkOrRefuse(shard: shard, isWrite: command != .get, wire: wire, request: request,
                                               replyTo: parkingReplyTo, into: out) { return answered }
            }
            executeForwardedBinary(frame, request: request, into: out)
            countErrorReply(out, wire: wire, id: CommandMetricsLayout.binaryID(frame.commandCode))
        case .resp2, .resp3:
            guard case .complete = RESPRequestParser.parse(request, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
                assertionFailure("a forwarded RESP command was parsed once already")
                return true
            }
            let args = ArgumentsView(base: request.baseAddress!, arguments: scratch.forwardedArguments)
            let command = RESPCommand.lookup(args.bytes(0))
            if let parkingReplyTo, leases.enforced, command.isWrite || !parked.isEmpty, command.actsOnOneKey(argumentCount: args.count) {
                let shard = KeyHash.shard(of: KeyHash.hash(args.bytes(1)), shardCount: shards.count)
                if let answered = parkOrRefuse(shard: shard, isWrite: command.isWrite, wire: wire, request: request,
                                               replyTo: parkingReplyTo, into: out) { return answered }
            }
            executeOwned(command, args, version: wire == .resp3 ? .resp3 : .resp2, into: out)
            countErrorReply(out, wire: wire, id: Int(command.rawValue))
        }
        return true
    }
}
