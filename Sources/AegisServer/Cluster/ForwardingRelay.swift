import AegisCluster
import AegisProtocol
import CSupport
import AegisStore

/// The cluster loop's half of forwarding: it takes requests for shards
/// another node is primary for from the reactors' rings, batches them per
/// peer per loop iteration into one frame on the peer's bulk lane, hands
/// requests that peers sent to the reactor owning the shard here, and
/// carries every reply back the way its request came.
///
/// Batch frame (bulk lane, after the link's 4-byte length prefix):
///     [u8 marker 0xF1] then records: [u32 length][ForwardHeader][payload]
/// (header fields in this machine's byte order, like the rings: every node
/// of a cluster runs the same build on the same architecture).
///
/// Invariants:
/// - every request taken from a reactor is answered exactly once: by the
///   peer's reply, or by an error (no link, link lost, timeout, breaker
///   open, too large, node stopping); `inFlight` holds the ones waiting;
/// - records for a reactor keep their order: they go into its ring only
///   while `pendingForReactor[r]` is empty;
/// - `originNode` in a header the loop hands to a reactor is this relay's
///   number for the peer the request came from (`peerAddress`), or
///   `localOrigin` when the request came from this node itself.
///
/// Confined to the cluster loop's thread.
final class ForwardingRelay {
    static let batchMarker: UInt8 = 0xF1
    /// A request whose reply has not come back this long is answered with
    /// an error, so a peer that hangs never hangs the client.
    static let defaultReplyTimeoutMs: Int64 = 5_000
    /// `defaultReplyTimeoutMs`, or longer when the primary may hold a write's reply
    /// for its write quorum (see `replyTimeout(writeQuorum:writeTimeoutMs:)`).
    var replyTimeoutMs = ForwardingRelay.defaultReplyTimeoutMs

    /// How long to wait for a forwarded request's reply: at W >= 2 the
    /// primary answers a write at the latest at write_timeout (with a
    /// TIMEOUT that says the write may have been applied), and at R >= 2 a
    /// read at the latest at write_timeout too (TRYAGAIN), so the ingress
    /// waits that long and 2 s more for the answer to travel, rather than
    /// answering first with an error that says less. write_timeout 0 (no
    /// limit) leaves it unlimited too.
    static func replyTimeout(writeQuorum: Int, readQuorum: Int = 1, writeTimeoutMs: Int64) -> Int64 {
        guard writeQuorum >= 2 || readQuorum >= 2 else { return defaultReplyTimeoutMs }
        guard writeTimeoutMs > 0 else { return Int64.max / 1_000_000 }
        return max(defaultReplyTimeoutMs, writeTimeoutMs + 2_000)
    }
    /// A batch is sent before it passes this (the bulk lane's frame limit is 8 MiB).
    static let batchLimitBytes = 1 << 20
    /// Bigger single records are refused with an error: one frame carries one record at most.
    static let recordLimitBytes = PeerLane.bulk.maxFrameBytes - 64
    static let localOrigin: UInt16 = UInt16.max - 1
    /// Latency buckets of aegis_forward_latency_seconds (upper bounds, µs).
    static let latencyBucketsMicros: [Int64] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000]

    /// A request's ticket (ForwardRoute.ticket), given when it is sent.
    typealias InFlightKey = UInt64

    struct InFlight {
        var peer: UInt16
        var sentAtNs: Int64
        var header: ForwardHeader
        var requestID: UInt64
    }

    struct Counters {
        var forwardedByPeer: [String: Int] = [:]
        var errorsByReason: [String: Int] = [:]
        var latencyBuckets = [Int](repeating: 0, count: ForwardingRelay.latencyBucketsMicros.count + 1)
        var latencySumMicros: Int64 = 0
        var latencyCount = 0
        /// Farewells this node sent as it stopped, those it received from
        /// stopping peers, and the acknowledgements of its own.
        var farewellsSent = 0
        var farewellsReceived = 0
        var farewellsAcknowledged = 0
        /// Reads whose primary could not be reached, sent to a replica's
        /// copy instead: this node's own, or a follower's on another node.
        var readsToOwnCopy = 0
        var readsToPeerCopy = 0
    }

    let interconnect: Interconnect
    let shardOwner: [Int]
    let routingBoard: RoutingBoard
    let breakers: CircuitBreakerRegistry
    let selfID: String
    var endpoint: Int { interconnect.clusterEndpoint }

    private(set) var routing: ClusterRouting?
    private var routingVersion: UInt64 = 0
    /// Gossip address of each peer number, and back. The arrays below
    /// indexed by peer number grow with these (`number(forPeer:name:)`):
    /// per request, the relay looks things up by number, never by string.
    private var peerAddress: [String] = []
    private var peerName: [String] = []
    private var peerNumber: [String: UInt16] = [:]
    /// Node id → gossip address, from the membership.
    private var gossipAddressOf: [String: String] = [:]
    /// Per shard, where a request for it goes: a peer number, or
    /// `Self.shardIsHere` / `Self.shardHasNoAddress` /
    /// `Self.shardPrimaryStopping`; empty without a map. Rebuilt whenever
    /// the map, the addresses or the peers that said farewell change.
    private var shardPeer: [Int32] = []
    private static let shardIsHere: Int32 = -1
    private static let shardHasNoAddress: Int32 = -2
    /// The primary said farewell and no next replica can take its place.
    private static let shardPrimaryStopping: Int32 = -3
    /// Batch frames being built this iteration, per peer number, built in
    /// place (a batch copied out of its slot and back would be copied whole
    /// on every append), and the peers that have one.
    private var batches: [[UInt8]] = []
    /// Per peer, the size of its last frame: the next batch reserves that
    /// much at once. Growing from 4 KiB by doubling copied each frame about
    /// once more and touched fresh pages at every step (page faults were
    /// 12% of a replicating primary's cluster loop). A frame smaller than
    /// the one before it keeps the spare capacity while queued: at most one
    /// frame limit more per queued frame that follows a larger one.
    private var lastFrameBytes: [Int] = []
    private var peersWithBatch: [UInt16] = []
    /// Requests in each batch (answered with errors if the batch cannot go).
    private var batchRequests: [[InFlightKey]] = []
    private var inFlight = TicketSlab<InFlight>()
    /// Per peer, keys in send order: the timeout sweep looks at the oldest only.
    private var sendOrder: [[InFlightKey]] = []
    private var sendOrderHead: [Int] = []
    /// Per peer, the send time of the newest request it answered (monotonic
    /// ns; 0: none). One TCP stream delivers in order, so every request sent
    /// before that one reached the peer.
    private var newestAnsweredSentNs: [Int64] = []
    /// Set by the loop: closes the bulk link to a peer address abortively, so
    /// that what is still queued or in flight on it is never delivered.
    var abandonLink: ((String) -> Void)?
    /// Requests sent to each peer number (`counters` sums them by node id).
    private var forwardedToPeer: [Int] = []
    /// Per peer number, whether its bulk link is down: it broke, or could
    /// not be opened, and no link opened since. And when a read last asked
    /// the loop to dial it again (monotonic ns).
    private var linkDown: [Bool] = []
    private var linkProbedAtNs: [Int64] = []
    /// Set by the loop: dials the bulk link to a peer address when none is
    /// open or opening and the dial back-off allows it.
    var probeLink: ((String) -> Void)?
    private struct PendingRecord {
        var bytes: [UInt8]
        var flags: UInt32
    }
    private var pendingForReactor: [[PendingRecord]]
    /// Bytes of the records in `pendingForReactor`.
    private(set) var heldForReactorsBytes = 0
    private var mustNotify: [Bool]
    /// Per peer number, both breakers' answer this iteration: nil until asked.
    private var breakerAllowed: [Bool?] = []
    private var otherCounters = Counters()
    /// What /metrics shows; built when the loop publishes, not per request.
    var counters: Counters {
        var all = otherCounters
        for (peer, count) in forwardedToPeer.enumerated() where count > 0 {
            all.forwardedByPeer[peerName[peer], default: 0] += count
        }
        return all
    }
    private(set) var stopped = false
    /// Replication rides on this relay's per-peer batches (see ReplicationRelay).
    private(set) lazy var replication = ReplicationRelay(forwarding: self, shardOwner: shardOwner)
    private let reply = WireBuffer()

    init(interconnect: Interconnect, shardOwner: [Int], routingBoard: RoutingBoard, breakers: CircuitBreakerRegistry, selfID: String) {
        self.interconnect = interconnect
        self.shardOwner = shardOwner
        self.routingBoard = routingBoard
        self.breakers = breakers
        self.selfID = selfID
        pendingForReactor = Array(repeating: [], count: interconnect.reactorCount)
        mustNotify = Array(repeating: false, count: interconnect.reactorCount)
    }

    var wakeFD: Int32 { interconnect.wakeFDs[interconnect.clusterEndpoint] }

    /// True while records wait for a reactor's ring (the loop then polls).
    var hasPending: Bool { pendingForReactor.contains { !$0.isEmpty } }
    var hasInFlight: Bool { !inFlight.isEmpty || replication.anyFollowerBehind }
    /// Requests sent to peers whose replies have not come back, or
    /// requests of peers handed to this node's reactors and not answered
    /// yet: a stopping node closes its links only once both are none.
    var awaitsReplies: Bool { !inFlight.isEmpty || answersOwed > 0 }
    /// Peers' requests handed to the reactors whose replies have not gone
    /// back (a reactor answers every one, run, passed on or refused).
    private var answersOwed = 0

    // MARK: - The map

    /// Publishes the map of `members` (the alive set, self included) when it
    /// differs from the last one; returns it.
    @discardableResult
    func updateMap(members: [NodeID], gossipAddresses: [String: String], clientAddresses: [String: String],
                   numShards: Int, virtualNodes: Int, replicationFactor: Int, leaseHolders: [NodeID?] = [],
                   withoutReplication: Set<String> = []) -> ClusterRouting? {
        gossipAddressOf = gossipAddresses
        defer {
            mapShardsToPeers()
            replication.resolveFollowerPeers()
        }
        guard let me = NodeID(selfID),
              let map = try? ShardMap(members: members, numShards: numShards, virtualNodes: virtualNodes,
                                      replicationFactor: replicationFactor) else { return routing }
        let candidate = ClusterRouting(version: routingVersion + 1, map: map, selfID: me, clientAddressOf: clientAddresses,
                                       leaseHolders: leaseHolders, withoutReplication: withoutReplication)
        if let routing, routing.routesAlike(candidate) { return routing }
        routingVersion += 1
        let next = candidate
        routing = next
        routingBoard.publish(next)
        replication.mapChanged(next)
        return next
    }

    private func mapShardsToPeers() {
        guard let routing else {
            shardPeer = []
            return
        }
        shardPeer = routing.primaryName.indices.map { shard in
            let primary = routing.primaryName[shard]
            if primary == selfID { return Self.shardIsHere }
            guard let address = gossipAddressOf[primary], !address.isEmpty else { return Self.shardHasNoAddress }
            let peer = number(forPeer: address, name: primary)
            guard departedPeers.contains(peer) else { return Int32(peer) }
            // Said farewell: it handed its shards off first, each to the
            // voter that is the map's primary once it is gone, the next
            // owner in ring order. Requests go there before this node's map
            // drops the stopping one; where that is not the holder yet, it
            // passes them on or they wait there as for any view behind.
            guard let next = routing.followers[shard].first, let nextAddress = gossipAddressOf[next.name], !nextAddress.isEmpty,
                  case let successor = number(forPeer: nextAddress, name: next.name), !departedPeers.contains(successor) else {
                return Self.shardPrimaryStopping
            }
            return Int32(successor)
        }
    }

    /// Whether the bulk link to `peer` broke or could not be opened, and
    /// none opened since.
    func linkIsDown(_ peer: UInt16) -> Bool { Int(peer) < linkDown.count && linkDown[Int(peer)] }

    /// The peer number of the node `name`, nil when its address is unknown.
    func peer(named name: String) -> UInt16? {
        guard let address = gossipAddressOf[name], !address.isEmpty else { return nil }
        return number(forPeer: address, name: name)
    }

    /// Whether `peer` is a number this relay gave out.
    func knowsPeer(_ peer: UInt16) -> Bool { Int(peer) < peerAddress.count }

    private func number(forPeer address: String, name: String) -> UInt16 {
        if let known = peerNumber[address] { return known }
        let number = UInt16(peerAddress.count)
        peerAddress.append(address)
        peerName.append(name)
        peerNumber[address] = number
        batches.append([])
        lastFrameBytes.append(0)
        batchRequests.append([])
        sendOrder.append([])
        sendOrderHead.append(0)
        newestAnsweredSentNs.append(0)
        forwardedToPeer.append(0)
        linkDown.append(false)
        linkProbedAtNs.append(0)
        breakerAllowed.append(nil)
        return number
    }

    // MARK: - From the reactors

    /// Takes what the reactors sent: requests for other nodes go into this
    /// iteration's batches, replies to other nodes' requests too.
    func drainReactors(nowNs: Int64) {
        for reactor in 0..<interconnect.reactorCount {
            interconnect.drain(from: reactor, to: endpoint) { header, payload in
                fromReactor(header, payload: payload, nowNs: nowNs)
            }
        }
    }

    private func fromReactor(_ header: ForwardHeader, payload: UnsafeRawBufferPointer, nowNs: Int64) {
        switch header.kind {
        case .reply:
            if header.route.originNode == Self.localOrigin {
                toReactor(Int(header.route.originReactor), header, payload)
            } else if Int(header.route.originNode) < peerAddress.count {
                answersOwed = max(0, answersOwed - 1)
                appendToBatch(peer: header.route.originNode, header, payload)
            }
        case .request:
            forwardRequest(header, payload: payload, nowNs: nowNs)
        case .replicate:
            if let version = replication.fromReactor(header, record: payload, nowNs: nowNs) {
                noteLocal(shard: Int(header.route.shard), version)
            }
        case .replicaAck:
            if let version = ReplicationWire.decode(payload) {
                noteLocal(shard: Int(header.route.shard), version)
                replication.follower.reactorAcknowledged(shard: Int(header.route.shard), version, nowNs: nowNs)
            }
            // A follower reactor's acknowledgement, back to the peer the records came from.
            if Int(header.route.originNode) < peerAddress.count { appendToBatch(peer: header.route.originNode, header, payload) }
        case .streamAck:
            // The last slice applied leaves the follower holding the shard
            // through the walk's start, which the election restriction counts.
            let lastSlice = header.route.ticket & ShardStreamWire.lastSlice != 0
            if lastSlice {
                noteLocal(shard: Int(header.route.shard), header.replicatedPrevious)
                noteCopyComplete(shard: Int(header.route.shard))
            }
            replication.follower.streamSliceApplied(shard: Int(header.route.shard),
                                                    completedAt: lastSlice ? header.replicatedPrevious : nil, nowNs: nowNs)
            replication.streamSliceAppliedHere(shard: Int(header.route.shard), last: lastSlice, nowNs: nowNs)
            // A follower reactor's acknowledgement, back to the peer the records came from.
            if Int(header.route.originNode) < peerAddress.count { appendToBatch(peer: header.route.originNode, header, payload) }
        case .streamData:
            replication.streamSliceFromReactor(header, payload: payload, nowNs: nowNs)
        case .replicaProgress, .streamSlice, .streamCancel, .farewell, .farewellAck:
            break  // only ever sent to reactors, or between cluster loops
        case .readProbe:
            replication.sendReadProbe(header, key: payload, nowNs: nowNs)
        case .readAnswer:
            // A follower reactor's answer, back to the primary that asked.
            if Int(header.route.originNode) < peerAddress.count { appendToBatch(peer: header.route.originNode, header, payload) }
        case .readRepair:
            replication.sendReadRepair(header, record: payload)
        case .shardFrozen:
            let shard = Int(header.route.shard)
            if shard >= 0, shard < shardOwner.count { frozenShards.append((shard, header.route.ticket)) }
        }
    }

    /// Shards a reactor stopped writing for a hand-off, with the version of
    /// the lease set it installed, since the last `takeFrozenShards`.
    private var frozenShards: [(shard: Int, leasesVersion: UInt64)] = []

    func takeFrozenShards() -> [(shard: Int, leasesVersion: UInt64)] {
        defer { frozenShards.removeAll(keepingCapacity: true) }
        return frozenShards
    }

    /// The newest version this node holds per shard, as its reactors showed
    /// it (a write made as primary, a record applied as follower), since the
    /// last `takeLocalVersions`: the lease machine's election restriction.
    private var localVersions: [Int: EntryVersion] = [:]

    private func noteLocal(shard: Int, _ version: EntryVersion) {
        guard shard >= 0, shard < shardOwner.count else { return }
        replication.noteHeld(shard: shard, version)
        if let known = localVersions[shard], known >= version { return }
        localVersions[shard] = version
    }

    func takeLocalVersions() -> [Int: EntryVersion] {
        defer { localVersions = [:] }
        return localVersions
    }

    /// Shards whose stream finished on this node's reactors (their last
    /// slice applied) since the last `takeCompletedCopies`: the copy is then
    /// the holder's, with no hole a restart left (`LeaseAsk.mayHaveHole`).
    private var completedCopies: Set<Int> = []

    private func noteCopyComplete(shard: Int) {
        guard shard >= 0, shard < shardOwner.count else { return }
        completedCopies.insert(shard)
    }

    func takeCompletedCopies() -> Set<Int> {
        defer { completedCopies = [] }
        return completedCopies
    }

    private func forwardRequest(_ header: ForwardHeader, payload: UnsafeRawBufferPointer, nowNs: Int64) {
        let shard = Int(header.route.shard)
        guard let routing, shard < shardPeer.count else {
            refuse(header, payload, reason: "no_map", text: ForwardReplies.notSentText("this node has no shard map yet"))
            return
        }
        let target = shardPeer[shard]
        if target == Self.shardIsHere {
            // The map changed after the reactor routed this: run it here.
            var local = header
            local.route.originNode = Self.localOrigin
            toReactor(shardOwner[shard], local, payload)
            return
        }
        if target == Self.shardPrimaryStopping {
            refuse(header, payload, reason: "peer_stopping", text: ForwardReplies.notSentText("\(routing.primaryName[shard]) is stopping"))
            return
        }
        guard target >= 0 else {
            refuse(header, payload, reason: "no_address", text: ForwardReplies.notSentText("no address known for \(routing.primaryName[shard])"))
            return
        }
        if ForwardHeader.size + payload.count + 4 > Self.recordLimitBytes {
            refuse(header, payload, reason: "too_large",
                   text: "ERR the request is larger than a peer frame (8 MiB) and was not sent to \(peerName[Int(target)]); send it to that node directly")
            return
        }
        let peer = UInt16(target)
        let breakerAllows = allowed(peer)
        if linkDown[Int(peer)] || !breakerAllows, header.flags & ForwardHeader.Flags.readOnly != 0,
           answerFromCopy(header, payload, shard: shard, primary: peer, routing: routing, nowNs: nowNs) {
            return
        }
        if !breakerAllows {
            refuse(header, payload, reason: "breaker_open",
                   text: ForwardReplies.notSentText("the circuit breaker for \(peerName[Int(peer)]) (or 'forwarding') is open"))
            return
        }
        send(header, payload, to: peer, nowNs: nowNs)
    }

    private func send(_ header: ForwardHeader, _ payload: UnsafeRawBufferPointer, to peer: UInt16, nowNs: Int64) {
        var ticketed = header
        let requestID = header.wire == .binary ? ForwardReplies.binaryRequestID(payload) : 0
        let key = inFlight.insert { ticket in
            ticketed.route.ticket = ticket
            return InFlight(peer: peer, sentAtNs: nowNs, header: ticketed, requestID: requestID)
        }
        sendOrder[Int(peer)].append(key)
        forwardedToPeer[Int(peer)] += 1
        appendToBatch(peer: peer, ticketed, payload)
        // After the append: a batch that reached its limit went out first, without this key.
        batchRequests[Int(peer)].append(key)
    }

    // MARK: - Reads while the primary is unreachable

    /// A read for a shard whose primary this node cannot reach (its link
    /// broke or could not be opened, or its breaker is open) goes to a
    /// replica's copy instead of failing: this node's own when it follows
    /// the shard, else the first follower whose link is up. The copy may
    /// lag the primary by what replication had not delivered when the
    /// primary went (at W >= 2, by writes acknowledged by other replicas),
    /// as reads on the minority side of a partition may: possibly stale,
    /// and counted (`aegis_forward_reads_to_replica_total`); at
    /// read_quorum R >= 2 the copy asks R - 1 other replicas before it
    /// answers (Reactor+CopyReads), so it is as fresh as a quorum. Until a
    /// failover elects a new holder (suspect_timeout and a lease after a
    /// kill -9) that is seconds in which every read of the dead primary's
    /// shards failed. Writes still go to the primary (and fail): only the
    /// lease holder accepts them. The read is tried on the primary again
    /// once a link to it opens; a diverted read asks the loop to dial it
    /// (within the dial back-off), so reads need no writes to find it back.
    /// False when no copy can be asked: the caller answers as before.
    private func answerFromCopy(_ header: ForwardHeader, _ payload: UnsafeRawBufferPointer, shard: Int, primary: UInt16,
                                routing: ClusterRouting, nowNs: Int64) -> Bool {
        if nowNs - linkProbedAtNs[Int(primary)] >= Self.linkProbeIntervalNs {
            linkProbedAtNs[Int(primary)] = nowNs
            probeLink?(peerAddress[Int(primary)])
        }
        var fromCopy = header
        fromCopy.flags |= ForwardHeader.Flags.answerFromCopy
        let followers = routing.followers[shard]
        if followers.contains(routing.selfID) {
            fromCopy.route.originNode = Self.localOrigin
            otherCounters.readsToOwnCopy += 1
            toReactor(shardOwner[shard], fromCopy, payload)
            return true
        }
        for follower in followers {
            guard let peer = peer(named: follower.name), peer != primary, !linkDown[Int(peer)],
                  !departedPeers.contains(peer), allowed(peer) else { continue }
            otherCounters.readsToPeerCopy += 1
            send(fromCopy, payload, to: peer, nowNs: nowNs)
            return true
        }
        return false
    }

    /// How often reads diverted from an unreachable primary ask for a dial.
    static let linkProbeIntervalNs: Int64 = 50_000_000

    /// A bulk link to `address` opened: requests go to that peer again.
    func linkOpened(address: String) {
        guard let number = peerNumber[address] else { return }
        linkDown[Int(number)] = false
    }

    /// Both breakers, asked once per peer per loop iteration.
    private func allowed(_ peer: UInt16) -> Bool {
        if let known = breakerAllowed[Int(peer)] { return known }
        let allowed = breakers.allow("forwarding") && breakers.allow(peerName[Int(peer)])
        breakerAllowed[Int(peer)] = allowed
        return allowed
    }

    func appendToBatch(peer: UInt16, _ header: ForwardHeader, _ payload: UnsafeRawBufferPointer) {
        let slot = Int(peer)
        let recordLength = ForwardHeader.size + payload.count
        if !batches[slot].isEmpty, batches[slot].count + 4 + recordLength > Self.batchLimitBytes {
            sendBatch(peer)
        }
        startBatchIfEmpty(peer)
        Self.appendFramed(header, payload, to: &batches[slot])
    }

    private func startBatchIfEmpty(_ peer: UInt16) {
        let slot = Int(peer)
        guard batches[slot].isEmpty else { return }
        batches[slot].reserveCapacity(min(Self.batchLimitBytes + (64 << 10), max(4096, lastFrameBytes[slot])))
        batches[slot].append(contentsOf: [0, 0, 0, 0, Self.batchMarker])
        peersWithBatch.append(peer)
    }

    /// Appends one record as a batch frame carries it: its length (u32,
    /// header included), the header, the payload.
    static func appendFramed(_ header: ForwardHeader, _ payload: UnsafeRawBufferPointer, to bytes: inout [UInt8]) {
        // Length and header are made on the stack and appended in one go:
        // appending zeros and storing the header over them wrote every
        // header twice (1% of a forwarding profile).
        withUnsafeTemporaryAllocation(byteCount: 4 + ForwardHeader.size, alignment: 8) { prefix in
            prefix.storeBytes(of: UInt32(ForwardHeader.size + payload.count), toByteOffset: 0, as: UInt32.self)
            header.store(to: prefix.baseAddress! + 4)
            bytes.append(contentsOf: UnsafeRawBufferPointer(prefix))
        }
        bytes.append(contentsOf: payload)
    }

    /// Appends records framed by `appendFramed` to the peer's batch, as
    /// many at a time as fit in the frame (one copy for a whole staged
    /// replication batch); a record that does not fit starts the next
    /// frame, as `appendToBatch` does.
    func appendFramedRecords(peer: UInt16, _ records: UnsafeRawBufferPointer) {
        let slot = Int(peer)
        var offset = 0
        while offset < records.count {
            let room = Self.batchLimitBytes - (batches[slot].isEmpty ? 5 : batches[slot].count)
            var end = offset
            while end < records.count {
                precondition(records.count - end >= 4, "framed records end inside a length")
                let length = 4 + Int(records.loadUnaligned(fromByteOffset: end, as: UInt32.self))
                precondition(records.count - end >= length, "framed records end inside a record")
                // The first record of an empty frame goes in whatever its size.
                if end + length - offset > room, end > offset || !batches[slot].isEmpty { break }
                end += length
            }
            if end == offset {
                sendBatch(peer)
                continue
            }
            startBatchIfEmpty(peer)
            batches[slot].append(contentsOf: UnsafeRawBufferPointer(rebasing: records[offset..<end]))
            offset = end
        }
    }

    /// Set by the loop: queues one frame on the bulk lane to a gossip
    /// address; false when there is no link to queue it on.
    var sendFrame: ((String, [UInt8]) -> Bool)?

    /// Sends this iteration's batches, one frame per peer.
    func sendBatches() {
        for peer in breakerAllowed.indices { breakerAllowed[peer] = nil }
        let nowNs = aegis_monotonic_ns()
        replication.sendDueBatches(nowNs: nowNs)
        replication.catchUp(nowNs: nowNs)
        // A peer may be listed twice (its batch reached the limit and began again); the second finds it sent.
        for peer in peersWithBatch { sendBatch(peer) }
        peersWithBatch.removeAll(keepingCapacity: true)
    }

    private func sendBatch(_ peer: UInt16) {
        guard !batches[Int(peer)].isEmpty else { return }
        var frame: [UInt8] = []
        swap(&frame, &batches[Int(peer)])
        lastFrameBytes[Int(peer)] = frame.count
        let length = UInt32(frame.count - 4)
        frame[0] = UInt8(length >> 24)
        frame[1] = UInt8(length >> 16 & 0xFF)
        frame[2] = UInt8(length >> 8 & 0xFF)
        frame[3] = UInt8(length & 0xFF)
        let sent = sendFrame?(peerAddress[Int(peer)], frame) ?? false
        var keys: [InFlightKey] = []
        swap(&keys, &batchRequests[Int(peer)])
        if !sent {
            // No link to queue on: the peer is gone, and is dialled afresh
            // (and sent requests again) when it comes back.
            linkDown[Int(peer)] = true
            forgetFarewells(peer)
            failInFlight(keys, reason: "link_down", why: "no link to \(peerName[Int(peer)])", sent: false)
            replication.cutOff(peerName: peerName[Int(peer)])
        }
    }

    // MARK: - From the peers

    /// A batch frame from the peer at `address` (its hello's gossip
    /// address). Malformed records end the batch: the link is authenticated,
    /// so that is a bug, not an attack, and nothing past it can be trusted.
    func receivedBatch(_ frame: [UInt8], fromAddress address: String, name: String, nowNs: Int64) -> Bool {
        let peer = number(forPeer: address, name: name)
        // Once per frame, not per record: a lazy property's getter and a
        // String from an array cost a retain and a release each time.
        let replication = replication
        let sender = peerName[Int(peer)]
        // The lease check too: calling it through the relay's property
        // retained and released the closure's context per record.
        let acceptsFrom = replication.acceptsFrom
        let nowMs = nowNs / 1_000_000
        var repliesReceived = 0
        let wellFormed = frame.withUnsafeBytes { bytes -> Bool in
            var offset = 5
            while offset < bytes.count {
                guard bytes.count - offset >= 4 else { return false }
                let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                offset += 4
                guard length >= ForwardHeader.size, bytes.count - offset >= length,
                      let header = ForwardHeader.loadChecked(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])),
                      header.payloadLength == length - ForwardHeader.size else { return false }
                let payload = UnsafeRawBufferPointer(rebasing: bytes[(offset + ForwardHeader.size)..<(offset + length)])
                offset += length
                switch header.kind {
                case .request, .replicate, .streamData, .readProbe, .readRepair:
                    // For the shard's owning reactor, stamped with the peer it came from.
                    let shard = Int(header.route.shard)
                    guard shard < shardOwner.count else { return false }
                    if header.kind == .replicate { replication.noteReceived(bytes: payload.count) }
                    if header.kind == .replicate || header.kind == .streamData, let acceptsFrom, !acceptsFrom(shard, sender, nowMs) {
                        replication.noteRefusedNotHolder()
                        continue
                    }
                    if header.kind == .streamData { replication.streamSliceArrived(header, from: sender, nowNs: nowNs) }
                    if header.kind == .request { answersOwed += 1 }
                    var routed = header
                    routed.route.originNode = peer
                    toReactor(shardOwner[shard], routed, payload)
                case .replicaAck:
                    let shard = Int(header.route.shard)
                    guard shard < shardOwner.count else { return false }
                    replication.acknowledged(payload, shard: shard, from: sender)
                case .streamAck:
                    replication.streamAcknowledged(header, from: sender, nowNs: nowNs)
                case .replicaProgress, .streamSlice, .streamCancel, .shardFrozen:
                    return false  // never sent between nodes
                case .farewell:
                    otherCounters.farewellsReceived += 1
                    if departedPeers.insert(peer).inserted { mapShardsToPeers() }
                    // Into this pass's batch, behind every request sent to
                    // that peer before: one TCP stream delivers them first.
                    appendToBatch(peer: peer, .signal(.farewellAck), UnsafeRawBufferPointer(start: nil, count: 0))
                case .farewellAck:
                    if farewellsAwaited.remove(peer) != nil { otherCounters.farewellsAcknowledged += 1 }
                case .readAnswer:
                    guard Int(header.route.originReactor) < interconnect.reactorCount else { return false }
                    var routed = header
                    // Which follower answered: the read repairs it by this number if it is stale.
                    routed.connectionIndex = UInt32(peer)
                    routed.flags &= ~ForwardHeader.Flags.followersNotAsked  // only this node's loop says that
                    replication.readProbeAnswered(reactor: header.route.originReactor, ticket: header.slotSequence, by: peer)
                    toReactor(Int(header.route.originReactor), routed, payload)
                case .reply:
                    repliesReceived += 1
                    guard let waiting = inFlight.remove(header.route.ticket) else { continue } // answered already (timed out)
                    noteLatency(nowNs - waiting.sentAtNs)
                    newestAnsweredSentNs[Int(peer)] = max(newestAnsweredSentNs[Int(peer)], waiting.sentAtNs)
                    guard Int(header.route.originReactor) < interconnect.reactorCount else { return false }
                    toReactor(Int(header.route.originReactor), header, payload)
                }
            }
            return true
        }
        if repliesReceived > 0 {
            breakers.record(peerName[Int(peer)], success: true)
        }
        return wellFormed
    }

    private func noteLatency(_ ns: Int64) {
        let micros = max(0, ns / 1_000)
        otherCounters.latencySumMicros += micros
        otherCounters.latencyCount += 1
        let bucket = Self.latencyBucketsMicros.firstIndex { micros <= $0 } ?? Self.latencyBucketsMicros.count
        otherCounters.latencyBuckets[bucket] += 1
    }

    // MARK: - Failures

    /// The bulk link to `address` closed: what was sent on it gets no reply.
    /// `anySent` false: the link never wrote a frame (its connect was
    /// refused: the peer is down), so the requests queued on it ran
    /// nowhere and their clients may retry them (TRYAGAIN). Otherwise
    /// they may have run there (`forwarding failed`).
    func linkLost(address: String, anySent: Bool) {
        guard let number = peerNumber[address] else { return }
        let peer = Int(number)
        linkDown[peer] = true
        // A peer that said farewell is gone once its link is: when it
        // starts again it is dialled afresh and sent requests again.
        forgetFarewells(number)
        replication.cutOff(peerName: peerName[peer])
        let keys = sendOrder[peer]
        failInFlight(Array(keys[sendOrderHead[peer]...]), reason: "link_down",
                     why: anySent ? "the link to \(peerName[peer]) broke" : "no link to \(peerName[peer]) could be opened", sent: anySent)
        sendOrder[peer] = []
        sendOrderHead[peer] = 0
    }

    /// Answers requests older than the timeout; returns when to look again (ms from now), nil if nothing waits.
    func expire(nowNs: Int64) {
        replication.sweepUnansweredProbes(nowNs: nowNs)
        for peer in sendOrder.indices where sendOrderHead[peer] < sendOrder[peer].count {
            let keys = sendOrder[peer]
            var head = sendOrderHead[peer]
            var expired: [InFlightKey] = []
            while head < keys.count {
                guard let entry = inFlight.peek(keys[head]) else { head += 1; continue }
                if nowNs - entry.sentAtNs < replyTimeoutMs * 1_000_000 { break }
                expired.append(keys[head])
                head += 1
            }
            if head == keys.count {
                sendOrder[peer] = []
                sendOrderHead[peer] = 0
            } else if head > 1024 {
                sendOrder[peer] = Array(keys[head...])
                sendOrderHead[peer] = 0
            } else {
                sendOrderHead[peer] = head
            }
            if !expired.isEmpty {
                // Nothing came back from the peer since the oldest of these was
                // sent: it may still sit in the link (a partition, with TCP
                // retransmitting). Delivered after the heal, a write would run
                // on the shard's primary long after its client was told it
                // failed, over writes acknowledged since. Closing the link
                // abortively drops what it still holds. A reply to a request
                // sent after all of these shows the link delivered them (one
                // TCP stream, in order), so a peer that is merely slow keeps
                // it; a reply to an older one proves nothing about them.
                let newestExpiredSentNs = expired.compactMap { inFlight.peek($0)?.sentAtNs }.max() ?? nowNs
                let silent = newestAnsweredSentNs[peer] < newestExpiredSentNs
                failInFlight(expired, reason: "timeout", why: "\(peerName[peer]) did not answer within \(replyTimeoutMs) ms")
                if silent { abandonLink?(peerAddress[peer]) }
            }
        }
    }

    /// `sent` false: the requests never left this node (TRYAGAIN), else
    /// they may have run on the peer (`forwarding failed`).
    private func failInFlight(_ keys: [InFlightKey], reason: String, why: String, sent: Bool = true) {
        var failedPeers = Set<UInt16>()
        for key in keys {
            guard let entry = inFlight.remove(key) else { continue }
            failedPeers.insert(entry.peer)
            reply.clear()
            var requestIDFrame = [UInt8](repeating: 0, count: 15)
            withUnsafeBytes(of: entry.requestID.bigEndian) { requestIDFrame.replaceSubrange(7..<15, with: $0) }
            requestIDFrame.withUnsafeBytes {
                if sent {
                    ForwardReplies.failed(wire: entry.header.wire, request: $0, why: why, into: reply)
                } else {
                    ForwardReplies.notSent(wire: entry.header.wire, request: $0, why: why, into: reply)
                }
            }
            answer(entry.header, reply.readableView, reason: reason)
        }
        // Against that peer's breaker only: one dead peer is that peer's
        // failure. Counted against 'forwarding' as well, its failures opened
        // the breaker every forward passes, and for breaker_cooldown (30 s)
        // a node refused to forward to its healthy peers too, including the
        // one that took over the dead peer's shards. 'forwarding' stays the
        // operator's switch for all of them (/admin/circuit-breaker/trip).
        for peer in failedPeers { breakers.record(peerName[Int(peer)], success: false) }
    }

    /// Answers a request from a reactor of this node that was never sent
    /// with `text`, which says so (mostly `ForwardReplies.notSentText`, the
    /// retryable refusal): it ran nowhere, so its client may send it again,
    /// where `forwarding failed` would leave it unsure whether a write ran.
    /// Before, these said `forwarding failed` too, the breaker's included.
    private func refuse(_ header: ForwardHeader, _ payload: UnsafeRawBufferPointer, reason: String, text: String) {
        reply.clear()
        ForwardReplies.error(wire: header.wire, request: payload, text: text, into: reply)
        answer(header, reply.readableView, reason: reason)
    }

    private func answer(_ request: ForwardHeader, _ bytes: UnsafeRawBufferPointer, reason: String) {
        otherCounters.errorsByReason[reason, default: 0] += 1
        toReactor(Int(request.route.originReactor), request.reply(payloadLength: bytes.count), bytes)
    }

    // MARK: - To the reactors

    func toReactor(_ reactor: Int, _ header: ForwardHeader, _ payload: UnsafeRawBufferPointer) {
        guard reactor < interconnect.reactorCount, !interconnect.hasExited(reactor) else { return }
        mustNotify[reactor] = true
        let ring = interconnect.ring(from: endpoint, to: reactor)
        let length = ForwardHeader.size + payload.count
        if length <= ring.maxPayload {
            if pendingForReactor[reactor].isEmpty, let destination = ring.reserve(payloadLength: length) {
                header.store(to: destination)
                if payload.count > 0 { (destination + ForwardHeader.size).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
                ring.commit(payloadLength: length, flags: RecordFlags.inline)
                return
            }
            var record = [UInt8](repeating: 0, count: length)
            record.withUnsafeMutableBytes { header.store(to: $0.baseAddress!) }
            record.replaceSubrange(ForwardHeader.size..<length, with: payload)
            pendingForReactor[reactor].append(PendingRecord(bytes: record, flags: RecordFlags.inline))
            heldForReactorsBytes += record.count
        } else {
            // Too large for the ring: a heap copy the reactor frees (as between reactors).
            let copy = UnsafeMutableRawPointer.allocate(byteCount: max(1, payload.count), alignment: 16)
            copy.copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            interconnect.noteIndirectSent(from: endpoint, bytes: payload.count)
            var record = [UInt8](repeating: 0, count: ForwardHeader.size + 8)
            record.withUnsafeMutableBytes { raw in
                header.store(to: raw.baseAddress!)
                raw.storeBytes(of: UInt(bitPattern: copy), toByteOffset: ForwardHeader.size, as: UInt.self)
            }
            pendingForReactor[reactor].append(PendingRecord(bytes: record, flags: RecordFlags.indirect))
            heldForReactorsBytes += record.count
            flushPending()
        }
    }

    /// Moves waiting records into their rings, in order, as far as they fit.
    func flushPending() {
        for reactor in 0..<pendingForReactor.count where !pendingForReactor[reactor].isEmpty {
            if interconnect.hasExited(reactor) {
                heldForReactorsBytes -= pendingForReactor[reactor].reduce(0) { $0 + $1.bytes.count }
                pendingForReactor[reactor].removeAll()
                continue
            }
            let ring = interconnect.ring(from: endpoint, to: reactor)
            var moved = 0
            for record in pendingForReactor[reactor] {
                guard let destination = ring.reserve(payloadLength: record.bytes.count) else { break }
                record.bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                ring.commit(payloadLength: record.bytes.count, flags: record.flags)
                heldForReactorsBytes -= record.bytes.count
                moved += 1
                mustNotify[reactor] = true
            }
            pendingForReactor[reactor].removeFirst(moved)
        }
    }

    /// Whether the last `notifyReactors` had records for a reactor (whose
    /// answers, or next requests, the loop can then expect soon).
    private(set) var notifiedReactors = false

    func notifyReactors() {
        notifiedReactors = false
        for reactor in 0..<mustNotify.count where mustNotify[reactor] {
            mustNotify[reactor] = false
            notifiedReactors = true
            interconnect.notify(reactor)
        }
    }

    // MARK: - Farewells

    /// A stopping node closes its links once it has answered every request
    /// its peers sent it. Without a word from it, a peer cannot know which
    /// of its requests were read before the close: a request sent just
    /// before the link went was answered `forwarding failed: the link to X
    /// broke` (it may have run), seen in rolling restarts and in
    /// perf/shard-move --scenario leave. So the stopping node says
    /// `farewell` to each peer; the peer sends it nothing more (requests go
    /// to the shard's next replica, its hand-off's target) and answers
    /// `farewellAck` on the link its requests went on, behind them. Once
    /// every peer answered (and every request read was answered), nothing
    /// is left in flight towards it: it may close.

    /// Peers that said farewell: this node sends them no more requests.
    private var departedPeers: Set<UInt16> = []
    /// This node, stopping: the peers whose `farewellAck` has not come.
    private var farewellsAwaited: Set<UInt16> = []

    /// Says farewell to each peer (node id, gossip address); the answers are
    /// awaited (`awaitsFarewells`) until they come or their links close.
    func sayFarewell(to peers: [(name: String, address: String)]) {
        for (name, address) in peers where !address.isEmpty {
            let peer = number(forPeer: address, name: name)
            guard farewellsAwaited.insert(peer).inserted else { continue }
            otherCounters.farewellsSent += 1
            appendToBatch(peer: peer, .signal(.farewell), UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    /// The peer is gone (its link closed, or none could be opened): no
    /// answer to await from it, and it is routed to again when it returns.
    private func forgetFarewells(_ peer: UInt16) {
        farewellsAwaited.remove(peer)
        if departedPeers.remove(peer) != nil { mapShardsToPeers() }
    }

    var awaitsFarewells: Bool { !farewellsAwaited.isEmpty }
    var farewellsUnanswered: Int { farewellsAwaited.count }

    // MARK: - Stopping

    /// The loop stops: reactors learn it (and answer new remote requests
    /// themselves), and what waits is answered with errors.
    func stop(nowNs: Int64) {
        interconnect.markExited(endpoint)
        stopped = true
        drainReactors(nowNs: nowNs)
        sendFrame = nil
        sendBatches()
        failInFlight(inFlight.tickets, reason: "stopping", why: "this node is stopping")
        flushPending()
        notifyReactors()
    }
}

extension ForwardHeader {
    /// A record with no payload and no request behind it (a farewell).
    static func signal(_ kind: Kind) -> ForwardHeader {
        ForwardHeader(kind: kind, wire: .resp2, connectionIndex: 0, connectionGeneration: 0, slotSequence: 0,
                      payloadLength: 0, route: .local)
    }

    /// Like `load`, but nil for a kind or wire byte this build does not know
    /// (a record from a peer is checked, not trusted).
    static func loadChecked(from bytes: UnsafeRawBufferPointer) -> ForwardHeader? {
        guard bytes.count >= size,
              Kind(rawValue: bytes.loadUnaligned(fromByteOffset: 0, as: UInt8.self)) != nil,
              WireKind(rawValue: bytes.loadUnaligned(fromByteOffset: 1, as: UInt8.self)) != nil else { return nil }
        return load(from: bytes)
    }
}
