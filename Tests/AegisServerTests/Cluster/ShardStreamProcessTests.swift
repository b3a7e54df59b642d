@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Glibc
import Testing

/// Shard streams with real processes (issue 12 item 2): three nodes on
/// 127.0.0.11-13, replication_factor 3, a recent-writes tail shrunk to 16
/// records per shard (replication_tail_records). node3 is paused (SIGSTOP)
/// until the others call it dead, node1 writes far more than the tail holds
/// to a few of its shards, node3 resumes and rejoins: the tail cannot catch
/// it up, so node1 streams it those shards. node3 alone then holds every key
/// with node1's value, and nothing deleted while it was paused comes back.
@Suite(.serialized) struct ShardStreamProcessTests {
    typealias Member = ClusterProcessTests.Member

    static func shard(of key: String) -> Int {
        Array(key.utf8).withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: 256) }
    }

    /// `perShard` keys in each of `shards` shards whose primary is node1 (in
    /// the three-node map, and so in the map without node3 too).
    static func keysOfNode1(shards: Int, perShard: Int) throws -> [String] {
        var byShard: [Int: [String]] = [:]
        var i = 0
        while byShard.values.filter({ $0.count >= perShard }).count < shards && i < 1_000_000 {
            let key = "s:\(i)"
            i += 1
            guard try ReplicationProcessTests.primary(of: key) == "node1" else { continue }
            let shard = Self.shard(of: key)
            if byShard[shard] == nil && byShard.count >= shards { continue }
            byShard[shard, default: []].append(key)
        }
        return byShard.values.flatMap { $0.prefix(perShard) }.sorted()
    }

    @Test(.hangBound) func aPausedFollowerBeyondTheTailGetsItsShardsStreamedAndDeletesStayDeleted() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-stream-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        let extra = ["--reactors", "2", "--replication-tail-records", "16"]
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: extra) }
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { _ = member.stop() }
        }
        #expect(ReplicationProcessTests.waitForMap(members), "three members agree")

        let keys = try Self.keysOfNode1(shards: 3, perShard: 60)
        #expect(keys.count == 180)
        var expected: [String: String?] = [:]
        // Before the pause: half the keys, which node3 receives as usual.
        let before = Array(keys.prefix(90))
        try ReplicationProcessTests.write(members[0], sets: Dictionary(uniqueKeysWithValues: before.map { ($0, "before-\($0)") }))
        for key in before { expected[key] = "before-\(key)" }
        usleep(500_000)

        members[2].signal(SIGSTOP)
        #expect(ReplicationProcessTests.waitForMap([members[0], members[1]]), "node1 and node2 call node3 dead")
        // Paused: the other half set, a third of the first half deleted, a
        // third overwritten, then everything overwritten once more but the
        // deleted keys: over 100 writes per shard, six times the tail.
        let deleted = before.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        let during = Array(keys.suffix(90))
        var sets = Dictionary(uniqueKeysWithValues: during.map { ($0, "during-\($0)") })
        for (offset, key) in before.enumerated() where offset % 3 == 1 { sets[key] = "again-\(key)" }
        try ReplicationProcessTests.write(members[0], sets: sets, deletes: deleted)
        let live = keys.filter { !deleted.contains($0) }
        let last = Dictionary(uniqueKeysWithValues: live.map { ($0, "last-\($0)") })
        try ReplicationProcessTests.write(members[0], sets: last)
        for key in deleted { expected[key] = .some(nil) }
        for (key, value) in last { expected[key] = value }

        members[2].signal(SIGCONT)
        #expect(ReplicationProcessTests.waitForMap(members), "node3 is back in the map")
        var finished = 0
        #expect(waitUntil(seconds: 60) {
            finished = QuorumProcessTests.metric(members[0], "aegis_replication_streams_finished_total") ?? 0
            return finished >= 3
        }, "node1 streamed its three shards to node3: \(finished) finished\n\(members[0].get("/metrics")?.split(separator: "\n").filter { $0.contains("stream") } ?? [])")
        #expect((QuorumProcessTests.metric(members[0], "aegis_replication_stream_bytes_total") ?? 0) > 0)
        // After a stream, replication goes on from the tail: let it finish.
        usleep(1_000_000)

        let survivor = try ReplicationProcessTests.readLastStanding(members, kill: [members[0], members[1]], keys: keys)
        var wrong: [String] = []
        for key in keys where survivor.values[key] ?? nil != expected[key]! { wrong.append(key) }
        #expect(wrong.isEmpty, "node3 answered differently for \(wrong.count) keys, e.g. \(wrong.prefix(5).map { "\($0): \(String(describing: survivor.values[$0] ?? nil))" })\n\(members[2].log().suffix(3000))")
        #expect(deleted.allSatisfy { survivor.values[$0] ?? nil == nil }, "no deleted key came back")
    }
}
