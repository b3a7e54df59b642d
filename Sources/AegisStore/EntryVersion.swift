/// Version of a stored entry: the term of the node that wrote it and a
/// per-shard sequence number. Versions are ordered by term, then seq; every
/// write, DEL and FLUSHALL included, gets one that is newer than every
/// version its shard holds or has logged.
///
/// Neither part wraps in a cluster's life, and neither is truncated anywhere
/// (memory, log, replication):
/// - `seq` is 64 bits. At a million writes a second to one shard, without a
///   pause, 2^64 writes take 2^64 / 10^6 s = 1.8 * 10^13 s, about 585,000
///   years. (The 48 bits it had before lasted 8.9 years at that rate.)
/// - `term` is 32 bits. It moves when a shard's leadership changes; even at
///   one change a second, for ever, 2^32 terms last 136 years. (The 16 bits
///   it had before lasted 18 hours at that rate.)
/// The store traps rather than wraps if a bound is ever reached: a wrapped
/// version would make every later write look older than the earlier ones.
public struct EntryVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var term: UInt32
    public var seq: UInt64

    @inlinable
    public init(term: UInt32, seq: UInt64) {
        self.term = term
        self.seq = seq
    }

    /// Older than every version a write is given (terms start at 1).
    public static let zero = EntryVersion(term: 0, seq: 0)

    @inlinable
    public static func < (lhs: EntryVersion, rhs: EntryVersion) -> Bool {
        lhs.term != rhs.term ? lhs.term < rhs.term : lhs.seq < rhs.seq
    }

    public var description: String { "\(term).\(seq)" }

    /// Reads a version written by log format 1 and binary protocol v1 before
    /// issue 14: term in the top 16 bits, seq in the low 48. Every such
    /// version is representable here, so old logs convert without loss.
    @inlinable
    public init(legacyPacked packed: UInt64) {
        self.term = UInt32(truncatingIfNeeded: packed >> 48)
        self.seq = packed & 0xFFFF_FFFF_FFFF
    }
}
