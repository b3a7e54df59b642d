import AegisProtocol
import AegisStore
import CSupport
import Testing
@testable import AegisServer

struct WALRecordTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        let check = Array("123456789".utf8)
        #expect(aegis_crc32c(0, check, check.count) == 0xE306_9283)
        #expect(aegis_crc32c_portable(0, check, check.count) == 0xE306_9283)
    }

    @Test func hardwareAndPortableCRCAgreeOnEveryLengthAndAlignment() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { raw in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4000] {
                    let slice = raw.baseAddress! + start
                    #expect(aegis_crc32c(0, slice, length) == aegis_crc32c_portable(0, slice, length))
                }
            }
        }
    }

    @Test func recordsRoundTrip() {
        let buffer = WireBuffer()
        let key = Array("user:42".utf8)
        let value: [UInt8] = [0, 13, 10, 255, 0x80]
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                WALRecord.append(to: buffer, operation: .set, shard: 200, version: Self.wide, expiryMs: 1_900_000_000_000, key: k, value: v)
                WALRecord.append(to: buffer, operation: .delete, shard: 3, version: Self.wider, expiryMs: 0, key: k, value: UnsafeRawBufferPointer(start: nil, count: 0))
            }
        }
        let view = buffer.readableView
        guard case .record(let first, let length) = WALRecord.decode(view) else {
            Issue.record("first record did not decode")
            return
        }
        #expect(length == WALRecord.headerSize + key.count + value.count)
        #expect(first.operation == .set && first.shard == 200 && first.version == Self.wide && first.expiryMs == 1_900_000_000_000)
        #expect(Array(first.key) == key && Array(first.value) == value)
        guard case .record(let second, _) = WALRecord.decode(UnsafeRawBufferPointer(rebasing: view[length...])) else {
            Issue.record("second record did not decode")
            return
        }
        #expect(second.operation == .delete && Array(second.key) == key && second.value.isEmpty)
        #expect(second.version == Self.wider)
    }

    /// A snapshot's end marker carries the proven heads of the shards whose
    /// chain of logged writes was whole (`ReplayedCopy`), and the terms the
    /// node held shards at; one written before they existed carries none,
    /// and a value that is not a list of them is refused rather than read as
    /// a proof.
    @Test func snapshotEndMarkersCarryProvenHeadsAndHeldTerms() {
        let heads = [3: EntryVersion(term: 7, seq: 41), 250: Self.wider, 9: .zero]
        let full = SnapshotProof(heads: heads, heldTerms: [3: 9, 9: 4])
        for proof in [full, SnapshotProof(heads: heads), SnapshotProof()] {
            let buffer = WireBuffer()
            WALRecord.appendSnapshotEnd(entries: 12, proof: proof, to: buffer)
            guard case .record(let marker, let length) = WALRecord.decode(buffer.readableView) else {
                Issue.record("the end marker did not decode")
                continue
            }
            #expect(length == buffer.readableBytes)
            #expect(marker.operation == .snapshotEnd && marker.version.seq == 12)
            #expect(WALRecord.proof(ofSnapshotEnd: marker) == proof)
        }
        for malformed: [UInt8] in [[2, 0, 0, 0, 1, 2, 3], Self.markerValue([(3 | 1 << 31, 9, 5)])] {
            let buffer = WireBuffer()
            malformed.withUnsafeBytes {
                WALRecord.append(to: buffer, operation: .snapshotEnd, shard: 0, version: EntryVersion(term: 0, seq: 0), expiryMs: 0,
                                 key: WALRecord.noBytes, value: $0)
            }
            guard case .record(let marker, _) = WALRecord.decode(buffer.readableView) else {
                Issue.record("the malformed end marker did not decode as a record")
                continue
            }
            #expect(WALRecord.proof(ofSnapshotEnd: marker) == nil, "\(malformed)")
        }
    }

    /// Builds of 2 to 6 December 2026 read the marker's value as heads only:
    /// exactly [u32 count] and count entries of 16 bytes, each shard once,
    /// and a head of a shard past those they run is ignored. A held term is
    /// such an entry, so they still read the snapshot.
    @Test func heldTermsStayReadableAsHeadsOfNoShard() {
        let buffer = WireBuffer()
        WALRecord.appendSnapshotEnd(entries: 0, proof: SnapshotProof(heads: [3: EntryVersion(term: 2, seq: 5)], heldTerms: [3: 4]),
                                    to: buffer)
        guard case .record(let marker, _) = WALRecord.decode(buffer.readableView) else {
            Issue.record("the end marker did not decode")
            return
        }
        let value = Array(marker.value)
        let count = Int(value.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self) })
        #expect(count == 2 && value.count == 4 + count * 16)
        let shardFields = (0..<count).map { index in
            value.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4 + index * 16, as: UInt32.self) }
        }
        #expect(Set(shardFields).count == count)
        #expect(shardFields.filter { Int($0) >= 1 << 16 } == [3 | 1 << 31], "only the held term lies past every shard count")
    }

    static func markerValue(_ entries: [(UInt32, UInt32, UInt64)]) -> [UInt8] {
        var value: [UInt8] = []
        func put<T: FixedWidthInteger>(_ number: T) { withUnsafeBytes(of: number.littleEndian) { value.append(contentsOf: $0) } }
        put(UInt32(entries.count))
        for (shard, term, seq) in entries {
            put(shard)
            put(term)
            put(seq)
        }
        return value
    }

    /// Past what format 1 could hold (16-bit term, 48-bit seq): kept whole.
    static let wide = EntryVersion(term: 0x1_0002, seq: (1 << 48) + 77)
    static let wider = EntryVersion(term: UInt32.max, seq: UInt64.max)

    /// A record as aegiskv wrote it before issue 14 (log format 1): decoded
    /// with its packed version split into term and seq.
    @Test func formatOneRecordsDecodeWithTheirVersionsConverted() {
        let record = WALVersionTests.formatOneRecord(.set, shard: 7, packedVersion: 5 << 48 | 1234, expiryMs: 42,
                                                     key: Array("old".utf8), value: Array("value".utf8))
        record.withUnsafeBytes { raw in
            guard case .record(let decoded, let length) = WALRecord.decode(raw, format: .v1) else {
                Issue.record("a format 1 record did not decode")
                return
            }
            #expect(length == record.count)
            #expect(decoded.operation == .set && decoded.shard == 7 && decoded.expiryMs == 42)
            #expect(decoded.version == EntryVersion(term: 5, seq: 1234))
            #expect(Array(decoded.key) == Array("old".utf8) && Array(decoded.value) == Array("value".utf8))
        }
    }

    @Test func everyTruncationAndEveryFlippedBitIsDetected() {
        let buffer = WireBuffer()
        let key = Array("k".utf8)
        let value = Array("some value".utf8)
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in
            WALRecord.append(to: buffer, operation: .set, shard: 1, version: EntryVersion(term: 1, seq: 9), expiryMs: 0, key: k, value: v)
        } }
        var bytes = buffer.readableArray()
        for cut in 0..<bytes.count {
            bytes.withUnsafeBytes { raw in
                if case .record = WALRecord.decode(UnsafeRawBufferPointer(rebasing: raw[0..<cut])) {
                    Issue.record("a record cut at \(cut) decoded")
                }
            }
        }
        for bit in 0..<(bytes.count * 8) {
            bytes[bit / 8] ^= 1 << (bit % 8)
            bytes.withUnsafeBytes { raw in
                if case .record = WALRecord.decode(raw) { Issue.record("bit \(bit) flipped went unnoticed") }
            }
            bytes[bit / 8] ^= 1 << (bit % 8)
        }
    }
}
