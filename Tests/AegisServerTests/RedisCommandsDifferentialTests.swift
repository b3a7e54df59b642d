import AegisProtocol
import Foundation
import Glibc
import Testing

/// The commands tools reach for beyond the basics (issue 15, "What to
/// build" 3), sent as raw RESP to aegiskv and to a real redis-server in the
/// same run: every reply must be the same bytes, errors included.
/// Replies that differ on purpose (timings, addresses, this store's memory
/// accounting) are checked for their shape in the other tests below.
@Suite(.serialized)
struct RedisCommandsDifferentialTests {
    /// One connection, the same commands in the same order on both servers.
    static let script: [[String]] = [
        ["FLUSHALL"],
        // GETSET
        ["SET", "s", "hello world", "EX", "100"], ["GETSET", "s", "new"], ["TTL", "s"], ["GETSET", "nokey", "v"], ["GET", "nokey"],
        ["GETSET", "s"],
        // INCRBYFLOAT: long double parsing and printing
        ["SET", "f", "10.5"], ["INCRBYFLOAT", "f", "0.1"], ["INCRBYFLOAT", "f", "-5"], ["INCRBYFLOAT", "f", "abc"],
        ["INCRBYFLOAT", "s", "1"], ["INCRBYFLOAT", "nf", "3.0e3"], ["INCRBYFLOAT", "nf", "1e400"], ["INCRBYFLOAT", "f", " 1"],
        ["INCRBYFLOAT", "f", "inf"], ["INCRBYFLOAT", "f", "nan"], ["INCRBYFLOAT", "f", "1.5e-3"], ["INCRBYFLOAT", "neg", "-0.0"],
        ["SET", "z", "5"], ["INCRBYFLOAT", "z", "-5"], ["GET", "z"], ["INCRBYFLOAT", "f"],
        // GETRANGE, SUBSTR, SETRANGE
        ["SET", "r", "Hello World"], ["GETRANGE", "r", "0", "4"], ["GETRANGE", "r", "-5", "-1"], ["GETRANGE", "r", "5", "2"],
        ["GETRANGE", "r", "-1", "-5"], ["GETRANGE", "r", "0", "100"], ["GETRANGE", "r", "-100", "2"], ["GETRANGE", "nokey", "0", "1"],
        ["GETRANGE", "r", "a", "1"], ["GETRANGE", "r", "0", "9223372036854775808"], ["SUBSTR", "r", "1", "3"], ["SUBSTR", "r", "1"],
        ["SETRANGE", "r", "6", "Redis"], ["GET", "r"], ["SETRANGE", "pad", "5", "x"], ["GET", "pad"], ["STRLEN", "pad"],
        ["SETRANGE", "r", "-1", "x"], ["SETRANGE", "r", "abc", "x"], ["SETRANGE", "nokey2", "0", ""], ["EXISTS", "nokey2"],
        ["SETRANGE", "r", "0", ""], ["SETRANGE", "r", "536870912", "x"], ["SET", "t", "abc", "PX", "100000"],
        ["SETRANGE", "t", "1", "Z"], ["GET", "t"], ["TTL", "t"],
        // EXPIRETIME, PEXPIRETIME
        ["SET", "e", "v", "PXAT", "4102444800123"], ["EXPIRETIME", "e"], ["PEXPIRETIME", "e"], ["EXPIRETIME", "r"],
        ["PEXPIRETIME", "nokey"], ["EXPIRETIME"],
        // Expiries past 48 bits of unix ms are kept exactly, as redis-server keeps them.
        ["SET", "far", "v", "PXAT", "9223372036854775000"], ["PEXPIRETIME", "far"], ["EXPIRETIME", "far"],
        ["SET", "far2", "v", "EXAT", "9223372036854775"], ["PEXPIRETIME", "far2"], ["SET", "far4", "v", "EXAT", "9223372036854776"],
        ["PEXPIREAT", "far", "9223372036854775807"], ["PEXPIRETIME", "far"], ["GETEX", "far", "PXAT", "281474976710655"],
        ["PEXPIRETIME", "far"], ["PEXPIREAT", "far", "281474976710656"], ["PEXPIRETIME", "far"], ["SETRANGE", "far", "3", "xyz"],
        ["PEXPIRETIME", "far"], ["GET", "far"], ["COPY", "far", "far3"], ["PEXPIRETIME", "far3"], ["RENAME", "far2", "far5"],
        ["PEXPIRETIME", "far5"], ["EXPIREAT", "far5", "9223372036854775"], ["PEXPIRETIME", "far5"], ["PERSIST", "far5"],
        ["PEXPIRETIME", "far5"], ["EXPIRE", "far5", "9223372036854775"], ["PEXPIREAT", "far5", "9223372036854775807", "GT"],
        ["PEXPIRETIME", "far5"],
        // MSETNX (one reactor here: see crossReactorCommands for the rest)
        ["MSETNX", "a1", "1", "a2", "2"], ["MSETNX", "a2", "x", "a3", "3"], ["GET", "a3"], ["MSETNX", "a1"],
        ["MSETNX", "a1", "1", "a2"],
        // RENAME, RENAMENX, COPY
        ["RENAME", "a1", "b1"], ["GET", "b1"], ["EXISTS", "a1"], ["RENAME", "nokey", "x"], ["RENAME", "b1", "b1"],
        ["RENAME", "nokey", "nokey"], ["RENAMENX", "b1", "a2"], ["RENAMENX", "b1", "c1"], ["RENAMENX", "c1", "c1"],
        ["COPY", "c1", "d1"], ["COPY", "c1", "d1"], ["COPY", "c1", "d1", "REPLACE"], ["COPY", "c1", "c1"],
        ["COPY", "c1", "x", "DB", "abc"], ["COPY", "c1", "x", "FOO"], ["COPY", "c1", "x", "DB"],
        ["COPY", "c1", "x", "DB", "0"], ["GET", "x"], ["COPY", "nokey", "y"], ["COPY", "c1"], ["RENAME", "c1"],
        ["RENAME", "e", "e2"], ["PEXPIRETIME", "e2"], ["COPY", "e2", "e3"], ["PEXPIRETIME", "e3"],
        // OBJECT and MEMORY: what is the same everywhere
        ["SET", "n", "12345"], ["SET", "long", String(repeating: "x", count: 50)], ["OBJECT", "ENCODING", "n"],
        ["OBJECT", "ENCODING", "b1"], ["OBJECT", "ENCODING", "long"], ["OBJECT", "ENCODING", "nokey"], ["OBJECT", "FOO"],
        ["OBJECT", "ENCODING"], ["OBJECT", "ENCODING", "a", "b"], ["OBJECT", "REFCOUNT", "nokey"],
        ["MEMORY", "USAGE", "nokey"], ["MEMORY", "USAGE", "n", "SAMPLES", "abc"], ["MEMORY", "USAGE", "n", "FOO"],
        ["MEMORY", "USAGE", "n", "SAMPLES", "-1"], ["MEMORY", "USAGE", "nokey", "SAMPLES", "5"], ["MEMORY", "FOO"], ["MEMORY", "USAGE"],
        // COMMAND GETKEYS, COUNT is ours
        ["COMMAND", "GETKEYS", "SET", "k", "v"], ["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"], ["COMMAND", "GETKEYS", "FOO"],
        ["COMMAND", "GETKEYS", "FOO", "x"], ["COMMAND", "GETKEYS", "GET", "a", "b"], ["COMMAND", "GETKEYS", "PING", "x"],
        ["COMMAND", "GETKEYS", "GET"], ["COMMAND", "GETKEYS", "COPY", "a", "b", "REPLACE"],
        ["COMMAND", "GETKEYS", "DEL", "a", "b", "c"], ["COMMAND", "GETKEYS", "MEMORY", "USAGE", "k"], ["COMMAND", "GETKEYS"],
        ["COMMAND", "LIST", "FILTERBY", "PATTERN", "getra*"],
        // SLOWLOG, LATENCY (empty after a reset, and their errors)
        ["CONFIG", "SET", "slowlog-log-slower-than", "-1"], ["SLOWLOG", "RESET"], ["SLOWLOG", "LEN"], ["SLOWLOG", "GET"],
        ["SLOWLOG", "GET", "-2"], ["SLOWLOG", "GET", "abc"], ["SLOWLOG", "FOO"], ["SLOWLOG", "LEN", "x"],
        ["LATENCY", "RESET"], ["LATENCY", "LATEST"], ["LATENCY", "HISTORY", "command"], ["LATENCY", "FOO"],
        // WAIT, as a primary with no replicas
        ["WAIT", "0", "0"], ["WAIT", "abc", "0"], ["WAIT", "0", "abc"], ["WAIT", "0", "-1"], ["WAIT", "1", "50"], ["WAIT", "1"],
        // CLIENT
        ["CLIENT", "NO-EVICT", "on"], ["CLIENT", "NO-EVICT", "maybe"], ["CLIENT", "NO-EVICT", "off"], ["CLIENT", "REPLY", "maybe"],
        ["CLIENT", "KILL", "ID", "abc"], ["CLIENT", "KILL", "ID", "0"], ["CLIENT", "KILL", "1.2.3.4:5"],
        ["CLIENT", "KILL", "ID", "999999"], ["CLIENT", "KILL", "TYPE", "foo"], ["CLIENT", "KILL", "TYPE", "master"],
        ["CLIENT", "KILL", "USER", "nobody"], ["CLIENT", "KILL", "ID", "999999", "SKIPME", "maybe"], ["CLIENT", "KILL", "ID"],
        ["CLIENT", "KILL", "ADDR", "1.2.3.4:5", "ID"], ["CLIENT", "LIST", "TYPE", "foo"], ["CLIENT", "LIST", "ID", "abc"],
        ["CLIENT", "LIST", "TYPE", "pubsub"], ["CLIENT", "LIST", "ID", "999999"],
        // CONFIG SET, RESETSTAT
        ["CONFIG", "SET", "maxclients"], ["CONFIG", "SET", "nosuch", "1"], ["CONFIG", "SET", "slowlog-max-len", "64"],
        ["CONFIG", "SET", "slowlog-max-len", "64", "slowlog-max-len", "65"], ["CONFIG", "RESETSTAT"],
        // KEYS and RANDOMKEY on a keyspace whose answer has one order
        ["FLUSHALL"], ["RANDOMKEY"], ["KEYS", "*"], ["SET", "only", "1"], ["RANDOMKEY"], ["KEYS", "*"], ["KEYS", "o?l[xy]"],
        ["KEYS", "nomatch*"], ["KEYS"],
    ]

    @Test func repliesMatchRedisServerByteForByte() throws {
        let aegis = try ServerHarness(reactors: 1)
        defer { #expect(aegis.stop() == 0) }
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let ours = try TestSocket(port: aegis.port)
        let theirs = try TestSocket(port: redis.port)
        var differences: [String] = []
        for command in Self.script {
            let mine = try exchange(ours, command)
            let reference = try exchange(theirs, command)
            if mine != reference {
                differences.append("\(command.joined(separator: " ")): aegiskv \(Self.show(mine)) redis \(Self.show(reference))")
            }
        }
        #expect(differences.isEmpty, "\(differences.count) replies differ:\n\(differences.joined(separator: "\n"))")
    }

    /// CLIENT REPLY OFF and SKIP silence themselves and what they cover,
    /// pipelined so that nothing waits for a reply that never comes: the
    /// bytes that do come back must be the same.
    @Test func clientReplyOffAndSkipMatchRedisServer() throws {
        let aegis = try ServerHarness(reactors: 2)
        defer { #expect(aegis.stop() == 0) }
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        // Keys on both reactors, so forwarded replies are silenced too.
        let keys = (0..<8).map { "quiet\($0)" }
        var pipeline: [[String]] = [["CLIENT", "REPLY", "OFF"]] + keys.map { ["SET", $0, "1"] } + [["MGET"] + keys]
        pipeline += [["CLIENT", "REPLY", "ON"], ["GET", keys[0]], ["CLIENT", "REPLY", "SKIP"], ["INCR", keys[1]], ["INCR", keys[1]]]
        let expectedReplies = 3  // +OK, the GET, the second INCR
        var answers: [[UInt8]] = []
        for port in [aegis.port, redis.port] {
            let socket = try TestSocket(port: port)
            var request = ""
            for command in pipeline {
                request += "*\(command.count)\r\n"
                for argument in command { request += "$\(argument.utf8.count)\r\n\(argument)\r\n" }
            }
            try socket.send(request)
            answers.append(try socket.receive { bytes in Self.replyCount(bytes) >= expectedReplies })
        }
        #expect(answers[0] == answers[1], "aegiskv \(Self.show(answers[0])) redis \(Self.show(answers[1]))")
        #expect(Self.show(answers[0]) == "+OK\\r\\n$1\\r\\n1\\r\\n:3\\r\\n")
    }

    static func replyCount(_ bytes: [UInt8]) -> Int {
        var count = 0
        var rest = bytes[...]
        while let (_, consumed) = (try? Array(rest).withUnsafeBytes { try RESPReplyParser.parse($0) }) ?? nil {
            count += 1
            rest = rest.dropFirst(consumed)
        }
        return count
    }

    static func show(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix(300), as: UTF8.self).replacing("\r\n", with: "\\r\\n")
    }
}

/// Sends one command as a RESP array and reads one whole reply.
func exchange(_ socket: TestSocket, _ command: [String]) throws -> [UInt8] {
    var request = "*\(command.count)\r\n"
    for argument in command { request += "$\(argument.utf8.count)\r\n\(argument)\r\n" }
    try socket.send(request)
    return try readReply(socket)
}

func readReply(_ socket: TestSocket) throws -> [UInt8] {
    try socket.receive { bytes in
        (try? bytes.withUnsafeBytes { try RESPReplyParser.parse($0) }) != nil
    }
}

/// A real redis-server on a free loopback port, no persistence; stopped by PID.
final class RedisServerProcess: @unchecked Sendable {
    let pid: pid_t
    let port: UInt16

    init() throws {
        port = try freePort()
        pid = try startProcess("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        for _ in 0..<250 {
            if let socket = try? TestSocket(port: port) { socket.close(); return }
            usleep(20_000)
        }
        stopProcess(pid)
        throw HarnessError("redis-server did not open port \(port)")
    }

    func stop() { stopProcess(pid) }
}
