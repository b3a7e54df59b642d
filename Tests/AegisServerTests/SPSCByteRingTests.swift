@testable import AegisServer
import Foundation
import Testing

struct SPSCByteRingTests {
    /// A producer and a consumer thread move a million variable-length
    /// records; every record arrives once, intact and in order, across many
    /// wrap-arounds of a small ring.
    @Test func twoThreadsMoveRecordsInOrder() async throws {
        let ring = SPSCByteRing(capacityBytes: 4096)
        let total = 1_000_000
        let producer = Thread {
            var sequence = 0
            while sequence < total {
                let length = 8 + (sequence % 200)
                guard let destination = ring.reserve(payloadLength: length) else { continue }
                destination.storeBytes(of: UInt64(sequence), as: UInt64.self)
                for i in 8..<length { destination.storeBytes(of: UInt8(truncatingIfNeeded: sequence &+ i), toByteOffset: i, as: UInt8.self) }
                ring.commit(payloadLength: length, flags: UInt32(sequence % 2))
                sequence += 1
            }
        }
        producer.start()
        var expected = 0
        var corrupt = 0
        while expected < total {
            guard let (payload, flags) = ring.peek() else { continue }
            let sequence = Int(payload.load(as: UInt64.self))
            if sequence != expected || payload.count != 8 + (expected % 200) || flags != UInt32(expected % 2) { corrupt += 1 }
            for i in 8..<payload.count where payload[i] != UInt8(truncatingIfNeeded: expected &+ i) { corrupt += 1 }
            ring.release()
            expected += 1
        }
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
