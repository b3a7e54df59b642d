/// The node-to-node wire format, version 1. All integers big-endian.
///
///     frame  = length:u32 body                 length = bytes of body (tag included)
///     body   = version:u8 type:u8 numShards:u32 virtualNodes:u32 replicationFactor:u32
///              sender:str senderGossipAddress:str payload tag:32 bytes
///     str    = len:u8 bytes (UTF-8)
///     tag    = MessageAuthenticator over every byte of the frame before it
///
/// The version is read first (a later version may lay out the rest
/// differently), then the tag is checked, and only then is anything else
/// parsed: unauthenticated bytes never reach the payload parser.
public enum MessageType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// payload = seq:u32 target:str updates
    case ping = 1
    /// payload = seq:u32 target:str targetAddress:str updates — "probe target for me"
    case pingReq = 2
    /// payload = seq:u32 updates
    case ack = 3
    /// payload = isReply:u8 count:u16 update×count — every member this node knows
    case pushPull = 4
    /// payload = seq:u32 updates — "I asked the target for you and got no answer"
    /// (Lifeguard): proves the helper, and so this node's own links, work.
    case nack = 5

    public var description: String {
        switch self {
        case .ping: "ping"
        case .pingReq: "ping_req"
        case .ack: "ack"
        case .pushPull: "push_pull"
        case .nack: "nack"
        }
    }
}

/// What a node says about one member:
///     update = status:u8 incarnation:u64 node:str gossipAddress:str clientAddress:str accuser:str
///     updates = count:u8 update×count
/// `accuser` is empty except for `suspect`, where it names who suspects, so
/// that independent suspicions count as Lifeguard confirmations.
public struct MemberUpdate: Sendable, Equatable {
    public var node: NodeID
    public var status: MemberStatus
    public var incarnation: UInt64
    public var gossipAddress: String
    public var clientAddress: String
    public var accuser: NodeID?

    public init(node: NodeID, status: MemberStatus, incarnation: UInt64,
                gossipAddress: String, clientAddress: String, accuser: NodeID? = nil) {
        self.node = node
        self.status = status
        self.incarnation = incarnation
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
        self.accuser = accuser
    }

    var encodedBytes: Int {
        1 + 8 + 1 + node.name.utf8.count + 1 + gossipAddress.utf8.count
            + 1 + clientAddress.utf8.count + 1 + (accuser?.name.utf8.count ?? 0)
    }
}

public enum MessagePayload: Sendable, Equatable {
    case ping(seq: UInt32, target: NodeID, updates: [MemberUpdate])
    case pingReq(seq: UInt32, target: NodeID, targetAddress: String, updates: [MemberUpdate])
    case ack(seq: UInt32, updates: [MemberUpdate])
    case pushPull(isReply: Bool, members: [MemberUpdate])
    case nack(seq: UInt32, updates: [MemberUpdate])

    public var type: MessageType {
        switch self {
        case .ping: .ping
        case .pingReq: .pingReq
        case .ack: .ack
        case .pushPull: .pushPull
        case .nack: .nack
        }
    }
}

public struct ClusterMessage: Sendable, Equatable {
    public var sender: NodeID
    public var senderGossipAddress: String
    public var payload: MessagePayload

    public init(sender: NodeID, senderGossipAddress: String, payload: MessagePayload) {
        self.sender = sender
        self.senderGossipAddress = senderGossipAddress
        self.payload = payload
    }
}

/// The placement parameters every message carries; peers must agree on them.
public struct ClusterParameters: Sendable, Equatable {
    public var numShards: UInt32
    public var virtualNodes: UInt32
    public var replicationFactor: UInt32

    public init(numShards: UInt32, virtualNodes: UInt32, replicationFactor: UInt32) {
        self.numShards = numShards
        self.virtualNodes = virtualNodes
        self.replicationFactor = replicationFactor
    }
}

public enum DecodeResult: Sendable, Equatable {
    case message(ClusterMessage)
    case dropped(DropReason)
}

public enum MessageCodec {
    public static let version: UInt8 = 1
    public static let tagBytes = 32
    public static let lengthPrefixBytes = 4
    /// A frame that claims more is refused before any of it is buffered: the
    /// largest real one is a push/pull of the whole member table.
    public static let maximumFrameBytes = 1 << 20
    /// Bounds a push/pull; far above any cluster this design targets.
    public static let maximumMembersPerMessage = 4096
    static let headerFixedBytes = 2 + 12

    /// The body length a 4-byte prefix announces, or nil when it is too short
    /// to hold a header and tag, or larger than `maximumFrameBytes`. The driver
    /// closes a link whose prefix gives nil.
    public static func bodyLength(prefix: some Collection<UInt8>) -> Int? {
        guard prefix.count >= lengthPrefixBytes else { return nil }
        var length = 0
        for byte in prefix.prefix(lengthPrefixBytes) { length = length << 8 | Int(byte) }
        guard length >= headerFixedBytes + 2 + tagBytes,
              length + lengthPrefixBytes <= maximumFrameBytes else { return nil }
        return length
    }

    public static func encode(_ message: ClusterMessage, parameters: ClusterParameters,
                              authenticator: some MessageAuthenticator) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(0)
        writer.u8(version)
        writer.u8(message.payload.type.rawValue)
        writer.u32(parameters.numShards)
        writer.u32(parameters.virtualNodes)
        writer.u32(parameters.replicationFactor)
        writer.string(message.sender.name)
        writer.string(message.senderGossipAddress)
        switch message.payload {
        case let .ping(seq, target, updates):
            writer.u32(seq)
            writer.string(target.name)
            writer.updates(updates)
        case let .pingReq(seq, target, targetAddress, updates):
            writer.u32(seq)
            writer.string(target.name)
            writer.string(targetAddress)
            writer.updates(updates)
        case let .ack(seq, updates), let .nack(seq, updates):
            writer.u32(seq)
            writer.updates(updates)
        case let .pushPull(isReply, members):
            writer.u8(isReply ? 1 : 0)
            let count = min(members.count, maximumMembersPerMessage)
            writer.u16(UInt16(count))
            for member in members.prefix(count) { writer.update(member) }
        }
        let bodyLength = writer.bytes.count - lengthPrefixBytes + tagBytes
        writer.patchU32(at: 0, UInt32(bodyLength))
        let tag = authenticator.tag(for: writer.bytes[...])
        precondition(tag.count == tagBytes, "a MessageAuthenticator returns \(tagBytes) bytes")
        writer.bytes.append(contentsOf: tag)
        return writer.bytes
    }

    /// Never traps: any byte string gives a message or a drop reason.
    public static func decode(frame: [UInt8], parameters: ClusterParameters,
                              authenticator: some MessageAuthenticator) -> DecodeResult {
        guard frame.count >= lengthPrefixBytes + 1 else { return .dropped(.malformed) }
        guard frame[lengthPrefixBytes] == version else { return .dropped(.unknownVersion) }
        guard let length = bodyLength(prefix: frame.prefix(lengthPrefixBytes)),
              length + lengthPrefixBytes == frame.count else { return .dropped(.malformed) }
        let signedEnd = frame.count - tagBytes
        let expected = authenticator.tag(for: frame[0..<signedEnd])
        guard constantTimeEqual(expected, frame[signedEnd...]) else { return .dropped(.badMAC) }

        var reader = ByteReader(bytes: frame, index: lengthPrefixBytes + 1, end: signedEnd)
        guard let typeByte = reader.u8(),
              let numShards = reader.u32(), let virtualNodes = reader.u32(),
              let replicationFactor = reader.u32() else { return .dropped(.malformed) }
        let theirs = ClusterParameters(numShards: numShards, virtualNodes: virtualNodes,
                                       replicationFactor: replicationFactor)
        guard theirs == parameters else { return .dropped(.clusterMismatch) }
        guard let type = MessageType(rawValue: typeByte),
              let sender = reader.nodeID(), let senderAddress = reader.string(),
              let payload = reader.payload(type), reader.isAtEnd
        else { return .dropped(.malformed) }
        return .message(ClusterMessage(sender: sender, senderGossipAddress: senderAddress, payload: payload))
    }

    /// Compares every byte whatever the first difference, so that the time a
    /// refusal takes says nothing about how much of a forged tag was right.
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: ArraySlice<UInt8>) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for (left, right) in zip(lhs, rhs) { difference |= left ^ right }
        return difference == 0
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { bytes.append(UInt8(value >> 8)); bytes.append(UInt8(value & 0xFF)) }
    mutating func u32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }
    mutating func u64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((value >> UInt64(shift)) & 0xFF)) }
    }
    mutating func patchU32(at index: Int, _ value: UInt32) {
        for offset in 0..<4 { bytes[index + offset] = UInt8((value >> UInt32(24 - 8 * offset)) & 0xFF) }
    }
    /// Longer strings cannot be sent: NodeID and ClusterSettings keep names and
    /// addresses at most 255 bytes, so truncation here would be a bug upstream.
    mutating func string(_ value: String) {
        let length = value.utf8.count
        precondition(length <= 255, "names and addresses on the wire are at most 255 bytes")
        u8(UInt8(length))
        bytes.append(contentsOf: value.utf8)
    }
    mutating func update(_ update: MemberUpdate) {
        u8(update.status.rawValue)
        u64(update.incarnation)
        string(update.node.name)
        string(update.gossipAddress)
        string(update.clientAddress)
        string(update.accuser?.name ?? "")
    }
    mutating func updates(_ updates: [MemberUpdate]) {
        let count = min(updates.count, 255)
        u8(UInt8(count))
        for item in updates.prefix(count) { update(item) }
    }
}

/// Reads within `index..<end` of `bytes`; every read returns nil rather than
/// reading past `end`.
struct ByteReader {
    let bytes: [UInt8]
    var index: Int
    let end: Int

    var isAtEnd: Bool { index == end }

    mutating func u8() -> UInt8? {
        guard index < end else { return nil }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func uint(_ width: Int) -> UInt64? {
        guard end - index >= width else { return nil }
        var value: UInt64 = 0
        for offset in 0..<width { value = value << 8 | UInt64(bytes[index + offset]) }
        index += width
        return value
    }
    mutating func u16() -> UInt16? { uint(2).map { UInt16($0) } }
    mutating func u32() -> UInt32? { uint(4).map { UInt32($0) } }
    mutating func u64() -> UInt64? { uint(8) }
    mutating func string() -> String? {
        guard let length = u8().map(Int.init), end - index >= length else { return nil }
        defer { index += length }
        let start = index
        return bytes.withUnsafeBufferPointer { buffer in
            String(validating: UnsafeBufferPointer(rebasing: buffer[start..<start + length]), as: UTF8.self)
        }
    }
    mutating func nodeID() -> NodeID? { string().flatMap(NodeID.init) }

    mutating func update() -> MemberUpdate? {
        guard let statusByte = u8(), let status = MemberStatus(rawValue: statusByte),
              let incarnation = u64(), let node = nodeID(),
              let gossipAddress = string(), let clientAddress = string(),
              let accuserName = string() else { return nil }
        let accuser: NodeID?
        if accuserName.isEmpty {
            accuser = nil
        } else {
            guard let named = NodeID(accuserName) else { return nil }
            accuser = named
        }
        return MemberUpdate(node: node, status: status, incarnation: incarnation,
                            gossipAddress: gossipAddress, clientAddress: clientAddress, accuser: accuser)
    }
    mutating func updates(count: Int) -> [MemberUpdate]? {
        var result: [MemberUpdate] = []
        result.reserveCapacity(min(count, 64))
        for _ in 0..<count {
            guard let item = update() else { return nil }
            result.append(item)
        }
        return result
    }
    mutating func payload(_ type: MessageType) -> MessagePayload? {
        switch type {
        case .ping:
            guard let seq = u32(), let target = nodeID(), let count = u8(),
                  let updates = updates(count: Int(count)) else { return nil }
            return .ping(seq: seq, target: target, updates: updates)
        case .pingReq:
            guard let seq = u32(), let target = nodeID(), let address = string(), let count = u8(),
                  let updates = updates(count: Int(count)) else { return nil }
            return .pingReq(seq: seq, target: target, targetAddress: address, updates: updates)
        case .ack:
            guard let seq = u32(), let count = u8(), let updates = updates(count: Int(count)) else { return nil }
            return .ack(seq: seq, updates: updates)
        case .nack:
            guard let seq = u32(), let count = u8(), let updates = updates(count: Int(count)) else { return nil }
            return .nack(seq: seq, updates: updates)
        case .pushPull:
            guard let replyByte = u8(), replyByte <= 1, let count = u16(),
                  Int(count) <= MessageCodec.maximumMembersPerMessage,
                  let members = updates(count: Int(count)) else { return nil }
            return .pushPull(isReply: replyByte == 1, members: members)
        }
    }
}
