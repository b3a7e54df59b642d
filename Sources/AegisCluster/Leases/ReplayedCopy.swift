import AegisStore

/// What a node's log can prove about its copy of one shard: whether the copy
/// is whole, holding every write up to its newest version.
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
/// A record at the head's term and at or below its seq is a write the chain
/// already holds (the same version twice is the same write), and changes
/// nothing.
///
/// Snapshots: the reactor runs the same chain over every write it logs
/// (`ReactorLog.chains`), and a snapshot keeps, per shard whose chain was
/// whole when its segment began, the chain's head (`provenThrough`); the
/// replay continues from there. The records of the segment the snapshot
/// starts may repeat writes at or below that head (the batch being filled
/// when the snapshot began goes into it). A snapshot without a shard's head
/// proves nothing of it: its records after it start past seq 1.
public struct ReplayedCopy: Sendable, Equatable {
    /// The newest version with nothing missing below it, as far as read.
    public private(set) var head: EntryVersion
    private var broken = false

    /// `provenThrough`: the head a snapshot kept for the shard (its chain was
    /// whole through it); `.zero` when there is none.
    public init(provenThrough: EntryVersion = .zero) {
        head = provenThrough
    }

    /// One logged write, in log order.
    public mutating func logged(_ version: EntryVersion) {
        guard !broken else { return }
        if head != .zero && version.term == head.term && version.seq <= head.seq { return }
        if version.seq == head.seq + 1 && (head == .zero || version.term == head.term) {
            head = version
        } else {
            broken = true
        }
    }

    /// Something changed the copy without being logged (a failed batch undone
    /// in memory): nothing the chain says holds any more.
    public mutating func breakChain() {
        broken = true
    }

    /// The copy holds every write up to `head`, and nothing is known missing.
    public var isWhole: Bool { !broken && head > .zero }
}
