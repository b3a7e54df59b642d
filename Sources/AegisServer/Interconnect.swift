import CSupport
import Glibc
import Synchronization

/// The N×N grid of rings between reactors, plus each reactor's wake-up
/// eventfd and "sleeping" flag. The cluster loop is one more endpoint,
/// number `clusterEndpoint` (= reactorCount): a ring from each reactor to
/// it and one back, its own eventfd and flag, the same handshake below.
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
    /// Reactor r's ring to the cluster loop, and the loop's ring to r.
    private let toCluster: [SPSCByteRing]
    private let fromCluster: [SPSCByteRing]
    private let sleeping: [PaddedBool]
    public let wakeFDs: [Int32]
    /// Set by a reactor once it has left its loop: its peers then drop what
    /// they still queue for it instead of waiting for ring space forever.
    private let exited: [PaddedBool]
    /// Per sending reactor: bytes of the heap copies (payloads too large for
    /// a ring) it sent that their consumer has not freed yet.
    private let indirectBytes: [PaddedAtomic]
    /// Bytes of ring storage allocated (the reactors' grid).
    public let ringBytes: Int
    /// Bytes of the rings to and from the cluster loop (outside the grid's budget).
    public let clusterRingBytes: Int

    /// The endpoint number of the cluster loop.
    @inline(__always) public var clusterEndpoint: Int { reactorCount }
    /// Reactors plus the cluster loop.
    @inline(__always) public var endpointCount: Int { reactorCount + 1 }

    /// Ring memory for the whole node, whatever the reactor count: the
    /// R × (R − 1) rings share it, each a power of two between 4 KiB and
    /// 1 MiB. Two reactors get two 1 MiB rings; 16 get 240 rings of
    /// 256 KiB (60 MiB); 64 get 4,032 rings of 16 KiB (63 MiB). A payload
    /// larger than a quarter of its ring travels as a heap copy instead.
    public static let ringBudgetBytes = 64 << 20
    public static let ringCapacityBytesMax = 1 << 20
    public static let ringCapacityBytesMin = 4096

    public static func ringCapacityBytes(reactors: Int) -> Int {
        let share = ringBudgetBytes / max(1, reactors * (reactors - 1))
        var capacity = ringCapacityBytesMax
        while capacity > share && capacity > ringCapacityBytesMin { capacity >>= 1 }
        return capacity
    }

    public convenience init(reactorCount: Int) throws {
        try self.init(reactorCount: reactorCount, ringCapacityBytes: Self.ringCapacityBytes(reactors: reactorCount))
    }

    public init(reactorCount: Int, ringCapacityBytes: Int) throws {
        self.reactorCount = reactorCount
        var rings: [SPSCByteRing] = []
        for from in 0..<reactorCount {
            for to in 0..<reactorCount {
                // A reactor never sends to itself: its own slot gets the smallest ring.
                rings.append(SPSCByteRing(capacityBytes: from == to ? Self.ringCapacityBytesMin : ringCapacityBytes))
            }
        }
        self.rings = rings
        self.ringBytes = rings.reduce(0) { $0 + $1.capacity }
        self.toCluster = (0..<reactorCount).map { _ in SPSCByteRing(capacityBytes: ringCapacityBytes) }
        self.fromCluster = (0..<reactorCount).map { _ in SPSCByteRing(capacityBytes: ringCapacityBytes) }
        self.clusterRingBytes = 2 * reactorCount * ringCapacityBytes
        self.sleeping = (0...reactorCount).map { _ in PaddedBool() }
        self.exited = (0...reactorCount).map { _ in PaddedBool() }
        self.indirectBytes = (0...reactorCount).map { _ in PaddedAtomic() }
        var fds: [Int32] = []
        for _ in 0...reactorCount {
            let fd = aegis_eventfd_create()
            if fd < 0 { throw SystemError(operation: "eventfd", code: -fd) }
            fds.append(fd)
        }
        self.wakeFDs = fds
    }

    @inline(__always) public func ring(from: Int, to: Int) -> SPSCByteRing {
        if to == reactorCount { return toCluster[from] }
        if from == reactorCount { return fromCluster[to] }
        return rings[from * reactorCount + to]
    }

    /// Called by a reactor before it blocks in epoll_wait. Returns false when
    /// an inbound ring already holds work, in which case it must not sleep.
    public func prepareToSleep(_ reactor: Int) -> Bool {
        sleeping[reactor].value.store(true, ordering: .sequentiallyConsistent)
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // C2: see the handshake above
        for from in 0...reactorCount where from != reactor {
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

    /// Called by a reactor after its loop ended, before it stops reading
    /// its rings for good.
    public func markExited(_ reactor: Int) {
        exited[reactor].value.store(true, ordering: .releasing)
    }

    public func hasExited(_ reactor: Int) -> Bool {
        exited[reactor].value.load(ordering: .acquiring)
    }

    /// Heap copies: counted by the sender when made, by the consumer when
    /// freed (one atomic add each, only for payloads too large for a ring).
    @inline(__always) public func noteIndirectSent(from reactor: Int, bytes: Int) {
        indirectBytes[reactor].value.wrappingAdd(bytes, ordering: .relaxed)
    }

    @inline(__always) public func noteIndirectFreed(from reactor: Int, bytes: Int) {
        indirectBytes[reactor].value.wrappingSubtract(bytes, ordering: .relaxed)
    }

    @inline(__always) public func indirectBytesInFlight(from reactor: Int) -> Int {
        indirectBytes[reactor].value.load(ordering: .relaxed)
    }

    /// Takes up to `budget` records from the ring `source` → `destination`,
    /// in order, and hands each header and payload to `body`. A payload too
    /// large for the ring travelled as a heap copy: it is freed, and its
    /// bytes un-counted, once `body` returns, so `body` must not keep the
    /// buffer. Only `destination`'s thread may call this (the ring's
    /// consumer side).
    @inline(__always) func drain(from source: Int, to destination: Int, budget: Int = 4096,
                                 _ body: (ForwardHeader, UnsafeRawBufferPointer) -> Void) {
        let ring = ring(from: source, to: destination)
        var left = budget
        while left > 0, let (record, flags) = ring.peek() {
            left -= 1
            let header = ForwardHeader.load(from: record)
            if flags & RecordFlags.indirect != 0 {
                let address = UInt(bitPattern: record.loadUnaligned(fromByteOffset: ForwardHeader.size, as: Int.self))
                let heapCopy = UnsafeMutableRawPointer(bitPattern: address)!
                body(header, UnsafeRawBufferPointer(start: heapCopy, count: header.payloadLength))
                heapCopy.deallocate()
                noteIndirectFreed(from: source, bytes: header.payloadLength)
            } else {
                body(header, UnsafeRawBufferPointer(rebasing: record[ForwardHeader.size..<(ForwardHeader.size + header.payloadLength)]))
            }
            ring.release()
        }
    }

    public func inboundDepthBytes(_ reactor: Int) -> Int {
        (0...reactorCount).reduce(0) { $0 + ($1 == reactor ? 0 : ring(from: $1, to: reactor).depthBytes) }
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
