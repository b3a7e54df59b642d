import AegisProtocol
import AegisStore
import CSupport

/// Requests that wait on their shard's owning reactor for the shard's lease,
/// instead of being answered TRYAGAIN at once.
///
/// A write reaches a reactor that is its shard's primary in this node's
/// view but holds no lease for it in three moments of an ordinary day: the
/// shard is being handed to another node (a stop, a rolling restart), an
/// election is under way after a holder failed, or this node restarted and
/// has not heard from the holder yet (its first renewal is up to a lease
/// tick away). Each ends within a lease: this node wins the shard, or the
/// holder becomes known and the routing sends the shard's requests there.
/// So the request waits for that, up to `parkingLimitMs`, and then runs where the
/// shard is writable: here, or forwarded to the new primary. Only what is
/// still unresolved at the limit (a partition that cut this node from a
/// majority) is answered with the refusal, as before parking. A request
/// another node forwarded for a shard this node is not primary of, where
/// its routing names no holder elsewhere yet, waits here the same way
/// (`passOnIfNotPrimary`), for the holder to become known.
///
/// Order: once a shard has a request waiting, every later request for it
/// waits behind it, reads too. A client's pipelined `SET k v; GET k` must
/// not read k before its own write. Requests of a shard leave in arrival
/// order, and in one pass: those for another node go through this
/// reactor's ring to the cluster loop in that order, ahead of anything this
/// reactor reads afterwards. One gap: while requests wait here for the
/// routing to name a known holder, a client of another reactor whose
/// routing already sends the shard to another node can pass them.
///
/// Bounds: `limitBytes` of request bytes per reactor; past it a request
/// that would wait is refused at once. A closed connection's requests are
/// dropped when their turn comes. A draining node parks nothing and
/// answers what waits (a stopping node hands its shards off first, and a
/// write parked then could otherwise hold the stop until its limit).
///
/// Invariant: every waiting request's shard is owned by this reactor
/// (asserted where it parks), so that it can run here when its turn comes.
///
/// Confined to its reactor.
struct ParkedRequests {
    static let limitBytes = 4 << 20

    struct Waiting {
        let shard: Int
        let wire: WireKind
        let isWrite: Bool
        let bytes: [UInt8]
        let replyTo: MoveReplyTarget
        let deadlineMs: Int64
    }

    /// Arrival order: a shard's requests keep theirs.
    private(set) var queue: [Waiting] = []
    private var waitingPerShard: [Int32]
    private(set) var bytes = 0
    /// Requests this reactor sent on to another node for whoever asked it
    /// (`Reactor.relay`): another reactor's that waited here, and other
    /// nodes' for a shard whose holder is a third node. Their replies come
    /// back here (`relayMarker`) and are passed on to the asker.
    var relays: [UInt64: (header: ForwardHeader, source: Int)] = [:]
    var nextRelayID: UInt64 = 0

    init(shardCount: Int) {
        waitingPerShard = [Int32](repeating: 0, count: shardCount)
    }

    @inline(__always) var isEmpty: Bool { queue.isEmpty }

    @inline(__always) func hasWaiting(_ shard: Int) -> Bool { !queue.isEmpty && waitingPerShard[shard] > 0 }

    var earliestDeadlineMs: Int64 { queue.first?.deadlineMs ?? .max }

    mutating func append(_ request: Waiting) {
        queue.append(request)
        waitingPerShard[request.shard] += 1
        bytes += request.bytes.count
    }

    mutating func takeAll() -> [Waiting] {
        var taken: [Waiting] = []
        swap(&taken, &queue)
        for request in taken { waitingPerShard[request.shard] -= 1 }
        bytes = 0
        assert(waitingPerShard.allSatisfy { $0 == 0 }, "a shard counted waiting requests that are not queued")
        return taken
    }
}

extension Reactor {
    /// Marks a request this reactor relays for another reactor of the node
    /// (`ParkedRequests.relays`); no connection has this index.
    static let relayMarker = UInt32.max - 2

    enum ParkingDecision { case run, park, refuse }

    /// Whether a one-key request for `shard` runs or goes on now, waits,
    /// or is refused because the waiting room is full. Only the shard's
    /// owning reactor parks it (another reactor sends it there, as it
    /// would to run it). It waits behind requests of its shard that wait;
    /// a write waits, where none do, when this node is the shard's primary
    /// without its lease.
    @inline(__always)
    func parking(shard: Int, isWrite: Bool) -> ParkingDecision {
        let behindOthers = parked.hasWaiting(shard)
        if !behindOthers {
            // The pass's clock reading, not a fresh one: an older reading can
            // only find the lease still running, and then the write's own
            // lease check (`lacksLease`, on a fresh reading) refuses it as
            // before parking. One clock read per write, not two.
            guard isWrite, owner(ofShard: shard) == index, routes.isPrimaryHere(shard),
                  !leases.allowsWrite(shard, nowMs: monotonicMs), node.state != .draining else { return .run }
        }
        if parked.bytes >= ParkedRequests.limitBytes { return behindOthers ? .refuse : .run }
        return .park
    }

    /// The longest a request waits for its shard's lease: a lease, enough
    /// for a hand-off, an election after a failure, or a restarted node's
    /// first renewal from the holder; never past write_timeout.
    var parkingLimitMs: Int64 {
        let leaseMs = node.config.leaseDuration.milliseconds
        let writeMs = node.runtime.writeTimeoutMs.load(ordering: .relaxed)
        return writeMs > 0 ? min(leaseMs, writeMs) : leaseMs
    }

    /// Parks a request of a client of this reactor; its reply slot is
    /// opened now, so the replies of later requests wait behind it.
    func parkLocal(_ connection: Connection, shard: Int, isWrite: Bool, bytes: UnsafeRawBufferPointer) {
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        parkLocal(connection, sequence: sequence, shard: shard, isWrite: isWrite, bytes: bytes)
    }

    /// Parks a request (or a part of MGET, MSET, DEL) whose slot is open.
    func parkLocal(_ connection: Connection, sequence: UInt64, shard: Int, isWrite: Bool, bytes: UnsafeRawBufferPointer) {
        park(shard: shard, wire: connection.wire ?? .resp2, isWrite: isWrite, bytes: bytes,
             replyTo: .local(connectionIndex: connection.index, generation: connection.generation, sequence: sequence))
    }

    func park(shard: Int, wire: WireKind, isWrite: Bool, bytes: UnsafeRawBufferPointer, replyTo: MoveReplyTarget) {
        // A waiting request may run here later: only the owner of its shard can.
        assert(owner(ofShard: shard) == index, "shard \(shard) parked on reactor \(index), which does not own it")
        parked.append(.init(shard: shard, wire: wire, isWrite: isWrite, bytes: [UInt8](bytes), replyTo: replyTo,
                            deadlineMs: monotonicMs + parkingLimitMs))
        counters.requestsParked &+= 1
    }

    /// A client's one-key request on this reactor: true when it was parked
    /// or refused here (the caller is done with it), false when it runs or
    /// goes on now. `sequence`: its reply slot, when already open (a part
    /// of MGET, MSET, DEL).
    func parkOrRefuse(_ connection: Connection, shard: Int, isWrite: Bool, bytes: UnsafeRawBufferPointer,
                      commandID: Int, sequence: UInt64? = nil) -> Bool {
        switch parking(shard: shard, isWrite: isWrite) {
        case .run:
            return false
        case .park:
            if let sequence {
                parkLocal(connection, sequence: sequence, shard: shard, isWrite: isWrite, bytes: bytes)
            } else {
                parkLocal(connection, shard: shard, isWrite: isWrite, bytes: bytes)
            }
        case .refuse:
            let wire = connection.wire ?? .resp2
            if let sequence {
                scratch.reply.clear()
                writeParkingFull(wire: wire, request: bytes, shard: shard, into: scratch.reply)
                fillLocal(connection, sequence: sequence, scratch.reply.readableView)
            } else {
                withRejectedReply(connection, commandID) { writeParkingFull(wire: wire, request: bytes, shard: shard, into: $0) }
            }
        }
        return true
    }

    /// A one-key request forwarded here: nil when it runs now, false when
    /// it was parked (nothing is written to `out`), true when it was
    /// refused (the refusal is in `out`).
    func parkOrRefuse(shard: Int, isWrite: Bool, wire: WireKind, request: UnsafeRawBufferPointer,
                      replyTo: MoveReplyTarget, into out: WireBuffer) -> Bool? {
        switch parking(shard: shard, isWrite: isWrite) {
        case .run:
            return nil
        case .park:
            park(shard: shard, wire: wire, isWrite: isWrite, bytes: request, replyTo: replyTo)
            return false
        case .refuse:
            writeParkingFull(wire: wire, request: request, shard: shard, into: out)
            return true
        }
    }

    /// The answer to a request that cannot wait: the waiting room is full
    /// and earlier requests of its shard wait, so running it would pass them.
    func writeParkingFull(wire: WireKind, request: UnsafeRawBufferPointer, shard: Int, into out: WireBuffer) {
        ForwardReplies.error(wire: wire, request: request,
                             text: "TRYAGAIN shard \(shard) has requests waiting for its lease on this node and no room for more; retry",
                             into: out)
    }

    /// Runs, forwards or keeps each waiting request, in arrival order:
    /// after a new lease set or routing, and as limits pass.
    ///
    /// A request goes on to another node only once the routing names the
    /// shard's lease holder there. A routing built before this node knew
    /// one (a restarted node that has met only some members) names the
    /// map's first owner, which may answer that another node owns it.
    func resumeParked() {
        guard !parked.isEmpty else { return }
        let draining = node.state == .draining
        var stillWaiting = Set<Int>()
        for request in parked.takeAll() {
            let shard = request.shard
            // Behind a request of its shard that still waits, a request waits
            // too, whatever its own limit: limits only grow along the queue
            // (unless write_timeout was lowered meanwhile).
            let outOfTime = draining || monotonicMs >= request.deadlineMs
            let ready: Bool
            if routes.isPrimaryHere(shard) {
                ready = !request.isWrite || !leases.enforced || leases.allowsWrite(shard, nowMs: aegis_monotonic_ms_coarse())
            } else {
                ready = routes.primaryIsKnownHolder(shard)
            }
            if stillWaiting.contains(shard) || (!ready && !outOfTime) {
                parked.append(request)
                stillWaiting.insert(shard)
                continue
            }
            if !ready { counters.parkedTimedOut &+= 1 }
            // Out of time here: a write is refused with the lease refusal
            // it would have had at once; for another node, it goes to the
            // map's primary, as it would have at once.
            if routes.isPrimaryHere(shard) { runParked(request) } else { sendParkedOn(request) }
        }
    }

    /// Runs a waiting request here, as it would have run on arrival.
    private func runParked(_ request: Waiting) {
        request.bytes.withUnsafeBytes { bytes in
            scratch.reply.clear()
            switch request.replyTo {
            case .local(let connectionIndex, let generation, let sequence):
                guard let connection = table.connection(slot: Int(connectionIndex), generation: generation), !connection.isClosed else { return }
                _ = runRequest(wire: request.wire, request: bytes, into: scratch.reply, parkingReplyTo: nil)
                fillLocal(connection, sequence: sequence, scratch.reply.readableView)
                markDirty(connection)
            case .forwarded(let header, let source):
                _ = runRequest(wire: request.wire, request: bytes, into: scratch.reply, parkingReplyTo: nil)
                answerForwarded(header.reply(payloadLength: scratch.reply.readableBytes), to: source, scratch.reply.readableView)
            }
        }
    }

    /// A waiting request whose shard now has its primary on another node:
    /// a client's goes there as if it had just arrived; another reactor's
    /// goes there through this reactor, which passes the reply back; one
    /// another node forwarded is treated as any such request for a shard
    /// this node is not primary of (`passOnIfNotPrimary`).
    private func sendParkedOn(_ request: Waiting) {
        request.bytes.withUnsafeBytes { bytes in
            switch request.replyTo {
            case .local(let connectionIndex, let generation, let sequence):
                guard let connection = table.connection(slot: Int(connectionIndex), generation: generation), !connection.isClosed else { return }
                forwardRequest(to: route(shard: request.shard), connection: connection, sequence: sequence, bytes: bytes, shard: request.shard)
            case .forwarded(let header, let source) where source == routes.clusterEndpoint:
                scratch.reply.clear()
                if passOnIfNotPrimary(header, request: bytes, into: scratch.reply, waited: true) == .relayed { return }
                answerForwarded(header.reply(payloadLength: scratch.reply.readableBytes), to: source, scratch.reply.readableView)
            case .forwarded(let header, let source):
                if node.interconnect.hasExited(routes.clusterEndpoint) {
                    scratch.reply.clear()
                    ForwardReplies.stopping(wire: request.wire, request: bytes, into: scratch.reply)
                    sendRecord(to: source, header: header.reply(payloadLength: scratch.reply.readableBytes), payload: scratch.reply.readableView)
                    return
                }
                relay(header, from: source, request: bytes, shard: request.shard, hops: header.hops)
            }
        }
    }

    /// Sends a request that `source` (another reactor, or another node
    /// through the cluster loop) asked this reactor to run on to the node
    /// the routing names, as a request of this reactor's own; the reply
    /// comes back here (`relayMarker`) and `completeRelay` passes it on.
    func relay(_ header: ForwardHeader, from source: Int, request bytes: UnsafeRawBufferPointer, shard: Int, hops: UInt8) {
        let id = parked.nextRelayID
        parked.nextRelayID &+= 1
        parked.relays[id] = (header, source)
        forwarding.awaitedReplies += 1
        let relayed = ForwardHeader(
            kind: .request, wire: header.wire, connectionIndex: Self.relayMarker, connectionGeneration: 0,
            slotSequence: id, payloadLength: bytes.count,
            route: ForwardRoute(originNode: UInt16.max, originReactor: UInt16(index), shard: UInt32(shard)), hops: hops,
            flags: header.flags & ForwardHeader.Flags.readOnly)
        sendRecord(to: routes.clusterEndpoint, header: relayed, payload: bytes)
    }

    /// The reply to a request relayed by `relay`, passed on to the reactor
    /// or node that asked.
    func completeRelay(id: UInt64, reply payload: UnsafeRawBufferPointer) {
        guard let (header, source) = parked.relays.removeValue(forKey: id) else { return }
        sendRecord(to: source, header: header.reply(payloadLength: payload.count), payload: payload)
    }

    typealias Waiting = ParkedRequests.Waiting
}
