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
/// takes the next seq of its copy and is logged; the log holds nothing but
/// those writes (a follower logs nothing it receives). So a log whose
/// records of the shard, from the very first write of the shard (seq 1),
/// take consecutive seqs in one term leaves no room for anyone else's
/// write. Nor does a step to the very next term: both terms were this
/// node's (its records at each are its own writes), no term lies between
/// them, and a holder of an older term is fenced off before a newer one is
/// granted, so nobody wrote between its last write at one and its first at
/// the next. Anything else may hide a write, and is taken as a hole:
/// - a jump of two terms or more: another holder may have held a term in
///   between and written, even at seqs this node then reused (a holder
///   elected while behind continues from its own, lower, seq);
/// - a skipped seq, or a first record past seq 1 (the node followed someone
///   before it wrote).
/// A record at the head's term and at or below its seq is a write the chain
/// already holds (the same version twice is the same write), and changes
/// nothing.
///
/// Snapshots: the reactor runs the same chain over every write it logs
/// (`ReactorLog.chains`), and a snapshot keeps, per shard whose chain was
/// whole when its segment began, the chain's head (`provenThrough`); the
/// replay continues from there. So does a shard whose lease the reactor
/// held when the snapshot began: the winner's copy is the shard's (the lease
/// machine stops counting it holed when it wins) and the snapshot writes all
/// of it, so its chain restarts there (`provenThrough`: its newest write).
/// The records of the segment the snapshot
/// starts may repeat writes at or below that head (the batch being filled
/// when the snapshot began goes into it). A snapshot without a shard's head
/// proves nothing of it: its records after it start past seq 1.
///
/// A shard no write ever reached: a holder whose copy has no version at all
/// (not even a tombstone's) holds the shard's whole state, which is nothing.
/// Its snapshot keeps the head `.zero`, and the copy is proven whole through
/// nothing (`provenThrough: .zero`). Without it, no log could prove such a
/// shard whole, and after a full cluster recovery every replica stood back
/// twice (48 s with the defaults) before anyone campaigned for it. A log
/// holding nothing, and no such head, proves nothing: the node may have
/// followed the shard's writes without logging them.
///
/// The term a holder's snapshot was taken at: a holder's copy is the
/// shard's, so no write of a term below the one it holds is missing from
/// it, whatever its newest write's term. Its next write, at the held term,
/// continues the chain however many terms lie between (`heldTerm`).
/// Without it, a node that won a shard whose last write was two terms
/// back (a shard handed on twice with no write between) broke its chain at
/// its first write, and after a kill of every node the shard waited for
/// the restart stand-back (24 s) before anyone campaigned.
public struct ReplayedCopy: Sendable, Equatable {
    /// The newest version with nothing missing below it, as far as read.
    public private(set) var head: EntryVersion
    /// No write of a term up to this one is missing: `head`'s term, or the
    /// term a holder's snapshot was taken at.
    public private(set) var wholeThroughTerm: UInt32
    /// A snapshot vouched for `head`, or the chain began at the shard's first write.
    private var proven: Bool
    private var broken = false

    /// Nothing proven yet: the replay of a log with no snapshot head for the shard.
    public init() {
        head = .zero
        wholeThroughTerm = 0
        proven = false
    }

    /// `provenThrough`: the head a snapshot kept for the shard (its chain was
    /// whole through it; `.zero` for a holder's copy no write had reached).
    /// `heldTerm`: the term this node held the shard at when the snapshot
    /// began (0 when it did not hold it).
    public init(provenThrough: EntryVersion, heldTerm: UInt32 = 0) {
        head = provenThrough
        wholeThroughTerm = max(provenThrough.term, heldTerm)
        proven = true
    }

    /// One logged write, in log order.
    public mutating func logged(_ version: EntryVersion) {
        guard !broken else { return }
        if head != .zero && version.term == head.term && version.seq <= head.seq { return }
        // The same term, or up to the one after the last term no write is
        // missing from: each a term this node wrote at or held.
        let continuesTerms = version.term >= head.term && UInt64(version.term) <= UInt64(wholeThroughTerm) + 1
        if version.seq == head.seq + 1 && (head == .zero || continuesTerms) {
            head = version
            wholeThroughTerm = max(wholeThroughTerm, version.term)
            proven = true
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
    public var isWhole: Bool { !broken && proven }

    /// Something may be missing: not merely nothing logged yet.
    public var isBroken: Bool { broken }
}
