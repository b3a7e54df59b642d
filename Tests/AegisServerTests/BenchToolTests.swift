import Foundation
import Glibc
import Testing

/// `aegiskv-bench` (perf/Bench) run as a user runs it: against the real
/// aegiskv, and against memcached when it is installed. Only counts are
/// asserted, never timings.
@Suite(.serialized)
struct BenchToolTests {
    /// The bench binary sits next to aegiskv in the build folder.
    static var benchPath: String {
        URL(fileURLWithPath: ServerHarness.binaryPath).deletingLastPathComponent()
            .appendingPathComponent("aegiskv-bench").path
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-bench-\(UUID().uuidString)-\(name)").path
    }

    /// Runs the bench; returns its combined output, exit status and parsed JSON report.
    static func bench(_ arguments: [String]) throws -> (output: String, status: Int32, json: [String: Any]) {
        let jsonPath = temporaryPath("report.json")
        defer { try? FileManager.default.removeItem(atPath: jsonPath) }
        let result = try runTool(benchPath, arguments + ["--json", jsonPath, "--quiet"])
        var json: [String: Any] = [:]
        if let data = FileManager.default.contents(atPath: jsonPath),
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        {
            json = object
        }
        return (result.output, result.status, json)
    }

    static func operation(_ json: [String: Any], _ name: String) -> [String: Any] {
        ((json["operations"] as? [String: Any])?[name] as? [String: Any]) ?? [:]
    }

    static func int(_ object: [String: Any], _ key: String) -> Int { (object[key] as? NSNumber)?.intValue ?? -1 }

    /// A short verified run; checks that every request was answered without an error.
    static func expectCleanRun(port: UInt16, protocolName: String, extra: [String] = []) throws {
        let requests = 4000
        let run = try bench([
            "--addr", "127.0.0.1:\(port)", "--protocol", protocolName, "--requests", "\(requests)", "--threads", "2",
            "--connections", "4", "--pipeline", "4", "--keys", "50", "--ratio", "1:1", "--value-size", "32-600",
            "--verify",
        ] + extra)
        #expect(run.status == 0, "\(run.output)")
        let all = operation(run.json, "all")
        let get = operation(run.json, "get")
        let set = operation(run.json, "set")
        #expect(int(all, "ops") == requests, "\(run.output)")
        #expect(int(get, "ops") > 0 && int(set, "ops") > 0)
        #expect(int(all, "errors") == 0, "\(run.output)")
        #expect(int(all, "timeouts") == 0)
        // 50 keys written half the time: most GETs are verified hits, not misses.
        #expect(int(get, "misses") < int(get, "ops"))
        #expect(int(all, "p50") > 0 && int(all, "p50") <= int(all, "p99") && int(all, "p99") <= int(all, "max"))
        #expect(int(all, "p99_9") >= int(all, "p99"))
        #expect(((run.json["ops_per_sec"] as? NSNumber)?.doubleValue ?? 0) > 0)
    }

    @Test func respAgainstAegisKV() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try Self.expectCleanRun(port: server.port, protocolName: "resp", extra: ["--ttl", "600"])
    }

    @Test func binaryProtocolAgainstAegisKV() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try Self.expectCleanRun(port: server.port, protocolName: "aegis", extra: ["--key-pattern", "zipf:0.99"])
    }

    @Test func bothProtocolsShareValuesAndHistogramFileIsWritten() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        // Values written over the binary protocol verify when read over RESP.
        let fill = try Self.bench([
            "--addr", "127.0.0.1:\(server.port)", "--protocol", "aegis", "--requests", "200", "--keys", "20",
            "--key-pattern", "sequential", "--ratio", "0:1", "--connections", "2", "--verify",
        ])
        #expect(fill.status == 0, "\(fill.output)")
        let histogram = Self.temporaryPath("hist.txt")
        defer { try? FileManager.default.removeItem(atPath: histogram) }
        let read = try Self.bench([
            "--addr", "127.0.0.1:\(server.port)", "--protocol", "resp", "--requests", "500", "--keys", "20",
            "--ratio", "1:0", "--connections", "2", "--verify", "--histogram-file", histogram,
        ])
        #expect(read.status == 0, "\(read.output)")
        let get = Self.operation(read.json, "get")
        #expect(Self.int(get, "ops") == 500)
        #expect(Self.int(get, "misses") == 0)
        #expect(Self.int(get, "errors") == 0)
        let text = (try? String(contentsOfFile: histogram, encoding: .utf8)) ?? ""
        #expect(text.contains("Percentile"))
        #expect(text.contains("#[Max"))
    }

    @Test func repeatedAddrSpreadsConnectionsOverNodes() throws {
        let first = try ServerHarness()
        defer { #expect(first.stop() == 0) }
        let second = try ServerHarness()
        defer { #expect(second.stop() == 0) }
        let run = try Self.bench([
            "--addr", "127.0.0.1:\(first.port)", "--addr", "127.0.0.1:\(second.port)", "--requests", "400",
            "--ratio", "0:1", "--keys", "1000", "--key-pattern", "sequential", "--threads", "1", "--connections", "2",
        ])
        #expect(run.status == 0, "\(run.output)")
        #expect(Self.int(Self.operation(run.json, "set"), "ops") == 400)
        func keyCount(_ port: UInt16) throws -> Int {
            let socket = try TestSocket(port: port)
            defer { socket.close() }
            try socket.send("*1\r\n$6\r\nDBSIZE\r\n")
            let reply = try socket.receive { $0.last == UInt8(ascii: "\n") }
            return Int(String(decoding: reply, as: UTF8.self).dropFirst().trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        // One connection per node, alternating requests: both nodes got about half the keys.
        let a = try keyCount(first.port)
        let b = try keyCount(second.port)
        #expect(a > 0 && b > 0 && a + b == 400, "DBSIZE \(a) and \(b)")
    }

    @Test func verifyCountsACorruptValueAsAnError() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        let value = String(repeating: "0", count: 40)
        try socket.send("*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000000\r\n$40\r\n\(value)\r\n")
        _ = try socket.receive { $0.count >= 5 }
        socket.close()
        let run = try Self.bench([
            "--addr", "127.0.0.1:\(server.port)", "--requests", "10", "--keys", "1", "--ratio", "1:0",
            "--connections", "2", "--verify",
        ])
        #expect(run.status == 2, "\(run.output)")
        let get = Self.operation(run.json, "get")
        #expect(Self.int(get, "ops") == 10)
        #expect(Self.int(get, "errors") == 10)
        #expect(Self.int(get, "misses") == 0)
        #expect(run.output.contains("fails its checksum"))
    }

    @Test func openLoopAgainstAegisKV() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let run = try Self.bench([
            "--addr", "127.0.0.1:\(server.port)", "--rate", "2000", "--duration", "1", "--connections", "4",
            "--verify",
        ])
        #expect(run.status == 0, "\(run.output)")
        let all = Self.operation(run.json, "all")
        // 2000/s for 1 s; only sanity here, the precision belongs to perf/.
        #expect(Self.int(all, "ops") > 1000 && Self.int(all, "ops") <= 2000, "\(run.output)")
        #expect(Self.int(all, "errors") == 0)
        #expect(run.output.contains("open loop"))
    }

    @Test func memcacheAgainstMemcached() throws {
        let candidates = ["/usr/bin/memcached", "/usr/local/bin/memcached"]
        let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        let binary = try #require(found, "memcached is needed; scripts/ensure-deps --test installs it")
        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-l", "127.0.0.1", "-p", "\(port)", "-U", "0", "-m", "64"] + (getuid() == 0 ? ["-u", "root"] : [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            // SIGKILL: memcached started from the test runner inherits its blocked SIGTERM.
            kill(process.processIdentifier, SIGKILL)
            // Poll rather than waitUntilExit, which can miss a quick exit on this toolchain.
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(10_000) }
        }
        var ready = false
        for _ in 0..<200 where !ready {
            if let socket = try? TestSocket(port: port) { socket.close(); ready = true } else { usleep(20_000) }
        }
        #expect(ready, "memcached did not open its port")
        try Self.expectCleanRun(port: port, protocolName: "memcache", extra: ["--ttl", "600"])
    }

    @Test func badArgumentsFailClearly() throws {
        let cases: [([String], String)] = [
            (["--ratio", "nine"], "--ratio"),
            (["--protocol", "smtp"], "protocol"),
            (["--key-pattern", "zipf:1.5"], "--key-pattern"),
            (["--value-size", "10-5"], "--value-size"),
            (["--verify", "--value-size", "8"], "--verify"),
            (["--duration", "1", "--requests", "5"], "--requests"),
            (["--addr", "localhost"], "HOST:PORT"),
            (["--connections", "1", "--threads", "2"], "--connections"),
        ]
        for (arguments, mention) in cases {
            let result = try runTool(Self.benchPath, arguments)
            #expect(result.status != 0, "\(arguments) was accepted")
            #expect(result.output.contains(mention), "\(arguments): \(result.output)")
        }
        // Nothing listens on a just-freed port: a connection error, not a hang.
        let port = try freePort()
        let refused = try runTool(Self.benchPath, ["--addr", "127.0.0.1:\(port)", "--requests", "10"])
        #expect(refused.status == 1)
        #expect(refused.output.contains("cannot connect"))
    }
}
