import AegisStore
import Testing
@testable import AegisCluster

/// The hand-off of a lease (docs/shard-movement.md §4, build step 4): the
/// holder stops renewing, the target's transfer ask is prepared by the
/// voters, and the holder's release turns the prepared votes into grants.
@Suite struct LeaseHandOffTests {
    let shard = 0

    /// 3 founded nodes ({0,1,2}, epoch 1); node0 holds the shard.
    static func heldByNode0() -> (LeaseCluster, now: Int64) {
        let config = ShardConfig(epoch: 1, voters: LeaseConfigTests.nodes(0, 1, 2))!
        var cluster = LeaseConfigTests.cluster(count: 3, shard: 0, configs: [0: config, 1: config, 2: config])
        var now = LeaseCluster.quietEnd
        while now <= LeaseCluster.quietEnd + 2000 {
            for index in 0..<3 { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now)
            now += LeaseCluster.tickMs
        }
        #expect(cluster.holders(0, at: now) == [0])
        return (cluster, now)
    }

    func held(_ cluster: LeaseCluster, _ index: Int, at now: Int64) -> Bool {
        cluster.machines[index].holdsLease(shard, now: now)
    }

    @Test func aReleasedHandOffElectsTheTargetAtOnceWithTheNextTerm() {
        var (cluster, now) = Self.heldByNode0()
        let term = cluster.machines[0].term(ofShard: shard)
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        #expect(cluster.machines[0].handingOff(shard, now: now) == cluster.ids[1])
        cluster.deliver(at: now)
        // The voters prepared: node1 does not hold yet, node0 still does.
        #expect(cluster.holders(shard, at: now) == [0])
        #expect(cluster.machines[2].counters.grantsPrepared == 1 && cluster.machines[0].counters.grantsPrepared == 1)
        #expect(cluster.machines[2].term(ofShard: shard) == term + 1)
        // The holder renews nothing while it hands off.
        let ticked = sends(cluster.tick(0, at: now + 500)).compactMap { decodeLease($0.frame)?.payload.asks }
        #expect(!ticked.joined().contains { $0.shard == UInt32(shard) })
        cluster.step(0, .release(shard: shard, now: now + 600))
        #expect(cluster.holders(shard, at: now + 600).isEmpty)
        cluster.deliver(at: now + 600)
        // Won without waiting for node0's promises, which run a lease more.
        #expect(cluster.holders(shard, at: now + 600) == [1])
        #expect(cluster.machines[1].heldTerm(ofShard: shard, now: now + 600) == term + 1)
        #expect(cluster.log[0].contains(.leaseLost(shard: shard, reason: .released)))
        #expect(cluster.machines[0].counters.handOffsReleased == 1)
        #expect(cluster.machines[2].counters.preparedGrantsReleased == 1)
        // node1's lease counts from its ask, before the release.
        #expect(cluster.log[1].contains(.leaseAcquired(shard: shard, term: term + 1, until: now + LeaseCluster.durationMs)))
    }

    /// A node that began to stop takes no lease: offered one by hand-off,
    /// it neither moves to the next term nor asks the voters for it, so the
    /// shard's last term stays its holder's; nor does it campaign once the
    /// holder let go. Taken, the lease ended with the stopping process and
    /// its last term named a node whose log held none of the writes
    /// (RunbookConformanceTests, the full cluster recovery after the
    /// emergency shutdown).
    @Test func aStoppingNodeTakesNoLeaseByHandOffOrCampaign() {
        var (cluster, now) = Self.heldByNode0()
        let term = cluster.machines[0].term(ofShard: shard)
        cluster.machines[1].stopTakingLeases()
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        #expect(cluster.machines[1].counters.handOffsDeclinedStopping == 1)
        #expect(cluster.log[1].contains { if case .log(.notice, let line) = $0 { line.contains("not taken: this node is stopping") } else { false } })
        #expect(cluster.machines[1].term(ofShard: shard) == term && cluster.machines[2].term(ofShard: shard) == term,
                "nobody moved to the next term: \(cluster.machines[1].term(ofShard: shard)), \(cluster.machines[2].term(ofShard: shard))")
        #expect(cluster.machines[2].counters.grantsPrepared == 0)
        // node0 lets go anyway (a stopping holder does after the wait for the
        // target's ask) and is gone: node2 wins, node1 never does.
        cluster.step(0, .release(shard: shard, now: now + 300))
        cluster.deliver(at: now + 300, cut: [0])
        var holders: Set<Int> = []
        var at = now + 400
        while at <= now + 30_000 {
            for index in 1..<3 { _ = cluster.tick(index, at: at) }
            cluster.deliver(at: at, cut: [0])
            holders.formUnion(cluster.holders(shard, at: at))
            at += LeaseCluster.tickMs
        }
        #expect(holders == [2], "holders seen: \(holders.sorted())")
    }

    /// A hand-off taken just before the node began to stop is waited for:
    /// its round may still win (the holder's release turns the prepared
    /// votes into grants), and won, the stop writes the shard's snapshot.
    @Test func aStoppingTargetAwaitsTheRoundOfAHandOffItTookBefore() {
        var (cluster, now) = Self.heldByNode0()
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        cluster.machines[1].stopTakingLeases()
        #expect(cluster.machines[1].awaitsLeaseRound(now: now), "the transfer round is open")
        #expect(!cluster.machines[2].awaitsLeaseRound(now: now), "a voter opened none")
        cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.deliver(at: now + 100)
        #expect(cluster.holders(shard, at: now + 100) == [1])
        #expect(!cluster.machines[1].awaitsLeaseRound(now: now + 100), "won: nothing to wait for")
    }

    /// Without a release the round lapses with its lease: the stop waits no longer.
    @Test func anUnreleasedHandOffRoundLapsesWithALease() {
        var (cluster, now) = Self.heldByNode0()
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        cluster.machines[1].stopTakingLeases()
        #expect(cluster.machines[1].awaitsLeaseRound(now: now + LeaseCluster.durationMs - 1))
        #expect(!cluster.machines[1].awaitsLeaseRound(now: now + LeaseCluster.durationMs))
    }

    /// Without the release, the prepared votes grant nothing: the target
    /// is elected only once the promises to the holder have run out, and
    /// never while the holder's lease runs.
    @Test func aLostReleaseCostsOnlyTheWaitForThePromises() {
        var (cluster, now) = Self.heldByNode0()
        let heldUntil = now + LeaseCluster.durationMs
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        _ = cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.inFlight.removeAll()
        var firstHolder: (Int, Int64)?
        var at = now + 500
        while at <= now + 30_000 {
            for index in 0..<3 { _ = cluster.tick(index, at: at) }
            cluster.deliver(at: at)
            let holders = cluster.holders(shard, at: at)
            #expect(holders.count <= 1)
            if firstHolder == nil, let holder = holders.first { firstHolder = (holder, at) }
            at += LeaseCluster.tickMs
        }
        #expect(firstHolder.map { $0.1 >= heldUntil } == true, "nobody held before node0's promises could end: \(String(describing: firstHolder))")
    }

    /// The target dies after the voters prepared: the release makes them
    /// promise a dead node, so the shard waits for those promises and is
    /// then won by another voter, never by two at once.
    @Test func aTargetThatDiesBeforeWinningCostsTheWaitForItsPromises() {
        var (cluster, now) = Self.heldByNode0()
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.deliver(at: now + 100, cut: [1])
        #expect(cluster.machines[2].counters.preparedGrantsReleased == 1)
        var firstHolder: (Int, Int64)?
        var at = now + 500
        while at <= now + 40_000 {
            for index in [0, 2] { _ = cluster.tick(index, at: at) }
            cluster.deliver(at: at, cut: [1])
            let holders = cluster.holders(shard, at: at)
            #expect(holders.count <= 1)
            if firstHolder == nil, let holder = holders.first { firstHolder = (holder, at) }
            at += LeaseCluster.tickMs
        }
        #expect(firstHolder.map { $0.0 != 1 && $0.1 >= now + 100 + LeaseCluster.durationMs } == true,
                "another voter won once the promises to node1 could end: \(String(describing: firstHolder))")
    }

    /// A target behind the voters when it asks is prepared, not refused: it
    /// asks while the holder still writes (the new term is persisted before
    /// writes pause), and the holder releases only once the target holds its
    /// every write. Refused, the hand-off waited for term writes after the
    /// freeze. A vote that is not prepared (no promise to the holder) still
    /// refuses a candidate behind it (LeaseTests).
    @Test func aTargetBehindTheVotersIsPreparedAndWinsOnTheRelease() {
        var (cluster, now) = Self.heldByNode0()
        let term = cluster.machines[0].term(ofShard: shard)
        let newer = EntryVersion(term: term, seq: 9)
        for index in [0, 2] { cluster.step(index, .localVersion(shard: shard, version: newer, now: now)) }
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        #expect(cluster.machines[2].counters.grantsPrepared == 1 && cluster.machines[0].counters.grantsPrepared == 1)
        #expect(cluster.machines[2].counters.answersByVerdict[.candidateBehind] == nil)
        #expect(cluster.machines[0].votePrepared(shard, for: cluster.ids[1]))
        #expect(!cluster.machines[2].votePrepared(shard, for: cluster.ids[0]))
        // The flush: the target acknowledged the holder's newest write.
        cluster.step(1, .localVersion(shard: shard, version: newer, now: now + 50))
        cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.deliver(at: now + 100)
        #expect(cluster.holders(shard, at: now + 100) == [1])
        #expect(cluster.machines[1].heldTerm(ofShard: shard, now: now + 100) == term + 1)
    }

    @Test func onlyAHolderWithHalfALeaseLeftHandsOffToAVoterOnce() {
        var (cluster, now) = Self.heldByNode0()
        func refused(_ actions: [LeaseAction], _ text: String) -> Bool {
            actions.contains { if case let .log(_, line) = $0 { line.contains(text) } else { false } }
        }
        #expect(refused(cluster.step(1, .handOff(shard: shard, to: cluster.ids[2], now: now)), "does not hold"))
        #expect(refused(cluster.step(0, .handOff(shard: shard, to: NodeID("node9")!, now: now)), "not a voter"))
        let until = now + LeaseCluster.durationMs
        #expect(refused(cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: until - LeaseCluster.durationMs / 2 + 1)),
                        "half a lease"))
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        #expect(refused(cluster.step(0, .handOff(shard: shard, to: cluster.ids[2], now: now)), "being handed to"))
        // Given up: it renews again, above the voters' new term if it must.
        cluster.deliver(at: now)
        cluster.step(0, .abortHandOff(shard: shard, now: now + 100))
        #expect(cluster.machines[0].handingOff(shard, now: now + 100) == nil)
        var at = now + 500
        var heldThroughout = true
        while at <= now + 10_000 {
            for index in 0..<3 { _ = cluster.tick(index, at: at) }
            cluster.deliver(at: at)
            heldThroughout = heldThroughout && cluster.holders(shard, at: at) == [0]
            at += LeaseCluster.tickMs
        }
        #expect(heldThroughout)
    }

    /// A prepare delayed past the hand-off it started (the target now
    /// holds a newer term) is fenced off, and a release that matches no
    /// prepared vote changes nothing.
    @Test func staleHandOffFramesAreDropped() {
        var (cluster, now) = Self.heldByNode0()
        let prepare = sends(cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now)))
        #expect(prepare.count == 1)
        cluster.deliver(at: now)
        cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.deliver(at: now + 100)
        #expect(cluster.holders(shard, at: now + 100) == [1])
        let beforePrepare = cluster.machines[1].state
        #expect(cluster.step(1, .received(frame: prepare[0].frame, now: now + 200)).isEmpty)
        #expect(cluster.machines[1].state == beforePrepare)
        #expect(cluster.machines[1].counters.staleHandOffs == 1)
        let release = LeaseCodec.encode(LeaseMessage(sender: cluster.ids[0], payload: .handOffRelease(
            [HandOffRelease(shard: 0, term: 7, to: cluster.ids[2], lastVersion: .zero)])),
            parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let beforeRelease = cluster.machines[2].state
        #expect(cluster.step(2, .received(frame: release, now: now + 200)).isEmpty)
        #expect(cluster.machines[2].state == beforeRelease)
        #expect(cluster.machines[2].counters.staleHandOffs == 1)
    }
}

@Suite struct LeaseHandOffCodecTests {
    static let prepare = LeaseMessage(sender: NodeID("node1")!, payload: .handOffPrepare(
        [HandOffPrepare(shard: 0, term: 4), HandOffPrepare(shard: 3, term: 9)]))
    static let release = LeaseMessage(sender: NodeID("node1")!, payload: .handOffRelease(
        [HandOffRelease(shard: 2, term: 4, to: NodeID("node2")!, lastVersion: EntryVersion(term: 4, seq: 77))]))
    static let transferAsk = LeaseMessage(sender: NodeID("node2")!, payload: .requestWithConfig(
        round: 3, life: 5, durationMs: 4000,
        asks: [LeaseAsk(shard: 1, term: 5, lastVersion: .zero, config: ShardConfig(epoch: 1, voters: LeaseConfigTests.nodes(1, 2))!,
                        transfer: true)]))
    static let preparedReply = LeaseMessage(sender: NodeID("node0")!, payload: .replyWithConfig(
        round: 3, life: 5, answers: [LeaseAnswer(shard: 1, term: 5, verdict: .prepared, voterTerm: 5)]))

    func encode(_ message: LeaseMessage) -> [UInt8] { encodeLease(message) }
    func dropReason(_ frame: [UInt8]) -> DropReason? { leaseDropReason(frame) }

    @Test(arguments: [prepare, release, transferAsk, preparedReply]) func roundTrips(_ message: LeaseMessage) {
        let frame = encode(message)
        #expect(LeaseCodec.isLeaseFrame(frame))
        #expect(decodeLease(frame) == message)
    }

    /// `prepared` and the transfer bit exist only in the forms that carry configs.
    @Test func preparedAndTheTransferBitAreMalformedInTheOlderForms() {
        let oldReply = LeaseMessage(sender: NodeID("node0")!, payload: .reply(
            round: 3, life: 5, answers: [LeaseAnswer(shard: 1, term: 5, verdict: .prepared, voterTerm: 5)]))
        #expect(dropReason(encode(oldReply)) == .malformed)
        // The copy byte of a requestWithCopyState ask is the body's last byte.
        let copyState = LeaseMessage(sender: NodeID("node2")!, payload: .requestWithCopyState(
            round: 3, life: 5, durationMs: 4000, asks: [LeaseAsk(shard: 1, term: 5, lastVersion: .zero)]))
        var body = Array(encode(copyState).dropLast(MessageCodec.tagBytes))
        body[body.count - 1] = LeaseAsk.transferBit
        #expect(dropReason(resignedLeaseFrame(body)) == .malformed)
    }

    @Test(arguments: [prepare, release]) func everyDamagedFrameIsRefusedWithoutAStateChange(_ message: LeaseMessage) {
        expectEveryDamagedFrameRefused(message)
    }
}

/// After a hand-off the target renews its lease like any holder, whether
/// the shard's voters come from a config or from the map (the server's
/// shards have no config yet; the leave of a stopping node hands them off).
@Suite struct LeaseHandOffRenewalTests {
    @Test(arguments: [true, false]) func theTargetKeepsItsLeaseLongAfterTheRelease(founded: Bool) {
        var cluster: LeaseCluster
        if founded {
            let config = ShardConfig(epoch: 1, voters: LeaseConfigTests.nodes(0, 1, 2))!
            cluster = LeaseConfigTests.cluster(count: 3, shard: 0, configs: [0: config, 1: config, 2: config])
        } else {
            cluster = LeaseCluster(count: 3)
        }
        let (shard, now) = Self.heldByNode0(&cluster)
        let target = cluster.map.followers(ofShard: shard)[0]
        let targetIndex = cluster.ids.firstIndex(of: target)!
        cluster.step(0, .handOff(shard: shard, to: target, now: now))
        cluster.deliver(at: now)
        cluster.step(0, .release(shard: shard, now: now))
        cluster.deliver(at: now)
        #expect(cluster.holders(shard, at: now) == [targetIndex])
        keepsHolding(&cluster, shard, targetIndex, from: now)
    }

    /// A stopping node lets go of every shard its target caught up on in one
    /// step: one release frame per voter names them all, and the target
    /// holds each at the next term as a one-shard release would give it.
    @Test func shardsReleasedTogetherGoInOneFramePerVoter() {
        var cluster = LeaseCluster(count: 3)
        let (_, now) = Self.heldByNode0(&cluster)
        let held = (0..<Int(LeaseCluster.parameters.numShards)).filter { cluster.machines[0].holdsLease($0, now: now) }
        #expect(held.count >= 2)
        let terms = held.map { cluster.machines[0].term(ofShard: $0) }
        cluster.step(0, .handOffShards(held, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        let released = sends(cluster.step(0, .releaseShards(held, now: now)))
        let frames = released.compactMap { send -> (NodeID, [HandOffRelease])? in
            guard case let .handOffRelease(items)? = decodeLease(send.frame)?.payload else { return nil }
            return (send.to, items)
        }
        #expect(frames.map(\.0).sorted() == [cluster.ids[1], cluster.ids[2]])
        #expect(frames.allSatisfy { $0.1.map { Int($0.shard) } == held && $0.1.allSatisfy { $0.to == cluster.ids[1] } })
        #expect(cluster.machines[0].counters.handOffsReleased == UInt64(held.count))
        cluster.deliver(at: now)
        for (shard, term) in zip(held, terms) {
            #expect(cluster.holders(shard, at: now) == [1])
            #expect(cluster.machines[1].heldTerm(ofShard: shard, now: now) == term + 1)
        }
        keepsHolding(&cluster, held[0], 1, from: now)
    }

    /// A shard node0 is the map's primary of, and the time once it holds it.
    static func heldByNode0(_ cluster: inout LeaseCluster) -> (shard: Int, now: Int64) {
        let shard = (0..<Int(LeaseCluster.parameters.numShards)).first { cluster.map.primary(ofShard: $0) == cluster.ids[0] }!
        var now = LeaseCluster.quietEnd
        while now <= LeaseCluster.quietEnd + 2000 {
            for index in 0..<3 { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now)
            now += LeaseCluster.tickMs
        }
        #expect(cluster.holders(shard, at: now) == [0])
        return (shard, now)
    }

    /// The holder released right after its prepare (its target held every
    /// write, as when a stopping node hands off), and the release reached
    /// node2 before the target's ask did; then the holder leaves (the map drops it, as
    /// when a stopping node says `left`). node2's promise to the holder ends
    /// with the release, so it grants the ask and the target's renewals,
    /// and the target holds on without the holder. Before, node2 kept the
    /// promise: it prepared the ask for a release already gone and refused
    /// the renewals until that promise ran out, and the target's lease ran
    /// out first.
    @Test func aReleaseThatOvertakesTheAskEndsThePromiseToTheHolder() {
        var cluster = LeaseCluster(count: 3)
        let (shard, now) = Self.heldByNode0(&cluster)
        let target = cluster.ids.firstIndex(of: cluster.map.followers(ofShard: shard)[0])!
        let other = 3 - target
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[target], now: now))
        // The prepare and the target's ask; its ask to `other` waits.
        var heldBack: [(from: Int, to: Int, frame: [UInt8])] = []
        while !cluster.inFlight.isEmpty {
            let batch = cluster.inFlight
            cluster.inFlight = []
            for frame in batch {
                if frame.from == target && frame.to == other { heldBack.append(frame) } else { cluster.step(frame.to, .received(frame: frame.frame, now: now)) }
            }
        }
        #expect(heldBack.count == 1)
        cluster.step(0, .release(shard: shard, now: now))
        cluster.deliver(at: now)
        #expect(cluster.machines[other].counters.releasesBeforeAsk == 1)
        cluster.inFlight = heldBack
        cluster.deliver(at: now)
        #expect(cluster.holders(shard, at: now) == [target])
        let without = try! ShardMap(members: [cluster.ids[1], cluster.ids[2]], numShards: Int(LeaseCluster.parameters.numShards),
                                    virtualNodes: Int(LeaseCluster.parameters.virtualNodes), replicationFactor: 3)
        for index in [1, 2] {
            cluster.step(index, .placementChanged(without, now: now))
            cluster.step(index, .membersChanged(alive: [cluster.ids[1], cluster.ids[2]], now: now))
        }
        keepsHolding(&cluster, shard, target, from: now, running: [1, 2])
    }

    /// Both voters restarted since the holder was elected, so their copies
    /// may have holes, and the holder hands the shard off as a stopping node
    /// does (its release right after the prepare, its target holding every
    /// write). The target wins at once. Before, the holder (whole, released)
    /// and the other voter (which had seen the holder's whole claim) refused
    /// the target for its hole, and the shard had no holder until the
    /// stand-backs ran out: between real processes, writes refused for 30 s
    /// and more (FullRestartProcessTests).
    @Test func aTargetThatRestartedIsElectedAtOnceWhenItsHolderReleasesTheShardToIt() {
        var cluster = LeaseCluster(count: 3)
        for index in [1, 2] {
            cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: [:], learner: false, restarted: true, life: 2)
            cluster.start(index, at: 0)
        }
        let (shard, elected) = Self.heldByNode0(&cluster)
        let version = EntryVersion(term: cluster.machines[0].term(ofShard: shard), seq: 7)
        for index in 0..<3 { cluster.step(index, .localVersion(shard: shard, version: version, now: elected)) }
        var now = elected
        // Renewals: the voters hear the holder's whole claim.
        while now <= elected + 1000 {
            for index in 0..<3 { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now)
            now += LeaseCluster.tickMs
        }
        #expect(cluster.holders(shard, at: now) == [0])
        let refusedBefore = (0..<3).map { cluster.machines[$0].counters.holedCandidatesRefused }
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.step(0, .release(shard: shard, now: now))
        cluster.deliver(at: now)
        #expect(cluster.holders(shard, at: now) == [1])
        #expect((0..<3).map { cluster.machines[$0].counters.holedCandidatesRefused } == refusedBefore)
    }

    func keepsHolding(_ cluster: inout LeaseCluster, _ shard: Int, _ targetIndex: Int, from now: Int64, running: [Int] = [0, 1, 2]) {
        var at = now + LeaseCluster.tickMs
        while at <= now + 5 * LeaseCluster.durationMs {
            for index in running { _ = cluster.tick(index, at: at) }
            cluster.deliver(at: at, cut: Set(0..<3).subtracting(running))
            #expect(cluster.holders(shard, at: at) == [targetIndex], "at \(at - now) ms after the release")
            if cluster.holders(shard, at: at) != [targetIndex] { break }
            at += LeaseCluster.tickMs
        }
    }
}
