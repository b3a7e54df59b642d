import AegisStore

/// This node as a follower: per shard, the newest version of the holder's
/// chain its reactor acknowledged in this process life, and when the
/// reactor last acknowledged anything of the shard (records or stream
/// slices).
///
/// A holder brings a follower up to date only when the follower tells it
/// what it lacks, and a follower tells it only when records arrive: one
/// that restarted (it holds nothing of what it followed, its log keeps
/// only its own writes) into a shard that gets no writes would stay empty
/// while its holder counts it as holding everything it acknowledged before
/// the restart. The holder's renewals say what it holds (`LeaseAsk`'s
/// version), so a follower that knows it is behind and hears nothing
/// repeats its acknowledgement to the holder (`shouldRemind`), which sends
/// the tail or streams the shard, as for a follower that found a gap.
///
/// Confined to the cluster loop's thread.
struct FollowerChains {
    /// Per shard, the version the reactor last acknowledged (`.zero`: none
    /// in this life, which is what a restarted follower holds of the chain).
    private(set) var acknowledged: [EntryVersion]
    /// Per shard, when the reactor last acknowledged anything of it or a
    /// reminder went, whichever came later: the quiet a reminder waits for
    /// counts from it.
    private var lastActivityNs: [Int64]
    /// Acknowledgements repeated to a holder because nothing came.
    private(set) var reminders = 0

    /// How long a follower that is behind waits for records or slices
    /// before it reminds the holder, and between reminders: a holder renews
    /// every tick (1 s), and its catch-up turn runs every 50 ms, so one
    /// second keeps a reminder from racing records already on their way.
    static let quietNs: Int64 = 1_000_000_000

    init(shardCount: Int) {
        acknowledged = Array(repeating: .zero, count: shardCount)
        // Long enough ago that the first review may remind at once (and no
        // subtraction from it overflows).
        lastActivityNs = Array(repeating: -Self.quietNs, count: shardCount)
    }

    /// The reactor acknowledged `version` as the newest of its chain (which
    /// may be below what it acknowledged before: a stream replaced its copy).
    mutating func reactorAcknowledged(shard: Int, _ version: EntryVersion, nowNs: Int64) {
        guard acknowledged.indices.contains(shard) else { return }
        acknowledged[shard] = version
        lastActivityNs[shard] = nowNs
    }

    /// The reactor applied a slice of a stream of the shard; the last one
    /// leaves it holding the chain through `completedAt`.
    mutating func streamSliceApplied(shard: Int, completedAt: EntryVersion?, nowNs: Int64) {
        guard acknowledged.indices.contains(shard) else { return }
        if let completedAt { acknowledged[shard] = completedAt }
        lastActivityNs[shard] = nowNs
    }

    /// Whether to repeat the shard's acknowledgement to its holder now: the
    /// chain here is below `claim` (what the holder said it holds) and
    /// nothing of the shard came for `quietNs`, nor was a reminder sent.
    mutating func shouldRemind(shard: Int, claim: EntryVersion, nowNs: Int64) -> Bool {
        guard acknowledged.indices.contains(shard), acknowledged[shard] < claim,
              nowNs - lastActivityNs[shard] >= Self.quietNs else { return false }
        lastActivityNs[shard] = nowNs
        reminders += 1
        return true
    }
}
