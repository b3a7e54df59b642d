import Foundation
import Glibc
import Testing

/// The write-ahead log's error paths with the real binary (issue 14, items
/// 7 and 8): a missing segment, and faults injected through the log's
/// kernel door (`AEGISKV_WAL_FAULTS`): each reaches the client as a clear
/// error, and nothing acknowledged is lost.
@Suite(.serialized)
struct WALErrorPathTests {
    static let faultVariable = "AEGISKV_WAL_FAULTS"

    static func value(_ i: Int) -> String { "value-\(i)-" + String(repeating: "d", count: 2048) }

    /// One reactor, so one log and calls counted in the order of the writes.
    /// One reactor unless told: it syncs each batch itself (the node flush,
    /// a syncfs, is shared only by two or more reactors).
    static func startNode(_ walDirectory: String, mode: String = "fsync", faults: String? = nil, reactors: Int = 1) throws -> ServerHarness {
        try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory, mode: mode),
                          environment: faults.map { [faultVariable: $0] } ?? [:], reactors: reactors)
    }

    static func segments(_ walDirectory: String) -> [String] {
        WALCrashTests.files(in: walDirectory).filter { $0.hasSuffix(".wal") }
    }

    static func expectValues(_ server: ServerHarness, present: [Int], absent: [Int], context: String) throws {
        let client = try RESPTestClient(port: server.port)
        for chunk in stride(from: 0, to: present.count, by: 200).map({ Array(present[$0..<min($0 + 200, present.count)]) }) {
            let replies = try client.pipeline(chunk.map { ["GET", "key-\($0)"] })
            for (i, reply) in zip(chunk, replies) {
                #expect(reply.text == value(i), "\(context): key-\(i) was acknowledged but is \(reply.text.map { String($0.prefix(16)) } ?? "missing")")
            }
        }
        for i in absent {
            #expect(try client.command("GET", "key-\(i)").text == nil, "\(context): key-\(i) failed but is visible")
        }
    }

    /// Polls writes until the log accepts them again (it probes the disk
    /// about once a second after a fault); false after the deadline.
    static func waitUntilWritable(_ client: RESPTestClient, key: String, deadlineSeconds: Double = 10) throws -> Bool {
        let deadline = Date().addingTimeInterval(deadlineSeconds)
        while Date() < deadline {
            if try client.command("SET", key, "after") == .simple("OK") { return true }
            usleep(100_000)
        }
        return false
    }

    // MARK: - Item 7: a deleted segment

    /// A segment removed from the middle of the log, or the oldest one, is
    /// refused at start with the file named (it was replayed silently
    /// without it); put back, every acknowledged write is there.
    @Test func missingSegmentRefusesToStartAndNamesTheFile() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-missing")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        // 1,600 writes of 2 KiB: 3.3 MB, several 1 MiB segments and below
        // the 4 MiB that starts a snapshot.
        let keyCount = 1600
        let server = try Self.startNode(walDirectory)
        let client = try RESPTestClient(port: server.port)
        for start in stride(from: 0, to: keyCount, by: 50) {
            let replies = try client.pipeline((start..<start + 50).map { ["SET", "key-\($0)", Self.value($0)] })
            #expect(replies.allSatisfy { $0 == .simple("OK") })
        }
        kill(server.process.processIdentifier, SIGKILL)
        _ = server.stop(signal: SIGKILL)
        let segments = Self.segments(walDirectory)
        try #require(segments.count >= 3, "expected several segments: \(segments)")
        #expect(!WALCrashTests.files(in: walDirectory).contains { $0.hasSuffix(".snap") })

        let aside = walDirectory + "/aside.wal"
        for missing in [segments[segments.count / 2], segments[0]] {
            let path = walDirectory + "/" + missing
            try FileManager.default.moveItem(atPath: path, toPath: aside)
            let (output, status) = try WALRecoveryTests.startExpectingRefusal(walDirectory)
            #expect(status != 0 && status != 124, "started without \(missing) (status \(status)): \(output.suffix(600))")
            #expect(output.contains("WAL segment missing: \(path)"), "\(output.suffix(600))")
            try FileManager.default.moveItem(atPath: aside, toPath: path)
        }

        let restarted = try Self.startNode(walDirectory)
        try Self.expectValues(restarted, present: Array(0..<keyCount), absent: [], context: "segments put back")
        #expect(restarted.stop() == 0)
    }

    /// The writer removes a segment whose first batch failed; the next one
    /// must take its number, or the next start sees a gap and refuses.
    @Test func failedFirstBatchOfASegmentLeavesNoGap() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-firstfail")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, faults: "write.segment=EIO@1")
        let client = try RESPTestClient(port: server.port)
        guard case .error = try client.command("SET", "key-0", Self.value(0)) else {
            Issue.record("the first write did not fail")
            return
        }
        #expect(try Self.waitUntilWritable(client, key: "after"), "writes did not resume")
        #expect(try client.command("SET", "key-1", Self.value(1)) == .simple("OK"))
        kill(server.process.processIdentifier, SIGKILL)
        _ = server.stop(signal: SIGKILL)

        let restarted = try Self.startNode(walDirectory)
        try Self.expectValues(restarted, present: [1], absent: [0], context: "after a failed first batch")
        #expect(restarted.stop() == 0)
    }

    /// A newest segment cut off before its header (a prepared segment
    /// renamed into place just before a crash) is removed at start; the
    /// next segment must take its number.
    @Test func newestSegmentCutOffBeforeItsHeaderLeavesNoGap() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-zeroseg")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory)
        let client = try RESPTestClient(port: server.port)
        for i in 0..<5 { #expect(try client.command("SET", "key-\(i)", Self.value(i)) == .simple("OK")) }
        #expect(server.stop() == 0)
        let newest = Self.segments(walDirectory).compactMap { UInt64($0.dropFirst("reactor-0/segment-".count).dropLast(4)) }.max() ?? 0
        let zeroSegment = WALRecoveryTests.segmentPath(walDirectory, Int(newest) + 1)
        #expect(FileManager.default.createFile(atPath: zeroSegment, contents: Data(count: 64 * 1024)))

        let second = try Self.startNode(walDirectory)
        #expect(second.log().contains("removing a segment cut off before its header"), "\(second.log())")
        let again = try RESPTestClient(port: second.port)
        #expect(try again.command("SET", "key-5", Self.value(5)) == .simple("OK"))
        kill(second.process.processIdentifier, SIGKILL)
        _ = second.stop(signal: SIGKILL)

        let third = try Self.startNode(walDirectory)
        try Self.expectValues(third, present: Array(0..<6), absent: [], context: "after a segment cut off before its header")
        #expect(third.stop() == 0)
    }

    // MARK: - Item 7: io_uring submit errors

    /// io_uring_enter refusing the batch's fdatasync: the client gets an
    /// error instead of waiting forever, the write is undone, the log
    /// recovers, and a polite stop still drains. The first batch's: it
    /// always goes through the ring (its fdatasync and the directory's),
    /// while with two or more reactors later small batches into a prepared
    /// segment submit nothing (the node flush covers them).
    @Test func failedSubmitFailsTheBatch() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-submit")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, faults: "submit.segment=EAGAIN@1")
        let client = try RESPTestClient(port: server.port)
        // The first batch's submission fails: the reply must come (the
        // client's receive timeout is 10 s) and be an error.
        let reply = try client.command("SET", "key-5", Self.value(5))
        guard case .error(let message) = reply else {
            Issue.record("a write whose submission failed was answered \(reply)")
            return
        }
        #expect(message.contains("write-ahead log write failed"), "\(message)")
        #expect(message.contains("Resource temporarily unavailable"), "\(message)")
        #expect(try client.command("GET", "key-5").text == nil, "the failed write was not undone")
        #expect(try Self.waitUntilWritable(client, key: "after"), "writes did not resume after the failed submission")
        for i in [0, 1, 2, 3, 4, 6] { #expect(try client.command("SET", "key-\(i)", Self.value(i)) == .simple("OK")) }
        #expect(server.stop() == 0, "drain did not finish")

        let restarted = try Self.startNode(walDirectory)
        try Self.expectValues(restarted, present: [0, 1, 2, 3, 4, 6], absent: [5], context: "after a failed submission")
        #expect(restarted.stop() == 0)
    }

    /// An io_uring that never takes a submission again: every write gets
    /// an error (none hangs), reads go on, and a polite stop still drains.
    @Test func persistentSubmitFailureAnswersEveryWriteAndStillStops() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-submit-dead")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, faults: "submit=ENOMEM@3x0")
        let client = try RESPTestClient(port: server.port)
        var acknowledged: [Int] = []
        var errors = 0
        for i in 0..<12 {
            switch try client.command("SET", "key-\(i)", Self.value(i)) {
            case .simple("OK"): acknowledged.append(i)
            case .error(let message): errors += 1; #expect(message.contains("write-ahead log"), "\(message)")
            case let other: Issue.record("unexpected reply \(other)")
            }
            usleep(250_000)  // lets the log probe the disk between writes
        }
        #expect(errors > 0)
        if let last = acknowledged.last { #expect(try client.command("GET", "key-\(last)").text == Self.value(last)) }
        #expect(server.stop() == 0, "drain did not finish")
        let restarted = try Self.startNode(walDirectory)
        try Self.expectValues(restarted, present: acknowledged, absent: Array(Set(0..<12).subtracting(acknowledged)),
                              context: "after a dead io_uring")
        #expect(restarted.stop() == 0)
    }

    // MARK: - Item 7: a snapshot never holds a failed write

    /// A snapshot taken while a batch is on its way to a slow disk that then
    /// fails: the snapshot holds the batch's write, so it must not become
    /// the log (the write is undone and its client told to retry).
    /// One reactor: the 11th batch's own fdatasync fails 3 s after it was
    /// submitted. Two: the 11th node flush (after the warm-up, one per
    /// write into a prepared segment) does.
    @Test(arguments: [(1, "fdatasync.segment=EIO@11+3000"), (2, "syncfs.flush=EIO@11+3000")])
    func snapshotNeverKeepsAWriteWhoseBatchFailed(reactors: Int, faults: String) throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-snapfail")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, faults: faults, reactors: reactors)
        let client = try RESPTestClient(port: server.port)
        if reactors > 1 { try WALNodeFlushTests.writeUntilPreparedSegmentsInUse(walDirectory, client, reactors: reactors) }
        for i in 0..<10 { #expect(try client.command("SET", "key-\(i)", Self.value(i)) == .simple("OK")) }
        let failing = Thread {
            let writer = try? RESPTestClient(port: server.port)
            _ = try? writer?.command("SET", "key-10", Self.value(10))
        }
        failing.start()
        // Applied in memory (another connection sees it) while its batch waits for the disk.
        let reader = try RESPTestClient(port: server.port)
        var applied = false
        for _ in 0..<200 where !applied {
            applied = try reader.command("GET", "key-10").text == Self.value(10)
            if !applied { usleep(5_000) }
        }
        try #require(applied, "the write never reached memory")
        _ = try runTool("curl", ["-s", "--max-time", "20", "-X", "POST", server.healthURL + "/admin/wal/truncate"])
        while failing.isExecuting { usleep(10_000) }
        #expect(try reader.command("GET", "key-10").text == nil, "the failed write was not undone")
        kill(server.process.processIdentifier, SIGKILL)
        _ = server.stop(signal: SIGKILL)

        let restarted = try Self.startNode(walDirectory, reactors: reactors)
        try Self.expectValues(restarted, present: Array(0..<10), absent: [10], context: "after a snapshot during a failing batch (\(faults))")
        #expect(restarted.stop() == 0)
    }

    // MARK: - Item 8: disk faults through the kernel door

    /// EIO and ENOSPC on a segment write, a failed fdatasync of a batch
    /// that syncs itself (one reactor: every batch; the first of a segment
    /// always) and a failed node flush (two reactors, a batch into a
    /// prepared segment): the client of that batch gets a clear error
    /// naming the fault, later writes are refused until the disk takes
    /// data again, and everything acknowledged is there after a crash.
    /// `failing` is the write the rule hits; rules on the node flush count
    /// from the first write once every log writes into a prepared segment
    /// (`writeUntilPreparedSegmentsInUse`).
    @Test(arguments: [
        ("fsync", "write.segment=EIO@6", 5, "Input/output error", 1),
        ("fsync", "write.segment=ENOSPC@6", 5, "No space left on device", 1),
        ("fsync", "fdatasync.segment=EIO@1", 0, "Input/output error", 1),
        ("fsync", "fdatasync.segment=EIO@6", 5, "Input/output error", 1),
        ("fsync", "syncfs.flush=EIO@6", 5, "Input/output error", 2),
        ("write", "write.segment=EIO@6", 5, "Input/output error", 1),
    ])
    func diskFaultReachesTheClientAndLosesNothingAcknowledged(mode: String, faults: String, failing: Int, errorText: String,
                                                              reactors: Int) throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-fault")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try Self.startNode(walDirectory, mode: mode, faults: faults, reactors: reactors)
        #expect(server.log().contains("fault injection armed"))
        let client = try RESPTestClient(port: server.port)
        if reactors > 1 { try WALNodeFlushTests.writeUntilPreparedSegmentsInUse(walDirectory, client, reactors: reactors) }
        for i in 0..<failing { #expect(try client.command("SET", "key-\(i)", Self.value(i)) == .simple("OK")) }
        let reply = try client.command("SET", "key-\(failing)", Self.value(failing))
        guard case .error(let message) = reply else {
            Issue.record("\(faults): the faulted write was answered \(reply)")
            return
        }
        #expect(message.contains("write-ahead log write failed"), "\(message)")
        #expect(message.contains(errorText), "\(message)")
        if case .error(let refusal) = try client.command("SET", "refused", "x") {
            #expect(refusal.contains("write-ahead log unavailable"), "\(refusal)")
        }
        if failing > 0 {
            #expect(try client.command("GET", "key-\(failing - 1)").text == Self.value(failing - 1), "reads stop after a disk fault")
        }
        #expect(try Self.waitUntilWritable(client, key: "after"), "\(faults): writes did not resume")
        #expect(try client.command("SET", "key-\(failing + 1)", Self.value(failing + 1)) == .simple("OK"))
        kill(server.process.processIdentifier, SIGKILL)
        _ = server.stop(signal: SIGKILL)

        let restarted = try Self.startNode(walDirectory, mode: mode, reactors: reactors)
        try Self.expectValues(restarted, present: Array(0..<failing) + [failing + 1], absent: [failing], context: faults)
        #expect(try RESPTestClient(port: restarted.port).command("GET", "after").text == "after")
        #expect(restarted.stop() == 0)
    }

    /// A rule that cannot be read stops the start with a message naming it.
    @Test func malformedFaultPlanIsRefused() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-badplan")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let (output, status) = try runTool("env", [Self.faultVariable + "=fdatasync.segment=EWHAT", "timeout", "20",
                                                   ServerHarness.binaryPath, "--bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
                                                   "--gossip-bind-addr", "127.0.0.1:0", "--data-dir", walDirectory + ".data",
                                                   "--reactors", "1"] + WALCrashTests.walArguments(walDirectory))
        #expect(status != 0 && status != 124, "\(output.suffix(400))")
        #expect(output.contains("cannot read the fault rule \"fdatasync.segment=EWHAT\""), "\(output.suffix(400))")
    }
}
