/// Which of a peer's two connections a frame travels on.
///
/// Each direction between two nodes uses two TCP connections, one per lane,
/// rather than one connection with two queues. With one connection, a probe
/// written after a bulk transfer waits behind whatever bulk bytes already
/// sit in the kernel's send buffer (megabytes once autotuning grows it), and
/// no ordering of user-space queues can take them back. With a connection
/// of its own the control lane only ever waits behind control frames, so a
/// shard stream cannot make a healthy node look dead.
public enum PeerLane: UInt8, Sendable, CaseIterable {
    case control = 0
    case bulk = 1

    public var name: String { self == .control ? "control" : "bulk" }

    /// Largest frame payload accepted from a peer; a length prefix that
    /// claims more closes the connection (counted as `oversize`) before a
    /// byte of it is buffered. Control: the membership codec's own maximum
    /// (a push/pull of the whole member table); bulk leaves room for the
    /// replication batches to come.
    public var maxFrameBytes: Int { self == .control ? 1024 * 1024 : 8 * 1024 * 1024 }

    /// Bytes waiting to be written to one peer on this lane. A peer that
    /// stops reading fills it; the connection is then closed and counted,
    /// and the messages are lost as any lost packet is (SWIM retries), while
    /// every other peer's link goes on untouched.
    public var outboundLimitBytes: Int { self == .control ? 1024 * 1024 : 32 * 1024 * 1024 }
}

/// Why a connection's bytes were refused; the label of
/// `aegis_cluster_messages_dropped_total`.
public enum PeerRefusal: String, Error, Sendable, CaseIterable {
    case badMAC = "bad_mac"
    case unknownVersion = "unknown_version"
    case clusterMismatch = "cluster_mismatch"
    case malformed
    case oversize
    /// Closed at accept: its address already had
    /// `ClusterLoopSettings.pendingAcceptsPerAddressMax` connections without a hello.
    case addressLimit = "address_limit"
}

/// The first frame on every connection, from the side that dialled: who is
/// calling, on which lane, with which cluster shape, and an HMAC over all of
/// it. The side that accepted checks it before reading anything else, so
/// garbage, another protocol or another cluster's node is refused at once.
///
/// Layout (big-endian): "AGKL" · version u8 · lane u8 · num_shards u32 ·
/// virtual_nodes u32 · node_id (u8 length + bytes) · gossip address (u8
/// length + bytes) · client address (u8 length + bytes) · HMAC-SHA256 (32).
public struct PeerHello: Sendable, Equatable {
    public static let magic: [UInt8] = Array("AGKL".utf8)
    public static let version: UInt8 = 1
    /// Upper bound of an encoded hello: three names of at most 255 bytes plus the fixed fields.
    public static let maxBytes = 4 + 1 + 1 + 4 + 4 + 3 * 256 + GossipAuthenticator.tagBytes

    public var lane: PeerLane
    public var numShards: UInt32
    public var virtualNodes: UInt32
    public var nodeID: String
    public var gossipAddress: String
    public var clientAddress: String

    public init(lane: PeerLane, numShards: UInt32, virtualNodes: UInt32, nodeID: String, gossipAddress: String, clientAddress: String) {
        self.lane = lane
        self.numShards = numShards
        self.virtualNodes = virtualNodes
        self.nodeID = nodeID
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
    }

    /// The whole frame: length prefix, then the payload with its MAC.
    public func frame(_ authenticator: GossipAuthenticator) -> [UInt8] {
        let payload = encoded(authenticator)
        var frame: [UInt8] = []
        appendUInt32(UInt32(payload.count), to: &frame)
        return frame + payload
    }

    /// The payload (without the frame's length prefix), MAC included.
    public func encoded(_ authenticator: GossipAuthenticator) -> [UInt8] {
        var out = Self.magic
        out.append(Self.version)
        out.append(lane.rawValue)
        appendUInt32(numShards, to: &out)
        appendUInt32(virtualNodes, to: &out)
        for text in [nodeID, gossipAddress, clientAddress] { appendShortText(text, to: &out) }
        out += authenticator.tag(of: out)
        return out
    }

    /// Parses and authenticates a hello. The MAC is checked before the
    /// cluster shape, so a forged hello cannot even learn which check failed.
    public static func decode(_ payload: ArraySlice<UInt8>, _ authenticator: GossipAuthenticator) -> Result<PeerHello, PeerRefusal> {
        var reader = ByteReader(payload)
        guard let magic = reader.take(4), Array(magic) == Self.magic else { return .failure(.malformed) }
        guard let version = reader.uint8() else { return .failure(.malformed) }
        guard version == Self.version else { return .failure(.unknownVersion) }
        guard let laneByte = reader.uint8(), let lane = PeerLane(rawValue: laneByte),
              let shards = reader.uint32(), let virtualNodes = reader.uint32(),
              let nodeID = reader.shortText(), let gossip = reader.shortText(), let client = reader.shortText()
        else { return .failure(.malformed) }
        let signedCount = payload.count - reader.remaining
        guard reader.remaining == GossipAuthenticator.tagBytes else { return .failure(.malformed) }
        let signed = payload.prefix(signedCount)
        guard authenticator.isValid(tag: Array(payload.suffix(GossipAuthenticator.tagBytes)), of: signed) else {
            return .failure(.badMAC)
        }
        return .success(PeerHello(lane: lane, numShards: shards, virtualNodes: virtualNodes,
                                  nodeID: nodeID, gossipAddress: gossip, clientAddress: client))
    }
}

/// Appends the 4-byte big-endian length prefix every frame starts with.
func appendUInt32(_ value: UInt32, to out: inout [UInt8]) {
    out.append(UInt8(truncatingIfNeeded: value >> 24))
    out.append(UInt8(truncatingIfNeeded: value >> 16))
    out.append(UInt8(truncatingIfNeeded: value >> 8))
    out.append(UInt8(truncatingIfNeeded: value))
}

/// Appends `text` as `ByteReader.shortText` reads it: a length byte, then
/// at most 255 bytes of UTF-8.
func appendShortText(_ text: String, to out: inout [UInt8]) {
    let bytes = text.utf8.prefix(255)
    out.append(UInt8(bytes.count))
    out += bytes
}

/// A bounds-checked cursor over received bytes: every read returns nil past the end.
struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.position = bytes.startIndex
    }

    var remaining: Int { bytes.endIndex - position }

    mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, remaining >= count else { return nil }
        defer { position += count }
        return bytes[position..<position + count]
    }

    mutating func uint8() -> UInt8? { take(1)?.first }

    mutating func uint32() -> UInt32? {
        guard let four = take(4) else { return nil }
        return four.reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func shortText() -> String? {
        guard let count = uint8(), let text = take(Int(count)) else { return nil }
        return String(validating: text, as: UTF8.self)
    }
}
