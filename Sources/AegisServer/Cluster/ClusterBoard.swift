import AegisCluster
import CSupport
import Synchronization

/// Whether a member takes part in leases, on positive evidence only.
public enum LeaseSupport: String, Sendable, Equatable {
    /// It announced the `leases` capability.
    case speaksLeases = "speaks_leases"
    /// Its announcement lacks the capability, or it gossiped on a
    /// connection it dialled before announcing anything (release 0.1.0).
    case predatesLeases = "predates_leases"
}

/// One member as /cluster, /metrics and INFO cluster show it.
public struct ClusterMemberView: Sendable, Equatable {
    public var nodeID: String
    public var gossipAddress: String
    /// "" until the member's own hello or the membership state names it.
    public var clientAddress: String
    public var status: MemberStatus
    public var incarnation: UInt64
    /// Monotonic ms when a message from it was last read (this node: now).
    public var lastHeardMonotonicMs: Int64
    public var isSelf: Bool
    /// Shards it is primary and follower for; nil until placement exists in this build.
    public var shardsPrimary: Int?
    public var shardsFollower: Int?
    /// The release and commit it announced (PeerAnnouncement); nil until it
    /// has, and always for a member running a release before 0.1.1.
    public var version: String?
    public var commit: String?

    public init(nodeID: String, gossipAddress: String, clientAddress: String, status: MemberStatus, incarnation: UInt64,
                lastHeardMonotonicMs: Int64, isSelf: Bool, shardsPrimary: Int? = nil, shardsFollower: Int? = nil) {
        self.nodeID = nodeID
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
        self.status = status
        self.incarnation = incarnation
        self.lastHeardMonotonicMs = lastHeardMonotonicMs
        self.isSelf = isSelf
        self.shardsPrimary = shardsPrimary
        self.shardsFollower = shardsFollower
    }
}

/// What the cluster loop last published: a value copied out under a lock,
/// so the admin thread and reactors (INFO) never touch the loop's state.
public struct ClusterSnapshot: Sendable {
    public var running = false
    public var selfID = ""
    /// Sorted by node id (byte order), this node included.
    public var members: [ClusterMemberView] = []
    /// Per peer, whether it takes part in leases as its current control
    /// connection showed; absent until it dialled this node and sent a frame.
    public var leaseSupport: [String: LeaseSupport] = [:]
    /// nil until placement exists in this build.
    public var placementDigest: String?
    public var messagesSent: [String: Int] = [:]
    public var messagesReceived: [String: Int] = [:]
    public var bytesSent = 0
    public var bytesReceived = 0
    public var dropped: [PeerRefusal: Int] = [:]
    /// Whether peer links run TLS with mutual authentication (cluster_tls_*).
    public var peerTLSEnabled = false
    /// Peer links whose TLS handshake completed, and those closed because TLS
    /// did not authenticate both ends (either side's refusal), by reason.
    public var peerTLSHandshakes = 0
    public var peerTLSRefused: [PeerTLSRefusal: Int] = [:]
    /// Messages the loop could not hand to a link: the peer was backing off
    /// after failed connects, or its outbound queue was full.
    public var unsent = 0
    /// Links closed because the peer stopped reading and its queue filled
    /// (its own limit, or the node-wide budget: `peerQueueBudgetClosures`).
    public var slowPeerClosures = 0
    /// Of those, closed because all links together reached the budget.
    public var peerQueueBudgetClosures = 0
    /// Bulk links closed abortively because forwarded requests on them went
    /// unanswered with nothing heard from the peer since: what the link still
    /// held is dropped rather than run on the peer after a partition heals.
    public var abandonedForwardLinks = 0
    /// Bytes all peer links hold for their peers now, and their bound.
    public var peerQueuedBytes = 0
    public var peerQueueBudgetBytes = 0
    public var linksConnected = 0
    public var linksConnecting = 0
    public var forwarding = ForwardingSnapshot()
    /// Lifeguard's local health score (0 healthy … 8): how many gossip
    /// intervals this node adds to its own probe interval and timeouts
    /// because it runs late itself.
    public var localHealth = 0
    /// The membership timings the state machine runs with now (they change
    /// on SIGHUP); nil where the loop drives no membership (link tests).
    public var timings: MembershipTimings?
    public var replication = ReplicationSnapshot()
    /// Shard leases; empty (not enforced) with replication_factor 1.
    public var leases = LeaseSnapshot()
    /// Catching up with the shards' holders (a restart's, a refill's).
    public var catchUp = CatchUpSnapshot()

    public init() {}

    public func count(_ status: MemberStatus) -> Int { members.count { $0.status == status } }

    public var selfMember: ClusterMemberView? { members.first { $0.isSelf } }
}

/// Requests from other threads to the cluster loop.
public enum ClusterCommand: Sendable {
    case seeds([String])
    /// gossip_interval, suspect_timeout and dead_timeout as reloaded.
    case timings(MembershipTimings)
    /// Hand the shards this node holds to their other replicas for at most
    /// `handOffWithinMs`, then tell the others this node leaves, flush, and
    /// stop; stop anyway `announceWithinMs` after that.
    case leave(handOffWithinMs: Int64, announceWithinMs: Int64)
    case stop
}

/// The meeting point of the cluster loop and everyone else: the loop
/// publishes snapshots here; the supervisor (SIGHUP, SIGTERM) posts commands
/// and wakes the loop through its eventfd.
public final class ClusterBoard: Sendable {
    private let published = Mutex(ClusterSnapshot())
    private let inbox = Mutex<[ClusterCommand]>([])
    /// The loop's eventfd; -1 while no loop runs.
    private let wakeFD = Atomic<Int32>(-1)

    public init() {}

    public var snapshot: ClusterSnapshot { published.withLock { $0 } }

    func publish(_ snapshot: ClusterSnapshot) {
        published.withLock { $0 = snapshot }
    }

    public func post(_ command: ClusterCommand) {
        inbox.withLock { $0.append(command) }
        let fd = wakeFD.load(ordering: .acquiring)
        if fd >= 0 { _ = aegis_eventfd_signal(fd) }
    }

    func takeCommands() -> [ClusterCommand] {
        inbox.withLock { commands in
            defer { commands.removeAll() }
            return commands
        }
    }

    func attach(wakeFD fd: Int32) { wakeFD.store(fd, ordering: .releasing) }
    func detach() { wakeFD.store(-1, ordering: .releasing) }
}

/// Forwarding between nodes as /metrics shows it.
public struct ForwardingSnapshot: Sendable {
    /// Requests sent to each peer (by node id).
    public var forwardedByPeer: [String: Int] = [:]
    /// Requests answered with an error instead of the peer's reply, by reason.
    public var errorsByReason: [String: Int] = [:]
    /// Round trips from the loop's send to the reply's arrival: cumulative
    /// counts per upper bound (seconds), then +Inf.
    public var latencyBoundsSeconds: [Double] = []
    public var latencyCumulative: [Int] = []
    public var latencySumSeconds: Double = 0
    public var latencyCount = 0
    /// Records the loop holds for reactors whose rings are full (beyond the
    /// rings themselves): part of aegis_interconnect_memory_bytes.
    public var heldForReactorsBytes = 0
    /// Farewells (ForwardingRelay, "Farewells"): sent as this node stopped,
    /// received from stopping peers, and the answers to this node's.
    public var farewellsSent = 0
    public var farewellsReceived = 0
    public var farewellsAcknowledged = 0
    /// Reads whose primary could not be reached, sent to a replica's copy:
    /// this node's own, or another follower's.
    public var readsToOwnCopy = 0
    public var readsToPeerCopy = 0

    public init() {}

    init(_ counters: ForwardingRelay.Counters) {
        forwardedByPeer = counters.forwardedByPeer
        errorsByReason = counters.errorsByReason
        latencyBoundsSeconds = ForwardingRelay.latencyBucketsMicros.map { Double($0) / 1_000_000 }
        var running = 0
        latencyCumulative = counters.latencyBuckets.map { running += $0; return running }
        latencySumSeconds = Double(counters.latencySumMicros) / 1_000_000
        latencyCount = counters.latencyCount
        farewellsSent = counters.farewellsSent
        farewellsReceived = counters.farewellsReceived
        farewellsAcknowledged = counters.farewellsAcknowledged
        readsToOwnCopy = counters.readsToOwnCopy
        readsToPeerCopy = counters.readsToPeerCopy
    }

    init(_ relay: ForwardingRelay) {
        self.init(relay.counters)
        heldForReactorsBytes = relay.heldForReactorsBytes
    }
}
