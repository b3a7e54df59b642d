import AegisCluster
@testable import AegisServer
import Foundation
import Glibc
import Testing

/// Issue 17: nodes tell each other which build they run, so /cluster shows a
/// mixed-version cluster during a rolling upgrade, without cutting a new node
/// off from a 0.1.0 one (scripts/test-upgrade runs the two releases together).
@Suite struct BuildAnnouncementTests {
    static let authenticator = GossipAuthenticator(secret: "s")

    @Test func announcementRoundTripsAndRefusesForgery() {
        let build = PeerAnnouncement(version: "0.1.1", commit: String(repeating: "ab", count: 20))
        let frame = build.frame(Self.authenticator)
        #expect(frame.prefix(4).reduce(0) { $0 << 8 | Int($1) } == frame.count - 4, "the prefix gives the rest's length")
        #expect(PeerAnnouncement.decode(frame, Self.authenticator) == .success(build))
        #expect(PeerAnnouncement.decode(frame, GossipAuthenticator(secret: "other")) == .failure(.badMAC))
        var altered = frame
        altered[8] ^= 1
        #expect(PeerAnnouncement.decode(altered, Self.authenticator) == .failure(.badMAC))
        for cut in [0, 4, 5, 6, frame.count - 1] {
            #expect(PeerAnnouncement.decode(Array(frame.prefix(cut)), Self.authenticator) != .success(build), "cut at \(cut)")
        }
    }

    /// A signed frame whose fields do not parse is malformed, not a crash.
    @Test func authenticButShortFieldsAreMalformed() {
        let signed: [UInt8] = [PeerAnnouncement.marker, 1, 200, 65]
        let frame = [0, 0, 0, UInt8(signed.count + GossipAuthenticator.tagBytes)] + signed + Self.authenticator.tag(of: signed)
        #expect(PeerAnnouncement.decode(frame, Self.authenticator) == .failure(.malformed))
    }

    /// The compatibility rule for the next release: a later format appends
    /// fields before the MAC, and this release reads what it knows.
    @Test func aLaterFormatWithMoreFieldsIsReadNotRefused() {
        var signed: [UInt8] = [PeerAnnouncement.marker, PeerAnnouncement.format + 1]
        for text in ["0.2.0", "c0ffee"] { signed += [UInt8(text.utf8.count)] + Array(text.utf8) }
        signed += [0, 0, 0x80, 0x01]  // capabilities: leases and a bit this release does not know
        signed += [3, 1, 2, 3]
        let frame = [0, 0, 0, UInt8(signed.count + GossipAuthenticator.tagBytes)] + signed + Self.authenticator.tag(of: signed)
        let decoded = PeerAnnouncement.decode(frame, Self.authenticator)
        #expect(decoded == .success(PeerAnnouncement(version: "0.2.0", commit: "c0ffee",
                                                     capabilities: PeerAnnouncement.Capabilities(rawValue: 0x8001))))
        #expect((try? decoded.get())?.capabilities.contains(.leases) == true)
        #expect((try? decoded.get())?.capabilities.contains(.leaseCopyState) == false, "0.2.0 announces leases alone")
    }

    /// Format 1 (0.1.1 builds before capabilities) read by this release: the
    /// sender names no capability, so it is taken for a release before leases.
    @Test func aFormatOneAnnouncementCarriesNoCapabilities() {
        var signed: [UInt8] = [PeerAnnouncement.marker, 1]
        for text in ["0.1.1", "abc"] { signed += [UInt8(text.utf8.count)] + Array(text.utf8) }
        let frame = [0, 0, 0, UInt8(signed.count + GossipAuthenticator.tagBytes)] + signed + Self.authenticator.tag(of: signed)
        let decoded = PeerAnnouncement.decode(frame, Self.authenticator)
        #expect(decoded == .success(PeerAnnouncement(version: "0.1.1", commit: "abc", capabilities: [])))
        #expect((try? decoded.get())?.capabilities.contains(.leases) == false)
    }

    /// This release's frame read as a format-1 reader reads it: the two
    /// fields it knows sit where format 1 put them, and the capabilities
    /// are the only bytes it skips before the MAC.
    @Test func aFormatOneReaderFindsItsFieldsInFormatTwo() {
        let build = PeerAnnouncement(version: "0.2.0", commit: "feed")
        #expect(build.capabilities.contains(.leases), "this release announces that it takes part in leases")
        #expect(build.capabilities.contains(.leaseCopyState), "and that it decodes lease asks with the copy state")
        #expect(build.capabilities.contains(.leaseConfig), "and lease asks and answers with the replica configuration")
        #expect(build.capabilities.contains(.farewell), "and answers a stopping peer's farewell")
        let frame = build.frame(Self.authenticator)
        #expect(frame[5] == 2)
        var reader = ByteReader(frame[4..<(frame.count - GossipAuthenticator.tagBytes)])
        let (marker, format) = (reader.uint8(), reader.uint8())
        let (version, commit) = (reader.shortText(), reader.shortText())
        let skipped = reader.remaining
        let capabilities = reader.uint32()
        #expect(marker == PeerAnnouncement.marker && format == 2)
        #expect(version == "0.2.0" && commit == "feed")
        #expect(skipped == 4)
        #expect(capabilities == PeerAnnouncement.Capabilities([.leases, .leaseCopyState, .leaseConfig, .farewell]).rawValue)
    }

    /// A format-2 frame cut before its capabilities is refused, not read as format 1.
    @Test func aFormatTwoFrameWithoutItsCapabilitiesIsMalformed() {
        var signed: [UInt8] = [PeerAnnouncement.marker, 2]
        for text in ["0.2.0", "abc"] { signed += [UInt8(text.utf8.count)] + Array(text.utf8) }
        signed += [0, 1]
        let frame = [0, 0, 0, UInt8(signed.count + GossipAuthenticator.tagBytes)] + signed + Self.authenticator.tag(of: signed)
        #expect(PeerAnnouncement.decode(frame, Self.authenticator) == .failure(.malformed))
    }

    /// What a 0.1.0 node does with the frame: its membership codec sees an
    /// unknown version and drops it, which leaves the link open.
    @Test func theMembershipCodecDropsTheFrameAsAnUnknownVersion() {
        let frame = PeerAnnouncement(version: "0.1.1", commit: "x").frame(Self.authenticator)
        let parameters = ClusterParameters(numShards: 64, virtualNodes: 128, replicationFactor: 1)
        #expect(MessageCodec.decode(frame: frame, parameters: parameters, authenticator: Self.authenticator)
            == .dropped(.unknownVersion))
        #expect(frame[4] != MessageCodec.version && frame[4] != ForwardingRelay.batchMarker)
    }

    /// The loop takes the announcement itself: the engine never sees it,
    /// and a forged one closes only that connection.
    @Test func theLoopConsumesAnnouncementsAndRefusesForgedOnes() throws {
        let loop = try LoopUnderTest()
        defer { loop.stop() }
        let peer = try RawPeer(port: loop.port)
        peer.hello(nodeID: "new-node")
        peer.send(PeerAnnouncement(version: "9.9.9", commit: "feed").frame(GossipAuthenticator(secret: LoopUnderTest.secret)))
        peer.sendFrame([1])
        #expect(waitUntil { loop.engine.arrivalCount == 1 })
        #expect(loop.engine.arrivals.withLock { $0.map(\.message) } == [[0, 0, 0, 1, 1]], "only the membership frame reaches the engine")
        #expect(loop.waitForSnapshot { $0.messagesReceived["announcement"] == 1 }.messagesReceived["announcement"] == 1)

        let forger = try RawPeer(port: loop.port)
        forger.hello(nodeID: "forger")
        forger.send(PeerAnnouncement(version: "9.9.9", commit: "feed").frame(GossipAuthenticator(secret: "wrong")))
        #expect(forger.closedByPeer(within: 10))
        #expect(loop.waitForSnapshot { $0.dropped[.badMAC] == 1 }.dropped[.badMAC] == 1)
        peer.sendFrame([2])
        #expect(waitUntil { loop.engine.arrivalCount == 2 }, "the honest peer's link stays open")
    }

    /// Real nodes: each one's /cluster names every member's build, and the
    /// metric counts the members per build.
    @Test func everyMemberShowsTheBuildItAnnounced() throws {
        let cluster = try ClusterHarness(size: 3)
        try cluster.startAll()
        let everyone = ClusterHarness.nodeIDs(1...3)
        try cluster.waitUntil("3 alive everywhere", ClusterHarness.allAlive(everyone))
        let expected = try ownBuild()
        var shown: [Int: [String]] = [:]
        let deadline = Date().addingTimeInterval(30)
        repeat {
            for node in 1...3 { shown[node] = try builds(cluster.get(node, "/cluster")) }
            if shown.values.allSatisfy({ $0 == Array(repeating: expected, count: 3) }) { break }
            usleep(100_000)
        } while Date() < deadline
        for node in 1...3 {
            #expect(shown[node] == Array(repeating: expected, count: 3), "node\(node)'s /cluster: \(shown[node] ?? [])")
            let parts = expected.split(separator: " ")
            let sample = #"aegis_cluster_member_versions{version="\#(parts[0])",commit="\#(parts[1])"}"#
            #expect(try cluster.metric(node, sample) == 3)
        }
    }

    /// "version commit" of each member of a /cluster document, "null null" for one that announced nothing.
    private func builds(_ json: String) throws -> [String] {
        let result = try runTool("jq", ["-r", #".members[] | "\(.version) \(.commit)""#], input: json)
        guard result.status == 0 else { throw HarnessError("jq: \(result.output)") }
        return result.output.split(separator: "\n").map(String.init)
    }

    /// "version commit" as the binary under test prints them in --version.
    private func ownBuild() throws -> String {
        let line = try runTool(ServerHarness.binaryPath, ["--version"]).output
        let words = line.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "(" || $0 == ")" })
        guard words.count >= 4, words[2] == "commit" else { throw HarnessError("unexpected --version: \(line)") }
        return "\(words[1]) \(words[3])"
    }
}
