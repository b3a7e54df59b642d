@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Glibc
import Testing

/// Shard leases between real processes (issue 12 item 4): three nodes on
/// 127.0.0.11-13, replication_factor 3, each with its own data_dir.
@Suite(.serialized) struct LeaseProcessTests {
    typealias Member = ClusterProcessTests.Member

    static let numShards = 256

    /// Per shard: (term, whether this member holds the lease) from its /cluster.
    static func leases(_ member: Member) -> [Int: (term: Int, held: Bool)]? {
        guard let body = member.get("/cluster"),
              let data = body.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let leases = object["leases"] as? [String: Any], let shards = leases["shards"] as? [[String: Any]] else { return nil }
        var out: [Int: (term: Int, held: Bool)] = [:]
        for shard in shards {
            guard let number = shard["shard"] as? Int, let term = shard["term"] as? Int else { return nil }
            out[number] = (term, shard["lease_expires_in_ms"] is Int)
        }
        return out
    }

    /// Waits until every shard has exactly one holder among `members`.
    static func waitForEveryShardHeld(_ members: [Member], seconds: Double = 60) -> Bool {
        waitUntil(seconds: seconds) {
            let views = members.compactMap(leases)
            guard views.count == members.count else { return false }
            return (0..<numShards).allSatisfy { shard in views.count { $0[shard]?.held == true } == 1 }
        }
    }

    /// One SET through `member`; the error text when refused (nil = OK).
    static func set(_ member: Member, _ key: String, _ value: String) -> String? {
        guard let result = try? runTool("redis-cli", ["-h", member.host, "-p", String(member.clientPort), "SET", key, value]) else {
            return "redis-cli did not run"
        }
        let output = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        return output == "OK" ? nil : output
    }

    static func shard(of key: String) -> Int {
        let hash = Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }
        return KeyHash.shard(of: hash, shardCount: numShards)
    }

    static func startCluster(directory: String) throws -> [Member] {
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        for member in members { try member.start(seeds: members.map(\.gossipAddress)) }
        guard ReplicationProcessTests.waitForMap(members), waitForEveryShardHeld(members) else {
            for member in members { member.stop() }
            throw HarnessError("no leases for every shard:\n\(members.map { $0.log() }.joined(separator: "\n"))")
        }
        return members
    }

    @Test(.timeLimit(.minutes(4))) func aKilledPrimarysShardIsWonByASurvivorAtAHigherTermAndTheOldPrimaryDemotesOnReturn() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-leases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try Self.startCluster(directory: directory)
        defer { for member in members { member.stop() } }
        let key = try (0..<1000).map { "lease-key-\($0)" }.first { try ForwardingProcessTests.primary(of: $0) == "node1" }!
        let shard = Self.shard(of: key)
        #expect(Self.set(members[1], key, "before") == nil, "a write through a follower reaches the lease holder")
        let before = try #require(Self.leases(members[0])?[shard])
        #expect(before.held, "node1, the shard's first replica, holds its lease")

        members[0].crash()
        var refusals = 0
        let won = waitUntil(seconds: 60) {
            if Self.set(members[1], key, "after") == nil { return true }
            refusals += 1
            return false
        }
        #expect(won, "a survivor accepts the shard's writes again:\n\(members[1].log())\n\(members[2].log())")
        let survivors = [members[1], members[2]].compactMap { Self.leases($0)?[shard] }
        let holder = survivors.first { $0.held }
        #expect(holder != nil, "one survivor holds the lease")
        #expect((holder?.term ?? 0) > before.term, "at a higher term: \(before.term) -> \(holder?.term ?? 0)")
        let metrics = (members[1].get("/metrics") ?? "") + (members[2].get("/metrics") ?? "")
        #expect(metrics.contains("aegis_lease_elections_won_total"), "elections are counted")

        try members[0].start(seeds: members.map(\.gossipAddress))
        let demoted = waitUntil(seconds: 60) {
            guard let view = Self.leases(members[0])?[shard] else { return false }
            return !view.held && view.term >= (holder?.term ?? Int.max)
        }
        #expect(demoted, "node1 comes back, learns the higher term and does not hold the lease:\n\(members[0].log())")
        #expect(members[0].log().contains("lease term changed"), "one notice line per term change")
        let dataFiles = (try? FileManager.default.contentsOfDirectory(atPath: members[0].dataDir)) ?? []
        #expect(dataFiles.contains(TermStore.fileName), "terms are persisted in data_dir: \(dataFiles)")
        #expect(Self.set(members[2], key, "through-node3") == nil, "the holder keeps accepting the shard's writes")
    }
}
