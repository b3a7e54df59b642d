import AegisCluster
import AegisStore

/// `--config-changes`: holders move shards to new voters while the faults
/// run, the way the shard mover will (docs/shard-movement.md §3): the
/// newcomers get the holder's copy by a stream (one model event here, cut at
/// the holder's newest version) and every write after it, and once each has
/// acknowledged its stream the holder proposes the change to its lease
/// machine, which runs the joint and final steps. A move is dropped when its
/// holder no longer holds the shard. W = 2 is then counted in each set of
/// the holder's configuration, so that an acknowledged write is on a
/// majority of every set a lease can be won under.
struct ShardMove {
    let id: UInt64
    let holder: Int
    let holderLife: UInt64
    let voters: [NodeID]
    /// Newcomers whose stream is not acknowledged yet.
    var waiting: Set<Int>
    /// Newcomers: they receive the holder's writes until they are voters.
    let newcomers: [Int]
}

extension Simulation {
    /// Out of 1,000 holder ticks per shard, how many start a move.
    static let movesPerThousandTicks: UInt64 = 8

    /// Where the holder sends a shard's writes: its configuration's voters
    /// (the map's owners without one) and the newcomers of its move.
    func replicationTargets(_ shard: Int, holder: Int) -> [Int] {
        let voters = nodes[holder].lease?.config(ofShard: shard)?.everyVoter ?? leasePlacement.owners(ofShard: shard)
        var targets = voters.compactMap(nodeIndex)
        if let move = moves[shard], move.holder == holder {
            targets += move.newcomers.filter { !targets.contains($0) }
        }
        return targets
    }

    /// Called on each lease tick of a holder: hands the shard to a new voter
    /// of a committed joint configuration that leaves the holder out, drops
    /// a move whose holder lost the shard, and (before the heal) sometimes
    /// starts one.
    func moveShard(_ shard: Int, holder: Int) {
        if let lease = nodes[holder].lease, lease.mustHandOff(shard, now: leaseClock(holder)),
           let config = lease.config(ofShard: shard) {
            handOff(shard, holder: holder, to: config.voters)
            return
        }
        if let move = moves[shard], move.holder != holder || nodes[holder].lifeIncarnation != move.holderLife {
            moves[shard] = nil
        }
        guard moves[shard] == nil, now < scenario.healAt, let lease = nodes[holder].lease,
              lease.mayProposeConfig(shard, now: leaseClock(holder)), let current = lease.config(ofShard: shard),
              UInt64.random(in: 0..<1000, using: &moveRandom) < Self.movesPerThousandTicks else { return }
        var voters = nodes.indices.map { nodes[$0].nodeID }
        voters.shuffle(using: &moveRandom)
        voters = Array(voters.prefix(current.voters.count))
        guard Set(voters) != Set(current.voters) else { return }
        let newcomers = voters.compactMap(nodeIndex).filter { !current.everyVoter.contains(nodes[$0].nodeID) }
        let move = ShardMove(id: nextMove, holder: holder, holderLife: nodes[holder].lifeIncarnation, voters: voters,
                             waiting: Set(newcomers), newcomers: newcomers)
        nextMove += 1
        moves[shard] = move
        trace.mix(21, UInt64(holder), UInt64(shard) << 32 | move.id)
        if newcomers.isEmpty { proposeMove(shard) }
        let version = nodes[holder].shardVersions[shard]
        for newcomer in newcomers {
            sendModel(.modelStream(to: newcomer, from: holder, shard: shard, version: version,
                                   complete: nodes[holder].completeThrough[shard], move: move.id), from: holder, to: newcomer)
        }
    }

    /// The stream's last slice: the newcomer's copy becomes the holder's at
    /// the cut (`replaceForStream`, then `completeStream`).
    func receiveModelStream(_ shard: Int, version: EntryVersion, complete: EntryVersion, at index: Int, from holder: Int,
                            move: UInt64) {
        if nodes[index].completeBeforeReceiving[shard] == nil {
            nodes[index].completeBeforeReceiving[shard] = nodes[index].completeThrough[shard]
        }
        nodes[index].shardVersions[shard] = version
        nodes[index].completeThrough[shard] = complete
        nodes[index].followedSinceStart[shard] = true
        leaseStep(index, .localVersion(shard: shard, version: version, now: leaseClock(index)))
        leaseStep(index, .copyComplete(shard: shard, now: leaseClock(index)))
        sendModel(.streamAck(to: holder, from: index, shard: shard, move: move, life: nodes[holder].lifeIncarnation),
                  from: index, to: holder)
    }

    func streamAcknowledged(_ shard: Int, by newcomer: Int, at holder: Int, move id: UInt64) {
        guard var move = moves[shard], move.id == id, move.holder == holder else { return }
        move.waiting.remove(newcomer)
        moves[shard] = move
        if move.waiting.isEmpty { proposeMove(shard) }
    }

    /// The hand-off as the server will run it (docs/shard-movement.md §4):
    /// the holder picks the first running voter of the new set that holds
    /// all it acknowledged, stops writing the shard (`writeAsHolder` skips a
    /// shard being handed off: the freeze), sends it its newest write (the
    /// flush), and releases once the target acknowledged it; a target that
    /// has not within two lease ticks is given up and another picked at the
    /// next tick.
    func handOff(_ shard: Int, holder: Int, to voters: [NodeID]) {
        // Odd shards go the stopping server's way, even ones the design's.
        if shard % 2 == 1 {
            handOffInServerOrder(shard, holder: holder, to: voters)
            return
        }
        guard let lease = nodes[holder].lease else { return }
        let clock = leaseClock(holder)
        let newest = nodes[holder].shardVersions[shard]
        if let target = lease.handingOff(shard, now: clock), let index = nodeIndex(target) {
            if (acknowledgedBy[shard][index] ?? .zero) >= newest {
                report.handOffsReleased += 1
                handOffFlights[shard] = nil
                leaseStep(holder, .release(shard: shard, now: clock))
            } else if now >= (handOffFlights[shard]?.since ?? now) + 2 * scenario.leases.tickIntervalMs {
                handOffFlights[shard] = nil
                leaseStep(holder, .abortHandOff(shard: shard, now: clock))
            }
            return
        }
        guard let target = handOffTarget(shard, among: voters) else { return }
        report.handOffsStarted += 1
        leaseStep(holder, .handOff(shard: shard, to: target, now: clock))
        guard let term = nodes[holder].lease?.heldTerm(ofShard: shard, now: clock),
              nodes[holder].lease?.handingOff(shard, now: clock) != nil, let index = nodeIndex(target) else { return }
        handOffFlights[shard] = (holder, index, term, now)
        // The flush: the newest write goes to the target at once.
        sendModel(.replicate(to: index, from: holder, shard: shard, version: newest,
                             holderComplete: nodes[holder].completeThrough[shard]), from: holder, to: index)
    }

    /// The order a stopping server node uses (LeaseDriver.stepLeaving): the
    /// machine's hand-off starts at once, and the target persists its term
    /// and asks while the holder still writes (`writeAsHolder` goes on).
    /// Once the holder's own vote is prepared for the target (or at its next
    /// lease tick without: the release then overtakes the ask), the holder
    /// freezes the shard and sends the target its newest write; once the
    /// target acknowledged it, the release. A target that has not acknowledged
    /// within two lease ticks of the freeze is given up (the shard thaws,
    /// the machine's hand-off is aborted) and another picked at the next tick.
    func handOffInServerOrder(_ shard: Int, holder: Int, to voters: [NodeID]) {
        let clock = leaseClock(holder)
        guard let lease = nodes[holder].lease, lease.holdsLease(shard, now: clock) else {
            frozenForHandOff[shard] = nil
            preparingHandOff[shard] = nil
            return
        }
        if let frozen = frozenForHandOff[shard], frozen.holder == holder {
            guard lease.handingOff(shard, now: clock) == nodes[frozen.target].nodeID else {
                frozenForHandOff[shard] = nil
                return
            }
            releaseFrozenIfAcknowledged(shard, by: frozen.target, at: holder)
            if frozenForHandOff[shard] != nil && now >= frozen.since + 2 * scenario.leases.tickIntervalMs {
                frozenForHandOff[shard] = nil
                leaseStep(holder, .abortHandOff(shard: shard, now: clock))
            }
            return
        }
        if let preparing = preparingHandOff[shard], preparing.holder == holder {
            let target = nodes[preparing.target].nodeID
            guard lease.handingOff(shard, now: clock) == target else {
                preparingHandOff[shard] = nil
                return
            }
            // The ask's arrival froze it already (`freezePreparedHandOffs`);
            // a tick without it, the release will overtake the ask.
            if lease.votePrepared(shard, for: target) || now > preparing.since { freezePrepared(shard) }
            return
        }
        guard let target = handOffTarget(shard, among: voters), let index = nodeIndex(target) else { return }
        leaseStep(holder, .handOff(shard: shard, to: target, now: clock))
        guard nodes[holder].lease?.handingOff(shard, now: clock) == target else { return }
        report.handOffsStarted += 1
        preparingHandOff[shard] = (holder, index, now)
    }

    /// The server freezes a shard in the loop pass that read its target's
    /// ask, not at its next lease tick: the same here, as each lease frame
    /// reaches a holder with hand-offs preparing.
    func freezePreparedHandOffs(of holder: Int) {
        guard let lease = nodes[holder].lease else { return }
        for (shard, preparing) in preparingHandOff.sorted(by: { $0.key < $1.key }) where preparing.holder == holder
            && lease.votePrepared(shard, for: nodes[preparing.target].nodeID) {
            freezePrepared(shard)
        }
    }

    /// The server releases in the loop pass that read the target's
    /// acknowledgement of the newest write, not at its next lease tick.
    func releaseFrozenIfAcknowledged(_ shard: Int, by follower: Int, at holder: Int) {
        guard let frozen = frozenForHandOff[shard], frozen.holder == holder, frozen.target == follower,
              (acknowledgedBy[shard][follower] ?? .zero) >= nodes[holder].shardVersions[shard],
              let lease = nodes[holder].lease, lease.holdsLease(shard, now: leaseClock(holder)),
              lease.handingOff(shard, now: leaseClock(holder)) == nodes[follower].nodeID else { return }
        frozenForHandOff[shard] = nil
        report.handOffsReleased += 1
        leaseStep(holder, .release(shard: shard, now: leaseClock(holder)))
    }

    /// The freeze and the flush: the target is sent the newest write.
    private func freezePrepared(_ shard: Int) {
        guard let preparing = preparingHandOff.removeValue(forKey: shard) else { return }
        frozenForHandOff[shard] = (preparing.holder, preparing.target, now)
        sendModel(.replicate(to: preparing.target, from: preparing.holder, shard: shard,
                             version: nodes[preparing.holder].shardVersions[shard],
                             holderComplete: nodes[preparing.holder].completeThrough[shard]),
                  from: preparing.holder, to: preparing.target)
    }

    /// The first running voter that holds every acknowledged write.
    func handOffTarget(_ shard: Int, among voters: [NodeID]) -> NodeID? {
        let acknowledged = acknowledgedVersions[shard]
        return voters.first { voter in
            nodeIndex(voter).map { nodes[$0].isRunning && !nodes[$0].emptyLearner
                && (acknowledgedBy[shard][$0] ?? .zero) >= acknowledged } == true
        }
    }

    /// Every newcomer has the copy: the holder proposes, if it still may.
    func proposeMove(_ shard: Int) {
        guard let move = moves[shard], now < scenario.healAt,
              nodes[move.holder].lease?.mayProposeConfig(shard, now: leaseClock(move.holder)) == true else { return }
        report.configChangesProposed += 1
        leaseStep(move.holder, .proposeConfig(shard: shard, voters: move.voters, now: leaseClock(move.holder)))
    }

    /// A follower's acknowledgement: with configurations, a version is at
    /// W = 2 once the holder and one more voter of each set of the holder's
    /// configuration hold it (a newcomer's counts in no set it is not in);
    /// without them, one follower's acknowledgement makes it.
    func acknowledged(_ shard: Int, version: EntryVersion, by follower: Int, at holder: Int) {
        acknowledgedBy[shard][follower] = max(acknowledgedBy[shard][follower] ?? .zero, version)
        guard scenario.options.configs, let config = nodes[holder].lease?.config(ofShard: shard) else {
            if version > acknowledgedVersions[shard] {
                acknowledgedVersions[shard] = version
                report.writesAcknowledged += 1
            }
            return
        }
        guard version > acknowledgedVersions[shard] else { return }
        let holderID = nodes[holder].nodeID
        let atTwo = config.sets.allSatisfy { set in
            let holding = set.filter { node in
                node == holderID || nodeIndex(node).map { (acknowledgedBy[shard][$0] ?? .zero) >= version } == true
            }
            return holding.count >= min(2, set.count)
        }
        if atTwo {
            acknowledgedVersions[shard] = version
            report.writesAcknowledged += 1
        }
    }

    /// The newest configuration of the shard any running node holds.
    func newestRunningConfig(_ shard: Int) -> ShardConfig? {
        nodes.indices.compactMap { nodes[$0].isRunning ? nodes[$0].lease?.config(ofShard: shard) : nil }
            .max { $0.epoch < $1.epoch }
    }
}
