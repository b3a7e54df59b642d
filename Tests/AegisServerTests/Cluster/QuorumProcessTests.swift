@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Glibc
import Testing

/// Write quorums with real processes (issue 12): three nodes on
/// 127.0.0.11-13, replication_factor 3 (the default), write_quorum 2. A
/// follower is made unreachable by SIGSTOP: its process keeps its sockets
/// but answers nothing, as a node in a long pause does.
@Suite(.serialized) struct QuorumProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// Runs `commands` through `member` in one connection (pipelined or one
    /// at a time) and returns each reply as text; an error reply is "error: <text>".
    static func run(_ member: Member, _ commands: [[String]], pipelined: Bool = false) throws -> [String] {
        try run(host: member.host, port: member.clientPort, name: member.name, commands, pipelined: pipelined)
    }

    /// `run` for a caller on another thread (a Member is not Sendable).
    static func run(host: String, port: UInt16, name: String, _ commands: [[String]], pipelined: Bool = false) throws -> [String] {
        let script = """
        import json, sys, redis
        client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=30, decode_responses=True)
        commands = json.loads(sys.stdin.read())
        def text(r):
            return "error: " + str(r) if isinstance(r, Exception) else str(r)
        out = []
        if sys.argv[3] == "1":
            p = client.pipeline(transaction=False)
            for c in commands: p.execute_command(*c)
            out = [text(r) for r in p.execute(raise_on_error=False)]
        else:
            for c in commands:
                try: out.append(text(client.execute_command(*c)))
                except redis.exceptions.ResponseError as e: out.append(text(e))
        print(json.dumps(out))
        """
        let json = String(decoding: try JSONSerialization.data(withJSONObject: commands), as: UTF8.self)
        // Through stdin: argv holds at most 128 KiB per argument.
        let result = try runTool("python3", ["-c", script, host, String(port), pipelined ? "1" : "0"], input: json)
        guard result.status == 0, let data = result.output.data(using: .utf8),
              let replies = try JSONSerialization.jsonObject(with: data) as? [String] else {
            throw HarnessError("commands through \(name) failed: \(result.output)")
        }
        return replies
    }

    /// `suspectTimeout` longer than a test's pauses keeps the paused followers
    /// in the map (placement counts alive members only): a follower the map
    /// drops and takes back needs its shards streamed, which is not built
    /// (docs/replication.md).
    static func startCluster(writeTimeout: String, suspectTimeout: String = "1s", deadTimeout: String = "3s",
                             extra: [String] = []) throws -> [Member] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-quorum-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        for member in members {
            try member.start(seeds: members.map(\.gossipAddress), extra: [
                "--write-quorum", "2", "--write-timeout", writeTimeout, "--suspect-timeout", suspectTimeout, "--dead-timeout", deadTimeout,
            ] + extra)
        }
        guard ReplicationProcessTests.waitForMap(members), LeaseProcessTests.waitForEveryShardHeld(members) else {
            for member in members { member.stop() }
            throw HarnessError("no common map with 3 members and a lease holder for every shard:\n\(members.map { $0.log() }.joined(separator: "\n"))")
        }
        return members
    }

    /// `count` keys named `prefix:<i>` whose primary is `node`.
    static func keys(_ prefix: String, primary node: String, count: Int) throws -> [String] {
        var out: [String] = []
        var i = 0
        while out.count < count {
            let key = "\(prefix):\(i)"
            if try ReplicationProcessTests.primary(of: key) == node { out.append(key) }
            i += 1
        }
        return out
    }

    static func metric(_ member: Member, _ name: String) -> Int? {
        let line = (member.get("/metrics") ?? "").split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Int($0.split(separator: " ")[1]) }
    }

    @Test(.hangBound) func aWriteWaitsForOneFollowerTimesOutWithoutAnyAndConvergesAfterwards() throws {
        let members = try Self.startCluster(writeTimeout: "1s", suspectTimeout: "10s", deadTimeout: "12s")
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { member.stop() }
        }
        let keys = try Self.keys("q", primary: "node1", count: 3)

        // Both followers up: the write waits for one of them and says OK; WAIT sees both.
        #expect(try Self.run(members[0], [["SET", keys[0], "v0"], ["WAIT", "2", "5000"]]) == ["True", "2"])

        // node3 paused: node2's acknowledgement makes W = 2.
        members[2].signal(SIGSTOP)
        let one = try Self.run(members[0], [["SET", keys[1], "v1"], ["INCR", keys[2]], ["WAIT", "2", "300"]])
        #expect(one == ["True", "1", "1"], "W = 2 reached with one follower paused; WAIT counts the one that acknowledged")

        // node2 paused too: no replica but the primary; the write times out and is never answered OK.
        members[1].signal(SIGSTOP)
        let none = try Self.run(members[0], [["SET", keys[1], "v2"], ["GET", keys[1]]])
        #expect(none.count == 2)
        let refusal = none.first ?? ""
        // With both followers paused node1 holds its shards' leases only until
        // they run out (at most lease_duration): a write before that is applied
        // and times out at W; one after it (a slow, loaded machine) is refused
        // unapplied with TRYAGAIN. Either way it is never answered OK.
        // redis-py raises TryAgainError with the text after the TRYAGAIN code.
        let refusedForLease = refusal.hasPrefix("error: ") && refusal.contains("has no lease holder here")
        if refusedForLease {
            #expect(none.last == "v1", "a write refused for lack of a lease is not applied: \(none)")
            #expect((Self.metric(members[0], "aegis_lease_write_refusals_total") ?? 0) >= 1)
        } else {
            #expect((refusal.hasPrefix("error: TIMEOUT write applied on 1 of 2 replicas") || refusal.hasPrefix("error: NOREPLICAS write applied on 1 of 2 replicas"))
                    && refusal.contains("it may or may not survive a failover"), "\(none)")
            // The read behind it on the same connection waited for it, and sees what the primary holds.
            #expect(none.last == "v2", "\(none)")
            #expect((Self.metric(members[0], "aegis_quorum_timeouts_total") ?? 0) + (Self.metric(members[0], "aegis_quorum_unreachable_total") ?? 0) >= 1)
            #expect((Self.metric(members[0], "aegis_quorum_waits_total") ?? 0) >= 4)
        }
        let info = try Self.run(members[0], [["INFO", "replication"]]).first ?? ""
        #expect(info.contains("write_quorum") && info.contains("quorum_waits"), "\(info)")

        // Resumed: the followers catch up, and a new write reaches W again.
        members[1].signal(SIGCONT)
        members[2].signal(SIGCONT)
        #expect(ReplicationProcessTests.waitForMap(members), "the three agree again")
        // WAIT counts the acknowledgements of the connection's own last write.
        var last: [String]?
        #expect(waitUntil(seconds: 30) {
            last = try? Self.run(members[0], [["SET", keys[0], "v3"], ["WAIT", "2", "1000"]])
            return last == ["True", "2"]
        }, "a write reaches W again and both followers acknowledge it: \(last ?? [])\n\(members[0].get("/cluster") ?? "")")
        // node2 alone holds what node1 wrote, including the write that timed out.
        let survivor = try ReplicationProcessTests.readLastStanding(members, kill: [members[0], members[2]], keys: keys)
        #expect(survivor.values[keys[0]] == "v3")
        #expect(survivor.values[keys[1]] == (refusedForLease ? "v1" : "v2"),
                "the write answered TIMEOUT was applied, and replicated once node2 resumed; one refused TRYAGAIN was not")
        #expect(survivor.values[keys[2]] == "1")
    }

    @Test(.hangBound) func pipelinedWritesThroughEveryPrimaryKeepTheirOrder() throws {
        let members = try Self.startCluster(writeTimeout: "10s")
        defer { for member in members { member.stop() } }
        var commands: [[String]] = []
        var expected: [String] = []
        for i in 0..<150 {
            let key = "p:\(i)"
            commands += [["SET", key, "v\(i)"], ["GET", key], ["INCR", "n:\(i % 7)"], ["APPEND", key, "+"], ["GET", key]]
            expected += ["True", "v\(i)", String(i / 7 + 1), String("v\(i)+".utf8.count), "v\(i)+"]
        }
        let primaries = Set(try (0..<150).map { try ReplicationProcessTests.primary(of: "p:\($0)") })
        #expect(primaries == ["node1", "node2", "node3"], "writes held on every node, some forwarded from node2")
        let replies = try Self.run(members[1], commands, pipelined: true)
        let wrong = zip(replies, expected).enumerated().filter { $0.element.0 != $0.element.1 }
        #expect(replies.count == expected.count && wrong.isEmpty, "first differences: \(wrong.prefix(5))")
        for member in members { #expect((Self.metric(member, "aegis_quorum_waits_total") ?? 0) > 0, "\(member.name) held writes") }
    }

    /// replication_batch_size 4 and a long replication_batch_timeout: eight
    /// writes leave for each follower as two full batches; a ninth waits
    /// for the timeout, and WAIT sees it reach both followers only then.
    @Test(.hangBound) func replicationBatchesLeaveWhenFullOrAtTheirTimeout() throws {
        let members = try Self.startCluster(writeTimeout: "10s", extra: [
            "--write-quorum", "0", "--replication-batch-size", "4", "--replication-batch-timeout", "1500ms",
        ])
        defer { for member in members { member.stop() } }
        let keys = try Self.keys("b", primary: "node1", count: 9)
        let eight = keys.prefix(8).map { ["SET", $0, "v-\($0)"] } + [["WAIT", "2", "5000"]]
        #expect(try Self.run(members[0], eight, pipelined: true) == Array(repeating: "True", count: 8) + ["2"])
        // The cluster loop publishes its counters to /metrics on its own
        // schedule, so they may trail WAIT's answer by a moment.
        var metrics = ""
        _ = waitUntil(seconds: 10) {
            metrics = members[0].get("/metrics") ?? ""
            return metrics.contains("aegis_replication_batches_total{reason=\"full\"} 4")
        }
        #expect(metrics.contains("aegis_replication_batches_total{reason=\"full\"} 4"), "two full batches per follower")
        #expect(metrics.contains("aegis_replication_batches_total{reason=\"timeout\"} 0"), "none waited for the timeout")
        #expect(try Self.run(members[0], [["SET", keys[8], "last"], ["WAIT", "2", "10000"]]) == ["True", "2"])
        var after = ""
        _ = waitUntil(seconds: 10) {
            after = members[0].get("/metrics") ?? ""
            return after.contains("aegis_replication_batches_total{reason=\"timeout\"} 2")
        }
        #expect(after.contains("aegis_replication_batches_total{reason=\"timeout\"} 2"), "the ninth left at the timeout, once per follower")
        #expect(after.contains("aegis_replication_batches_total{reason=\"full\"} 4"))
    }
}
