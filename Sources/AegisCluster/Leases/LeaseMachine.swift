import AegisStore

public enum LeaseTimerID: Hashable, Sendable, CaseIterable {
    /// Renew held leases, campaign where due: one batched request per peer.
    case tick
    /// The earliest end of a held lease: say it is lost on time.
    case expiry
}

public enum LeaseEvent: Sendable {
    /// Once, first. Persisted terms and the empty-learner flag come with `init`.
    case start(now: Milliseconds)
    /// One whole lease frame (`LeaseCodec.isLeaseFrame`), length prefix included.
    case received(frame: [UInt8], now: Milliseconds)
    case timerFired(LeaseTimerID, now: Milliseconds)
    /// The members this node's membership holds `alive` (itself included).
    case membersChanged(alive: [NodeID], now: Milliseconds)
    /// The shard map whose owners are each shard's replica set. It must be the
    /// same on every node (see docs/replication.md, "Leases and terms").
    case placementChanged(ShardMap, now: Milliseconds)
    /// The newest (term, seq) this node holds for a shard.
    case localVersion(shard: Int, version: EntryVersion, now: Milliseconds)
    /// The holder asks to move the shard's voters to `voters`, through the
    /// joint configuration (docs/shard-movement.md, "Changing the replica
    /// set"). Refused, with a log line, unless this node holds the shard's
    /// lease under a configuration no change is under way in.
    case proposeConfig(shard: Int, voters: [NodeID], now: Milliseconds)
    /// The holder gives the shard's lease up now: it writes nothing more for
    /// the shard at its term. Sent to end a hand-off (`handOff`) once its
    /// target holds the holder's writes, which turns the voters' prepared
    /// votes into grants; or, without one, when a committed joint
    /// configuration leaves the holder out (`mustHandOff`), which leaves the
    /// shard to an election once the promises run out.
    case release(shard: Int, now: Milliseconds)
    /// `release` of several shards, in one release frame per voter: a
    /// stopping node lets go of every shard its targets caught up on at once.
    case releaseShards([Int], now: Milliseconds)
    /// The holder starts handing the shard to `to`, a voter that holds its
    /// writes (docs/shard-movement.md §4): it renews no more, and `to` asks
    /// the voters for the next term. `release` then lets the lease go and
    /// turns their prepared votes into grants. Refused, with a log line,
    /// unless this node holds the lease with half of it left.
    case handOff(shard: Int, to: NodeID, now: Milliseconds)
    /// `handOff` of several shards to one target, in one prepare frame.
    case handOffShards([Int], to: NodeID, now: Milliseconds)
    /// The hand-off is given up (the target died or did not catch up): the
    /// holder renews again, above the voters' new term if it must.
    case abortHandOff(shard: Int, now: Milliseconds)
    /// This node now holds a complete copy of the shard: the holder's stream
    /// of it finished here, or (before `start`) the log replay proved the
    /// copy whole (`ReplayedCopy`). A copy that may have had a hole since a
    /// restart no longer has one, and the shard is not stood back from.
    case copyComplete(shard: Int, now: Milliseconds)
}

public enum LeaseLossReason: Sendable, Equatable, CustomStringConvertible {
    /// Not renewed by a majority in time.
    case expired
    /// A peer answered with a higher term: another node was elected.
    case higherTerm(UInt32)
    /// The placement no longer makes this node a replica of the shard.
    case notReplica
    /// Given up (`LeaseEvent.release`): the target of a hand-off, or the
    /// voters of a configuration that leaves this node out, take over.
    case released
    /// A replica whose copy is whole through a newer version than the
    /// holder's campaigned: the holder lets the lease go and grants it
    /// (`LeaseMachine.yieldsTo`).
    case newerWholeCopy(NodeID)

    public var description: String {
        switch self {
        case .expired: "expired"
        case let .higherTerm(term): "a peer is at term \(term)"
        case .notReplica: "no longer a replica"
        case .released: "released to another voter"
        case let .newerWholeCopy(node): "\(node) campaigned with a copy whole through newer writes"
        }
    }
}

public enum LeaseAction: Sendable, Equatable {
    /// A lease frame for `to`, on the control lane.
    case send(frame: [UInt8], to: NodeID)
    case setTimer(LeaseTimerID, at: Milliseconds)
    /// Write durably to data_dir BEFORE carrying out any later action of the
    /// same step: every grant, vote and campaign that follows relies on it.
    case persistTerm(shard: Int, PersistedTerm)
    /// This node now holds the shard's lease: it may accept writes until
    /// `until` on its own clock (exclusive).
    case leaseAcquired(shard: Int, term: UInt32, until: Milliseconds)
    /// A renewal moved the end of a held lease.
    case leaseExtended(shard: Int, term: UInt32, until: Milliseconds)
    /// Stop accepting writes for the shard.
    case leaseLost(shard: Int, reason: LeaseLossReason)
    /// One `notice` line per change.
    case termChanged(shard: Int, old: UInt32, new: UInt32, reason: String)
    /// This node won a lease round counted over `config`: a majority of each
    /// of its sets has persisted it, so no majority of an older one can
    /// grant a lease any more.
    case configCommitted(shard: Int, config: ShardConfig)
    case log(ClusterLogLevel, String)
}

/// Counters for `/metrics`; they only grow.
public struct LeaseCounters: Sendable, Equatable {
    public internal(set) var droppedByReason: [DropReason: UInt64] = [:]
    /// Asks for a term below this node's ("a primary replaying an old term").
    public internal(set) var staleTermAsks: UInt64 = 0
    /// Replies that match no request of this process life, or answer an old term.
    public internal(set) var staleReplies: UInt64 = 0
    public internal(set) var answersByVerdict: [LeaseVerdict: UInt64] = [:]
    public internal(set) var electionsStarted: UInt64 = 0
    public internal(set) var electionsWon: UInt64 = 0
    public internal(set) var termChanges: UInt64 = 0
    /// Asks refused (`candidateBehind`) because the candidate's copy may
    /// have a hole and this voter's is whole, or a whole candidate claiming
    /// at least as much asked lately (`refusesHoledCandidate`).
    public internal(set) var holedCandidatesRefused: UInt64 = 0
    /// Newer replica configurations taken from a peer's ask or answer.
    public internal(set) var configsAdopted: UInt64 = 0
    /// Configuration steps this node started as holder (joint, final, and
    /// re-proposals above a conflicting config of the same epoch).
    public internal(set) var configSteps: UInt64 = 0
    /// Hand-offs this node started as holder, and released to their target.
    public internal(set) var handOffsStarted: UInt64 = 0
    public internal(set) var handOffsReleased: UInt64 = 0
    /// Votes this node prepared for a hand-off target, and turned into grants.
    public internal(set) var grantsPrepared: UInt64 = 0
    public internal(set) var preparedGrantsReleased: UInt64 = 0
    /// Hand-off frames that matched nothing (an old term, no prepared vote).
    public internal(set) var staleHandOffs: UInt64 = 0
    /// Shards a holder offered this node while it was stopping, not taken.
    public internal(set) var handOffsDeclinedStopping: UInt64 = 0
    /// Releases that reached this voter before the target's ask: its
    /// promise to the holder ended there.
    public internal(set) var releasesBeforeAsk: UInt64 = 0

    public init() {}
}

/// One node's side of every shard's lease, as a pure state machine in the
/// shape of `ClusterNode`: events carry the node's monotonic time, actions
/// come out, randomness comes from a seeded generator.
///
/// The rules (docs/replication.md, "Leases and terms", says why each holds):
/// - A lease is granted for one term by a majority of the shard's replica set:
///   its persisted configuration (`ShardConfig`; in a joint one, a majority
///   of both sets) where it has one, else the placement's owners. The holder
///   counts it from the moment it SENT the request, so it ends before any
///   granter's promise does.
/// - Configurations only go forward: a voter refuses an ask made with an
///   older one (`configStale`, answered with its own), and adopts a newer one
///   an ask or answer carries, persisted with the term. So once a newer
///   configuration is on a majority of the older one's voters, no majority
///   counted over the older one can form.
/// - A granter promises nobody else until its grant has expired on its own
///   clock plus `marginMs`; after a (re)start it promises nobody for one
///   lease plus margin, since it may have granted before it stopped.
/// - Votes go only to a candidate whose last (term, seq) is at least the
///   voter's; one vote per term, persisted before it is sent.
/// - Terms never go backwards: `persistTerm` comes before any action that
///   relies on a new term, and persisted terms are given back at start.
/// - An empty learner (wiped data_dir) never campaigns and never grants.
/// - A node that started with an empty data_dir (a first start, or a
///   data_dir removed whole: the two look the same) is blank for every
///   shard until a complete copy of it arrives or it wins it. Its grants
///   (`grantedBlank`) count toward a new lease only beside a majority of
///   other grants, or where every voter granted: a majority it makes with
///   another blank node could hold no copy of the shard's writes, and its
///   vote may be a second one in a term its earlier life voted in. A
///   holder's renewals of the term the voter granted it in this life are
///   granted in full. It stays blank across a restart for the shards it
///   was still blank for (`stillBlank`).
/// - A node that restarted with its terms campaigns for nothing for
///   `restartStandBackMs`: its copies may have holes its version hides
///   (except those its log replay proved whole, `ReplayedCopy`), or, with
///   the log off, are empty (`restartedWithoutLog`).
/// - Its asks say so (`LeaseAsk.mayHaveHole`) until a complete copy of the
///   shard arrives or it wins the shard. A voter whose own copy is whole and
///   holds data refuses such a candidate (`candidateBehind`) while the
///   shard's other live replicas can still form a majority without it; a
///   voter whose copy may itself have a hole votes on versions alone,
///   unless a whole candidate claiming at least as much, and more than
///   nothing, asked it lately.
public struct LeaseMachine: Sendable {
    public let settings: LeaseSettings
    let authenticator: any MessageAuthenticator
    public internal(set) var state: LeaseState
    public internal(set) var counters = LeaseCounters()

    /// - Parameters:
    ///   - persisted: what `persistTerm` wrote before the last stop, by shard.
    ///   - emptyLearner: the node started with an empty or wiped data_dir.
    ///   - restarted: the node kept its terms from an earlier start (not a
    ///     first start, not a wipe): its copies may have holes, so it stands
    ///     back from campaigning (`LeaseSettings.restartStandBackMs`).
    ///   - restartedWithoutLog: with `restarted`, the node ran with its log
    ///     off, so every copy it had is gone: it stands back as a restart
    ///     does, but once, not twice (the doubled wait lets the one log
    ///     holding a shard's writes campaign first; no log holds any here).
    ///   - startedBlank: the node started with an empty data_dir and no
    ///     terms, which a first start and a data_dir removed whole both are:
    ///     every shard starts blank (`ShardLease.blank`).
    ///   - stillBlank: shards an earlier life of this node was still blank
    ///     for when it stopped (the host keeps `blankShards` on disk beside
    ///     the terms). They start blank again: the terms that life persisted
    ///     make this start a restart, but its copies hold nothing of those
    ///     shards' writes, and as an ordinary restarted voter it would vote
    ///     on versions with nothing (docs/replication.md, "A blank node
    ///     stays blank across a restart").
    ///   - life: differs for every start of this node (the server passes its
    ///     membership incarnation); replies are matched on it.
    public init(settings: LeaseSettings, persisted: [Int: PersistedTerm], emptyLearner: Bool, restarted: Bool = false,
                restartedWithoutLog: Bool = false, startedBlank: Bool = false, stillBlank: Set<Int> = [], life: UInt64, randomSeed: UInt64,
                authenticator: any MessageAuthenticator) {
        precondition(settings.problem == nil, "invalid LeaseSettings: \(settings.problem ?? "")")
        self.settings = settings
        self.authenticator = authenticator
        let shardCount = Int(settings.parameters.numShards)
        var shards = [ShardLease](repeating: ShardLease(), count: shardCount)
        for (shard, record) in persisted where shards.indices.contains(shard) {
            shards[shard].term = record.term
            shards[shard].votedFor = record.votedFor
            shards[shard].config = record.config
            // A term voted for another node was granted; one persisted with
            // no vote may have been adopted bare (`adopt(granted: false)`),
            // and reported as granted it would depose a live holder.
            if let voted = record.votedFor, voted != settings.nodeID { shards[shard].reportedTerm = record.term }
        }
        // What a restart loses is what the stand-back is for: the same
        // condition marks every copy as possibly holed.
        let restartedWithData = restarted && !emptyLearner
        if restartedWithData {
            for shard in shards.indices { shards[shard].mayHaveHole = true }
        }
        if startedBlank && !emptyLearner && !restarted {
            for shard in shards.indices { shards[shard].blank = true }
        }
        if !emptyLearner {
            for shard in stillBlank where shards.indices.contains(shard) { shards[shard].blank = true }
        }
        state = LeaseState(shards: shards, emptyLearner: emptyLearner, restarted: restartedWithData,
                           restartedWithoutLog: restartedWithData && restartedWithoutLog,
                           life: life, random: ClusterRandom(seed: randomSeed))
        if !startedBlank { state.blankCarriedOver = shards.count { $0.blank } }
    }

    public mutating func step(_ event: LeaseEvent) -> [LeaseAction] {
        var output: [LeaseAction] = []
        if case let .start(now) = event {
            guard !state.started else { return [] }
            start(now: now, into: &output)
            return output
        }
        // What this node holds is a fact before it starts too: the log
        // replay tells it before the cluster loop starts the machine.
        // Dropped, a restarted holder voted and campaigned as holding
        // nothing, and granted a candidate that lacked its logged writes.
        if case let .localVersion(shard, version, _) = event {
            noteLocalVersion(shard, version)
            return output
        }
        if case let .copyComplete(shard, _) = event {
            guard state.shards.indices.contains(shard) else { return output }
            // The stand-back exists because the copy may have a hole; with
            // the holder's whole copy here it only keeps a whole replica
            // from campaigning while a restarted one with a hole may win
            // (chaos seed 14: a node streamed whole stood back 24 s, and a
            // holed node won 0.7 s before its first campaign).
            state.shards[shard].mayHaveHole = false
            state.shards[shard].blank = false
            state.shards[shard].standBackUntil = .min
            return output
        }
        guard state.started else { return [] }
        switch event {
        case .start:
            break
        case let .received(frame, now):
            receive(frame: frame, now: now, into: &output)
        case let .timerFired(.tick, now):
            tick(now: now, into: &output)
        case let .timerFired(.expiry, now):
            expire(now: now, into: &output)
            armExpiry(into: &output)
        case let .membersChanged(alive, now):
            let next = Set(alive)
            let someoneGone = !state.alive.isSubset(of: next)
            state.alive = next
            // A member gone from the alive set (suspected, dead, left) may
            // leave shards with no holder once its promises ran out: their
            // preferred replica campaigns now, not up to a tick later, while
            // writes to them wait on it (their map primary).
            if someoneGone { tick(now: now, into: &output) }
        case let .placementChanged(map, now):
            placementChanged(map, now: now, into: &output)
        case let .proposeConfig(shard, voters, now):
            proposeConfig(shard: shard, voters: voters, now: now, into: &output)
        case let .release(shard, now):
            release([shard], now: now, into: &output)
        case let .releaseShards(shards, now):
            release(shards, now: now, into: &output)
        case let .handOff(shard, to, now):
            handOff([shard], to: to, now: now, into: &output)
        case let .handOffShards(shards, to, now):
            handOff(shards, to: to, now: now, into: &output)
        case let .abortHandOff(shard, _):
            abortHandOff(shard, into: &output)
        case .localVersion, .copyComplete:
            break
        }
        return output
    }

    private mutating func noteLocalVersion(_ shard: Int, _ version: EntryVersion) {
        guard state.shards.indices.contains(shard), !dropsCopy(shard) else { return }
        if version > state.shards[shard].lastVersion {
            state.shards[shard].lastVersion = version
        }
    }

    /// Whether the placement leaves this node out of a shard that has no
    /// configuration: the server drops its copy then (`Reactor.applyRouting`),
    /// so the copy's versions are no longer this node's to claim.
    func dropsCopy(_ shard: Int) -> Bool {
        guard let placement = state.placement, state.shards[shard].config == nil else { return false }
        return !placement.isOwner(settings.nodeID, ofShard: shard)
    }

    // MARK: - Queries for the driver

    /// Whether this node may accept a write for `shard` at `now`: it holds the
    /// lease and the lease has not ended on its own clock.
    public func holdsLease(_ shard: Int, now: Milliseconds) -> Bool {
        guard state.shards.indices.contains(shard), let until = state.shards[shard].heldUntil else { return false }
        return now < until
    }

    public func term(ofShard shard: Int) -> UInt32 { state.shards[shard].term }

    /// The shard's replica configuration as this node knows it; nil while
    /// its replica set is the placement's owners.
    public func config(ofShard shard: Int) -> ShardConfig? {
        state.shards.indices.contains(shard) ? state.shards[shard].config : nil
    }

    /// The term of the lease this node holds for `shard` at `now` (what its
    /// writes are versioned with), nil when it holds none. Below `term(ofShard:)`
    /// while the holder renews at a new term it has not won yet.
    public func heldTerm(ofShard shard: Int, now: Milliseconds) -> UInt32? {
        holdsLease(shard, now: now) ? state.shards[shard].heldTerm : nil
    }

    /// The node this one believes may hold the shard's lease at `now`: itself
    /// while it holds it, else the node it promised the shard to while that
    /// promise runs; nil when it knows of none. A hint for routing writes to
    /// the node that can accept them; it grants nothing and decides nothing.
    public func believedHolder(_ shard: Int, now: Milliseconds) -> NodeID? {
        guard state.shards.indices.contains(shard) else { return nil }
        if holdsLease(shard, now: now) { return settings.nodeID }
        let lease = state.shards[shard]
        if let grantee = lease.grantee, grantee != settings.nodeID, now < lease.grantExpiresAt { return grantee }
        // A release names the next holder (this node, if it is the target):
        // writes go there (and are refused until it wins, within a round
        // trip) rather than to the map's primary, which may be the holder
        // that let go and is leaving.
        if let next = lease.releasedTo, now < lease.releasedToUntil { return next }
        return nil
    }

    /// Where this node sends the shard's writes: `believedHolder`, else the
    /// node that last asked it for the shard while it was quiet after a
    /// restart (it promises nothing then), for as long as that ask's lease
    /// would run: the holder renews every tick. Without that a restarted
    /// node refused the writes of the shards the map makes it primary of
    /// (TRYAGAIN "no lease holder here") for its whole quiet period, a lease
    /// and a margin, a third of the writes its clients sent for 4-5 s of
    /// every rolling restart's step; and, were the hint to end with the
    /// quiet, again until it granted the next renewal. If the asker was a
    /// candidate that lost, it refuses them as this node would have, and the
    /// holder's next renewal corrects the hint.
    ///
    /// Quiet and not asked yet (up to a lease tick after a restart), the
    /// node this one last voted for, as persisted with the term: the holder
    /// it last granted, or the target of a hand-off it made as it stopped.
    /// Without it a restarted node's writes waited for that first renewal
    /// (Reactor+Parking.swift), 0.6-0.7 s in a rolling restart. A holder
    /// that changed while this node was down answers that another node
    /// holds the shard, a TRYAGAIN, as any stale hint does.
    public func routingHolder(_ shard: Int, now: Milliseconds) -> NodeID? {
        if let believed = believedHolder(shard, now: now) { return believed }
        guard state.shards.indices.contains(shard) else { return nil }
        let lease = state.shards[shard]
        if let asker = lease.askedWhileQuietBy, now < lease.askedWhileQuietUntil { return asker }
        if now < state.quietUntil, let voted = lease.votedFor, voted != settings.nodeID { return voted }
        return nil
    }

    /// The node this one promised the shard to at `now` (not itself), with
    /// the newest version that node claimed in the ask this node last
    /// granted it. A holder renews every tick, so a follower whose copy
    /// reaches the claim holds every write the holder had made a tick ago:
    /// what a restarted node waits for before it says it serves again. nil
    /// while no promise to another node runs.
    public func promisedHolderClaim(_ shard: Int, now: Milliseconds) -> (holder: NodeID, claim: EntryVersion)? {
        guard state.shards.indices.contains(shard) else { return nil }
        let lease = state.shards[shard]
        guard let grantee = lease.grantee, grantee != settings.nodeID, now < lease.grantExpiresAt,
              lease.grantedClaimBy == grantee else { return nil }
        return (grantee, lease.grantedClaim)
    }

    public var isEmptyLearner: Bool { state.emptyLearner }

    /// Whether this blank node's copy of the shard is complete without a
    /// stream: the holder whose renewal it granted last (a term that holder
    /// won) claimed no more than `acknowledged`, the newest version of the
    /// holder's chain this node applied in this process life, which starts
    /// at nothing and grows only without gaps (a record past a gap is not
    /// applied). A new cluster's followers get there with the holder's first
    /// renewal (both copies empty) or first records, and need no stream.
    /// A candidate's claim counts for nothing here: two blank nodes that
    /// granted each other empty claims would both end blank, then elect each
    /// other as before.
    public func blankCopyIsComplete(_ shard: Int, acknowledged: EntryVersion, now: Milliseconds) -> Bool {
        guard isBlank(shard), state.shards[shard].grantedClaimRenews,
              let promised = promisedHolderClaim(shard, now: now) else { return false }
        return acknowledged >= promised.claim
    }

    /// Whether this node's grants for the shard count only where every voter
    /// granted (`ShardLease.blank`).
    public func isBlank(_ shard: Int) -> Bool {
        state.shards.indices.contains(shard) && state.shards[shard].blank
    }

    /// The shards this node is blank for. A shard leaves the set (a complete
    /// copy arrived, or this node won it) and never joins it after the
    /// start: the host keeps the set on disk for the next start's
    /// `stillBlank`, and writing it late only keeps a shard blank longer.
    public var blankShards: Set<Int> {
        Set(state.shards.indices.lazy.filter { state.shards[$0].blank })
    }

    /// Whether this node's copy of the shard may lack writes its version
    /// claims (see `LeaseAsk.mayHaveHole`).
    public func copyMayHaveHole(_ shard: Int) -> Bool {
        state.shards.indices.contains(shard) && state.shards[shard].mayHaveHole
    }

    /// The peers that decode `requestWithCopyState` (their build says so);
    /// the others are sent `request`, whose asks say nothing of the copy.
    public mutating func peersDecodingCopyState(_ peers: Set<NodeID>) { state.copyStatePeers = peers }

    /// The peers that decode `requestWithConfig` (their build says so): they
    /// are sent that form, whose asks carry the copy state and the config.
    public mutating func peersDecodingConfig(_ peers: Set<NodeID>) { state.configPeers = peers }

    /// A node that does not enforce leases takes writes unfenced for the
    /// shards it is the map's primary of; granting a lease meanwhile would
    /// let the grantee write the same shard at the same time. It answers
    /// `notEnforcing` instead until this is cleared.
    public mutating func pauseGrants(_ paused: Bool) { state.grantsPaused = paused }

    /// The node is stopping: it takes no lease any more, by hand-off or by
    /// campaign, and keeps renewing those it holds until it hands them off
    /// or exits. A lease it took now would end with the process: its last
    /// term would name it while its log holds none of the writes it
    /// followed (a follower logs nothing it receives) and no snapshot
    /// after a win that late. After the runbook's emergency shutdown (every
    /// node stopped at once, each handing its shards to the others) the
    /// other replicas then stood back for the node their last vote went
    /// to, which was behind them, and refused it: 48 s without a holder
    /// after the full cluster recovery, or for ever once one of them
    /// granted it (RunbookConformanceTests in CI). Declined, the shard's
    /// last term stays its holder's, whose copy is the newest and whole.
    /// A hand-off taken just before the stop began may still be won: the
    /// stop waits for that round (`awaitsLeaseRound`).
    public mutating func stopTakingLeases() { state.stopping = true }

    /// One shard's lease state in one line, for traces and `/cluster`.
    public func describe(shard: Int, now: Milliseconds) -> String {
        let lease = state.shards[shard]
        func left(_ at: Milliseconds) -> String { at == .min ? "never" : "\(at - now) ms" }
        return "term \(lease.term) voted \(lease.votedFor?.name ?? "-") granted-term \(lease.reportedTerm) "
            + "promised \(lease.grantee?.name ?? "-") for \(left(lease.grantExpiresAt)) "
            + "held \(lease.heldUntil.map { "\($0 - now) ms" } ?? "no") campaign-after \(left(lease.campaignAfter)) "
            + "quiet \(left(state.quietUntil)) version \(lease.lastVersion)\(lease.mayHaveHole ? " may-have-hole" : "")\(lease.blank ? " blank" : "") alive \(state.alive.map(\.name).sorted())"
            + " config \(lease.config.map(\.description) ?? "from the map")"
    }

    // MARK: - Start and placement

    mutating func start(now: Milliseconds, into output: inout [LeaseAction]) {
        state.started = true
        state.startedAt = now
        state.quietUntil = now + settings.leaseDurationMs + settings.marginMs(for: settings.leaseDurationMs)
        state.alive = [settings.nodeID]
        if state.emptyLearner {
            output.append(.log(.notice, "leases: started as an empty learner (wiped data_dir): this node votes for no one and never campaigns until its shards are refilled"))
        }
        let blank = state.shards.count { $0.blank }
        if state.blankCarriedOver > 0 {
            output.append(.log(.notice, "leases: still blank for \(state.blankCarriedOver) of \(state.shards.count) shards: an earlier life of this node started with an empty data_dir and had no complete copy of them yet when it stopped, so its votes for them still count toward a new lease only beside a majority of other grants or where every replica grants"))
        } else if blank > 0 {
            output.append(.log(.notice, "leases: started with an empty data_dir (a first start, or a data_dir removed whole: the two look the same), blank for \(blank) of \(state.shards.count) shards: until a complete copy of a shard reaches this node, its votes for it count toward a new lease only beside a majority of other grants or where every replica grants, so that no majority without a copy of the shard's writes can form with it"))
        }
        if state.restarted {
            let standBack = settings.restartStandBackMs
            // A shard its log replay proved whole (`ReplayedCopy`, told as
            // `copyComplete` before the start) claims nothing it lacks: it
            // campaigns and is granted like any replica, unless its last vote
            // went to another node (below).
            let whole = state.shards.indices.filter { !state.shards[$0].mayHaveHole }
            var overtaken = 0
            for shard in state.shards.indices {
                let lease = state.shards[shard]
                // The last vote it cast for the shard went to another node:
                // that node held the shard, or may have, after this node's
                // newest write or after what this node had replicated of it
                // (a follower logs nothing, and a snapshot keeps its copy
                // only as of the snapshot), and its log has the rest.
                // Campaigning as early as that node, this one won with the
                // vote of a replica that replayed less, and its stream
                // replaced the copies holding those writes: after a rolling
                // restart with writes while each node was down and a crash
                // of all three, 274 and 448 of 2,800 acknowledged writes were
                // lost. It waits as a replica with nothing does, so the one
                // it voted for campaigns first; it still votes, and grants
                // that one if its newest write is as new. A whole copy too:
                // it is whole only through its own writes.
                let votedInAnother = lease.votedFor != nil && lease.votedFor != settings.nodeID
                if votedInAnother { overtaken += 1 }
                guard lease.mayHaveHole || votedInAnother else { continue }
                // After a whole-cluster restart the only copy of a shard is
                // the last holder's log, and two replicas that replayed
                // nothing of it are a majority: they wait twice as long, so
                // the one with the writes campaigns first and they grant it.
                let wait = (lease.lastVersion == .zero || votedInAnother) && !state.restartedWithoutLog ? 2 * standBack : standBack
                state.shards[shard].standBackUntil = now + wait
            }
            if state.restartedWithoutLog {
                output.append(.log(.notice, "leases: restarted with the log off: every copy this node had is gone, so it campaigns for no shard for \(standBack) ms, while a replica that stayed up, whose copy holds the shard's writes, takes over; it votes meanwhile, and is streamed the holders' copies"))
            } else {
                output.append(.log(.notice, "leases: restarted: \(whole.count) of \(state.shards.count) shards replayed whole from the log; the others may have holes (this node's copies hold only what its log replayed), so it campaigns for none of them for \(standBack) ms, while a replica that stayed up takes over; it votes meanwhile. It waits \(2 * standBack) ms for the shards it replayed nothing of, and for the \(overtaken) whose last vote went to another node (that node may have written since), whole or not"))
            }
        }
        output.append(.setTimer(.tick, at: now + settings.tickIntervalMs))
    }

    mutating func placementChanged(_ map: ShardMap, now: Milliseconds, into output: inout [LeaseAction]) {
        guard map.numShards == state.shards.count else {
            output.append(.log(.warning, "leases: placement with \(map.numShards) shards refused; leases run \(state.shards.count)"))
            return
        }
        state.placement = map
        // A shard with a configuration keeps it whatever the map says: only
        // the lease protocol changes who votes for it.
        for shard in state.shards.indices where dropsCopy(shard) {
            if state.shards[shard].heldUntil != nil {
                state.shards[shard].heldUntil = nil
                output.append(.leaseLost(shard: shard, reason: .notReplica))
            }
            // The copy goes with the map; its newest version must not stay
            // this node's claim. Kept, a node the map left out and took
            // back asked with the versions of a copy it no longer had, won
            // with the grant of a replica holding less, and streamed its
            // empty copy over the shard's writes (`chaos/run --nodes 5
            // --seed 109`: 3 acknowledged writes and a counter's 120 INCRs lost).
            state.shards[shard].lastVersion = .zero
            state.shards[shard].mayHaveHole = false
        }
    }

    /// The nodes whose votes count for the shard, the preferred candidate
    /// first: every voter of its configuration, else the placement's owners.
    public func replicaSet(_ shard: Int) -> [NodeID] {
        if let config = state.shards[shard].config { return config.everyVoter }
        return state.placement?.owners(ofShard: shard) ?? []
    }

    /// Whether `nodes` can grant the shard's lease: a majority of its
    /// configuration (of both sets while it is joint), else of its owners.
    func isMajority(_ nodes: Set<NodeID>, ofShard shard: Int) -> Bool {
        if let config = state.shards[shard].config { return config.isMajority(nodes) }
        let owners = replicaSet(shard)
        return 2 * owners.filter(nodes.contains).count > owners.count
    }

    // MARK: - Terms

    /// Moves the shard to `term` (never backwards), persisting it first.
    /// `keepingLease`: the holder moving its renewals to a new term keeps the
    /// lease it holds until that lease ends or the new term is won.
    /// `granted`: the term was granted to another node (this node's vote, or
    /// a peer's report of one), so this node reports it in its replies and a
    /// holder below it demotes itself. A voter's bare term (a failed
    /// candidate's own) is adopted with `granted: false`: reported onwards,
    /// it deposed a live holder that no one had replaced.
    mutating func adopt(term: UInt32, votedFor: NodeID?, shard: Int, reason: String, keepingLease: Bool = false,
                        granted: Bool = true, into output: inout [LeaseAction]) {
        let old = state.shards[shard].term
        precondition(term >= old, "terms never go backwards")
        guard term > old || state.shards[shard].votedFor != votedFor else { return }
        state.shards[shard].term = term
        state.shards[shard].votedFor = votedFor
        state.shards[shard].votedForLife = nil
        if votedFor != settings.nodeID && granted {
            state.shards[shard].reportedTerm = max(state.shards[shard].reportedTerm, term)
        }
        output.append(.persistTerm(shard: shard, PersistedTerm(term: term, votedFor: votedFor,
                                                               config: state.shards[shard].config)))
        if term > old {
            counters.termChanges += 1
            output.append(.termChanged(shard: shard, old: old, new: term, reason: reason))
            if state.shards[shard].heldUntil != nil && !keepingLease {
                state.shards[shard].heldUntil = nil
                output.append(.leaseLost(shard: shard, reason: .higherTerm(term)))
            }
        }
    }

    /// Grants `node` the shard until `durationMs` plus margin from now, on this node's clock.
    mutating func promise(_ node: NodeID, shard: Int, durationMs: Int64, now: Milliseconds) {
        let expires = now + durationMs + settings.marginMs(for: durationMs)
        if state.shards[shard].grantee == node {
            state.shards[shard].grantExpiresAt = max(state.shards[shard].grantExpiresAt, expires)
        } else {
            state.shards[shard].grantee = node
            state.shards[shard].grantExpiresAt = expires
        }
    }

    func promisedToAnother(_ node: NodeID, shard: Int, now: Milliseconds) -> Bool {
        let lease = state.shards[shard]
        return lease.grantee != nil && lease.grantee != node && now < lease.grantExpiresAt
    }
}

/// Everything that decides what the machine does next; Equatable so that a
/// refused frame can be shown to change none of it.
public struct LeaseState: Sendable, Equatable {
    var shards: [ShardLease]
    let emptyLearner: Bool
    /// Kept its terms across a stop: see `LeaseSettings.restartStandBackMs`.
    let restarted: Bool
    /// Kept its terms but not its copies (the log was off): see `restartedWithoutLog`.
    let restartedWithoutLog: Bool
    /// Shards that started blank because an earlier life was still blank
    /// for them (`stillBlank`), not because data_dir was empty now.
    var blankCarriedOver = 0
    let life: UInt64
    var random: ClusterRandom
    var started = false
    var startedAt: Milliseconds = 0
    /// No grants before this: what this node promised before it stopped is forgotten.
    var quietUntil: Milliseconds = 0
    var alive: Set<NodeID> = []
    /// Peers whose last answer was `empty_learner`: not candidates.
    var learners: Set<NodeID> = []
    var placement: ShardMap?
    /// Set while this node does not enforce leases: it grants none.
    var grantsPaused = false
    /// Set once the node began to stop (`stopTakingLeases`).
    var stopping = false
    var nextRound: UInt64 = 1
    /// Requests of this life not yet older than one lease, by round.
    var rounds: [UInt64: Round] = [:]
    /// Peers sent `requestWithCopyState` (`peersDecodingCopyState`).
    var copyStatePeers: Set<NodeID> = []
    /// Peers sent `requestWithConfig` (`peersDecodingConfig`).
    var configPeers: Set<NodeID> = []

    init(shards: [ShardLease], emptyLearner: Bool, restarted: Bool, restartedWithoutLog: Bool, life: UInt64,
         random: ClusterRandom) {
        self.shards = shards
        self.emptyLearner = emptyLearner
        self.restarted = restarted
        self.restartedWithoutLog = restartedWithoutLog
        self.life = life
        self.random = random
    }
}

struct ShardLease: Sendable, Equatable {
    /// The highest term persisted for the shard, and the vote cast in it.
    var term: UInt32 = 0
    var votedFor: NodeID?
    /// Who votes for the shard, persisted with the term; nil while the
    /// placement's owners do (no configuration set yet).
    var config: ShardConfig?
    /// The node this one last promised the shard to (itself when it holds or
    /// campaigns), and when that promise ends on this node's clock.
    var grantee: NodeID?
    var grantExpiresAt: Milliseconds = .min
    /// Set while this node holds the lease for `term`: its end on this node's clock.
    var heldUntil: Milliseconds?
    /// The term of the lease `heldUntil` belongs to.
    var heldTerm: UInt32 = 0
    /// While holding: the node this one hands the shard to (`handOff`).
    var handingOffTo: NodeID?
    /// As a voter: the transfer ask this node answered `prepared`, which the
    /// holder's release turns into a grant.
    var prepared: PreparedGrant?
    /// The target a release named, for as long as a lease: `believedHolder`
    /// where no promise to another node says more (this node was the
    /// holder, or is the target, or the release came before the target's ask).
    var releasedTo: NodeID?
    var releasedToUntil: Milliseconds = .min
    /// The term that release let go of.
    var releasedTerm: UInt32 = 0
    /// While this node is quiet after a restart (it grants nothing, so it
    /// promises the shard to nobody): the node that last asked it for the
    /// shard, and until when that ask's lease would run. `routingHolder`
    /// only; it decides nothing.
    var askedWhileQuietBy: NodeID?
    var askedWhileQuietUntil: Milliseconds = .min
    /// The epoch of the configuration the held lease was last won under (0:
    /// none yet, or no config): a config whose epoch is above it is this
    /// node's, not yet known to be on a majority.
    var heldConfigEpoch: UInt32 = 0
    /// While holding: the highest term of a replica that refused a renewal
    /// for its term (`staleTerm`, `votedOther`), 0 when none. Such a replica
    /// never grants this term again, and it never learns who holds the lease
    /// (it routes writes nowhere); the next tick renews at a term above it.
    var refusedByTerm: UInt32 = 0
    /// The highest term this node knows to belong to a node that may hold
    /// the lease: granted to a peer, won by this node, or reported by a peer.
    /// Replies carry it beside `term`: a holder demotes itself only for this
    /// one, so that a candidate whose campaign failed does not depose a live
    /// holder by its bare term.
    var reportedTerm: UInt32 = 0
    var lastVersion: EntryVersion = .zero
    /// Set for every shard by a restart with the log (the copy is what the
    /// log replayed); cleared when a complete copy arrives (`copyComplete`)
    /// or this node wins the shard, whose copy is from then on the one its
    /// followers are brought to.
    var mayHaveHole = false
    /// Set for every shard when the node started with an empty data_dir
    /// (`startedBlank`); cleared like `mayHaveHole`, by a complete copy or a
    /// win. Its grants are `grantedBlank` then. A data_dir removed whole
    /// looks like a first start, so a blank node holds none of the writes
    /// it acknowledged before: two wiped replicas elected each other with
    /// empty copies while the one that held the writes refused, and
    /// streamed the empty copy over its (`chaos/run --nodes 5 --seed 112`:
    /// 7 acknowledged writes lost).
    var blank = false
    /// Peers whose last grant for the shard was `grantedBlank`: not counted
    /// among the replicas that can elect one of themselves when this node
    /// refuses a holed candidate (`refusesHoledCandidate`).
    var blankPeers: Set<NodeID> = []
    /// The newest claim of a candidate whose copy is whole that asked this
    /// node, and until when it counts (`noteWholeClaim`).
    var wholeClaimSeen: EntryVersion = .zero
    var wholeClaimSeenUntil: Milliseconds = .min
    /// The node this one last granted the shard to (or prepared a grant
    /// for), and the newest version it claimed in that ask: what this node
    /// must hold as a follower to have every write that holder had made a
    /// renewal ago (`promisedHolderClaim`).
    var grantedClaimBy: NodeID?
    var grantedClaim: EntryVersion = .zero
    /// That grant renewed a term this node had granted the same process
    /// life: only a holder asks twice at one term, so the claim is a
    /// winner's (`blankCopyIsComplete`).
    var grantedClaimRenews = false
    /// The process life (`LeaseMessage` request's `life`) of the node
    /// `votedFor` names, when this node granted it in this process; nil
    /// after a restart or for a vote not given to an ask. An ask at the
    /// voted term is a renewal only from that life: a node that restarted
    /// without its terms (its data_dir removed whole) asks again from term
    /// 1 and meets the vote its earlier life won there, and taken for that
    /// holder's renewal it won the shard with an empty copy and streamed it
    /// over the copies holding the shard's writes (`chaos/run --seed 102
    /// --faults wipe,...`: 142 acknowledged writes lost).
    var votedForLife: UInt64?
    /// A restarted node campaigns for nothing before this; the replicas'
    /// rank waits count from it, so their order is the same as at any
    /// other election (`LeaseSettings.restartStandBackMs`).
    var standBackUntil: Milliseconds = .min
    /// A failed or pending campaign is not repeated before this.
    var campaignAfter: Milliseconds = .min
    /// Until then this node campaigns without its rank's wait: it refused a
    /// candidate as behind its own copy, so the replica the rank put first
    /// cannot win with its grant and this one is the better candidate.
    var campaignsFirstUntil: Milliseconds = .min
}

struct PreparedGrant: Sendable, Equatable {
    /// The node the holder hands the shard to, and the term it asked.
    var candidate: NodeID
    var term: UInt32
    /// The holder this node was promised to when it prepared.
    var holder: NodeID
    /// The candidate's request, which the grant answers when it comes.
    var round: UInt64
    var life: UInt64
    var durationMs: Int64
}

struct Round: Sendable, Equatable {
    var sentAt: Milliseconds
    /// Per shard asked: the term asked for and who granted it (self included).
    var asked: [Int: RoundShard]
}

struct RoundShard: Sendable, Equatable {
    var term: UInt32
    /// The epoch of the configuration asked under (0: none): grants count
    /// only while it is still this node's, since a grant means the voter
    /// persisted the asker's configuration.
    var configEpoch: UInt32 = 0
    var granters: Set<NodeID>
    /// The granters whose grant was `grantedBlank` (this node too when it
    /// asked while blank): they count only where every voter granted.
    var blankGranters: Set<NodeID> = []
}
