import AegisStore
import Testing
@testable import AegisCluster

/// A node that starts with an empty data_dir is blank for every shard
/// (`ShardLease.blank`): a first start and a data_dir removed whole look the
/// same, so its grants count toward a new lease only beside a majority of
/// other grants or where every voter granted, until a complete copy of the
/// shard reaches it or it wins it.
@Suite struct LeaseBlankTests {
    let shard = 0

    /// Restarts `index` as a node whose data_dir was removed whole: no
    /// terms, nothing held, a new process life, blank.
    func wipe(_ index: Int, in cluster: inout LeaseCluster, at now: Int64) {
        cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: [:], learner: false, blank: true, life: 2)
        cluster.start(index, at: now)
    }

    /// The preferred replica wins the shard and writes 40 records every
    /// replica holds; then the two replicas other than `keeper` lose their
    /// data_dir whole and start again at `wipedAt`. `logSinceWipe`: each
    /// wiped node's action count before its wipe (`LeaseCluster.persisted`).
    func twoWipedAfterWrites() -> (cluster: LeaseCluster, primary: Int, keeper: Int, wiped: [Int], wipedAt: Int64,
                                   version: EntryVersion, logSinceWipe: [Int]) {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        cluster.run(from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 2000)
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd + 2000) == [primary])
        let version = EntryVersion(term: 1, seq: 40)
        for index in cluster.machines.indices {
            cluster.step(index, .localVersion(shard: shard, version: version, now: LeaseCluster.quietEnd + 2000))
        }
        let keeper = (primary + 1) % 3
        let wiped = cluster.machines.indices.filter { $0 != keeper }
        let wipedAt = LeaseCluster.quietEnd + 3000
        let logSinceWipe = wiped.map { cluster.log[$0].count }
        for index in wiped { wipe(index, in: &cluster, at: wipedAt) }
        return (cluster, primary, keeper, wiped, wipedAt, version, logSinceWipe)
    }

    /// The holder writes 40 records every replica holds, then two of the
    /// three replicas lose their data_dir whole and start again while the
    /// one that kept the writes is cut off (`chaos/run --nodes 5 --seed
    /// 112`: the two elected each other, and the holder streamed its empty
    /// copy over the writes once the third was back). Blank, they cannot
    /// form a majority without it; back, it wins with their grants.
    @Test func twoWipedReplicasDoNotElectEachOtherWhileTheOneHoldingTheWritesIsAway() {
        var (cluster, primary, keeper, wiped, wipedAt, version, _) = twoWipedAfterWrites()
        #expect(wiped.allSatisfy { cluster.machines[$0].isBlank(shard) })
        let healAt = wipedAt + 30_000
        cluster.run(from: wipedAt, to: healAt, cut: [keeper])
        #expect(cluster.holders(shard, at: healAt).isEmpty, "two blank replicas elected one of them")
        #expect(cluster.machines[primary].counters.electionsStarted > 0, "the wiped preferred replica campaigned")
        cluster.run(from: healAt + 1000, to: healAt + 40_000)
        #expect(cluster.holders(shard, at: healAt + 40_000) == [keeper])
        #expect(cluster.machines[keeper].state.shards[shard].lastVersion == version)
        // The holder's stream of the shard ends the blank state.
        for index in wiped {
            cluster.step(index, .copyComplete(shard: shard, now: healAt + 40_000))
            #expect(!cluster.machines[index].isBlank(shard))
        }
    }

    /// As above, but both wiped replicas are killed and started again before
    /// any copy reached them. They persisted terms in their blank life, so
    /// this start is a restart; taken for ordinary restarted voters, their
    /// copies empty, they voted on versions and elected each other once the
    /// stand-back ran out. The shards they were blank for come back blank
    /// (`stillBlank`, the server's `lease-terms.blank`).
    @Test func wipedReplicasRestartedBeforeTheRefillStayBlank() {
        var (cluster, _, keeper, wiped, wipedAt, _, logSinceWipe) = twoWipedAfterWrites()
        let restartAt = wipedAt + 15_000
        cluster.run(from: wipedAt, to: restartAt, cut: [keeper])
        #expect(cluster.holders(shard, at: restartAt).isEmpty)
        for (position, index) in wiped.enumerated() {
            let terms = cluster.persisted(by: index, since: logSinceWipe[position])
            #expect(!terms.isEmpty, "\(cluster.ids[index]) persisted terms in its blank life")
            cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: terms, learner: false, restarted: true,
                                                           stillBlank: cluster.machines[index].blankShards, life: 3)
            cluster.start(index, at: restartAt)
            let blankAgain = cluster.machines[index].isBlank(shard)
            #expect(blankAgain, "\(cluster.ids[index]) is blank again after its restart")
        }
        let healAt = restartAt + 70_000
        cluster.run(from: restartAt, to: healAt, cut: [keeper])
        #expect(cluster.holders(shard, at: healAt).isEmpty, "two replicas with nothing elected one of them")
        cluster.run(from: healAt + 1000, to: healAt + 40_000)
        #expect(cluster.holders(shard, at: healAt + 40_000) == [keeper])
    }

    /// On a cluster's first start every node is blank: the preferred replica
    /// wins once every replica grants, and not while one is cut off, even
    /// once membership holds it gone (it may be the holder of a term a
    /// blank voter granted in an earlier life).
    @Test func aFirstStartElectsWithEveryReplicasGrant() {
        var cluster = LeaseCluster(blank: [0, 1, 2])
        let primary = cluster.primary(shard)
        let away = (primary + 2) % 3
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 20_000, cut: [away])
        #expect(cluster.holders(shard, at: start + 20_000).isEmpty)
        let declaredGone = start + 21_000
        for index in cluster.machines.indices where index != away {
            cluster.step(index, .membersChanged(alive: cluster.ids.filter { $0 != cluster.ids[away] }, now: declaredGone))
        }
        cluster.run(from: declaredGone, to: declaredGone + 20_000, cut: [away])
        #expect(cluster.holders(shard, at: declaredGone + 20_000).isEmpty)
        let back = declaredGone + 21_000
        for index in cluster.machines.indices {
            cluster.step(index, .membersChanged(alive: cluster.ids, now: back))
        }
        cluster.run(from: back, to: back + 30_000)
        let holders = cluster.holders(shard, at: back + 30_000)
        #expect(holders.count == 1)
        if let holder = holders.first {
            #expect(!cluster.machines[holder].isBlank(shard), "a win ends the winner's blank state")
            #expect(cluster.machines.indices.filter { $0 != holder }.allSatisfy { cluster.machines[$0].isBlank(shard) },
                    "the followers stay blank until the holder's stream reaches them")
        }
    }

    /// A whole voter refuses a candidate whose copy may have a hole while
    /// the other live replicas can elect one of themselves; a replica whose
    /// last grant was blank cannot make that majority with it, so the voter
    /// decides on versions instead of leaving the shard with no holder
    /// (`aegiskv-sim --seed 9600991 --wipes-look-new`).
    @Test func aWholeVoterDoesNotCountABlankReplicaAmongThoseThatCanElectWithoutTheHoledCandidate() {
        var cluster = LeaseCluster(blank: [2])
        let claim = EntryVersion(term: 2, seq: 28)
        cluster.step(1, .localVersion(shard: shard, version: claim, now: 0))
        let at = LeaseCluster.quietEnd + 10
        let holed = EntryVersion(term: 2, seq: 29)
        #expect(cluster.answerAskedDirectly(of: 1, from: 0, term: 3, at: at, lastVersion: holed, mayHaveHole: true)?.verdict
                == .candidateBehind, "node2 and this voter could elect this voter")
        // This voter campaigns; node2 answers blank.
        _ = cluster.tick(1, at: at + 100)
        cluster.deliver(at: at + 100, cut: [0])
        #expect(cluster.machines[1].state.shards[shard].blankPeers == [cluster.ids[2]])
        #expect(cluster.holders(shard, at: at + 100).isEmpty, "a blank grant does not make its majority")
        #expect(cluster.answerAskedDirectly(of: 1, from: 0, term: 9, at: at + 200, lastVersion: holed, mayHaveHole: true)?.verdict
                == .granted, "decided on versions: the holed candidate claims more")
    }

    /// A holder keeps its lease on a blank voter's grants: a replica wiped
    /// and started again, the third cut off, the lease stays. The blank
    /// voter's first grant to the holder is blank; the holder's next asks
    /// are renewals of the term it voted for in this life, granted in full.
    @Test func aBlankVotersGrantsRenewAHolderThatWonItsTerm() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        cluster.run(from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 2000)
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd + 2000) == [primary])
        let blankVoter = (primary + 1) % 3
        let away = (primary + 2) % 3
        let wipedAt = LeaseCluster.quietEnd + 3000
        wipe(blankVoter, in: &cluster, at: wipedAt)
        // The third replica is cut off while the wiped one is still quiet,
        // so the holder's next renewals count the blank grant or nothing.
        let quietOver = wipedAt + LeaseCluster.quietEnd
        cluster.run(from: wipedAt, to: quietOver - 1000)
        cluster.run(from: quietOver, to: quietOver + 4 * LeaseCluster.durationMs, cut: [away])
        #expect(cluster.holders(shard, at: quietOver + 4 * LeaseCluster.durationMs) == [primary])
        #expect(cluster.machines[blankVoter].counters.answersByVerdict[.grantedBlank, default: 0] > 0)
        #expect(cluster.machines[blankVoter].isBlank(shard))
    }

    /// A blank follower's copy is complete once the chain it applied reaches
    /// the claim of the holder whose renewal it granted; a candidate's claim
    /// is no holder's and completes nothing.
    @Test func aBlankFollowersCopyIsCompleteWhenItsChainReachesARenewingHoldersClaim() {
        var cluster = LeaseCluster(blank: [0, 1, 2])
        let primary = cluster.primary(shard)
        let follower = (primary + 1) % 3
        let start = LeaseCluster.quietEnd
        _ = cluster.tick(primary, at: start)
        cluster.deliver(at: start)
        #expect(cluster.holders(shard, at: start) == [primary])
        #expect(!cluster.machines[follower].blankCopyIsComplete(shard, acknowledged: .zero, now: start),
                "a grant to a candidate is no holder's claim")
        let written = EntryVersion(term: 1, seq: 5)
        cluster.step(primary, .localVersion(shard: shard, version: written, now: start + 500))
        _ = cluster.tick(primary, at: start + 1000)
        cluster.deliver(at: start + 1000)
        let machine = cluster.machines[follower]
        #expect(!machine.blankCopyIsComplete(shard, acknowledged: EntryVersion(term: 1, seq: 4), now: start + 1000))
        #expect(machine.blankCopyIsComplete(shard, acknowledged: written, now: start + 1000))
    }

    /// The answers a blank voter gives: `grantedBlank` in the form that can
    /// carry it, a learner's refusal in the older forms, `granted` once a
    /// complete copy arrived. The grant is persisted like any vote.
    @Test func aBlankVoterSaysSoUntilACompleteCopyArrives() {
        var cluster = LeaseCluster(blank: [0, 1, 2])
        let now = LeaseCluster.quietEnd + 10
        #expect(cluster.verdictAskedDirectly(of: 1, from: 0, term: 1, at: now) == .emptyLearner)
        #expect(cluster.answerAskedDirectly(of: 1, from: 0, term: 1, at: now, mayHaveHole: false)?.verdict == .emptyLearner)
        #expect(cluster.machines[1].term(ofShard: shard) == 0, "a refusal persists no vote")
        #expect(cluster.answerAskedDirectly(of: 1, from: 0, term: 1, at: now, withConfig: true)?.verdict == .grantedBlank)
        #expect(cluster.log[1].contains(.persistTerm(shard: shard, PersistedTerm(term: 1, votedFor: cluster.ids[0]))))
        cluster.step(2, .copyComplete(shard: shard, now: now))
        #expect(cluster.answerAskedDirectly(of: 2, from: 0, term: 1, at: now, withConfig: true)?.verdict == .granted)
    }

    @Test func theBlankGrantVerdictTravelsOnlyInTheReplyThatCarriesConfigs() {
        let answer = LeaseAnswer(shard: 1, term: 3, verdict: .grantedBlank, voterTerm: 3)
        let withConfig = LeaseMessage(sender: NodeID("node1")!, payload: .replyWithConfig(round: 2, life: 5, answers: [answer]))
        #expect(decodeLease(encodeLease(withConfig)) == withConfig)
        let old = LeaseMessage(sender: NodeID("node1")!, payload: .reply(round: 2, life: 5, answers: [answer]))
        #expect(leaseDropReason(encodeLease(old)) == .malformed)
    }
}
