import AegisCluster
import AegisStore

/// What one live node believes, for the agreement checks.
public struct LiveNodeView: Sendable {
    public let nodeID: NodeID
    public let members: [MemberView]
    public let aliveMembers: [NodeID]
}

/// One thing all live nodes must agree on once faults have healed. Membership
/// is checked by `MembershipAgreement`; placement plugs in here with a check
/// that computes each view's shard map from `aliveMembers` and compares them.
public protocol AgreementCheck: Sendable {
    var name: String { get }
    /// nil when the views agree; otherwise a one-line description.
    func disagreement(among views: [LiveNodeView], running: Set<NodeID>) -> String?
}

/// Every live node holds every running node `alive` and every stopped one
/// `dead`, `left` or unknown.
public struct MembershipAgreement: AgreementCheck {
    public let name = "membership"

    public init() {}

    public func disagreement(among views: [LiveNodeView], running: Set<NodeID>) -> String? {
        for view in views {
            let alive = Set(view.aliveMembers)
            if alive != running {
                let missing = running.subtracting(alive).sorted().map(\.name)
                let extra = alive.subtracting(running).sorted().map(\.name)
                return "\(view.nodeID) sees alive \(alive.count) of \(running.count) running; not alive: \(missing), alive but stopped: \(extra)"
            }
            for member in view.members where !running.contains(member.nodeID)
                && member.status != .dead && member.status != .left {
                return "\(view.nodeID) holds stopped \(member.nodeID) as \(member.status)"
            }
        }
        return nil
    }
}

public struct SimulationReport: Sendable {
    public var scenario: Scenario
    public var traceHash: UInt64
    public var violations: [String]
    /// `dead` verdicts about a node that was running and not paused for the
    /// whole dead_timeout before the verdict.
    public var falseDeaths: Int
    /// `suspect` verdicts about such a node (refuted, or they would be deaths).
    public var falseSuspicions: Int
    /// Crash → first `suspect` (or `dead`) on any live node, per crash.
    public var suspectDelaysMs: [Int64]
    /// Crash → first `dead` on any live node, per crash that stayed down long enough.
    public var deadDelaysMs: [Int64]
    public var eventsProcessed: Int
    public var framesSent: Int
    /// Frames with a flipped byte delivered and refused without a state change.
    public var corruptFramesRefused: Int
    public var nodeSeconds: Double
    /// The highest Lifeguard local health score any node reached.
    public var localHealthPeak = 0
    /// Leases won (not renewals), over all nodes and shards.
    public var leasesAcquired = 0
    /// Term changes the lease machines reported.
    public var termChanges = 0
    /// Lease frames with a flipped byte delivered and refused without a state change.
    public var corruptLeaseFramesRefused = 0
    /// Writes of the replication model acknowledged at W = 2.
    public var writesAcknowledged = 0
    /// Restarted copies whose log replay proved them whole (checked against the model).
    public var replayedWholeCopies = 0
    /// Newer shard configs a node persisted after learning them from a peer
    /// (`--configs`: nodes that came back from a wipe without theirs).
    public var configsAdopted = 0
    /// Lease rounds won under a configuration new to the winner.
    public var configsCommitted = 0
    /// `--config-changes`: changes holders proposed after the model stream.
    public var configChangesProposed = 0
    /// Hand-offs of a lease the holders started, and released to their target.
    public var handOffsStarted = 0
    public var handOffsReleased = 0
    /// Releases that reached a voter before the target's ask (the voter
    /// ended its promise to the holder there).
    public var releasesBeforeAsk = 0
    /// Leases a holder let go for a replica whose copy was whole through
    /// newer writes (`LeaseMachine.yieldsTo`).
    public var yieldsToNewerWholeCopies = 0
    /// Restarts of a node still blank for some shard (`stillBlank`): a
    /// wiped node that stopped again before its refill.
    public var restartsStillBlank = 0

    public var passed: Bool { violations.isEmpty }
}

/// Runs real `ClusterNode`s over a simulated network and clock. Everything —
/// node randomness, network loss and delay, fault times — derives from the
/// scenario's seed, and events at equal times run in scheduling order, so the
/// same seed always gives the same trace (compared by `traceHash`).
public final class Simulation {
    enum Event {
        case start(node: Int)
        case deliver(to: Int, frame: [UInt8], fromAddress: String, corrupted: Bool)
        case timer(node: Int, id: TimerID, generation: UInt64)
        case linkBroken(node: Int, address: String)
        case crash(node: Int)
        case restart(node: Int)
        case pause(node: Int, until: Int64)
        case leave(node: Int)
        case partition(from: [Int], to: [Int], active: Bool)
        case reportLag(node: Int, until: Int64, lagMs: Int64)
        case reactorLag(node: Int, until: Int64, lagMs: Int64)
        case checkSuspected(node: Int, crashedAt: Int64)
        case checkAgreement
        /// Is `member` back to alive at `observer`, which has held it
        /// suspect or dead since `since` (its view's transition time)?
        case checkCameBack(observer: Int, member: Int, since: Int64)
        case leaseTimer(node: Int, id: LeaseTimerID, generation: UInt64)
        case checkLeaseLiveness
        /// The replication model: a holder's newest (term, seq) for a shard
        /// reaches a follower, and the follower's acknowledgement comes back.
        case replicate(to: Int, from: Int, shard: Int, version: EntryVersion, holderComplete: EntryVersion)
        case replicaAck(to: Int, from: Int, shard: Int, version: EntryVersion, life: UInt64)
        /// `--config-changes`: the holder's copy of a shard reaches a newcomer
        /// (a shard stream, in one step), and its acknowledgement comes back.
        case modelStream(to: Int, from: Int, shard: Int, version: EntryVersion, complete: EntryVersion, move: UInt64)
        case streamAck(to: Int, from: Int, shard: Int, move: UInt64, life: UInt64)
    }

    struct SimNode {
        let nodeID: NodeID
        let address: String
        var node: ClusterNode?
        /// Kept beside `node` (set with it) because testing an optional struct
        /// against nil copies it, and this is asked on every event.
        var isRunning = false
        var timerGenerations: [TimerID: UInt64] = [:]
        var pausedUntil: Int64 = 0
        var pauses: [(from: Int64, until: Int64)] = []
        var slowUntil: Int64 = 0
        var slowDelayMs: Int64 = 0
        /// Lag the node's reactors report until then (its own handling stays on time).
        var reactorLagUntil: Int64 = 0
        var reactorLagMs: Int64 = 0
        let driftPPM: Int64
        let clockOffset: Int64
        var lifeIncarnation: UInt64 = 0
        var lives = 0
        var crashedAt: Int64?
        var stoppedForGood = false
        var lease: LeaseMachine?
        var leaseTimerGenerations: [LeaseTimerID: UInt64] = [:]
        /// What `persistTerm` wrote: it survives a crash, not a wipe.
        var disk: [Int: PersistedTerm] = [:]
        /// The server's `lease-terms.blank`: the shards the machine was still
        /// blank for when it stopped (written eagerly here; the server writes
        /// it up to a review late, which only keeps more shards blank).
        var blankOnDisk: Set<Int> = []
        var emptyLearner = false
        let leaseSkewMs: Int64
        /// Per shard, the end in true time of the lease this node holds (or
        /// held last): what the overlap invariant compares.
        var leaseEndReal: [Int64]
        /// Per shard, the newest (term, seq) this replica holds, and so claims
        /// in its lease asks. After a crash: what its log replays.
        var shardVersions: [EntryVersion]
        /// Per shard, the version through which this replica holds every
        /// write: below `shardVersions` when its copy has a hole.
        var completeThrough: [EntryVersion]
        /// Per shard, the newest write this node made as holder: what its
        /// write-ahead log replays after a crash (a follower logs nothing it
        /// receives). Lost with a wipe.
        var loggedVersions: [EntryVersion]
        /// Per shard, every write this node logged, seen as its log replay
        /// sees them: whether the replay proves the copy whole. Lost with a wipe.
        var loggedCopies: [ReplayedCopy]
        /// Per shard, what this node held when it first applied a replicated
        /// write since its last wipe: after a crash its log is complete
        /// through there and no further (the received writes are not in it).
        var completeBeforeReceiving: [EntryVersion?]
        /// Per shard, whether a holder has replicated to this node since it
        /// started: a restarted follower acknowledges from nothing, so the
        /// first holder to replicate to it sends its whole copy.
        var followedSinceStart: [Bool]
    }

    public let scenario: Scenario
    let agreementChecks: [any AgreementCheck]
    let authenticator: KeyedMixAuthenticator
    var queue = EventQueue<Event>()
    var nodes: [SimNode] = []
    var addressIndex: [String: Int] = [:]
    var addressIndexByID: [NodeID: Int] = [:]
    /// Per observer, per member it holds suspect or dead: since when.
    var heldDownSince: [Int: [Int: Int64]] = [:]
    var blocked: [Int: Int] = [:]
    var network: ClusterRandom
    var now: Int64 = 0
    var trace = TraceHash()
    var nextTimerGeneration: UInt64 = 1
    var report: SimulationReport
    /// Per crashed node: the crash time, and when a live node first suspected it.
    var firstSuspected: [Int: Int64] = [:]
    var firstDead: [Int: Int64] = [:]
    /// Every shard's replica set for the leases: one static map over all the
    /// scenario's nodes, as the lease design requires every node to share.
    let leasePlacement: ShardMap
    let leaseParameters: ClusterParameters
    /// (shard << 32 | term) → the node that held that term.
    var termHolders: [UInt64: Int] = [:]
    /// (shard << 32 | epoch) → the configuration committed at that epoch.
    var committedConfigs: [UInt64: ShardConfig] = [:]
    /// `--config-changes`: per shard, the move its holder has under way.
    var moves: [Int: ShardMove] = [:]
    /// Per shard: the hand-off its holder has under way, and since when.
    var handOffFlights: [Int: (holder: Int, target: Int, term: UInt32, since: Int64)] = [:]
    /// Per shard: a hand-off in the stopping server's order, started in the
    /// machine, its writes going on until the holder's vote is prepared for
    /// the target (`handOffInServerOrder`).
    var preparingHandOff: [Int: (holder: Int, target: Int, since: Int64)] = [:]
    /// Per shard: such a hand-off frozen and flushed, until its release.
    var frozenForHandOff: [Int: (holder: Int, target: Int, since: Int64)] = [:]
    var nextMove: UInt64 = 1
    /// Per shard, per node: the newest version it acknowledged (W per set).
    var acknowledgedBy: [[Int: EntryVersion]]
    /// Drawn from only with `--config-changes`, so other runs keep their traces.
    var moveRandom: ClusterRandom
    /// Per shard, the newest version acknowledged at W = 2 (the holder and
    /// one follower had it when the write's reply would have gone out).
    var acknowledgedVersions: [EntryVersion]

    static let wallClockEpochMs: Int64 = 1_767_225_600_000

    public init(scenario: Scenario, agreementChecks: [any AgreementCheck] = [MembershipAgreement()]) {
        self.scenario = scenario
        self.agreementChecks = agreementChecks
        self.authenticator = KeyedMixAuthenticator(key: 0xAE615 ^ 0x5EC2E7)
        self.network = ClusterRandom(seed: scenario.seed ^ 0x4E37_0000_0000_0001)
        let leases = scenario.leases
        self.acknowledgedVersions = Array(repeating: .zero, count: Int(leases.numShards))
        self.acknowledgedBy = Array(repeating: [:], count: Int(leases.numShards))
        self.moveRandom = ClusterRandom(seed: scenario.seed ^ 0x00C0_FF1C_0000_0003)
        self.leaseParameters = ClusterParameters(numShards: leases.numShards, virtualNodes: leases.virtualNodes,
                                                 replicationFactor: leases.replicationFactor)
        // Cannot fail: 3 to 16 members and fixed, in-range parameters.
        self.leasePlacement = try! ShardMap(members: (0..<scenario.nodeCount).map { NodeID("node\($0)")! },
                                            numShards: Int(leases.numShards), virtualNodes: Int(leases.virtualNodes),
                                            replicationFactor: Int(leases.replicationFactor))
        self.report = SimulationReport(scenario: scenario, traceHash: 0, violations: [], falseDeaths: 0, falseSuspicions: 0,
                                       suspectDelaysMs: [], deadDelaysMs: [], eventsProcessed: 0, framesSent: 0,
                                       corruptFramesRefused: 0, nodeSeconds: 0)
        var setup = ClusterRandom(seed: scenario.seed ^ 0x0005_E70F_0000_0002)
        for index in 0..<scenario.nodeCount {
            let address = "10.0.\(index / 250).\(index % 250 + 1):7701"
            nodes.append(SimNode(nodeID: NodeID("node\(index)")!, address: address, node: nil,
                                 driftPPM: scenario.driftPPM[index],
                                 clockOffset: Int64.random(in: 0...1_000_000, using: &setup),
                                 leaseSkewMs: scenario.leaseClockSkewMs[index],
                                 leaseEndReal: Array(repeating: 0, count: Int(scenario.leases.numShards)),
                                 shardVersions: Array(repeating: .zero, count: Int(scenario.leases.numShards)),
                                 completeThrough: Array(repeating: .zero, count: Int(scenario.leases.numShards)),
                                 loggedVersions: Array(repeating: .zero, count: Int(scenario.leases.numShards)),
                                 loggedCopies: Array(repeating: ReplayedCopy(), count: Int(scenario.leases.numShards)),
                                 completeBeforeReceiving: Array(repeating: nil, count: Int(scenario.leases.numShards)),
                                 followedSinceStart: Array(repeating: false, count: Int(scenario.leases.numShards))))
            addressIndex[address] = index
            addressIndexByID[NodeID("node\(index)")!] = index
            queue.schedule(.start(node: index), at: Int64(index) * Int64.random(in: 0...400, using: &setup))
        }
        for fault in scenario.faults {
            switch fault {
            case let .partition(from, to, at, until):
                queue.schedule(.partition(from: from, to: to, active: true), at: at)
                queue.schedule(.partition(from: from, to: to, active: false), at: until)
            case let .crash(node, at, restartAt):
                queue.schedule(.crash(node: node), at: at)
                if let restartAt { queue.schedule(.restart(node: node), at: restartAt) }
            case let .pause(node, at, until):
                queue.schedule(.pause(node: node, until: until), at: at)
            case let .leave(node, at):
                queue.schedule(.leave(node: node), at: at)
            case let .slow(node, at, until, extraDelayMs):
                queue.schedule(.reportLag(node: node, until: until, lagMs: extraDelayMs), at: at)
            case let .reactorLag(node, at, until, lagMs):
                queue.schedule(.reactorLag(node: node, until: until, lagMs: lagMs), at: at)
            }
        }
        let agreementDue = scenario.healAt + Scenario.agreementRounds * scenario.settings.gossipIntervalMs
        if scenario.endAt >= agreementDue {
            queue.schedule(.checkAgreement, at: agreementDue)
            queue.schedule(.checkAgreement, at: scenario.endAt)
        }
        if scenario.endAt >= scenario.leaseLivenessDueAt {
            queue.schedule(.checkLeaseLiveness, at: scenario.leaseLivenessDueAt)
        }
    }

    public func run() -> SimulationReport {
        while let entry = queue.pop(), entry.time <= scenario.endAt {
            now = entry.time
            report.eventsProcessed += 1
            handle(entry)
        }
        report.traceHash = trace.value
        report.nodeSeconds = Double(scenario.nodeCount) * Double(scenario.endAt) / 1000
        return report
    }

    // MARK: - Clocks

    func localTime(_ index: Int, _ real: Int64) -> Int64 {
        nodes[index].clockOffset + real + real * nodes[index].driftPPM / 1_000_000
    }

    func realTime(_ index: Int, local: Int64) -> Int64 {
        let rate = 1_000_000 + nodes[index].driftPPM
        let scaled = (local - nodes[index].clockOffset) * 1_000_000
        return (scaled + rate - 1) / rate
    }

    // MARK: - Events

    func handle(_ entry: EventQueue<Event>.Entry) {
        switch entry.payload {
        case let .start(index):
            startNode(index)
        case let .deliver(index, frame, fromAddress, corrupted):
            guard nodes[index].isRunning else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            trace.mix(1, UInt64(index), UInt64(now))
            if LeaseCodec.isLeaseFrame(frame) {
                deliverLease(to: index, frame: frame, corrupted: corrupted)
            } else if corrupted {
                deliverCorrupted(to: index, frame: frame, fromAddress: fromAddress)
            } else {
                step(index, .received(frame: frame, fromAddress: fromAddress, now: localTime(index, now)))
            }
        case let .timer(index, id, generation):
            guard nodes[index].isRunning, nodes[index].timerGenerations[id] == generation else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            nodes[index].timerGenerations[id] = nil
            trace.mix(2, UInt64(index), UInt64(now))
            // As the server's MembershipEngine: the reactors' lag is read once
            // per protocol period, just before the period runs.
            if id == .protocolPeriod && nodes[index].reactorLagUntil > 0 {
                let lagMs = nodes[index].reactorLagUntil > now ? nodes[index].reactorLagMs : 0
                step(index, .localHealth(lagMs: lagMs, now: localTime(index, now)))
            }
            step(index, .timerFired(id, now: localTime(index, now)))
        case let .linkBroken(index, address):
            guard nodes[index].isRunning else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            step(index, .linkBroken(address: address, now: localTime(index, now)))
        case let .crash(index):
            crash(index)
        case let .restart(index):
            guard !nodes[index].isRunning, !nodes[index].stoppedForGood, nodes[index].lives > 0 else { return }
            startNode(index)
        case let .pause(index, until):
            guard nodes[index].isRunning, until > now else { return }
            nodes[index].pausedUntil = max(nodes[index].pausedUntil, until)
            nodes[index].pauses.append((now, until))
            trace.mix(3, UInt64(index), UInt64(until))
        case let .leave(index):
            guard nodes[index].isRunning, nodes[index].pausedUntil <= now else { return }
            step(index, .leave(now: localTime(index, now)))
            stopLeases(index)
            nodes[index].node = nil
            nodes[index].isRunning = false
            nodes[index].stoppedForGood = true
            nodes[index].crashedAt = now
        case let .partition(from, to, active):
            for source in from {
                for destination in to { blocked[source * 4096 + destination, default: 0] += active ? 1 : -1 }
            }
            trace.mix(4, UInt64(from.count), UInt64(to.count))
        case let .reportLag(index, until, lagMs):
            guard now < until else {
                // The overload is over: say so, which releases the hold on the node's health.
                guard nodes[index].isRunning else { return }
                if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
                step(index, .localHealth(lagMs: 0, now: localTime(index, now)))
                return
            }
            nodes[index].slowUntil = until
            nodes[index].slowDelayMs = lagMs
            queue.schedule(.reportLag(node: index, until: until, lagMs: lagMs), at: now + scenario.settings.gossipIntervalMs)
            guard nodes[index].isRunning, nodes[index].pausedUntil <= now else { return }
            step(index, .localHealth(lagMs: lagMs, now: localTime(index, now)))
        case let .reactorLag(index, until, lagMs):
            nodes[index].reactorLagUntil = max(nodes[index].reactorLagUntil, until)
            nodes[index].reactorLagMs = lagMs
            trace.mix(11, UInt64(index), UInt64(until))
        case let .checkSuspected(index, crashedAt):
            checkSuspected(index, crashedAt: crashedAt)
        case .checkAgreement:
            checkAgreement()
        case let .checkCameBack(observer, member, since):
            checkCameBack(observer: observer, member: member, since: since)
        case let .leaseTimer(index, id, generation):
            guard nodes[index].lease != nil, nodes[index].leaseTimerGenerations[id] == generation else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            nodes[index].leaseTimerGenerations[id] = nil
            trace.mix(12, UInt64(index), UInt64(now))
            leaseStep(index, .timerFired(id, now: leaseClock(index)))
            if id == .tick { writeAsHolder(index) }
        case .checkLeaseLiveness:
            checkLeaseLiveness()
        case let .replicate(index, from, shard, version, holderComplete):
            guard nodes[index].isRunning else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            applyReplicated(shard, version: version, holderComplete: holderComplete, at: index, from: from)
        case let .replicaAck(index, from, shard, version, life):
            guard nodes[index].isRunning, nodes[index].lifeIncarnation == life else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            acknowledged(shard, version: version, by: from, at: index)
            if scenario.options.configChanges { releaseFrozenIfAcknowledged(shard, by: from, at: index) }
        case let .modelStream(index, from, shard, version, complete, move):
            guard nodes[index].isRunning else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            receiveModelStream(shard, version: version, complete: complete, at: index, from: from, move: move)
        case let .streamAck(index, from, shard, move, life):
            guard nodes[index].isRunning, nodes[index].lifeIncarnation == life else { return }
            if nodes[index].pausedUntil > now { queue.postpone(entry, to: nodes[index].pausedUntil); return }
            streamAcknowledged(shard, by: from, at: index, move: move)
        }
    }

    func startNode(_ index: Int) {
        heldDownSince[index] = nil
        let timing = scenario.settings
        let seeds = (0..<min(3, scenario.nodeCount)).filter { $0 != index }.map { nodes[$0].address }
        let settings = ClusterSettings(
            nodeID: nodes[index].nodeID, gossipAddress: nodes[index].address,
            clientAddress: "10.1.0.\(index + 1):6380", seeds: seeds,
            gossipIntervalMs: timing.gossipIntervalMs, suspectTimeoutMs: timing.suspectTimeoutMs,
            deadTimeoutMs: timing.deadTimeoutMs, lifeguard: scenario.lifeguard,
            pushPullIntervalMs: timing.pushPullIntervalMs, seedRetryIntervalMs: timing.seedRetryIntervalMs)
        // The wall clock a real server would read at start: it only grows across restarts.
        let incarnation = UInt64(Self.wallClockEpochMs + now)
        nodes[index].lives += 1
        nodes[index].lifeIncarnation = incarnation
        nodes[index].crashedAt = nil
        nodes[index].timerGenerations = [:]
        let randomSeed = scenario.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) << 32 &+ UInt64(nodes[index].lives)
        nodes[index].node = ClusterNode(settings: settings, incarnation: incarnation, randomSeed: randomSeed,
                                        authenticator: authenticator)
        nodes[index].isRunning = true
        trace.mix(5, UInt64(index), incarnation)
        step(index, .start(now: localTime(index, now)))
        startLeases(index, life: incarnation)
    }

    func crash(_ index: Int) {
        guard nodes[index].isRunning else { return }
        let knownAlive = nodes.indices.contains { observer in
            observer != index && nodes[observer].node?.members.contains {
                $0.nodeID == nodes[index].nodeID && $0.status == .alive
            } == true
        }
        stopLeases(index)
        nodes[index].node = nil
        nodes[index].isRunning = false
        nodes[index].pausedUntil = 0
        nodes[index].crashedAt = now
        trace.mix(6, UInt64(index), UInt64(now))
        firstSuspected[index] = nil
        firstDead[index] = nil
        guard knownAlive else { return }
        let timing = scenario.settings
        queue.schedule(.checkSuspected(node: index, crashedAt: now),
                       at: now + timing.suspectTimeoutMs + 2 * timing.gossipIntervalMs)
        queue.schedule(.checkSuspected(node: index, crashedAt: now), at: scenario.endAt)
    }

    // MARK: - Stepping a node and carrying out its actions

    func step(_ index: Int, _ event: ClusterEvent) {
        guard let actions = nodes[index].node?.step(event) else { return }
        report.localHealthPeak = max(report.localHealthPeak, nodes[index].node?.localHealth ?? 0)
        perform(actions, of: index)
    }

    func perform(_ actions: [ClusterAction], of index: Int) {
        var membersChanged = false
        defer {
            if membersChanged, let alive = nodes[index].node?.aliveMembers {
                leaseStep(index, .membersChanged(alive: alive, now: leaseClock(index)))
            }
        }
        for action in actions {
            switch action {
            case let .send(frame, address, lane):
                trace.mix(7, UInt64(index), trace.hashBytes(frame))
                transmit(frame, from: index, to: address, lane: lane)
            case let .setTimer(id, local):
                let generation = nextTimerGeneration
                nextTimerGeneration += 1
                nodes[index].timerGenerations[id] = generation
                let due = max(now, realTime(index, local: local))
                trace.mix(8, UInt64(index), UInt64(due))
                queue.schedule(.timer(node: index, id: id, generation: generation), at: due)
            case let .memberChanged(change):
                trace.mix(9, UInt64(index), change.incarnation ^ UInt64(change.to.rawValue) << 60)
                observe(change, by: index)
                noteHeldDown(change, by: index)
                membersChanged = true
            case let .log(_, line):
                trace.mix(10, UInt64(index), UInt64(line.utf8.count))
            }
        }
    }

    func transmit(_ frame: [UInt8], from source: Int, to address: String, lane: Lane) {
        report.framesSent += 1
        guard let destination = addressIndex[address] else { return }
        if (blocked[source * 4096 + destination] ?? 0) > 0 { return }
        if !nodes[destination].isRunning {
            // A stopped process refuses the connection at once.
            queue.schedule(.linkBroken(node: source, address: address), at: now + 2 * scenario.delayMinMs)
            return
        }
        if now < scenario.healAt && Double.random(in: 0..<1, using: &network) < scenario.lossRate { return }
        let fromAddress = nodes[source].address
        let copies = Double.random(in: 0..<1, using: &network) < scenario.duplicateRate ? 2 : 1
        let backlog = nodes[destination].slowUntil > now ? nodes[destination].slowDelayMs : 0
        for _ in 0..<copies {
            let delay = backlog + Int64.random(in: scenario.delayMinMs...scenario.delayMaxMs, using: &network)
            queue.schedule(.deliver(to: destination, frame: frame, fromAddress: fromAddress, corrupted: false),
                           at: now + delay)
        }
        if Double.random(in: 0..<1, using: &network) < scenario.corruptRate {
            var damaged = frame
            let position = Int.random(in: 0..<damaged.count, using: &network)
            damaged[position] ^= UInt8.random(in: 1...255, using: &network)
            queue.schedule(.deliver(to: destination, frame: damaged, fromAddress: fromAddress, corrupted: true),
                           at: now + scenario.delayMaxMs)
        }
    }

    /// Invariant: a frame that fails authentication changes no state and
    /// produces nothing but (rate-limited) log lines.
    func deliverCorrupted(to index: Int, frame: [UInt8], fromAddress: String) {
        guard let before = nodes[index].node else { return }
        let dropsBefore = before.counters.droppedByReason.values.reduce(0, +)
        let event = ClusterEvent.received(frame: frame, fromAddress: fromAddress, now: localTime(index, now))
        guard let actions = nodes[index].node?.step(event),
              let after = nodes[index].node else { return }
        let dropsAfter = after.counters.droppedByReason.values.reduce(0, +)
        let onlyLogs = actions.allSatisfy { if case .log = $0 { true } else { false } }
        if dropsAfter == dropsBefore + 1 && after.state == before.state && onlyLogs {
            report.corruptFramesRefused += 1
        } else {
            violation("a corrupted frame was not refused cleanly by \(nodes[index].nodeID) (drops \(dropsBefore)→\(dropsAfter), state unchanged: \(after.state == before.state))")
        }
        perform(actions, of: index)
    }

    // MARK: - Invariants

    func violation(_ text: String) {
        if report.violations.count < 20 { report.violations.append("t=\(now)ms: \(text)") }
    }

    func observe(_ change: MemberChange, by observer: Int) {
        guard let subject = nodes.firstIndex(where: { $0.nodeID == change.node }), subject != observer else { return }
        if let crashedAt = nodes[subject].crashedAt, !nodes[subject].isRunning, !nodes[subject].stoppedForGood {
            if change.to == .suspect || change.to == .dead, firstSuspected[subject] == nil {
                firstSuspected[subject] = now
                report.suspectDelaysMs.append(now - crashedAt)
            }
            if change.to == .dead, firstDead[subject] == nil {
                firstDead[subject] = now
                report.deadDelaysMs.append(now - crashedAt)
            }
        }
        guard change.to == .dead || change.to == .suspect, nodes[subject].isRunning,
              change.incarnation >= nodes[subject].lifeIncarnation else { return }
        // An observer that was itself paused in the window judges from what
        // it knew when its pause began, plus messages sent to it meanwhile
        // (a dead verdict another node reached while the subject was
        // paused, say): its evidence is as old as its pause, so the window
        // reaches back from there. The verdict is corrected when the
        // subject's refutation arrives (the reconnect bound checks that).
        let observerPausedSince = nodes[observer].pauses
            .filter { $0.until > now - scenario.settings.deadTimeoutMs && $0.from <= now }.map(\.from).min()
        let windowStart = min(now, observerPausedSince ?? now) - scenario.settings.deadTimeoutMs
        let wasPaused = nodes[subject].pauses.contains { $0.until > windowStart && $0.from <= now }
        let wasSlow = scenario.faults.contains { fault in
            guard case let .slow(node, at, until, _) = fault else { return false }
            return node == subject && until > windowStart && at <= now
        }
        let wasCut = partitionTouched(subject, since: windowStart)
        guard !wasPaused, !wasSlow, !wasCut else { return }
        guard change.to == .dead else {
            report.falseSuspicions += 1
            return
        }
        report.falseDeaths += 1
        if scenario.kind == .mild {
            violation("\(nodes[observer].nodeID) declared reachable \(change.node) dead: \(change.reason)")
        }
    }

    func partitionTouched(_ node: Int, since start: Int64) -> Bool {
        scenario.faults.contains { fault in
            guard case let .partition(from, to, at, until) = fault else { return false }
            return (from.contains(node) || to.contains(node)) && until > start && at <= now
        }
    }

    /// Invariant: a crashed node is suspected within suspect_timeout + 2 probe
    /// intervals. Checked when nothing else could excuse a delay: no loss, no
    /// partition, no pause, no overload, no reactor lag and no other crash
    /// around the crash (each makes a Lifeguard node stretch its own
    /// timeouts, by design).
    func checkSuspected(_ index: Int, crashedAt: Int64) {
        guard nodes[index].crashedAt == crashedAt, !nodes[index].isRunning else { return }
        let timing = scenario.settings
        let bound = timing.suspectTimeoutMs + 2 * timing.gossipIntervalMs
        if now >= scenario.endAt {
            return
        }
        let windowStart = crashedAt - timing.deadTimeoutMs
        let quiet = (scenario.lossRate == 0 || crashedAt >= scenario.healAt)
            && !nodes.contains { node in node.pauses.contains { $0.until > windowStart && $0.from <= now } }
            && !scenario.faults.contains { fault in
                switch fault {
                case let .slow(_, at, until, _), let .reactorLag(_, at, until, _): until > windowStart && at <= now
                // Another crash: probes sent through it as a helper miss their
                // nack, which raises the prober's local health.
                case let .crash(node, at, _): node != index && at > windowStart && at <= now
                default: false
                }
            }
            && !nodes.indices.contains { partitionTouched($0, since: windowStart) }
        guard quiet else { return }
        if let suspected = firstSuspected[index], suspected - crashedAt <= bound { return }
        violation("\(nodes[index].nodeID) crashed at \(crashedAt) ms and no live node suspected it within \(bound) ms")
    }

    /// Invariant: a running member that a running node holds suspect or
    /// dead is alive again in that node's view within
    /// `healedLivenessBoundMs` of the heal, or of the verdict when that came
    /// later (a probe round begun before the heal may close after it on
    /// evidence from before it). Before the reconnect pings, a member held
    /// dead came back only when a push/pull happened to pick it.
    func checkCameBack(observer: Int, member: Int, since: Int64) {
        guard nodes[observer].isRunning, nodes[member].isRunning, heldDownSince[observer]?[member] == since,
              let view = nodes[observer].node?.members.first(where: { $0.nodeID == nodes[member].nodeID }),
              view.status == .suspect || view.status == .dead else { return }
        violation("\(nodes[observer].nodeID) still holds running \(nodes[member].nodeID) \(view.status) \(now - max(since, scenario.healAt)) ms after the heal or its verdict, past the \(scenario.healedLivenessBoundMs) ms bound")
    }

    /// Tracks when each node began to hold each other node down, for `checkCameBack`.
    func noteHeldDown(_ change: MemberChange, by observer: Int) {
        guard let member = addressIndexByID[change.node], member != observer else { return }
        guard change.to == .suspect || change.to == .dead else {
            heldDownSince[observer]?[member] = nil
            return
        }
        // With Lifeguard the reconnect pings tell suspects too, so a member
        // is held down continuously from its suspicion on; plain SWIM leaves
        // a suspect to its probe turn, and only its dead verdict starts the clock.
        if !scenario.lifeguard && change.to == .suspect { return }
        if heldDownSince[observer]?[member] != nil && change.from != .alive && change.from != nil { return }
        heldDownSince[observer, default: [:]][member] = now
        let due = max(now, scenario.healAt) + scenario.healedLivenessBoundMs
        if due <= scenario.endAt { queue.schedule(.checkCameBack(observer: observer, member: member, since: now), at: due) }
    }

    /// Invariant: `agreementRounds` after the heal, all live nodes agree.
    func checkAgreement() {
        let liveIndices = nodes.indices.filter { nodes[$0].isRunning }
        let running = Set(liveIndices.map { nodes[$0].nodeID })
        let views = liveIndices.compactMap { index -> LiveNodeView? in
            guard let node = nodes[index].node else { return nil }
            return LiveNodeView(nodeID: nodes[index].nodeID, members: node.members, aliveMembers: node.aliveMembers)
        }
        for check in agreementChecks {
            if let problem = check.disagreement(among: views, running: running) {
                violation("\(check.name) disagreement \((now - scenario.healAt) / scenario.settings.gossipIntervalMs) rounds after the heal: \(problem)")
            }
        }
    }
}

/// FNV-1a over everything the run does, in order.
struct TraceHash {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func mix(_ kind: UInt64, _ first: UInt64, _ second: UInt64) {
        for word in [kind, first, second] {
            var remaining = word
            for _ in 0..<8 {
                value = (value ^ (remaining & 0xFF)) &* 0x0000_0100_0000_01B3
                remaining >>= 8
            }
        }
    }

    func hashBytes(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }
}
