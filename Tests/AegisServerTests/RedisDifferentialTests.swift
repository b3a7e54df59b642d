import Foundation
import Glibc
import Testing

/// The same commands through redis-cli against aegiskv and a real
/// redis-server: replies and error texts must match, byte for byte, except
/// where this product differs on purpose (one database, its own CONFIG
/// values, its own HELLO identity).
@Suite(.serialized)
struct RedisDifferentialTests {
    static let script: [[String]] = [
        ["SET", "a", "1"], ["SET", "a", "2", "NX"], ["SET", "a", "3", "XX", "GET"], ["SET", "b", "1", "EX", "0"],
        ["SET", "b", "1", "EX", "abc"], ["SET", "b", "1", "PX", "100", "EX", "10"], ["SET", "b", "1", "KEEPTTL", "EX", "10"],
        ["SET", "b", "1", "NX", "XX"], ["SET", "b"], ["GETEX", "a", "EX", "100"], ["GETEX", "a", "PERSIST"], ["GETEX", "a", "FOO"],
        ["GETDEL", "a"], ["GETDEL", "a"], ["INCR", "x"], ["INCRBY", "x", "abc"], ["INCRBY", "x", "9223372036854775807"],
        ["DECRBY", "x", "-9223372036854775808"], ["APPEND", "x", "5"], ["STRLEN", "x"], ["TYPE", "x"], ["TYPE", "nope"],
        ["EXPIRE", "x", "10", "NX"], ["EXPIRE", "x", "20", "NX"], ["EXPIRE", "x", "5", "GT"], ["EXPIRE", "x", "50", "LT"],
        ["EXPIRE", "x", "10", "NX", "XX"], ["EXPIRE", "x", "abc"], ["TTL", "x"], ["PERSIST", "x"], ["PERSIST", "x"],
        ["TTL", "nope"], ["PTTL", "nope"], ["EXISTS", "x", "x", "nope"], ["DEL", "x", "nope", "x"], ["MSET", "k1", "v1", "k2"],
        ["MSET", "k1", "v1", "k2", "v2"], ["MGET", "k1", "k2", "k3"], ["UNLINK", "k1", "k2", "k3"], ["SELECT", "abc"],
        ["ECHO"], ["ECHO", "hi"], ["PING"], ["PING", "a"], ["PING", "a", "b"], ["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "a b"],
        ["CLIENT", "SETNAME"], ["CLIENT", "FOO"], ["CONFIG", "FOO"], ["CONFIG", "GET"], ["COMMAND", "FOO"], ["SCAN", "abc"],
        ["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "FOO", "bar"], ["DBSIZE"], ["FLUSHALL", "FOO"], ["SETEX", "s", "0", "v"],
        ["SETEX", "s", "abc", "v"], ["SETNX", "s", "v"], ["SETNX", "s", "w"], ["PSETEX", "p", "-5", "v"], ["HELLO", "4"],
        ["HELLO", "abc"], ["AUTH", "secret"], ["NOSUCHCOMMAND", "x", "y"], ["get"], ["GeT", "s"], ["EXPIREAT", "s", "1"],
        ["GET", "s"], ["INCR", "k"], ["INCRBY", "k", "-5"], ["GET", "k"], ["FLUSHALL"], ["DBSIZE"],
    ]

    @Test func repliesMatchRedisServer() throws {
        let aegis = try ServerHarness()
        defer { #expect(aegis.stop() == 0) }
        let redisPort = try freePort()
        let redis = try startProcess("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        defer { stopProcess(redis) }
        for _ in 0..<200 {
            if (try? TestSocket(port: redisPort)) != nil { break }
            usleep(20_000)
        }
        for command in Self.script {
            let ours = try runTool("redis-cli", ["-p", String(aegis.port)] + command).output
            let theirs = try runTool("redis-cli", ["-p", String(redisPort)] + command).output
            #expect(ours == theirs, "\(command.joined(separator: " "))")
        }
    }
}
