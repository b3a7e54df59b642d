/// A member's name, as configured by `node_id`. Membership, placement and the
/// messages between nodes all key on it, so the rules `node_id` is validated
/// with (no spaces or control characters, at most 255 bytes) hold here too:
/// a name that breaks them cannot come from a peer's message either.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let maximumBytes = 255

    public let name: String

    /// nil when `name` is empty, longer than 255 UTF-8 bytes, or holds a
    /// space or a control character.
    public init?(_ name: String) {
        let bytes = name.utf8
        guard !bytes.isEmpty, bytes.count <= Self.maximumBytes else { return nil }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 != 0x7F }) else { return nil }
        self.name = name
    }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool {
        // Byte order, not String's Unicode order: every node and every
        // implementation of the placement hash sorts members the same way.
        lhs.name.utf8.lexicographicallyPrecedes(rhs.name.utf8)
    }

    public var description: String { name }
}
