import Crypto
import FoundationEssentials

/// HMAC-SHA256 keyed by `gossip_secret` (swift-crypto), for every byte that
/// crosses a peer link: the link handshake here, and the membership
/// messages through the state machine, which gets this as its authenticator.
///
/// An empty secret is still a key (HMAC accepts a zero-length key): nodes
/// that all leave `gossip_secret` unset accept each other, and a node with a
/// secret refuses them.
public struct GossipAuthenticator: Sendable {
    public static let tagBytes = 32

    /// The secret's bytes; a SymmetricKey is made per use (swift-crypto's
    /// key type is not Sendable, and gossip's few messages a second make the
    /// copy immaterial).
    private let secret: [UInt8]

    public init(secret: String) {
        self.secret = Array(secret.utf8)
    }

    private var key: SymmetricKey { SymmetricKey(data: secret) }

    public func tag(of bytes: some DataProtocol) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key))
    }

    /// Compares in constant time (swift-crypto's check), so the time taken
    /// does not tell a forger how many leading bytes were right.
    public func isValid(tag: some ContiguousBytes, of bytes: some DataProtocol) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: bytes, using: key)
    }
}
