import AegisStore
import CSupport

/// A reactor's copy of the shard leases (LeaseBoard): per shard, the end of
/// this node's lease on the coarse monotonic clock. Confined to its reactor.
///
/// Invariant: a write to shard s is accepted only while `!enforced` or
/// `monotonicMs < untilMs[s]`; `untilMs` already ends a guard before the
/// lease does on the cluster loop's clock (LeaseDriver.reactorGuardMs).
struct ReactorLeases {
    private(set) var version: UInt64 = 0
    /// False until the cluster loop says this node is in a cluster: a node
    /// alone pays one predictable branch per write, nothing else.
    private(set) var enforced = false
    private(set) var untilMs: [Int64] = []
    private(set) var terms: [UInt32] = []
    private(set) var handingOff: [Bool] = []

    /// Returns the shards that this set starts handing off.
    mutating func install(_ leases: ShardLeases) -> [Int] {
        let newlyHandingOff = leases.handingOff.indices.filter {
            leases.handingOff[$0] && !(handingOff.indices.contains($0) && handingOff[$0])
        }
        version = leases.version
        enforced = leases.enforced
        untilMs = leases.untilMs
        terms = leases.terms
        handingOff = leases.handingOff
        return newlyHandingOff
    }

    @inline(__always) func allowsWrite(_ shard: Int, nowMs: Int64) -> Bool {
        !enforced || (shard < untilMs.count && nowMs < untilMs[shard])
    }
}

extension Reactor {
    /// Picks up a new lease set. A shard this node now holds writes with the
    /// lease's term: its versions sort after every write of an older term,
    /// whichever node made them.
    func applyLeases() {
        guard let published = node.leases.leases else { return }
        let frozen = leases.install(published)
        var wonUnlogged: [Int] = []
        for shard in shards.ownedIndices where leases.untilMs.indices.contains(shard) && leases.untilMs[shard] > 0 {
            guard let store = shards[shard] else { continue }
            if leases.terms[shard] > store.term {
                store.term = leases.terms[shard]
                if logLacksCopy(of: shard) { wonUnlogged.append(shard) }
            } else if !log.snapshot.owedForWins && logProvesNothing(of: shard) {
                // A first win, at term 1, moves no term (a store starts at
                // 1): a shard no write reached is proven whole only by a
                // snapshot taken while this node holds it.
                wonUnlogged.append(shard)
            }
        }
        if !wonUnlogged.isEmpty { snapshotAfterWinning(wonUnlogged) }
        // From here on this reactor refuses the shard's writes; the marker
        // follows every record of the writes it made before, in the ring.
        for shard in frozen where shards[shard] != nil {
            var header = ForwardHeader(kind: .shardFrozen, wire: .resp2, connectionIndex: 0, connectionGeneration: 0,
                                       slotSequence: 0, payloadLength: 0)
            header.route = ForwardRoute(originNode: UInt16.max, originReactor: UInt16(index), shard: UInt32(shard),
                                        ticket: published.version)
            sendRecord(to: routes.clusterEndpoint, header: header, payload: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        resumeParked()
    }

    /// True (and counted) when `shard` may not be written here now; the
    /// caller answers `leaseRefusalText` in its protocol.
    @inline(__always)
    func lacksLease(_ shard: Int) -> Bool {
        guard leases.enforced else { return false }
        // The clock now, not the pass's reading: a reactor stopped between
        // its wake-up and this request (SIGSTOP, a starved core) would judge
        // requests that arrived during the stop by the time before it, long
        // after another node may have won the shard. A coarse read is a vDSO
        // call of a few ns, paid only by nodes in a cluster.
        guard !leases.allowsWrite(shard, nowMs: aegis_monotonic_ms_coarse()) else { return false }
        counters.leaseRefusals &+= 1
        return true
    }

    /// TRYAGAIN, not CLUSTERDOWN: the shard is writable again as soon as an
    /// election ends or this node's partition heals, and cluster clients
    /// retry TRYAGAIN after a pause, where CLUSTERDOWN says the whole cluster
    /// is unusable and makes them reload their slot map.
    func leaseRefusalText(_ shard: Int) -> String {
        if shard < leases.handingOff.count && leases.handingOff[shard] {
            return "TRYAGAIN shard \(shard) is being handed to another node, which will take its writes within milliseconds; retry"
        }
        let term = shard < leases.terms.count ? leases.terms[shard] : 0
        return "TRYAGAIN shard \(shard) has no lease holder here (term \(term)): an election is under way "
            + "or this node cannot reach a majority of the shard's replicas; retry"
    }
}
