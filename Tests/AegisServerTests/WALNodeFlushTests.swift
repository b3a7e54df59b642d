import AegisProtocol
import Foundation
import Glibc
import Testing

/// The node-wide flush of `wal_mode: fsync` (issue 18), with the real
/// binary and real files: one device flush per group commit for the whole
/// node, whatever the reactor count; its figures in INFO persistence and
/// /metrics; and a failed node flush failing the writes of every reactor
/// it covered.
@Suite(.serialized)
struct WALNodeFlushTests {
    static func persistence(_ client: RESPTestClient) throws -> [String: String] {
        let text = try client.command("INFO", "persistence").text ?? ""
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    static func number(_ fields: [String: String], _ name: String) -> Int { Int(fields[name] ?? "") ?? -1 }

    static func metrics(_ server: ServerHarness) throws -> [String: String] {
        let text = try runTool("curl", ["-s", "--max-time", "10", server.healthURL + "/metrics"]).output
        var samples: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            samples[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return samples
    }

    /// `count` keys per reactor of a 2-reactor node.
    static func keys(_ prefix: String, onReactor reactor: Int, count: Int) -> [String] {
        Array((0...).lazy.map { "\(prefix)\($0)" }.filter { ToolCommandsTests.reactor(of: $0, reactors: 2) == reactor }.prefix(count))
    }

    /// Writes one key per reactor until every reactor's log writes into a
    /// prepared segment (zero-filled to its full size): from then on its
    /// batches are only written and left to the node flush.
    static func writeUntilPreparedSegmentsInUse(_ walDirectory: String, _ client: RESPTestClient, reactors: Int = 2) throws {
        let deadline = Date().addingTimeInterval(10)
        var ready = Set<Int>()
        while Date() < deadline && ready.count < reactors {
            for reactor in 0..<reactors where !ready.contains(reactor) {
                #expect(try client.command("SET", keys("warm-up-", onReactor: reactor, count: 1)[0], "x") == .simple("OK"))
                let newest = WALErrorPathTests.segments(walDirectory).filter { $0.hasPrefix("reactor-\(reactor)/") }.last
                let size = newest.flatMap { try? FileManager.default.attributesOfItem(atPath: walDirectory + "/" + $0)[.size] as? Int }
                if size == 1 << 20 { ready.insert(reactor) }
            }
            if ready.count < reactors { usleep(20_000) }
        }
        try #require(ready.count == reactors, "not every log wrote into a prepared segment: \(WALErrorPathTests.segments(walDirectory))")
    }

    /// One client, one write at a time, over both reactors: each durable
    /// SET costs exactly one device flush (no flush per reactor, none that
    /// waits for company), and the figures in INFO and /metrics agree.
    @Test func sequentialWritesCostOneFlushEachOverTwoReactors() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-flush-seq")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let client = try RESPTestClient(port: server.port)
        try Self.writeUntilPreparedSegmentsInUse(walDirectory, client)
        let before = try Self.persistence(client)
        #expect(before["wal_mode"] == "fsync")
        let writes = Self.keys("a-", onReactor: 0, count: 20) + Self.keys("b-", onReactor: 1, count: 20)
        for key in writes { #expect(try client.command("SET", key, "value-of-" + key) == .simple("OK")) }
        let after = try Self.persistence(client)
        for field in ["wal_flushes", "wal_flush_records"] {
            #expect(Self.number(after, field) - Self.number(before, field) == writes.count, "\(field): \(before) → \(after)")
        }
        #expect(Self.number(after, "wal_own_flushes") == Self.number(before, "wal_own_flushes"), "\(before) → \(after)")
        #expect(Self.number(after, "wal_flush_failures") == 0)
        // Every flush since the start covered one record: the warm-up's too.
        #expect(after["wal_records_per_flush"] == "1=\(Self.number(after, "wal_flushes")),2=0,4=0,8=0,16=0,32=0,64=0,128=0,256=0,1024=0,inf=0")
        let latencyCounts = (after["wal_flush_latency_us"] ?? "").split(separator: ",").compactMap { Int($0.split(separator: "=").last ?? "") }
        #expect(latencyCounts.reduce(0, +) == Self.number(after, "wal_flushes"), "\(after)")
        #expect(after["wal_records_per_flush_avg"] == "1.00")

        let samples = try Self.metrics(server)
        #expect(samples["aegis_wal_flushes_total"] == after["wal_flushes"], "\(samples.filter { $0.key.hasPrefix("aegis_wal") })")
        #expect(samples["aegis_wal_flush_failures_total"] == "0")
        #expect(samples["aegis_wal_flush_records_count"] == after["wal_flushes"])
        #expect(samples["aegis_wal_flush_records_sum"] == after["wal_flush_records"])
        #expect(samples["aegis_wal_flush_records_bucket{le=\"1\"}"] == after["wal_flushes"])
        #expect(samples["aegis_wal_flush_duration_seconds_bucket{le=\"+Inf\"}"] == after["wal_flushes"])
        #expect(server.stop() == 0)

        let restarted = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let again = try RESPTestClient(port: restarted.port)
        for key in writes { #expect(try again.command("GET", key).text == "value-of-" + key, "\(key)") }
        #expect(restarted.stop() == 0)
    }

    /// One reactor has no one to share a flush with, and a syncfs costs
    /// more than an fdatasync of a prepared segment: it syncs each batch
    /// itself, and every flush INFO counts is its own.
    @Test func oneReactorSyncsEachBatchItself() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-flush-one")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 1)
        let client = try RESPTestClient(port: server.port)
        try Self.writeUntilPreparedSegmentsInUse(walDirectory, client, reactors: 1)
        let before = try Self.persistence(client)
        for index in 0..<30 { #expect(try client.command("SET", "one-\(index)", "v\(index)") == .simple("OK")) }
        let after = try Self.persistence(client)
        for field in ["wal_flushes", "wal_own_flushes", "wal_flush_records"] {
            #expect(Self.number(after, field) - Self.number(before, field) == 30, "\(field): \(before) → \(after)")
        }
        #expect(Self.number(after, "wal_own_flushes") == Self.number(after, "wal_flushes"), "\(after)")
        #expect(server.log().contains("each batch syncs itself"), "\(server.log().suffix(2000))")
        #expect(!server.log().contains("another device"), "\(server.log().suffix(2000))")
        #expect(server.stop() == 0)
    }

    /// Many clients at once over two reactors: batches of both reactors
    /// share flushes (fewer flushes than batches, more than one record per
    /// flush), and every acknowledged record was counted in a flush.
    @Test func concurrentWritersShareFlushesAcrossReactors() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-flush-many")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let client = try RESPTestClient(port: server.port)
        try Self.writeUntilPreparedSegmentsInUse(walDirectory, client)
        let before = try Self.persistence(client)
        let clients = 16
        let writesEach = 100
        let acknowledged = Locked(0)
        let threads = (0..<clients).map { writer in
            Thread {
                guard let connection = try? RESPTestClient(port: server.port) else { return }
                var count = 0
                for i in 0..<writesEach where (try? connection.command("SET", "w\(writer)-\(i)", "v\(i)")) == .simple("OK") { count += 1 }
                acknowledged.withLock { $0 += count }
            }
        }
        for thread in threads { thread.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let total = acknowledged.withLock { $0 }
        #expect(total == clients * writesEach)
        let after = try Self.persistence(client)
        let flushes = Self.number(after, "wal_flushes") - Self.number(before, "wal_flushes")
        let records = Self.number(after, "wal_flush_records") - Self.number(before, "wal_flush_records")
        #expect(records == total, "\(before) → \(after)")
        #expect(flushes > 0 && flushes < records, "records per flush must exceed 1: \(flushes) flushes for \(records) records")
        // Before issue 18 every batch had its own fdatasync: flushes == batches.
        let batches = Self.number(after, "wal_batches") - Self.number(before, "wal_batches")
        #expect(flushes < batches, "batches must share flushes: \(flushes) flushes for \(batches) batches")
        #expect(server.stop() == 0)
    }

    /// A node flush that fails (EIO after 1.5 s) while batches of both
    /// reactors wait for it, one in it and two handed over while it runs:
    /// every one of those writes is answered with an error (its syncfs
    /// wrote back every dirty page, so the error may have been any of
    /// theirs), none is acknowledged or comes back after a crash, the
    /// failure is counted, and both logs recover.
    @Test func failedNodeFlushFailsTheWritesOfEveryReactorInIt() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-flush-fail")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory),
                                       environment: [WALErrorPathTests.faultVariable: "syncfs.flush=EIO@1+1500"], reactors: 2)
        let client = try RESPTestClient(port: server.port)
        try Self.writeUntilPreparedSegmentsInUse(walDirectory, client)
        let first = Self.keys("first-", onReactor: 0, count: 1)[0]
        let (second, third) = (Self.keys("second-", onReactor: 0, count: 1)[0], Self.keys("third-", onReactor: 1, count: 1)[0])
        let replies = Locked<[String: RESPValue]>([:])
        func write(_ key: String) -> Thread {
            Thread {
                guard let connection = try? RESPTestClient(port: server.port),
                      let reply = try? connection.command("SET", key, "value") else { return }
                replies.withLock { $0[key] = reply }
            }
        }
        // The first flush covers `first` and sleeps before it fails; the
        // writes sent meanwhile, one per reactor, fail with it.
        let firstWriter = write(first)
        firstWriter.start()
        usleep(200_000)
        let others = [write(second), write(third)]
        for thread in others { thread.start() }
        while !firstWriter.isFinished || others.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let answered = replies.withLock { $0 }
        for key in [first, second, third] {
            guard case .error(let message) = answered[key] else {
                Issue.record("\(key) was answered \(String(describing: answered[key])) after its node flush failed")
                continue
            }
            #expect(message.contains("write-ahead log write failed"), "\(message)")
        }
        if case .error(let message) = answered[third] {
            #expect(message.contains("the node's flush"), "\(message)")
            #expect(message.contains("Input/output error"), "\(message)")
        }
        for key in [first, second, third] { #expect(try client.command("GET", key).text == nil, "\(key) failed but is visible") }
        // The failed flush failed a batch of each reactor.
        #expect(server.log().contains("reactors=0,1"), "\(server.log().suffix(2000))")
        let beforeRecovery = try Self.persistence(client)
        for reactor in 0..<2 {
            #expect(try WALErrorPathTests.waitUntilWritable(client, key: Self.keys("after-", onReactor: reactor, count: 1)[0]),
                    "reactor \(reactor) did not accept writes again")
        }
        let info = try Self.persistence(client)
        #expect(Self.number(info, "wal_flush_failures") == 1, "\(info)")
        // Each log resumed in a plain segment (its probe's), whose batches
        // grow the file: they must sync themselves, not ride the node flush.
        for field in ["wal_flushes", "wal_own_flushes"] {
            #expect(Self.number(info, field) - Self.number(beforeRecovery, field) == 2, "\(field): \(beforeRecovery) → \(info)")
        }
        kill(server.process.processIdentifier, SIGKILL)
        _ = server.stop(signal: SIGKILL)

        let restarted = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let again = try RESPTestClient(port: restarted.port)
        for key in [first, second, third] { #expect(try again.command("GET", key).text == nil, "\(key) failed but came back") }
        for reactor in 0..<2 {
            #expect(try again.command("GET", Self.keys("warm-up-", onReactor: reactor, count: 1)[0]).text == "x")
            #expect(try again.command("GET", Self.keys("after-", onReactor: reactor, count: 1)[0]).text == "after")
        }
        #expect(restarted.stop() == 0)
    }
}

/// A value shared by the test's client threads.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
