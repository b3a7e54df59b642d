@testable import AegisServer
import Foundation
import Glibc
import Testing

/// The peer link on real sockets: framing, the hello, and every bound the
/// issue names (garbage, a 2^31-byte claim, a peer that never reads, another
/// cluster's secret), each shown to close only the offending connection.
@Suite struct PeerLinkTests {
    @Test func helloRoundTripsAndRefusesTampering() {
        let authenticator = GossipAuthenticator(secret: "s")
        let hello = PeerHello(lane: .bulk, numShards: 4096, virtualNodes: 64, nodeID: "node1",
                              gossipAddress: "127.0.0.11:7701", clientAddress: "127.0.0.11:7700")
        let bytes = hello.encoded(authenticator)
        #expect(PeerHello.decode(bytes[...], authenticator) == .success(hello))
        #expect(PeerHello.decode(bytes[...], GossipAuthenticator(secret: "other")) == .failure(.badMAC))
        var flipped = bytes
        flipped[12] ^= 1
        #expect(PeerHello.decode(flipped[...], authenticator) == .failure(.badMAC))
        var newer = bytes
        newer[4] = PeerHello.version + 1
        #expect(PeerHello.decode(newer[...], authenticator) == .failure(.unknownVersion))
        for cut in [0, 3, 4, 9, bytes.count - 1] {
            #expect(PeerHello.decode(bytes.prefix(cut), authenticator) == .failure(.malformed), "cut at \(cut)")
        }
    }

    @Test func anEmptySecretIsStillAKey() {
        let open = GossipAuthenticator(secret: "")
        let hello = PeerHello(lane: .control, numShards: 1, virtualNodes: 1, nodeID: "a", gossipAddress: "h:1", clientAddress: "")
        #expect(PeerHello.decode(hello.encoded(open)[...], open) == .success(hello))
        #expect(PeerHello.decode(hello.encoded(open)[...], GossipAuthenticator(secret: "x")) == .failure(.badMAC))
    }

    @Test func framesFromAnAuthenticatedPeerArrive() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let peer = try RawPeer(port: loop.port)
        peer.hello(nodeID: "good")
        for index in 0..<100 { peer.sendFrame([UInt8(index), 1, 2, 3]) }
        #expect(waitUntil { loop.engine.arrivalCount == 100 })
        let arrivals = loop.engine.arrivals.withLock { $0 }
        #expect(arrivals.allSatisfy { $0.nodeID == "good" })
        #expect(arrivals.map { $0.message } == (0..<100).map { [0, 0, 0, 4, UInt8($0), 1, 2, 3] }, "whole frames, prefix included")
        let snapshot = loop.waitForSnapshot { $0.messagesReceived["test"] == 100 }
        #expect(snapshot.messagesReceived["test"] == 100)
        #expect(snapshot.bytesReceived > 100 * 8)
    }

    @Test func garbageClosesThatConnectionOnly() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let good = try RawPeer(port: loop.port)
        good.hello(nodeID: "good")
        let http = try RawPeer(port: loop.port)
        http.send(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let small = try RawPeer(port: loop.port)
        small.send([0, 0, 0, 12] + Array("not a hello!".utf8))
        #expect(http.closedByPeer(within: 10))
        #expect(small.closedByPeer(within: 10))
        good.sendFrame([7])
        #expect(waitUntil { loop.engine.arrivalCount == 1 })
        #expect(loop.waitForSnapshot { $0.dropped[.malformed] == 2 }.dropped[.malformed] == 2)
    }

    @Test func aTwoGigabyteLengthClaimClosesThatLinkBeforeBufferingIt() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let good = try RawPeer(port: loop.port)
        good.hello(nodeID: "good")
        let liar = try RawPeer(port: loop.port)
        liar.hello(nodeID: "liar")
        liar.send([0x80, 0, 0, 0] + [UInt8](repeating: 0xAB, count: 4096))
        #expect(liar.closedByPeer(within: 10))
        let snapshot = loop.waitForSnapshot { $0.dropped[.oversize] == 1 }
        #expect(snapshot.dropped[.oversize] == 1)
        good.sendFrame([1, 2])
        #expect(waitUntil { loop.engine.arrivalCount == 1 })
        #expect(loop.engine.arrivals.withLock { $0.map(\.nodeID) } == ["good"])
    }

    @Test func anotherClustersNodeIsRefusedCountedAndLoggedOncePerMinute() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let good = try RawPeer(port: loop.port)
        good.hello(nodeID: "good")
        for _ in 0..<5 {
            let stranger = try RawPeer(port: loop.port)
            stranger.hello(secret: "another-cluster", nodeID: "stranger")
            stranger.sendFrame([9, 9, 9])
            #expect(stranger.closedByPeer(within: 10))
        }
        let shaped = try RawPeer(port: loop.port)
        shaped.hello(nodeID: "other-shape", numShards: 512)
        #expect(shaped.closedByPeer(within: 10))
        let snapshot = loop.waitForSnapshot { $0.dropped[.badMAC] == 5 && $0.dropped[.clusterMismatch] == 1 }
        #expect(snapshot.dropped[.badMAC] == 5)
        #expect(snapshot.dropped[.clusterMismatch] == 1)
        #expect(loop.log.matching("authentication failed").count == 1, "\(loop.log.matching("refused"))")
        #expect(loop.log.matching("num_shards or virtual_nodes").count == 1)
        good.sendFrame([4])
        #expect(waitUntil { loop.engine.arrivalCount == 1 })
        #expect(loop.engine.arrivals.withLock { $0.map(\.nodeID) } == ["good"], "nothing of the refused peers arrived")
    }

    @Test func aPeerThatNeverReadsLosesItsLinkAndTheOthersKeepTheirs() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let stalled = try ListeningPeer(reads: false)
        let reader = try ListeningPeer(reads: true)
        defer { stalled.stop(); reader.stop() }
        var frame: [UInt8] = []
        appendUInt32(60 * 1024, to: &frame)
        frame += [UInt8](repeating: 0x5A, count: 60 * 1024)
        loop.engine.bursts.withLock { $0 = [(stalled.address, frame), (reader.address, frame)] }
        let closed = loop.waitForSnapshot { $0.slowPeerClosures >= 1 }
        #expect(closed.slowPeerClosures >= 1, "the stalled peer's queue filled and its link was closed")
        let readBefore = reader.framesRead.load(ordering: .relaxed)
        #expect(waitUntil { reader.framesRead.load(ordering: .relaxed) > readBefore + 50 }, "the reading peer still gets frames")
        loop.engine.bursts.withLock { $0 = [] }
        #expect(loop.log.matching("stopped reading").count >= 1)
    }

    /// Issue 11: each link's limit bounds one peer; stalled peers together
    /// are bounded by the node-wide budget. Two peers that never read, with
    /// a budget under one control link's own limit (1 MiB): the budget cuts
    /// the link holding the most before it reaches its own limit, the total
    /// never passes the budget, and the reading peer keeps its frames.
    @Test func stalledPeersTogetherStayWithinThePeerQueueBudget() throws {
        let budget = 768 * 1024
        let loop = try LoopUnderTest(peerQueueBudgetBytes: budget)
        defer { loop.stop() }
        let stalled = [try ListeningPeer(reads: false), try ListeningPeer(reads: false)]
        let reader = try ListeningPeer(reads: true)
        defer { stalled.forEach { $0.stop() }; reader.stop() }
        var frame: [UInt8] = []
        appendUInt32(60 * 1024, to: &frame)
        frame += [UInt8](repeating: 0x5A, count: 60 * 1024)
        loop.engine.bursts.withLock { $0 = stalled.map { ($0.address, frame) } + [(reader.address, frame)] }
        var peak = 0
        let deadline = Date().addingTimeInterval(10)
        var snapshot = loop.board.snapshot
        while snapshot.peerQueueBudgetClosures < 2 && Date() < deadline {
            peak = max(peak, snapshot.peerQueuedBytes)
            usleep(2_000)
            snapshot = loop.board.snapshot
        }
        #expect(snapshot.peerQueueBudgetClosures >= 2, "the budget cut stalled links: \(snapshot.peerQueueBudgetClosures)")
        #expect(snapshot.slowPeerClosures >= snapshot.peerQueueBudgetClosures)
        #expect(snapshot.peerQueueBudgetBytes == budget)
        #expect(peak <= budget, "all links held \(peak) bytes, over the \(budget)-byte budget")
        let readBefore = reader.framesRead.load(ordering: .relaxed)
        #expect(waitUntil { reader.framesRead.load(ordering: .relaxed) > readBefore + 50 }, "the reading peer still gets frames")
        loop.engine.bursts.withLock { $0 = [] }
        #expect(loop.log.matching("reached their memory budget").count >= 1)
    }
}
