import AegisProtocol
import AegisStore
import CSupport

/// One write-ahead log record, the unit of segments and snapshots alike.
///
/// Layout (little-endian, 32-byte header, then key and value bytes):
///
///     0  u32  total length of the record, header included
///     4  u32  CRC32C of bytes 8..<total
///     8  u8   operation (see `Operation`)
///     9  u8   reserved, 0
///    10  u16  shard
///    12  u32  key length
///    16  u64  version, wire form (term << 48 | seq)
///    24  i64  absolute expiry, unix ms (0 = none)
///    32  key, then value (value length = total - 32 - key length)
///
/// The checksum covers everything after itself, length excepted, so a torn
/// record (a short tail, zeros, stale bytes) fails the check; the length is
/// bounded so a corrupt one cannot send the reader past the file.
struct WALRecord {
    enum Operation: UInt8 {
        case set = 1
        case delete = 2
        /// FLUSHALL on one shard.
        case flushShard = 3
        /// Last record of a snapshot; its version field holds the entry count.
        case snapshotEnd = 4
    }

    static let headerSize = 32
    static let maxKeyLength = 64 * 1024
    static let maxValueLength = 64 * 1024 * 1024
    static let maxTotalLength = headerSize + maxKeyLength + maxValueLength

    var operation: Operation
    var shard: Int
    var version: UInt64
    var expiryMs: Int64
    var key: UnsafeRawBufferPointer
    var value: UnsafeRawBufferPointer

    /// Appends one encoded record to `buffer`.
    static func append(to buffer: WireBuffer, operation: Operation, shard: Int, version: UInt64, expiryMs: Int64,
                       key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let total = headerSize + key.count + value.count
        let space = buffer.writableSpace(minimum: total)
        let base = space.baseAddress!
        base.storeBytes(of: UInt32(total).littleEndian, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: operation.rawValue, toByteOffset: 8, as: UInt8.self)
        base.storeBytes(of: UInt8(0), toByteOffset: 9, as: UInt8.self)
        base.storeBytes(of: UInt16(truncatingIfNeeded: shard).littleEndian, toByteOffset: 10, as: UInt16.self)
        base.storeBytes(of: UInt32(key.count).littleEndian, toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: version.littleEndian, toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: expiryMs.littleEndian, toByteOffset: 24, as: Int64.self)
        if key.count > 0 { (base + headerSize).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        if value.count > 0 { (base + headerSize + key.count).copyMemory(from: value.baseAddress!, byteCount: value.count) }
        let crc = aegis_crc32c(0, base + 8, total - 8)
        base.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.commitWrite(total)
    }

    /// A key's state as one record: its entry as a SET, or a DEL when it has
    /// none. The log, the undo of a batch and snapshots all record states.
    static func appendState(of key: UnsafeRawBufferPointer, _ entry: EntryRef?, shard: Int, to buffer: WireBuffer) {
        if let entry {
            append(to: buffer, operation: .set, shard: shard, version: entry.version.packed,
                   expiryMs: entry.expiryMs, key: key, value: entry.value)
        } else {
            append(to: buffer, operation: .delete, shard: shard, version: 0, expiryMs: 0, key: key, value: noBytes)
        }
    }

    /// The record that closes a snapshot of `entries` entries.
    static func appendSnapshotEnd(entries: Int, to buffer: WireBuffer) {
        append(to: buffer, operation: .snapshotEnd, shard: 0, version: UInt64(entries), expiryMs: 0, key: noBytes, value: noBytes)
    }

    static var noBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    enum Decoded {
        case record(WALRecord, length: Int)
        /// Fewer bytes than the record claims (or than a header).
        case truncated
        /// A length out of bounds, a checksum mismatch or an unknown operation.
        case corrupt(String)
    }

    /// Decodes the record at the start of `bytes`. The returned key and value
    /// point into `bytes`.
    static func decode(_ bytes: UnsafeRawBufferPointer) -> Decoded {
        if bytes.count < headerSize { return .truncated }
        let total = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        if total < headerSize || total > maxTotalLength { return .corrupt("record length \(total) out of bounds") }
        if total > bytes.count { return .truncated }
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let computed = aegis_crc32c(0, bytes.baseAddress! + 8, total - 8)
        if stored != computed { return .corrupt("checksum mismatch") }
        guard let operation = Operation(rawValue: bytes[8]), bytes[9] == 0 else {
            return .corrupt("unknown operation \(bytes[8])")
        }
        let keyLength = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        if keyLength > total - headerSize { return .corrupt("key length \(keyLength) exceeds the record") }
        let record = WALRecord(
            operation: operation,
            shard: Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 10, as: UInt16.self))),
            version: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
            expiryMs: Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 24, as: Int64.self)),
            key: UnsafeRawBufferPointer(rebasing: bytes[headerSize..<(headerSize + keyLength)]),
            value: UnsafeRawBufferPointer(rebasing: bytes[(headerSize + keyLength)..<total]))
        return .record(record, length: total)
    }
}

/// The 16-byte header that opens every segment and snapshot file: an
/// 8-byte magic naming the kind and format version, then the file's number.
/// For a segment that is its own number; for a snapshot, the first segment
/// it does not cover.
enum WALFileHeader {
    static let size = 16
    static let segmentMagic: [UInt8] = Array("AKVWAL\0\u{1}".utf8)
    static let snapshotMagic: [UInt8] = Array("AKVSNP\0\u{1}".utf8)

    static func append(to buffer: WireBuffer, magic: [UInt8], number: UInt64) {
        buffer.append(magic)
        var littleEndian = number.littleEndian
        withUnsafeBytes(of: &littleEndian) { buffer.append($0) }
    }

    /// The file's number, or nil when the magic does not match.
    static func parse(_ bytes: UnsafeRawBufferPointer, magic: [UInt8]) -> UInt64? {
        guard bytes.count >= size, bytes.prefix(8).elementsEqual(magic) else { return nil }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }
}
