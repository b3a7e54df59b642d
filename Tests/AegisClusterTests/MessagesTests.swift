import AegisCluster
import AegisSimulation
import PropertyBased
import Testing

let testParameters = ClusterParameters(numShards: 256, virtualNodes: 128, replicationFactor: 3)
let testKey = KeyedMixAuthenticator(key: 42)

func update(_ name: String, _ status: MemberStatus = .alive, incarnation: UInt64 = 7,
            accuser: String? = nil) -> MemberUpdate {
    MemberUpdate(node: NodeID(name)!, status: status, incarnation: incarnation,
                 gossipAddress: "\(name).example:7701", clientAddress: "\(name).example:6380",
                 accuser: accuser.flatMap(NodeID.init))
}

func encoded(_ payload: MessagePayload, sender: String = "node-a") -> [UInt8] {
    MessageCodec.encode(ClusterMessage(sender: NodeID(sender)!, senderGossipAddress: "\(sender):7701",
                                       payload: payload),
                        parameters: testParameters, authenticator: testKey)
}

@Suite struct MessagesTests {
    static let payloads: [MessagePayload] = [
        .ping(seq: 1, target: NodeID("node-b")!, updates: []),
        .ping(seq: .max, target: NodeID("node-b")!, updates: [update("node-c", .suspect, accuser: "node-a")]),
        .pingReq(seq: 9, target: NodeID("node-c")!, targetAddress: "10.0.0.3:7701",
                 updates: [update("node-d", .dead), update("node-e", .left, incarnation: .max)]),
        .ack(seq: 77, updates: [update("node-f")]),
        .pushPull(isReply: true, members: (0..<40).map { update("member\($0)", MemberStatus.allCases[$0 % 4]) }),
        .pushPull(isReply: false, members: []),
    ]

    @Test(arguments: payloads) func roundTripsEveryMessageType(_ payload: MessagePayload) {
        let frame = encoded(payload)
        #expect(MessageCodec.bodyLength(prefix: frame.prefix(4)) == frame.count - 4)
        let decoded = MessageCodec.decode(frame: frame, parameters: testParameters, authenticator: testKey)
        #expect(decoded == .message(ClusterMessage(sender: NodeID("node-a")!, senderGossipAddress: "node-a:7701",
                                                   payload: payload)))
    }

    @Test func randomBytesNeverTrapAndAreDropped() async {
        await propertyCheck(count: 500, input: Gen.uint8().array(of: 0...300)) { bytes in
            let result = MessageCodec.decode(frame: bytes, parameters: testParameters, authenticator: testKey)
            guard case .dropped = result else {
                Issue.record("random bytes decoded as \(result)")
                return
            }
        }
    }

    @Test func correctlyTaggedGarbagePayloadsNeverTrap() async {
        // The tag is right, so these reach the payload parser: the case a
        // buggy (or hostile, key-holding) peer produces.
        await propertyCheck(count: 500, input: zip(Gen.uint8().array(of: 0...200), Gen.int(in: 1...4))) { tail, type in
            var body: [UInt8] = [0, 0, 0, 0, MessageCodec.version, UInt8(type), 0, 0, 1, 0, 0, 0, 0, 128, 0, 0, 0, 3]
            body += [6] + Array("node-a".utf8) + [0]
            body += tail
            let length = body.count - 4 + MessageCodec.tagBytes
            body[0] = UInt8(length >> 24); body[1] = UInt8(length >> 16 & 0xFF)
            body[2] = UInt8(length >> 8 & 0xFF); body[3] = UInt8(length & 0xFF)
            body += testKey.tag(for: body[...])
            _ = MessageCodec.decode(frame: body, parameters: testParameters, authenticator: testKey)
        }
    }

    @Test func everySingleByteFlipIsRefused() {
        let frame = encoded(.ping(seq: 5, target: NodeID("node-b")!, updates: [update("node-c")]))
        for index in frame.indices {
            var damaged = frame
            damaged[index] ^= 0x01
            let result = MessageCodec.decode(frame: damaged, parameters: testParameters, authenticator: testKey)
            guard case .dropped = result else {
                Issue.record("flip at \(index) accepted")
                continue
            }
        }
    }

    @Test func namesTheReasonForEachRefusal() {
        let frame = encoded(.ack(seq: 1, updates: []))
        #expect(MessageCodec.decode(frame: frame, parameters: testParameters,
                                    authenticator: KeyedMixAuthenticator(key: 43)) == .dropped(.badMAC))
        var future = frame
        future[4] = MessageCodec.version + 1
        #expect(MessageCodec.decode(frame: future, parameters: testParameters, authenticator: testKey)
                == .dropped(.unknownVersion))
        let otherShards = ClusterParameters(numShards: 512, virtualNodes: 128, replicationFactor: 3)
        #expect(MessageCodec.decode(frame: frame, parameters: otherShards, authenticator: testKey)
                == .dropped(.clusterMismatch))
        #expect(MessageCodec.decode(frame: Array(frame.dropLast()), parameters: testParameters,
                                    authenticator: testKey) == .dropped(.malformed))
    }

    @Test func refusesAFrameClaimingTwoGigabytesBeforeReadingIt() {
        #expect(MessageCodec.bodyLength(prefix: [0x80, 0, 0, 0]) == nil)
        #expect(MessageCodec.bodyLength(prefix: [0, 0x10, 0, 0]) == nil)
        #expect(MessageCodec.bodyLength(prefix: [0, 0, 0, 3]) == nil)
        #expect(MessageCodec.bodyLength(prefix: [0, 0, 1, 0]) == 256)
    }

    @Test func controlMessagesStayWithinTheirBudgetWhateverIsQueued() {
        // 60 members learned at once: far more updates than one packet holds.
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 1, authenticator: testKey)
        _ = node.step(.start(now: 0))
        let flood = encoded(.pushPull(isReply: true, members: (0..<60).map { update("member\($0)") }), sender: "node-z")
        _ = node.step(.received(frame: flood, fromAddress: "node-z:7701", now: 1))
        let actions = node.step(.timerFired(.protocolPeriod, now: 2000))
        let sends = actions.compactMap { action -> [UInt8]? in
            if case let .send(frame, _, .control) = action { frame } else { nil }
        }
        #expect(!sends.isEmpty)
        for frame in sends { #expect(frame.count <= 1400) }
    }
}
