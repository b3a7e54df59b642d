@testable import AegisServer
import CSupport
import Glibc
import Testing

/// The Interconnect on one thread: ring sizing, and each step of the
/// wake-up handshake seen from the eventfd.
struct InterconnectTests {
    /// True when the eventfd has been written since it was last read (and reads it).
    private func wasSignalled(_ fd: Int32) -> Bool {
        var value: UInt64 = 0
        return read(fd, &value, 8) == 8
    }

    @Test(arguments: [(2, 1 << 20), (8, 1 << 20), (16, 256 << 10), (64, 16 << 10), (128, 4096), (200, 4096)])
    func ringsShareOneBudgetWhateverTheReactorCount(reactors: Int, expected: Int) {
        let capacity = Interconnect.ringCapacityBytes(reactors: reactors)
        #expect(capacity == expected)
        if reactors <= 128 {
            #expect(reactors * (reactors - 1) * capacity <= Interconnect.ringBudgetBytes)
        }
    }

    @Test func ringMemoryIsReportedAndTheDiagonalTakesTheMinimum() throws {
        let interconnect = try Interconnect(reactorCount: 4)
        #expect(interconnect.ring(from: 0, to: 1).capacity == 1 << 20)
        #expect(interconnect.ring(from: 2, to: 2).capacity == Interconnect.ringCapacityBytesMin)
        #expect(interconnect.ringBytes == 12 * (1 << 20) + 4 * Interconnect.ringCapacityBytesMin)
    }

    @Test func aSleepingConsumerIsWokenOnceAndAnAwakeOneNever() throws {
        let interconnect = try Interconnect(reactorCount: 2, ringCapacityBytes: 4096)
        let wakeFD = interconnect.wakeFDs[1]
        interconnect.notify(1)
        #expect(!wasSignalled(wakeFD), "an awake consumer was sent a wake-up syscall")
        #expect(interconnect.prepareToSleep(1))
        #expect(interconnect.isAsleep(1))
        interconnect.notify(1)
        interconnect.notify(1)
        #expect(wasSignalled(wakeFD))
        #expect(!interconnect.isAsleep(1), "notify clears the flag, so a second producer does not write again")
        interconnect.didWake(1)
    }

    @Test func aConsumerWithARecordQueuedDoesNotSleep() throws {
        let interconnect = try Interconnect(reactorCount: 3, ringCapacityBytes: 4096)
        let ring = interconnect.ring(from: 2, to: 1)
        ring.reserve(payloadLength: 8)!.storeBytes(of: UInt64(7), as: UInt64.self)
        ring.commit(payloadLength: 8)
        #expect(!interconnect.prepareToSleep(1))
        #expect(!interconnect.isAsleep(1))
        #expect(interconnect.prepareToSleep(0), "reactor 0 has nothing queued")
        interconnect.didWake(0)
    }

    @Test func exitAndHeapCopiesAreTrackedPerReactor() throws {
        let interconnect = try Interconnect(reactorCount: 2, ringCapacityBytes: 4096)
        #expect(!interconnect.hasExited(1))
        interconnect.markExited(1)
        #expect(interconnect.hasExited(1) && !interconnect.hasExited(0))
        interconnect.noteIndirectSent(from: 0, bytes: 5000)
        interconnect.noteIndirectSent(from: 0, bytes: 3000)
        interconnect.noteIndirectFreed(from: 0, bytes: 5000)
        #expect(interconnect.indirectBytesInFlight(from: 0) == 3000)
        #expect(interconnect.indirectBytesInFlight(from: 1) == 0)
    }
}
