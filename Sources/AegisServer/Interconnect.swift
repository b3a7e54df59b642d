import CSupport
import Glibc
import Synchronization

/// The N×N grid of rings between reactors, plus each reactor's wake-up
/// eventfd and "sleeping" flag.
///
/// Wake-up handshake (Dekker's pattern: each side stores, then loads what
/// the other side stores):
///
///     producer (notify)                consumer (prepareToSleep)
///     P1 store ring tail (commit)      C1 store sleeping = true
///     P2 full fence                    C2 full fence
///     P3 load sleeping                 C3 load every inbound ring's tail
///        true → exchange to false,        any record → sleeping = false,
///        write the eventfd                don't sleep
///
/// Why no record can be stranded: the two fences are sequentially
/// consistent, so one of them comes first in their single total order.
/// If P2 comes before C2, the C++/Swift fence rule (a store sequenced
/// before a seq_cst fence X is seen by a load sequenced after a seq_cst
/// fence Y when X precedes Y) makes C3 see P1's tail: the consumer finds
/// the record and stays awake. If C2 comes before P2, P3 sees C1's `true`
/// or a later store, and a later store is either another producer's
/// exchange (which writes the eventfd) or the consumer's own `false` (it
/// is awake; the next time it prepares to sleep, its fence comes after P2,
/// since P3 did not see that later `true`, so the first case applies).
/// Either way the record is read without waiting for an unrelated event,
/// such as the maintenance tick. Without the fences the
/// pair can fail even on x86: the producer's release store of the tail
/// may still sit in its store buffer when its load of `sleeping` runs, so
/// both sides read the old value (store-load reordering is the one x86
/// allows). The producer pays one fence per notified target per loop
/// iteration, not per record, and no syscall unless the target sleeps.
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
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // C2: see the handshake above
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
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // P2: see the handshake above
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
