/// Version of a stored entry: the term of the node that wrote it and a
/// per-shard sequence number.
///
/// Wire form (`packed`): term in the top 16 bits, seq in the low 48 bits.
/// Versions handed out by `ShardStore` always round-trip through `packed`:
/// the store keeps `term & 0xFFFF` and `seq & (2^48 - 1)`.
public struct EntryVersion: Equatable, Hashable, Sendable {
    public var term: UInt32
    public var seq: UInt64

    @inlinable
    public init(term: UInt32, seq: UInt64) {
        self.term = term
        self.seq = seq
    }

    /// Largest sequence number representable in the wire form.
    public static let seqMask: UInt64 = (1 << 48) - 1

    /// Wire form: term in the top 16 bits, seq in the low 48 bits.
    @inlinable
    public var packed: UInt64 {
        (UInt64(term & 0xFFFF) << 48) | (seq & 0xFFFF_FFFF_FFFF)
    }

    /// Inverse of `packed`.
    @inlinable
    public init(packed: UInt64) {
        self.term = UInt32(truncatingIfNeeded: packed >> 48)
        self.seq = packed & 0xFFFF_FFFF_FFFF
    }
}
