@testable import AegisServer
import AegisStore
import Testing

/// When a follower reminds its holder that it lacks writes (FollowerChains).
@Suite struct FollowerChainsTests {
    let second = FollowerChains.quietNs
    let claim = EntryVersion(term: 2, seq: 10)

    /// `shouldRemind` outside `#expect`, whose expansion takes its operands immutably.
    func remind(_ chains: inout FollowerChains, shard: Int, claim: EntryVersion, nowNs: Int64) -> Bool {
        chains.shouldRemind(shard: shard, claim: claim, nowNs: nowNs)
    }

    @Test func aFollowerBehindTheClaimRemindsOnceASecondWhileNothingComes() {
        var chains = FollowerChains(shardCount: 4)
        // A restart: nothing acknowledged in this life, so the first review reminds.
        #expect(remind(&chains, shard: 1, claim: claim, nowNs: 5 * second))
        #expect(!remind(&chains, shard: 1, claim: claim, nowNs: 5 * second + second / 2))
        #expect(remind(&chains, shard: 1, claim: claim, nowNs: 6 * second))
        #expect(chains.reminders == 2)
        // Records arriving put the next reminder off by a second.
        chains.reactorAcknowledged(shard: 1, EntryVersion(term: 2, seq: 4), nowNs: 6 * second + 10)
        #expect(!remind(&chains, shard: 1, claim: claim, nowNs: 7 * second))
        #expect(remind(&chains, shard: 1, claim: claim, nowNs: 7 * second + 10))
        // Holding the claim, or more, it reminds nobody.
        chains.reactorAcknowledged(shard: 1, claim, nowNs: 8 * second)
        #expect(!remind(&chains, shard: 1, claim: claim, nowNs: 20 * second))
        #expect(chains.acknowledged[1] == claim)
    }

    @Test func aStreamHoldsOffRemindersAndItsLastSliceSetsTheChain() {
        var chains = FollowerChains(shardCount: 4)
        chains.streamSliceApplied(shard: 2, completedAt: nil, nowNs: 3 * second)
        #expect(!remind(&chains, shard: 2, claim: claim, nowNs: 3 * second + second / 2))
        #expect(chains.acknowledged[2] == .zero)
        chains.streamSliceApplied(shard: 2, completedAt: claim, nowNs: 4 * second)
        #expect(chains.acknowledged[2] == claim)
        #expect(!remind(&chains, shard: 2, claim: claim, nowNs: 9 * second))
        // A stream that replaced a copy: its chain starts lower again.
        chains.reactorAcknowledged(shard: 2, .zero, nowNs: 10 * second)
        #expect(chains.acknowledged[2] == .zero)
        // Shards outside the table are ignored.
        chains.reactorAcknowledged(shard: 9, claim, nowNs: 10 * second)
        #expect(!remind(&chains, shard: 9, claim: claim, nowNs: 20 * second))
    }
}
