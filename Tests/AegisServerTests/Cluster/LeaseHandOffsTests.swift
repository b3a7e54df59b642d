@testable import AegisServer
import AegisCluster
import Testing

/// The holder's bookkeeping of its hand-offs (LeaseHandOffs.swift): which
/// freeze a reactor's marker answers, and what ends a hand-off counts.
@Suite struct LeaseHandOffsTests {
    let target = NodeID("node2")!

    @Test func aMarkerCountsOnlyForTheLeaseSetThatFroze() {
        var handOffs = LeaseHandOffs()
        handOffs.start(7, to: target, nowMs: 100)
        // Preparing: a lease set published now does not freeze it.
        #expect(!handOffs.freezes(7))
        handOffs.published(version: 40, nowNs: 500_000)
        #expect(handOffs.running[7]?.frozenInLeases == nil)
        handOffs.freeze(7, nowMs: 101)
        #expect(handOffs.freezes(7) && !handOffs.freezes(8))
        // A marker before the freeze was published, or from an older set
        // (an earlier hand-off of the shard, given up), says nothing.
        handOffs.reactorFroze(7, leasesVersion: 41, nowNs: 500_000)
        #expect(handOffs.running[7]?.reactorFroze == false)
        handOffs.published(version: 42, nowNs: 1_000_000)
        handOffs.reactorFroze(7, leasesVersion: 41, nowNs: 500_000)
        #expect(handOffs.running[7]?.reactorFroze == false)
        handOffs.reactorFroze(7, leasesVersion: 43, nowNs: 1_300_000)
        #expect(handOffs.running[7]?.reactorFroze == true)
        // Later publications keep the set it froze in.
        handOffs.published(version: 44, nowNs: 2_000_000)
        #expect(handOffs.running[7]?.frozenInLeases == 42)
        // The pause splits at the marker that counted.
        handOffs.reactorFroze(7, leasesVersion: 44, nowNs: 1_900_000)
        let pause = handOffs.end(7, .released, nowNs: 2_500_000)?.pause
        #expect(pause?.totalNs == 1_500_000 && pause?.untilFrozeNs == 300_000)
    }

    @Test func onlyAReleaseCountsAPause() {
        var handOffs = LeaseHandOffs()
        handOffs.start(1, to: target, nowMs: 0)
        handOffs.start(2, to: target, nowMs: 0)
        handOffs.start(3, to: target, nowMs: 0)
        for shard in 1...3 { handOffs.freeze(shard, nowMs: 0) }
        handOffs.published(version: 1, nowNs: 0)
        #expect(handOffs.end(1, .released, nowNs: 700_000)?.target == target)  // 0.7 ms
        handOffs.end(2, .aborted, nowNs: 900_000_000)
        handOffs.end(3, .lost, nowNs: 900_000_000)
        #expect(handOffs.end(3, .lost, nowNs: 900_000_000) == nil, "ended once")
        #expect(handOffs.started == 3 && handOffs.running.isEmpty)
        #expect(handOffs.ended == [.released: 1, .aborted: 1, .lost: 1])
        #expect(handOffs.pauseSumNs == 700_000)
        let bucket = LeaseHandOffs.pauseBucketsMs.firstIndex(of: 1)!
        #expect(handOffs.pauseBuckets[bucket] == 1 && handOffs.pauseBuckets.reduce(0, +) == 1)
    }
}
