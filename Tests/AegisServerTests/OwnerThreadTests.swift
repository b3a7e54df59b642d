@testable import AegisServer
import Testing

/// Debug builds trap when state one thread owns is touched from another
/// (issue 14, item 8). Release builds compile the checks out, so these
/// tests exist only in debug builds.
struct OwnerThreadTests {
    #if DEBUG
    @Test func aRingsProducerSideUsedFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let ring = SPSCByteRing(capacityBytes: 4096)
            _ = ring.reserve(payloadLength: 8)
            let intruder = JoinableThread { _ = ring.reserve(payloadLength: 8) }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    @Test func aRingsConsumerSideUsedFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let ring = SPSCByteRing(capacityBytes: 4096)
            _ = ring.peek()
            let intruder = JoinableThread { _ = ring.peek() }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    @Test func aReplyQueueUsedFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let queue = ReplyQueue()
            _ = queue.openPending(parts: 1, aggregate: .none)
            let box = UncheckedBox(queue)
            let intruder = JoinableThread { _ = box.value.openPending(parts: 1, aggregate: .none) }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    @Test func eachSideOfARingMayHaveItsOwnThread() {
        let ring = SPSCByteRing(capacityBytes: 4096)
        let producer = JoinableThread {
            ring.reserve(payloadLength: 8)!.storeBytes(of: UInt64(42), as: UInt64.self)
            ring.commit(payloadLength: 8)
        }
        #expect(producer.join(timeoutSeconds: 10))
        #expect(ring.peek()?.payload.load(as: UInt64.self) == 42)
    }
    #endif
}

/// Hands a non-Sendable value to another thread on purpose (to show that
/// the owner check catches it).
final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
