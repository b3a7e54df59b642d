import AegisCluster

/// A keyed 32-byte tag that costs a few cycles per byte: keyed FNV-1a over
/// the message, spread into 32 bytes with SplitMix64's finaliser.
///
/// Not a cryptographic MAC, and that is fine here: the simulator has no
/// attacker who forges tags. What it checks is the node's side of the
/// contract, that a frame whose tag does not match (a flipped byte, another
/// cluster's key) is refused and changes nothing. The server uses HMAC-SHA256
/// from swift-crypto; AegisCluster sees both only through `MessageAuthenticator`.
public struct KeyedMixAuthenticator: MessageAuthenticator {
    let key: UInt64

    public init(key: UInt64) {
        self.key = key
    }

    public func tag(for message: ArraySlice<UInt8>) -> [UInt8] {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ key
        for byte in message {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        var tag: [UInt8] = []
        tag.reserveCapacity(MessageCodec.tagBytes)
        for lane in 0..<UInt64(MessageCodec.tagBytes / 8) {
            var mixed = hash &+ key &+ (lane &+ 1) &* 0x9E37_79B9_7F4A_7C15
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            mixed ^= mixed >> 31
            for shift in stride(from: 56, through: 0, by: -8) { tag.append(UInt8((mixed >> UInt64(shift)) & 0xFF)) }
        }
        return tag
    }
}
