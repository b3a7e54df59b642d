import AegisCluster

/// The hand-offs of shard leases this node runs as their holder (the
/// machine's side is LeaseMachine+HandOff.swift; docs/shard-movement.md §4).
/// A hand-off goes:
///
/// 1. started (preparing): the machine sent the target `handOffPrepare`;
///    the target persists the next term and asks the voters, this node
///    among them, which prepare their votes. Writes go on.
/// 2. frozen: once this node's own vote is prepared (or it waited
///    `LeaseDriver.prepareWaitMs`), the lease set published next freezes
///    the shard (`ShardLeases.handingOff`): its owning reactor refuses the
///    shard's writes from the moment it installs that set, and says so with
///    a `.shardFrozen` record behind the records of every write it made
///    before;
/// 3. the loop read that record, so the shard's replication progress covers
///    every write; the staged records leave at once;
/// 4. once the target acknowledged every one of them, the machine releases
///    the lease (LeaseDriver.stepLeaving), and the prepared votes become
///    grants: no term is written between the freeze and the target's win.
///    Or aborted (the target is not caught up in time, or this node is out
///    of time): the shard thaws and this node keeps its lease.
///
/// The writes of the shard are refused (TRYAGAIN, "being handed to another
/// node") from the freeze to the release; from then on this node routes them
/// to the target once it knows the target holds the lease. The span from the
/// freeze to the release is the pause `aegis_lease_hand_off_pause_seconds` counts.
///
/// Confined to the cluster loop's thread, inside LeaseDriver.
struct LeaseHandOffs {
    struct HandOff: Equatable {
        var target: NodeID
        var startedMs: Int64
        /// When the freeze began (step 2); nil while preparing.
        var freezingSinceMs: Int64?
        /// The version of the first lease set published with the shard
        /// frozen; nil until it is published.
        var frozenInLeases: UInt64?
        /// When that set was published (monotonic ns): the pause starts.
        var frozenAtNs: Int64?
        /// When this loop read the owning reactor's marker that it installed
        /// that set (or a later one), monotonic ns.
        var reactorFrozeAtNs: Int64?
        var reactorFroze: Bool { reactorFrozeAtNs != nil }
    }

    enum Outcome: String, CaseIterable {
        /// The target holds every write; the lease was let go to it.
        case released
        /// Given up before the release; the shard stays here.
        case aborted
        /// The lease ended otherwise while handing off (lost, expired).
        case lost
    }

    /// Bounds, in ms, of the pause histogram: the aim is under one.
    static let pauseBucketsMs: [Double] = [0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1_000]

    private(set) var running: [Int: HandOff] = [:]
    private(set) var started = 0
    private(set) var ended: [Outcome: Int] = [:]
    /// Per bucket of `pauseBucketsMs`, then one for the rest: released hand-offs only.
    private(set) var pauseBuckets = Array(repeating: 0, count: LeaseHandOffs.pauseBucketsMs.count + 1)
    private(set) var pauseSumNs: Int64 = 0

    func freezes(_ shard: Int) -> Bool { running[shard]?.freezingSinceMs != nil }

    mutating func start(_ shard: Int, to target: NodeID, nowMs: Int64) {
        precondition(running[shard] == nil, "one hand-off of a shard at a time")
        running[shard] = HandOff(target: target, startedMs: nowMs)
        started += 1
    }

    /// The next lease set published freezes the shard.
    mutating func freeze(_ shard: Int, nowMs: Int64) {
        guard running[shard] != nil, running[shard]!.freezingSinceMs == nil else { return }
        running[shard]!.freezingSinceMs = nowMs
    }

    /// A lease set went out: the hand-offs frozen before it freeze in it.
    mutating func published(version: UInt64, nowNs: Int64) {
        for shard in running.keys where running[shard]!.freezingSinceMs != nil && running[shard]!.frozenInLeases == nil {
            running[shard]!.frozenInLeases = version
            running[shard]!.frozenAtNs = nowNs
        }
    }

    /// The reactor owning `shard` installed lease set `leasesVersion` with
    /// the shard frozen. A marker from an earlier hand-off of the shard (its
    /// set is older than this one's) says nothing about this one.
    mutating func reactorFroze(_ shard: Int, leasesVersion: UInt64, nowNs: Int64) {
        guard let frozenIn = running[shard]?.frozenInLeases, leasesVersion >= frozenIn, !running[shard]!.reactorFroze else { return }
        running[shard]!.reactorFrozeAtNs = nowNs
    }

    /// A released hand-off's pause, and the part of it until this loop
    /// read the reactor's freeze marker (the rest is the flush and the
    /// target's acknowledgement): which side to speed up.
    struct Pause {
        var totalNs: Int64
        var untilFrozeNs: Int64
    }

    /// Ends the shard's hand-off; the pause counts only for a release, and
    /// is returned for it (nil for the others, or if never published).
    @discardableResult
    mutating func end(_ shard: Int, _ outcome: Outcome, nowNs: Int64) -> (target: NodeID, pause: Pause?)? {
        guard let handOff = running.removeValue(forKey: shard) else { return nil }
        ended[outcome, default: 0] += 1
        guard outcome == .released, let frozenAtNs = handOff.frozenAtNs else { return (handOff.target, nil) }
        let pauseNs = max(0, nowNs - frozenAtNs)
        let untilFrozeNs = max(0, (handOff.reactorFrozeAtNs ?? nowNs) - frozenAtNs)
        pauseSumNs += pauseNs
        let pauseMs = Double(pauseNs) / 1e6
        pauseBuckets[Self.pauseBucketsMs.firstIndex { pauseMs <= $0 } ?? Self.pauseBucketsMs.count] += 1
        return (handOff.target, Pause(totalNs: pauseNs, untilFrozeNs: untilFrozeNs))
    }
}
