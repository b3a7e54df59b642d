import Synchronization

/// A lock-free single-producer/single-consumer ring of variable-length byte
/// records: the only channel between two reactors.
///
/// Invariants:
/// - Exactly one thread ever calls the producer methods (`reserve`/`commit`)
///   and exactly one thread calls the consumer methods (`peek`/`release`).
///   The reactors guarantee this: ring [from][to] is written only by reactor
///   `from` and read only by reactor `to`.
/// - `tail` (written by the producer) and `head` (written by the consumer) are
///   monotonically increasing byte positions; `0 <= tail - head <= capacity`.
/// - Records start at 8-byte aligned positions and never wrap: a record that
///   would cross the end of storage is preceded by a skip marker that fills
///   the rest, and the record starts at offset 0.
/// - A record is `[u32 length-of-payload][u32 flags][payload, padded to 8]`.
///   Flag bit 0 marks a skip record.
/// - The producer publishes `tail` with release ordering after writing the
///   bytes; the consumer loads it with acquire ordering before reading them.
///   The consumer publishes `head` with release after it is done with the
///   bytes; the producer loads it with acquire before overwriting them.
///
/// `@unchecked Sendable`: the storage is shared raw memory whose accesses are
/// ordered by the atomics above, which the compiler cannot see.
public final class SPSCByteRing: @unchecked Sendable {
    public let capacity: Int
    private let mask: Int
    private let storage: UnsafeMutableRawPointer
    private let tail = PaddedAtomic()
    private let head = PaddedAtomic()
    // Producer-private and consumer-private caches of the other side's
    // position, so the common case touches no shared cache line.
    private var producerTail = 0
    private var producerCachedHead = 0
    private var consumerHead = 0
    private var consumerCachedTail = 0
    // Debug builds check the first invariant below: one producer thread,
    // one consumer thread, each bound on first use.
    private var producerThread = OwnerThread()
    private var consumerThread = OwnerThread()

    static let headerSize = 8
    private static let skipFlag: UInt32 = 1

    /// The largest payload a record may carry; bigger payloads travel by pointer.
    public var maxPayload: Int { capacity / 4 }

    public init(capacityBytes: Int) {
        precondition(capacityBytes >= 4096 && capacityBytes & (capacityBytes - 1) == 0, "ring capacity must be a power of two >= 4096")
        capacity = capacityBytes
        mask = capacityBytes - 1
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacityBytes, alignment: 64)
    }

    deinit { storage.deallocate() }

    @inline(__always) private static func paddedSize(_ payload: Int) -> Int {
        (headerSize + payload + 7) & ~7
    }

    // MARK: Producer

    /// Returns a pointer to `payloadLength` writable bytes, or nil when the ring
    /// is full. The caller fills them and then calls `commit(payloadLength:flags:)`.
    @inline(__always) public func reserve(payloadLength: Int) -> UnsafeMutableRawPointer? {
        assert(payloadLength <= maxPayload)
        producerThread.assertOwner("a ring's producer side")
        let needed = Self.paddedSize(payloadLength)
        let offset = producerTail & mask
        let untilEnd = capacity - offset
        let total = needed <= untilEnd ? needed : untilEnd + needed
        if producerTail + total - producerCachedHead > capacity {
            producerCachedHead = head.value.load(ordering: .acquiring)
            if producerTail + total - producerCachedHead > capacity { return nil }
        }
        if needed > untilEnd {
            // Fill the rest of the storage with a skip record; it is published
            // together with the real record in commit().
            storage.storeBytes(of: UInt32(untilEnd - Self.headerSize), toByteOffset: offset, as: UInt32.self)
            storage.storeBytes(of: Self.skipFlag, toByteOffset: offset + 4, as: UInt32.self)
            producerTail += untilEnd
        }
        return storage + (producerTail & mask) + Self.headerSize
    }

    @inline(__always) public func commit(payloadLength: Int, flags: UInt32 = 0) {
        assert(flags < 1 << 31, "the top flag bit is taken by the skip marker shift")
        let offset = producerTail & mask
        storage.storeBytes(of: UInt32(payloadLength), toByteOffset: offset, as: UInt32.self)
        storage.storeBytes(of: flags << 1, toByteOffset: offset + 4, as: UInt32.self)
        producerTail += Self.paddedSize(payloadLength)
        tail.value.store(producerTail, ordering: .releasing)
    }

    // MARK: Consumer

    /// The next record's payload and flags, or nil when the ring is empty.
    /// The bytes stay valid until `release()`.
    @inline(__always) public func peek() -> (payload: UnsafeRawBufferPointer, flags: UInt32)? {
        consumerThread.assertOwner("a ring's consumer side")
        while true {
            if consumerHead == consumerCachedTail {
                consumerCachedTail = tail.value.load(ordering: .acquiring)
                if consumerHead == consumerCachedTail { return nil }
            }
            let offset = consumerHead & mask
            let length = Int(storage.load(fromByteOffset: offset, as: UInt32.self))
            let rawFlags = storage.load(fromByteOffset: offset + 4, as: UInt32.self)
            if rawFlags & Self.skipFlag != 0 {
                consumerHead += Self.headerSize + length
                continue
            }
            return (UnsafeRawBufferPointer(start: storage + offset + Self.headerSize, count: length), rawFlags >> 1)
        }
    }

    /// Frees the record returned by the last `peek()`.
    @inline(__always) public func release() {
        let offset = consumerHead & mask
        let length = Int(storage.load(fromByteOffset: offset, as: UInt32.self))
        consumerHead += Self.paddedSize(length)
        head.value.store(consumerHead, ordering: .releasing)
    }

    /// True when the consumer has nothing to read (callable from either side;
    /// the answer may be stale by the time it is used).
    public var isEmptyApproximately: Bool {
        tail.value.load(ordering: .acquiring) == head.value.load(ordering: .acquiring)
    }

    /// Bytes queued (approximate), for /debug views.
    public var depthBytes: Int {
        tail.value.load(ordering: .relaxed) - head.value.load(ordering: .relaxed)
    }
}

/// An atomic on its own cache line: the producer's and the consumer's
/// positions must not share one, or every update bounces the line.
final class PaddedAtomic: Sendable {
    private let padBefore: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
    let value = Atomic<Int>(0)
    private let padAfter: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
}
