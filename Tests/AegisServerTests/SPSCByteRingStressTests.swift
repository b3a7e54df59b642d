@testable import AegisServer
import Foundation
import Glibc
import Synchronization
import Testing

/// The ring under random interleavings: record sizes from empty to the
/// largest payload (so skip markers and wrap-arounds come at every offset),
/// random bursts on the producer and random pauses on both sides, all drawn
/// from one printed seed. Every record must arrive once, in order, intact.
@Suite(.serialized)
struct SPSCByteRingStressTests {
    @Test(arguments: [4096, 65536])
    func randomRecordsArriveOnceInOrderAndIntact(capacity: Int) throws {
        let seed = Stress.seed("SPSCByteRingStressTests(capacity: \(capacity))")
        let total = Stress.count(100_000)
        let ring = SPSCByteRing(capacityBytes: capacity)
        let progress = SharedProgress()
        // Sizes and flags are a function of the sequence number and the seed,
        // so the consumer can check each record without shared state.
        @Sendable func shape(_ sequence: Int) -> (length: Int, flags: UInt32) {
            var random = SeededGenerator(seed: seed ^ UInt64(sequence) &* 0x9E37_79B9_7F4A_7C15)
            let roll = random.next()
            let length = roll % 8 == 0 ? Int(random.next() % UInt64(ring.maxPayload + 1)) : Int(random.next() % 64)
            return (length, UInt32(truncatingIfNeeded: random.next()) & 0x3FFF_FFFF)
        }
        @Sendable func byte(_ sequence: Int, _ offset: Int) -> UInt8 {
            UInt8(truncatingIfNeeded: (sequence &* 31) ^ offset ^ Int(truncatingIfNeeded: seed))
        }

        let producer = JoinableThread {
            var random = SeededGenerator(seed: seed &+ 1)
            var sequence = 0
            while sequence < total && !progress.stop.load(ordering: .relaxed) {
                let burst = 1 + Int(random.next() % 32)
                var sent = 0
                while sent < burst && sequence < total {
                    let (length, flags) = shape(sequence)
                    guard let destination = ring.reserve(payloadLength: length) else {
                        sched_yield()
                        break
                    }
                    for i in 0..<length { destination.storeBytes(of: byte(sequence, i), toByteOffset: i, as: UInt8.self) }
                    ring.commit(payloadLength: length, flags: flags)
                    sequence += 1
                    sent += 1
                }
                progress.produced.store(sequence, ordering: .relaxed)
                let pause = random.next() % 16
                if pause == 0 { sched_yield() } else { spin(Int(pause) * 16) }
            }
        }

        var random = SeededGenerator(seed: seed &+ 2)
        var received = 0
        var wrongLength = 0
        var wrongFlags = 0
        var wrongBytes = 0
        var stall = ProgressDeadline(seconds: 10)
        while received < total {
            guard let (payload, flags) = ring.peek() else {
                if stall.expired(progress: received) { break }
                sched_yield()
                continue
            }
            let (length, expectedFlags) = shape(received)
            if payload.count != length { wrongLength += 1 }
            if flags != expectedFlags { wrongFlags += 1 }
            for i in 0..<min(length, payload.count) where payload[i] != byte(received, i) { wrongBytes += 1 }
            ring.release()
            received += 1
            if random.next() % 64 == 0 { spin(Int(random.next() % 512)) }
        }
        progress.stop.store(true, ordering: .relaxed)
        #expect(producer.join(timeoutSeconds: 10), "seed \(seed): the producer did not finish")
        let produced = progress.produced.load(ordering: .relaxed)
        #expect(received == total, "seed \(seed): \(received) of \(total) records arrived (\(produced) committed) before the deadline")
        #expect(wrongLength == 0 && wrongFlags == 0 && wrongBytes == 0,
                "seed \(seed): \(wrongLength) wrong lengths, \(wrongFlags) wrong flags, \(wrongBytes) wrong bytes")
        #expect(ring.peek() == nil, "seed \(seed): a record arrived after the last one")
    }
}
