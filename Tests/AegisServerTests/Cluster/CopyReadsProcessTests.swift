@testable import AegisServer
import AegisProtocol
import Foundation
import Glibc
import Testing

/// Reads of a killed primary's shards are answered by the copies left
/// (ForwardingRelay, "Reads while the primary is unreachable"). Before, the
/// nodes left forwarded every read of those shards to the dead primary until
/// a failover moved them: about 30% of a 9:1 GET:SET load failed for 5-6 s
/// after a kill -9 in `perf/shard-move --scenario failure`. Four nodes,
/// replication_factor 3: of the three left, two follow each of the dead
/// node's shards and answer from their own copy; the third holds none and
/// asks a follower. suspect_timeout 20 s keeps the dead node in the map
/// (and its shards without a new holder) for the whole test, so every read
/// of its shards meets an unreachable primary. Real processes.
@Suite(.serialized) struct CopyReadsProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// `wal_mode write`: node4 comes back with its copy when it restarts.
    /// The failures to reach node4 may open its circuit breaker, which
    /// keeps reads on the copies until it half-opens: 1 s here, not 30.
    static let arguments = ["--write-quorum", "2", "--replication-batch-timeout", "0s", "--wal-mode", "write",
                            "--gossip-interval", "200ms", "--suspect-timeout", "20s", "--dead-timeout", "40s",
                            "--breaker-cooldown", "1s"]

    /// Reads the members sent to a replica's copy, their own or a peer's,
    /// as their primary could not be reached.
    static func divertedReads(on members: [Member]) -> Int {
        members.flatMap { member in
            ["self", "peer"].compactMap { RollingRestartProcessTests.metric(member, #"aegis_forward_reads_to_replica_total{replica="\#($0)"}"#) }
        }.reduce(0, +)
    }

    @Test(.hangBound) func readsOfAKilledPrimarysShardsAreAnsweredFromTheCopiesLeftAndWritesAreNot() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("copy-reads")
        let members = try (1...4).map { try Member(index: $0, directory: directory) }
        defer { for member in members { member.stop() } }
        let seeds = members.prefix(3).map(\.gossipAddress)
        for member in members { try member.start(seeds: seeds, extra: Self.arguments, timingFlags: false) }
        guard ReplicationProcessTests.waitForMap(members), LeaseProcessTests.waitForEveryShardHeld(members) else {
            throw HarnessError("no leases for every shard:\n\(members.map { $0.log().suffix(2_000) }.joined(separator: "\n"))")
        }
        let keys = (0..<4_000).map { "copy:\($0)" }
        let replies = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(replies.allSatisfy { $0 == "True" }, "\(Set(replies))")
        try FailureReplacementProcessTests.expectThreeCopies(of: keys.count, on: members)
        let node4 = members[3]
        let left = Array(members.prefix(3))

        node4.crash()
        for member in left {
            let missing = try RollingRestartProcessTests.lacking(keys, on: member)
            #expect(missing.isEmpty, "through \(member.name), \(missing.count) of \(keys.count) reads failed: \(missing.prefix(3))")
        }
        // The binary protocol's GET too, pipelined.
        let reads = WireBuffer()
        for (i, key) in keys.enumerated() {
            BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: UInt64(i), key: Array(key.utf8),
                                      value: [], ttlMs: 0, version: 0, into: reads)
        }
        for member in left {
            let socket = try TestSocket(host: member.host, port: member.clientPort, timeoutSeconds: 30)
            try socket.send(reads.readableArray())
            let replies = try ForwardingProcessTests.readResponses(socket, count: keys.count)
            let wrong = keys.indices.filter { replies[$0].requestID != UInt64($0) || replies[$0].value != Array("v-\(keys[$0])".utf8) }
            #expect(wrong.isEmpty, "binary GETs through \(member.name): \(wrong.count) wrong, first \(wrong.first.map { "\(replies[$0])" } ?? "")")
        }
        #expect(left.allSatisfy { $0.statuses()["node4"] != "dead" }, "node4 is not dead yet: its shards had no new holder")
        func total(_ sample: String) -> Int {
            left.compactMap { RollingRestartProcessTests.metric($0, sample) }.reduce(0, +)
        }
        let toOwnCopy = total(#"aegis_forward_reads_to_replica_total{replica="self"}"#)
        let toPeerCopy = total(#"aegis_forward_reads_to_replica_total{replica="peer"}"#)
        let served = total(#"aegis_reads_from_copy_total{result="served"}"#)
        let refused = total(#"aegis_reads_from_copy_total{result="refused"}"#)
        // A slow run may outlast node4's lease: a survivor then wins its
        // shards, and a node that still names node4 sends the reads to it.
        let atHolder = total(#"aegis_reads_from_copy_total{result="holder"}"#)
        #expect(toOwnCopy > 0 && toPeerCopy > 0, "reads went to this node's copy and to a follower's: \(toOwnCopy), \(toPeerCopy)")
        #expect(served + atHolder == toOwnCopy + toPeerCopy, "every one was answered: \(served) by a copy, \(atHolder) by a new holder")
        #expect(refused == 0, "\(refused)")

        // Only the lease holder takes writes: those for node4's shards fail
        // (retryable), the rest are acknowledged as before.
        let writes = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "v2-" + $0] }, pipelined: true)
        let failed = writes.filter { $0 != "True" }
        #expect(!failed.isEmpty && failed.count < keys.count / 2, "node4 led about a quarter of the shards: \(failed.count) failed")
        // No link to node4 (TRYAGAIN), its link broke (forwarding failed), or its breaker is open.
        let odd = Set(failed.filter { !($0.hasPrefix("error: ") && $0.contains("node4")) })
        #expect(odd.isEmpty, "\(odd.prefix(3))")
        // A read a copy answers with an error counts as one, on the node that answered.
        let node4Key = try #require(zip(keys, writes).first { $0.1 != "True" }?.0)
        let errorsBefore = total(#"aegis_command_errors_total{command="getrange"}"#)
        for member in left {
            let reply = try QuorumProcessTests.run(member, [["GETRANGE", node4Key, "first", "last"]])
            #expect(reply.count == 1 && reply[0].contains("not an integer"), "through \(member.name): \(reply)")
        }
        #expect(waitUntil(seconds: 10) { total(#"aegis_command_errors_total{command="getrange"}"#) == errorsBefore + left.count },
                "each refused GETRANGE counted once: \(total(#"aegis_command_errors_total{command="getrange"}"#) - errorsBefore)")

        // node4 back: reads of its shards go to it again once a link to it
        // opens (the diverted reads dial it, within the dial back-off), not
        // to the copies for good.
        try node4.start(seeds: seeds, extra: Self.arguments, timingFlags: false)
        // A write answered `forwarding failed` may have run on node4 before it died.
        let written = Dictionary(uniqueKeysWithValues: zip(keys, writes).map { key, reply in
            (key, reply == "True" ? ["v2-" + key] : reply.contains("forwarding failed") ? ["v-" + key, "v2-" + key] : ["v-" + key])
        })
        var diverted = Self.divertedReads(on: left)
        // 60 s: under the whole suite's load node4's return took longer than
        // the 20 s this waited before (CI on 288a01f, and a run on 5 Dec),
        // for a cause not found yet; the failure message says where it was.
        let settled = waitUntil(seconds: 60) {
            for member in left {
                let values = (try? QuorumProcessTests.run(member, keys.map { ["GET", $0] }, pipelined: true)) ?? []
                let wrong = zip(keys, values).filter { !written[$0]!.contains($1) }
                #expect(values.count == keys.count && wrong.isEmpty, "through \(member.name): \(values.count) answers, \(wrong.prefix(3))")
            }
            let now = Self.divertedReads(on: left)
            defer { diverted = now }
            return now == diverted
        }
        // Which node still diverts, and whether its breakers are open (a
        // cause not found yet: 1 of 9 lone runs on b9f1475).
        let diverting = left.map { member in
            "\(member.name): \(Self.divertedReads(on: [member])) diverted, breakers \(member.get("/admin/circuit-breaker/status") ?? "-")"
        }
        let where4 = "statuses \(left.map { $0.statuses() }); \(diverting); node4 /health \(node4.get("/health") ?? "-"); node4's log:\n\(node4.log().suffix(3_000))"
        #expect(settled, "reads of node4's shards still go to the copies after its return: \(diverted); \(where4)")
    }

    /// At read_quorum 2 the copy that answers asks the shard's other
    /// surviving replica too (node4, the primary, is passed over by its
    /// link), so every read of node4's shards is answered by two copies;
    /// before, such reads went to node4 and failed until a failover. Each
    /// key is written twice, and reads back its second value.
    @Test(.hangBound) func atReadQuorumTwoACopyAsksTheOtherSurvivingReplica() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("copy-reads-r2")
        let members = try (1...4).map { try Member(index: $0, directory: directory) }
        defer { for member in members { member.stop() } }
        let seeds = members.prefix(3).map(\.gossipAddress)
        for member in members { try member.start(seeds: seeds, extra: Self.arguments + ["--read-quorum", "2"], timingFlags: false) }
        guard ReplicationProcessTests.waitForMap(members), LeaseProcessTests.waitForEveryShardHeld(members) else {
            throw HarnessError("no leases for every shard:\n\(members.map { $0.log().suffix(2_000) }.joined(separator: "\n"))")
        }
        let keys = (0..<2_000).map { "copy2:\($0)" }
        for value in ["old-", "v-"] {
            let replies = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, value + $0] }, pipelined: true)
            #expect(replies.allSatisfy { $0 == "True" }, "\(Set(replies))")
        }
        try FailureReplacementProcessTests.expectThreeCopies(of: keys.count, on: members)
        let left = Array(members.prefix(3))
        func total(_ sample: String) -> Int {
            left.compactMap { RollingRestartProcessTests.metric($0, sample) }.reduce(0, +)
        }
        let waitsBefore = total("aegis_read_quorum_waits_total")

        members[3].crash()
        for member in left {
            let missing = try RollingRestartProcessTests.lacking(keys, on: member)
            #expect(missing.isEmpty, "through \(member.name), \(missing.count) of \(keys.count) reads failed: \(missing.prefix(3))")
        }
        #expect(left.allSatisfy { $0.statuses()["node4"] != "dead" }, "node4 is not dead yet: its shards had no new holder")
        let diverted = Self.divertedReads(on: left)
        let served = total(#"aegis_reads_from_copy_total{result="served"}"#)
        // A slow run may outlast node4's lease (about 5 s): a survivor then
        // wins its shards, and the node that is no replica of one, still
        // naming node4, sends its reads to a replica that now holds it (CI
        // on 899d03e: "0 of 608 diverted reads served by a copy", about the
        // share of reads whose ingress replicates nothing of the shard).
        let atHolder = total(#"aegis_reads_from_copy_total{result="holder"}"#)
        #expect(diverted > 0 && served + atHolder == diverted,
                "every diverted read was answered: \(served) by a copy, \(atHolder) by a new holder, of \(diverted)")
        #expect(total(#"aegis_reads_from_copy_total{result="refused"}"#) == 0)
        // Each of them waited for the other copy's answer, as the reads of
        // shards whose primary is alive wait for a follower's.
        #expect(total("aegis_read_quorum_waits_total") - waitsBefore >= 3 * keys.count, "every read consulted two replicas")
        #expect(total("aegis_read_quorum_timeouts_total") == 0 && total("aegis_read_quorum_unreachable_total") == 0)
    }
}
