import Testing

@testable import AegisServer

/// The time budget between a reactor's stream slices (StreamSlicePacer).
struct StreamSlicePacerTests {
    let start: Int64 = 5_000_000_000

    @Test func theFirstSliceIsDueAtOnceEvenWithClientsReady() {
        let pacer = StreamSlicePacer()
        #expect(pacer.sliceDue(nowNs: start, clientEventsReady: true))
        #expect(pacer.restRemainingNs(nowNs: start) == 0)
    }

    @Test func withoutClientWorkTheLoopRestsBetweenSlicesInsteadOfPolling() {
        var pacer = StreamSlicePacer()
        pacer.walked(nowNs: start)
        #expect(!pacer.sliceDue(nowNs: start, clientEventsReady: false))
        #expect(pacer.restRemainingNs(nowNs: start) == StreamSlicePacer.restNs)
        let partWay = start + StreamSlicePacer.restNs / 5
        #expect(!pacer.sliceDue(nowNs: partWay, clientEventsReady: false))
        #expect(pacer.restRemainingNs(nowNs: partWay) == StreamSlicePacer.restNs - StreamSlicePacer.restNs / 5)
        let rested = start + StreamSlicePacer.restNs
        #expect(pacer.sliceDue(nowNs: rested, clientEventsReady: false))
        #expect(pacer.restRemainingNs(nowNs: rested) == 0)
        #expect(pacer.restRemainingNs(nowNs: rested + 1_000_000) == 0)
    }

    @Test func withClientsReadyASliceWaitsForTheBusyGap() {
        var pacer = StreamSlicePacer()
        pacer.walked(nowNs: start)
        let rested = start + StreamSlicePacer.restNs
        #expect(!pacer.sliceDue(nowNs: rested, clientEventsReady: true))
        #expect(!pacer.sliceDue(nowNs: start + StreamSlicePacer.busyGapNs - 1, clientEventsReady: true))
        #expect(pacer.sliceDue(nowNs: start + StreamSlicePacer.busyGapNs, clientEventsReady: true))
        #expect(StreamSlicePacer.busyGapNs > StreamSlicePacer.restNs)
    }

    @Test func aLoopBusyWithClientsStillWalksOneSlicePerBusyGap() {
        var pacer = StreamSlicePacer()
        var slices = 0
        // A loop pass every 10 µs for 10 ms, each with a client ready.
        for pass in 0..<1_000 {
            let now = start + Int64(pass) * 10_000
            if pacer.sliceDue(nowNs: now, clientEventsReady: true) {
                pacer.walked(nowNs: now)
                slices += 1
            }
        }
        #expect(slices == Int(10_000_000 / StreamSlicePacer.busyGapNs))
    }

    @Test func aSliceResetsTheBudget() {
        var pacer = StreamSlicePacer()
        pacer.walked(nowNs: start)
        pacer.walked(nowNs: start + 3 * StreamSlicePacer.busyGapNs)
        #expect(!pacer.sliceDue(nowNs: start + 3 * StreamSlicePacer.busyGapNs + 1, clientEventsReady: false))
        #expect(pacer.lastSliceNs == start + 3 * StreamSlicePacer.busyGapNs)
    }

    /// stream_rate_limit_mb: a stream slice holds the next one for its
    /// bytes' time at the limit, from when it began; a slice that took
    /// longer than that holds nothing more.
    @Test func underARateLimitASliceHoldsTheNextForItsBytesTime() {
        var pacer = StreamSlicePacer()
        pacer.walked(nowNs: start)
        // 16 KiB at 16 MiB/s: 1/1024 s.
        pacer.streamed(bytes: 16_384, startedNs: start, bytesPerSecond: 16 * 1_048_576)
        let held = Int64(1_000_000_000 / 1_024)
        #expect(held > StreamSlicePacer.restNs)
        let rested = start + StreamSlicePacer.restNs
        #expect(pacer.sliceDue(nowNs: rested, clientEventsReady: false), "other background work is not held")
        #expect(!pacer.streamSliceAllowed(nowNs: rested))
        #expect(pacer.restRemainingNs(nowNs: rested) == 0)
        #expect(pacer.restRemainingNs(nowNs: rested, streamsOnly: true) == held - StreamSlicePacer.restNs)
        #expect(pacer.streamSliceAllowed(nowNs: start + held))
        #expect(pacer.restRemainingNs(nowNs: start + held, streamsOnly: true) == 0)

        // Over a simulated second, slices of 16 KiB sent as soon as allowed stay within the limit.
        var sent = 0
        var now = start + held
        let end = now + 1_000_000_000
        while now < end {
            if pacer.sliceDue(nowNs: now, clientEventsReady: false) && pacer.streamSliceAllowed(nowNs: now) {
                pacer.walked(nowNs: now)
                pacer.streamed(bytes: 16_384, startedNs: now, bytesPerSecond: 16 * 1_048_576)
                sent += 16_384
            }
            now += 10_000
        }
        #expect(sent <= 16 * 1_048_576 + 16_384 && sent >= 15 * 1_048_576, "\(sent) bytes in a second at 16 MiB/s")
    }

    @Test func withoutALimitNothingIsHeld() {
        var pacer = StreamSlicePacer()
        pacer.walked(nowNs: start)
        pacer.streamed(bytes: 16_384, startedNs: start, bytesPerSecond: 1)
        #expect(!pacer.streamSliceAllowed(nowNs: start + StreamSlicePacer.restNs))
        // A slice sent with no limit (lifted by a reload) holds nothing.
        pacer.streamed(bytes: 16_384, startedNs: start, bytesPerSecond: 0)
        #expect(pacer.streamSliceAllowed(nowNs: start))
        #expect(pacer.restRemainingNs(nowNs: start, streamsOnly: true) == StreamSlicePacer.restNs)
    }
}
