import AegisProtocol
import CSupport
import Foundation
import Glibc
import Testing

/// `aegiskv-cli` run as an operator runs it: a real process against real
/// `aegiskv` nodes, its output, exit status and peak memory read back.
@Suite(.serialized)
struct CLIToolTests {
    /// The CLI sits next to aegiskv in the build folder.
    static var cliPath: String {
        URL(fileURLWithPath: ServerHarness.binaryPath).deletingLastPathComponent()
            .appendingPathComponent("aegiskv-cli").path
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-cli-\(UUID().uuidString)-\(name)").path
    }

    // MARK: - Keys

    @Test func keyCommandsRoundTrip() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let addr = "127.0.0.1:\(server.port)"

        var run = try CLIRun(["--addr", addr, "ping"])
        #expect(run.status == 0 && run.text == "PONG\n", "\(run)")

        // Global options work after the command's name too.
        run = try CLIRun(["set", "greeting", "hello world", "--addr", addr, "--ttl", "5m"])
        #expect(run.status == 0 && run.text == "OK\n", "\(run)")
        run = try CLIRun(["--addr", addr, "get", "greeting"])
        #expect(run.status == 0 && run.text == "hello world", "get adds no newline when stdout is not a terminal: \(run)")
        run = try CLIRun(["--addr", addr, "ttl", "greeting"])
        #expect(run.status == 0 && ["299\n", "300\n"].contains(run.text), "\(run)")
        run = try CLIRun(["--addr", addr, "ttl", "--ms", "greeting"])
        #expect(run.status == 0 && (Int(run.text.dropLast()) ?? 0) > 298_000, "\(run)")

        for (ttl, seconds) in [("30", 30), ("90s", 90), ("1h", 3600), ("1h30m", 5400)] {
            run = try CLIRun(["--addr", addr, "set", "k", "v", "--ttl", ttl])
            #expect(run.status == 0, "\(run)")
            run = try CLIRun(["--addr", addr, "ttl", "k"])
            #expect([seconds - 1, seconds].map { "\($0)\n" }.contains(run.text), "--ttl \(ttl): \(run)")
        }

        run = try CLIRun(["--addr", addr, "set", "plain", "x"])
        #expect(run.status == 0)
        run = try CLIRun(["--addr", addr, "ttl", "plain"])
        #expect(run.status == 0 && run.text == "no expiry\n", "\(run)")

        run = try CLIRun(["--addr", addr, "ttl", "absent"])
        #expect(run.status == 1 && run.stdout.isEmpty && run.errorText == "aegiskv-cli: no such key: \"absent\"\n", "\(run)")
        run = try CLIRun(["--addr", addr, "get", "absent"])
        #expect(run.status == 1 && run.stdout.isEmpty && run.errorText.contains("no such key"), "\(run)")

        // Binary values go in through --stdin and come out byte for byte.
        let binary: [UInt8] = [0, 255, 13, 10, 0xC3, 0x28, 34, 92, 0, 1, 2] + Array("tail".utf8)
        run = try CLIRun(["--addr", addr, "set", "bin", "--stdin"], stdin: binary)
        #expect(run.status == 0 && run.text == "OK\n", "\(run)")
        run = try CLIRun(["--addr", addr, "get", "bin"])
        #expect(run.status == 0 && run.stdout == binary, "\(run)")

        run = try CLIRun(["--addr", addr, "del", "greeting", "plain", "absent"])
        #expect(run.status == 0 && run.text == "2\n", "\(run)")
        run = try CLIRun(["--addr", addr, "get", "greeting"])
        #expect(run.status == 1)
    }

    @Test func statsAndClusterReadTheOperationsPort() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let http = "127.0.0.1:\(server.healthPort)"
        var run = try CLIRun(["--http-addr", http, "stats"])
        #expect(run.status == 0, "\(run)")
        #expect(try AdminHTTPTests().jq(".state", run.text) == "\"serving\"", "\(run)")
        run = try CLIRun(["--http-addr", http, "cluster"])
        #expect(run.status == 0, "\(run)")
        #expect(try AdminHTTPTests().jq("[.members[] | .status == \"alive\"] | all", run.text) == "true", "\(run)")
        // Without --http-addr the CLI asks the --addr host on port 7702; an
        // explicit address is what a test can use.
        run = try CLIRun(["--http-addr", "127.0.0.1:\(server.port)", "stats"])
        #expect(run.status == 2 && run.errorLines.count == 1, "the client port does not speak HTTP: \(run)")
    }

    // MARK: - Errors

    @Test func errorsAreOneLineWithStatus() throws {
        let closedPort = try freePort()
        var run = try CLIRun(["--addr", "127.0.0.1:\(closedPort)", "ping"])
        #expect(run.status == 2 && run.stdout.isEmpty, "\(run)")
        #expect(run.errorText == "aegiskv-cli: cannot connect to 127.0.0.1:\(closedPort): Connection refused\n", "\(run)")

        run = try CLIRun(["--addr", "127.0.0.1:\(closedPort)", "dump"])
        #expect(run.status == 2 && run.stdout.isEmpty && run.errorLines.count == 1, "no partial document on a failed connect: \(run)")

        run = try CLIRun(["--http-addr", "127.0.0.1:\(closedPort)", "stats"])
        #expect(run.status == 2 && run.errorLines.count == 1, "\(run)")
        #expect(run.errorText.contains("http://127.0.0.1:\(closedPort)/stats"), "\(run)")

        run = try CLIRun(["--addr", "127.0.0.1:\(closedPort)", "set", "k", "v", "--ttl", "5x"])
        #expect(run.status == 64 && run.errorLines.count == 1 && run.errorText.contains("--ttl"), "\(run)")
        run = try CLIRun(["set", "k", "v", "--ttl", "0"])
        #expect(run.status == 64 && run.errorLines.count == 1 && run.errorText.contains("more than 0"), "\(run)")

        run = try CLIRun(["--addr", "127.0.0.1:1", "frobnicate", "x"])
        #expect(run.status == 64 && run.errorLines.count == 1 && run.errorText.contains("unknown command 'frobnicate'"), "\(run)")
        run = try CLIRun(["get"])
        #expect(run.status == 64 && run.errorLines.count == 1, "\(run)")
        run = try CLIRun(["--addr", "node1:notaport", "ping"])
        #expect(run.status == 64 && run.errorLines.count == 1 && run.errorText.contains("notaport"), "\(run)")
        run = try CLIRun(["--timeout", "soon", "ping"])
        #expect(run.status == 64 && run.errorLines.count == 1 && run.errorText.contains("--timeout"), "\(run)")

        let missing = Self.temporaryPath("missing.json")
        run = try CLIRun(["--addr", "127.0.0.1:\(closedPort)", "restore", missing])
        #expect(run.status == 2 && run.errorText == "aegiskv-cli: cannot open \(missing): No such file or directory\n", "\(run)")
    }

    @Test func serverErrorRepliesAndAuth() throws {
        let server = try ServerHarness(arguments: ["--auth-token", "s3cret"])
        defer { #expect(server.stop() == 0) }
        let addr = "127.0.0.1:\(server.port)"

        var run = try CLIRun(["--addr", addr, "get", "k"])
        #expect(run.status == 2 && run.errorLines.count == 1 && run.errorText.contains("NOAUTH"), "\(run)")
        run = try CLIRun(["--addr", addr, "--auth", "wrong", "ping"])
        #expect(run.status == 2 && run.errorLines.count == 1 && run.errorText.contains("authentication with \(addr) failed"), "\(run)")
        run = try CLIRun(["--addr", addr, "--auth", "s3cret", "set", "k", "v"])
        #expect(run.status == 0 && run.text == "OK\n", "\(run)")
        run = try CLIRun(["--addr", addr, "get", "k"], environment: ["AEGIS_AUTH_TOKEN": "s3cret"])
        #expect(run.status == 0 && run.text == "v", "\(run)")

        // A reply the node refuses is the node's own words on one line.
        let hugeKey = String(repeating: "k", count: 70_000)
        run = try CLIRun(["--addr", addr, "--auth", "s3cret", "set", hugeKey, "v"])
        #expect(run.status == 2 && run.errorLines.count == 1 && run.errorText.contains("ERR key is larger than 65536 bytes"), "\(run)")
    }

    // MARK: - Dump and restore

    /// 100k entries with binary keys and values, with and without TTLs:
    /// dump, check with jq, restore into a fresh node, compare both nodes.
    @Test func dumpAndRestoreHundredThousandEntries() throws {
        let count = 100_000
        // One reactor each: these debug-built nodes spend most of the test's
        // CPU, and the cross-reactor hop adds nothing this test looks at.
        let source = try ServerHarness(reactors: 1)
        defer { #expect(source.stop() == 0) }
        let target = try ServerHarness(reactors: 1)
        defer { #expect(target.stop() == 0) }
        let fillWindows = try DataSet.fill(port: source.port, count: count)

        let dumpPath = Self.temporaryPath("dump.json")
        defer { try? FileManager.default.removeItem(atPath: dumpPath) }
        let dump = try CLIRun(["--addr", "127.0.0.1:\(source.port)", "dump"], stdoutPath: dumpPath)
        #expect(dump.status == 0, "\(dump)")
        #expect(dump.errorText == "dumped \(count) entries from 127.0.0.1:\(source.port)\n", "\(dump)")

        let jq = try runTool("jq", ["-e", #".format == "aegiskv-dump" and .version == 1 and .count == \#(count) and (.entries | length) == \#(count) and ([.entries[] | select(.ttl_ms != null)] | length) == \#(count / 2)"#, dumpPath])
        #expect(jq.status == 0, "jq rejected the dump: \(jq.output.prefix(500))")

        let restore = try CLIRun(["--addr", "127.0.0.1:\(target.port)", "restore", dumpPath])
        #expect(restore.status == 0, "\(restore)")
        #expect(restore.errorText == "restored \(count), skipped-expired 0, failed 0 (into 127.0.0.1:\(target.port))\n", "\(restore)")

        try DataSet.verify(target: target.port, count: count, fillWindows: fillWindows)

        // Memory does not grow with the data: compare peaks with a 10x smaller node.
        let small = try ServerHarness(reactors: 1)
        defer { #expect(small.stop() == 0) }
        try DataSet.fill(port: small.port, count: count / 10)
        let smallDumpPath = Self.temporaryPath("small.json")
        defer { try? FileManager.default.removeItem(atPath: smallDumpPath) }
        let smallDump = try CLIRun(["--addr", "127.0.0.1:\(small.port)", "dump"], stdoutPath: smallDumpPath)
        #expect(smallDump.status == 0, "\(smallDump)")
        let smallRestore = try CLIRun(["--addr", "127.0.0.1:\(small.port)", "restore", smallDumpPath])
        #expect(smallRestore.status == 0, "\(smallRestore)")
        // Holding the entries (or the file) would cost more than the dump's
        // size; allow half of it (measured: about 1 MB apart).
        let dumpBytes = (try FileManager.default.attributesOfItem(atPath: dumpPath)[.size] as? Int) ?? 0
        #expect(dumpBytes > 4 << 20)
        let bound = dumpBytes / 2 / 1024
        #expect(dump.maxResidentKB < smallDump.maxResidentKB + bound,
                "dump peak RSS \(dump.maxResidentKB) KB for \(count) entries vs \(smallDump.maxResidentKB) KB for \(count / 10)")
        #expect(restore.maxResidentKB < smallRestore.maxResidentKB + bound,
                "restore peak RSS \(restore.maxResidentKB) KB for \(count) entries vs \(smallRestore.maxResidentKB) KB for \(count / 10)")
    }

    /// The runbook's emergency export during an incident with a rate limit
    /// set: the node refuses the excess ("retry later"), and dump and
    /// restore slow down to it instead of failing or losing entries.
    @Test func dumpAndRestoreKeepGoingUnderTheNodesRateLimit() throws {
        let count = 6_000
        let source = try ServerHarness(reactors: 1)
        defer { #expect(source.stop() == 0) }
        let target = try ServerHarness(reactors: 1)
        defer { #expect(target.stop() == 0) }
        let fillWindows = try DataSet.fill(port: source.port, count: count)
        for server in [source, target] {
            let limit = try runTool("curl", ["-sf", "-X", "POST", server.healthURL + "/admin/rate-limit?ops_per_sec=4000&burst=500"])
            #expect(limit.status == 0, "\(limit.output)")
        }

        let dumpPath = Self.temporaryPath("limited.json")
        defer { try? FileManager.default.removeItem(atPath: dumpPath) }
        let dump = try CLIRun(["--addr", "127.0.0.1:\(source.port)", "dump"], stdoutPath: dumpPath)
        #expect(dump.status == 0, "\(dump)")
        #expect(dump.errorText.hasPrefix("dumped \(count) entries from 127.0.0.1:\(source.port); "), "\(dump)")
        #expect(dump.errorText.contains("reads sent again after the node's rate limit refused them"), "\(dump)")

        let restore = try CLIRun(["--addr", "127.0.0.1:\(target.port)", "restore", dumpPath])
        #expect(restore.status == 0, "\(restore)")
        #expect(restore.errorText.hasPrefix("restored \(count), skipped-expired 0, failed 0 (into 127.0.0.1:\(target.port)); "), "\(restore)")
        #expect(restore.errorText.contains("sent again after the node's rate limit refused them"), "\(restore)")

        let lift = try runTool("curl", ["-sf", "-X", "POST", target.healthURL + "/admin/rate-limit?ops_per_sec=0"])
        #expect(lift.status == 0, "\(lift.output)")
        try DataSet.verify(target: target.port, count: count, fillWindows: fillWindows)
    }

    @Test func restoreKeepsExpiryAndSkipsExpiredEntries() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let path = Self.temporaryPath("expiry.json")
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Hand-written to the documented format: one entry expired an hour
        // ago, one has 10 minutes left, one never expires, one has a
        // base64 key, escapes and a \u escape outside the BMP.
        let text = """
            {"format":"aegiskv-dump","version":1,"source":"elsewhere:7700","started_at_ms":\(now - 7_200_000),"entries":[
            {"key":"old","value":"gone","ttl_ms":1000,"expires_at_ms":\(now - 3_600_000)},
            {"key":"soon","value":"kept","ttl_ms":5000,"expires_at_ms":\(now + 600_000)},
            {"key":"forever","value":"a\\"b\\\\c\\n\\u00e9\\ud83d\\ude00"},
            { "key_b64" : "AP8=", "value_b64":"" , "extra": null }
            ],"count":4,"skipped":0,"finished_at_ms":\(now)}

            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        var run = try CLIRun(["--addr", "127.0.0.1:\(server.port)", "restore", path])
        #expect(run.status == 0 && run.errorText.hasPrefix("restored 3, skipped-expired 1, failed 0"), "\(run)")

        let client = try BinarySafeRESPClient(port: server.port)
        let replies = try client.pipeline([["PTTL", "soon"], ["GET", "old"], ["GET", "forever"], ["PTTL", "forever"]]
            .map { $0.map { Array($0.utf8) } } + [[Array("GET".utf8), [0, 255]]])
        if case .integer(let pttl) = replies[0] { #expect(abs(pttl - 600_000) < 2000, "PTTL soon = \(pttl)") } else { Issue.record("\(replies[0])") }
        #expect(replies[1] == .null)
        #expect(replies[2] == .bulk(Array("a\"b\\c\né😀".utf8)))
        #expect(replies[3] == .integer(-1))
        #expect(replies[4] == .bulk([]))

        // --relative-ttl restarts each ttl_ms from now: the old entry comes back for a second.
        run = try CLIRun(["--addr", "127.0.0.1:\(server.port)", "restore", "--relative-ttl", "-"], stdin: Array(text.utf8))
        #expect(run.status == 0 && run.errorText.hasPrefix("restored 4, skipped-expired 0, failed 0"), "\(run)")
    }

    @Test func malformedDumpsAreRejectedWithTheLine() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try DataSet.fill(port: server.port, count: 50)
        let good = try CLIRun(["--addr", "127.0.0.1:\(server.port)", "dump"])
        #expect(good.status == 0)
        let lines = good.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 53 && lines[52].isEmpty, "header, 50 entries, closing line, final newline")
        let empty = try ServerHarness()
        defer { #expect(empty.stop() == 0) }

        func restore(_ text: String) throws -> CLIRun {
            let path = Self.temporaryPath("bad.json")
            defer { try? FileManager.default.removeItem(atPath: path) }
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let run = try CLIRun(["--addr", "127.0.0.1:\(empty.port)", "restore", path])
            #expect(run.status == 2 && run.errorLines.count == 1 && run.errorText.contains(path), "\(run)")
            return run
        }
        let truncatedAtLine = lines[0..<30].joined(separator: "\n") + "\n"
        #expect(try restore(truncatedAtLine).errorText.contains("ends after line 30 without the closing line"))
        let truncatedMidLine = lines[0..<20].joined(separator: "\n") + "\n" + lines[20].prefix(lines[20].count / 2)
        #expect(try restore(truncatedMidLine).errorText.contains(":21: "))
        var badEntry = lines
        badEntry[7] = #"{"key":"x","value":12},"#
        #expect(try restore(badEntry.joined(separator: "\n")).errorText.contains(":8: \"value\" must be a string"))
        var missingComma = lines
        missingComma[4].removeLast()
        #expect(try restore(missingComma.joined(separator: "\n")).errorText.contains(":6: expected ','"))
        var wrongCount = lines
        wrongCount[51] = wrongCount[51].replacingOccurrences(of: "\"count\":50", with: "\"count\":51")
        #expect(try restore(wrongCount.joined(separator: "\n")).errorText.contains(":52: the closing line says 51 entries but 50 were read"))
        #expect(try restore("{\"hello\":1}\n").errorText.contains(":1: not an aegiskv-cli dump"))
        #expect(try restore(lines[0].replacingOccurrences(of: "\"version\":1", with: "\"version\":2") + "\n],\"count\":0}\n")
            .errorText.contains("version 2 is not supported"))
        // A regular file is checked whole first: nothing was written.
        let client = try BinarySafeRESPClient(port: empty.port)
        #expect(try client.pipeline([[Array("DBSIZE".utf8)]]) == [.integer(0)])
    }

    @Test func dumpOfEmptyNodeAndClosedReader() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let empty = try CLIRun(["--addr", "127.0.0.1:\(server.port)", "dump", "--quiet"])
        #expect(empty.status == 0 && empty.errorText.isEmpty, "\(empty)")
        #expect(empty.text.hasPrefix(#"{"format":"aegiskv-dump","version":1,"#) && empty.text.contains("\n],\"count\":0,"), "\(empty)")
        #expect((try JSONSerialization.jsonObject(with: Data(empty.stdout)) as? [String: Any])?["count"] as? Int == 0)

        // dump | head: the reader goes away; the CLI stops quietly with 141.
        try DataSet.fill(port: server.port, count: 5000)
        let closed = try CLIRun(["--addr", "127.0.0.1:\(server.port)", "dump"], closeStdoutReader: true)
        #expect(closed.status == 141 && closed.errorText.isEmpty, "\(closed)")
    }
}

// MARK: - Test data

/// A deterministic mix: every 10th key binary; values random bytes (NUL,
/// CR LF, invalid UTF-8), text needing JSON escapes, or empty; every
/// other entry with a TTL. Commands are encoded straight into a buffer:
/// the debug-built test spends seconds otherwise.
enum DataSet {
    static func key(_ index: Int) -> [UInt8] {
        index % 10 == 0 ? [0x62, 0, 0xFF, 13, 10] + Array("\(index)".utf8) : Array("key:\(index)".utf8)
    }

    static func value(_ index: Int) -> [UInt8] {
        var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ 1
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        switch index % 4 {
        case 0: return (0..<Int(next() % 64)).map { _ in UInt8(truncatingIfNeeded: next()) } + [0, 13, 10, 0xC3]
        case 1: return Array("text \"\(index)\" \\ é\t\r\n\u{1}".utf8)
        case 2: return index % 8 == 2 ? [] : Array("v\(next() % 1_000_000)".utf8)
        default: return Array(repeating: UInt8(ascii: "x"), count: Int(next() % 100))
        }
    }

    /// TTL in ms for even entries (10 to 60 minutes), none for odd ones.
    static func ttlMs(_ index: Int) -> Int? { index % 2 == 0 ? 600_000 + index * 10 : nil }

    static let batch = 2000

    /// Writes entries 0..<count; returns, per batch of `batch` entries, the
    /// wall-clock window (unix ms) in which the node set them.
    @discardableResult
    static func fill(port: UInt16, count: Int) throws -> [ClosedRange<Int64>] {
        let client = try BinarySafeRESPClient(port: port)
        var windows: [ClosedRange<Int64>] = []
        for start in stride(from: 0, to: count, by: batch) {
            let range = start..<min(start + batch, count)
            let before = wallClockMs()
            let replies = try client.pipeline(count: range.count) { out in
                for i in range {
                    let ttl = ttlMs(i)
                    RESPWriter.arrayHeader(ttl == nil ? 3 : 5, into: out)
                    RESPWriter.bulk(string: "SET", into: out)
                    key(i).withUnsafeBytes { RESPWriter.bulk($0, into: out) }
                    value(i).withUnsafeBytes { RESPWriter.bulk($0, into: out) }
                    if let ttl {
                        RESPWriter.bulk(string: "PX", into: out)
                        RESPWriter.bulk(string: String(ttl), into: out)
                    }
                }
            }
            windows.append(before...wallClockMs())
            #expect(replies.allSatisfy { $0 == .simple("OK") })
        }
        return windows
    }

    /// The target holds every entry with the expected bytes, and each TTL
    /// still ends within a second of the expiry the source gave it at fill time.
    static func verify(target: UInt16, count: Int, fillWindows: [ClosedRange<Int64>]) throws {
        let client = try BinarySafeRESPClient(port: target)
        #expect(try client.pipeline([[Array("DBSIZE".utf8)]]) == [.integer(count)])
        var mismatches = 0
        for start in stride(from: 0, to: count, by: batch) {
            let range = start..<min(start + batch, count)
            let before = wallClockMs()
            let replies = try client.pipeline(count: range.count * 2) { out in
                for i in range {
                    for command in ["GET", "PTTL"] {
                        RESPWriter.arrayHeader(2, into: out)
                        RESPWriter.bulk(string: command, into: out)
                        key(i).withUnsafeBytes { RESPWriter.bulk($0, into: out) }
                    }
                }
            }
            let after = wallClockMs()
            let filled = fillWindows[start / batch]
            for i in range {
                let at = (i - start) * 2
                var ok = false
                if case .bulk(let bytes) = replies[at], bytes == value(i), case .integer(let pttl) = replies[at + 1] {
                    if let ttl = ttlMs(i) {
                        let earliest = Int(filled.lowerBound) + ttl - Int(after) - 1000
                        let latest = Int(filled.upperBound) + ttl - Int(before) + 1000
                        ok = (earliest...latest).contains(pttl)
                    } else {
                        ok = pttl == -1
                    }
                }
                if !ok {
                    mismatches += 1
                    if mismatches <= 5 { Issue.record("entry \(i): \(replies[at]) \(replies[at + 1]), expected \(value(i)) with TTL \(ttlMs(i).map(String.init) ?? "none")") }
                }
            }
        }
        #expect(mismatches == 0)
    }
}

private func wallClockMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// A pipelining RESP client for test setup and checks (independent of the CLI).
final class BinarySafeRESPClient {
    let socket: TestSocket

    init(port: UInt16) throws { socket = try TestSocket(port: port) }

    func pipeline(_ commands: [[[UInt8]]]) throws -> [RESPValue] {
        try pipeline(count: commands.count) { out in
            for command in commands { RESPRequestWriter.command(command, into: out) }
        }
    }

    /// Sends what `write` encodes, then reads `count` replies.
    func pipeline(count: Int, _ write: (WireBuffer) -> Void) throws -> [RESPValue] {
        let out = WireBuffer()
        write(out)
        try socket.send(out.readableArray())
        var replies: [RESPValue] = []
        replies.reserveCapacity(count)
        let pending = WireBuffer(capacity: 1 << 20)
        while replies.count < count {
            if let (reply, consumed) = try RESPReplyParser.parse(pending.readableView) {
                replies.append(reply)
                pending.consume(consumed)
                continue
            }
            let space = pending.writableSpace(minimum: 1 << 20)
            let n = recv(socket.fd, space.baseAddress, space.count, 0)
            if n <= 0 { throw HarnessError("connection closed or timed out after \(replies.count) replies (errno \(errno))") }
            pending.commitWrite(n)
        }
        return replies
    }
}

// MARK: - Running the CLI

/// One run of aegiskv-cli through posix_spawn: standard output and error
/// kept apart (get's output is raw bytes), and the child's peak RSS from wait4.
struct CLIRun: CustomStringConvertible {
    var stdout: [UInt8] = []
    var errorText = ""
    var status: Int32 = -1
    var maxResidentKB = 0

    var text: String { String(decoding: stdout, as: UTF8.self) }
    var errorLines: [Substring] { errorText.split(separator: "\n") }

    var description: String {
        "status \(status), stdout \(text.prefix(300).debugDescription), stderr \(errorText.prefix(500).debugDescription)"
    }

    /// `stdoutPath` sends standard output to that file; `closeStdoutReader`
    /// gives it a pipe whose reading end is already closed.
    init(_ arguments: [String], stdin: [UInt8]? = nil, stdoutPath: String? = nil, closeStdoutReader: Bool = false,
         environment: [String: String] = [:]) throws {
        let directory = CLIToolTests.temporaryPath("run")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inputPath = directory + "/stdin", outputPath = stdoutPath ?? directory + "/stdout", errorPath = directory + "/stderr"
        guard FileManager.default.createFile(atPath: inputPath, contents: Data(stdin ?? [])) else { throw HarnessError("cannot write \(inputPath)") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
        var pipeEnds: [Int32] = [-1, -1]
        if closeStdoutReader {
            guard aegis_pipe_cloexec(&pipeEnds) == 0 else { throw HarnessError("pipe failed") }
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        closeInheritedDescriptors(&actions)
        var attributes = childAttributes()
        defer { posix_spawnattr_destroy(&attributes) }
        let argv = ([CLIToolTests.cliPath] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // No AEGIS_ variables from the test's own environment leak into the CLI.
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AEGIS_") }
        env.merge(environment) { $1 }
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, CLIToolTests.cliPath, &actions, &attributes, argv, envp)
        if closeStdoutReader {
            Glibc.close(pipeEnds[0])
            Glibc.close(pipeEnds[1])
        }
        guard spawned == 0 else { throw HarnessError("cannot run \(CLIToolTests.cliPath): errno \(spawned)") }
        var rawStatus: Int32 = 0
        var usage = rusage()
        while wait4(pid, &rawStatus, 0, &usage) < 0 && errno == EINTR {}
        status = (rawStatus & 0x7F) == 0 ? (rawStatus >> 8) & 0xFF : 128 + (rawStatus & 0x7F)
        maxResidentKB = usage.ru_maxrss
        if stdoutPath == nil && !closeStdoutReader {
            stdout = Array(FileManager.default.contents(atPath: outputPath) ?? Data())
        }
        errorText = String(decoding: FileManager.default.contents(atPath: errorPath) ?? Data(), as: UTF8.self)
    }
}
