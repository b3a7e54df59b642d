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
    /// Set when a term could not be made durable (leasing stopped).
    public var stoppedBy: String?
    /// Hand-offs this node started as holder, and how they ended
    /// (`LeaseHandOffs.Outcome` raw values).
    public var handOffsStarted = 0
    public var handOffsEnded: [String: Int] = [:]
    /// The released hand-offs' pauses: counts per bucket of
    /// `handOffPauseBucketsMs` (then one for the rest), and their sum.
    public var handOffPauseBuckets = Array(repeating: 0, count: LeaseHandOffs.pauseBucketsMs.count + 1)
    public var handOffPauseSumNs: Int64 = 0
    public static var handOffPauseBucketsMs: [Double] { LeaseHandOffs.pauseBucketsMs }

    public init() {}

    public var held: Int { shards.count { $0.heldForMs != nil } }

    init(_ driver: LeaseDriver, routing: ClusterRouting?, nowMs: Int64) {
        enforced = driver.isEnforced
        membersPredatingLeases = driver.predatingMembers
        emptyLearner = driver.isEmptyLearner
        leaseMs = driver.leaseMs
        shards = driver.shards(nowMs: nowMs).map {
            Shard(shard: $0.shard, term: $0.term, heldForMs: $0.heldForMs, localTerm: $0.localVersion.term, localSeq: $0.localVersion.seq,
                  copyMayHaveHole: $0.copyMayHaveHole)
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
        let handOffs = driver.handOffs
        handOffsStarted = handOffs.started
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
