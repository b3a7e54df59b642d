import AegisProtocol
import AegisStore
import Foundation
import Glibc
import Testing

/// The new commands where this node differs from one redis-server on
/// purpose: keys spread over reactors, introspection of its own memory and
/// timings; and the redis-cli tools operators run (--stat, --bigkeys,
/// --memkeys, --latency, --scan), each run for real against a node.
@Suite(.serialized)
struct ToolCommandsTests {
    /// The reactor that owns `key` on a node with the default 256 shards
    /// (NodeContext: contiguous ranges of shards per reactor).
    static func reactor(of key: String, reactors: Int) -> Int {
        let shard = Array(key.utf8).withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: 256) }
        return shard * reactors / 256
    }

    /// Two keys with the given prefixes, one on reactor 0 and one on reactor 1.
    static func keysOnDifferentReactors(_ first: String, _ second: String) -> (String, String) {
        let a = (0...).lazy.map { "\(first)\($0)" }.first { reactor(of: $0, reactors: 2) == 0 }!
        let b = (0...).lazy.map { "\(second)\($0)" }.first { reactor(of: $0, reactors: 2) == 1 }!
        return (a, b)
    }

    func send(_ socket: TestSocket, _ command: String...) throws -> String {
        let reply = try exchange(socket, command)
        return String(decoding: reply, as: UTF8.self)
    }

    /// The number in an integer reply (":42\r\n"), 0 for anything else.
    func integer(_ reply: String) -> Int {
        Int(reply.dropFirst().trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    @Test func renameCopyAndMsetnxAcrossReactors() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        let client = try TestSocket(port: node.port)
        let (source, destination) = Self.keysOnDifferentReactors("src", "dst")
        // From a client of either reactor: the ingress may be the source's owner or not.
        #expect(try send(client, "SET", source, "v1", "PX", "100000") == "+OK\r\n")
        #expect(try send(client, "RENAME", source, destination) == "+OK\r\n")
        #expect(try send(client, "EXISTS", source) == ":0\r\n")
        #expect(try send(client, "GET", destination) == "$2\r\nv1\r\n")
        let ttl = try send(client, "PTTL", destination)
        #expect(integer(ttl) > 0, "the expiry moved with the value: \(ttl)")
        // Back the other way, RENAMENX onto an existing key refuses and keeps both.
        #expect(try send(client, "SET", source, "other") == "+OK\r\n")
        #expect(try send(client, "RENAMENX", destination, source) == ":0\r\n")
        #expect(try send(client, "GET", destination) == "$2\r\nv1\r\n")
        #expect(try send(client, "GET", source) == "$5\r\nother\r\n")
        // COPY: refuses an existing destination unless REPLACE; the source stays.
        #expect(try send(client, "COPY", destination, source) == ":0\r\n")
        #expect(try send(client, "COPY", destination, source, "REPLACE") == ":1\r\n")
        #expect(try send(client, "GET", source) == "$2\r\nv1\r\n")
        #expect(try send(client, "GET", destination) == "$2\r\nv1\r\n")
        #expect(try send(client, "RENAME", "missing-key", destination) == "-ERR no such key\r\n")
        // MSETNX across reactors: all or nothing (MSetNXAcrossReactorsTests has the rest).
        let (left, right) = Self.keysOnDifferentReactors("left", "right")
        #expect(try send(client, "MSETNX", left, "1", right, "2") == ":1\r\n")
        #expect(try send(client, "MSETNX", left, "3", right, "4") == ":0\r\n")
        #expect(try send(client, "MGET", left, right) == "*2\r\n$1\r\n1\r\n$1\r\n2\r\n")
        // Pipelined moves answer in order.
        var pipeline = ""
        for i in 0..<50 {
            for command in [["SET", "p\(i)", "\(i)"], ["RENAME", "p\(i)", "q\(i)"], ["GET", "q\(i)"]] {
                pipeline += "*\(command.count)\r\n" + command.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
            }
        }
        try client.send(pipeline)
        let expected = (0..<50).map { "+OK\r\n+OK\r\n$\(String($0).count)\r\n\($0)\r\n" }.joined()
        let replies = try client.receive { $0.count >= expected.utf8.count }
        #expect(String(decoding: replies, as: UTF8.self) == expected)
    }

    @Test func keysRandomkeyAndKeyIntrospectionOverReactors() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        let client = try TestSocket(port: node.port)
        var keys: [String] = []
        for i in 0..<40 {
            keys.append("key:\(i)")
            _ = try send(client, "SET", "key:\(i)", String(repeating: "v", count: i + 1))
        }
        #expect(Set(keys.map { Self.reactor(of: $0, reactors: 2) }) == [0, 1])
        let all = try exchange(client, ["KEYS", "key:*"])
        let found = try #require(try all.withUnsafeBytes { try RESPReplyParser.parse($0) }?.0)
        guard case .array(let items) = found else { Issue.record("KEYS gave \(found)"); return }
        #expect(Set(items.compactMap(\.text)) == Set(keys))
        #expect(try send(client, "KEYS", "key:1?") == String(decoding: try exchange(client, ["KEYS", "key:1?"]), as: UTF8.self))
        for _ in 0..<10 {
            let random = try send(client, "RANDOMKEY")
            #expect(keys.contains { random == "$\($0.utf8.count)\r\n\($0)\r\n" }, "\(random)")
        }
        // MEMORY USAGE: this store's own accounting, growing with the value.
        let small = integer(try send(client, "MEMORY", "USAGE", "key:0"))
        let large = integer(try send(client, "MEMORY", "USAGE", "key:39"))
        #expect(small > 24 + 5 + 1 && large > small, "\(small) \(large)")
        let frequency = try send(client, "OBJECT", "FREQ", "key:3")
        #expect([":0\r\n", ":1\r\n", ":2\r\n", ":3\r\n"].contains(frequency), "\(frequency)")
        #expect(try send(client, "OBJECT", "IDLETIME", "key:3").hasPrefix("-ERR An S3-FIFO maxmemory policy is in use"))
        #expect(try send(client, "OBJECT", "FREQ", "nokey") == "$-1\r\n")
    }

    @Test func clientListInfoKillAndConfigSet() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        // Enough connections that both reactors hold some.
        let clients = try (0..<6).map { _ in try TestSocket(port: node.port) }
        for (i, client) in clients.enumerated() { _ = try send(client, "CLIENT", "SETNAME", "c\(i)") }
        let list = try send(clients[0], "CLIENT", "LIST")
        for i in 0..<6 { #expect(list.contains(" name=c\(i) "), "c\(i) in \(list)") }
        #expect(list.contains("cmd=client"))
        #expect(list.contains(" addr=127.0.0.1:") && list.contains(" laddr=127.0.0.1:\(node.port) "), "\(list)")
        let info = try send(clients[0], "CLIENT", "INFO")
        #expect(info.contains("name=c0 ") && info.hasSuffix("resp=2\n\r\n"), "\(info)")
        let idText = try send(clients[5], "CLIENT", "ID")
        let id = String(integer(idText))
        #expect(try send(clients[0], "CLIENT", "KILL", "ID", id) == ":1\r\n")
        #expect(clients[5].waitForClose())
        #expect(try send(clients[0], "CLIENT", "KILL", "ID", id) == ":0\r\n")
        // CONFIG SET: a reloadable key by its Redis name, seen by CONFIG GET on any connection.
        #expect(try send(clients[1], "CONFIG", "SET", "maxclients", "1234", "read-timeout", "45s") == "+OK\r\n")
        #expect(try send(clients[2], "CONFIG", "GET", "max_conns") == "*2\r\n$9\r\nmax_conns\r\n$4\r\n1234\r\n")
        #expect(try send(clients[2], "CONFIG", "GET", "read_timeout") == "*2\r\n$12\r\nread_timeout\r\n$7\r\n45000ms\r\n")
        #expect(try send(clients[1], "CONFIG", "SET", "read_timeout", "soon").hasPrefix(
            "-ERR CONFIG SET failed (possibly related to argument 'read_timeout') - expected a duration"))
        #expect(try send(clients[1], "CONFIG", "SET", "bind_addr", "127.0.0.1:1") ==
            "-ERR CONFIG SET failed (possibly related to argument 'bind_addr') - can't set immutable config\r\n")
        // All or nothing: the bad second pair leaves the first unapplied.
        _ = try send(clients[1], "CONFIG", "SET", "maxclients", "999", "suspect_timeout", "1h")
        #expect(try send(clients[2], "CONFIG", "GET", "max_conns") == "*2\r\n$9\r\nmax_conns\r\n$4\r\n1234\r\n")
        // RESETSTAT zeroes what INFO stats counts, on every reactor.
        for client in clients.prefix(5) { _ = try send(client, "GET", "x") }
        #expect(try send(clients[0], "CONFIG", "RESETSTAT") == "+OK\r\n")
        let stats = try send(clients[0], "INFO", "stats")
        #expect(stats.contains("keyspace_misses:0\r\n"), "\(stats)")
    }

    /// stream_rate_limit_mb is set while the node runs (an operator slowing
    /// a move that hurts clients), and what runs is what CONFIG GET says.
    @Test func theStreamRateLimitIsSetWhileTheNodeRuns() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        let client = try TestSocket(port: node.port)
        #expect(try send(client, "CONFIG", "GET", "stream_rate_limit_mb") == "*2\r\n$20\r\nstream_rate_limit_mb\r\n$1\r\n0\r\n")
        #expect(try send(client, "CONFIG", "SET", "stream-rate-limit-mb", "50") == "+OK\r\n")
        #expect(try send(client, "CONFIG", "GET", "stream_rate_limit_mb") == "*2\r\n$20\r\nstream_rate_limit_mb\r\n$2\r\n50\r\n")
        #expect(try send(client, "CONFIG", "SET", "stream_rate_limit_mb", "-1").hasPrefix(
            "-ERR CONFIG SET failed (possibly related to argument 'stream_rate_limit_mb')"))
        #expect(try send(client, "CONFIG", "GET", "stream_rate_limit_mb") == "*2\r\n$20\r\nstream_rate_limit_mb\r\n$2\r\n50\r\n")
    }

    @Test func slowlogAndLatencyRecordSlowCommands() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        let client = try TestSocket(port: node.port)
        #expect(try send(client, "CONFIG", "SET", "slowlog-log-slower-than", "0", "latency-monitor-threshold", "1") == "+OK\r\n")
        #expect(try send(client, "SLOWLOG", "RESET") == "+OK\r\n")
        _ = try send(client, "CLIENT", "SETNAME", "slowpoke")
        _ = try send(client, "SET", "k", String(repeating: "x", count: 200))
        let length = integer(try send(client, "SLOWLOG", "LEN"))
        #expect(length >= 2)
        let entries = try #require(try exchange(client, ["SLOWLOG", "GET", "1"]).withUnsafeBytes { try RESPReplyParser.parse($0) }?.0)
        guard case .array(let list) = entries, case .array(let entry)? = list.first, entry.count == 6,
              case .array(let arguments) = entry[3] else {
            Issue.record("SLOWLOG GET gave \(entries)")
            return
        }
        // Newest first: the SLOWLOG LEN call; values cut at 128 bytes as Redis cuts them.
        #expect(arguments.map(\.text) == ["SLOWLOG", "LEN"])
        #expect(entry[5].text == "slowpoke")
        let all = String(decoding: try exchange(client, ["SLOWLOG", "GET", "-1"]), as: UTF8.self)
        #expect(all.contains(String(repeating: "x", count: 128) + "... (72 more bytes)"))
        #expect(!all.contains("AUTH"))
        #expect(try send(client, "CONFIG", "SET", "slowlog-max-len", "1") == "+OK\r\n")
        #expect(try send(client, "SLOWLOG", "LEN") == ":1\r\n")
        // A command that takes over 1 ms: KEYS over many keys.
        var pipeline = ""
        for i in 0..<20_000 { pipeline += "*3\r\n$3\r\nSET\r\n$\(String(i).count + 2)\r\nk:\(i)\r\n$1\r\nv\r\n" }
        try client.send(pipeline)
        _ = try client.receive { $0.count >= 20_000 * 5 }
        var recorded = false
        for _ in 0..<20 where !recorded {
            _ = try exchange(client, ["KEYS", "*"])
            recorded = try send(client, "LATENCY", "LATEST").contains("command")
        }
        #expect(recorded, "a KEYS over 20000 keys took 1 ms or more at least once")
        let history = try send(client, "LATENCY", "HISTORY", "command")
        #expect(history.hasPrefix("*") && !history.hasPrefix("*0"))
        #expect(try send(client, "LATENCY", "RESET", "command") == ":1\r\n")
        #expect(try send(client, "LATENCY", "LATEST") == "*0\r\n")
    }

    // MARK: - redis-cli tools

    @Test func redisCLIToolsWorkAgainstANode() throws {
        let node = try ServerHarness(reactors: 2)
        defer { #expect(node.stop() == 0) }
        let port = String(node.port)
        let client = try TestSocket(port: node.port)
        for i in 0..<30 { _ = try send(client, "SET", "tool:\(i)", String(repeating: "z", count: i * 10 + 1)) }
        _ = try send(client, "SET", "tool:big", String(repeating: "B", count: 5000))

        let scan = try runTool("redis-cli", ["-p", port, "--scan", "--pattern", "tool:*"])
        #expect(scan.status == 0)
        #expect(Set(scan.output.split(separator: "\n").map(String.init)) == Set((0..<30).map { "tool:\($0)" } + ["tool:big"]), "\(scan.output)")

        let bigkeys = try runTool("redis-cli", ["-p", port, "--bigkeys"])
        #expect(bigkeys.status == 0, "\(bigkeys.output)")
        #expect(bigkeys.output.contains("Biggest string found '\"tool:big\"' has 5000 bytes"), "\(bigkeys.output)")
        #expect(bigkeys.output.contains("31 strings with"), "\(bigkeys.output)")

        let memkeys = try runTool("redis-cli", ["-p", port, "--memkeys"])
        #expect(memkeys.status == 0, "\(memkeys.output)")
        #expect(memkeys.output.contains("Biggest string found '\"tool:big\"' has"), "\(memkeys.output)")

        // Line-buffered, so the lines printed before it is stopped are in the file.
        let stat = try runTool("stdbuf", ["-oL", "redis-cli", "-p", port, "--stat", "-i", "0.1"], stopAfterLines: 4)
        #expect(stat.output.contains("keys       mem      clients blocked requests"), "\(stat.output)")
        let rows = stat.output.split(separator: "\n").dropFirst(2)
        #expect(!rows.isEmpty && rows.allSatisfy { $0.hasPrefix("31 ") }, "the key count shows: \(stat.output)")

        // Not a terminal: prints "min max avg samples" once after the interval and exits.
        let latency = try runTool("redis-cli", ["-p", port, "--latency", "-i", "0.2"], stopAfterLines: 1)
        #expect(latency.status == 0)
        let figures = latency.output.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(figures.count == 4, "min max avg samples: \(latency.output)")
        #expect((figures.last ?? 0) > 0, "samples were taken: \(latency.output)")
    }
}

/// Runs a tool that only ends when stopped (redis-cli --stat, --latency):
/// reads its output until `stopAfterLines` lines (or `seconds` passed), then
/// stops it by PID.
func runTool(_ executable: String, _ arguments: [String], stopAfterLines: Int, seconds: Double = 20) throws -> (output: String, status: Int32) {
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID().uuidString).out").path
    _ = FileManager.default.createFile(atPath: output, contents: nil)
    let pid = try SpawnedNode.spawn("/usr/bin/env", [executable] + arguments, environment: ProcessInfo.processInfo.environment, output: output)
    let deadline = Date().addingTimeInterval(seconds)
    var text = ""
    while Date() < deadline {
        text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        if stopAfterLines > 0 && text.split(separator: "\n").count >= stopAfterLines { break }
        usleep(50_000)
    }
    kill(pid, SIGINT)
    let status = SpawnedNode.waitForExit(pid, graceSeconds: 5) ?? {
        kill(pid, SIGKILL)
        return SpawnedNode.waitForExit(pid, graceSeconds: 5) ?? -1
    }()
    text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? text
    try? FileManager.default.removeItem(atPath: output)
    return (text, status)
}
