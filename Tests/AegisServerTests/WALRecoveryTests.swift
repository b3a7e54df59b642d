@testable import AegisServer
import AegisProtocol
import Foundation
import Glibc
import Testing

/// Damaged, missing and full logs, with the real binary: what starts, what
/// refuses to start and says why, and what each mode promises.
@Suite(.serialized)
struct WALRecoveryTests {
    static let keyCount = 100
    /// "key-NNN" and a 100-byte value: every record is 36 + 7 + 100 bytes
    /// (log format 2's record header is 36 bytes).
    static let recordSize = 36 + 7 + 100
    static let segmentHeader = 16

    static func key(_ i: Int) -> String { "key-" + String(format: "%03d", i) }
    static func value(_ i: Int) -> String { String(repeating: Character(UnicodeScalar(UInt8(65 + i % 26))), count: 100) }

    /// One reactor, so all records land in one segment in write order.
    static func startNode(_ walDirectory: String, mode: String = "fsync", extra: [String] = []) throws -> ServerHarness {
        try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory, mode: mode) + extra, reactors: 1)
    }

    /// Runs the binary on a log it should refuse (bounded by `timeout` in
    /// case it starts after all); the caller checks status and output.
    static func startExpectingRefusal(_ walDirectory: String, mode: String = "fsync", extra: [String] = []) throws -> (output: String, status: Int32) {
        try runTool("timeout", ["20", ServerHarness.binaryPath, "--bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
                                 "--gossip-bind-addr", "127.0.0.1:0", "--reactors", "1",
                                 // Never the host's /var/lib/aegiskv (not created: the log is elsewhere).
                                 "--data-dir", walDirectory + ".data"]
            + extra + WALCrashTests.walArguments(walDirectory, mode: mode))
    }

    static func writeKeys(_ server: ServerHarness, range: Range<Int>) throws {
        let client = try RESPTestClient(port: server.port)
        for i in range {
            #expect(try client.command("SET", key(i), value(i)) == .simple("OK"))
        }
    }

    static func presentKeys(_ server: ServerHarness, upTo count: Int) throws -> [Int] {
        let client = try RESPTestClient(port: server.port)
        let replies = try client.pipeline((0..<count).map { ["GET", key($0)] })
        return replies.enumerated().compactMap { index, reply in
            if reply.text == value(index) { return index }
            #expect(reply.text == nil, "\(key(index)) has a wrong value")
            return nil
        }
    }

    static func segmentPath(_ walDirectory: String, _ number: Int = 1) -> String {
        walDirectory + "/reactor-0/segment-" + String(repeating: "0", count: 20 - String(number).count) + String(number) + ".wal"
    }

    /// Start with a node that logged `keyCount` writes and stopped cleanly,
    /// all in segment 1 at known offsets. In `write` mode: `fsync` mode moves
    /// to a prepared segment as soon as one is ready, at no fixed record.
    static func preparedLog(_ name: String) throws -> String {
        let walDirectory = WALCrashTests.temporaryDirectory(name)
        let server = try startNode(walDirectory, mode: "write")
        try writeKeys(server, range: 0..<keyCount)
        #expect(server.stop() == 0)
        let size = (try FileManager.default.attributesOfItem(atPath: segmentPath(walDirectory))[.size] as? Int) ?? 0
        #expect(size == segmentHeader + keyCount * recordSize)
        return walDirectory
    }

    @Test func tornTailsAreCutOffAndLogged() throws {
        for _ in 0..<5 {
            let walDirectory = try Self.preparedLog("wal-torn")
            defer { try? FileManager.default.removeItem(atPath: walDirectory) }
            let cut = Int.random(in: Self.segmentHeader + 1..<(Self.segmentHeader + Self.keyCount * Self.recordSize))
            #expect(truncate(Self.segmentPath(walDirectory), off_t(cut)) == 0)
            let survivors = (cut - Self.segmentHeader) / Self.recordSize
            let recordStart = Self.segmentHeader + survivors * Self.recordSize

            let server = try Self.startNode(walDirectory)
            #expect(try Self.presentKeys(server, upTo: Self.keyCount) == Array(0..<survivors), "cut at \(cut)")
            if cut != recordStart {
                #expect(server.log().contains("cutting off a torn tail"))
                #expect(server.log().contains("offset=\(recordStart)"))
                #expect(server.log().contains(Self.segmentPath(walDirectory)))
            }
            // The cut segment is clean now: writes after it survive the next restart.
            try Self.writeKeys(server, range: survivors..<Self.keyCount)
            #expect(server.stop() == 0)
            let again = try Self.startNode(walDirectory)
            #expect(try Self.presentKeys(again, upTo: Self.keyCount) == Array(0..<Self.keyCount))
            again.stop()
        }
    }

    @Test func corruptionInTheMiddleRefusesToStartAndNamesFileAndOffset() throws {
        let walDirectory = try Self.preparedLog("wal-flip")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let record = 40
        let offset = Self.segmentHeader + record * Self.recordSize + 50  // inside record 40's value
        let path = Self.segmentPath(walDirectory)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(offset))
        let original = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: [original ^ 0x20])
        try handle.close()

        let result = try Self.startExpectingRefusal(walDirectory)
        #expect(result.status != 0)
        #expect(result.output.contains("WAL corruption in \(path) at offset \(Self.segmentHeader + record * Self.recordSize)"), "\(result.output)")
        #expect(result.output.contains("checksum mismatch"))
        #expect(result.output.contains("Data Corruption Recovery"))
    }

    @Test func damagedSnapshotRefusesToStart() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-snap")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        // 1 MiB segments: a snapshot follows after 4 MiB of log.
        let server = try Self.startNode(walDirectory)
        let client = try RESPTestClient(port: server.port)
        let big = String(repeating: "s", count: 64 * 1024)
        var snapshot: String?
        for round in 0..<400 where snapshot == nil {
            _ = try client.pipeline((0..<8).map { ["SET", "big-\($0)", big + String(round)] })
            let files = WALCrashTests.files(in: walDirectory)
            snapshot = files.first { $0.hasSuffix(".snap") }
        }
        try #require(snapshot != nil, "no snapshot after 25 MiB of log")
        // Covered segments go once the snapshot's rename is durable.
        var files = WALCrashTests.files(in: walDirectory)
        for _ in 0..<100 where files.contains("reactor-0/segment-00000000000000000001.wal") {
            usleep(20_000)
            files = WALCrashTests.files(in: walDirectory)
        }
        #expect(!files.contains("reactor-0/segment-00000000000000000001.wal"), "covered segments are removed: \(files)")
        #expect(server.stop() == 0)

        let path = walDirectory + "/" + snapshot!
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 100)
        try handle.write(contentsOf: [0xFF, 0x00, 0xFF])
        try handle.close()
        let result = try Self.startExpectingRefusal(walDirectory)
        #expect(result.status != 0)
        #expect(result.output.contains("WAL corruption in \(path) at offset 16"), "\(result.output)")
    }

    @Test func snapshotsBoundTheLogAndKeepEveryWrite() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-snapkeep")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let client = try RESPTestClient(port: server.port)
        let big = String(repeating: "x", count: 16 * 1024)
        for round in 0..<200 {
            _ = try client.pipeline((0..<32).map { ["SET", "k\($0 + round % 7)", big + "\(round)"] })
        }
        #expect(try client.command("SET", "last", "1") == .simple("OK"))
        let logged = try client.command("INFO", "persistence").text ?? ""
        #expect(!logged.contains("wal_snapshots:0\r"), "100 MiB of log must have caused snapshots: \(logged)")
        // A snapshot still in flight at the kill leaves the segments it
        // covers on disk, and how much log piles up while one is fsynced is
        // the machine's speed (this test failed 2 of 5 runs alone at 22-28
        // MiB). The bound is on the log once snapshots have caught up: the
        // kill comes once the completed count holds still for 300 ms.
        var snapshots = logged.split(separator: "\r\n").first { $0.hasPrefix("wal_snapshots:") }.map(String.init)
        _ = waitUntil(seconds: 10) {
            usleep(300_000)
            let now = (try? client.command("INFO", "persistence").text)??.split(separator: "\r\n")
                .first { $0.hasPrefix("wal_snapshots:") }.map(String.init)
            defer { snapshots = now }
            return now == snapshots
        }
        // Every acknowledged record became durable in a counted device flush (the node's, or a batch's own).
        #expect(logged.contains("wal_flush_records:\(200 * 32 + 1)\r"), "\(logged)")
        #expect(logged.contains("wal_flush_failures:0\r"), "\(logged)")
        #expect(!logged.contains("wal_flushes:0\r"), "\(logged)")
        kill(server.pid, SIGKILL)
        _ = server.stop(signal: SIGKILL)
        var totalBytes = 0
        for file in WALCrashTests.files(in: walDirectory) {
            totalBytes += (try FileManager.default.attributesOfItem(atPath: walDirectory + "/" + file)[.size] as? Int) ?? 0
        }
        #expect(totalBytes < 20 * 1024 * 1024, "snapshots must bound the log; it holds \(totalBytes) bytes")
        let restarted = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let again = try RESPTestClient(port: restarted.port)
        for k in 0..<38 {
            let reply = try again.command("GET", "k\(k)")
            #expect(reply.text?.hasPrefix(big) == true, "k\(k)")
        }
        #expect(try again.command("GET", "last") == .bulk(Array("1".utf8)))
        restarted.stop()
    }

    @Test func emptyAndMissingDirectoriesStartEmpty() throws {
        let parent = WALCrashTests.temporaryDirectory("wal-missing")
        defer { try? FileManager.default.removeItem(atPath: parent) }
        for walDirectory in [parent + "/does/not/exist/yet", parent] {
            let server = try Self.startNode(walDirectory)
            let client = try RESPTestClient(port: server.port)
            #expect(try client.command("DBSIZE") == .integer(0))
            #expect(try client.command("SET", "a", "1") == .simple("OK"))
            #expect(server.stop() == 0)
            #expect(FileManager.default.fileExists(atPath: walDirectory + "/reactor-0"))
        }
    }

    /// In `fsync` mode the next segment is written with zeros ahead of need
    /// and used once ready; its unwritten tail reads as the end of the log,
    /// and the newest segment is trimmed to its data at start.
    @Test func preparedSegmentsAreUsedAndTheirZeroTailsEndTheLog() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-prepared")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory)
        let reactorDirectory = walDirectory + "/reactor-0"
        let client = try RESPTestClient(port: server.port)
        var acknowledged: [String: String] = [:]
        var round = 0
        // Write until a segment that was prepared (full size: zeros past its data) is in use.
        func preparedSegmentInUse() throws -> Bool {
            let names = try FileManager.default.contentsOfDirectory(atPath: reactorDirectory).filter { $0.hasPrefix("segment-") }
            return try names.contains { name in
                try FileManager.default.attributesOfItem(atPath: reactorDirectory + "/" + name)[.size] as? Int == 1 << 20
            }
        }
        let deadline = Date().addingTimeInterval(20)
        while try !preparedSegmentInUse() && Date() < deadline {
            let batch = (0..<50).map { ["SET", Self.key((round * 50 + $0) % 1000), "\(round)-\($0)"] }
            for reply in try client.pipeline(batch) { #expect(reply == .simple("OK")) }
            for command in batch { acknowledged[command[1]] = command[2] }
            round += 1
        }
        #expect(try preparedSegmentInUse(), "no prepared segment was taken into use")
        kill(server.pid, SIGKILL)
        _ = server.stop(signal: SIGKILL)

        let restarted = try Self.startNode(walDirectory)
        let keys = acknowledged.keys.sorted()
        let replies = try RESPTestClient(port: restarted.port).pipeline(keys.map { ["GET", $0] })
        for (key, reply) in zip(keys, replies) { #expect(reply.text == acknowledged[key], "\(key)") }
        #expect(!restarted.log().contains("torn tail"), "\(restarted.log())")
        #expect(!restarted.log().contains("unwritten gap"), "\(restarted.log())")
        // The newest segment with data was trimmed to it at start.
        let sizes = try FileManager.default.contentsOfDirectory(atPath: reactorDirectory).filter { $0.hasPrefix("segment-") }.sorted()
            .map { (try FileManager.default.attributesOfItem(atPath: reactorDirectory + "/" + $0)[.size] as? Int) ?? 0 }
        #expect(sizes.last.map { $0 < 1 << 20 } ?? true, "\(sizes)")
        restarted.stop()
    }

    /// A crash can leave a batch's pages on disk in any order in a prepared
    /// segment: zeros where a record should start, written bytes after. In
    /// the newest segment that is the unacknowledged tail and is cut off;
    /// in an older one (synced whole before the next began) it is damage.
    @Test func zerosInsideTheLogEndItOnlyInTheNewestSegment() throws {
        let gapRecord = 40
        let gapOffset = Self.segmentHeader + gapRecord * Self.recordSize
        func zeroRecord(_ walDirectory: String) throws {
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: Self.segmentPath(walDirectory)))
            try handle.seek(toOffset: UInt64(gapOffset))
            try handle.write(contentsOf: [UInt8](repeating: 0, count: Self.recordSize))
            try handle.close()
        }

        let newest = try Self.preparedLog("wal-gap-newest")
        defer { try? FileManager.default.removeItem(atPath: newest) }
        try zeroRecord(newest)
        let server = try Self.startNode(newest, mode: "write")
        #expect(try Self.presentKeys(server, upTo: Self.keyCount) == Array(0..<gapRecord))
        #expect(server.log().contains("cutting off the write-ahead log at an unwritten gap in its newest segment"))
        #expect(server.log().contains("offset=\(gapOffset)"))
        server.stop()

        let older = try Self.preparedLog("wal-gap-older")
        defer { try? FileManager.default.removeItem(atPath: older) }
        let next = try Self.startNode(older, mode: "write")
        try Self.writeKeys(next, range: 0..<1)  // goes to segment 2
        #expect(next.stop() == 0)
        try zeroRecord(older)
        let result = try Self.startExpectingRefusal(older, mode: "write")
        #expect(result.status != 0)
        #expect(result.output.contains("WAL corruption in \(Self.segmentPath(older)) at offset \(gapOffset)"), "\(result.output)")
        #expect(result.output.contains("zeros where a record should start"))
    }

    /// `reactors` follows the machine's CPUs by default, so a node moved to
    /// another machine must start on its log: the log is re-laid out for
    /// the new count, with nothing lost (deletes, a FLUSHALL and TTLs
    /// included), and an interrupted earlier attempt is discarded.
    @Test func changedReactorCountIsReLaidOut() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-relayout")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let first = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let client = try RESPTestClient(port: first.port)
        for i in 0..<50 { #expect(try client.command("SET", "flushed-\(i)", "x") == .simple("OK")) }
        #expect(try client.command("FLUSHALL") == .simple("OK"))
        try Self.writeKeys(first, range: 0..<Self.keyCount)
        #expect(try client.command("DEL", Self.key(5)) == .integer(1))
        #expect(try client.command("SET", "with-ttl", "t", "EX", "1000") == .simple("OK"))
        kill(first.pid, SIGKILL)
        _ = first.stop(signal: SIGKILL)

        let expected = Array(0..<Self.keyCount).filter { $0 != 5 }
        func check(_ server: ServerHarness, reactors: Int, extraKeys: Int,
                   logLine: String = "write-ahead log re-laid out for a new reactor count") throws {
            #expect(try Self.presentKeys(server, upTo: Self.keyCount) == expected)
            let check = try RESPTestClient(port: server.port)
            #expect(try check.command("DBSIZE") == .integer(expected.count + 1 + extraKeys))
            #expect(try check.command("GET", "flushed-7").text == nil)
            if case .integer(let ttl) = try check.command("TTL", "with-ttl") {
                #expect(ttl > 900 && ttl <= 1000)
            } else {
                Issue.record("TTL of with-ttl is not an integer")
            }
            #expect(server.log().contains(logLine), "\(server.log())")
            let layout = try String(contentsOfFile: walDirectory + "/layout", encoding: .utf8)
            #expect(layout == "reactors=\(reactors) num_shards=256\n")
            let directories = try FileManager.default.contentsOfDirectory(atPath: walDirectory)
                .filter { $0 != "layout" && $0 != "flush" && $0 != DataDirectoryLock.fileName }.sorted()
            #expect(directories == (0..<reactors).map { "reactor-\($0)" })
        }

        let fewer = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 1)
        try check(fewer, reactors: 1, extraKeys: 0)
        #expect(try RESPTestClient(port: fewer.port).command("SET", "after-relayout", "y") == .simple("OK"))
        kill(fewer.pid, SIGKILL)
        _ = fewer.stop(signal: SIGKILL)

        // What a re-layout killed before its commit leaves behind.
        let staging = walDirectory + "/relayout.tmp/reactor-0"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: staging + "/snapshot-00000000000000000001.snap.tmp", contents: Data("torn".utf8)))

        let more = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 3)
        try check(more, reactors: 3, extraKeys: 1)
        #expect(try RESPTestClient(port: more.port).command("GET", "after-relayout").text == "y")
        #expect(more.stop() == 0)
        // And the new layout is an ordinary log from then on.
        let again = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 3)
        #expect(try Self.presentKeys(again, upTo: Self.keyCount) == expected)
        #expect(!again.log().contains("re-laid out for a new reactor count"))
        #expect(again.stop() == 0)

        // A kill after the commit, halfway through moving the new logs into
        // place: reactor-0 already moved, reactor-1 and reactor-2 still in
        // relayout/, an old reactor-1 and reactor-3 (whose segments would not
        // even parse) and the old layout file still at the top.
        let files = FileManager.default
        let committed = walDirectory + "/relayout"
        try files.createDirectory(atPath: committed, withIntermediateDirectories: false)
        for index in 1...2 { try files.moveItem(atPath: walDirectory + "/reactor-\(index)", toPath: committed + "/reactor-\(index)") }
        try files.moveItem(atPath: walDirectory + "/layout", toPath: committed + "/layout")
        for index in [1, 3] {
            try files.createDirectory(atPath: walDirectory + "/reactor-\(index)", withIntermediateDirectories: false)
            #expect(files.createFile(atPath: walDirectory + "/reactor-\(index)/segment-00000000000000000001.wal", contents: Data(repeating: 0xAB, count: 64)))
        }
        #expect(files.createFile(atPath: walDirectory + "/layout", contents: Data("reactors=4 num_shards=256\n".utf8)))
        let finished = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 3)
        try check(finished, reactors: 3, extraKeys: 1, logLine: "re-laid out write-ahead log moved into place")
        finished.stop()
    }

    @Test func changedShardCountRefusesWithAdvice() throws {
        let walDirectory = try Self.preparedLog("wal-layout")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let result = try Self.startExpectingRefusal(walDirectory, extra: ["--num-shards", "128"])
        #expect(result.status != 0)
        #expect(result.output.contains("reactors=1 num_shards=256"))
        #expect(result.output.contains("reactors=1 num_shards=128"))
        #expect(result.output.contains("num_shards"))
    }

    /// `write` mode: acknowledged writes are in the page cache, so a crash
    /// of the process (not of the machine) loses none of them.
    @Test func writeModeSurvivesProcessCrash() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-write")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, mode: "write")
        try Self.writeKeys(server, range: 0..<Self.keyCount)
        kill(server.pid, SIGKILL)
        _ = server.stop(signal: SIGKILL)
        let restarted = try Self.startNode(walDirectory, mode: "write")
        #expect(try Self.presentKeys(restarted, upTo: Self.keyCount) == Array(0..<Self.keyCount))
        restarted.stop()
    }

    /// `off`: a pure cache; nothing is written and a restart starts empty.
    @Test func offModeWritesNothingAndForgets() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-off") + "/wal"
        let server = try ServerHarness(arguments: ["--wal-dir", walDirectory], reactors: 1)
        try Self.writeKeys(server, range: 0..<10)
        #expect(server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: walDirectory))
        let restarted = try ServerHarness(arguments: ["--wal-dir", walDirectory], reactors: 1)
        #expect(try Self.presentKeys(restarted, upTo: 10).isEmpty)
        restarted.stop()
    }

    /// A full disk: writes get a clear error and are not acknowledged, reads
    /// go on, and writing resumes once space is freed. Uses a size-limited
    /// tmpfs, so it needs root (CI runs as root).
    @Test(.enabled(if: getuid() == 0, "mounting a small tmpfs needs root"), arguments: ["fsync", "write"])
    func fullDiskRefusesWritesAndRecovers(mode: String) throws {
        let mountPoint = WALCrashTests.temporaryDirectory("wal-full")
        defer { try? FileManager.default.removeItem(atPath: mountPoint) }
        let mounted = try runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mountPoint])
        try #require(mounted.status == 0, "mount failed: \(mounted.output)")
        defer { _ = try? runTool("/bin/umount", ["-l", mountPoint]) }
        let filler = mountPoint + "/filler"
        #expect(FileManager.default.createFile(atPath: filler, contents: Data(count: 3 * 1024 * 1024)))

        let server = try Self.startNode(mountPoint + "/wal", mode: mode)
        let client = try RESPTestClient(port: server.port)
        let value = String(repeating: "f", count: 32 * 1024)
        var acknowledged: [String] = []
        var acknowledgedIncrements = 0
        var failedKeys: [String] = []
        var firstError: String?
        for i in 0..<200 where firstError == nil {
            // A SET and an INCR in one batch: when the batch fails both are
            // undone in memory, so the counter counts acknowledged INCRs only.
            let replies = try client.pipeline([["SET", "full-\(i)", value], ["INCR", "counter"]])
            switch replies[0] {
            case .simple("OK"): acknowledged.append("full-\(i)")
            case .error(let message): firstError = message; failedKeys.append("full-\(i)")
            case let other: Issue.record("unexpected reply \(other)")
            }
            switch replies[1] {
            case .integer(let count): acknowledgedIncrements += 1; #expect(count == acknowledgedIncrements)
            case .error(let message): firstError = firstError ?? message
            case let other: Issue.record("unexpected reply \(other)")
            }
        }
        try #require(firstError != nil, "1 MiB of free space never filled")
        #expect(firstError!.contains("write-ahead log"), "\(firstError!)")
        // Reads are still served; later writes are refused up front.
        #expect(try client.command("GET", acknowledged[0]).text == value)
        // The failed writes were undone: not visible, and a retried INCR counts once.
        #expect(try client.command("GET", "counter").text == String(acknowledgedIncrements))
        for key in failedKeys { #expect(try client.command("GET", key).text == nil, "\(key) failed but is visible") }
        if case .error(let message) = try client.command("SET", "refused", "x") {
            #expect(message.contains("write-ahead log unavailable"))
        } else {
            Issue.record("a write was accepted while the log is failed")
        }
        #expect(server.log().contains("error"))
        #expect(server.log().contains("No space left on device") || server.log().contains("short write"))
        // INFO reads counters the reactors publish once per clock tick.
        var info = ""
        for _ in 0..<50 where !info.contains("wal_writable:0") {
            usleep(20_000)
            info = try client.command("INFO", "persistence").text ?? ""
        }
        #expect(info.contains("wal_writable:0"), "\(info)")
        #expect(!info.contains("wal_errors:0\r"))

        try FileManager.default.removeItem(atPath: filler)
        var resumed = false
        for _ in 0..<50 where !resumed {
            usleep(100_000)
            resumed = try client.command("SET", "after", "1") == .simple("OK")
        }
        #expect(resumed, "writes did not resume after space was freed")
        #expect(try client.command("INCR", "counter") == .integer(acknowledgedIncrements + 1))
        #expect(server.stop() == 0)
        let restarted = try Self.startNode(mountPoint + "/wal", mode: mode)
        let again = try RESPTestClient(port: restarted.port)
        for key in acknowledged {
            #expect(try again.command("GET", key).text == value, "\(key) was acknowledged")
        }
        for key in failedKeys { #expect(try again.command("GET", key).text == nil, "\(key) failed but came back") }
        #expect(try again.command("GET", "counter").text == String(acknowledgedIncrements + 1))
        #expect(try again.command("GET", "after") == .bulk(Array("1".utf8)))
        restarted.stop()
    }
}
