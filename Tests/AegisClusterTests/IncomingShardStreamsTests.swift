import Testing
@testable import AegisCluster

/// A follower's view of the shard streams it receives (issue 13's move
/// observability): one per shard, counted as it arrives and as its reactor
/// applies it, and every way one ends.
@Suite struct IncomingShardStreamsTests {
    @Test func aStreamStartsAtSliceZeroAndEndsWhenItsLastSliceIsApplied() {
        var streams = IncomingShardStreams(stallMs: 1_000)
        streams.sliceArrived(shard: 7, from: "node1", id: 3, number: 0, bytes: 100, nowMs: 10)
        streams.sliceArrived(shard: 7, from: "node1", id: 3, number: 1, bytes: 50, nowMs: 20)
        #expect(streams.running[7]?.slicesArrived == 2)
        #expect(streams.sliceApplied(shard: 7, last: false, nowMs: 30) == nil)
        let done = streams.sliceApplied(shard: 7, last: true, nowMs: 40)
        #expect(done?.bytes == 150)
        #expect(done?.slicesApplied == 2)
        #expect(done?.startedMs == 10)
        #expect(done?.from == "node1")
        #expect(streams.running.isEmpty)
        #expect(streams.finished == 1)
        #expect(streams.bytes == 150)
        #expect(streams.problems.isEmpty)
    }

    @Test func slicesOfAnUnknownStreamCountAsBytesOnlyAndNothingIsAppliedBeyondWhatArrived() {
        var streams = IncomingShardStreams(stallMs: 1_000)
        streams.sliceArrived(shard: 2, from: "node1", id: 9, number: 4, bytes: 70, nowMs: 0)
        #expect(streams.running.isEmpty, "slice 0 was not seen here")
        #expect(streams.bytes == 70)
        #expect(streams.sliceApplied(shard: 2, last: true, nowMs: 1) == nil)
        streams.sliceArrived(shard: 2, from: "node1", id: 9, number: 0, bytes: 10, nowMs: 2)
        #expect(streams.sliceApplied(shard: 2, last: false, nowMs: 3) == nil)
        #expect(streams.sliceApplied(shard: 2, last: true, nowMs: 4) == nil, "one slice arrived, one applied already")
        #expect(streams.running[2]?.slicesApplied == 1)
        streams.sliceArrived(shard: 2, from: "node2", id: 9, number: 1, bytes: 10, nowMs: 5)
        #expect(streams.running[2]?.slicesArrived == 1, "another sender's slice is not this stream's")
        #expect(streams.finished == 0)
        #expect(streams.problems.isEmpty)
    }

    @Test func aNewSliceZeroReplacesTheRunningStreamAndAStalledOneIsDropped() {
        var streams = IncomingShardStreams(stallMs: 1_000)
        streams.sliceArrived(shard: 1, from: "node1", id: 1, number: 0, bytes: 10, nowMs: 0)
        streams.sliceArrived(shard: 1, from: "node2", id: 5, number: 0, bytes: 20, nowMs: 100)
        #expect(streams.abandoned == 1)
        #expect(streams.running[1]?.from == "node2")
        #expect(streams.running[1]?.bytes == 20)
        streams.sliceArrived(shard: 4, from: "node1", id: 2, number: 0, bytes: 10, nowMs: 600)
        #expect(streams.expire(nowMs: 1_099).isEmpty)
        let gone = streams.expire(nowMs: 1_100)
        #expect(gone.map(\.shard) == [1])
        #expect(streams.abandoned == 2)
        #expect(streams.running.keys.sorted() == [4])
        #expect(streams.problems.isEmpty)
    }

    @Test func ratesAreBytesOverTimeAndZeroForNoTime() {
        #expect(TransferRate.bytesPerSecond(5_000_000, ms: 2_000) == 2_500_000)
        #expect(TransferRate.bytesPerSecond(100, ms: 0) == 0)
        #expect(TransferRate.megabytesPerSecondText(2_960_000, ms: 1_000) == "3.0")
        #expect(TransferRate.megabytesPerSecondText(12_340_000, ms: 1_000) == "12.3")
        #expect(TransferRate.megabytesPerSecondText(0, ms: 0) == "0.0")
    }
}
