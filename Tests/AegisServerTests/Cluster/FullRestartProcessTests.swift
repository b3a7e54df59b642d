@testable import AegisServer
import Foundation
import Glibc
import Testing

/// The runbook's full cluster recovery from snapshots: every node killed
/// (-9) and started again with nothing written since. A snapshot restores a
/// shard's entries in table order, not version order, so this is where a
/// replay applies writes out of order; the nodes must come back in step
/// (each follower caught up with what its holder claims) without a new
/// write to carry them there, and hold every key. Real processes, the log
/// on (`wal_mode` write), write_quorum 2.
@Suite(.serialized) struct FullRestartProcessTests {
    typealias Member = ClusterProcessTests.Member

    static let clusterArguments = ["--write-quorum", "2", "--replication-batch-timeout", "0s", "--wal-mode", "write"]

    @Test(.hangBound) func aClusterKilledAfterSnapshotsComesBackInStepWithEveryKeyAndNoNewWrite() throws {
        let members = try LeaseProcessTests.startCluster(directory: try PeerTLSProcessTests.temporaryDirectory("full-restart"),
                                                         extra: Self.clusterArguments)
        defer { for member in members { member.stop() } }
        let keys = (0..<3_000).map { "full:\($0)" }
        let replies = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(replies.allSatisfy { $0 == "True" }, "\(Set(replies))")
        for member in members {
            #expect(waitUntil(seconds: 30) { RollingRestartProcessTests.held(member) == keys.count },
                    "\(member.name) holds \(RollingRestartProcessTests.held(member) ?? -1) keys")
        }
        // Each node's own writes go into one snapshot (the runbook's
        // `POST /admin/wal/truncate`), so its replay restores them from there.
        for member in members {
            let truncate = try runTool("curl", ["-s", "--max-time", "60", "-X", "POST",
                                                "http://\(member.host):\(member.healthPort)/admin/wal/truncate"])
            #expect(truncate.status == 0 && truncate.output.contains("every reactor wrote a snapshot"), "\(member.name): \(truncate.output)")
        }

        for member in members { member.crash() }
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: Self.clusterArguments) }
        for member in members {
            var last = ""
            let healthy = waitUntil(seconds: 60) {
                let (ok, body) = RollingRestartProcessTests.health(member)
                if !ok { last = body }
                return ok
            }
            #expect(healthy, "\(member.name) says ok within 60 s of the restart with no write since: \(last)\n\(member.log().suffix(3_000))")
        }
        for member in members {
            let values = try QuorumProcessTests.run(member, keys.map { ["GET", $0] }, pipelined: true)
            let missing = zip(keys, values).filter { $0.1 != "v-" + $0.0 }
            #expect(missing.isEmpty, "\(member.name) lost \(missing.count) of \(keys.count) keys: \(missing.prefix(5))")
        }
    }
}
