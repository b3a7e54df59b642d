import AegisStore

/// One shard's replication as its primary sees it: the newest write made
/// here, and per follower what was sent to it and what it acknowledged.
/// From that come the version committed at a write quorum W (the primary
/// counts as one), the version every replica has (below which tombstones
/// can go), and each follower's lag.
///
/// Versions, not bare sequence numbers: an acknowledgement names the
/// (term, seq) the follower applied through, so one from an older term can
/// never be taken for a newer write's. Pure: the cluster loop feeds it.
///
/// Invariants (checked by `problems`):
/// - `acknowledged[i] <= sent[i] <= written` for every follower i;
/// - an ack beyond what was sent is refused and changes nothing; an ack
///   equal to the last one changes nothing either; an ack below it goes
///   backwards on purpose: a follower acknowledges what it holds in one
///   chain from the shard's start, so a lower one means it restarted and
///   lost the rest, and it must be sent again from there.
public struct ReplicationProgress: Sendable, Equatable {
    public enum Acknowledgement: Equatable, Sendable {
        /// Moved the follower's acknowledged version forward.
        case advanced
        /// Equal to what it had acknowledged: nothing changes. (A follower
        /// with a gap repeats its acknowledgement; the caller may send again
        /// from it with `cutOff`.)
        case duplicate
        /// Below what it had acknowledged: the follower lost data (a
        /// restart); acknowledged and sent go back to it.
        case behind
        /// Not a follower of this shard: refused.
        case unknownFollower
        /// Beyond what was sent to it: refused.
        case neverSent
    }

    public private(set) var followers: [NodeID]
    public private(set) var sent: [EntryVersion]
    public private(set) var acknowledged: [EntryVersion]
    /// The newest write of this shard made (and applied) on the primary.
    public private(set) var written: EntryVersion

    public init(followers: [NodeID], written: EntryVersion = .zero) {
        self.followers = followers
        self.sent = Array(repeating: .zero, count: followers.count)
        self.acknowledged = Array(repeating: .zero, count: followers.count)
        self.written = written
    }

    /// The primary applied a write: versions come in increasing order.
    public mutating func wrote(_ version: EntryVersion) {
        precondition(version > written, "a shard's writes get increasing versions")
        written = version
    }

    /// Records sent to `follower` through `version` (a batch left).
    public mutating func sent(_ version: EntryVersion, to follower: NodeID) {
        guard let i = followers.firstIndex(of: follower) else { return }
        sent(version, toFollowerAt: i)
    }

    /// `sent(_:to:)` for the follower at `index` in `followers`, without
    /// looking it up by name (per replicated record and follower).
    public mutating func sent(_ version: EntryVersion, toFollowerAt index: Int) {
        precondition(version <= written, "cannot send what was not written")
        if version > sent[index] { sent[index] = version }
    }

    /// The link to `follower` was cut (slow, broken): what it had not
    /// acknowledged is sent again once it is back.
    public mutating func cutOff(_ follower: NodeID) {
        guard let i = followers.firstIndex(of: follower) else { return }
        sent[i] = acknowledged[i]
    }

    public mutating func acknowledge(_ version: EntryVersion, from follower: NodeID) -> Acknowledgement {
        guard let i = followers.firstIndex(of: follower) else { return .unknownFollower }
        if version > sent[i] { return .neverSent }
        if version == acknowledged[i] { return .duplicate }
        if version < acknowledged[i] {
            acknowledged[i] = version
            sent[i] = version
            return .behind
        }
        acknowledged[i] = version
        return .advanced
    }

    /// Writes this node made or applied before it kept this bookkeeping,
    /// through `previous`: it became the shard's primary after following
    /// it. Followers that were sent everything are presumed to hold those
    /// writes too (they followed the same primary), so sending resumes at
    /// once instead of from `.zero`, which no tail reaches. The presumption
    /// moves only `sent`, never `acknowledged`: a follower that does not
    /// hold `previous` drops what follows it and repeats its
    /// acknowledgement, and is sent again from what it holds (`cutOff`).
    ///
    /// `presuming` narrows the presumption to the followers it names: one
    /// it does not (a node that did not follow the same primary, as the
    /// replacement for a dead replica) starts from nothing and is streamed
    /// the shard, since it will never say that it lacks the writes.
    public mutating func resume(after previous: EntryVersion, presuming: (NodeID) -> Bool = { _ in true }) {
        guard previous > written else { return }
        for i in sent.indices where sent[i] == written && presuming(followers[i]) { sent[i] = previous }
        written = previous
    }

    /// A shard stream to `follower` ended: it holds the shard as of
    /// `start` (the version the primary's shard held when its walk began),
    /// and replication goes on from there. Its sent and acknowledged
    /// versions become `start` whatever they were (the stream replaced its
    /// copy). A `start` above `written` (a version the shard held that no
    /// record brought here, e.g. one adopted while it followed) becomes
    /// `written`: the primary's next write follows it.
    public mutating func streamed(_ start: EntryVersion, to follower: NodeID) {
        guard let i = followers.firstIndex(of: follower) else { return }
        if start > written { resume(after: start) }
        sent[i] = start
        acknowledged[i] = start
    }

    /// The shard's newest write is `newest` and no more: a stream's walk
    /// began there and nothing was written since (the primary's tail is
    /// empty), while `written` came from a presumption (`resume`, from what
    /// the node reported of its copy) that went above it. Nothing above
    /// `newest` exists to send, so every follower presumed or sent past it
    /// is brought back to it. Without this, a follower streamed to
    /// `newest` is behind `written` for ever, and is streamed again and
    /// again (runbook/run, after a full cluster recovery: 356,481 streams
    /// of one shard in three minutes).
    public mutating func settle(atMost newest: EntryVersion) {
        guard newest < written else { return }
        written = newest
        for i in sent.indices {
            sent[i] = min(sent[i], newest)
            acknowledged[i] = min(acknowledged[i], newest)
        }
    }

    /// The shard map changed: followers that stay keep their progress, new
    /// ones start from nothing and are caught up from the tail (a node back
    /// from a restart sends no acknowledgement until it is sent something,
    /// so it cannot be presumed anywhere), or need the shard streamed.
    public mutating func setFollowers(_ newFollowers: [NodeID]) {
        var newSent: [EntryVersion] = []
        var newAcknowledged: [EntryVersion] = []
        for follower in newFollowers {
            let i = followers.firstIndex(of: follower)
            newSent.append(i.map { sent[$0] } ?? .zero)
            newAcknowledged.append(i.map { acknowledged[$0] } ?? .zero)
        }
        followers = newFollowers
        sent = newSent
        acknowledged = newAcknowledged
    }

    /// Whether `writeQuorum` replicas exist at all for this shard; when not,
    /// a write waiting for them can only time out, so it is refused at once.
    public func canReach(writeQuorum: Int) -> Bool { writeQuorum <= followers.count + 1 }

    /// The newest version held by at least `writeQuorum` replicas, the
    /// primary counted: W = 0 and 1 are the primary's own writes. `.zero`
    /// when W replicas do not exist.
    public func committed(writeQuorum: Int) -> EntryVersion {
        if writeQuorum <= 1 { return written }
        guard canReach(writeQuorum: writeQuorum) else { return .zero }
        let held = ([written] + acknowledged).sorted(by: >)
        return held[writeQuorum - 1]
    }

    /// For k = 2 ... followers + 1, the newest version at least k replicas
    /// hold (the primary counted), at index k - 2: `committed(writeQuorum: k)`
    /// for every k at once. Empty without followers. The last element is
    /// `acknowledgedByAll`.
    public var heldByAtLeast: [EntryVersion] {
        guard !followers.isEmpty else { return [] }
        return Array(([written] + acknowledged).sorted(by: >).dropFirst())
    }

    /// The newest version every replica holds: tombstones at or below it
    /// protect nothing any more.
    public var acknowledgedByAll: EntryVersion {
        acknowledged.min().map { Swift.min($0, written) } ?? written
    }

    /// Writes `follower` has not acknowledged, counted by sequence numbers
    /// (within a term a shard's writes take consecutive ones); nil when it
    /// is not a follower.
    public func lagRecords(_ follower: NodeID) -> UInt64? {
        guard let i = followers.firstIndex(of: follower) else { return nil }
        let acked = acknowledged[i]
        if acked >= written { return 0 }
        return written.seq > acked.seq ? written.seq - acked.seq : 1
    }

    /// Every violated invariant, described; empty when all hold.
    public var problems: [String] {
        var found: [String] = []
        if sent.count != followers.count || acknowledged.count != followers.count { found.append("array sizes differ") }
        for (i, follower) in followers.enumerated() where i < sent.count && i < acknowledged.count {
            if acknowledged[i] > sent[i] { found.append("\(follower) acknowledged \(acknowledged[i]) beyond sent \(sent[i])") }
            if sent[i] > written { found.append("\(follower) sent \(sent[i]) beyond written \(written)") }
        }
        return found
    }
}
