import AegisProtocol
import AegisStore
import CSupport
import Foundation
import Glibc
import Testing
@testable import AegisServer

/// Versions in the real log of a real node: every write, DEL included,
/// carries its own (term, seq), and each is newer than the one before.
@Suite(.serialized)
struct WALVersionTests {
    /// Every record of a log file (segment or snapshot), in order.
    static func records(of path: String) throws -> [(operation: WALRecord.Operation, key: String, version: EntryVersion)] {
        var found: [(WALRecord.Operation, String, EntryVersion)] = []
        try forEachRecord(of: path) { found.append(($0.operation, String(decoding: $0.key, as: UTF8.self), $0.version)) }
        return found
    }

    /// Each record of a log or snapshot file, in order, up to the first that
    /// does not decode (the record's bytes live only during `body`).
    static func forEachRecord(of path: String, _ body: (WALRecord) -> Void) throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes.withUnsafeBytes { raw in
            var offset = WALFileHeader.size
            while offset < raw.count, case .record(let record, let length) = WALRecord.decode(UnsafeRawBufferPointer(rebasing: raw[offset...])) {
                body(record)
                offset += length
            }
        }
    }

    @Test func deletesAreLoggedWithTheirOwnNewerVersion() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-versions")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try WALRecoveryTests.startNode(walDirectory, mode: "write")
        let client = try RESPTestClient(port: server.port)
        #expect(try client.command("SET", "k", "v") == .simple("OK"))
        #expect(try client.command("DEL", "k") == .integer(1))
        #expect(try client.command("SET", "k", "w") == .simple("OK"))
        #expect(try client.command("GETDEL", "k") == .bulk(Array("w".utf8)))
        #expect(server.stop() == 0)

        let logged = try Self.records(of: WALRecoveryTests.segmentPath(walDirectory))
        #expect(logged.map(\.operation) == [.set, .delete, .set, .delete])
        #expect(logged.allSatisfy { $0.key == "k" })
        for (earlier, later) in zip(logged, logged.dropFirst()) {
            #expect(earlier.version < later.version, "\(later.operation) logged with \(later.version), not newer than \(earlier.version)")
        }
    }

    /// The binary protocol's DEL logged version 0 too (BinaryIntake).
    @Test func binaryDeletesAreLoggedWithTheirOwnNewerVersion() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-versions-binary")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try WALRecoveryTests.startNode(walDirectory, mode: "write")
        let socket = try TestSocket(port: server.port)
        let buffer = WireBuffer()
        let key = Array("b".utf8)
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 1, key: key, value: [1], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.del.rawValue, requestID: 2, key: key, value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 3, key: key, value: [2], ttlMs: 0, version: 0, into: buffer)
        try socket.send(buffer.readableArray())
        let responses = try readBinaryResponses(socket, count: 3)
        #expect(responses.allSatisfy { $0.status == BinaryStatus.ok.rawValue })
        #expect(server.stop() == 0)

        let logged = try Self.records(of: WALRecoveryTests.segmentPath(walDirectory))
        #expect(logged.map(\.operation) == [.set, .delete, .set])
        for (earlier, later) in zip(logged, logged.dropFirst()) {
            #expect(earlier.version < later.version, "\(later.operation) logged with \(later.version), not newer than \(earlier.version)")
        }
        // Binary v1 carries the seq of the version it wrote.
        #expect(responses[0].version == logged[0].version.seq && responses[2].version == logged[2].version.seq)
    }

    /// Binary SETs are logged writes of this node like RESP ones: they keep
    /// their shard's chain whole (ReplayedCopy), so a snapshot's end marker
    /// carries the shard's head and a restart can prove the copy whole. Before,
    /// the binary path logged without extending the chain, and the shard lost
    /// its proof.
    @Test func binarySetsKeepTheirShardsChainWholeAcrossASnapshot() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-binary-chain")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try WALRecoveryTests.startNode(walDirectory, mode: "write")
        let socket = try TestSocket(port: server.port)
        let buffer = WireBuffer()
        for requestID in 1...3 {
            BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: UInt64(requestID), key: Array("b".utf8),
                                      value: [UInt8(requestID)], ttlMs: 0, version: 0, into: buffer)
        }
        try socket.send(buffer.readableArray())
        let responses = try readBinaryResponses(socket, count: 3)
        #expect(responses.allSatisfy { $0.status == BinaryStatus.ok.rawValue })
        let truncate = try runTool("curl", ["-s", "--max-time", "20", "-X", "POST", server.healthURL + "/admin/wal/truncate"])
        let answer = try? JSONSerialization.jsonObject(with: Data(truncate.output.utf8)) as? [String: Any]
        #expect(answer?["completed"] as? Bool == true, "\(truncate.output)")
        #expect(server.stop() == 0)

        let directory = walDirectory + "/reactor-0"
        let snapshot = try #require(try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".snap") })
        var heads: [Int: EntryVersion]?
        try Self.forEachRecord(of: directory + "/" + snapshot) { record in
            if record.operation == .snapshotEnd { heads = WALRecord.proof(ofSnapshotEnd: record)?.heads }
        }
        let shard = LeaseProcessTests.shard(of: "b")
        #expect(heads?[shard]?.seq == responses[2].version, "shard \(shard)'s head after three binary SETs (seq \(responses[2].version)): \(String(describing: heads))")
    }

    // MARK: - Log format 1 (before issue 14)

    /// One record in log format 1, byte for byte as aegiskv wrote it before
    /// issue 14: a 32-byte header with the version packed as term << 48 | seq.
    static func formatOneRecord(_ operation: WALRecord.Operation, shard: Int, packedVersion: UInt64, expiryMs: Int64,
                                key: [UInt8], value: [UInt8]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 32)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { for (i, byte) in $0.enumerated() { bytes[offset + i] = byte } }
        }
        put(UInt32(32 + key.count + value.count), at: 0)
        bytes[8] = operation.rawValue
        put(UInt16(shard), at: 10)
        put(UInt32(key.count), at: 12)
        put(packedVersion, at: 16)
        put(expiryMs, at: 24)
        bytes += key + value
        let crc = bytes.withUnsafeBytes { aegis_crc32c(0, $0.baseAddress! + 8, $0.count - 8) }
        put(crc, at: 4)
        return bytes
    }

    /// A file header: 7 bytes of kind, the format byte, the file's number.
    static func fileHeader(_ kind: String, format: UInt8, number: UInt64) -> [UInt8] {
        var bytes = Array(kind.utf8) + [0, format]
        withUnsafeBytes(of: number.littleEndian) { bytes += $0 }
        return bytes
    }

    static func shard(of key: String) -> Int {
        Array(key.utf8).withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: 256) }
    }

    /// A one-reactor log as the release before issue 14 left it: 20 SETs
    /// (term 1, seq 1...20), then a DEL with version 0, as it logged them.
    static func writeFormatOneLog(_ walDirectory: String) throws {
        try FileManager.default.createDirectory(atPath: walDirectory + "/reactor-0", withIntermediateDirectories: true)
        try "reactors=1 num_shards=256\n".write(toFile: walDirectory + "/layout", atomically: true, encoding: .utf8)
        var file = fileHeader("AKVWAL", format: 1, number: 1)
        for i in 0..<20 {
            let key = WALRecoveryTests.key(i)
            file += formatOneRecord(.set, shard: shard(of: key), packedVersion: 1 << 48 | UInt64(i + 1), expiryMs: 0,
                                    key: Array(key.utf8), value: Array(WALRecoveryTests.value(i).utf8))
        }
        let deleted = WALRecoveryTests.key(0)
        file += formatOneRecord(.delete, shard: shard(of: deleted), packedVersion: 0, expiryMs: 0, key: Array(deleted.utf8), value: [])
        try Data(file).write(to: URL(fileURLWithPath: WALRecoveryTests.segmentPath(walDirectory)))
    }

    @Test func aFormatOneLogIsReadAndNewRecordsUseTheCurrentFormat() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-format-1")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        try Self.writeFormatOneLog(walDirectory)

        // `write` mode: `fsync` mode may move to a prepared segment at any record.
        let server = try WALRecoveryTests.startNode(walDirectory, mode: "write")
        #expect(try WALRecoveryTests.presentKeys(server, upTo: 20) == Array(1..<20))
        #expect(server.log().contains("older format"))
        let client = try RESPTestClient(port: server.port)
        #expect(try client.command("SET", "after-upgrade", "new") == .simple("OK"))
        #expect(try client.command("DEL", WALRecoveryTests.key(1)) == .integer(1))
        #expect(server.stop() == 0)

        // The new writes went to a new segment, in format 2, each with a
        // version newer than every converted one of its shard (versions are
        // per shard: key-i was written with seq i + 1).
        let second = WALRecoveryTests.segmentPath(walDirectory, 2)
        let header = try [UInt8](Data(contentsOf: URL(fileURLWithPath: second)).prefix(8))
        #expect(header == Array("AKVWAL".utf8) + [0, 2])
        let logged = try Self.records(of: second)
        #expect(logged.map(\.operation) == [.set, .delete])
        for record in logged {
            let converted = (0..<20).filter { Self.shard(of: WALRecoveryTests.key($0)) == Self.shard(of: record.key) }
            let newestConverted = EntryVersion(term: 1, seq: UInt64(converted.max().map { $0 + 1 } ?? 0))
            #expect(record.version > newestConverted, "\(record.key): \(record.version)")
        }

        // Both formats side by side replay to the same state.
        let again = try WALRecoveryTests.startNode(walDirectory)
        defer { #expect(again.stop() == 0) }
        #expect(try WALRecoveryTests.presentKeys(again, upTo: 20) == Array(2..<20))
        #expect(try RESPTestClient(port: again.port).command("GET", "after-upgrade") == .bulk(Array("new".utf8)))
    }

    @Test func aLogOfAnUnknownFormatRefusesToStartAndSaysWhatToDo() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-format-9")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        try FileManager.default.createDirectory(atPath: walDirectory + "/reactor-0", withIntermediateDirectories: true)
        try "reactors=1 num_shards=256\n".write(toFile: walDirectory + "/layout", atomically: true, encoding: .utf8)
        try Data(Self.fileHeader("AKVWAL", format: 9, number: 1)).write(to: URL(fileURLWithPath: WALRecoveryTests.segmentPath(walDirectory)))

        let result = try WALRecoveryTests.startExpectingRefusal(walDirectory)
        #expect(result.status != 0 && result.status != 124, "\(result.output)")
        #expect(result.output.contains("format 9"), "\(result.output)")
        #expect(result.output.contains("does not read"), "\(result.output)")
        // The refusal names both sides: the format it found and the release that cannot read it.
        #expect(result.output.contains("this aegiskv \(BuildInfo.version) does not read"), "\(result.output)")
        #expect(result.output.contains("aegiskv-cli dump"), "\(result.output)")
        #expect(result.output.contains(WALRecoveryTests.segmentPath(walDirectory)), "\(result.output)")
    }
}
