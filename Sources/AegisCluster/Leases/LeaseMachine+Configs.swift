/// Changes of a shard's replica configuration (docs/shard-movement.md,
/// "Changing the replica set"): the holder moves it from C_old to C_new
/// through the joint configuration, each step a new term that the holder
/// asks for while it keeps the lease it holds, exactly as it re-terms above a
/// replica that refused it.
///
/// Why one configuration per epoch is ever committed (won a lease round, so
/// that a majority of each of its sets persisted it):
/// - A voter grants an ask only under the asker's exact configuration: it
///   adopts a newer one first, refuses an older one (`configStale`), and
///   refuses one of its own epoch that differs from its own (`configStale`
///   too, carrying its own). A grant therefore means the voter persisted
///   the asker's configuration.
/// - A holder proposes only from the configuration its lease was won under,
///   which is committed. Two proposals of one epoch thus start from the same
///   committed C_old, both need a majority of it, and a voter of the
///   intersection holds only one of them.
/// - A holder whose own step meets a different configuration of the same
///   epoch proposes the same step again one epoch above it. The other one
///   was never committed: had it been, a majority of C_old would have
///   persisted it and refused this holder's renewals under C_old.
/// - A candidate that is not the holder never changes a configuration; it
///   only adopts newer ones.
/// `aegiskv-sim --config-changes` checks the invariant itself on every
/// commit (`Simulation.committed`).
extension LeaseMachine {
    /// Takes a newer configuration of the shard (a higher epoch), persisted
    /// with the shard's term and vote before anything relies on it. An older
    /// or equal one changes nothing: epochs only go forward, and of two
    /// configurations of one epoch at most one is committed. A holder the new
    /// one leaves out lets go of the lease.
    mutating func adoptConfig(_ config: ShardConfig, shard: Int, from peer: NodeID, into output: inout [LeaseAction]) {
        let lease = state.shards[shard]
        guard config.epoch > (lease.config?.epoch ?? 0) else { return }
        state.shards[shard].config = config
        counters.configsAdopted += 1
        output.append(.persistTerm(shard: shard, PersistedTerm(term: lease.term, votedFor: lease.votedFor, config: config)))
        output.append(.log(.notice, "leases: shard \(shard) replica set \(config), learned from \(peer) (was \(lease.config.map(\.description) ?? "the map's owners"))"))
        if lease.heldUntil != nil && !config.everyVoter.contains(settings.nodeID) {
            state.shards[shard].heldUntil = nil
            output.append(.leaseLost(shard: shard, reason: .notReplica))
        }
    }

    /// Whether this node's configuration of the shard is a step it started
    /// and has not yet won a round under.
    func configStepUnderWay(_ shard: Int) -> Bool {
        let lease = state.shards[shard]
        guard let config = lease.config, lease.heldUntil != nil else { return false }
        return config.epoch > lease.heldConfigEpoch
    }

    /// The shard's configuration, when this node holds the lease at `now`
    /// and won it (or its last renewal) under that very configuration, so
    /// that a majority of each of its sets has persisted it.
    func heldCommittedConfig(_ shard: Int, now: Milliseconds) -> ShardConfig? {
        guard state.shards.indices.contains(shard), holdsLease(shard, now: now),
              let config = state.shards[shard].config, state.shards[shard].heldConfigEpoch == config.epoch else { return nil }
        return config
    }

    /// Whether `proposeConfig` would start a change of the shard now: this
    /// node holds its lease under a configuration that is committed and not
    /// joint.
    public func mayProposeConfig(_ shard: Int, now: Milliseconds) -> Bool {
        heldCommittedConfig(shard, now: now).map { !$0.isJoint } ?? false
    }

    mutating func proposeConfig(shard: Int, voters: [NodeID], now: Milliseconds, into output: inout [LeaseAction]) {
        guard state.shards.indices.contains(shard) else { return }
        let lease = state.shards[shard]
        func refuse(_ why: String) { output.append(.log(.info, "leases: shard \(shard) config change to \(voters.map(\.name)) not started: \(why)")) }
        guard let current = lease.config else { return refuse("the shard has no configuration yet (its replica set is the map's)") }
        guard holdsLease(shard, now: now) else { return refuse("this node does not hold the shard's lease") }
        guard lease.heldConfigEpoch == current.epoch else { return refuse("a change to \(current) is under way") }
        guard !current.isJoint else { return refuse("the joint step to \(current.voters.map(\.name)) is not finished") }
        guard voters != current.voters else { return refuse("the voters are those of \(current)") }
        guard current.epoch < UInt32.max, lease.term < UInt32.max - 1,
              let joint = ShardConfig(epoch: current.epoch + 1, voters: voters, outgoing: current.voters)
        else { return refuse("not a valid set of voters") }
        beginConfigStep(joint, shard: shard, reason: "joint step to \(voters.map(\.name))", into: &output)
    }

    /// Persists `config` with the next term voted for this node and asks for
    /// that term at the next tick, keeping the held lease until it ends or
    /// the term is won (won = the step is committed, `configWon`).
    mutating func beginConfigStep(_ config: ShardConfig, shard: Int, reason: String, into output: inout [LeaseAction]) {
        let lease = state.shards[shard]
        state.shards[shard].config = config
        counters.configSteps += 1
        output.append(.log(.notice, "leases: shard \(shard) \(reason): \(config) asked at term \(lease.term + 1)"))
        adopt(term: lease.term + 1, votedFor: settings.nodeID, shard: shard,
              reason: "configuration step to epoch \(config.epoch)", keepingLease: true, into: &output)
    }

    /// Called when a round is won: the configuration it was counted over is
    /// committed. A committed joint configuration is finished by whoever
    /// holds the lease: a voter of the new set asks for the new set alone; a
    /// holder the new set leaves out keeps the lease, so that its writes
    /// reach the new voters, until it hands it to one of them (`handOff`,
    /// then `release`) or lets it go (`release` alone, `mustHandOff`); that
    /// voter, or the one elected under the joint configuration, finishes it.
    mutating func configWon(_ shard: Int, into output: inout [LeaseAction]) {
        guard let config = state.shards[shard].config, config.epoch != state.shards[shard].heldConfigEpoch else { return }
        state.shards[shard].heldConfigEpoch = config.epoch
        output.append(.configCommitted(shard: shard, config: config))
        guard config.isJoint, config.voters.contains(settings.nodeID), config.epoch < UInt32.max,
              state.shards[shard].term < UInt32.max - 1,
              let final = ShardConfig(epoch: config.epoch + 1, voters: config.voters) else { return }
        beginConfigStep(final, shard: shard, reason: "final step of the change to \(config.voters.map(\.name))", into: &output)
    }

    /// Whether this node holds the shard under a committed joint
    /// configuration whose new voters leave it out: the change is finished
    /// by one of them once this node lets go (`LeaseEvent.release`).
    public func mustHandOff(_ shard: Int, now: Milliseconds) -> Bool {
        heldCommittedConfig(shard, now: now).map { $0.isJoint && !$0.voters.contains(settings.nodeID) } ?? false
    }

    /// A voter answered `configStale` with a configuration of this node's own
    /// epoch that differs from it: both were proposed, at most one can be
    /// committed, and it is not the voter's (see the type's comment). The
    /// holder whose step it met proposes the same step one epoch above.
    mutating func configConflict(_ theirs: ShardConfig, shard: Int, into output: inout [LeaseAction]) {
        guard let mine = state.shards[shard].config, mine.epoch == theirs.epoch, mine != theirs,
              configStepUnderWay(shard), mine.epoch < UInt32.max, state.shards[shard].term < UInt32.max - 1,
              let again = ShardConfig(epoch: mine.epoch + 1, voters: mine.voters, outgoing: mine.outgoing) else { return }
        beginConfigStep(again, shard: shard, reason: "step proposed again above \(theirs)", into: &output)
    }
}
