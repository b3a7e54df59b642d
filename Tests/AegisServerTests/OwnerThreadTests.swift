@testable import AegisServer
import AegisStore
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

    @Test func aConnectionUsedFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let connection = Connection(fd: -1, index: 0, generation: 0, clientID: 1, peer: "", nowMs: 0, requiresAuth: false)
            _ = connection.replyTarget
            let box = UncheckedBox(connection)
            let intruder = JoinableThread { _ = box.value.replyTarget }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    @Test func aConnectionTableLookupFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            var table = ConnectionTable()
            let (slot, generation) = table.reserveSlot()
            table.install(Connection(fd: -1, index: UInt32(slot), generation: generation, clientID: 1, peer: "", nowMs: 0, requiresAuth: false))
            #expect(table.connection(slot: slot, generation: generation) != nil)
            let box = UncheckedBox(table)
            let intruder = JoinableThread { _ = box.value.connection(slot: slot, generation: generation) }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    @Test func aShardStoreReachedFromASecondThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            var shards = OwnedShards(reactor: 0, shardOwner: [0, 1], ledger: MemoryLedger(limitBytes: 1 << 20, evictionRatio: 0.1))
            shards.claim()
            #expect(shards[0] != nil && shards[1] == nil)
            let box = UncheckedBox(shards)
            let intruder = JoinableThread { _ = box.value[0] }
            _ = intruder.join(timeoutSeconds: 10)
        }
    }

    /// The hand-over the node makes: built on one thread, replayed on a
    /// second, served on a third; each claims before it touches the stores.
    @Test func shardStoresHandedOverByClaimAreNotATrap() {
        let box = MutableBox(OwnedShards(reactor: 0, shardOwner: [0], ledger: MemoryLedger(limitBytes: 1 << 20, evictionRatio: 0.1)))
        let replay = JoinableThread {
            box.value.claim()
            _ = box.value[0]
        }
        #expect(replay.join(timeoutSeconds: 10))
        box.value.claim()
        #expect(box.value[0] != nil)
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

/// The same, for a value the other thread changes; the test joins that
/// thread before it reads the value again.
final class MutableBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
