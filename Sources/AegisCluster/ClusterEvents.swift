/// Computes the 32-byte tag that authenticates a node-to-node message.
/// AegisCluster never implements a MAC itself: the server passes HMAC-SHA256
/// keyed by `gossip_secret` (swift-crypto), the simulator a cheap keyed mix.
public protocol MessageAuthenticator: Sendable {
    /// Exactly `MessageCodec.tagBytes` bytes for `message`.
    func tag(for message: ArraySlice<UInt8>) -> [UInt8]
}

/// A monotonic-clock time in milliseconds. Every event carries one; the state
/// machine never reads a clock.
public typealias Milliseconds = Int64

public enum MemberStatus: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case alive = 0
    case suspect = 1
    case dead = 2
    case left = 3

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }
}

/// Timers the node asks its driver to arm. Arming an ID that is already armed
/// replaces its deadline; a fired timer is gone until armed again.
public enum TimerID: Hashable, Sendable, CaseIterable {
    /// Start of the next protocol period: probe, and close the previous round.
    case protocolPeriod
    /// A direct probe went unanswered this long: ask others to probe.
    case probeTimeout
    /// The earliest moment a suspected member's suspicion runs out.
    case suspicion
    /// Next full-state exchange with a random member.
    case pushPull
    /// Next join attempt through the seeds while no member is known alive.
    case seedRetry
    /// A probe made for another member (ping-req) is due a nack if still unanswered.
    case relayTimeout
    /// Every gossip_interval, unstretched: tell members held dead or suspect
    /// so, directly, so that a healed peer refutes within one interval.
    case reconnect
}

/// Which queue of the peer link a message goes on: probes and acks must never
/// wait behind full-state exchanges (or, later, replication streams).
public enum Lane: Sendable, Equatable {
    case control
    case bulk
}

public enum ClusterLogLevel: Sendable, Equatable {
    case info
    case notice
    case warning
}

public enum ClusterEvent: Sendable {
    /// The node starts: it arms its timers and contacts its seeds.
    case start(now: Milliseconds)
    /// One whole frame (length prefix included) read from a peer.
    /// `fromAddress` names the link it came on; it only keys the rate limit of
    /// drop logs, since a message's sender is named inside the authenticated body.
    case received(frame: [UInt8], fromAddress: String, now: Milliseconds)
    case timerFired(TimerID, now: Milliseconds)
    /// The link to this gossip address failed: a probe waiting on it goes
    /// straight to indirect probing instead of waiting out its timeout.
    case linkBroken(address: String, now: Milliseconds)
    /// The seed list was reloaded (SIGHUP).
    case seedsChanged([String], now: Milliseconds)
    /// The membership timings were reloaded (SIGHUP). Timings that could not
    /// run (see `ClusterSettings.problem`) are refused with a warning and the
    /// old ones kept.
    case timingsChanged(MembershipTimings, now: Milliseconds)
    /// Graceful stop: announce `left` to everyone known alive.
    case leave(now: Milliseconds)
    /// How late the node itself runs (its reactors or the cluster loop lag by
    /// `lagMs`; 0 when on time), reported regularly, e.g. before each protocol
    /// period: past half a gossip interval Lifeguard stretches this node's
    /// timeouts rather than let it accuse healthy peers, and holds the stretch
    /// until a report says the lag is over.
    case localHealth(lagMs: Int64, now: Milliseconds)
}

public struct MemberChange: Sendable, Equatable {
    public let node: NodeID
    /// nil when the member was not known before.
    public let from: MemberStatus?
    public let to: MemberStatus
    public let incarnation: UInt64
    /// One line for the `notice` log: why this happened.
    public let reason: String
}

public enum ClusterAction: Sendable, Equatable {
    /// One whole frame (length prefix included) for the peer at `to`.
    case send(frame: [UInt8], to: String, lane: Lane)
    case setTimer(TimerID, at: Milliseconds)
    case memberChanged(MemberChange)
    /// Already rate limited (drops: once per peer per minute; seed retries:
    /// once per attempt); the driver logs every one it gets.
    case log(ClusterLogLevel, String)
}

/// One row of `/cluster`.
public struct MemberView: Sendable, Equatable {
    public let nodeID: NodeID
    public let gossipAddress: String
    public let clientAddress: String
    public let status: MemberStatus
    public let incarnation: UInt64
    /// Monotonic ms when this node last heard from the member itself; nil if
    /// never (known only through gossip). For the node itself, its start time.
    public let lastHeardMs: Milliseconds?
    public let isLocal: Bool
}

public enum DropReason: Int, Sendable, CaseIterable, CustomStringConvertible {
    case badMAC, unknownVersion, clusterMismatch, malformed

    public var description: String {
        switch self {
        case .badMAC: "bad_mac"
        case .unknownVersion: "unknown_version"
        case .clusterMismatch: "cluster_mismatch"
        case .malformed: "malformed"
        }
    }
}

/// Counters for `/metrics`; they only grow.
public struct ClusterCounters: Sendable, Equatable {
    public internal(set) var sentByType: [MessageType: UInt64] = [:]
    public internal(set) var receivedByType: [MessageType: UInt64] = [:]
    public internal(set) var droppedByReason: [DropReason: UInt64] = [:]
    public internal(set) var probesFailed: UInt64 = 0
    public internal(set) var refutations: UInt64 = 0

    public init() {}
}
