@testable import AegisServer
import AegisStore
import Foundation
import Glibc
import Testing

/// A shard's lease holder cut off in a minority of one, with real packets
/// dropped (nftables in a network namespace of the test's own, as in
/// RealClusterPartitionTests): issue 12 item 4, "A node in a minority
/// refuses writes", and "A returning old primary ... demotes itself, and
/// catches up". Three nodes, replication_factor 3, write_quorum 2, a 1 s
/// lease. Skipped (with the reason printed) where no namespace can be made.
@Suite(.serialized)
struct LeasePartitionProcessTests {
    static let leaseArguments = ["--write-quorum", "2", "--write-timeout", "1s",
                                 "--lease-duration", "1s", "--lease-election-timeout", "500ms"]

    /// Per shard: (term, whether `node` holds the lease) from its /cluster.
    static func leases(_ cluster: ClusterHarness, _ node: Int) -> [Int: (term: Int, held: Bool)]? {
        (try? cluster.get(node, "/cluster")).flatMap(LeaseProcessTests.leases(clusterBody:))
    }

    /// The records `follower` still lacks of `shard`, as the shard's primary `node` reports them.
    static func lag(_ cluster: ClusterHarness, primary node: Int, shard: Int, follower: String) -> Int? {
        (try? cluster.get(node, "/cluster")).flatMap { ReadQuorumProcessTests.lag(clusterBody: $0, shard: shard, follower: follower) }
    }

    /// One command through redis-cli inside the namespace; its reply, trimmed.
    static func command(_ cluster: ClusterHarness, _ network: PrivateNetwork, _ node: Int, _ arguments: [String]) -> String {
        let slot = cluster.slots[node - 1]
        guard let result = try? network.run("redis-cli", ["-h", slot.host, "-p", String(slot.clientPort)] + arguments) else {
            return "redis-cli did not run"
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func shard(of key: String) -> Int {
        let hash = Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }
        return KeyHash.shard(of: hash, shardCount: ClusterHarness.numShards)
    }

    @Test(.hangBound)
    func anIsolatedHolderRefusesWritesTheMajorityTakesOverAndAfterHealingItDemotesAndCatchesUp() throws {
        guard let scenario = try LeasePartitionScenario.start() else { return }
        defer { scenario.finish() }
        // The victim is a node that holds a lease: which nodes win which
        // shards depends on timing, and a node may win none.
        let victim = scenario.busiestHolder
        let victimName = ClusterHarness.nodeID(victim)
        let (first, second) = (scenario.others(than: victim)[0], scenario.others(than: victim)[1])
        let shard = try scenario.shardHeld(by: victim)
        let shardKeys = scenario.keys(of: shard, prefix: "minority", count: 6)
        let termBefore = try #require(scenario.settledViews[victim - 1][shard]).term
        // Acknowledged at W = 2 through the holder, before the cut.
        for key in shardKeys { scenario.writeAcknowledged(key, "before-\(key)", through: victim) }

        for other in [first, second] {
            try scenario.network.drop(from: ClusterHarness.address(victim), to: ClusterHarness.address(other))
            try scenario.network.drop(from: ClusterHarness.address(other), to: ClusterHarness.address(victim))
        }
        // Made while the victim may still hold its lease: applied there alone, never
        // acknowledged, and older than anything the majority writes later.
        let unacknowledgedKey = shardKeys[2]
        let unacknowledged = scenario.command(victim, ["SET", unacknowledgedKey, "unacknowledged"])
        #expect(unacknowledged != "OK", "a write \(victimName) cannot replicate is not acknowledged at W = 2")
        // The minority: the victim's writes for the shard fail (no W = 2) until its
        // lease lapses, then are refused for want of the lease.
        scenario.expectRefusedOnceTheLeaseLapses(shardKeys[0], through: victim)

        // The majority elects a holder at a higher term and takes writes at W = 2.
        // Each is retried until acknowledged: on a loaded machine the new
        // holder's first renewals can be late, and a write in such a gap is
        // answered TRYAGAIN or TIMEOUT without being lost. Only what was
        // answered OK is checked below, on every node.
        try scenario.expectTakeOverHealAndCatchUp(shardKeys, shard: shard, victim: victim, first: first, second: second,
                                                  above: termBefore)
        #expect(scenario.acknowledged[unacknowledgedKey] == "before-\(unacknowledgedKey)",
                "the write \(victimName) made alone is not what the majority holds, so the reads above checked that it was replaced")
    }
}
