@testable import AegisServer
import AegisCluster
import Foundation
import Testing

/// A rolling upgrade from a release before leases (docs/upgrades.md): a
/// node stops enforcing leases while a member is known to predate them, on
/// positive evidence from that member's control connection, and enforces
/// them again once none is. scripts/test-lease-upgrade runs the same with
/// the 0.1.0 release binary.
@Suite struct LeaseUpgradeTests {
    static let authenticator = GossipAuthenticator(secret: LoopUnderTest.secret)

    /// An announcement as a 0.1.1 build before capabilities sent it.
    static func formatOneAnnouncement(version: String, commit: String) -> [UInt8] {
        var signed: [UInt8] = [PeerAnnouncement.marker, 1]
        for text in [version, commit] { signed += [UInt8(text.utf8.count)] + Array(text.utf8) }
        var frame: [UInt8] = []
        appendUInt32(UInt32(signed.count + GossipAuthenticator.tagBytes), to: &frame)
        return frame + signed + authenticator.tag(of: signed)
    }

    // MARK: - What the loop learns from a peer's control connection

    @Test func gossipBeforeAnyAnnouncementMarksAReleaseBeforeLeases() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let old = try RawPeer(port: loop.port)
        old.hello(nodeID: "old-node")
        old.sendFrame([1])
        let snapshot = loop.waitForSnapshot { $0.leaseSupport["old-node"] != nil }
        #expect(snapshot.leaseSupport["old-node"] == .predatesLeases)
        #expect(loop.log.matching("runs a release before leases").count == 1)
        // An announcement after gossip on the same connection changes nothing:
        // only the first frame after the hello tells the releases apart.
        old.send(PeerAnnouncement(version: "9.9.9", commit: "feed").frame(Self.authenticator))
        loop.waitForSnapshot { $0.messagesReceived["announcement"] == 1 }
        #expect(loop.board.snapshot.leaseSupport["old-node"] == .predatesLeases)
    }

    @Test func anAnnouncementWithTheLeasesBitMarksAPeerThatSpeaksLeases() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let new = try RawPeer(port: loop.port)
        new.hello(nodeID: "new-node")
        new.send(PeerAnnouncement(version: "0.2.0", commit: "feed").frame(Self.authenticator))
        new.sendFrame([1])
        #expect(waitUntil { loop.engine.arrivalCount == 1 })
        let snapshot = loop.waitForSnapshot { $0.leaseSupport["new-node"] != nil }
        #expect(snapshot.leaseSupport["new-node"] == .speaksLeases)
        #expect(loop.log.matching("runs a release before leases").isEmpty)
    }

    @Test func anAnnouncementWithoutTheLeasesBitMarksAReleaseBeforeLeases() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let formatOne = try RawPeer(port: loop.port)
        formatOne.hello(nodeID: "format-one")
        formatOne.send(Self.formatOneAnnouncement(version: "0.1.1", commit: "abc"))
        let cleared = try RawPeer(port: loop.port)
        cleared.hello(nodeID: "bit-cleared")
        cleared.send(PeerAnnouncement(version: "0.2.0", commit: "abc", capabilities: []).frame(Self.authenticator))
        let snapshot = loop.waitForSnapshot { $0.leaseSupport.count == 2 }
        #expect(snapshot.leaseSupport == ["format-one": .predatesLeases, "bit-cleared": .predatesLeases])
    }

    /// A member that restarts dials a new control connection, and the first
    /// frame after its hello classifies it again. The hello alone changes
    /// nothing: forgetting the old release there would switch enforcement on
    /// until the next frame, whenever the two arrive in separate reads.
    @Test func aNewControlConnectionClassifiesThePeerAgain() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let before = try RawPeer(port: loop.port)
        before.hello(nodeID: "node-a")
        before.sendFrame([1])
        #expect(loop.waitForSnapshot { $0.leaseSupport["node-a"] != nil }.leaseSupport["node-a"] == .predatesLeases)

        let received = loop.board.snapshot.bytesReceived
        let restarted = try RawPeer(port: loop.port)
        restarted.hello(nodeID: "node-a")
        #expect(loop.waitForSnapshot { $0.bytesReceived > received }.leaseSupport["node-a"] == .predatesLeases,
                "a hello alone is no evidence: the member keeps what it was")
        restarted.send(PeerAnnouncement(version: "0.2.0", commit: "feed").frame(Self.authenticator))
        #expect(loop.waitForSnapshot { $0.leaseSupport["node-a"] == .speaksLeases }.leaseSupport["node-a"] == .speaksLeases)
    }

    /// A release before leases has no replication either: records, streams
    /// and read probes in a batch would make it close the link, and with it
    /// the forwarding of every key it owns. Routing leaves it out of the
    /// followers, and keeps sending writes where it did.
    @Test func membersPredatingLeasesGetNoReplication() throws {
        let ids = ["node-a", "node-b", "node-c"].compactMap(NodeID.init)
        let map = try ShardMap(members: ids, numShards: 16, virtualNodes: 16, replicationFactor: 3)
        let all = ClusterRouting(version: 1, map: map, selfID: ids[1], clientAddressOf: [:])
        let mixed = ClusterRouting(version: 2, map: map, selfID: ids[1], clientAddressOf: [:], withoutReplication: ["node-a"])
        #expect(all.followers.allSatisfy { $0.count == 2 })
        #expect(mixed.followers == all.followers.map { $0.filter { $0.name != "node-a" } })
        #expect(mixed.followers.contains { $0.count == 1 }, "node-a followed some shards and follows none now")
        #expect(mixed.primaryName == all.primaryName, "where writes go does not change")
    }

    // MARK: - What the lease driver does with it

    static let parameters = ClusterParameters(numShards: 8, virtualNodes: 16, replicationFactor: 2)

    static func driver(hasSeeds: Bool, log: LogLines) throws -> (LeaseDriver, LeaseBoard, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-lease-upgrade-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let settings = LeaseSettings(nodeID: NodeID("node-b")!, parameters: parameters)
        let machine = LeaseMachine(settings: settings, persisted: [:], emptyLearner: false, life: 1, randomSeed: 7,
                                   authenticator: authenticator)
        let board = LeaseBoard()
        let driver = LeaseDriver(machine: machine, store: TermStore(directory: directory, terms: [:]), board: board,
                                 logger: log.logger, hasSeeds: hasSeeds)
        return (driver, board, directory)
    }

    @Test func enforcementStopsWhileAMemberPredatesLeasesAndResumesWhenNoneDoes() throws {
        let log = LogLines()
        let (driver, board, directory) = try Self.driver(hasSeeds: true, log: log)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The reactors run before the loop starts the driver: they see leases
        // enforced, and none held, from the first request on.
        #expect(board.leases?.enforced == true, "a node with seeds enforces before its loop starts")
        #expect(board.leases?.untilMs.allSatisfy { $0 == 0 } == true)
        _ = driver.start(nowMs: 0)
        let members = [NodeID("node-a")!, NodeID("node-b")!]
        _ = driver.membersChanged(alive: members, known: members, nowMs: 1)
        #expect(board.leases?.enforced == true, "a node with seeds enforces from its start")
        #expect(driver.routingHolders.count == Int(Self.parameters.numShards))
        _ = driver.takeHoldersMoved()

        driver.predatingMembersChanged(["node-a"])
        #expect(!driver.isEnforced && board.leases?.enforced == false, "the reactors take writes without a lease")
        #expect(driver.routingHolders.isEmpty, "routing follows the map's primary")
        #expect(driver.takeHoldersMoved(), "routing is rebuilt at once")
        #expect(driver.maySendReplication(shard: 0, nowMs: 2), "the map's primary replicates, as before leases")
        #expect(driver.predatingMembers == ["node-a"])
        driver.predatingMembersChanged(["node-a", "node-a"])
        #expect(log.matching("not enforced while members run a release before leases").count == 1, "one notice per switch")
        let map = try ShardMap(members: members, numShards: Int(Self.parameters.numShards), virtualNodes: 16, replicationFactor: 2)
        let routing = ClusterRouting(version: 1, map: map, selfID: members[1], clientAddressOf: [:])
        let primaries = routing.primaryHere.count { $0 }
        #expect(primaries > 0)
        #expect(LeaseSnapshot(driver, routing: routing, nowMs: 3).readsPossiblyStaleShards == primaries,
                "unfenced, every shard read here as its primary may be stale")

        driver.predatingMembersChanged([])
        #expect(driver.isEnforced && board.leases?.enforced == true)
        #expect(driver.routingHolders.count == Int(Self.parameters.numShards))
        #expect(driver.takeHoldersMoved())
        #expect(log.matching("no member runs a release before leases any more").count == 1)
    }

    /// Lease asks go in the form each peer decodes: with the config (and the
    /// copy state) to a peer whose build announces the config, with the copy
    /// state to one that announces only that, in the 0.2.0 form (which that
    /// release decodes, and which says nothing of the copy) to the others.
    @Test func leaseAsksCarryTheCopyStateAndConfigOnlyToPeersThatDecodeThem() throws {
        let log = LogLines()
        let (driver, _, directory) = try Self.driver(hasSeeds: true, log: log)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = driver.start(nowMs: 0)
        let members = [NodeID("node-a")!, NodeID("node-b")!]
        _ = driver.membersChanged(alive: members, known: members, nowMs: 1)
        func requestTypes(at nowMs: Int64) -> [LeaseMessageType] {
            driver.fireDueTimers(nowMs: nowMs).compactMap { peer, frame in
                guard peer.name == "node-a",
                      case let .message(message) = LeaseCodec.decode(frame: frame, parameters: Self.parameters,
                                                                     authenticator: Self.authenticator) else { return nil }
                return message.payload.type
            }
        }
        // Past the quiet period after the start, every tick asks node-a for
        // the shards this node campaigns for or holds.
        var now: Int64 = 5000
        var seen: [LeaseMessageType] = []
        while seen.isEmpty && now < 60_000 {
            seen = requestTypes(at: now)
            now += 1000
        }
        #expect(seen == [.request], "node-a has announced nothing: the 0.2.0 form")
        driver.peersDecodingCopyState(["node-a"])
        seen = []
        while seen.isEmpty && now < 120_000 {
            seen = requestTypes(at: now)
            now += 1000
        }
        #expect(seen == [.requestWithCopyState])
        driver.peersDecodingConfig(["node-a"])
        seen = []
        while seen.isEmpty && now < 180_000 {
            seen = requestTypes(at: now)
            now += 1000
        }
        #expect(seen == [.requestWithConfig])
    }

    /// A node alone without seeds enforces nothing either way; once it sees
    /// another member it says why it still does not.
    @Test func aNodeNotYetInAClusterSwitchesNothingAndSaysWhyOnceItJoins() throws {
        let log = LogLines()
        let (driver, board, directory) = try Self.driver(hasSeeds: false, log: log)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = driver.start(nowMs: 0)
        driver.predatingMembersChanged(["node-a"])
        #expect(board.leases?.enforced == false)
        #expect(log.matching("leases:").filter { $0.contains("enforc") }.isEmpty)
        let members = [NodeID("node-a")!, NodeID("node-b")!]
        _ = driver.membersChanged(alive: members, known: members, nowMs: 1)
        #expect(!driver.isEnforced && board.leases?.enforced == false)
        #expect(log.matching("another member seen, but not enforced").count == 1)
        driver.predatingMembersChanged([])
        #expect(driver.isEnforced && board.leases?.enforced == true)
    }
}
