import AegisProtocol
import AegisStore
import CSupport

/// The log's on-disk format: the last byte of every segment's and
/// snapshot's magic. A node writes the current one and reads both, each
/// file by its own magic, so a log written before issue 14 is converted as
/// it is replayed (its versions fit the new ones exactly) and then replaced
/// by the next snapshot.
enum WALFormat: UInt8, CaseIterable {
    /// Before issue 14: a 32-byte record header whose version is one u64,
    /// term (16 bits) << 48 | seq (48 bits); a DEL carried version 0.
    case v1 = 1
    /// A 36-byte record header with a 64-bit seq and a 32-bit term.
    case v2 = 2

    static let current = WALFormat.v2

    var recordHeaderSize: Int { self == .v1 ? 32 : 36 }
}

/// One write-ahead log record, the unit of segments and snapshots alike.
///
/// Layout (format 2; little-endian, 36-byte header, then key and value bytes):
///
///     0  u32  total length of the record, header included
///     4  u32  CRC32C of bytes 8..<total
///     8  u8   operation (see `Operation`)
///     9  u8   reserved, 0
///    10  u16  shard
///    12  u32  key length
///    16  u64  version seq (snapshot end marker: the entry count)
///    24  i64  absolute expiry, unix ms (0 = none)
///    32  u32  version term
///    36  key, then value (value length = total - 36 - key length)
///
/// Format 1 was the same up to byte 16, then u64 version (term << 48 | seq),
/// i64 expiry, and the key at 32.
///
/// Every write has its own version, DEL and FLUSHALL included: a DEL
/// carries the version its deletion was given, which is newer than the
/// SET it removes.
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
        /// Last record of a snapshot; its version's seq holds the entry count.
        case snapshotEnd = 4
    }

    /// Of the current format.
    static let headerSize = WALFormat.current.recordHeaderSize
    static let maxKeyLength = 64 * 1024
    static let maxValueLength = 64 * 1024 * 1024
    static let maxTotalLength = headerSize + maxKeyLength + maxValueLength

    var operation: Operation
    var shard: Int
    var version: EntryVersion
    var expiryMs: Int64
    var key: UnsafeRawBufferPointer
    var value: UnsafeRawBufferPointer

    /// Appends one encoded record to `buffer`.
    static func append(to buffer: WireBuffer, operation: Operation, shard: Int, version: EntryVersion, expiryMs: Int64,
                       key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let total = headerSize + key.count + value.count
        let space = buffer.writableSpace(minimum: total)
        let base = space.baseAddress!
        base.storeBytes(of: UInt32(total).littleEndian, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: operation.rawValue, toByteOffset: 8, as: UInt8.self)
        base.storeBytes(of: UInt8(0), toByteOffset: 9, as: UInt8.self)
        base.storeBytes(of: UInt16(truncatingIfNeeded: shard).littleEndian, toByteOffset: 10, as: UInt16.self)
        base.storeBytes(of: UInt32(key.count).littleEndian, toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: version.seq.littleEndian, toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: expiryMs.littleEndian, toByteOffset: 24, as: Int64.self)
        base.storeBytes(of: version.term.littleEndian, toByteOffset: 32, as: UInt32.self)
        if key.count > 0 { (base + headerSize).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        if value.count > 0 { (base + headerSize + key.count).copyMemory(from: value.baseAddress!, byteCount: value.count) }
        let crc = aegis_crc32c(0, base + 8, total - 8)
        base.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.commitWrite(total)
    }

    /// A key's state as one record: its entry as a SET, or a DEL with
    /// `deletedAt` (the version of the write that left it absent) when it has
    /// none. The log, the undo of a batch and snapshots all record states.
    static func appendState(of key: UnsafeRawBufferPointer, _ entry: EntryRef?, deletedAt: EntryVersion,
                            shard: Int, to buffer: WireBuffer) {
        if let entry {
            append(to: buffer, operation: .set, shard: shard, version: entry.version,
                   expiryMs: entry.expiryMs, key: key, value: entry.value)
        } else {
            append(to: buffer, operation: .delete, shard: shard, version: deletedAt, expiryMs: 0, key: key, value: noBytes)
        }
    }

    /// A snapshot's record of a live entry.
    static func appendEntry(_ entry: EntryRef, shard: Int, to buffer: WireBuffer) {
        append(to: buffer, operation: .set, shard: shard, version: entry.version,
               expiryMs: entry.expiryMs, key: entry.key, value: entry.value)
    }

    /// The record that closes a snapshot of `entries` entries. Its value
    /// holds the proven heads: per shard whose chain of logged writes was
    /// whole when the snapshot's segment began (`ReplayedCopy`), the chain's
    /// head, as [u32 count] then per entry [u32 shard][u32 term][u64 seq],
    /// little-endian. An entry whose shard field has its top bit set names
    /// the shard in the low bits and carries instead the term this node held
    /// it at when the snapshot began, in the term field, with seq 0 (since
    /// 6 December 2026; `SnapshotProof.heldTerms`). Builds before 2 December
    /// 2026 wrote no value, and read past one; builds from 2 to 6 December
    /// read a held-term entry as the head of a shard past every shard they
    /// run, and so ignore it: a snapshot carrying either stays readable by them.
    static func appendSnapshotEnd(entries: Int, proof: SnapshotProof = SnapshotProof(), to buffer: WireBuffer) {
        var value: [UInt8] = []
        let count = proof.heads.count + proof.heldTerms.count
        if count > 0 {
            value.reserveCapacity(4 + count * provenHeadSize)
            func put<T: FixedWidthInteger>(_ number: T) { withUnsafeBytes(of: number.littleEndian) { value.append(contentsOf: $0) } }
            put(UInt32(count))
            for (shard, head) in proof.heads.sorted(by: { $0.key < $1.key }) {
                put(UInt32(shard))
                put(head.term)
                put(head.seq)
            }
            for (shard, term) in proof.heldTerms.sorted(by: { $0.key < $1.key }) {
                put(UInt32(shard) | heldTermFlag)
                put(term)
                put(UInt64(0))
            }
        }
        value.withUnsafeBytes { bytes in
            append(to: buffer, operation: .snapshotEnd, shard: 0, version: EntryVersion(term: 0, seq: UInt64(entries)),
                   expiryMs: 0, key: noBytes, value: bytes)
        }
    }

    private static let provenHeadSize = 16
    private static let heldTermFlag: UInt32 = 1 << 31

    /// What a snapshot's end marker proves (nothing in one written before
    /// proofs existed); nil when its value is not a list of proven heads and
    /// held terms.
    static func proof(ofSnapshotEnd record: WALRecord) -> SnapshotProof? {
        let value = record.value
        guard value.count > 0 else { return SnapshotProof() }
        guard value.count >= 4 else { return nil }
        let count = Int(UInt32(littleEndian: value.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard value.count == 4 + count * provenHeadSize else { return nil }
        var proof = SnapshotProof()
        for index in 0..<count {
            let at = 4 + index * provenHeadSize
            let shardField = UInt32(littleEndian: value.loadUnaligned(fromByteOffset: at, as: UInt32.self))
            let term = UInt32(littleEndian: value.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self))
            let seq = UInt64(littleEndian: value.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self))
            if shardField & heldTermFlag != 0 {
                guard seq == 0, proof.heldTerms.updateValue(term, forKey: Int(shardField & ~heldTermFlag)) == nil else { return nil }
            } else {
                guard proof.heads.updateValue(EntryVersion(term: term, seq: seq), forKey: Int(shardField)) == nil else { return nil }
            }
        }
        return proof
    }

    static var noBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    enum Decoded {
        case record(WALRecord, length: Int)
        /// Fewer bytes than the record claims (or than a header).
        case truncated
        /// A length out of bounds, a checksum mismatch or an unknown operation.
        case corrupt(String)
    }

    /// Decodes the record at the start of `bytes`, written in `format`. The
    /// returned key and value point into `bytes`.
    static func decode(_ bytes: UnsafeRawBufferPointer, format: WALFormat = .current) -> Decoded {
        let headerSize = format.recordHeaderSize
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
        let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let version = switch format {
        case .v1: EntryVersion(legacyPacked: word)
        case .v2: EntryVersion(term: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt32.self)), seq: word)
        }
        let record = WALRecord(
            operation: operation,
            shard: Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 10, as: UInt16.self))),
            version: version,
            expiryMs: Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 24, as: Int64.self)),
            key: UnsafeRawBufferPointer(rebasing: bytes[headerSize..<(headerSize + keyLength)]),
            value: UnsafeRawBufferPointer(rebasing: bytes[(headerSize + keyLength)..<total]))
        return .record(record, length: total)
    }
}

/// The 16-byte header that opens every segment and snapshot file: an
/// 8-byte magic naming the kind (7 bytes) and the format (`WALFormat`, the
/// last byte), then the file's number. For a segment that is its own
/// number; for a snapshot, the first segment it does not cover.
enum WALFileHeader {
    static let size = 16
    static let segmentKind: [UInt8] = Array("AKVWAL\0".utf8)
    static let snapshotKind: [UInt8] = Array("AKVSNP\0".utf8)
    /// The magics this node writes: the current format's.
    static let segmentMagic: [UInt8] = segmentKind + [WALFormat.current.rawValue]
    static let snapshotMagic: [UInt8] = snapshotKind + [WALFormat.current.rawValue]

    enum Parsed: Equatable {
        case file(number: UInt64, format: WALFormat)
        /// The right kind of file in a format this build does not read.
        case unknownFormat(UInt8)
        /// Not a file of this kind at all.
        case foreign
    }

    /// The file's number and format, in any format this build reads.
    static func parse(_ bytes: UnsafeRawBufferPointer, kind: [UInt8]) -> Parsed {
        guard bytes.count >= size, bytes.prefix(7).elementsEqual(kind) else { return .foreign }
        guard let format = WALFormat(rawValue: bytes[7]) else { return .unknownFormat(bytes[7]) }
        return .file(number: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)), format: format)
    }


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

/// What a snapshot proves of the copies it holds, for the replay after it
/// (`ReplayedCopy`): per shard whose chain of logged writes was whole, its
/// head; per shard this node held as the snapshot began, the term it held.
struct SnapshotProof: Equatable {
    var heads: [Int: EntryVersion] = [:]
    var heldTerms: [Int: UInt32] = [:]
}
