import Foundation
import Glibc
import Testing

/// Issue 11, real processes: 3 and 5 `aegiskv` nodes on 127.0.0.11 and up,
/// joined through seeds, killed, restarted and stopped by PID; a seed that
/// never answers; a node of another cluster. Serialized: the tests share the
/// nodes' loopback addresses, and several clusters at once on two cores
/// would starve each other's gossip.
@Suite(.serialized)
struct RealClusterTests {
    @Test func threeNodesJoinThroughSeedsAndAgreeOnPlacement() throws {
        try joinsAndAgrees(size: 3)
    }

    @Test func fiveNodesJoinThroughSeedsAndAgreeOnPlacement() throws {
        try joinsAndAgrees(size: 5)
    }

    private func joinsAndAgrees(size: Int) throws {
        let cluster = try ClusterHarness(size: size)
        try cluster.startAll()
        let everyone = ClusterHarness.nodeIDs(1...size)
        try cluster.waitUntil("all \(size) alive everywhere", ClusterHarness.allAlive(everyone))
        let views = try cluster.expectOnePlacement()
        for node in 1...size {
            let view = try #require(views[node])
            #expect(view.nodeID == ClusterHarness.nodeID(node))
            #expect(view.members.map(\.nodeID) == everyone.sorted(), "members sorted by node_id: \(view)")
            #expect(view.members.filter(\.isSelf).map(\.nodeID) == [view.nodeID])
            #expect(view.member("node2")?.gossipAddr == cluster.gossipAddress(2), "\(view)")
            expectShardsSpread(view)
            #expect(try cluster.metric(node, "aegis_cluster_members") == Double(size))
        }
    }

    @Test func killedNodeIsSuspectThenDeadItsShardsMoveAndItRejoinsWithAHigherIncarnation() throws {
        let cluster = try ClusterHarness(size: 3)
        try cluster.startAll()
        try cluster.waitUntil("3 alive", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        let before = try cluster.expectOnePlacement()
        let incarnationBefore = try #require(before[1]?.member("node3")?.incarnation)
        let digestBefore = before[1]?.placementDigest

        cluster.kill9(3)
        try cluster.waitUntil("node3 dead on node1 and node2", nodes: [1, 2]) { views in
            views.values.allSatisfy { $0.status(of: "node3") == "dead" }
        }
        let afterKill = try cluster.expectOnePlacement(nodes: [1, 2])
        for node in [1, 2] {
            // The log keeps every transition, so a suspect phase shorter
            // than a poll is still seen.
            let lines = cluster.logLines(node)
            #expect(lines.contains { $0.contains("member node3 alive -> suspect reason=") }, "\(cluster.log(node))")
            #expect(lines.contains { $0.contains("member node3 suspect -> dead reason=") }, "\(cluster.log(node))")
            let view = try #require(afterKill[node])
            #expect(view.aliveIDs == ["node1", "node2"])
            expectShardsSpread(view)
            if digestBefore != nil { #expect(view.placementDigest != digestBefore, "node3's shards were not re-placed: \(view)") }
            #expect(try cluster.metric(node, "aegis_cluster_members") == 2)
        }

        try cluster.start(3)
        try cluster.waitUntil("node3 alive again everywhere with a higher incarnation") { views in
            ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3))(views)
                && views.values.allSatisfy { ($0.member("node3")?.incarnation ?? -1) > incarnationBefore }
        }
        let afterRestart = try cluster.expectOnePlacement()
        #expect(afterRestart[1]?.placementDigest == digestBefore, "the same members give the same placement")
        let lastAboutNode3 = cluster.logLines(1).last { $0.contains("member node3 ") }
        #expect(lastAboutNode3?.contains(" -> alive reason=") == true, "\(cluster.log(1))")
    }

    @Test func sigtermLeavesGracefully() throws {
        let cluster = try ClusterHarness(size: 3)
        try cluster.startAll()
        try cluster.waitUntil("3 alive", ClusterHarness.allAlive(ClusterHarness.nodeIDs(1...3)))
        #expect(cluster.terminate(2) == 0, "\(cluster.log(2))")
        try cluster.waitUntil("node2 left on node1 and node3", nodes: [1, 3]) { views in
            views.values.allSatisfy { $0.status(of: "node2") == "left" }
        }
        let views = try cluster.expectOnePlacement(nodes: [1, 3])
        for node in [1, 3] {
            let view = try #require(views[node])
            expectShardsSpread(view)
            #expect(cluster.logLines(node).contains { $0.contains("member node2 alive -> left reason=") }, "\(cluster.log(node))")
            // A graceful leave is never mistaken for a failure.
            #expect(!cluster.logLines(node).contains { $0.contains("member node2 alive -> suspect") })
        }
        // The stopping node says what it does in one line per step, and does
        // not recompute (and announce) a map without itself on the way out.
        let stopping = cluster.logLines(2).drop { !$0.contains("member node2 alive -> left") }
        #expect(stopping.first?.contains("reason=this node is stopping; told 2 member(s) directly") == true, "\(cluster.log(2))")
        for step in ["member node2 alive -> left", "notice draining:", "notice stopped"] {
            #expect(stopping.count { $0.contains(step) } == 1, "\(step): \(cluster.log(2))")
        }
        #expect(!stopping.contains { $0.contains("shard map changed") }, "\(cluster.log(2))")
    }

    /// The seed accepts connections and reads, but never says a word: a
    /// connect that succeeds and then no answer ever, the worst kind of silent.
    @Test func seedThatNeverAnswersLeavesTheNodeAloneAndTryingWithBoundedLogs() throws {
        let silentSeed = try SilentListener(host: ClusterHarness.address(2))
        defer { silentSeed.close() }
        let cluster = try ClusterHarness(size: 1, seeds: { _ in [silentSeed.address] })
        let started = Date()
        try cluster.startAll()
        // Still trying: something arrives again after a pause, on the same
        // link or on a new one.
        let deadline = Date().addingTimeInterval(30)
        while silentSeed.activitySpanSeconds() < 1.5 && Date() < deadline { usleep(50_000) }
        let span = silentSeed.activitySpanSeconds()
        #expect(span >= 1.5, "the node stopped trying its seed (\(silentSeed.connections) connection(s)): \(cluster.log(1))")

        let view = try cluster.view(of: 1)
        #expect(view.members.map(\.nodeID) == ["node1"], "\(view)")
        #expect(view.status(of: "node1") == "alive")
        let elapsedSeconds = Date().timeIntervalSince(started)
        let aboutSeed = cluster.logLines(1).filter { $0.contains(silentSeed.address) }
        #expect(!aboutSeed.isEmpty, "the unanswered seed is never logged: \(cluster.log(1))")
        // One line per attempt interval; a retry loop that logs each dial or
        // each gossip round would pass this many within seconds.
        #expect(Double(aboutSeed.count) <= elapsedSeconds + 2,
                "\(aboutSeed.count) lines about the seed in \(Int(elapsedSeconds)) s: \(aboutSeed)")
    }

    @Test func nodeWithAnotherSecretIsRefusedCountedAndNotFloodedIntoTheLog() throws {
        let cluster = try ClusterHarness(size: 3, secret: { $0 == 3 ? "another-cluster" : "aegis-test-cluster" })
        try cluster.start(1)
        try cluster.start(2)
        try cluster.waitUntil("node1 and node2 alive", ClusterHarness.allAlive(["node1", "node2"]))
        // Lease elections log a line per term change and per shard won: let
        // them settle first, so that the lines counted below are the refusal's.
        let leasesSettled = waitUntil(seconds: 60) {
            let views = [1, 2].compactMap { LeasePartitionProcessTests.leases(cluster, $0) }
            return views.count == 2
                && (0..<ClusterHarness.numShards).allSatisfy { shard in views.count { $0[shard]?.held == true } == 1 }
        }
        #expect(leasesSettled, "every shard gets a lease holder:\n\(cluster.logTails())")
        let linesBefore = cluster.logLines(1).count
        let badMAC = #"aegis_cluster_messages_dropped_total{reason="bad_mac"}"#
        let droppedBefore = try cluster.metric(1, badMAC) ?? 0

        try cluster.start(3)
        var dropped = droppedBefore
        let deadline = Date().addingTimeInterval(30)
        while dropped < droppedBefore + 3 && Date() < deadline {
            for node in [1, 2] {
                let view = try cluster.view(of: node)
                #expect(view.member("node3") == nil, "a node with another secret became a member: \(view)")
            }
            dropped = try cluster.metric(1, badMAC) ?? 0
            usleep(100_000)
        }
        #expect(dropped >= droppedBefore + 3, "node1 dropped \(dropped - droppedBefore) bad-MAC messages: \(cluster.logTails())")
        let lonely = try cluster.view(of: 3)
        #expect(lonely.members.map(\.nodeID) == ["node3"], "\(lonely)")
        let newLines = cluster.logLines(1).dropFirst(linesBefore)
        #expect(!newLines.isEmpty, "the refusal is not logged")
        // At most once per peer per minute: one line, maybe one more for the
        // link as well as the message.
        #expect(newLines.count <= 2, "\(Int(dropped - droppedBefore)) drops gave \(newLines.count) lines: \(newLines)")
    }
}

/// A listening socket that accepts every connection, reads and discards
/// what arrives, and never writes: a seed that never answers.
final class SilentListener: @unchecked Sendable {
    let fd: Int32
    let address: String
    private var held: [Int32] = []
    private var firstActivity: Date?
    private var lastActivity: Date?

    init(host: String) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        self.fd = fd
        var sockaddress = sockaddr_in()
        sockaddress.sin_family = sa_family_t(AF_INET)
        sockaddress.sin_addr.s_addr = inet_addr(host)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &sockaddress) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, listen(fd, 64) == 0 else { Glibc.close(fd); throw HarnessError("cannot listen on \(host): errno \(errno)") }
        _ = withUnsafeMutablePointer(to: &sockaddress) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        address = "\(host):\(UInt16(bigEndian: sockaddress.sin_port))"
    }

    var connections: Int { held.count }

    /// Takes pending connections and reads what waits on them; returns the
    /// seconds between the first and the latest time anything arrived.
    func activitySpanSeconds() -> Double {
        var active = false
        while true {
            let connection = accept(fd, nil, nil)
            if connection < 0 { break }
            held.append(connection)
            active = true
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        for connection in held {
            // Bounded: a peer cannot keep this loop busy past 64 KiB a poll.
            for _ in 0..<16 {
                let n = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n <= 0 { break }
                active = true
            }
        }
        if active {
            firstActivity = firstActivity ?? Date()
            lastActivity = Date()
        }
        guard let firstActivity, let lastActivity else { return 0 }
        return lastActivity.timeIntervalSince(firstActivity)
    }

    func close() {
        for connection in held { Glibc.close(connection) }
        held = []
        Glibc.close(fd)
    }
}
