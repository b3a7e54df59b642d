import CSupport
import Glibc
import Synchronization

/// The N×N grid of rings between reactors, plus each reactor's wake-up
/// eventfd and "sleeping" flag.
///
/// Wake-up protocol (a Dekker-style handshake, both sides sequentially
/// consistent): a consumer about to sleep stores `sleeping = true`, then
/// re-checks its inbound rings; a producer stores its record, then
/// exchanges `sleeping` to false and writes the eventfd only if it was true.
/// Either the consumer sees the record, or the producer sees the flag, so a
/// message never waits for the next unrelated event. Under load nobody is
/// sleeping and no wake-up syscall is made.
public final class Interconnect: Sendable {
    public let reactorCount: Int
    private let rings: [SPSCByteRing]
    private let sleeping: [PaddedBool]
    public let wakeFDs: [Int32]

    public init(reactorCount: Int, ringCapacityBytes: Int) throws {
        self.reactorCount = reactorCount
        var rings: [SPSCByteRing] = []
        for _ in 0..<(reactorCount * reactorCount) {
            rings.append(SPSCByteRing(capacityBytes: ringCapacityBytes))
        }
        self.rings = rings
        self.sleeping = (0..<reactorCount).map { _ in PaddedBool() }
        var fds: [Int32] = []
        for _ in 0..<reactorCount {
            let fd = aegis_eventfd_create()
            if fd < 0 { throw SystemError(operation: "eventfd", code: -fd) }
            fds.append(fd)
        }
        self.wakeFDs = fds
    }

    @inline(__always) public func ring(from: Int, to: Int) -> SPSCByteRing {
        rings[from * reactorCount + to]
    }

    /// Called by a reactor before it blocks in epoll_wait. Returns false when
    /// an inbound ring already holds work, in which case it must not sleep.
    public func prepareToSleep(_ reactor: Int) -> Bool {
        sleeping[reactor].value.store(true, ordering: .sequentiallyConsistent)
        for from in 0..<reactorCount where from != reactor {
            if !ring(from: from, to: reactor).isEmptyApproximately {
                sleeping[reactor].value.store(false, ordering: .sequentiallyConsistent)
                return false
            }
        }
        return true
    }

    public func didWake(_ reactor: Int) {
        sleeping[reactor].value.store(false, ordering: .sequentiallyConsistent)
    }

    /// Called by a producer after it committed records for `reactor`.
    @inline(__always) public func notify(_ reactor: Int) {
        if sleeping[reactor].value.load(ordering: .sequentiallyConsistent),
           sleeping[reactor].value.exchange(false, ordering: .sequentiallyConsistent) {
            _ = aegis_eventfd_signal(wakeFDs[reactor])
        }
    }

    /// True while `reactor` sleeps in epoll_wait (for the watchdog: a
    /// sleeping reactor is idle, not stuck).
    public func isAsleep(_ reactor: Int) -> Bool {
        sleeping[reactor].value.load(ordering: .relaxed)
    }

    /// Unconditional wake-up, for lifecycle changes (drain, stop).
    public func wake(_ reactor: Int) {
        _ = aegis_eventfd_signal(wakeFDs[reactor])
    }

    public func inboundDepthBytes(_ reactor: Int) -> Int {
        (0..<reactorCount).reduce(0) { $0 + ($1 == reactor ? 0 : ring(from: $1, to: reactor).depthBytes) }
    }
}

final class PaddedBool: Sendable {
    private let padBefore: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
    let value = Atomic<Bool>(false)
    private let padAfter: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
}

public struct SystemError: Error, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }
    public var description: String {
        "\(operation): \(String(cString: strerror(code))) (errno \(code))"
    }
}
