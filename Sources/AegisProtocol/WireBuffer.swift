/// A growable byte buffer with a read cursor and a write cursor, reused for
/// the life of a connection (input and output) or a reactor (scratch space).
///
/// Invariants (asserted in debug builds):
/// - `0 <= readIndex <= writeIndex <= capacity`
/// - `storage` is owned by this instance, allocated with `capacity` bytes
///   (or nil when capacity is 0) and freed in `deinit`.
/// - Bytes in `readIndex..<writeIndex` are initialized; the rest is scratch.
///
/// A class rather than a struct because connections and reactors keep their
/// buffers for a long time and hand them to codecs by reference: one object,
/// no copy-on-write checks on the hot path.
public final class WireBuffer {
    public private(set) var storage: UnsafeMutableRawPointer?
    public private(set) var capacity: Int
    public private(set) var readIndex: Int = 0
    public private(set) var writeIndex: Int = 0

    public init(capacity: Int = 0) {
        precondition(capacity >= 0)
        self.capacity = capacity
        self.storage = capacity > 0 ? UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16) : nil
    }

    deinit { storage?.deallocate() }

    @inline(__always) public var readableBytes: Int { writeIndex - readIndex }
    @inline(__always) public var isEmpty: Bool { writeIndex == readIndex }
    @inline(__always) public var writableBytes: Int { capacity - writeIndex }

    /// The unread bytes. Valid until the next mutation of this buffer.
    @inline(__always) public var readableView: UnsafeRawBufferPointer {
        guard let storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: storage + readIndex, count: writeIndex - readIndex)
    }

    /// Makes room for at least `count` more bytes after `writeIndex`, moving
    /// unread bytes to the front first when that is enough.
    @inline(__always) public func reserve(_ count: Int) {
        if capacity - writeIndex >= count { return }
        reserveSlow(count)
    }

    /// Room is made in one of two ways, chosen so that a buffer's capacity
    /// stays close to what it holds (a connection's buffers are bounded by
    /// their unread bytes, and the bound is only worth as much as the
    /// slack on top of it):
    /// - Moving the unread bytes to the front, when that gives the room and
    ///   either little is unread or at least a quarter of the buffer is
    ///   already consumed: each compaction then frees at least a quarter of
    ///   the capacity, so a byte appended is moved at most three more times,
    ///   however slowly the other end reads.
    /// - Growing: doubling while small (few reallocations for typical
    ///   replies), then by a quarter past what is needed, so a buffer that
    ///   holds N bytes has at most about 1.25 N + `growthGranule` allocated
    ///   instead of up to 2 N.
    @inline(never) private func reserveSlow(_ count: Int, exact: Bool = false) {
        let unread = readableBytes
        if readIndex > 0 && capacity - unread >= count && (exact || unread <= capacity / 2 || readIndex >= capacity / 4) {
            if let storage, unread > 0 { storage.copyMemory(from: storage + readIndex, byteCount: unread) }
            readIndex = 0
            writeIndex = unread
            return
        }
        let newCapacity = exact
            ? (unread + count + Self.growthGranule - 1) / Self.growthGranule * Self.growthGranule
            : Self.grownCapacity(from: capacity, needed: unread + count)
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if let storage {
            if unread > 0 { fresh.copyMemory(from: storage + readIndex, byteCount: unread) }
            storage.deallocate()
        }
        storage = fresh
        capacity = newCapacity
        readIndex = 0
        writeIndex = unread
    }

    /// Below this, capacity doubles; above, it grows by a quarter.
    public static let doublingLimit = 1 << 20
    /// Large capacities are rounded up to whole pages of this size.
    public static let growthGranule = 64 * 1024

    /// The capacity a buffer of `capacity` bytes grows to when it must hold `needed` bytes.
    public static func grownCapacity(from capacity: Int, needed: Int) -> Int {
        var doubled = Swift.max(capacity * 2, 256)
        while doubled < needed { doubled *= 2 }
        if doubled <= doublingLimit { return doubled }
        let target = Swift.max(needed + needed / 4, Swift.min(doubled, doublingLimit))
        return (target + growthGranule - 1) / growthGranule * growthGranule
    }

    /// Makes room for `total` unread bytes in all, at once and with no
    /// slack: for a request whose size is known before it arrives, one
    /// allocation instead of growing by steps, each a copy with the old and
    /// the new buffer both alive.
    public func reserve(totalReadable total: Int) {
        if capacity - readIndex >= total { return }
        reserveSlow(total - readableBytes, exact: true)
    }

    /// Space to write into directly (for read(2)); follow with `commitWrite`.
    @inline(__always) public func writableSpace(minimum: Int) -> UnsafeMutableRawBufferPointer {
        reserve(minimum)
        return UnsafeMutableRawBufferPointer(start: storage! + writeIndex, count: capacity - writeIndex)
    }

    @inline(__always) public func commitWrite(_ count: Int) {
        assert(count >= 0 && writeIndex + count <= capacity)
        writeIndex += count
    }

    @inline(__always) public func consume(_ count: Int) {
        assert(count >= 0 && count <= readableBytes)
        readIndex += count
        if readIndex == writeIndex { readIndex = 0; writeIndex = 0 }
    }

    @inline(__always) public func clear() {
        readIndex = 0
        writeIndex = 0
    }

    /// Drops what was appended after the buffer held `count` readable bytes.
    @inline(__always) public func truncate(toReadable count: Int) {
        precondition(count >= 0 && count <= readableBytes, "truncate past the readable bytes")
        writeIndex = readIndex + count
    }

    /// Drops the allocation when the buffer is empty and bigger than `keep`
    /// bytes, so an idle connection that once saw a large value holds nothing.
    public func releaseIfIdle(keep: Int) {
        guard isEmpty, capacity > keep else { return }
        storage?.deallocate()
        storage = nil
        capacity = 0
        readIndex = 0
        writeIndex = 0
    }

    // MARK: - Appending

    @inline(__always) public func append(_ bytes: UnsafeRawBufferPointer) {
        let count = bytes.count
        guard count > 0 else { return }
        reserve(count)
        (storage! + writeIndex).copyMemory(from: bytes.baseAddress!, byteCount: count)
        writeIndex += count
    }

    @inline(__always) public func append(byte: UInt8) {
        reserve(1)
        storage!.storeBytes(of: byte, toByteOffset: writeIndex, as: UInt8.self)
        writeIndex += 1
    }

    @inline(__always) public func append(_ text: StaticString) {
        append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    public func append(string: String) {
        var copy = string
        copy.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// ASCII decimal, as RESP and INFO need.
    @inline(__always) public func appendDecimal(_ value: Int) {
        reserve(20)
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes of scratch on the stack
        let count: Int = withUnsafeMutableBytes(of: &digits) { scratch in
            var position = 24
            repeat {
                position -= 1
                scratch[position] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 48
                magnitude /= 10
            } while magnitude > 0
            if value < 0 { position -= 1; scratch[position] = UInt8(ascii: "-") }
            let used = 24 - position
            (storage! + writeIndex).copyMemory(from: scratch.baseAddress! + position, byteCount: used)
            return used
        }
        writeIndex += count
    }

    @inline(__always) public func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        reserve(size)
        (storage! + writeIndex).storeBytes(of: value.bigEndian, as: T.self)
        writeIndex += size
    }

    /// Overwrites an integer already written at absolute index `at` (length prefixes).
    @inline(__always) public func setBigEndian<T: FixedWidthInteger>(_ value: T, at index: Int) {
        assert(index >= readIndex && index + MemoryLayout<T>.size <= writeIndex)
        (storage! + index).storeBytes(of: value.bigEndian, as: T.self)
    }

    /// Copies the unread bytes into an array (tests and tooling, not the hot path).
    public func readableArray() -> [UInt8] {
        Array(readableView)
    }
}

extension UnsafeRawBufferPointer {
    /// Loads a big-endian integer at `offset`, unaligned.
    @inline(__always) public func loadBigEndian<T: FixedWidthInteger>(fromByteOffset offset: Int, as: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
