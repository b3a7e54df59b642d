@testable import AegisServer
import Foundation
import Glibc
import Testing

/// A fourth node joins three while a client writes at write_quorum 2
/// (issue 13, "Join"): no write is refused, none acknowledged is lost,
/// every key reads back through every node, and the old nodes free the
/// copies of the shards they no longer replicate (a slice at a time,
/// Reactor+Routing.swift). Real processes, replication_factor 3.
@Suite(.serialized) struct JoinProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// `INFO memory`'s lazyfree_pending_objects: entries of dropped copies not freed yet.
    static func pendingFrees(_ member: Member) -> Int? {
        guard let info = try? runTool("redis-cli", ["-h", member.host, "-p", "\(member.clientPort)", "INFO", "memory"]).output else {
            return nil
        }
        return info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("lazyfree_pending_objects:") }
            .flatMap { Int($0.split(separator: ":")[1]) }
    }

    @Test(.hangBound) func aFourthNodeJoinsUnderWritesAndNoWriteIsRefusedOrLost() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("join")
        let arguments = RollingRestartProcessTests.clusterArguments
        let members = try LeaseProcessTests.startCluster(directory: directory, extra: arguments)
        let node4 = try Member(index: 4, directory: directory)
        defer { for member in members + [node4] { member.stop() } }
        // Enough that each old node drops more than LazyFreeBatch.inlineEntriesMax
        // entries (about a quarter of them): freed in steps, not inline.
        let keys = (0..<60_000).map { "join:\($0)" }
        let replies = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(replies.allSatisfy { $0 == "True" }, "\(Set(replies))")
        for member in members {
            #expect(waitUntil(seconds: 30) { RollingRestartProcessTests.held(member) == keys.count },
                    "\(member.name) holds \(RollingRestartProcessTests.held(member) ?? -1) keys")
        }

        let writer = try RollingRestartProcessTests.Writer(through: members, directory: directory)
        Thread.sleep(forTimeInterval: 1)
        try node4.start(seeds: members.map(\.gossipAddress), extra: arguments)
        let inStep = waitUntil(seconds: 60) { RollingRestartProcessTests.health(node4).ok }
        #expect(inStep, "node4 says ok once it holds what it replicates:\n\(node4.log())")
        Thread.sleep(forTimeInterval: 1)
        let written = try writer.stop()
        let (acked, refusals) = (written.acked, written.refusals)
        #expect(acked.count == written.tried, "every key was acknowledged: \(written.output.suffix(2_000))")
        #expect(acked.count > 100, "the writer kept writing through the join: \(acked.count)")
        #expect(refusals.isEmpty, "a join refuses no write: \(RollingRestartProcessTests.kinds(of: refusals).prefix(5))")
        #expect(written.unreachable == 0)

        for member in members + [node4] {
            let missing = try RollingRestartProcessTests.lacking(acked + keys, on: member)
            #expect(missing.isEmpty, "\(member.name) lacks \(missing.count) of \(acked.count + keys.count) keys: \(missing.prefix(5))")
        }
        #expect((RollingRestartProcessTests.metric(node4, "aegis_shards_owned") ?? 0) > 0, "node4 is the primary of some shards")
        for member in members {
            #expect(member.log().contains("shards moved to other nodes"), "\(member.name) stopped replicating some shards")
            let held = RollingRestartProcessTests.held(member) ?? -1
            #expect(held > 0 && held < keys.count + acked.count, "\(member.name) keeps only the shards it still replicates: \(held)")
            #expect(waitUntil(seconds: 30) { Self.pendingFrees(member) == 0 },
                    "\(member.name) freed the copies it dropped: \(Self.pendingFrees(member) ?? -1) entries pending")
        }
    }
}
