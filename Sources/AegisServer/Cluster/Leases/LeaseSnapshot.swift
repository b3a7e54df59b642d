/// How a node's copies stand against their lease holders: whether it
/// serves every shard it replicates, which /health and /ready wait for
/// (`LeaseDriver.reviewStanding`).
public struct ReplicaStanding: Sendable, Equatable {
    /// Shards this node is a voter of (a replica).
    public var replicated = 0
    /// Of those, whose lease it holds.
    public var held = 0
    /// Of those, whose copy here is below what their holder last claimed.
    public var behind = 0
    /// Of those, with no holder this node knows of (an election, a
    /// partition, or a start that has not heard the others yet).
    public var withoutHolder = 0
    /// Leases are enforced here. A node alone with no seeds, or among
    /// members predating leases, has no holders to stand in step with.
    public var applies = false
    /// Set by the cluster loop's first review; a node whose configuration
    /// puts it in a cluster is not known to serve its shards before it.
    public var reviewed = false

    public init(applies: Bool = false, reviewed: Bool = false) {
        self.applies = applies
        self.reviewed = reviewed
    }

    /// Whether the node serves every shard it replicates: it holds the
    /// lease, or its copy holds what the holder claimed a renewal ago. A
    /// node that is a replica of nothing yet (it has not heard its peers)
    /// is not in step.
    public var inStep: Bool { !applies || (replicated > 0 && behind == 0 && withoutHolder == 0) }
}

extension NodeContext {
    /// Where this node stands against its shards' holders, as /health,
    /// /ready, /stats, INFO and aegis_ready judge it. A node started with
    /// seeds and replication_factor > 1 is in a cluster from its first
    /// moment: until the cluster loop has reviewed its shards it is not
    /// known to serve them, so it is not in step (a restarted node said ok
    /// before it heard of any holder, and the rolling restart stopped the
    /// next node while it held nothing).
    public func replicaStanding(_ cluster: ClusterSnapshot) -> ReplicaStanding {
        var standing = cluster.leases.standing
        if !standing.reviewed && config.replicationFactor > 1 && !config.seeds.isEmpty { standing.applies = true }
        return standing
    }
}

/// The shard leases as /cluster, /metrics and INFO show them.
public struct LeaseSnapshot: Sendable, Equatable {
    public struct Shard: Sendable, Equatable {
        public var shard: Int
        public var term: UInt32
        /// ms left of this node's lease on its own clock; nil when it holds none.
        public var heldForMs: Int64?
        /// The newest (term, seq) of the shard this node holds, as its lease
        /// machine counts it when it votes or campaigns.
        public var localTerm: UInt32 = 0
        public var localSeq: UInt64 = 0
        /// This node restarted with its log and has had no complete copy of
        /// the shard since: whole voters refuse its campaigns.
        public var copyMayHaveHole = false
        /// This node started with an empty data_dir (a first start, or a
        /// data_dir removed whole) and has had no complete copy of the shard
        /// since: its grants count toward a new lease only beside a majority
        /// of other grants or where every replica grants.
        public var blank = false
    }

    /// False while the node is alone with no seeds (writes need no lease
    /// yet), and while `membersPredatingLeases` names anyone.
    public var enforced = false
    /// Members (not left) known to run a release before leases.
    public var membersPredatingLeases: [String] = []
    public var emptyLearner = false
    public var leaseMs: Int64 = 0
    public var shards: [Shard] = []
    public var electionsStarted = 0
    public var electionsWon = 0
    public var electionsLost = 0
    public var termChanges = 0
    /// Campaigns this node refused because the candidate's copy may have a
    /// hole and its own is whole (or a whole one at least as new is asking).
    public var holedCandidatesRefused = 0
    /// Durable writes of the lease-terms file.
    public var termWrites = 0
    /// Lease frames refused (bad MAC, other cluster, malformed).
    public var framesDropped = 0
    /// Shards this node answers reads for (their primary in the shard map)
    /// without holding their lease: those reads may be stale.
    public var readsPossiblyStaleShards = 0
    /// Whether this node serves every shard it replicates (/health, /ready).
    public var standing = ReplicaStanding()
    /// Set when a term could not be made durable (leasing stopped).
    public var stoppedBy: String?
    /// Hand-offs this node started as holder, and how they ended
    /// (`LeaseHandOffs.Outcome` raw values).
    public var handOffsStarted = 0
    public var handOffsEnded: [String: Int] = [:]
    /// A hand-off running now: its shard, target and ms since it started.
    public struct HandOff: Sendable, Equatable {
        public var shard: Int
        public var target: String
        public var ms: Int64
    }
    public var handOffsRunning: [HandOff] = []
    /// The released hand-offs' pauses: counts per bucket of
    /// `handOffPauseBucketsMs` (then one for the rest), and their sum.
    public var handOffPauseBuckets = Array(repeating: 0, count: LeaseHandOffs.pauseBucketsMs.count + 1)
    public var handOffPauseSumNs: Int64 = 0
    public static var handOffPauseBucketsMs: [Double] { LeaseHandOffs.pauseBucketsMs }

    public init() {}

    public var held: Int { shards.count { $0.heldForMs != nil } }
    public var blank: Int { shards.count(where: \.blank) }

    init(_ driver: LeaseDriver, routing: ClusterRouting?, nowMs: Int64) {
        enforced = driver.isEnforced
        membersPredatingLeases = driver.predatingMembers
        emptyLearner = driver.isEmptyLearner
        leaseMs = driver.leaseMs
        shards = driver.shards(nowMs: nowMs).map {
            Shard(shard: $0.shard, term: $0.term, heldForMs: $0.heldForMs, localTerm: $0.localVersion.term, localSeq: $0.localVersion.seq,
                  copyMayHaveHole: $0.copyMayHaveHole, blank: $0.blank)
        }
        let c = driver.counters
        electionsStarted = c.electionsStarted
        electionsWon = c.electionsWon
        electionsLost = c.electionsLost
        termChanges = c.termChanges
        holedCandidatesRefused = Int(clamping: driver.holedCandidatesRefused)
        termWrites = c.termWrites
        framesDropped = c.framesDropped
        stoppedBy = driver.stoppedBy
        standing = driver.standing
        let handOffs = driver.handOffs
        handOffsStarted = handOffs.started
        handOffsRunning = handOffs.running.sorted { $0.key < $1.key }.map {
            HandOff(shard: $0.key, target: $0.value.target.name, ms: nowMs - $0.value.startedMs)
        }
        handOffsEnded = Dictionary(uniqueKeysWithValues: LeaseHandOffs.Outcome.allCases.map { ($0.rawValue, handOffs.ended[$0, default: 0]) })
        handOffPauseBuckets = handOffs.pauseBuckets
        handOffPauseSumNs = handOffs.pauseSumNs
        // While a member predates leases nothing is fenced: every shard this
        // node answers as the map's primary may be stale, lease or not.
        let unfenced = !membersPredatingLeases.isEmpty
        if enforced || unfenced, let routing {
            readsPossiblyStaleShards = shards.count {
                routing.primaryHere.indices.contains($0.shard) && routing.primaryHere[$0.shard] && (unfenced || $0.heldForMs == nil)
            }
        }
    }
}
