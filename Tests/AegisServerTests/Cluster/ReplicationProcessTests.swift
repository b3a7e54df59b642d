@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Glibc
import Testing

/// Replication at W = 0 with real processes (issue 12): three nodes on
/// 127.0.0.11-13, replication_factor 3 (the default), so every node holds
/// every shard. A replica is read by killing the nodes in front of it: the
/// last node standing is the primary of every shard and answers from what
/// it holds.
@Suite(.serialized) struct ReplicationProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// Writes through `host:port`: SET every key of `sets`, then DEL every key of `deletes`.
    static func write(_ member: Member, sets: [String: String], deletes: [String] = []) throws {
        let script = """
        import json, sys, redis
        host, port, sets, deletes = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
        client = redis.Redis(host=host, port=port, socket_timeout=30)
        p = client.pipeline(transaction=False)
        for key, value in sorted(sets.items()): p.set(key, value)
        for key in deletes: p.delete(key)
        results = p.execute()
        assert all(r is True for r in results[:len(sets)]), results
        print("ok")
        """
        let setsJSON = String(decoding: try JSONSerialization.data(withJSONObject: sets), as: UTF8.self)
        let deletesJSON = String(decoding: try JSONSerialization.data(withJSONObject: deletes), as: UTF8.self)
        let result = try runTool("python3", ["-c", script, member.host, String(member.clientPort), setsJSON, deletesJSON])
        guard result.status == 0, result.output.contains("ok") else { throw HarnessError("writes through \(member.name) failed: \(result.output)") }
    }

    /// GET of every key through `member` (nil = absent), and its DBSIZE.
    static func read(_ member: Member, _ keys: [String]) throws -> (values: [String: String?], dbsize: Int) {
        let script = """
        import json, sys, redis
        client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=30, decode_responses=True)
        keys = json.loads(sys.argv[3])
        p = client.pipeline(transaction=False)
        for key in keys: p.get(key)
        print(json.dumps({"values": dict(zip(keys, p.execute())), "dbsize": client.dbsize()}))
        """
        let keysJSON = String(decoding: try JSONSerialization.data(withJSONObject: keys), as: UTF8.self)
        let result = try runTool("python3", ["-c", script, member.host, String(member.clientPort), keysJSON])
        guard result.status == 0, let data = result.output.data(using: .utf8),
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let values = object["values"] as? [String: Any], let dbsize = object["dbsize"] as? Int else {
            throw HarnessError("reads through \(member.name) failed: \(result.output)")
        }
        var out: [String: String?] = [:]
        for (key, value) in values { out[key] = value as? String }
        return (out, dbsize)
    }

    /// Waits until every member of `alive` sees exactly them alive and all agree on one map.
    static func waitForMap(_ alive: [Member]) -> Bool {
        waitUntil(seconds: 60) {
            let views = alive.map { member -> String in
                guard let body = member.get("/cluster"),
                      let out = try? runTool("jq", ["-r", "[.placement_digest, (.members | map(select(.status == \"alive\")) | map(.node_id) | sort | join(\",\"))] | join(\" \")"], input: body)
                else { return "" }
                return out.output
            }
            let names = alive.map(\.name).sorted().joined(separator: ",")
            return views.allSatisfy { $0 == views[0] && $0.hasSuffix(" \(names)\n") }
        }
    }

    static func startCluster() throws -> [Member] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-replication-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: ["--reactors", "2"]) }
        guard waitForMap(members), LeaseProcessTests.waitForEveryShardHeld(members) else {
            for member in members { member.stop() }
            throw HarnessError("no common map with 3 members:\n\(members.map { $0.log() }.joined(separator: "\n"))")
        }
        return members
    }

    /// Kills `doomed` one at a time (waiting for the others to agree on the
    /// map without it) and returns what the survivor then answers for `keys`.
    static func readLastStanding(_ members: [Member], kill doomed: [Member], keys: [String]) throws -> (values: [String: String?], dbsize: Int) {
        var alive = members
        for member in doomed {
            member.crash()
            alive.removeAll { $0.name == member.name }
            guard waitForMap(alive) else {
                throw HarnessError("survivors never agreed without \(member.name):\n\(alive.map { $0.log() }.joined(separator: "\n"))")
            }
        }
        return try read(alive[0], keys)
    }

    /// The primary of `key` in the three-node map (256 shards, 128 virtual nodes: the defaults).
    static func primary(of key: String) throws -> String { try ForwardingProcessTests.primary(of: key) }

    @Test(.hangBound) func writesThroughEveryNodeReachTheLastReplicaStandingAndDeletesStayDeleted() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        var expected: [String: String?] = [:]
        for (n, member) in members.enumerated() {
            var sets: [String: String] = [:]
            for i in 0..<150 { sets["r\(n):\(i)"] = "v-\(n)-\(i)-\(i &* 7919 % 10_007)" }
            let deletes = (0..<150).filter { $0 % 5 == 0 }.map { "r\(n):\($0)" }
            try Self.write(member, sets: sets, deletes: deletes)
            for (key, value) in sets { expected[key] = value }
            for key in deletes { expected[key] = .some(nil) }
        }
        // Records leave within a loop iteration; give the followers a moment to apply them.
        usleep(500_000)
        // Every node was primary for some of the keys and sent their writes to both others.
        for member in members {
            let metrics = member.get("/metrics") ?? ""
            let sent = metrics.split(separator: "\n").first { $0.hasPrefix("aegis_replication_records_sent_total ") }
            #expect((sent.flatMap { Int($0.split(separator: " ")[1]) } ?? 0) > 0, "\(member.name): \(sent ?? "no aegis_replication_records_sent_total")")
            let lagLines = metrics.split(separator: "\n").filter { $0.hasPrefix("aegis_replication_lag_records{") }
            #expect(lagLines.count == 2, "\(member.name) reports the lag of its two followers: \(lagLines)")
            let cluster = member.get("/cluster") ?? ""
            #expect(cluster.contains("\"replication\"") && cluster.contains("\"lag_records\""), "\(member.name) /cluster shows follower lag")
        }
        let keys = expected.keys.sorted()
        let primaries = Set(try keys.map(Self.primary(of:)))
        #expect(primaries == ["node1", "node2", "node3"], "the keys' primaries are spread over the three nodes")
        let survivor = try Self.readLastStanding(members, kill: [members[0], members[1]], keys: keys)
        var wrong: [String] = []
        for key in keys where survivor.values[key] ?? nil != expected[key]! { wrong.append(key) }
        #expect(wrong.isEmpty, "node3 alone answered differently for \(wrong.count) keys, e.g. \(wrong.prefix(5))")
        #expect(survivor.dbsize == expected.values.count { $0 != nil }, "DBSIZE counts the live keys only, no tombstones")
    }

    @Test(.hangBound) func aFollowerKilledAndRestartedCatchesUpAndDeletesDoNotComeBack() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        // Keys node3 only follows: node3 comes back empty, and for the shards
        // it is primary of it refills only with shard movement (not built).
        var candidates: [String] = []
        var i = 0
        while candidates.count < 400 {
            let key = "c:\(i)"
            if try Self.primary(of: key) != "node3" { candidates.append(key) }
            i += 1
        }
        let before = Array(candidates[..<200])
        let during = Array(candidates[200...])
        var expected: [String: String?] = [:]
        try Self.write(members[0], sets: Dictionary(uniqueKeysWithValues: before.map { ($0, "before-\($0)") }))
        for key in before { expected[key] = "before-\(key)" }

        members[2].crash()
        #expect(Self.waitForMap([members[0], members[1]]), "node1 and node2 agree without node3")
        #expect(LeaseProcessTests.waitForEveryShardHeld([members[0], members[1]]), "node1 and node2 hold every shard")
        // Written while node3 is down: new keys, overwrites and deletes of old ones.
        let overwritten = before.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        let deleted = before.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
        var sets = Dictionary(uniqueKeysWithValues: during.map { ($0, "during-\($0)") })
        for key in overwritten { sets[key] = "again-\(key)" }
        try Self.write(members[1], sets: sets, deletes: deleted)
        for (key, value) in sets { expected[key] = value }
        for key in deleted { expected[key] = .some(nil) }

        try members[2].start(seeds: members.map(\.gossipAddress), extra: ["--reactors", "2"])
        #expect(Self.waitForMap(members), "node3 is back in the map")
        // The catch-up runs every 50 ms from the primaries' recent-writes tails.
        usleep(1_500_000)
        let keys = expected.keys.sorted()
        let survivor = try Self.readLastStanding(members, kill: [members[0], members[1]], keys: keys)
        var wrong: [String] = []
        for key in keys where survivor.values[key] ?? nil != expected[key]! { wrong.append(key) }
        #expect(wrong.isEmpty, "restarted node3 answered differently for \(wrong.count) keys, e.g. \(wrong.prefix(5))\n\(members[2].log().suffix(3000))")
        #expect(survivor.dbsize == expected.values.count { $0 != nil })
    }

    /// node1 dies; node2 takes over its shards while node3 still follows
    /// them. The new primary must keep replicating to node3 (it once
    /// started node3 at version zero, out of its tail's reach, and left it
    /// behind for good), so when node2 dies too, node3 alone still holds
    /// every write made before and after the first failover. Found by chaos/.
    @Test(.hangBound) func aNewPrimaryAfterAFailoverKeepsReplicatingToTheFollowerLeft() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        let before = Dictionary(uniqueKeysWithValues: (0..<300).map { ("before:\($0)", "b\($0)") })
        try Self.write(members[2], sets: before)
        usleep(500_000)
        members[0].crash()
        #expect(Self.waitForMap([members[1], members[2]]), "node2 and node3 agree without node1")
        // node1's shards are writable again once its leases ran out and node2
        // or node3 won them (leases: one lease plus margin after the crash).
        #expect(LeaseProcessTests.waitForEveryShardHeld([members[1], members[2]]), "node2 and node3 hold every shard")
        let after = Dictionary(uniqueKeysWithValues: (0..<300).map { ("after:\($0)", "a\($0)") })
        try Self.write(members[2], sets: after)
        let tookOver = try after.keys.filter { try Self.primary(of: $0) == "node1" }
        #expect(!tookOver.isEmpty, "some keys live in shards node1 was primary of")
        usleep(1_500_000)
        let expected = before.merging(after) { $1 }
        let keys = expected.keys.sorted()
        let survivor = try Self.readLastStanding([members[1], members[2]], kill: [members[1]], keys: keys)
        let lost = keys.filter { survivor.values[$0] ?? nil != expected[$0] }
        #expect(lost.isEmpty, "node3 alone lacks \(lost.count) keys, e.g. \(lost.prefix(5)); node2:\n\(members[1].log().suffix(2000))")
    }
}
