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
}
