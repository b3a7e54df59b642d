import AegisStore
import Testing
@testable import AegisCluster

/// The primary's bookkeeping of shard streams (issue 12 item 2): one per
/// (shard, follower), a window of slices in flight, slices in order, and
/// every way a stream ends.
@Suite struct ShardStreamsTests {
    static let b = NodeID("b")!
    static let c = NodeID("c")!
    static let start = EntryVersion(term: 1, seq: 500)

    static func streams() -> ShardStreams { ShardStreams(windowSlices: 3, concurrentMax: 2, stallMs: 1_000) }

    @Test func oneStreamPerShardAndFollowerAndAtMostConcurrentMax() {
        var s = Self.streams()
        let first = s.start(shard: 4, follower: Self.b, nowMs: 0)
        #expect(first != nil)
        #expect(s.start(shard: 4, follower: Self.b, nowMs: 0) == nil)
        #expect(s.isStreaming(shard: 4, to: Self.b))
        #expect(!s.isStreaming(shard: 4, to: Self.c))
        #expect(s.start(shard: 4, follower: Self.c, nowMs: 0) != nil)
        #expect(s.start(shard: 5, follower: Self.b, nowMs: 0) == nil, "two run already")
        _ = s.abort { $0.id == first! }
        #expect(s.start(shard: 5, follower: Self.b, nowMs: 0) != nil)
        #expect(s.problems.isEmpty)
    }

    @Test func noMoreThanTheWindowIsInFlightAndAcknowledgementsReopenIt() {
        var s = Self.streams()
        let id = s.start(shard: 1, follower: Self.b, nowMs: 0)!
        #expect(s.grant(id) == 3)
        #expect(s.grant(id) == 0)
        for slice in UInt64(0)..<3 {
            let made1 = s.produced(id, slice: slice, last: false, start: Self.start, bytes: 100, nowMs: 1)
            #expect(made1)
        }
        let made2 = s.produced(id, slice: 3, last: false, start: Self.start, bytes: 100, nowMs: 1)
        #expect(!made2, "not asked for")
        #expect(s.acknowledged(id, slice: 0, from: Self.b, nowMs: 2) == .more)
        #expect(s.grant(id) == 1)
        #expect(s.running[id]!.requested == 4)
        #expect(s.problems.isEmpty)
    }

    @Test func slicesAndAcknowledgementsOutOfOrderOrFromElsewhereAreRefused() {
        var s = Self.streams()
        let id = s.start(shard: 1, follower: Self.b, nowMs: 0)!
        _ = s.grant(id)
        let made3 = s.produced(id, slice: 1, last: false, start: Self.start, bytes: 1, nowMs: 0)
        #expect(!made3, "slice 0 first")
        let made4 = s.produced(id, slice: 0, last: false, start: Self.start, bytes: 1, nowMs: 0)
        #expect(made4)
        let made5 = s.produced(id, slice: 1, last: false, start: EntryVersion(term: 1, seq: 501), bytes: 1, nowMs: 0)
        #expect(!made5,
                "one walk, one start")
        let made6 = s.produced(id + 1, slice: 0, last: false, start: Self.start, bytes: 1, nowMs: 0)
        #expect(!made6, "no such stream")
        #expect(s.acknowledged(id, slice: 0, from: Self.c, nowMs: 0) == .refused, "not its follower")
        #expect(s.acknowledged(id, slice: 1, from: Self.b, nowMs: 0) == .refused, "never produced")
        #expect(s.acknowledged(id, slice: 0, from: Self.b, nowMs: 0) == .more)
        #expect(s.acknowledged(id, slice: 0, from: Self.b, nowMs: 0) == .refused, "twice")
        #expect(s.problems.isEmpty)
    }

    @Test func theLastSliceAcknowledgedFinishesTheStreamWithItsStart() {
        var s = Self.streams()
        let id = s.start(shard: 7, follower: Self.c, nowMs: 10)!
        #expect(s.grant(id) == 3)
        let made7 = s.produced(id, slice: 0, last: false, start: Self.start, bytes: 64, nowMs: 11)
        #expect(made7)
        let made8 = s.produced(id, slice: 1, last: true, start: Self.start, bytes: 36, nowMs: 12)
        #expect(made8)
        #expect(s.grant(id) == 0, "nothing after the last slice")
        #expect(s.acknowledged(id, slice: 0, from: Self.c, nowMs: 13) == .more)
        guard case .finished(let stream) = s.acknowledged(id, slice: 1, from: Self.c, nowMs: 14) else {
            Issue.record("the stream did not finish")
            return
        }
        #expect(stream.shard == 7 && stream.follower == Self.c && stream.start == Self.start && stream.bytes == 100)
        #expect(s.running.isEmpty)
        #expect(s.start(shard: 7, follower: Self.c, nowMs: 15) != nil, "a later stream may follow")
    }

    @Test func aStreamWithoutProgressIsGivenUpAndAFollowerLeavingEndsItsStreams() {
        var s = Self.streams()
        let quiet = s.start(shard: 1, follower: Self.b, nowMs: 0)!
        let busy = s.start(shard: 2, follower: Self.c, nowMs: 0)!
        _ = s.grant(busy)
        let made9 = s.produced(busy, slice: 0, last: false, start: Self.start, bytes: 1, nowMs: 900)
        #expect(made9)
        #expect(s.abortStalled(nowMs: 999).isEmpty)
        #expect(s.abortStalled(nowMs: 1_000).map(\.id) == [quiet])
        #expect(s.abort { $0.follower == Self.c }.map(\.id) == [busy])
        #expect(s.running.isEmpty)
        #expect(s.acknowledged(busy, slice: 0, from: Self.c, nowMs: 1_001) == .refused, "an aborted stream's slice")
    }

    @Test func streamedSetsTheFollowerToTheStartAndReplicationGoesOnFromThere() {
        var p = ReplicationProgress(followers: [Self.b, Self.c])
        for seq in UInt64(1)...600 { p.wrote(EntryVersion(term: 1, seq: seq)) }
        p.sent(EntryVersion(term: 1, seq: 600), to: Self.c)
        #expect(p.acknowledge(EntryVersion(term: 1, seq: 600), from: Self.c) == .advanced)
        p.streamed(Self.start, to: Self.b)
        #expect(p.sent[0] == Self.start && p.acknowledged[0] == Self.start)
        #expect(p.lagRecords(Self.b) == 100)
        #expect(p.problems.isEmpty)
        // A start above what this bookkeeping saw written moves written up to it.
        let later = EntryVersion(term: 1, seq: 700)
        p.streamed(later, to: Self.b)
        #expect(p.written == later && p.sent[0] == later && p.acknowledged[0] == later)
        #expect(p.problems.isEmpty)
    }
}
