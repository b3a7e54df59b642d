import Foundation
import Glibc
import Testing

/// Cluster tests that need a network of their own: partitions made of real
/// dropped packets (nftables), and the runbook's health check against
/// node1..node3 on the production ports. Each test makes a `PrivateNetwork`
/// and runs its nodes inside it; where no namespace can be made (not root,
/// no unshare or nft) it says why and passes without running.
///
/// nftables matches packets by address, so these tests rely on a node's
/// peer links leaving from its own gossip address: `expectPeerLinksLeaveFromNodeAddresses`
/// checks that first, because a link from 127.0.0.1 would slip past every rule.
@Suite(.serialized)
struct RealClusterPartitionTests {
    private func privateNetwork() -> PrivateNetwork? {
        switch PrivateNetwork.make() {
        case .success(let network): return network
        case .failure(let reason):
            print("skipped: no private network namespace: \(reason)")
            return nil
        }
    }

    private func startAgreedCluster(_ network: PrivateNetwork) throws -> (ClusterHarness, digest: String?) {
        let cluster = try ClusterHarness(size: 3, network: network)
        try cluster.startAll()
        try cluster.waitUntil("3 alive", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        let views = try cluster.expectOnePlacement()
        try expectPeerLinksLeaveFromNodeAddresses(cluster, network)
        return (cluster, views[1]?.placementDigest)
    }

    /// Every established connection to a gossip port starts at a node's
    /// address (127.0.0.11...), not at 127.0.0.1, the kernel's default source.
    private func expectPeerLinksLeaveFromNodeAddresses(_ cluster: ClusterHarness, _ network: PrivateNetwork) throws {
        let sockets = try network.run("ss", ["-tnH", "state", "established", "dport", "=", ":7701"])
        let sources = sockets.output.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 4 else { return nil }
            return fields[fields.count - 2].split(separator: ":").first.map(String.init)
        }
        #expect(!sources.isEmpty, "no peer link is established: \(sockets.output)")
        let nodeAddresses = Set((1...cluster.size).map(ClusterHarness.address))
        #expect(sources.allSatisfy(nodeAddresses.contains),
                "peer links leave from \(Set(sources)); nftables rules between node addresses cannot cut them")
    }

    @Test func symmetricPartitionIsolatesANodeAndHealingReunitesTheCluster() throws {
        guard let network = privateNetwork() else { return }
        defer { network.stop() }
        let (cluster, digestBefore) = try startAgreedCluster(network)
        defer { cluster.stopAll() }

        for other in [1, 2] {
            try network.drop(from: ClusterHarness.address(3), to: ClusterHarness.address(other))
            try network.drop(from: ClusterHarness.address(other), to: ClusterHarness.address(3))
        }
        #expect(!network.connects(from: ClusterHarness.address(1), to: ClusterHarness.address(3), port: 7702))
        #expect(!network.connects(from: ClusterHarness.address(3), to: ClusterHarness.address(2), port: 7702))
        #expect(network.connects(from: ClusterHarness.address(1), to: ClusterHarness.address(2), port: 7702))

        // The HTTP port of node3 is cut from the other nodes' addresses only;
        // the harness asks from 127.0.0.1, which no rule names.
        try cluster.waitUntil("node3 dead on node1 and node2", nodes: [1, 2]) { views in
            views.values.allSatisfy { $0.status(of: "node3") == "dead" }
        }
        let majority = try cluster.expectOnePlacement(nodes: [1, 2])
        for node in [1, 2] { expectShardsSpread(try #require(majority[node])) }
        try cluster.waitUntil("node3 sees neither node1 nor node2 alive", nodes: [3]) { views in
            views[3]?.aliveIDs == ["node3"]
        }

        try network.heal()
        #expect(network.connects(from: ClusterHarness.address(1), to: ClusterHarness.address(3), port: 7702))
        try cluster.waitUntil("all alive everywhere after healing", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        let healed = try cluster.expectOnePlacement()
        #expect(healed[3]?.placementDigest == digestBefore, "the same members give the same placement")
        for node in 1...3 { expectShardsSpread(try #require(healed[node])) }
    }

    /// Issue 11: once a partition heals, the sides must see each other alive
    /// in seconds, not at the next push/pull (every 30 s, so 0-30 s after
    /// the heal before the fix). The wait is bounded by what the design
    /// promises, doubled because the suite shares two cores:
    /// - membership: each node tells every member it holds dead so at its
    ///   next reconnect tick (one gossip_interval, 200 ms) and the member's
    ///   refutation comes back in the ack; a second round covers a verdict
    ///   that was still in flight at the heal (`Scenario.healedLivenessBoundMs`);
    /// - links: the partition is held past TCP_USER_TIMEOUT (10 s), so every
    ///   link across it has failed and is being redialled; a dial under way
    ///   at the heal connects at its SYN's retransmission or is abandoned at
    ///   the 3 s connect timeout and redialled within the 2 s backoff cap;
    /// - /cluster publishes within 100 ms of a change.
    @Test func healedPartitionIsAliveEverywhereWithinTheReconnectBound() throws {
        guard let network = privateNetwork() else { return }
        defer { network.stop() }
        let (cluster, _) = try startAgreedCluster(network)
        defer { cluster.stopAll() }

        let cutAt = Date()
        for other in [1, 2] {
            try network.drop(from: ClusterHarness.address(3), to: ClusterHarness.address(other))
            try network.drop(from: ClusterHarness.address(other), to: ClusterHarness.address(3))
        }
        try cluster.waitUntil("node3 and the others hold each other dead") { views in
            views[1]?.status(of: "node3") == "dead" && views[2]?.status(of: "node3") == "dead"
                && views[3]?.status(of: "node1") == "dead" && views[3]?.status(of: "node2") == "dead"
        }
        let tcpUserTimeoutSeconds = 10.0
        let heldFor = Date().timeIntervalSince(cutAt)
        if heldFor < tcpUserTimeoutSeconds + 1 { usleep(UInt32((tcpUserTimeoutSeconds + 1 - heldFor) * 1_000_000)) }

        try network.heal()
        let gossipIntervalSeconds = 0.2
        let membershipSeconds = 2 * (gossipIntervalSeconds + 0.05)
        let linkSeconds = 3.0 + 2.0
        let publishSeconds = 0.1
        let bound = 2 * (membershipSeconds + linkSeconds + publishSeconds)
        try cluster.waitUntil("all alive everywhere within \(bound) s of the heal", timeoutSeconds: bound,
                              ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        let cameBack = cluster.logLines(3).filter { $0.contains("dead -> alive") }
        #expect(cameBack.count >= 2, "node3 logged node1 and node2 coming back from dead:\n\(cluster.logTails())")
    }

    /// node1's packets to node2 are dropped, everything else flows. TCP needs
    /// both directions, so node1 and node2 cannot talk directly at all, but
    /// node3 reaches both: indirect probes through it must keep both alive.
    @Test func oneWayPartitionDoesNotKillReachableNodesAndHealingReunites() throws {
        guard let network = privateNetwork() else { return }
        defer { network.stop() }
        let (cluster, digestBefore) = try startAgreedCluster(network)
        defer { cluster.stopAll() }

        try network.drop(from: ClusterHarness.address(1), to: ClusterHarness.address(2))
        #expect(!network.connects(from: ClusterHarness.address(1), to: ClusterHarness.address(2), port: 7702))
        #expect(network.connects(from: ClusterHarness.address(3), to: ClusterHarness.address(2), port: 7702))
        #expect(network.connects(from: ClusterHarness.address(3), to: ClusterHarness.address(1), port: 7702))

        // Watch for longer than dead_timeout (3 s) plus a few probe rounds:
        // a node that a working path reaches must not be declared dead.
        let watchUntil = Date().addingTimeInterval(5)
        var declaredDead: [String] = []
        while Date() < watchUntil {
            for node in 1...3 {
                let view = try cluster.view(of: node)
                declaredDead += view.members.filter { $0.status == "dead" }.map { "\(view.nodeID) saw \($0.nodeID) dead" }
            }
            usleep(200_000)
        }
        #expect(Set(declaredDead).isEmpty, "\(Set(declaredDead).sorted())\n\(cluster.logTails())")

        try network.heal()
        try cluster.waitUntil("all alive everywhere after healing", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        let healed = try cluster.expectOnePlacement()
        #expect(healed[1]?.placementDigest == digestBefore)
    }

    /// The runbook's script, unedited, against node1..node3: the names come
    /// from a hosts file bind-mounted over /etc/hosts in a mount namespace
    /// made for the script alone (`unshare -m` inside the test's network).
    @Test func runbookDailyHealthCheckSeesThreeMembersOnEachNode() throws {
        guard let network = privateNetwork() else { return }
        defer { network.stop() }
        let cluster = try ClusterHarness(size: 3, network: network)
        defer { cluster.stopAll() }
        try cluster.startAll()
        try cluster.waitUntil("3 alive", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        // A daily check meets a settled cluster: /health says ok once a node
        // holds or has caught up with every shard it replicates, after the
        // first lease elections.
        let settled = waitUntil(seconds: 60) {
            (1...3).allSatisfy { node in
                (try? network.run("curl", ["-s", "--max-time", "1", "http://\(ClusterHarness.address(node)):7702/health"]))?
                    .output.contains("ok") == true
            }
        }
        #expect(settled, "every node says ok on /health")

        let script = try RunbookScript.dailyHealthCheck()
        let scriptPath = cluster.root + "/daily-health-check.sh"
        let hostsPath = cluster.root + "/hosts"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let hosts = "127.0.0.1 localhost\n" + (1...3).map { "\(ClusterHarness.address($0)) node\($0)\n" }.joined()
        try hosts.write(toFile: hostsPath, atomically: true, encoding: .utf8)
        let result = try network.run("unshare", ["-m", "sh", "-c", #"mount --bind "$0" /etc/hosts && exec bash "$1""#,
                                                 hostsPath, scriptPath])
        #expect(result.status == 0, "\(result.output)")
        for node in 1...3 {
            let header = "=== Checking node\(node):7702 ===\n"
            let block = result.output.components(separatedBy: header).dropFirst().first?
                .components(separatedBy: "=== Checking").first ?? ""
            #expect(block.hasPrefix("✓ Health: OK\n"), "node\(node): \(result.output)")
            #expect(block.hasSuffix("  Cluster members: 3\n\n"), "node\(node): \(result.output)")
        }
        #expect(!result.output.contains("FAILED"), "\(result.output)")
    }
}

/// The runbook's daily health check, taken from the spec at test time when
/// the spec is beside the checkout (as on the developers' machines and in CI),
/// else from the copy under runbook/, which must then match it verbatim.
enum RunbookScript {
    static let copy = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("runbook/daily-health-check.sh")

    static func dailyHealthCheck() throws -> String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let candidates = [repository.deletingLastPathComponent().appendingPathComponent("shared/spec/runbook.md").path,
                          "/work/shared/spec/runbook.md"]
        let copied = try String(contentsOf: copy, encoding: .utf8)
        guard let spec = candidates.lazy.compactMap({ try? String(contentsOfFile: $0, encoding: .utf8) }).first else {
            print("runbook.md not found beside the checkout; using the copy in \(copy.path)")
            return copied
        }
        guard let start = spec.range(of: "#!/bin/bash\n# daily-health-check.sh\n"),
              let end = spec.range(of: "\n```", range: start.upperBound..<spec.endIndex) else {
            throw HarnessError("the runbook has no daily-health-check.sh block")
        }
        let script = String(spec[start.lowerBound..<end.lowerBound]) + "\n"
        #expect(script == copied, "runbook/daily-health-check.sh differs from the runbook's script")
        return script
    }
}
