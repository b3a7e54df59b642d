import AegisProtocol
import AegisStore
import CSupport

/// A reactor's copy of the shard map: per shard, the endpoint a keyed
/// request goes to (a reactor of this node, or the cluster loop when
/// another node is the primary). Confined to its reactor's thread.
///
/// Invariant: `target[s]` is `shardOwner[s]` when this node is shard s's
/// primary (or no map was published yet), otherwise `clusterEndpoint`.
struct ReactorRoutes {
    private(set) var target: [Int]
    let clusterEndpoint: Int
    private let shardOwner: [Int]
    /// The routing `target` was built from; 0 (none) routes every shard here.
    private(set) var version: UInt64 = 0
    private(set) var current: ClusterRouting?
    /// Per shard, how many followers the map names for it; empty before the
    /// first map (a node alone has none).
    private var followerCounts: [Int] = []

    init(shardOwner: [Int], clusterEndpoint: Int) {
        self.shardOwner = shardOwner
        self.clusterEndpoint = clusterEndpoint
        self.target = shardOwner
    }

    /// Installs `routing`; returns the shards this node was primary for and no longer is.
    mutating func install(_ routing: ClusterRouting) -> [Int] {
        var lost: [Int] = []
        for shard in target.indices {
            let here = routing.primaryHere.indices.contains(shard) ? routing.primaryHere[shard] : true
            let wasHere = target[shard] != clusterEndpoint
            target[shard] = here ? shardOwner[shard] : clusterEndpoint
            if wasHere && !here { lost.append(shard) }
        }
        followerCounts = (0..<routing.map.numShards).map { routing.map.followers(ofShard: $0).count }
        version = routing.version
        current = routing
        return lost
    }

    @inline(__always) func isPrimaryHere(_ shard: Int) -> Bool { target[shard] != clusterEndpoint }

    /// Whether this routing names this node one of the shard's replicas,
    /// so that it keeps its copy (`Reactor.applyRouting`); true before any map.
    func holdsCopy(_ shard: Int) -> Bool {
        guard let current else { return true }
        return current.map.isOwner(current.selfID, ofShard: shard)
    }

    /// True when the shard's primary in this routing is the lease holder
    /// the node knows of, not only the map's first owner (no holder known,
    /// or one outside this node's map, which a node that has not met every
    /// member yet may not have); true before any map.
    func primaryIsKnownHolder(_ shard: Int) -> Bool {
        guard let current else { return true }
        return current.primaryIsKnownHolder(shard)
    }

    /// Whether this routing's primary for the shard is the best word this
    /// node has on where its requests go: the lease holder it knows, or the
    /// map's primary where this node is none of the shard's replicas (it
    /// never hears who holds that lease) and knows the primary's address.
    func namesHolderElsewhere(_ shard: Int) -> Bool {
        guard !isPrimaryHere(shard), let current else { return false }
        if primaryIsKnownHolder(shard) { return true }
        return !current.primaryClientAddress[shard].isEmpty && !current.map.isOwner(current.selfID, ofShard: shard)
    }

    @inline(__always) func hasFollowers(_ shard: Int) -> Bool { followerCount(shard) > 0 }

    @inline(__always) func followerCount(_ shard: Int) -> Int { shard < followerCounts.count ? followerCounts[shard] : 0 }
}

extension Reactor {
    /// The endpoint that runs a keyed request for `shard`.
    @inline(__always) func route(shard: Int) -> Int { routes.target[shard] }

    /// Picks up a new map. Until shard movement exists, a shard this node
    /// no longer holds a replica of (primary or follower) is emptied here:
    /// its keys are now served by its replicas, and stale copies must not
    /// come back if the shard returns to this node later. A shard this node
    /// stops being primary for but still follows (replication_factor > 1)
    /// keeps its data: it is a replica now.
    func applyRouting() {
        guard let routing = node.routing.routing else { return }
        let lost = routes.install(routing)
        // Reads held for their quorum go on: ReadQuorumState.
        if !lost.isEmpty { quorum.movedAway += lost }
        var dropped = 0
        var lostCount = 0
        let lostHere = Set(lost)
        // A node that joins takes about a quarter of every other node's
        // shards. Freed here at once, one entry at a time, or on a thread
        // of its own, that stalled the clients of every node for 50-100 ms
        // (perf/shard-move): the copies are detached now and freed a slice
        // at a time between requests.
        let dropping = LazyFreeBatch()
        for shard in shards.ownedIndices {
            guard let store = shards[shard] else { continue }
            let drop = replica.enabled
                ? (lostHere.contains(shard) || store.count > 0) && !routes.holdsCopy(shard)
                : lostHere.contains(shard)
            guard drop else { continue }
            lostCount += 1
            dropped += store.count
            store.dropCopy(deferringTo: dropping)
            replica.appliedThrough[shard] = .zero
            replica.incoming[shard] = nil
        }
        if dropping.beginFreeingInSteps(ledger: shards.ledger) { droppedCopies.append(dropping) }
        if dropped > 0 {
            logger.info("shards moved to other nodes: their keys were dropped here (no shard movement yet)", metadata: [
                "reactor": "\(index)", "shards": "\(lostCount)", "keys": "\(dropped)", "placement_digest": "\(routing.digestHex)",
            ])
        }
        resumeParked()
    }

    /// At most this many entries of dropped copies are freed per slice:
    /// about what a stream slice scans (`StreamSlicePacer`).
    static let droppedEntriesPerSlice = 256

    /// Frees one slice of the oldest dropped copy (`droppedCopies`).
    func freeOneSliceOfDroppedCopies(nowNs: Int64) {
        guard let batch = droppedCopies.first else { return }
        replica.pacer.walked(nowNs: nowNs)
        if batch.freeSome(entriesMax: Self.droppedEntriesPerSlice) { droppedCopies.removeFirst() }
    }

    enum NotPrimaryHere { case relayed, parked, refused }

    /// How many times one forwarded request may be passed on between nodes.
    static let maxHops: UInt8 = 2

    /// A request another node forwarded: nil when this node is the shard's
    /// primary in its own view (it runs here). Otherwise the node that sent
    /// it had an older view (a hand-off or an election it has not heard of
    /// yet). When this node's routing names the shard's holder on another
    /// node (`namesHolderElsewhere`), the request goes there, and its reply
    /// comes back the same way, so the client sees no TRYAGAIN for a view
    /// behind: `.relayed`, nothing is written to `out`. A request is passed
    /// on at most `maxHops` times, so views that disagree cannot make it
    /// circle. Two, not one: while a stopping node hands all its shards
    /// off, a request can meet two views behind in a row (with one,
    /// perf/shard-move --scenario leave refused 30 requests in 7 runs;
    /// with two, 8).
    /// Where it cannot go on yet (this node knows no holder of the shard
    /// elsewhere: its routing names the map's guess, as for a moment while
    /// a stopping node hands its shards off), the request waits on the
    /// shard's reactor (`Reactor+Parking`) until the routing names a holder
    /// or this node wins the shard, up to the parking limit: `.parked`,
    /// nothing is written to `out`; `waited` marks its second pass, which
    /// does not park again. Otherwise `out` gets the retryable refusal:
    /// `.refused`.
    func passOnIfNotPrimary(_ header: ForwardHeader, request: UnsafeRawBufferPointer, into out: WireBuffer,
                            waited: Bool = false) -> NotPrimaryHere? {
        let shard = Int(header.route.shard)
        guard shard < routes.target.count, !routes.isPrimaryHere(shard) else { return nil }
        // The cluster loop publishes a routing before it hands over the
        // requests that came after its news (ClusterLoop.serve), but this
        // pass may have loaded the one before. Judged on that, a request the
        // old holder sent here just after handing this node the shard would
        // go back to it. Only on this path: a request this node serves
        // never pays for the check.
        if !waited, node.routing.version != routes.version {
            applyRouting()
            if routes.isPrimaryHere(shard) { return nil }
        }
        guard let routing = routes.current else { return nil }
        // Relayed or parked, the request later leaves through the cluster loop.
        let loopRunning = !node.interconnect.hasExited(routes.clusterEndpoint)
        let namesHolderElsewhere = routes.namesHolderElsewhere(shard)
        if loopRunning, namesHolderElsewhere, header.hops < Self.maxHops {
            relay(header, from: routes.clusterEndpoint, request: request, shard: shard, hops: header.hops + 1)
            counters.forwardRelayed &+= 1
            return .relayed
        }
        if loopRunning, !waited, !namesHolderElsewhere, header.hops < Self.maxHops, owner(ofShard: shard) == index,
           node.state != .draining, parked.bytes < ParkedRequests.limitBytes {
            park(shard: shard, wire: header.wire, isWrite: true, bytes: request,
                 replyTo: .forwarded(header: header, source: routes.clusterEndpoint))
            return .parked
        }
        ForwardReplies.notOwner(wire: header.wire, request: request, shard: shard, owner: routing.primaryName[shard],
                                ownerAddress: routing.primaryClientAddress[shard], into: out)
        counters.forwardNotOwner &+= 1
        if loopRunning, namesHolderElsewhere { counters.forwardHopLimit &+= 1 }
        return .refused
    }
}
