import AegisStore

/// What a restarted node's log replay can prove about its copy of one shard:
/// whether the copy is whole, holding every write up to its newest version.
///
/// Followers log nothing they receive (durability.md), so a restarted copy
/// is in general only the writes the node made as holder, with holes where
/// others wrote. Proving one whole lets the node campaign and be granted
/// like any replica instead of standing back (`LeaseMachine`): after a
/// whole-cluster restart, each shard's last holder comes back whole, and
/// writes resume as soon as the old promises have run out instead of 24 to
/// 48 s later.
///
/// The proof: one node holds a term, and every write it makes at that term
/// takes the next seq of its copy and is logged. So a log whose records of
/// the shard, from the very first write of the shard (seq 1), are of one
/// term and take consecutive seqs leaves no room for anyone else's write.
/// Anything else may hide one, and is taken as a hole:
/// - a change of term: another holder may have written in between, even at
///   seqs this node then reused (a holder elected while behind continues
///   from its own, lower, seq);
/// - a skipped seq, or a first record past seq 1 (the node followed someone
///   before it wrote).
///
/// A snapshot needs no rule of its own: the segment it starts holds every
/// write made after its walk began, so a shard whose records there start at
/// seq 1 had nothing before the walk, and one written before it starts past
/// seq 1 (a hole as far as this proof can tell: the snapshot may have been
/// taken of a copy with a hole, or while following another holder whose
/// records applied during the walk are in neither file).
public struct ReplayedCopy: Sendable, Equatable {
    /// The newest version with nothing missing below it, as far as read.
    public private(set) var head: EntryVersion = .zero
    private var broken = false

    public init() {}

    /// One logged write, in log order.
    public mutating func logged(_ version: EntryVersion) {
        guard !broken else { return }
        if version.seq == head.seq + 1 && (head == .zero || version.term == head.term) {
            head = version
        } else {
            broken = true
        }
    }

    /// The copy holds every write up to its newest version.
    public var isWhole: Bool { !broken && head > .zero }
}
