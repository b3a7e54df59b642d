import AegisProtocol
import Testing

/// Issue 14: a connection's buffers are bounded by what they hold, so the
/// capacity on top of the content must stay small.
@Suite struct WireBufferTests {
    /// The capacity a buffer holding `content` bytes may have.
    static func allowed(_ content: Int) -> Int {
        max(WireBuffer.doublingLimit, content + content / 4 + WireBuffer.growthGranule)
    }

    @Test func capacityStaysNearTheContent() {
        let buffer = WireBuffer()
        let chunk = [UInt8](repeating: 1, count: 16 * 1024)
        for _ in 0..<(8 << 20) / chunk.count {
            buffer.append(chunk)
            #expect(buffer.capacity <= Self.allowed(buffer.readableBytes))
        }
        // One large append (a 5 MiB reply into an empty buffer).
        let large = WireBuffer()
        large.append([UInt8](repeating: 2, count: 5 << 20))
        #expect(large.capacity <= Self.allowed(5 << 20))
    }

    /// An output buffer kept near 4 MiB unread while the peer reads a
    /// little at a time and replies keep coming: the capacity does not
    /// creep up (before issue 14 it doubled to 8 MiB), and every byte comes
    /// out in order.
    @Test func slowReaderKeepsTheCapacityBounded() {
        let buffer = WireBuffer()
        let bound = 4 << 20
        var written: UInt8 = 0
        var expected: UInt8 = 0
        var reply = [UInt8](repeating: 0, count: 1000)
        for round in 0..<5000 {
            while buffer.readableBytes < bound {
                for i in reply.indices { reply[i] = written &+ UInt8(truncatingIfNeeded: i) }
                buffer.append(reply)
                written &+= UInt8(truncatingIfNeeded: reply.count)
            }
            let take = 700 + round % 900
            let view = buffer.readableView
            for i in 0..<take where view[i] != expected &+ UInt8(truncatingIfNeeded: i) {
                Issue.record("byte \(i) of round \(round) out of order")
                return
            }
            expected &+= UInt8(truncatingIfNeeded: take)
            buffer.consume(take)
            #expect(buffer.capacity <= Self.allowed(bound + reply.count))
        }
    }
}
