@testable import AegisServer
import Foundation
import Glibc
import Testing

/// One of four nodes is killed while a client writes at write_quorum 2
/// (issue 13, "Failure"): the three left each end with a copy of every
/// shard (replication_factor 3), no write is lost, and the client sees no
/// error it cannot retry. The shards the dead node led were won by a node
/// that followed them; the third copy of each goes to a node that never
/// held it, which must be streamed the shard though nobody writes to it.
/// Before, the new holder presumed every follower held what it held, and
/// those copies stayed empty (ReplicationRelay.mapChanged). Real processes.
@Suite(.serialized) struct FailureReplacementProcessTests {
    typealias Member = ClusterProcessTests.Member

    @Test(.hangBound) func aKilledNodesShardsGetAThirdCopyOnTheNodesLeft() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("failure")
        let arguments = RollingRestartProcessTests.clusterArguments
        let members = try LeaseProcessTests.startCluster(directory: directory, extra: arguments)
        let node4 = try Member(index: 4, directory: directory)
        defer { for member in members + [node4] { member.stop() } }
        let keys = (0..<8_000).map { "fail:\($0)" }
        try Self.join(node4, members)
        let replies = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(replies.allSatisfy { $0 == "True" }, "\(Set(replies))")
        try Self.expectThreeCopies(of: keys.count, on: members + [node4])

        // Idle: nothing is written after the kill, so only the new holders'
        // bookkeeping can send the third copies (a write would show a
        // follower its gap, and heal the shard it went to).
        node4.crash()
        try Self.expectEveryKey(keys, on: members)

        // Under a writer: node4 back (empty, wal_mode off), then killed again.
        try Self.join(node4, members)
        try Self.expectThreeCopies(of: keys.count, on: members + [node4])
        let writer = try RollingRestartProcessTests.Writer(through: members, directory: directory)
        Thread.sleep(forTimeInterval: 1)
        node4.crash()
        #expect(waitUntil(seconds: 30) { members.allSatisfy { $0.statuses()["node4"] == "dead" } },
                "node1-3 call node4 dead: \(members.map { $0.statuses() })")
        Thread.sleep(forTimeInterval: 1)
        let written = try writer.stop()
        let acked = written.acked
        #expect(acked.count == written.tried, "every key was acknowledged: \(written.output.suffix(2_000))")
        #expect(acked.count > 50, "the writer kept writing through the failure: \(acked.count)")
        #expect(written.unreachable == 0)
        // Writes to the dead node's shards wait for a new holder; the few
        // tries refused meanwhile are TRYAGAIN, which a client retries (a
        // request with no link to send it on, or refused by node4's
        // circuit breaker once those failures opened it, ran nowhere). A
        // request on the link when node4 died may have run there:
        // `forwarding failed`, the honest answer, retried by the writer
        // all the same.
        let odd = Set(written.refusals.filter {
            !$0.hasPrefix("TryAgainError: ") && !$0.hasPrefix("ResponseError: forwarding failed: the link to node4 broke")
        })
        #expect(odd.isEmpty, "\(odd.prefix(5))")
        try Self.expectEveryKey(keys + acked, on: members)
    }

    static func join(_ node: Member, _ members: [Member]) throws {
        try node.start(seeds: members.map(\.gossipAddress), extra: RollingRestartProcessTests.clusterArguments)
        #expect(waitUntil(seconds: 60) { RollingRestartProcessTests.health(node).ok && members.allSatisfy { $0.statuses()[node.name] == "alive" } },
                "\(node.name) joins:\n\(node.log())")
    }

    /// replication_factor 3 on four nodes: three copies of every key in
    /// all, fewer than every key on each node.
    static func expectThreeCopies(of keys: Int, on members: [Member]) throws {
        #expect(waitUntil(seconds: 30) { members.compactMap(RollingRestartProcessTests.held).reduce(0, +) == 3 * keys },
                "three copies of every key: \(members.map { RollingRestartProcessTests.held($0) ?? -1 })")
        for member in members {
            let held = RollingRestartProcessTests.held(member) ?? -1
            #expect(held < keys, "\(member.name) holds only the shards it replicates: \(held)")
        }
    }

    /// Each of the three nodes left holds every key (3 of 3) and reads each back.
    static func expectEveryKey(_ keys: [String], on members: [Member]) throws {
        for member in members {
            #expect(waitUntil(seconds: 30) { RollingRestartProcessTests.held(member) == keys.count },
                    "\(member.name) holds every key of \(keys.count): \(RollingRestartProcessTests.held(member) ?? -1)\n\(member.log().suffix(3_000))")
            let missing = try RollingRestartProcessTests.lacking(keys, on: member)
            #expect(missing.isEmpty, "through \(member.name), \(missing.count) of \(keys.count) keys are missing: \(missing.prefix(5))")
            #expect(RollingRestartProcessTests.health(member).ok, "\(member.name): \(RollingRestartProcessTests.health(member).body)")
        }
    }
}
