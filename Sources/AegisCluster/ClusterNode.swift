/// One node's view of the cluster as a pure state machine: the driver (the
/// server's cluster loop, or aegiskv-sim) feeds it events, each with the time
/// it happened, and carries out the actions it returns. It reads no clock,
/// opens no socket and draws randomness only from the generator it was given.
///
/// Driver contract:
/// - Send `.start(now:)` once, then everything else. Events before start and
///   after a completed `.leave` are ignored.
/// - `.setTimer(id, at:)` replaces that timer's deadline; deliver
///   `.timerFired(id, now:)` once when it passes (late is fine, and is itself
///   a sign of ill health the node takes into account).
/// - Frames in and out are whole frames, length prefix included; read the
///   prefix with `MessageCodec.bodyLength(prefix:)` and close the link when it
///   gives nil.
public struct ClusterNode: Sendable {
    /// Fixed at start but for `timings`, which `.timingsChanged` replaces.
    public internal(set) var settings: ClusterSettings
    public let parameters: ClusterParameters
    let authenticator: any MessageAuthenticator
    public internal(set) var state: MembershipState
    public internal(set) var counters = ClusterCounters()
    /// When a drop was last logged, per link address: at most one line per
    /// peer per minute, whatever the peer sends.
    var dropLoggedAt: [String: Milliseconds] = [:]
    static let dropLogIntervalMs: Milliseconds = 60_000
    static let dropLogAddressesMax = 1024
    static let relaysMax = 1024

    /// - Parameters:
    ///   - incarnation: must exceed every incarnation this node ID used before,
    ///     so that a restarted node overrides what the others remember of it
    ///     (including its own `dead` or `left`). The server passes wall-clock
    ///     milliseconds at start: they grow across restarts without any state
    ///     on disk, and refutations add 1 at a time, far below a restart's gap.
    ///   - randomSeed: seeds the node's `ClusterRandom`.
    ///   - authenticator: tags every outgoing frame and checks every incoming one.
    public init(settings: ClusterSettings, incarnation: UInt64, randomSeed: UInt64,
                authenticator: any MessageAuthenticator) {
        precondition(settings.problem == nil, "invalid ClusterSettings: \(settings.problem ?? "")")
        self.settings = settings
        self.parameters = ClusterParameters(numShards: settings.numShards, virtualNodes: settings.virtualNodes,
                                            replicationFactor: settings.replicationFactor)
        self.authenticator = authenticator
        self.state = MembershipState(incarnation: incarnation, seeds: settings.seeds,
                                     random: ClusterRandom(seed: randomSeed))
    }

    public mutating func step(_ event: ClusterEvent) -> [ClusterAction] {
        var output = ActionBuffer()
        step(event, into: &output)
        return output.actions
    }

    mutating func step(_ event: ClusterEvent, into output: inout ActionBuffer) {
        if case let .start(now) = event {
            guard state.phase == .created else { return }
            start(now: now, into: &output)
            return
        }
        guard state.phase == .running else { return }
        switch event {
        case .start:
            return
        case let .received(frame, fromAddress, now):
            receive(frame: frame, fromAddress: fromAddress, now: now, into: &output)
        case let .timerFired(timer, now):
            timerFired(timer, now: now, into: &output)
        case let .linkBroken(address, now):
            linkBroken(address: address, now: now, into: &output)
        case let .seedsChanged(seeds, now):
            state.seeds = seeds
            if aliveOthers.isEmpty { contactSeeds(now: now, into: &output) }
        case let .timingsChanged(timings, now):
            changeTimings(timings, now: now, into: &output)
        case let .leave(now):
            leave(now: now, into: &output)
        case let .localHealth(lagMs, _):
            reportedLag(lagMs)
        }
    }

    // MARK: - The read-only view for /cluster and /metrics

    /// Every member known, this node included, ordered by node ID.
    public var members: [MemberView] {
        var rows = [MemberView(nodeID: settings.nodeID, gossipAddress: settings.gossipAddress,
                               clientAddress: settings.clientAddress,
                               status: state.phase == .left ? .left : .alive,
                               incarnation: state.incarnation, lastHeardMs: state.startedAt, isLocal: true)]
        for member in state.members.values {
            rows.append(MemberView(nodeID: member.node, gossipAddress: member.gossipAddress,
                                   clientAddress: member.clientAddress, status: member.status,
                                   incarnation: member.incarnation, lastHeardMs: member.lastHeard, isLocal: false))
        }
        return rows.sorted { $0.nodeID < $1.nodeID }
    }

    public var incarnation: UInt64 { state.incarnation }

    /// Lifeguard's local health multiplier: 0 is healthy; each step stretches
    /// this node's probe interval and timeouts by one more interval's worth.
    public var localHealth: Int { state.health }

    /// The node IDs this node holds `alive`, itself included, sorted: what
    /// placement is computed from.
    public var aliveMembers: [NodeID] {
        var alive = state.members.values.filter { $0.status == .alive }.map(\.node)
        if state.phase == .running { alive.append(settings.nodeID) }
        return alive.sorted()
    }
}

/// Collects actions without an allocation per event when the driver reuses it.
struct ActionBuffer {
    var actions: [ClusterAction] = []

    mutating func append(_ action: ClusterAction) { actions.append(action) }
}

/// Everything that decides what the node does next. Equatable so that tests
/// and the simulator can check that a refused message changed none of it.
public struct MembershipState: Sendable, Equatable {
    enum Phase: Sendable, Equatable { case created, running, left }

    var phase = Phase.created
    var startedAt: Milliseconds?
    public internal(set) var incarnation: UInt64
    var seeds: [String]
    var random: ClusterRandom
    var members: [NodeID: Member] = [:]
    /// This pass's shuffled probe order; refilled when used up.
    var probeOrder: [NodeID] = []
    /// Where the next reconnect round starts in the sorted list of members
    /// held dead or suspect, when there are more than one round may tell.
    var reconnectCursor = 0
    var pendingProbes: [PendingProbe] = []
    var relays: [UInt32: Relay] = [:]
    /// When a message from a node this one has never heard of last started a
    /// push/pull with it (see `exchangeWithUnknownSender`).
    var unknownSenderExchangeAt: Milliseconds?
    var broadcasts: [NodeID: Broadcast] = [:]
    var nextSeq: UInt32 = 1
    var health = 0
    /// The last lag report was over the threshold: health stays at 1 or more
    /// until a report says otherwise, whatever acks come in meanwhile.
    var healthHeldByLag = false
    var periodDueAt: Milliseconds?
    var suspicionDueAt: Milliseconds?
    var relayDueAt: Milliseconds?

    init(incarnation: UInt64, seeds: [String], random: ClusterRandom) {
        self.incarnation = incarnation
        self.seeds = seeds
        self.random = random
    }
}

struct Member: Sendable, Equatable {
    var node: NodeID
    var gossipAddress: String
    var clientAddress: String
    var status: MemberStatus
    var incarnation: UInt64
    /// When this node last had a message from the member itself.
    var lastHeard: Milliseconds?
    /// When the member last became alive in this node's view: the start of its
    /// silence window when it has not been heard since.
    var aliveSince: Milliseconds
    /// Set while a probe of it has failed but its silence is still shorter than
    /// suspect_timeout: it is probed again every period until one or the other.
    var failing = false
    var suspicion: Suspicion?

    var silenceStart: Milliseconds { max(lastHeard ?? aliveSince, aliveSince) }
}

struct Suspicion: Sendable, Equatable {
    var start: Milliseconds
    var accusers: Set<NodeID>
    var deadline: Milliseconds
}

struct PendingProbe: Sendable, Equatable {
    var target: NodeID
    var seq: UInt32
    var indirectSent = false
    var answered = false
    var helpersAsked = 0
    var nacks = 0
}

/// A probe this node makes on another's behalf (ping-req).
struct Relay: Sendable, Equatable {
    var requesterAddress: String
    var requesterSeq: UInt32
    /// When to give up on the target and send the requester a nack.
    var nackAt: Milliseconds
}

struct Broadcast: Sendable, Equatable {
    var update: MemberUpdate
    var transmits: Int
}
