import AegisStore
import Testing
@testable import AegisCluster

/// What a voter knows of its holder's copy: the version the holder claimed
/// in the renewal the voter last granted (`promisedHolderClaim`), which a
/// restarted follower waits to reach before it says it serves.
@Suite struct LeaseHolderClaimTests {
    let shard = 0

    @Test func aVoterKnowsTheClaimOfTheRenewalItGrantedWhileItsPromiseRuns() {
        var (cluster, now) = LeaseHandOffTests.heldByNode0()
        let holder = cluster.ids[0]
        let written = EntryVersion(term: 1, seq: 42)
        cluster.step(0, .localVersion(shard: shard, version: written, now: now))
        // Until the holder renews, the voters know its older claim.
        #expect(cluster.machines[1].promisedHolderClaim(shard, now: now).map(\.claim) != written)
        now += LeaseCluster.tickMs
        for index in 0..<3 { _ = cluster.tick(index, at: now) }
        cluster.deliver(at: now)
        for voter in [1, 2] {
            let known = cluster.machines[voter].promisedHolderClaim(shard, now: now)
            #expect(known?.holder == holder && known?.claim == written, "node\(voter) knows \(String(describing: known))")
        }
        // The holder promised the shard to itself: it has no holder to catch up with.
        #expect(cluster.machines[0].promisedHolderClaim(shard, now: now) == nil)
        // With no renewal the promise runs out, and the claim with it.
        let later = now + LeaseCluster.durationMs + LeaseCluster.margin + 1
        #expect(cluster.machines[1].promisedHolderClaim(shard, now: later) == nil)
    }

    @Test func theTargetOfAHandOffIsTheHolderWhoseClaimCounts() {
        var (cluster, now) = LeaseHandOffTests.heldByNode0()
        let written = EntryVersion(term: 1, seq: 7)
        for index in 0..<3 { cluster.step(index, .localVersion(shard: shard, version: written, now: now)) }
        cluster.step(0, .handOff(shard: shard, to: cluster.ids[1], now: now))
        cluster.deliver(at: now)
        cluster.step(0, .release(shard: shard, now: now + 100))
        cluster.deliver(at: now + 100)
        #expect(cluster.holders(shard, at: now + 100) == [1])
        let known = cluster.machines[2].promisedHolderClaim(shard, now: now + 100)
        #expect(known?.holder == cluster.ids[1] && known?.claim == written, "\(String(describing: known))")
    }
}
