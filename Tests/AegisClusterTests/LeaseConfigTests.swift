import AegisStore
import Testing
@testable import AegisCluster

/// Leases counted over each shard's persisted replica configuration instead
/// of the map (docs/shard-movement.md, build step 2): what the voters of a
/// config refuse, what askers and voters adopt, and the wire that carries it.
@Suite struct LeaseConfigTests {
    let shard = 0

    static func nodes(_ indices: Int...) -> [NodeID] { indices.map { NodeID("node\($0)")! } }

    static func config(_ epoch: UInt32, _ voters: [NodeID], outgoing: [NodeID]? = nil) -> ShardConfig {
        ShardConfig(epoch: epoch, voters: voters, outgoing: outgoing)!
    }

    /// Every node of `count` persisted with `configs[node]` for `shard`
    /// (term 0, no vote), the others with nothing.
    static func cluster(count: Int, shard: Int, configs: [Int: ShardConfig]) -> LeaseCluster {
        let persisted = (0..<count).map { index -> [Int: PersistedTerm] in
            guard let config = configs[index] else { return [:] }
            return [shard: PersistedTerm(term: 0, votedFor: nil, config: config)]
        }
        return LeaseCluster(count: count, persisted: persisted)
    }

    /// Ticks every node not in `cut` from `from` through `to`, delivering
    /// after each tick, and checks at every step that at most one node
    /// holds the shard and only a voter of `allowed`.
    func run(_ cluster: inout LeaseCluster, from: Int64, to: Int64, cut: Set<Int> = [], allowed: Set<Int>,
             shard: Int = 0) {
        var now = from
        while now <= to {
            for index in cluster.machines.indices where !cut.contains(index) { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now, cut: cut)
            let holders = cluster.holders(shard, at: now)
            #expect(holders.count <= 1, "two holders at \(now): \(holders)")
            #expect(Set(holders).isSubset(of: allowed), "a node outside the config holds at \(now): \(holders)")
            now += LeaseCluster.tickMs
        }
    }

    /// The reply `voter` sends to a one-shard `requestWithConfig` ask.
    func answer(_ cluster: inout LeaseCluster, voter: Int, from requester: Int, term: UInt32,
                config: ShardConfig?, at now: Int64) -> (LeaseMessage?, [LeaseAction]) {
        let ask = LeaseMessage(sender: cluster.ids[requester], payload: .requestWithConfig(
            round: 1, life: 1, durationMs: 1000,
            asks: [LeaseAsk(shard: UInt32(shard), term: term, lastVersion: .zero, config: config)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let actions = cluster.step(voter, .received(frame: frame, now: now))
        return (sends(actions).first.flatMap { decodeLease($0.frame) }, actions)
    }

    /// The case docs/replication.md names as the hole: a node that joins
    /// changes the map's owners, and {node3, x} of the new owners could grant
    /// a lease while the old owners' majority grants another. With a config,
    /// the map does not decide who votes: the newcomer is told the config and
    /// never holds, and the config's own voters elect exactly one holder.
    @Test func aNodeTheMapAddsButTheConfigDoesNotNeverHoldsTheShard() throws {
        // A shard whose owners in the 4-node map include node3.
        let map = try ShardMap(members: Self.nodes(0, 1, 2, 3), numShards: Int(LeaseCluster.parameters.numShards),
                               virtualNodes: Int(LeaseCluster.parameters.virtualNodes), replicationFactor: 3)
        let shard = try #require((0..<map.numShards).first { map.primary(ofShard: $0) == NodeID("node3") },
                                 "node3 is the map's primary of some shard")
        let voters = Self.nodes(0, 1, 2)
        let config = Self.config(1, voters)
        var cluster = Self.cluster(count: 4, shard: shard, configs: [0: config, 1: config, 2: config])
        run(&cluster, from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 30_000, allowed: [0, 1, 2], shard: shard)
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd + 30_000) == [0], "the config's first voter holds it")
        // node3 asked with no config, was answered `config_stale` and took the config.
        #expect(cluster.machines[3].config(ofShard: shard) == config)
        #expect(cluster.log[3].contains { if case .persistTerm(shard, let record) = $0 { record.config == config } else { false } })
        #expect(cluster.machines[0].counters.answersByVerdict[.configStale, default: 0] > 0
            || cluster.machines[1].counters.answersByVerdict[.configStale, default: 0] > 0)
        #expect(!cluster.log[3].contains { if case .leaseAcquired(shard, _, _) = $0 { true } else { false } })
    }

    @Test func aHolderKeepsItsLeaseWhenTheMapDropsItButItsConfigNamesIt() throws {
        let config = Self.config(1, Self.nodes(0, 1, 2))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: config, 1: config, 2: config])
        let start = LeaseCluster.quietEnd
        run(&cluster, from: start, to: start + 2000, allowed: [0])
        #expect(cluster.holders(shard, at: start + 2000) == [0])
        // A map in which node0 owns nothing: it joined a cluster of others.
        let elsewhere = try ShardMap(members: Self.nodes(5, 6, 7), numShards: Int(LeaseCluster.parameters.numShards),
                                     virtualNodes: Int(LeaseCluster.parameters.virtualNodes), replicationFactor: 3)
        let actions = cluster.step(0, .placementChanged(elsewhere, now: start + 2001))
        #expect(!actions.contains(.leaseLost(shard: shard, reason: .notReplica)))
        #expect(cluster.holders(shard, at: start + 2001) == [0])
    }

    @Test func aVoterWithANewerConfigRefusesAnOlderAskWithItsConfig() {
        let newer = Self.config(2, Self.nodes(1, 0, 2))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: newer, 1: newer, 2: Self.config(1, Self.nodes(2, 0, 1))])
        let (reply, _) = answer(&cluster, voter: 0, from: 2, term: 1, config: Self.config(1, Self.nodes(2, 0, 1)),
                                at: LeaseCluster.quietEnd)
        guard case let .replyWithConfig(_, _, answers)? = reply?.payload else {
            Issue.record("no reply with config: \(String(describing: reply))")
            return
        }
        #expect(answers.first?.verdict == .configStale)
        #expect(answers.first?.config == newer)
        #expect(cluster.machines[0].term(ofShard: shard) == 0, "a stale config's ask moves no term and casts no vote")
        // The same ask with no config at all (a node that never had one).
        let (bare, _) = answer(&cluster, voter: 0, from: 2, term: 1, config: nil, at: LeaseCluster.quietEnd)
        #expect(bare?.payload.answers?.first?.verdict == .configStale)
    }

    /// End to end: the stale node campaigns first (it is its config's first
    /// voter), learns the newer config from the refusals, and the newer
    /// config's first voter is elected.
    @Test func anAskerToldItsConfigIsStaleAdoptsTheNewerOneAndPersistsIt() {
        let newer = Self.config(2, Self.nodes(1, 0, 2))
        let older = Self.config(1, Self.nodes(2, 0, 1))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: newer, 1: newer, 2: older])
        run(&cluster, from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 20_000, allowed: [0, 1, 2])
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd + 20_000) == [1])
        #expect(cluster.machines[2].config(ofShard: shard) == newer)
        #expect(cluster.machines[2].counters.configsAdopted == 1)
        let persisted = cluster.log[2].compactMap { if case let .persistTerm(s, record) = $0, s == shard { record } else { nil } }
        #expect(persisted.contains { $0.config == newer })
        // Once adopted, every term it persists keeps the newer config.
        let afterAdopting = persisted.drop { $0.config != newer }
        #expect(afterAdopting.allSatisfy { $0.config == newer })
    }

    @Test func aVoterAdoptsANewerConfigAnAskCarriesBeforeItVotes() {
        let older = Self.config(1, Self.nodes(0, 1, 2))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: older, 1: older, 2: older])
        let newer = Self.config(2, Self.nodes(0, 1, 2))
        let (reply, actions) = answer(&cluster, voter: 1, from: 0, term: 1, config: newer, at: LeaseCluster.quietEnd)
        #expect(reply?.payload.answers?.first?.verdict == .granted)
        #expect(cluster.machines[1].config(ofShard: shard) == newer)
        // The config is on disk with the vote, before the reply.
        let persisted = actions.firstIndex(of: .persistTerm(shard: shard, PersistedTerm(term: 1, votedFor: cluster.ids[0], config: newer)))
        let replied = actions.firstIndex { if case .send = $0 { true } else { false } }
        #expect(persisted != nil && replied != nil && persisted! < replied!)
    }

    /// A newer config that leaves this node out: it votes no more for the
    /// shard, and a lease it holds ends at once.
    @Test func aHolderThatANewerConfigLeavesOutLetsGo() {
        let older = Self.config(1, Self.nodes(0, 1, 2))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: older, 1: older, 2: older])
        let start = LeaseCluster.quietEnd
        run(&cluster, from: start, to: start + 2000, allowed: [0])
        #expect(cluster.holders(shard, at: start + 2000) == [0])
        let without = Self.config(2, Self.nodes(1, 2, 5))
        let (reply, actions) = answer(&cluster, voter: 0, from: 1, term: 9, config: without, at: start + 2001)
        #expect(actions.contains(.leaseLost(shard: shard, reason: .notReplica)))
        #expect(reply?.payload.answers?.first?.verdict == .notReplica)
        #expect(cluster.holders(shard, at: start + 2001).isEmpty)
    }

    /// The older forms cannot say which voters the asker counts: a voter
    /// that has a config grants nothing through them.
    @Test(arguments: [nil, false] as [Bool?]) func anAskInAnOlderFormIsRefusedByAVoterWithAConfig(_ mayHaveHole: Bool?) {
        let config = Self.config(1, Self.nodes(0, 1, 2))
        var cluster = Self.cluster(count: 3, shard: shard, configs: [0: config, 1: config, 2: config])
        let answer = cluster.answerAskedDirectly(of: 1, from: 0, term: 1, at: LeaseCluster.quietEnd, mayHaveHole: mayHaveHole)
        #expect(answer?.verdict == .notReplica)
        #expect(cluster.machines[1].term(ofShard: shard) == 0)
    }

    /// Joint config {0,3,4} with {0,1,2}: grants from 3 and 4 are a majority
    /// of the new set, not of the old one, and elect nobody until 1 or 2 answers.
    @Test func aJointConfigElectsOnlyWithAMajorityOfEachSet() {
        let joint = Self.config(2, Self.nodes(0, 3, 4), outgoing: Self.nodes(0, 1, 2))
        let configs = Dictionary(uniqueKeysWithValues: (0..<5).map { ($0, joint) })
        var cluster = Self.cluster(count: 5, shard: shard, configs: configs)
        let start = LeaseCluster.quietEnd
        run(&cluster, from: start, to: start + 3000, cut: [1, 2], allowed: [])
        #expect(cluster.machines[0].counters.electionsStarted > 0, "node0 campaigned")
        run(&cluster, from: start + 4000, to: start + 30_000, allowed: [0, 1, 2, 3, 4])
        #expect(cluster.holders(shard, at: start + 30_000) == [0])
    }
}

@Suite struct LeaseConfigCodecTests {
    static let joint = ShardConfig(epoch: 7, voters: LeaseConfigTests.nodes(3, 1, 4), outgoing: LeaseConfigTests.nodes(1, 2, 3))!
    static let plain = ShardConfig(epoch: 2, voters: LeaseConfigTests.nodes(1, 2, 3))!

    static let request = LeaseMessage(sender: NodeID("node1")!, payload: .requestWithConfig(
        round: 9, life: 1_767_225_600_000, durationMs: 4000,
        asks: [LeaseAsk(shard: 0, term: 3, lastVersion: EntryVersion(term: 2, seq: 99), mayHaveHole: true, config: joint),
               LeaseAsk(shard: 2, term: 1, lastVersion: .zero, config: nil),
               LeaseAsk(shard: 3, term: 5, lastVersion: .zero, config: plain)]))
    static let reply = LeaseMessage(sender: NodeID("node2")!, payload: .replyWithConfig(
        round: 9, life: 1_767_225_600_000,
        answers: [LeaseAnswer(shard: 0, term: 3, verdict: .granted, voterTerm: 3),
                  LeaseAnswer(shard: 2, term: 1, verdict: .configStale, voterTerm: 4, grantedTerm: 2, config: joint)]))

    func encode(_ message: LeaseMessage) -> [UInt8] { encodeLease(message) }
    func dropReason(_ frame: [UInt8]) -> DropReason? { leaseDropReason(frame) }
    func resigned(_ body: [UInt8]) -> [UInt8] { resignedLeaseFrame(body) }

    @Test(arguments: [request, reply]) func roundTrips(_ message: LeaseMessage) {
        let frame = encode(message)
        #expect(LeaseCodec.isLeaseFrame(frame))
        #expect(decodeLease(frame) == message)
    }

    /// `configStale` exists only with a config, in the reply form that has
    /// room for one; any other verdict carries none.
    @Test func aConfigGoesWithConfigStaleAndOnlyWithIt() {
        func replyFrame(_ answer: LeaseAnswer, withConfig: Bool = true) -> [UInt8] {
            encode(LeaseMessage(sender: NodeID("node2")!, payload: withConfig
                ? .replyWithConfig(round: 1, life: 1, answers: [answer]) : .reply(round: 1, life: 1, answers: [answer])))
        }
        #expect(dropReason(replyFrame(LeaseAnswer(shard: 1, term: 1, verdict: .configStale, voterTerm: 1))) == .malformed,
                "config_stale without the config")
        #expect(dropReason(replyFrame(LeaseAnswer(shard: 1, term: 1, verdict: .granted, voterTerm: 1, config: Self.plain))) == .malformed,
                "a config with a grant")
        #expect(dropReason(replyFrame(LeaseAnswer(shard: 1, term: 1, verdict: .configStale, voterTerm: 1, config: Self.plain),
                                      withConfig: false)) == .malformed, "config_stale in the older reply form")
    }

    /// A config the decoder would have to make invalid (a node twice, no
    /// voters) is malformed, as `ShardConfig.init` refuses it.
    @Test func anInvalidConfigOnTheWireIsMalformed() {
        let twiceNamed = LeaseMessage(sender: NodeID("node1")!, payload: .requestWithConfig(
            round: 1, life: 1, durationMs: 10,
            asks: [LeaseAsk(shard: 1, term: 1, lastVersion: .zero, config: ShardConfig(epoch: 1, voters: LeaseConfigTests.nodes(1, 2))!)]))
        var body = Array(encode(twiceNamed).dropLast(MessageCodec.tagBytes))
        #expect(decodeLease(resigned(body)) == twiceNamed)
        // The ask ends: ... u8 5 "node1" u8 5 "node2" u8 0 (outgoing): make node2 node1.
        #expect(body[body.count - 2] == UInt8(ascii: "2"))
        body[body.count - 2] = UInt8(ascii: "1")
        #expect(dropReason(resigned(body)) == .malformed)
        // Voters count 0 with epoch 1: "u32 epoch, u8 count" sits 14 bytes from the end.
        var empty = Array(encode(twiceNamed).dropLast(MessageCodec.tagBytes))
        #expect(empty[empty.count - 14] == 2)
        empty[empty.count - 14] = 0
        #expect(dropReason(resigned(empty)) == .malformed)
    }

    @Test(arguments: [request, reply]) func everyDamagedFrameIsRefusedWithoutAStateChange(_ message: LeaseMessage) {
        expectEveryDamagedFrameRefused(message)
    }
}

/// The holder's configuration steps (docs/shard-movement.md, build step 3):
/// C_old → joint → C_new, each a term the holder asks for while it keeps
/// its lease, under lost, duplicated and delayed frames.
@Suite struct LeaseConfigStepTests {
    let shard = 0

    enum Trouble: String, CaseIterable, CustomTestStringConvertible {
        case none, lost, duplicated, delayed
        var testDescription: String { rawValue }
    }

    /// 4 nodes; nodes 0-2 founded with {0,1,2} at epoch 1 (node0 first, so
    /// it is elected), node3 with nothing.
    static func founded() -> LeaseCluster {
        let config = ShardConfig(epoch: 1, voters: LeaseConfigTests.nodes(0, 1, 2))!
        return LeaseConfigTests.cluster(count: 4, shard: 0, configs: [0: config, 1: config, 2: config])
    }

    /// One tick of every node, then delivery with `trouble` applied to the
    /// frames to and from node 1 while `troubled`: dropped, delivered twice,
    /// or held back until the next tick. Checks one holder at most, and
    /// only a node in some configuration it has committed.
    func tick(_ cluster: inout LeaseCluster, at now: Int64, trouble: Trouble, troubled: Bool,
              heldBack: inout [(from: Int, to: Int, frame: [UInt8])]) {
        for index in cluster.machines.indices { _ = cluster.tick(index, at: now) }
        var rounds = 0
        var pending = heldBack
        heldBack = []
        pending += cluster.inFlight
        cluster.inFlight = []
        while !pending.isEmpty && rounds < 10 {
            rounds += 1
            for (from, to, frame) in pending {
                let touched = troubled && (from == 1 || to == 1)
                switch (touched, trouble) {
                case (true, .lost): continue
                case (true, .delayed): heldBack.append((from, to, frame)); continue
                case (true, .duplicated): cluster.step(to, .received(frame: frame, now: now)); fallthrough
                default: cluster.step(to, .received(frame: frame, now: now))
                }
            }
            pending = cluster.inFlight
            cluster.inFlight = []
        }
        let holders = cluster.holders(shard, at: now)
        #expect(holders.count <= 1, "two holders at \(now): \(holders)")
    }

    /// `tick` from `from` through `end`, one lease tick apart, with no
    /// trouble; returns the time of the tick after the last.
    func ticks(_ cluster: inout LeaseCluster, from: Int64, through end: Int64,
               heldBack: inout [(from: Int, to: Int, frame: [UInt8])]) -> Int64 {
        var now = from
        while now <= end {
            tick(&cluster, at: now, trouble: .none, troubled: false, heldBack: &heldBack)
            now += LeaseCluster.tickMs
        }
        return now
    }

    func committed(_ cluster: LeaseCluster, _ index: Int) -> [ShardConfig] {
        cluster.log[index].compactMap { if case let .configCommitted(s, config) = $0, s == shard { config } else { nil } }
    }

    @Test(arguments: Trouble.allCases) func aHolderMovesTheVotersThroughTheJointConfigWithoutLettingGo(_ trouble: Trouble) {
        var cluster = Self.founded()
        var heldBack: [(from: Int, to: Int, frame: [UInt8])] = []
        var now = ticks(&cluster, from: LeaseCluster.quietEnd, through: LeaseCluster.quietEnd + 2000, heldBack: &heldBack)
        #expect(cluster.holders(shard, at: now - LeaseCluster.tickMs) == [0])
        let termBefore = cluster.machines[0].term(ofShard: shard)
        let target = LeaseConfigTests.nodes(0, 1, 3)
        cluster.step(0, .proposeConfig(shard: shard, voters: target, now: now))
        #expect(cluster.machines[0].config(ofShard: shard)?.isJoint == true)
        let changeStart = now
        var heldThroughout = true
        while now <= changeStart + 20_000 {
            tick(&cluster, at: now, trouble: trouble, troubled: now < changeStart + 5000, heldBack: &heldBack)
            heldThroughout = heldThroughout && cluster.holders(shard, at: now) == [0]
            now += LeaseCluster.tickMs
        }
        #expect(heldThroughout, "the holder kept its lease through both steps")
        let final = ShardConfig(epoch: 3, voters: target)!
        let joint = ShardConfig(epoch: 2, voters: target, outgoing: LeaseConfigTests.nodes(0, 1, 2))!
        #expect(committed(cluster, 0).suffix(2) == [joint, final])
        #expect(cluster.machines[0].config(ofShard: shard) == final)
        #expect(cluster.machines[0].term(ofShard: shard) >= termBefore + 2)
        // node3 voted in both steps, so it persisted the final config; the
        // final step's asks go to the new voters only, so node2 (out) keeps
        // the joint one and grants node0 nothing more.
        #expect(cluster.machines[3].config(ofShard: shard) == final)
        #expect(cluster.machines[2].config(ofShard: shard).map { $0.epoch >= 2 } == true)
    }

    @Test func aHolderTheNewSetLeavesOutHoldsUntilItReleasesAndANewVoterFinishesTheChange() {
        var cluster = Self.founded()
        var heldBack: [(from: Int, to: Int, frame: [UInt8])] = []
        var now = ticks(&cluster, from: LeaseCluster.quietEnd, through: LeaseCluster.quietEnd + 2000, heldBack: &heldBack)
        let target = LeaseConfigTests.nodes(1, 2, 3)
        cluster.step(0, .proposeConfig(shard: shard, voters: target, now: now))
        let proposedAt = now
        now = ticks(&cluster, from: now, through: proposedAt + 10_000, heldBack: &heldBack)
        // The joint step is committed; node0 keeps the lease (its writes go
        // on reaching the new voters) until it is told to let go.
        #expect(committed(cluster, 0).last?.isJoint == true)
        #expect(cluster.machines[0].mustHandOff(shard, now: now))
        #expect(cluster.holders(shard, at: now) == [0])
        cluster.step(0, .release(shard: shard, now: now))
        #expect(cluster.log[0].contains(.leaseLost(shard: shard, reason: .released)))
        now = ticks(&cluster, from: now, through: proposedAt + 40_000, heldBack: &heldBack)
        #expect(cluster.holders(shard, at: now - LeaseCluster.tickMs) == [1], "the new set's first voter was elected")
        #expect(committed(cluster, 1).last == ShardConfig(epoch: 3, voters: target), "and finished the change")
    }

    /// A leftover proposal of the same epoch on a voter: the holder's step
    /// is refused with it, and proposed again one epoch above.
    @Test func aStepMeetingAnotherConfigOfItsEpochIsProposedAgainAboveIt() {
        var cluster = Self.founded()
        var heldBack: [(from: Int, to: Int, frame: [UInt8])] = []
        var now = ticks(&cluster, from: LeaseCluster.quietEnd, through: LeaseCluster.quietEnd + 2000, heldBack: &heldBack)
        let old = LeaseConfigTests.nodes(0, 1, 2)
        let target = LeaseConfigTests.nodes(0, 1, 3)
        cluster.step(0, .proposeConfig(shard: shard, voters: target, now: now))
        // node1 and node2 learn another epoch-2 step (as from a holder that
        // proposed it and died) before node0's asks reach them.
        let leftover = ShardConfig(epoch: 2, voters: LeaseConfigTests.nodes(1, 2, 3), outgoing: old)!
        for voter in [1, 2] {
            let ask = LeaseMessage(sender: cluster.ids[3], payload: .requestWithConfig(
                round: 1, life: 1, durationMs: 1000, asks: [LeaseAsk(shard: 0, term: 1, lastVersion: .zero, config: leftover)]))
            cluster.step(voter, .received(frame: LeaseCodec.encode(ask, parameters: LeaseCluster.parameters,
                                                                  authenticator: LeaseCluster.authenticator), now: now))
            #expect(cluster.machines[voter].config(ofShard: shard) == leftover)
        }
        let start = now
        now = ticks(&cluster, from: now, through: start + 20_000, heldBack: &heldBack)
        #expect(cluster.machines[0].counters.configSteps == 3, "joint, joint again above the leftover, final")
        let commits = committed(cluster, 0)
        #expect(!commits.contains { $0.epoch == 2 }, "neither epoch-2 config was committed")
        #expect(commits.suffix(2) == [ShardConfig(epoch: 3, voters: target, outgoing: old)!, ShardConfig(epoch: 4, voters: target)!])
        #expect(cluster.holders(shard, at: now - LeaseCluster.tickMs) == [0])
    }

    /// Grants given under one configuration never commit another: a
    /// candidate that adopts a newer config while its round is out does not
    /// count that round's grants.
    @Test func grantsOfARoundAskedUnderAnOlderConfigDoNotCount() {
        var cluster = Self.founded()
        let now = LeaseCluster.quietEnd
        _ = cluster.tick(0, at: now)
        let asks = cluster.inFlight
        cluster.inFlight = []
        #expect(!asks.isEmpty)
        // Before the replies come, node0 adopts epoch 2 from node3's ask.
        let newer = ShardConfig(epoch: 2, voters: LeaseConfigTests.nodes(0, 1, 2), outgoing: LeaseConfigTests.nodes(0, 1, 3))!
        let ask = LeaseMessage(sender: cluster.ids[3], payload: .requestWithConfig(
            round: 1, life: 1, durationMs: 1000, asks: [LeaseAsk(shard: 0, term: 1, lastVersion: .zero, config: newer)]))
        cluster.step(0, .received(frame: LeaseCodec.encode(ask, parameters: LeaseCluster.parameters,
                                                           authenticator: LeaseCluster.authenticator), now: now))
        #expect(cluster.machines[0].config(ofShard: shard) == newer)
        for (_, to, frame) in asks { cluster.step(to, .received(frame: frame, now: now)) }
        cluster.deliver(at: now)
        #expect(cluster.holders(shard, at: now).isEmpty, "grants given under epoch 1 elected nobody under epoch 2")
    }

    @Test func onlyTheHolderOfAFoundedShardProposesAndOneChangeAtATime() {
        var cluster = LeaseCluster()
        let noConfig = cluster.step(0, .proposeConfig(shard: shard, voters: LeaseConfigTests.nodes(0, 1), now: LeaseCluster.quietEnd))
        #expect(noConfig.contains { if case let .log(_, line) = $0 { line.contains("has no configuration") } else { false } })
        cluster = Self.founded()
        let notHolder = cluster.step(1, .proposeConfig(shard: shard, voters: LeaseConfigTests.nodes(1, 3), now: LeaseCluster.quietEnd))
        #expect(notHolder.contains { if case let .log(_, line) = $0 { line.contains("does not hold") } else { false } })
        var heldBack: [(from: Int, to: Int, frame: [UInt8])] = []
        let now = ticks(&cluster, from: LeaseCluster.quietEnd, through: LeaseCluster.quietEnd + 2000, heldBack: &heldBack)
        cluster.step(0, .proposeConfig(shard: shard, voters: LeaseConfigTests.nodes(0, 1, 3), now: now))
        let second = cluster.step(0, .proposeConfig(shard: shard, voters: LeaseConfigTests.nodes(0, 2, 3), now: now))
        #expect(second.contains { if case let .log(_, line) = $0 { line.contains("under way") } else { false } })
        #expect(cluster.machines[0].config(ofShard: shard)?.voters == LeaseConfigTests.nodes(0, 1, 3))
    }
}
