@testable import AegisServer
import Testing

/// The catch-up report of a node (issue 13: a refill shows shards done of
/// total, bytes and rate in a log line and in /stats).
@Suite struct CatchUpProgressTests {
    static func standing(replicated: Int = 256, behind: Int = 0, withoutHolder: Int = 0) -> ReplicaStanding {
        var standing = ReplicaStanding(applies: true, reviewed: true)
        standing.replicated = replicated
        standing.behind = behind
        standing.withoutHolder = withoutHolder
        return standing
    }

    @Test func aStartOutOfStepReportsEveryFiveSecondsFromTheStartAndSumsUpAtTheEnd() {
        var progress = CatchUpProgress(nodeStartMs: 1_000)
        #expect(progress.review(Self.standing(withoutHolder: 256), bytesReceived: 0, nowMs: 1_200).isEmpty,
                "the first review starts the period at the node's start, silently")
        #expect(progress.snapshot(bytesReceived: 0, nowMs: 1_200) == CatchUpSnapshot(running: true, bytes: 0, ms: 200))
        #expect(progress.review(Self.standing(behind: 100), bytesReceived: 4_000_000, nowMs: 5_900).isEmpty)
        let report = progress.review(Self.standing(behind: 56), bytesReceived: 10_000_000, nowMs: 6_000)
        #expect(report.count == 1)
        #expect(report.first?.message.hasPrefix("cluster: catching up") == true)
        #expect(report.first?.metadata["caught_up"] == "200")
        #expect(report.first?.metadata["shards"] == "256")
        #expect(report.first?.metadata["bytes_received"] == "10000000")
        #expect(report.first?.metadata["seconds"] == "5.0")
        #expect(report.first?.metadata["mb_per_second"] == "2.0")
        #expect(progress.review(Self.standing(behind: 10), bytesReceived: 11_000_000, nowMs: 6_100).isEmpty, "once per 5 s")
        let end = progress.review(Self.standing(), bytesReceived: 12_000_000, nowMs: 7_000)
        #expect(end.map(\.message) == ["cluster: in step: this node holds or has caught up with every shard it replicates"])
        #expect(end.first?.metadata["bytes_received"] == "12000000")
        #expect(end.first?.metadata["seconds"] == "6.0")
        #expect(end.first?.metadata["since_start_ms"] == "6000")
        #expect(progress.snapshot(bytesReceived: 12_500_000, nowMs: 9_000) == CatchUpSnapshot(running: false, bytes: 12_000_000, ms: 6_000),
                "after it ends, the last one's figures stay")
        #expect(progress.review(Self.standing(), bytesReceived: 12_500_000, nowMs: 9_100).isEmpty, "in step says so once")
    }

    @Test func aStartInStepSaysSoOnceAndABlipOutOfStepIsNotSummedUp() {
        var progress = CatchUpProgress(nodeStartMs: 0)
        #expect(progress.review(Self.standing(), bytesReceived: 0, nowMs: 100).map(\.level) == [.notice])
        #expect(progress.review(Self.standing(), bytesReceived: 0, nowMs: 200).isEmpty)
        let out = progress.review(Self.standing(withoutHolder: 3), bytesReceived: 500, nowMs: 300)
        #expect(out.map(\.level) == [.info], "falling out of step is an info line")
        #expect(progress.snapshot(bytesReceived: 700, nowMs: 400) == CatchUpSnapshot(running: true, bytes: 200, ms: 100),
                "bytes count from when it fell out of step")
        #expect(progress.review(Self.standing(), bytesReceived: 500, nowMs: 800).isEmpty, "an election's blip: no summary")
        #expect(progress.snapshot(bytesReceived: 500, nowMs: 900) == CatchUpSnapshot(), "and no last period")
        _ = progress.review(Self.standing(behind: 1), bytesReceived: 500, nowMs: 1_000)
        let end = progress.review(Self.standing(), bytesReceived: 900, nowMs: 1_100)
        #expect(end.count == 1, "a short one that received something is summed up")
        #expect(end.first?.metadata["bytes_received"] == "400")
    }

    @Test func aNodeOutsideAClusterReportsNothing() {
        var progress = CatchUpProgress(nodeStartMs: 0)
        #expect(progress.review(ReplicaStanding(applies: false, reviewed: true), bytesReceived: 10, nowMs: 100).isEmpty)
        #expect(progress.snapshot(bytesReceived: 10, nowMs: 200) == CatchUpSnapshot())
    }
}
