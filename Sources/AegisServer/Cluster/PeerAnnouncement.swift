/// The build a node runs, as it tells each peer it dials: the second frame
/// on a control connection, right after the hello. /cluster shows it for
/// every member, so a cluster in the middle of a rolling upgrade shows
/// which node runs which release.
///
/// Layout (big-endian), after the frame's 4-byte length prefix:
///     marker 0xF2 · format u8 · version (u8 length + bytes) ·
///     commit (u8 length + bytes) · capabilities u32 (format 2) ·
///     [later formats' fields] · HMAC-SHA256 (32)
///
/// Why a frame of its own rather than more fields in the hello: release
/// 0.1.0 accepts hello version 1 alone and closes a connection whose hello
/// has another version or extra bytes, so a longer hello would cut a new
/// node off from the old ones mid-upgrade. An 0.1.0 node hands this frame to
/// its membership codec, which counts it as `unknown_version` (0xF2 is not
/// a codec version), logs that once a minute per peer, and reads on.
///
/// Compatibility between adjacent releases: a later format only appends
/// fields before the MAC; a reader takes the fields it knows and skips the
/// rest (the MAC covers them all), so no format is ever refused for being
/// newer.
///
/// Capabilities (format 2): what the sender takes part in, so that a node
/// can tell a peer of a release before a feature from one that has it. A
/// format-1 announcement carries none; a format-1 reader skips the field.
struct PeerAnnouncement: Equatable {
    /// The byte where membership messages carry their codec version (1) and
    /// forwarding batches their marker (0xF1).
    static let marker: UInt8 = 0xF2
    static let format: UInt8 = 2

    struct Capabilities: OptionSet, Equatable {
        let rawValue: UInt32
        /// Answers lease requests and enforces leases (docs/replication.md),
        /// so a majority of its shard's replicas can fence writes.
        static let leases = Capabilities(rawValue: 1 << 0)
        /// Decodes `LeaseMessageType.requestWithCopyState` (lease asks that
        /// say the asker's copy may have a hole); 0.2.0 does not, and is sent
        /// the older request form.
        static let leaseCopyState = Capabilities(rawValue: 1 << 1)
        /// Decodes `LeaseMessageType.requestWithConfig` and `replyWithConfig`
        /// (asks and answers that carry the shard's replica configuration,
        /// docs/shard-movement.md); 0.2.x does not.
        static let leaseConfig = Capabilities(rawValue: 1 << 2)
        /// Takes the `farewell` forwarding record of a stopping peer and
        /// answers it (ForwardingRelay, "Farewells"); 0.2.0 does not, and
        /// closes a link that carries it.
        static let farewell = Capabilities(rawValue: 1 << 3)
    }

    var version: String
    var commit: String
    var capabilities: Capabilities = [.leases, .leaseCopyState, .leaseConfig, .farewell]

    /// The whole frame: length prefix, then the payload with its MAC.
    func frame(_ authenticator: GossipAuthenticator) -> [UInt8] {
        var payload: [UInt8] = [Self.marker, Self.format]
        appendShortText(version, to: &payload)
        appendShortText(commit, to: &payload)
        appendUInt32(capabilities.rawValue, to: &payload)
        payload += authenticator.tag(of: payload)
        var frame: [UInt8] = []
        appendUInt32(UInt32(payload.count), to: &frame)
        return frame + payload
    }

    static func isAnnouncement(_ frame: [UInt8]) -> Bool { frame.count > 4 && frame[4] == marker }

    /// Reads a whole frame (length prefix included), MAC first, so that a
    /// forged frame learns nothing about its fields.
    static func decode(_ frame: [UInt8], _ authenticator: GossipAuthenticator) -> Result<PeerAnnouncement, PeerRefusal> {
        guard isAnnouncement(frame), frame.count >= 4 + 2 + GossipAuthenticator.tagBytes else { return .failure(.malformed) }
        let payload = frame[4...]
        let signed = payload.dropLast(GossipAuthenticator.tagBytes)
        guard authenticator.isValid(tag: Array(payload.suffix(GossipAuthenticator.tagBytes)), of: signed) else {
            return .failure(.badMAC)
        }
        var reader = ByteReader(signed)
        guard reader.uint8() == marker, let format = reader.uint8(), format >= 1,
              let version = reader.shortText(), let commit = reader.shortText()
        else { return .failure(.malformed) }
        // Format 1 predates the field: its sender takes part in nothing the
        // field names. Bits a later release defines are kept unread here.
        var capabilities: Capabilities = []
        if format >= 2 {
            guard let bits = reader.uint32() else { return .failure(.malformed) }
            capabilities = Capabilities(rawValue: bits)
        }
        return .success(PeerAnnouncement(version: version, commit: commit, capabilities: capabilities))
    }
}
