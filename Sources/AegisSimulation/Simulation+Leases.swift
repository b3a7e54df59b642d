import AegisCluster
import AegisStore

/// The lease machines run beside membership on every node, over the same
/// network (loss, delay, duplication, corruption, partitions) and the same
/// pauses and crashes, each reading its node's drifting clock plus a skew of
/// up to ±60 s. Their invariants are checked on every action:
/// - at most one holder per shard per term;
/// - no two nodes hold an unexpired lease for one shard at the same true
///   time (the drift margin is what makes this hold, so no slack is given);
/// - terms never go backwards on a node, across restarts too, and every term
///   is persisted before a grant, a vote or a lease relies on it;
/// - an empty learner never holds a lease;
/// - a write acknowledged at W = 2 is held by every new holder, while two
///   replicas that are not wiped still hold it (replication model below);
/// - after the heal, every shard with a live majority of replicas that are
///   not empty learners has a holder (`Scenario.leaseLivenessBoundMs`).
extension Simulation {
    /// The node's clock as its lease machine reads it.
    func leaseClock(_ index: Int) -> Int64 {
        localTime(index, now) + nodes[index].leaseSkewMs
    }

    func startLeases(_ index: Int, life: UInt64) {
        let wiped = scenario.wipedRestarts.contains(Scenario.NodeMoment(node: index, at: now))
        // As in the server: a learner writes no term file, so a node that
        // was one is one again after any further restart
        // (`anEmptyLearnerStaysOneAcrossRestarts`). The model restarted it
        // as a node with no terms that may vote, which the server never is
        // (seed 3000224 with --restart-cascades: a node wiped, then
        // restarted, voted again in a term it had voted in before the wipe,
        // and two nodes held shard 6 at term 3).
        let learner = (wiped && !scenario.options.wipesLookNew) || nodes[index].emptyLearner
        let shardCount = nodes[index].shardVersions.count
        if wiped || scenario.options.logOff {
            // With the log off a restart loses every copy, as a wipe does,
            // but keeps the terms and the blank shards.
            if wiped {
                nodes[index].disk = [:]
                nodes[index].blankOnDisk = []
            }
            nodes[index].loggedVersions = Array(repeating: .zero, count: shardCount)
            nodes[index].loggedCopies = Array(repeating: ReplayedCopy(), count: shardCount)
            nodes[index].completeBeforeReceiving = Array(repeating: nil, count: shardCount)
            nodes[index].shardVersions = Array(repeating: .zero, count: shardCount)
            nodes[index].completeThrough = Array(repeating: .zero, count: shardCount)
        } else if scenario.crashKeepsOnlyTheLog {
            // What survives a stop is the log: the writes made as holder.
            nodes[index].shardVersions = nodes[index].loggedVersions
            for shard in 0..<shardCount { nodes[index].completeThrough[shard] = completeFromLog(index, shard) }
        }
        if scenario.options.configs && nodes[index].lives == 1 {
            for shard in 0..<shardCount {
                nodes[index].disk[shard] = PersistedTerm(term: 0, votedFor: nil, config: ShardConfig(
                    epoch: 1, voters: leasePlacement.owners(ofShard: shard)))
            }
        }
        nodes[index].followedSinceStart = Array(repeating: false, count: shardCount)
        nodes[index].emptyLearner = learner
        nodes[index].leaseTimerGenerations = [:]
        let timing = scenario.leases
        let settings = LeaseSettings(nodeID: nodes[index].nodeID, leaseDurationMs: timing.durationMs,
                                     tickIntervalMs: timing.tickIntervalMs, electionTimeoutMs: timing.electionTimeoutMs,
                                     clockDriftBoundPPM: timing.clockDriftBoundPPM, parameters: leaseParameters)
        let randomSeed = scenario.seed &* 0xD1B5_4A32_D192_ED03 &+ UInt64(index) << 32 &+ UInt64(nodes[index].lives)
        // As in the server: a node that finds no terms (a first start, or a
        // wipe that looks like one) is blank for every shard, and one whose
        // earlier life was still blank for some is blank for those.
        if !nodes[index].blankOnDisk.isEmpty && !learner && !nodes[index].disk.isEmpty { report.restartsStillBlank += 1 }
        nodes[index].lease = LeaseMachine(settings: settings, persisted: nodes[index].disk, emptyLearner: learner,
                                          restarted: nodes[index].lives > 1 && !learner && !wiped,
                                          restartedWithoutLog: scenario.options.logOff,
                                          startedBlank: nodes[index].disk.isEmpty && !learner,
                                          stillBlank: nodes[index].blankOnDisk,
                                          life: life, randomSeed: randomSeed, authenticator: authenticator)
        // Every simulated node runs this release: all decode the copy state.
        let everyNode = Set(nodes.map(\.nodeID))
        nodes[index].lease?.peersDecodingCopyState(everyNode)
        nodes[index].lease?.peersDecodingConfig(everyNode)
        trace.mix(13, UInt64(index), wiped ? 1 : 0)
        // As in the server: the log replay's versions reach the machine before
        // it starts (the stand-back is longer for shards it replayed nothing of).
        for (shard, version) in nodes[index].shardVersions.enumerated() where version > .zero {
            leaseStep(index, .localVersion(shard: shard, version: version, now: leaseClock(index)))
        }
        if scenario.crashKeepsOnlyTheLog && !wiped {
            // As in the server: shards the replay proves whole are told so
            // before the start, and neither stand back nor are refused.
            for shard in 0..<shardCount where nodes[index].loggedCopies[shard].isWhole {
                checkReplayedWhole(index, shard)
                leaseStep(index, .copyComplete(shard: shard, now: leaseClock(index)))
            }
        }
        leaseStep(index, .start(now: leaseClock(index)))
        leaseStep(index, .placementChanged(leasePlacement, now: leaseClock(index)))
        if let alive = nodes[index].node?.aliveMembers {
            leaseStep(index, .membersChanged(alive: alive, now: leaseClock(index)))
        }
    }

    /// A stopped process accepts no more writes: its leases end now.
    func stopLeases(_ index: Int) {
        if let lease = nodes[index].lease { nodes[index].blankOnDisk = lease.blankShards }
        nodes[index].lease = nil
        nodes[index].leaseTimerGenerations = [:]
        for shard in nodes[index].leaseEndReal.indices {
            nodes[index].leaseEndReal[shard] = min(nodes[index].leaseEndReal[shard], now)
        }
    }

    func leaseStep(_ index: Int, _ event: LeaseEvent) {
        let releasesBefore = nodes[index].lease?.counters.releasesBeforeAsk ?? 0
        guard let actions = nodes[index].lease?.step(event) else { return }
        report.releasesBeforeAsk += Int((nodes[index].lease?.counters.releasesBeforeAsk ?? 0) - releasesBefore)
        performLease(actions, of: index)
    }

    func deliverLease(to index: Int, frame: [UInt8], corrupted: Bool) {
        guard corrupted else {
            leaseStep(index, .received(frame: frame, now: leaseClock(index)))
            if scenario.options.configChanges && !preparingHandOff.isEmpty { freezePreparedHandOffs(of: index) }
            return
        }
        guard let before = nodes[index].lease else { return }
        let dropsBefore = before.counters.droppedByReason.values.reduce(0, +)
        let event = LeaseEvent.received(frame: frame, now: leaseClock(index))
        guard let actions = nodes[index].lease?.step(event),
              let after = nodes[index].lease else { return }
        let dropsAfter = after.counters.droppedByReason.values.reduce(0, +)
        if dropsAfter == dropsBefore + 1 && after.state == before.state && actions.isEmpty {
            report.corruptLeaseFramesRefused += 1
        } else {
            violation("a corrupted lease frame was not refused cleanly by \(nodes[index].nodeID) (drops \(dropsBefore)→\(dropsAfter), state unchanged: \(after.state == before.state), actions \(actions.count))")
        }
        performLease(actions, of: index)
    }

    func performLease(_ actions: [LeaseAction], of index: Int) {
        for action in actions {
            switch action {
            case let .send(frame, to):
                trace.mix(14, UInt64(index), trace.hashBytes(frame))
                checkGrantsPersisted(frame, by: index)
                guard let destination = nodeIndex(to) else { continue }
                transmit(frame, from: index, to: nodes[destination].address, lane: .control)
            case let .setTimer(id, at):
                let generation = nextTimerGeneration
                nextTimerGeneration += 1
                nodes[index].leaseTimerGenerations[id] = generation
                let due = max(now, realTime(index, local: at - nodes[index].leaseSkewMs))
                trace.mix(15, UInt64(index), UInt64(due))
                queue.schedule(.leaseTimer(node: index, id: id, generation: generation), at: due)
            case let .persistTerm(shard, record):
                persist(record, shard: shard, by: index)
            case let .leaseAcquired(shard, term, until):
                report.leasesAcquired += 1
                trace.mix(16, UInt64(index), UInt64(shard) << 32 | UInt64(term))
                held(shard, term: term, until: until, by: index)
                checkAcknowledgedWritesKept(shard, by: index)
            case let .leaseExtended(shard, term, until):
                held(shard, term: term, until: until, by: index)
            case let .leaseLost(shard, reason):
                if case .newerWholeCopy = reason { report.yieldsToNewerWholeCopies += 1 }
                trace.mix(17, UInt64(index), UInt64(shard))
                nodes[index].leaseEndReal[shard] = min(nodes[index].leaseEndReal[shard], now)
            case let .termChanged(shard, old, new, _):
                report.termChanges += 1
                trace.mix(18, UInt64(index), UInt64(shard) << 32 | UInt64(new))
                if new <= old { violation("\(nodes[index].nodeID) shard \(shard): term went from \(old) to \(new)") }
                let persisted = nodes[index].disk[shard]?.term ?? 0
                if new > persisted { violation("\(nodes[index].nodeID) shard \(shard): acted on term \(new) before persisting it (disk has \(persisted))") }
            case let .configCommitted(shard, config):
                trace.mix(20, UInt64(index), UInt64(shard) << 32 | UInt64(config.epoch))
                committed(config, shard: shard, by: index)
            case let .log(_, line):
                trace.mix(10, UInt64(index), UInt64(line.utf8.count))
            }
        }
    }

    func nodeIndex(_ node: NodeID) -> Int? {
        guard node.name.hasPrefix("node"), let index = Int(node.name.dropFirst(4)), nodes.indices.contains(index) else { return nil }
        return index
    }

    /// Invariants: the disk's term and config epoch never go backwards, and
    /// one term gets one vote.
    func persist(_ record: PersistedTerm, shard: Int, by index: Int) {
        // As in the server (`LeaseDriver`): an empty learner writes no term.
        guard !nodes[index].emptyLearner else { return }
        if let old = nodes[index].disk[shard] {
            if record.term < old.term {
                violation("\(nodes[index].nodeID) shard \(shard): persisted term \(record.term) below \(old.term)")
            } else if record.term == old.term, let voted = old.votedFor, record.votedFor != voted {
                violation("\(nodes[index].nodeID) shard \(shard): voted for \(record.votedFor?.name ?? "nobody") in term \(record.term) after voting for \(voted)")
            }
            if let before = old.config, (record.config?.epoch ?? 0) < before.epoch {
                violation("\(nodes[index].nodeID) shard \(shard): persisted config epoch \(record.config?.epoch ?? 0) over \(before)")
            }
        }
        if let config = record.config, config.epoch > (nodes[index].disk[shard]?.config?.epoch ?? 0) {
            report.configsAdopted += 1
        }
        nodes[index].disk[shard] = record
    }

    /// Invariant: a grant is sent only for a term already on disk with the
    /// vote it gives.
    func checkGrantsPersisted(_ frame: [UInt8], by index: Int) {
        guard case let .message(message) = LeaseCodec.decode(frame: frame, parameters: leaseParameters,
                                                             authenticator: authenticator),
              let answers = message.payload.answers else { return }
        for answer in answers where answer.verdict.grants {
            let record = nodes[index].disk[Int(answer.shard)]
            if (record?.term ?? 0) < answer.term {
                violation("\(nodes[index].nodeID) granted shard \(answer.shard) term \(answer.term) with \(record?.term ?? 0) on disk")
            }
        }
    }

    /// Invariant: one configuration per (shard, epoch) is ever committed, and
    /// a committed one was persisted (or a newer one since) by a majority of
    /// each of its sets. A wiped node's disk is gone: it counts as having
    /// persisted, since its grant may have been on its way when it was wiped.
    func committed(_ config: ShardConfig, shard: Int, by index: Int) {
        report.configsCommitted += 1
        let key = UInt64(shard) << 32 | UInt64(config.epoch)
        if let earlier = committedConfigs[key], earlier != config {
            violation("shard \(shard): \(nodes[index].nodeID) committed \(config) after \(earlier) was committed at the same epoch")
        }
        committedConfigs[key] = config
        let persisted = Set(nodes.indices.filter { node in
            (nodes[node].disk[shard]?.config?.epoch ?? 0) >= config.epoch || nodes[node].emptyLearner
        }.map { nodes[$0].nodeID })
        if !config.isMajority(persisted) {
            violation("shard \(shard): \(nodes[index].nodeID) committed \(config) persisted only by \(persisted.map(\.name).sorted())")
        }
    }

    /// Invariants: one holder per term, no overlap in true time, no learner holds.
    func held(_ shard: Int, term: UInt32, until: Int64, by index: Int) {
        if nodes[index].emptyLearner { violation("empty learner \(nodes[index].nodeID) holds shard \(shard)") }
        let key = UInt64(shard) << 32 | UInt64(term)
        if let holder = termHolders[key], holder != index {
            violation("shard \(shard) term \(term) held by \(nodes[holder].nodeID) and \(nodes[index].nodeID)")
        }
        termHolders[key] = index
        let persisted = nodes[index].disk[shard]?.term ?? 0
        if persisted < term { violation("\(nodes[index].nodeID) holds shard \(shard) term \(term) with \(persisted) on disk") }
        for other in nodes.indices where other != index && nodes[other].leaseEndReal[shard] > now {
            violation("shard \(shard): \(nodes[index].nodeID) holds term \(term) while \(nodes[other].nodeID)'s lease runs \(nodes[other].leaseEndReal[shard] - now) ms more")
        }
        nodes[index].leaseEndReal[shard] = realTime(index, local: until - nodes[index].leaseSkewMs)
    }

    /// Invariant: liveness once membership has agreed.
    func checkLeaseLiveness() {
        for shard in 0..<leasePlacement.numShards {
            // With configurations: the newest a running node knows, which its
            // asks hand on to every voter they reach.
            let config = newestRunningConfig(shard)
            let owners = config?.everyVoter ?? leasePlacement.owners(ofShard: shard)
            let eligible = owners.filter { owner in
                guard let index = nodeIndex(owner) else { return false }
                return nodes[index].isRunning && !nodes[index].emptyLearner
            }
            // A blank replica's grant counts only beside a majority of other
            // grants or with every voter's (`LeaseMachine.wins`).
            let everyVoterRunning = eligible.count == owners.count
            let counted = everyVoterRunning ? eligible : eligible.filter { owner in
                nodeIndex(owner).flatMap { nodes[$0].lease?.isBlank(shard) } == false
            }
            guard config.map({ $0.isMajority(Set(counted)) }) ?? (counted.count >= owners.count / 2 + 1) else { continue }
            let someoneHolds = nodes.indices.contains { index in
                nodes[index].lease?.holdsLease(shard, now: leaseClock(index)) == true
            }
            if !someoneHolds {
                let states = owners.map { owner -> String in
                    guard let i = nodeIndex(owner), let lease = nodes[i].lease else { return "\(owner): down" }
                    return "\(owner)\(nodes[i].emptyLearner ? " (empty learner)" : ""): \(lease.describe(shard: shard, now: leaseClock(i)))"
                }
                violation("shard \(shard) has \(counted.count) of \(owners.count) replicas able to vote and no lease holder \(scenario.leaseLivenessBoundMs) ms after membership agreed; \(states.joined(separator: "; "))")
            }
        }
    }
}

/// The replication model, as small as the W = 2 invariant needs: per shard,
/// each replica's newest (term, seq) and the version through which it holds
/// every write (records come in order from one holder, so a copy without a
/// hole is complete through its newest version).
/// The holder writes once per lease tick, sends its version to the other
/// replicas over the simulated network, and a follower applies it when it is
/// newer and its term is not below the follower's own term for the shard (a
/// follower that voted in a newer term fences the old holder off), then
/// acknowledges. One acknowledgement from a follower makes W = 2.
///
/// With `crashKeepsOnlyTheLog` a crash keeps only the log, which holds the
/// writes the node made as holder: the copy that comes back claims its newest
/// logged version but is complete only through what it held before it first
/// received a write from another holder; without it a crash keeps the whole
/// copy. A follower whose chain continues keeps its own copy; one
/// with a gap, or that restarted (it acknowledges from nothing), is caught
/// up with the holder's whole copy, holes included.
extension Simulation {
    func writeAsHolder(_ index: Int) {
        guard let lease = nodes[index].lease else { return }
        let clock = leaseClock(index)
        for shard in nodes[index].shardVersions.indices {
            // The held lease's term, not the machine's: a holder renewing at a
            // new term has not won it yet.
            guard let term = lease.heldTerm(ofShard: shard, now: clock) else { continue }
            // Handing the shard off, the holder applies no write (the freeze),
            // except while a hand-off in the server's order prepares: that
            // one may freeze now, and writes go on until it does.
            var moved = false
            if preparingHandOff[shard]?.holder == index && scenario.options.configChanges {
                moveShard(shard, holder: index)
                moved = true
            }
            let preparing = preparingHandOff[shard]?.holder == index
            if (nodes[index].lease?.handingOff(shard, now: clock) != nil && !preparing) || frozenForHandOff[shard]?.holder == index {
                if scenario.options.configChanges && !moved { moveShard(shard, holder: index) }
                continue
            }
            let current = nodes[index].shardVersions[shard]
            guard term >= current.term else { continue }
            let version = EntryVersion(term: term, seq: current.seq + 1)
            nodes[index].shardVersions[shard] = version
            nodes[index].loggedVersions[shard] = version
            nodes[index].loggedCopies[shard].logged(version)
            if nodes[index].completeThrough[shard] == current { nodes[index].completeThrough[shard] = version }
            let holderComplete = nodes[index].completeThrough[shard]
            leaseStep(index, .localVersion(shard: shard, version: version, now: clock))
            trace.mix(19, UInt64(index), UInt64(shard) << 32 | version.seq)
            if scenario.options.configChanges && !moved { moveShard(shard, holder: index) }
            for follower in replicationTargets(shard, holder: index) where follower != index {
                sendModel(.replicate(to: follower, from: index, shard: shard, version: version, holderComplete: holderComplete),
                          from: index, to: follower)
            }
        }
    }

    func applyReplicated(_ shard: Int, version: EntryVersion, holderComplete: EntryVersion, at index: Int, from primary: Int) {
        // A follower that voted in a newer term fences the old holder off,
        // except the target of the holder's hand-off taking its flush, and a
        // voter still promised to the holder, as the server's follower takes
        // records from the node it believes holds the lease
        // (LeaseDriver.acceptsReplication): a vote prepared for a hand-off's
        // target raises the voter's term while the holder still writes.
        let flush = handOffFlights[shard].map { $0.holder == primary && $0.target == index && $0.term == version.term } == true
        guard let lease = nodes[index].lease, version.term >= lease.term(ofShard: shard) || flush
            || lease.believedHolder(shard, now: leaseClock(index)) == nodes[primary].nodeID else { return }
        let current = nodes[index].shardVersions[shard]
        if version > current {
            if nodes[index].completeBeforeReceiving[shard] == nil {
                nodes[index].completeBeforeReceiving[shard] = nodes[index].completeThrough[shard]
            }
            let chainContinues = nodes[index].followedSinceStart[shard] && version.seq == current.seq + 1
            nodes[index].followedSinceStart[shard] = true
            nodes[index].completeThrough[shard] = chainContinues
                ? (nodes[index].completeThrough[shard] == current ? version : nodes[index].completeThrough[shard])
                : holderComplete
            nodes[index].shardVersions[shard] = version
            leaseStep(index, .localVersion(shard: shard, version: version, now: leaseClock(index)))
            // The holder's whole copy replaced this one, as a finished stream
            // does in the server: whatever a restart lost is no longer missing.
            if !chainContinues { leaseStep(index, .copyComplete(shard: shard, now: leaseClock(index))) }
        }
        guard nodes[index].shardVersions[shard] >= version else { return }
        sendModel(.replicaAck(to: primary, from: index, shard: shard, version: version, life: nodes[primary].lifeIncarnation),
                  from: index, to: primary)
    }

    /// The same loss, partitions and delays as frames.
    func sendModel(_ event: Event, from source: Int, to destination: Int) {
        if (blocked[source * 4096 + destination] ?? 0) > 0 || !nodes[destination].isRunning { return }
        if now < scenario.healAt && Double.random(in: 0..<1, using: &network) < scenario.lossRate { return }
        let backlog = nodes[destination].slowUntil > now ? nodes[destination].slowDelayMs : 0
        queue.schedule(event, at: now + backlog + Int64.random(in: scenario.delayMinMs...scenario.delayMaxMs, using: &network))
    }

    /// How far a node's copy is whole after its log is replayed.
    func completeFromLog(_ index: Int, _ shard: Int) -> EntryVersion {
        let logged = nodes[index].loggedVersions[shard]
        return nodes[index].completeBeforeReceiving[shard].map { min(logged, $0) } ?? logged
    }

    /// Invariant: a copy the log replay proves whole (`ReplayedCopy`) is
    /// whole in the model: its log holds every write up to its newest one.
    func checkReplayedWhole(_ index: Int, _ shard: Int) {
        report.replayedWholeCopies += 1
        let newest = nodes[index].loggedVersions[shard]
        if completeFromLog(index, shard) < newest || nodes[index].loggedCopies[shard].head != newest {
            violation("shard \(shard): \(nodes[index].nodeID)'s log replay was taken as whole through \(newest), but its copy is complete only through \(completeFromLog(index, shard))")
        }
    }

    /// Invariant: a new holder has every write acknowledged at W = 2 (its
    /// copy is complete through the newest one), unless fewer than two
    /// replicas still hold them all (two failures: a wipe, a crash that left
    /// a hole, a loss), in which case no majority is bound to contain them.
    func checkAcknowledgedWritesKept(_ shard: Int, by index: Int) {
        let acknowledged = acknowledgedVersions[shard]
        guard acknowledged > .zero, nodes[index].completeThrough[shard] < acknowledged else { return }
        // With configurations, the winner's voters: a write on a node outside
        // them (a newcomer of an aborted move) is on no majority that elects.
        let config = nodes[index].lease?.config(ofShard: shard)
        let voters = config?.everyVoter ?? leasePlacement.owners(ofShard: shard)
        let keepers = voters.filter { owner in
            guard let replica = nodeIndex(owner) else { return false }
            if scenario.strictKeepers && !nodes[replica].isRunning { return false }
            // What a crashed replica still holds: with the log off nothing,
            // with only the log what it proves whole, else its whole copy.
            let holds: EntryVersion
            if nodes[replica].isRunning {
                holds = nodes[replica].completeThrough[shard]
            } else if scenario.options.logOff {
                holds = .zero
            } else if scenario.crashKeepsOnlyTheLog {
                holds = completeFromLog(replica, shard)
            } else {
                holds = nodes[replica].completeThrough[shard]
            }
            return holds >= acknowledged
        }
        // Every majority that elects meets the keepers when enough of them
        // are in each set of the winner's configuration (a joint one has two:
        // a write kept on one old and one new voter misses the majority made
        // of the other two of each).
        let needed = scenario.strictKeepers ? 1 : 2
        let sets = config?.sets ?? [voters]
        if sets.allSatisfy({ set in set.filter(keepers.contains).count >= min(needed, set.count) }) {
            violation("shard \(shard): \(nodes[index].nodeID) won complete through \(nodes[index].completeThrough[shard]) (newest \(nodes[index].shardVersions[shard])), below \(acknowledged) acknowledged at W = 2 and held whole by \(keepers.map(\.name))")
        }
    }
}
