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
        member.get("/cluster").flatMap(leases(clusterBody:))
    }

    /// Per shard: (term, whether the answering node holds the lease), from a /cluster body.
    static func leases(clusterBody body: String) -> [Int: (term: Int, held: Bool)]? {
        guard let data = body.data(using: .utf8),
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

    /// The per-shard entries of `member`'s /cluster lease view.
    static func shardEntries(_ member: Member) -> [[String: Any]]? {
        guard let body = member.get("/cluster"),
              let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let leases = object["leases"] as? [String: Any] else { return nil }
        return leases["shards"] as? [[String: Any]]
    }

    /// The newest (term, seq) `member`'s lease machine counts for `shard`.
    static func localVersion(_ member: Member, shard: Int) -> EntryVersion? {
        guard let entry = shardEntries(member)?.first(where: { $0["shard"] as? Int == shard }),
              let local = entry["local_version"] as? [String: Any],
              let term = local["term"] as? Int, let seq = local["seq"] as? Int else { return nil }
        return EntryVersion(term: UInt32(term), seq: UInt64(seq))
    }

    /// The shards whose copy on `member` holds a write (a local version past zero).
    static func shardsWithWrites(on member: Member) -> Set<Int> {
        Set((shardEntries(member) ?? []).compactMap { entry in
            guard let number = entry["shard"] as? Int, let local = entry["local_version"] as? [String: Any],
                  (local["seq"] as? Int ?? 0) > 0 else { return nil }
            return number
        })
    }

    static func startCluster(directory: String, extra: [String] = []) throws -> [Member] {
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: extra) }
        guard ReplicationProcessTests.waitForMap(members), waitForEveryShardHeld(members) else {
            for member in members { member.stop() }
            throw HarnessError("no leases for every shard:\n\(members.map { $0.log() }.joined(separator: "\n"))")
        }
        return members
    }

    @Test(.hangBound) func aKilledPrimarysShardIsWonByASurvivorAtAHigherTermAndTheOldPrimaryDemotesOnReturn() throws {
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

    /// With the log on, a restarted primary counts the writes it replayed
    /// when it votes or campaigns, before any new write reaches it: here
    /// node1 restarts alone (its peers stopped), so nothing but its own log
    /// can tell its lease machine what it holds. (A follower logs no
    /// replicated records, durability.md: only a primary's writes replay.)
    @Test(.hangBound) func aRestartedPrimaryCountsTheVersionsItsLogReplayed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-leases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let walOn = ["--wal-mode", "write"]
        let members = try Self.startCluster(directory: directory, extra: walOn)
        defer { for member in members { member.stop() } }
        let key = try (0..<1000).map { "replayed-key-\($0)" }.first { try ForwardingProcessTests.primary(of: $0) == "node1" }!
        let shard = Self.shard(of: key)
        var written = false
        for attempt in 0..<20 where !written {
            written = Self.set(members[0], key, "value-\(attempt)") == nil
            if !written { usleep(200_000) }
        }
        try #require(written, "a write through node1, the shard's lease holder:\n\(members[0].log())")
        var before: EntryVersion?
        let counted = waitUntil(seconds: 10) {
            before = Self.localVersion(members[0], shard: shard)
            return (before ?? .zero) > .zero
        }
        #expect(counted, "node1 counts the write it made: \(String(describing: before))")

        for member in members { member.stop() }
        try members[0].start(seeds: members.map(\.gossipAddress), extra: walOn)
        var after: EntryVersion?
        let answered = waitUntil(seconds: 30) {
            after = Self.localVersion(members[0], shard: shard)
            return after != nil
        }
        #expect(answered, "node1 answers /cluster after its restart:\n\(members[0].log())")
        #expect(after == before, "node1's lease machine holds the replayed version \(String(describing: before)), not \(String(describing: after))")
        #expect(members[0].log().contains("newest local versions from the log replay"))
    }

    /// Whether `member`'s copy of `shard` may have a hole, from its /cluster.
    static func copyMayHaveHole(_ member: Member, shard: Int) -> Bool? {
        shardEntries(member)?.first(where: { $0["shard"] as? Int == shard })?["copy_may_have_hole"] as? Bool
    }

    /// A node restarted with its log holds of each shard what it replayed:
    /// its copies may have holes, and its asks say so, until the holder's
    /// stream of the shard finishes here. node1 is killed, node2 and node3
    /// take its shards and write past the tail (16 records) to one of them,
    /// node1 comes back with its log: every shard may have a hole; one more
    /// write makes the holder stream that shard, and it no longer may,
    /// while a shard nobody streamed still may. That one is a shard node1
    /// never held: one it held that no write reached comes back proven
    /// whole through nothing (`ReplayedCopy`, the snapshot of its win).
    @Test(.hangBound) func aRestartedNodesCopyMayHaveAHoleUntilItsShardIsStreamed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-leases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let extra = ["--wal-mode", "write", "--replication-tail-records", "16"]
        let members = try Self.startCluster(directory: directory, extra: extra)
        defer { for member in members { member.stop() } }
        let keys = try (0..<20_000).map { "hole-key-\($0)" }.filter { try ForwardingProcessTests.primary(of: $0) == "node2" }
        let shard = Self.shard(of: keys[0])
        let inShard = keys.filter { Self.shard(of: $0) == shard }.prefix(40)
        try #require(inShard.count == 40, "40 keys of one of node2's shards")
        let heldByNode1 = try #require(ForwardLinkAbandonProcessTests.shardsHeld(by: members[0]))
        let untouched = try #require((0..<Self.numShards).first { candidate in
            !keys.contains { Self.shard(of: $0) == candidate } && candidate != shard && !heldByNode1.contains(candidate)
        })
        #expect(Self.copyMayHaveHole(members[0], shard: shard) == false, "a first start has lost nothing")

        members[0].crash()
        let survivors = [members[1], members[2]]
        #expect(ReplicationProcessTests.waitForMap(survivors) && Self.waitForEveryShardHeld(survivors),
                "node2 and node3 hold every shard:\n\(members[1].log().suffix(2000))")
        try ReplicationProcessTests.write(members[1], sets: Dictionary(uniqueKeysWithValues: inShard.map { ($0, "while-down-\($0)") }))

        try members[0].start(seeds: members.map(\.gossipAddress), extra: extra)
        var holed: [Bool?] = []
        #expect(waitUntil(seconds: 30) {
            holed = [Self.copyMayHaveHole(members[0], shard: shard), Self.copyMayHaveHole(members[0], shard: untouched)]
            return holed.allSatisfy { $0 != nil }
        }, "node1 answers /cluster after its restart:\n\(members[0].log().suffix(2000))")
        // On a loaded machine the holder's stream of the written shard (its
        // tail no longer reaches node1) can finish before /cluster first
        // answers: the copy is whole then, and the log says it arrived.
        let streamedFirst = members[0].log().contains("received shard \(shard) from ")
        #expect(holed[1] == true && (holed[0] == true || streamedFirst),
                "every copy of a node restarted with its log may have a hole until a stream of it arrives: \(holed)")
        #expect(ReplicationProcessTests.waitForMap(members), "node1 is back in the map")

        var streamed = false
        let cleared = waitUntil(seconds: 60) {
            if !streamed { streamed = Self.set(members[1], inShard[0], "after-return") == nil }
            return Self.copyMayHaveHole(members[0], shard: shard) == false
        }
        #expect(cleared, "the holder's stream of the shard made node1's copy whole:\n\(members[0].log().suffix(3000))")
        #expect(Self.copyMayHaveHole(members[0], shard: untouched) == true, "a shard nobody streamed still may have a hole")
        let cluster = members[0].get("/cluster") ?? ""
        #expect(cluster.contains("\"holed_candidates_refused\""))
        #expect((members[0].get("/metrics") ?? "").contains("aegis_lease_holed_candidates_refused_total"))
    }

    /// After a whole-cluster kill -9 with the log on, each node's log holds
    /// every write of the shards it was the only writer of, from their first
    /// write on: the replay proves those copies whole, so they neither stand
    /// back nor are refused; the shards whose writes a node only received
    /// still may have holes on it. A snapshot taken between two rounds of
    /// writes keeps the proof (its end marker's proven heads). Every
    /// acknowledged write reads back.
    @Test(.hangBound) func copiesTheLogProvesWholeHaveNoHoleAfterAWholeClusterRestartAcrossASnapshot() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-leases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let walOn = ["--wal-mode", "write"]
        let members = try Self.startCluster(directory: directory, extra: walOn)
        defer { for member in members { member.stop() } }
        func keys(of node: String) throws -> [String] {
            let all = try (0..<20_000).map { "whole-\(node)-\($0)" }.filter { try ForwardingProcessTests.primary(of: $0) == node }
            let shard = Self.shard(of: all[0])
            return Array(all.filter { Self.shard(of: $0) == shard }.prefix(30))
        }
        let node1Keys = try keys(of: "node1"), node2Keys = try keys(of: "node2")
        try #require(node1Keys.count == 30 && node2Keys.count == 30, "30 keys in one shard of node1 and one of node2")
        let node1Shard = Self.shard(of: node1Keys[0]), node2Shard = Self.shard(of: node2Keys[0])
        try #require(Self.waitForEveryShardHeld(members), "every shard has a holder before the writes")
        try ReplicationProcessTests.write(members[0], sets: Dictionary(uniqueKeysWithValues: node1Keys.map { ($0, "v1-\($0)") }))
        try ReplicationProcessTests.write(members[1], sets: Dictionary(uniqueKeysWithValues: node2Keys.map { ($0, "v1-\($0)") }))
        for member in members {
            let snapshot = try runTool("curl", ["-s", "-X", "POST", "http://\(member.host):\(member.healthPort)/admin/wal/truncate"])
            let answer = try? JSONSerialization.jsonObject(with: Data(snapshot.output.utf8)) as? [String: Any]
            #expect(snapshot.status == 0 && answer?["completed"] as? Bool == true, "\(member.name): \(snapshot.output)")
        }
        try ReplicationProcessTests.write(members[0], sets: Dictionary(uniqueKeysWithValues: node1Keys.map { ($0, "v-\($0)") }))
        try ReplicationProcessTests.write(members[1], sets: Dictionary(uniqueKeysWithValues: node2Keys.map { ($0, "v-\($0)") }))

        for member in members { member.crash() }
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: walOn) }
        var flags: [Bool?] = []
        #expect(waitUntil(seconds: 30) {
            flags = [Self.copyMayHaveHole(members[0], shard: node1Shard), Self.copyMayHaveHole(members[0], shard: node2Shard),
                     Self.copyMayHaveHole(members[1], shard: node2Shard)]
            return flags.allSatisfy { $0 != nil }
        }, "the nodes answer /cluster after the restart:\n\(members[0].log().suffix(2000))")
        #expect(flags == [false, true, false],
                "node1's and node2's own shards replayed whole; node1 only received node2's: \(flags)")
        #expect(members[0].log().contains("shards replayed whole from the log"))
        // Only these two shards: one nobody wrote stands back twice as long
        // on every node (each replayed nothing of it), as before.
        #expect(ReplicationProcessTests.waitForMap(members) && waitUntil(seconds: 60) {
            Self.leases(members[0])?[node1Shard]?.held == true && Self.leases(members[1])?[node2Shard]?.held == true
        }, "node1 and node2 hold their shards again:\n\(members[0].log().suffix(3000))")
        let read = try ReplicationProcessTests.read(members[2], node1Keys + node2Keys)
        #expect((node1Keys + node2Keys).allSatisfy { read.values[$0] == "v-\($0)" }, "every write reads back through node3: \(read.values)")
        #expect(Self.set(members[0], node1Keys[0], "after-restart") == nil, "node1's shard takes writes again")
    }

    /// Whether `member` says in /cluster that it is an empty learner.
    static func isEmptyLearner(_ member: Member) -> Bool? {
        guard let body = member.get("/cluster"),
              let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let leases = object["leases"] as? [String: Any] else { return nil }
        return leases["empty_learner"] as? Bool
    }

    /// A node whose lease terms are gone while its log remains comes back as
    /// an empty learner, and stays one across further restarts: it writes no
    /// term file of its own (one written at start made the next start take
    /// it for a node that kept its votes, and it voted again).
    @Test(.hangBound) func anEmptyLearnerStaysOneAcrossRestarts() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-leases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let walOn = ["--wal-mode", "write"]
        let members = try Self.startCluster(directory: directory, extra: walOn)
        defer { for member in members { member.stop() } }
        let node3 = members[2]
        #expect(Self.isEmptyLearner(node3) == false)
        node3.stop()
        let termFile = node3.dataDir + "/" + TermStore.fileName
        try FileManager.default.removeItem(atPath: termFile)
        let left = (try? FileManager.default.contentsOfDirectory(atPath: node3.dataDir)) ?? []
        try #require(!left.isEmpty, "the log stays in data_dir: \(left)")

        for restart in 1...2 {
            try node3.start(seeds: members.map(\.gossipAddress), extra: walOn)
            // /cluster may answer before the lease driver's first snapshot
            // (which says false until then): wait for the learner to show.
            #expect(waitUntil(seconds: 30) { Self.isEmptyLearner(node3) == true },
                    "restart \(restart): node3 is an empty learner:\n\(node3.log().suffix(2000))")
            // Long enough for the elections and term adoptions that would write the file.
            #expect(ReplicationProcessTests.waitForMap(members))
            usleep(1_500_000)
            #expect(!FileManager.default.fileExists(atPath: termFile), "restart \(restart): a learner writes no term file")
            node3.crash()
        }
    }
}
