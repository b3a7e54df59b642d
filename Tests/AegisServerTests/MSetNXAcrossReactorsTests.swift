import Foundation
import Glibc
import Testing

/// MSETNX over keys of several reactors (MSetNXAcrossReactors.swift): the
/// same replies as redis-server, all or nothing under contention, and its
/// writes in the log like any other.
@Suite(.serialized)
struct MSetNXAcrossReactorsTests {
    /// `count` keys named `prefix0`, `prefix1`..., spread over every reactor.
    static func spread(_ prefix: String, _ count: Int, reactors: Int) -> [String] {
        let keys = (0..<count).map { "\(prefix)\($0)" }
        let owners = Set(keys.map { ToolCommandsTests.reactor(of: $0, reactors: reactors) })
        precondition(owners.count == reactors, "\(prefix): \(count) keys should cover every reactor")
        return keys
    }

    @Test func repliesMatchRedisServerWithKeysOnEveryReactor() throws {
        let reactors = 4
        let aegis = try ServerHarness(reactors: reactors)
        defer { #expect(aegis.stop() == 0) }
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let keys = Self.spread("mk", 40, reactors: reactors)
        var script: [[String]] = [["MSETNX"] + keys.flatMap { [$0, "v-\($0)"] }, ["MGET"] + keys, ["TTL", keys[7]]]
        // One existing key, on each reactor in turn (the coordinator's own
        // included): nothing of the others is written.
        for (round, existing) in keys.prefix(8).enumerated() {
            let fresh = (0..<12).map { "fresh\(round)-\($0)" }
            script.append(["MSETNX"] + (fresh + [existing]).shuffled().flatMap { [$0, "x"] })
            script.append(["EXISTS"] + fresh)
            script.append(["GET", existing])
        }
        script += [
            // A key named twice: the last value wins, as in redis-server.
            ["MSETNX", "dup1", "a", "dup2", "b", "dup1", "c"], ["MGET", "dup1", "dup2"],
            ["MSETNX"] + keys.suffix(5).flatMap { [$0, "again"] }, ["MGET"] + keys.suffix(5),
            ["MSETNX", "odd1", "a", "odd2"], ["MSETNX", "odd1"], ["EXISTS", "odd1", "odd2"],
            ["MSETNX", "bin\u{0}key", "v\r\nx", "other", ""], ["MGET", "bin\u{0}key", "other"],
            ["DEL"] + keys.prefix(20), ["MSETNX"] + keys.prefix(25).flatMap { [$0, "second"] }, ["MGET"] + keys.prefix(25),
            ["DBSIZE"],
        ]
        let ours = try TestSocket(port: aegis.port)
        let theirs = try TestSocket(port: redis.port)
        var differences: [String] = []
        for command in script {
            let mine = try exchange(ours, command)
            let reference = try exchange(theirs, command)
            if mine != reference {
                differences.append("\(command.prefix(6).joined(separator: " ")): aegiskv \(escaped(mine)) redis \(escaped(reference))")
            }
        }
        #expect(differences.isEmpty, "\(differences.count) replies differ:\n\(differences.joined(separator: "\n"))")
    }

    /// Two clients race MSETNX over key sets that share one key, on four
    /// reactors: exactly one wins each round, every key of the winner holds
    /// its value, and no key only the loser named exists.
    @Test func allOrNothingUnderContention() throws {
        let reactors = 4
        let aegis = try ServerHarness(reactors: reactors)
        defer { #expect(aegis.stop() == 0) }
        let rounds = 150
        let clients = try (0..<2).map { _ in try TestSocket(port: aegis.port) }
        let checker = try TestSocket(port: aegis.port)
        for round in 0..<rounds {
            let shared = "shared\(round)"
            let sets = (0..<2).map { client in [shared] + (0..<9).map { "r\(round)c\(client)k\($0)" } }
            // Both sent before either reply is read: the two run interleaved.
            for client in 0..<2 {
                let command = ["MSETNX"] + sets[client].flatMap { [$0, "from\(client)"] }
                try clients[client].send("*\(command.count)\r\n" + command.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined())
            }
            let replies = try clients.map { try readReply($0) }
            let answers = replies.map { String(decoding: $0, as: UTF8.self) }
            #expect(answers.sorted() == [":0\r\n", ":1\r\n"], "round \(round): \(answers)")
            guard let winner = answers.firstIndex(of: ":1\r\n") else { continue }
            let loser = 1 - winner
            let held = String(decoding: try exchange(checker, ["MGET"] + sets[winner]), as: UTF8.self)
            let expected = "*10\r\n" + String(repeating: "$5\r\nfrom\(winner)\r\n", count: 10)
            #expect(held == expected, "round \(round): the winner's keys hold \(held)")
            let loserOnly = Array(sets[loser].dropFirst())
            #expect(try exchange(checker, ["EXISTS"] + loserOnly) == Array(":0\r\n".utf8), "round \(round): a key of the loser exists")
        }
    }

    /// The keys an MSETNX set on every reactor are in the log: a node
    /// killed with SIGKILL right after the reply has them at restart.
    @Test func survivesAKillWithTheLogOn() throws {
        let reactors = 3
        let walDirectory = WALCrashTests.temporaryDirectory("msetnx")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let keys = Self.spread("durable", 30, reactors: reactors)
        let first = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: reactors)
        let client = try TestSocket(port: first.port)
        #expect(try exchange(client, ["MSETNX"] + keys.flatMap { [$0, "kept-\($0)"] }) == Array(":1\r\n".utf8))
        _ = first.stop(signal: SIGKILL)
        let second = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: reactors)
        defer { #expect(second.stop() == 0) }
        let again = try TestSocket(port: second.port)
        let held = try exchange(again, ["MGET"] + keys)
        let expected = "*\(keys.count)\r\n" + keys.map { "$\("kept-\($0)".utf8.count)\r\nkept-\($0)\r\n" }.joined()
        #expect(String(decoding: held, as: UTF8.self) == expected)
    }
}
