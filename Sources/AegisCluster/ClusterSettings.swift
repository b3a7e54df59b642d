/// What one node's membership needs to know, as plain values: the server
/// fills it from `AegisConfig`, the simulator from its seed. All durations are
/// milliseconds of the monotonic clock the events carry.
public struct ClusterSettings: Sendable, Equatable {
    public var nodeID: NodeID
    /// "host:port" other nodes send gossip to (`gossip_advertise_addr`).
    public var gossipAddress: String
    /// "host:port" clients are redirected to (`client_advertise_addr`).
    public var clientAddress: String
    /// Gossip addresses to join through (`seeds`); the node's own address is ignored.
    public var seeds: [String]

    public var gossipIntervalMs: Int64
    /// A member that has answered none of this node's probes for this long becomes `suspect`.
    public var suspectTimeoutMs: Int64
    /// A member silent for this long is `dead`: suspicion lasts `deadTimeoutMs - suspectTimeoutMs`
    /// once confirmed (Lifeguard may stretch it while confirmations are missing).
    public var deadTimeoutMs: Int64
    /// Members asked to probe on this node's behalf when a direct probe goes unanswered (SWIM's k).
    public var indirectProbes: Int
    /// Lifeguard: local health awareness and suspicion that shortens with confirmations.
    /// Off gives plain SWIM, kept for the simulator's comparison.
    public var lifeguard: Bool
    /// Most bytes of the body of a control message (probes and acks with their
    /// piggybacked updates): one packet's worth, so that membership updates can
    /// never crowd out the probes that carry them (memberlist#299).
    public var maxControlMessageBytes: Int
    public var pushPullIntervalMs: Int64
    /// How often a node that knows no live member asks its seeds again.
    public var seedRetryIntervalMs: Int64

    /// Placement parameters: a peer whose values differ is refused, since the
    /// two would compute different shard maps.
    public var numShards: UInt32
    public var virtualNodes: UInt32
    public var replicationFactor: UInt32

    public init(
        nodeID: NodeID, gossipAddress: String, clientAddress: String, seeds: [String] = [],
        gossipIntervalMs: Int64 = 1000, suspectTimeoutMs: Int64 = 5000, deadTimeoutMs: Int64 = 30_000,
        indirectProbes: Int = 3, lifeguard: Bool = true, maxControlMessageBytes: Int = 1400,
        pushPullIntervalMs: Int64 = 30_000, seedRetryIntervalMs: Int64 = 5000,
        numShards: UInt32 = 256, virtualNodes: UInt32 = 128, replicationFactor: UInt32 = 3
    ) {
        self.nodeID = nodeID
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
        self.seeds = seeds
        self.gossipIntervalMs = gossipIntervalMs
        self.suspectTimeoutMs = suspectTimeoutMs
        self.deadTimeoutMs = deadTimeoutMs
        self.indirectProbes = indirectProbes
        self.lifeguard = lifeguard
        self.maxControlMessageBytes = maxControlMessageBytes
        self.pushPullIntervalMs = pushPullIntervalMs
        self.seedRetryIntervalMs = seedRetryIntervalMs
        self.numShards = numShards
        self.virtualNodes = virtualNodes
        self.replicationFactor = replicationFactor
    }

    /// The three timings a reload may change while the node runs.
    public var timings: MembershipTimings {
        get { MembershipTimings(gossipIntervalMs: gossipIntervalMs, suspectTimeoutMs: suspectTimeoutMs, deadTimeoutMs: deadTimeoutMs) }
        set {
            gossipIntervalMs = newValue.gossipIntervalMs
            suspectTimeoutMs = newValue.suspectTimeoutMs
            deadTimeoutMs = newValue.deadTimeoutMs
        }
    }

    /// nil when the settings can run; otherwise why not.
    public var problem: String? {
        if gossipIntervalMs <= 0 { return "gossip interval must be positive" }
        if suspectTimeoutMs <= gossipIntervalMs { return "suspect timeout must exceed the gossip interval" }
        if deadTimeoutMs <= suspectTimeoutMs { return "dead timeout must exceed the suspect timeout" }
        if indirectProbes < 0 { return "indirect probe count must not be negative" }
        if maxControlMessageBytes < 512 { return "control messages need at least 512 bytes" }
        if pushPullIntervalMs <= 0 || seedRetryIntervalMs <= 0 { return "intervals must be positive" }
        if gossipAddress.utf8.count > 255 || clientAddress.utf8.count > 255 { return "addresses are at most 255 bytes" }
        return nil
    }
}

/// `gossip_interval`, `suspect_timeout` and `dead_timeout` in milliseconds:
/// the membership timings SIGHUP reloads (`ClusterEvent.timingsChanged`).
public struct MembershipTimings: Sendable, Equatable, CustomStringConvertible {
    public var gossipIntervalMs: Int64
    public var suspectTimeoutMs: Int64
    public var deadTimeoutMs: Int64

    public init(gossipIntervalMs: Int64, suspectTimeoutMs: Int64, deadTimeoutMs: Int64) {
        self.gossipIntervalMs = gossipIntervalMs
        self.suspectTimeoutMs = suspectTimeoutMs
        self.deadTimeoutMs = deadTimeoutMs
    }

    public var description: String {
        "gossip_interval \(gossipIntervalMs) ms, suspect_timeout \(suspectTimeoutMs) ms, dead_timeout \(deadTimeoutMs) ms"
    }
}
