@testable import AegisServer
import Foundation
import Glibc
import Synchronization
import Testing

struct SPSCByteRingTests {
    /// A producer and a consumer thread move a million variable-length
    /// records; every record arrives once, intact and in order, across many
    /// wrap-arounds of a small ring. A lost record fails the test at a
    /// deadline (no progress for 10 s) instead of hanging it.
    @Test func twoThreadsMoveRecordsInOrder() async throws {
        let ring = SPSCByteRing(capacityBytes: 4096)
        let total = 1_000_000
        let progress = SharedProgress()
        let producer = JoinableThread {
            var sequence = 0
            while sequence < total && !progress.stop.load(ordering: .relaxed) {
                let length = 8 + (sequence % 200)
                guard let destination = ring.reserve(payloadLength: length) else {
                    sched_yield()  // two cores are shared with the consumer and the test runner
                    continue
                }
                destination.storeBytes(of: UInt64(sequence), as: UInt64.self)
                for i in 8..<length { destination.storeBytes(of: UInt8(truncatingIfNeeded: sequence &+ i), toByteOffset: i, as: UInt8.self) }
                ring.commit(payloadLength: length, flags: UInt32(sequence % 2))
                sequence += 1
            }
        }
        var expected = 0
        var corrupt = 0
        var stall = ProgressDeadline(seconds: 10)
        while expected < total {
            guard let (payload, flags) = ring.peek() else {
                if stall.expired(progress: expected) { break }
                sched_yield()
                continue
            }
            let sequence = Int(payload.load(as: UInt64.self))
            if sequence != expected || payload.count != 8 + (expected % 200) || flags != UInt32(expected % 2) { corrupt += 1 }
            for i in 8..<payload.count where payload[i] != UInt8(truncatingIfNeeded: expected &+ i) { corrupt += 1 }
            ring.release()
            expected += 1
        }
        progress.stop.store(true, ordering: .relaxed)
        #expect(producer.join(timeoutSeconds: 10))
        #expect(expected == total, "only \(expected) of \(total) records arrived before the deadline")
        #expect(corrupt == 0)
        #expect(ring.peek() == nil)
    }

    @Test func fullRingRefusesUntilConsumed() {
        let ring = SPSCByteRing(capacityBytes: 4096)
        var written = 0
        while ring.reserve(payloadLength: 1000) != nil {
            ring.commit(payloadLength: 1000)
            written += 1
        }
        #expect(written == 4)  // 4 × (8 + 1000 padded to 1008) fits 4096
        #expect(ring.peek()?.payload.count == 1000)
        ring.release()
        #expect(ring.reserve(payloadLength: 1000) != nil)
    }
}

/// Fails a waiting loop that has made no progress for `seconds`, so a lost
/// record ends the test with a count instead of hanging it. Reads the clock
/// only every 4096 calls: the loops it guards spin.
struct ProgressDeadline {
    private let limitNs: UInt64
    private var lastProgress = -1
    private var lastProgressNs: UInt64 = 0
    private var calls = 0

    init(seconds: Double) { limitNs = UInt64(seconds * 1e9) }

    mutating func expired(progress: Int) -> Bool {
        calls &+= 1
        if calls & 0xFFF != 0 { return false }
        let now = DispatchTime.now().uptimeNanoseconds
        if progress != lastProgress {
            lastProgress = progress
            lastProgressNs = now
            return false
        }
        return now - lastProgressNs > limitNs
    }
}
