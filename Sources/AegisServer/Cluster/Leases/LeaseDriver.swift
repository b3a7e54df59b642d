import AegisCluster
import AegisStore
import CSupport
import Logging

/// Runs the pure `LeaseMachine` for the cluster loop: feeds it the loop's
/// time, lease frames, members and local versions; makes its `persistTerm`
/// durable (TermStore) before any other action of the same step is carried
/// out; publishes the leases to the reactors (LeaseBoard); hands its frames
/// back to the loop, which sends them on the peers' control lanes.
///
/// The replica set the machine sees is the placement over every member this
/// node knows that has not left (dead and suspect ones keep their slots, as
/// in the simulator), not the map of the alive members that routing follows:
/// majorities must be counted over a set that does not shrink when a replica
/// dies. The alive members come separately (`membersChanged`).
///
/// Leases are enforced (writes need them) once this node is part of a
/// cluster (it has seeds, or another member has been seen), except while a
/// member not `left` is known to run a release before leases: such a node
/// never grants, so the shards this node leads would refuse every write
/// through a rolling upgrade. Routing then follows the map's primary, as
/// the older release does, and the cluster has that release's fencing
/// (none) until the last such member is gone or upgraded
/// (docs/upgrades.md). A member not yet classified counts as speaking
/// leases, so a new cluster is fenced from its first write. A node alone
/// with no seeds serves as before, paying nothing.
///
/// Confined to the cluster loop's thread.
final class LeaseDriver {
    /// Reactors stop accepting writes this long before the lease ends on the
    /// loop's clock: a reactor compares against its coarse clock read once per
    /// loop iteration, which may be a few ms behind. 1/20 of the lease, at
    /// least 10 ms and at most 200 ms.
    static func reactorGuardMs(leaseMs: Int64) -> Int64 { min(200, max(10, leaseMs / 20)) }

    struct Counters: Equatable {
        var electionsStarted = 0
        var electionsWon = 0
        var electionsLost = 0
        var termChanges = 0
        var termWrites = 0
        var framesDropped = 0
    }

    /// One shard's lease as /cluster shows it.
    struct ShardView: Equatable {
        var shard: Int
        var term: UInt32
        /// ms left on this node's clock; nil when this node does not hold it.
        var heldForMs: Int64?
        /// The newest version of the shard this node holds, as the machine knows it.
        var localVersion: EntryVersion
        /// Restarted with its log and not refilled by a stream since (see
        /// `LeaseAsk.mayHaveHole`).
        var copyMayHaveHole = false
        /// Started with an empty data_dir and no complete copy since (see
        /// `LeaseMachine.isBlank`).
        var blank = false
    }

    private(set) var machine: LeaseMachine
    private let store: TermStore
    private let board: LeaseBoard
    private let logger: Logger
    private let selfID: NodeID
    private let parameters: ClusterParameters
    private let hasSeeds: Bool
    private var timers: [LeaseTimerID: Int64] = [:]
    private var heldUntil: [Int64?]
    private var terms: [UInt32]
    /// Per shard, the term of the lease this node holds (reactors version
    /// writes with it): below `terms` while a renewal at a new term is not won yet.
    private var heldTerms: [UInt32]
    private var campaigning: [UInt32?]
    /// Seeds set or another member seen; writes need leases unless
    /// `predatingMembers` names someone.
    private var inCluster = false
    /// Members (not left) known to run a release before leases, sorted.
    private(set) var predatingMembers: [String] = []
    private var enforced: Bool { inCluster && predatingMembers.isEmpty }
    private var known: [NodeID] = []
    private var placementMembers: [NodeID] = []
    /// The version of the last lease set published to the reactors.
    private(set) var publishedVersion: UInt64 = 0
    private var needsPublish = true
    /// Set when a term could not be made durable: from then on this node
    /// neither sends lease frames nor holds leases (it refuses writes).
    private(set) var stoppedBy: String?
    private(set) var counters = Counters()
    /// The local newest version per shard the machine was last told.
    private var toldVersion: [EntryVersion]
    /// Per shard, the node the machine believes holds the lease (routing
    /// sends writes there); `holdersMoved` until the loop took the change.
    private(set) var holders: [NodeID?]
    private(set) var holdersMoved = false
    /// The hand-offs this node runs as a holder (LeaseHandOffs.swift).
    private(set) var handOffs = LeaseHandOffs()
    /// The peers whose build takes hand-offs (`leaseConfig`).
    private var configPeers: Set<NodeID> = []
    /// Set while a stopping node hands its shards off before it says `left`.
    private var leaving: Leaving?
    private var blankWriteFailing = false

    private struct Leaving {
        var startedMs: Int64
        var deadlineMs: Int64
        /// Hand-offs released before this leave, so that its summary counts its own.
        var releasedBefore: Int
        /// The placement once this node is gone: its primary of a shard is
        /// the preferred target, as the others will route to it anyway.
        var placementWithout: ShardMap?
        /// Shards not handed off (no target, refused, aborted): they fall to
        /// an election once the others hear `left`.
        var givenUp: Set<Int> = []
    }

    init(machine: LeaseMachine, store: TermStore, board: LeaseBoard, logger: Logger, hasSeeds: Bool) {
        self.machine = machine
        self.store = store
        self.board = board
        self.logger = logger
        self.selfID = machine.settings.nodeID
        self.parameters = machine.settings.parameters
        self.hasSeeds = hasSeeds
        let shards = Int(machine.settings.parameters.numShards)
        heldUntil = Array(repeating: nil, count: shards)
        terms = (0..<shards).map { machine.term(ofShard: $0) }
        heldTerms = Array(repeating: 0, count: shards)
        campaigning = Array(repeating: nil, count: shards)
        toldVersion = Array(repeating: .zero, count: shards)
        holders = Array(repeating: nil, count: shards)
        belowClaimSince = Array(repeating: nil, count: shards)
        inCluster = hasSeeds
        // Before any reactor runs: reactors start, and accept clients, before
        // the loop's thread calls `start`. A node with seeds that published
        // nothing yet would take writes unfenced meanwhile, to every shard, as
        // a node alone: seen in a rolling restart under writes at W = 2, a
        // write applied at the restarted node with "the shard map gives
        // shard 215 1 replica" (and at W = 1 acknowledged, on no majority).
        publishIfNeeded()
    }

    var leaseMs: Int64 { machine.settings.leaseDurationMs }

    // MARK: - Events

    func start(nowMs: Int64) -> [(NodeID, [UInt8])] {
        // Where data_dir exists the file is written at once, so that a node
        // that logs to data_dir alone and joins a cluster later is not taken
        // for one that lost its terms; a missing data_dir is created only
        // once the node is in a cluster.
        if (inCluster || store.directoryExists) && !machine.isEmptyLearner { writeInitialFile() }
        let sends = step(.start(now: nowMs), nowMs: nowMs)
        publishIfNeeded()
        return sends
    }

    func received(_ frame: [UInt8], nowMs: Int64) -> [(NodeID, [UInt8])] {
        step(.received(frame: frame, now: nowMs), nowMs: nowMs)
    }

    /// Paused while a member predates leases: it never grants, so every
    /// campaign that needs it would fail and raise the shard's term (one
    /// notice per shard per round) for the whole upgrade. Requests from
    /// other nodes are answered `not_enforcing`, never granted (this node
    /// writes unfenced meanwhile); the timers due meanwhile fire when
    /// enforcement resumes.
    var nextTimerMs: Int64? { predatingMembers.isEmpty ? timers.values.min() : nil }

    func fireDueTimers(nowMs: Int64) -> [(NodeID, [UInt8])] {
        guard predatingMembers.isEmpty else { return [] }
        var sends: [(NodeID, [UInt8])] = []
        for id in LeaseTimerID.allCases {
            guard let at = timers[id], at <= nowMs else { continue }
            timers[id] = nil
            sends += step(.timerFired(id, now: nowMs), nowMs: nowMs)
        }
        return sends
    }

    /// `alive`: the members membership holds alive; `known`: every member not
    /// `left` (this node included). Both may repeat what was said before.
    func membersChanged(alive: [NodeID], known newKnown: [NodeID], nowMs: Int64) -> [(NodeID, [UInt8])] {
        var sends = step(.membersChanged(alive: alive.sorted(), now: nowMs), nowMs: nowMs)
        let sortedKnown = Array(Set(newKnown + [selfID])).sorted()
        known = sortedKnown
        if !inCluster && known.count > 1 {
            inCluster = true
            needsPublish = true
            holdersMoved = true
            if !machine.isEmptyLearner { writeInitialFile() }
            if enforced {
                logger.notice("leases: another member seen; from now on this node accepts a shard's writes only while it holds the shard's lease")
            } else {
                logger.notice("leases: another member seen, but not enforced while members run a release before leases", metadata: [
                    "members": "\(predatingMembers.joined(separator: ","))",
                ])
            }
        }
        // A node that only knows itself while it has seeds is not told a
        // placement: alone, it would be its own majority for every shard.
        if known.count > 1 && known != placementMembers {
            placementMembers = known
            if let map = try? ShardMap(members: known, numShards: Int(parameters.numShards),
                                       virtualNodes: Int(parameters.virtualNodes), replicationFactor: Int(parameters.replicationFactor)) {
                sends += step(.placementChanged(map, now: nowMs), nowMs: nowMs)
            }
        }
        return sends
    }

    /// The members (not left) known to predate leases, as the loop classified
    /// them. Enforcement stops while there is one and resumes when there is
    /// none; either switch is logged once and republished to the reactors
    /// and to routing (which also sends these members no replication).
    func predatingMembersChanged(_ names: [String]) {
        let sorted = Array(Set(names)).sorted()
        guard sorted != predatingMembers else { return }
        let wasEnforced = enforced
        predatingMembers = sorted
        machine.pauseGrants(!sorted.isEmpty)
        // Routing leaves these members out of replication: rebuilt either way.
        holdersMoved = true
        guard enforced != wasEnforced else { return }
        needsPublish = true
        publishIfNeeded()
        if enforced {
            logger.notice("leases: no member runs a release before leases any more; this node again accepts a shard's writes only while it holds the shard's lease, and routes them to the lease holder")
        } else if inCluster {
            logger.notice("leases: not enforced while members run a release before leases (they grant none): writes go to the shard map's primary, unfenced, as that release does", metadata: [
                "members": "\(sorted.joined(separator: ","))",
            ])
        }
    }

    /// The lease holders routing sends writes to: none while leases are not
    /// enforced, so that every node routes by the map's primary as a
    /// release before leases does.
    var routingHolders: [NodeID?] { enforced ? holders : [] }

    /// The newest (term, seq) this node holds for a shard (a write it made as
    /// primary, or one it acknowledged as follower).
    func localVersion(shard: Int, _ version: EntryVersion, nowMs: Int64) {
        guard stoppedBy == nil, toldVersion.indices.contains(shard), version > toldVersion[shard] else { return }
        toldVersion[shard] = version
        // Called for every shard written in a loop iteration, so it skips
        // the bookkeeping of `step`: this event never produces an action.
        let actions = machine.step(.localVersion(shard: shard, version: version, now: nowMs))
        assert(actions.isEmpty, "a local version produced lease actions")
    }

    /// A shard stream from the holder finished here: this node's copy of
    /// the shard is the holder's, so whatever a restart lost of it is back.
    func copyComplete(shard: Int, nowMs: Int64) {
        guard stoppedBy == nil, toldVersion.indices.contains(shard) else { return }
        let actions = machine.step(.copyComplete(shard: shard, now: nowMs))
        assert(actions.isEmpty, "a complete copy produced lease actions")
    }

    /// The peers whose build announces they decode lease asks with the copy
    /// state; the others (0.2.0) are sent the request form they decode.
    func peersDecodingCopyState(_ names: [String]) {
        machine.peersDecodingCopyState(Set(names.compactMap { NodeID($0) }))
    }

    /// The peers whose build announces they decode lease asks and answers
    /// with the replica configuration; the others are sent older forms.
    func peersDecodingConfig(_ names: [String]) {
        configPeers = Set(names.compactMap { NodeID($0) })
        machine.peersDecodingConfig(configPeers)
    }

    // MARK: - Carrying out actions

    private func step(_ event: LeaseEvent, nowMs: Int64) -> [(NodeID, [UInt8])] {
        guard stoppedBy == nil else { return [] }
        let before = machine.counters
        let actions = machine.step(event)
        counters.framesDropped = machine.counters.droppedByReason.values.reduce(0) { $0 + Int($1) }
        counters.electionsStarted += Int(machine.counters.electionsStarted - before.electionsStarted)
        // Every term of the step is made durable before any action of it is
        // carried out: writing a term early is always safe (terms only rise),
        // and one write covers a tick that campaigns for many shards.
        let records = actions.compactMap { action -> (shard: Int, record: PersistedTerm)? in
            if case let .persistTerm(shard, record) = action { return (shard, record) }
            return nil
        }
        // An empty learner writes no term file: the file's absence beside the
        // node's log is what makes it a learner again after a restart, until
        // a refill gives it data to vote with. It never votes or campaigns, so
        // no term it acts on needs to outlive the process.
        if !records.isEmpty && !machine.isEmptyLearner {
            do throws(StartupError) {
                try store.persist(records)
                counters.termWrites += 1
            } catch {
                stop(because: error.description)
                return []
            }
        }
        var sends: [(NodeID, [UInt8])] = []
        var won: [Int] = []
        var handedOff: [NodeID: [(shard: Int, pause: LeaseHandOffs.Pause?)]] = [:]
        var termChanges: [TermChange: [Int]] = [:]
        for action in actions {
            switch action {
            case let .send(frame, to):
                sends.append((to, frame))
            case let .setTimer(id, at):
                timers[id] = at
            case let .persistTerm(shard, record):
                if record.votedFor == selfID && record.term > terms[shard] {
                    if campaigning[shard] != nil { counters.electionsLost += 1 }
                    campaigning[shard] = record.term
                }
            case let .leaseAcquired(shard, term, until):
                heldUntil[shard] = until
                heldTerms[shard] = term
                terms[shard] = max(terms[shard], term)
                if campaigning[shard] != nil { counters.electionsWon += 1 }
                campaigning[shard] = nil
                needsPublish = true
                won.append(shard)
            case let .leaseExtended(shard, term, until):
                heldUntil[shard] = until
                heldTerms[shard] = term
                needsPublish = true
            case let .leaseLost(shard, reason):
                heldUntil[shard] = nil
                needsPublish = true
                if let ended = handOffs.end(shard, reason == .released ? .released : .lost, nowNs: aegis_monotonic_ns()),
                   reason == .released {
                    handedOff[ended.target, default: []].append((shard, ended.pause))
                    continue
                }
                logger.notice("leases: lost shard \(shard) (\(reason)); its writes are refused here until a lease is won again")
            case let .termChanged(shard, old, new, reason):
                counters.termChanges += 1
                if let pending = campaigning[shard], new > pending {
                    counters.electionsLost += 1
                    campaigning[shard] = nil
                }
                terms[shard] = max(terms[shard], new)
                needsPublish = true
                termChanges[TermChange(old: old, new: new, reason: reason), default: []].append(shard)
            case let .configCommitted(shard, config):
                logger.notice("leases: shard \(shard) replica set committed: \(config)")
            case let .log(level, text):
                switch level {
                case .info: logger.info("\(text)")
                case .notice: logger.notice("\(text)")
                case .warning: logger.warning("\(text)")
                }
            }
        }
        // One line per kind of change: a hand-off or an election moves a
        // hundred shards in one step, and their lines came one per shard.
        for (change, shards) in termChanges.sorted(by: { $0.value[0] < $1.value[0] }) {
            logger.notice("lease term changed", metadata: [
                shards.count == 1 ? "shard" : "shards": "\(shards.map(String.init).joined(separator: ","))",
                "old_term": "\(change.old)", "new_term": "\(change.new)", "reason": "\(change.reason)",
            ])
        }
        for (target, shards) in handedOff.sorted(by: { $0.key < $1.key }) { logHandedOff(shards, to: target) }
        if !won.isEmpty {
            logger.info("leases: won \(won.count) shard(s)", metadata: [
                "shards": "\(won.count > 16 ? "\(won.prefix(16).map(String.init).joined(separator: ","))..." : won.map(String.init).joined(separator: ","))",
            ])
        }
        publishIfNeeded()
        let believed = holders.indices.map { shard in readMachine { $0.routingHolder(shard, now: nowMs) } }
        if believed != holders {
            holders = believed
            holdersMoved = true
        }
        return sends
    }

    private struct TermChange: Hashable {
        var old: UInt32
        var new: UInt32
        var reason: String
    }

    /// One line per target for the shards a step handed off: their pauses
    /// (median and longest), and the longest part of one until this loop
    /// read the reactor's freeze marker.
    private func logHandedOff(_ shards: [(shard: Int, pause: LeaseHandOffs.Pause?)], to target: NodeID) {
        let pausesUs = shards.compactMap { $0.pause.map { $0.totalNs / 1_000 } }.sorted()
        let named = shards.count == 1 ? "shard \(shards[0].shard)" : "\(shards.count) shards"
        logger.info("leases: \(named) handed to \(target)", metadata: [
            "pause_us": "\(pausesUs.isEmpty ? -1 : pausesUs[pausesUs.count / 2])",
            "pause_us_max": "\(pausesUs.last ?? -1)",
            "frozen_after_us_max": "\(shards.compactMap { $0.pause.map { $0.untilFrozeNs / 1_000 } }.max() ?? -1)",
        ])
    }

    /// True once per change of `holders`.
    func takeHoldersMoved() -> Bool {
        defer { holdersMoved = false }
        return holdersMoved
    }

    private func writeInitialFile() {
        do throws(StartupError) {
            try store.writeInitial()
            counters.termWrites += 1
        } catch {
            stop(because: error.description)
        }
    }

    private func stop(because why: String) {
        stoppedBy = why
        timers = [:]
        for shard in heldUntil.indices { heldUntil[shard] = nil }
        needsPublish = true
        publishIfNeeded()
        logger.error("leases: a term could not be made durable, so this node stops taking part in leases and refuses every write until restarted", metadata: [
            "error": "\(why)",
        ])
    }

    private func publishIfNeeded() {
        guard needsPublish else { return }
        needsPublish = false
        publishedVersion += 1
        let guardMs = Self.reactorGuardMs(leaseMs: leaseMs)
        let frozen = heldUntil.indices.map { handOffs.freezes($0) }
        board.publish(ShardLeases(version: publishedVersion, enforced: enforced,
                                  untilMs: heldUntil.indices.map { frozen[$0] ? 0 : heldUntil[$0].map { $0 - guardMs } ?? 0 },
                                  terms: terms.indices.map { heldUntil[$0] == nil ? terms[$0] : heldTerms[$0] },
                                  handingOff: frozen))
        handOffs.published(version: publishedVersion, nowNs: aegis_monotonic_ns())
    }

    // MARK: - Leaving: hand every shard off first

    /// A hand-off whose target has not acknowledged every write by then is
    /// given up (docs/shard-movement.md §4, `handOffTimeout`): on loopback
    /// it takes milliseconds, so this is a dead or stalled target.
    static let handOffTimeoutMs: Int64 = 500

    /// How long a shard being handed off waits for its target's ask before
    /// it freezes anyway. The ask comes after the target's term write, a
    /// few milliseconds on a loaded disk.
    static let prepareWaitMs: Int64 = 250

    /// Starts handing the shards this node holds to other voters before it
    /// says `left`, for at most `withinMs`. False when leases are not
    /// enforced or it neither holds one nor awaits a round that may win one
    /// (`LeaseMachine.awaitsLeaseRound`): nothing to wait for. Either way
    /// the node takes no new lease from here on (`stopTakingLeases`).
    func beginLeaving(nowMs: Int64, withinMs: Int64) -> Bool {
        machine.stopTakingLeases()
        let awaiting = readMachine { $0.awaitsLeaseRound(now: nowMs) }
        guard enforced, stoppedBy == nil, leaving == nil, heldUntil.contains(where: { $0 != nil }) || awaiting,
              withinMs > 0 else { return false }
        let others = known.filter { $0 != selfID }
        let placement = others.isEmpty ? nil : try? ShardMap(members: others, numShards: Int(parameters.numShards),
                                                             virtualNodes: Int(parameters.virtualNodes),
                                                             replicationFactor: Int(parameters.replicationFactor))
        leaving = Leaving(startedMs: nowMs, deadlineMs: nowMs + withinMs, releasedBefore: handOffs.ended[.released, default: 0],
                          placementWithout: placement)
        logger.notice("leaving: handing the shards this node holds to their other replicas", metadata: [
            "shards": "\(heldUntil.count { $0 != nil })", "within_ms": "\(withinMs)",
        ])
        return true
    }

    /// The reactor owning `shard` stopped writing it (`.shardFrozen`).
    func shardFrozen(_ shard: Int, leasesVersion: UInt64) {
        handOffs.reactorFroze(shard, leasesVersion: leasesVersion, nowNs: aegis_monotonic_ns())
    }

    /// One pass of leaving. Each shard's hand-off starts in the machine at
    /// once (one prepare per target): the target persists the next term and
    /// asks, while writes go on. Once this node's own vote is prepared for
    /// the target, the shard freezes (`LeaseHandOffs`); once its reactor
    /// froze it and the target acknowledged every write, it is released,
    /// and the prepared votes grant the target at once. Slow hand-offs are
    /// given up; shards not started yet start when at least half their
    /// lease is left (after a renewal). `finished` once no held shard is
    /// left to hand off, or time is up.
    func stepLeaving(nowMs: Int64, alive: Set<NodeID>, holdsEveryWrite: (NodeID, Int) -> Bool,
                     isFollower: (NodeID, Int) -> Bool) -> (sends: [(NodeID, [UInt8])], finished: Bool) {
        guard var state = leaving else { return ([], true) }
        var sends: [(NodeID, [UInt8])] = []
        let outOfTime = nowMs >= state.deadlineMs
        var caughtUp: [Int] = []
        // The shards preparing freeze together once this node's vote is
        // prepared for each one's target: each target's ask costs this loop
        // a term write, which would hold up the flush of shards frozen
        // before it. A target slower than `prepareWaitMs` to ask is not
        // waited for: the release then reaches the voters before its ask,
        // and they judge the ask as any other (term writes inside the pause,
        // as before the prepare came first).
        let preparing = handOffs.running.filter { $0.value.freezingSinceMs == nil }
        if !preparing.isEmpty && !outOfTime
            && (preparing.allSatisfy { shard, handOff in readMachine { $0.votePrepared(shard, for: handOff.target) } }
                || preparing.contains { nowMs - $0.value.startedMs >= Self.prepareWaitMs }) {
            for shard in preparing.keys { handOffs.freeze(shard, nowMs: nowMs) }
            needsPublish = true
        }
        for (shard, handOff) in handOffs.running.sorted(by: { $0.key < $1.key }) {
            guard let freezingSinceMs = handOff.freezingSinceMs else {
                if outOfTime {
                    state.givenUp.insert(shard)
                    sends += abandonHandOff(shard, nowMs: nowMs, why: "this node is out of time before \(handOff.target) asked for the next term")
                }
                continue
            }
            if handOff.reactorFroze && holdsEveryWrite(handOff.target, shard) {
                caughtUp.append(shard)
            } else if outOfTime || nowMs - freezingSinceMs >= Self.handOffTimeoutMs {
                state.givenUp.insert(shard)
                sends += abandonHandOff(shard, nowMs: nowMs, why: handOff.reactorFroze ? "\(handOff.target) did not acknowledge every write in time"
                                                                                   : "the shard's reactor did not freeze it in time")
            }
        }
        // In one step: each release published a lease set and looked at
        // every shard's holder, some 30 µs that the last of a hundred shards
        // waited for. Their `leaseLost(.released)` ends the hand-offs.
        if !caughtUp.isEmpty { sends += step(.releaseShards(caughtUp, now: nowMs), nowMs: nowMs) }
        var waiting = false
        var starting: [NodeID: [Int]] = [:]
        // One line for the shards this pass finds no target for (a whole
        // cluster stopping finds none for any).
        var withoutTarget: [Int] = []
        for shard in heldUntil.indices where heldUntil[shard] != nil && handOffs.running[shard] == nil && !state.givenUp.contains(shard) {
            guard !outOfTime else { break }
            // The machine hands off with half a lease left, and renews no
            // more; the prepare, the freeze and the flush get an eighth of a
            // lease more (a tick renews well above that).
            guard let until = heldUntil[shard], until - nowMs >= leaseMs / 2 + leaseMs / 8 else {
                waiting = true  // until its next renewal
                continue
            }
            let voters = machine.replicaSet(shard)
            let candidates = voters.filter { $0 != selfID && alive.contains($0) && configPeers.contains($0) && isFollower($0, shard) }
            let preferred = state.placementWithout.map { $0.primary(ofShard: shard) }
            guard let target = candidates.first(where: { $0 == preferred }) ?? candidates.first else {
                state.givenUp.insert(shard)
                withoutTarget.append(shard)
                continue
            }
            starting[target, default: []].append(shard)
        }
        if !withoutTarget.isEmpty {
            logger.notice("leaving: shards not handed off: no other voter of theirs is alive, followed and takes hand-offs; each is elected anew once this node is gone",
                          metadata: ["shards": "\(withoutTarget.count)", "first": "\(withoutTarget.prefix(16).map(String.init).joined(separator: ","))"])
        }
        // One prepare per target: it persists the new terms with one write.
        for (target, shards) in starting.sorted(by: { $0.key < $1.key }) {
            sends += step(.handOffShards(shards, to: target, now: nowMs), nowMs: nowMs)
            for shard in shards {
                if readMachine({ $0.handingOff(shard, now: nowMs) }) == target {
                    handOffs.start(shard, to: target, nowMs: nowMs)
                } else {
                    state.givenUp.insert(shard)  // the machine said why, in the line before
                }
            }
        }
        publishIfNeeded()
        leaving = state
        let finished = outOfTime || (handOffs.running.isEmpty && !waiting && !readMachine { $0.awaitsLeaseRound(now: nowMs) })
        if finished {
            leaving = nil
            let handed = handOffs.ended[.released, default: 0] - state.releasedBefore
            logger.notice("leaving: hand-offs over", metadata: [
                "handed_off": "\(handed)", "not_handed_off": "\(state.givenUp.count)", "still_held": "\(heldUntil.count { $0 != nil })",
                "duration_ms": "\(nowMs - state.startedMs)",
            ])
        }
        return (sends, finished)
    }

    /// Gives a hand-off up: the shard thaws, and the machine renews its
    /// lease again (above the voters' prepared term if it must).
    private func abandonHandOff(_ shard: Int, nowMs: Int64, why: String) -> [(NodeID, [UInt8])] {
        guard handOffs.end(shard, .aborted, nowNs: aegis_monotonic_ns()) != nil else { return [] }
        needsPublish = true
        logger.notice("leases: hand-off of shard \(shard) given up: \(why); this node keeps its lease")
        return step(.abortHandOff(shard: shard, now: nowMs), nowMs: nowMs)
    }

    // MARK: - Reporting

    func shards(nowMs: Int64) -> [ShardView] {
        terms.indices.map { shard in
            let (hole, blank) = readMachine { ($0.copyMayHaveHole(shard), $0.isBlank(shard)) }
            return ShardView(shard: shard, term: terms[shard],
                             heldForMs: heldUntil[shard].flatMap { $0 > nowMs ? $0 - nowMs : nil }, localVersion: toldVersion[shard],
                             copyMayHaveHole: hole, blank: blank)
        }
    }

    /// Whether this node may send a shard's records from its tail, or stream
    /// it: only while it holds the shard's lease, once leases are enforced.
    /// A node that lost the lease may hold writes it applied alone (never
    /// acknowledged) and lack the new holder's: resending or streaming that
    /// copy would overwrite acknowledged writes on the followers.
    func maySendReplication(shard: Int, nowMs: Int64) -> Bool {
        !enforced || (stoppedBy == nil && readMachine { $0.holdsLease(shard, now: nowMs) })
    }

    /// Whether a shard's records or stream slices from `sender` are taken
    /// here: not while this node holds the lease itself or has promised it
    /// to another node (docs/replication.md, "Only the holder replicates").
    func acceptsReplication(shard: Int, from sender: String, nowMs: Int64) -> Bool {
        guard enforced, let holder = readMachine({ $0.believedHolder(shard, now: nowMs) }) else { return true }
        return holder.name == sender
    }

    private(set) var standing = ReplicaStanding()
    /// When this driver was made, at the node's start (monotonic ms, the loop's clock).
    let createdMs = aegis_monotonic_ns() / 1_000_000
    /// Per shard: since when this node's copy has been below its holder's
    /// claim (nil while it is not).
    private var belowClaimSince: [Int64?]
    /// The node was in step at a review since it started.
    private var wasInStep = false

    /// How long a node that was in step may stay below a holder's claim
    /// before the shard counts as behind: a renewal. A holder's ask carries
    /// its newest write; under steady writes the ask (control lane) reaches
    /// a follower before the records just before it (bulk lane, batched),
    /// so for a moment after every renewal each follower is below the claim.
    /// Counted at once, /health said `catching_up` for that moment, a few
    /// times a minute per node under load, and the runbook's daily health
    /// check failed on a node that was serving (RunbookConformanceTests).
    /// A node that has not been in step since it started gets no grace: its
    /// /health must not say ok before it holds what the holders claimed.
    var behindGraceMs: Int64 { max(1, leaseMs / 4) }

    /// Reviews every shard this node is a replica of against `acknowledged`
    /// (this node's chain per shard, FollowerChains) and returns those
    /// behind a holder that is known, with the holder and its claim: the
    /// caller reminds the holder when nothing is on its way.
    func reviewStanding(acknowledged: [EntryVersion], nowMs: Int64) -> [(shard: Int, holder: NodeID, claim: EntryVersion)] {
        var review = ReplicaStanding(applies: enforced && stoppedBy == nil, reviewed: true)
        var behind: [(shard: Int, holder: NodeID, claim: EntryVersion)] = []
        var complete: [Int] = []
        if review.applies {
            for shard in acknowledged.indices {
                let (isReplica, holds, promised, blankComplete) = readMachine {
                    ($0.replicaSet(shard).contains(selfID), $0.holdsLease(shard, now: nowMs), $0.promisedHolderClaim(shard, now: nowMs),
                     $0.blankCopyIsComplete(shard, acknowledged: acknowledged[shard], now: nowMs))
                }
                if blankComplete { complete.append(shard) }
                let belowClaim = isReplica && !holds && promised.map { acknowledged[shard] < $0.claim } == true
                if !belowClaim {
                    belowClaimSince[shard] = nil
                } else if belowClaimSince[shard] == nil {
                    belowClaimSince[shard] = nowMs
                }
                guard isReplica else { continue }
                review.replicated += 1
                if holds {
                    review.held += 1
                } else if let promised {
                    if belowClaim, !wasInStep || nowMs - (belowClaimSince[shard] ?? nowMs) >= behindGraceMs {
                        review.behind += 1
                        behind.append((shard, promised.holder, promised.claim))
                    }
                } else {
                    review.withoutHolder += 1
                }
            }
        }
        if review.inStep && review.applies { wasInStep = true }
        standing = review
        for shard in complete { copyComplete(shard: shard, nowMs: nowMs) }
        keepBlankShardsOnDisk()
        return behind
    }

    /// Copies arrive, and shards won end the blank state, between reviews;
    /// one write per review covers them all. Until it is written a restart
    /// only finds the shard blank still.
    private func keepBlankShardsOnDisk() {
        guard !store.blankShards.isEmpty, stoppedBy == nil else { return }
        let current = readMachine { $0.blankShards }
        guard current != store.blankShards else { return }
        do throws(StartupError) {
            try store.updateBlank(current)
            blankWriteFailing = false
        } catch {
            // Retried at every review; said once per run of failures.
            guard !blankWriteFailing else { return }
            blankWriteFailing = true
            logger.warning("leases: could not record which shards this node is still blank for; a restart would take more of them as blank, which is safe", metadata: [
                "error": "\(error.description)",
            ])
        }
    }

    /// Runs a query of the machine on it in place. `machine.query()` copies
    /// the whole machine first (every array, set and dictionary in it
    /// retained, then released): the read of a class's stored property ends
    /// before a call into another module, in case that call reaches the
    /// property. A follower asks `acceptsReplication` per replicated record,
    /// and that copy was a fifth of its cluster loop's CPU
    /// (perf/README.md, "perf/replication-cost").
    private func readMachine<T>(_ query: (inout LeaseMachine) -> T) -> T { query(&machine) }

    var isEnforced: Bool { enforced }
    var holedCandidatesRefused: UInt64 { machine.counters.holedCandidatesRefused }
    var isEmptyLearner: Bool { machine.isEmptyLearner }
}
