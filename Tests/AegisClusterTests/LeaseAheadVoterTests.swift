import AegisStore
import Testing
@testable import AegisCluster

/// A replica whose copy is newer than the holder's, and whole: the holder
/// won while that replica was away (after a full cluster recovery, the
/// shard's last holder started last), and it lets the lease go to it.
@Suite struct LeaseAheadVoterTests {
    let shard = 0

    /// The holder won without `ahead`, which then comes with a newer copy.
    func heldWhileTheNewerReplicaWasAway() -> (cluster: LeaseCluster, holder: Int, ahead: Int, now: Int64) {
        var cluster = LeaseCluster(count: 3)
        let holder = cluster.primary(shard)
        let ahead = cluster.ids.firstIndex(of: cluster.map.followers(ofShard: shard)[0])!
        var now = LeaseCluster.quietEnd
        cluster.run(from: now, to: now + 3000, cut: [ahead])
        now += 4000
        #expect(cluster.holders(shard, at: now) == [holder])
        cluster.step(holder, .localVersion(shard: shard, version: EntryVersion(term: 1, seq: 5), now: now))
        cluster.step(ahead, .localVersion(shard: shard, version: EntryVersion(term: 1, seq: 9), now: now))
        return (cluster, holder, ahead, now)
    }

    /// Before, the holder kept the lease with the third replica's grants,
    /// and the newer replica refused each renewal as behind its copy, then
    /// campaigned above it: term 14 after a minute, and the newer replica
    /// never granted a holder (a node in that state never says ok on /health).
    @Test func theNewerWholeReplicaWinsAndEveryReplicaGrantsItsRenewals() {
        var (cluster, holder, ahead, now) = heldWhileTheNewerReplicaWasAway()
        cluster.run(from: now, to: now + 30_000)
        now += 30_000
        #expect(cluster.holders(shard, at: now) == [ahead])
        let lost = cluster.log[holder].contains { $0 == .leaseLost(shard: shard, reason: .newerWholeCopy(cluster.ids[ahead])) }
        #expect(lost)
        let settledTerm = cluster.machines[ahead].term(ofShard: shard)
        cluster.run(from: now + 1000, to: now + 30_000)
        now += 30_000
        #expect(cluster.holders(shard, at: now) == [ahead])
        for index in cluster.machines.indices {
            #expect(cluster.machines[index].term(ofShard: shard) == settledTerm, "node\(index): terms moved on")
            if index != ahead {
                #expect(cluster.machines[index].promisedHolderClaim(shard, now: now)?.holder == cluster.ids[ahead])
            }
        }
    }

    /// A newer copy that may have a hole does not take the lease: the
    /// whole copy is preferred (`refusesHoledCandidate`), and the holder's
    /// own writes may be in the hole.
    @Test func aNewerCopyThatMayHaveAHoleDoesNotTakeTheLease() {
        var (cluster, holder, ahead, now) = heldWhileTheNewerReplicaWasAway()
        let term = cluster.machines[holder].term(ofShard: shard) + 1
        let newer = EntryVersion(term: 1, seq: 9)
        let holed = cluster.answerAskedDirectly(of: holder, from: ahead, term: term, at: now, lastVersion: newer,
                                                mayHaveHole: true, withConfig: true)
        #expect(holed?.verdict == .leaseHeld)
        #expect(cluster.holders(shard, at: now) == [holder])
        // The same claim, whole: the holder lets go and grants it.
        now += 10
        let whole = cluster.answerAskedDirectly(of: holder, from: ahead, term: term, at: now, lastVersion: newer,
                                                mayHaveHole: false, withConfig: true)
        #expect(whole?.verdict == .granted)
        #expect(cluster.holders(shard, at: now).isEmpty)
    }

    /// Not to a whole copy at or below its own: that one lacks nothing.
    @Test func aWholeCopyNoNewerThanTheHoldersDoesNotTakeTheLease() {
        var (cluster, holder, ahead, now) = heldWhileTheNewerReplicaWasAway()
        let term = cluster.machines[holder].term(ofShard: shard) + 1
        let answer = cluster.answerAskedDirectly(of: holder, from: ahead, term: term, at: now,
                                                 lastVersion: EntryVersion(term: 1, seq: 5), mayHaveHole: false,
                                                 withConfig: true)
        #expect(answer?.verdict == .leaseHeld)
        #expect(cluster.holders(shard, at: now) == [holder])
    }
}
