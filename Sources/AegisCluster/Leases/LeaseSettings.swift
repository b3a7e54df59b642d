/// What one node's lease machine needs to know. All durations are
/// milliseconds of the node's own monotonic clock.
public struct LeaseSettings: Sendable, Equatable {
    public var nodeID: NodeID
    /// How long a lease lasts, counted by the holder from the moment it sent
    /// the request that a majority granted.
    public var leaseDurationMs: Int64
    /// How often the node renews the leases it holds and considers the ones
    /// it could campaign for: one batched request per peer per tick. Renewing
    /// every tick means a lease survives `leaseDurationMs / tickIntervalMs - 1`
    /// lost rounds in a row.
    public var tickIntervalMs: Int64
    /// A replica that is not the preferred candidate campaigns only after no
    /// grant of its own has been live for this long (times its rank among the
    /// shard's live replicas), so the preferred one normally wins uncontested.
    public var electionTimeoutMs: Int64
    /// The largest rate at which any node's clock may run fast or slow against
    /// real time, in parts per million (a bound on drift, not on offset: the
    /// clocks' readings are never compared between nodes). The granting margin
    /// is derived from it (`marginMs`).
    public var clockDriftBoundPPM: Int64
    /// Must match on every node: the lease codec refuses a peer whose
    /// parameters differ, as membership does.
    public var parameters: ClusterParameters

    public init(nodeID: NodeID, leaseDurationMs: Int64 = 4000, tickIntervalMs: Int64 = 1000,
                electionTimeoutMs: Int64 = 4000, clockDriftBoundPPM: Int64 = 20_000,
                parameters: ClusterParameters) {
        self.nodeID = nodeID
        self.leaseDurationMs = leaseDurationMs
        self.tickIntervalMs = tickIntervalMs
        self.electionTimeoutMs = electionTimeoutMs
        self.clockDriftBoundPPM = clockDriftBoundPPM
        self.parameters = parameters
    }

    /// How much longer than a lease of `durationMs` a granter keeps its
    /// promise, on its own clock. With every clock's rate within ρ of real
    /// time, the holder's `d` ms last at most d/(1−ρ) real ms and the
    /// granter's d + m ms at least (d + m)/(1+ρ); the promise outlives the
    /// lease when m ≥ d·2ρ/(1−ρ). Rounded up, plus 1 ms for the rounding of
    /// clock readings. With ρ = 2% that is 4.1% of the lease (164 ms of 4 s).
    public func marginMs(for durationMs: Int64) -> Int64 {
        Self.marginMs(for: durationMs, clockDriftBoundPPM: clockDriftBoundPPM)
    }

    public static func marginMs(for durationMs: Int64, clockDriftBoundPPM: Int64) -> Int64 {
        let denominator = 1_000_000 - clockDriftBoundPPM
        return (durationMs * 2 * clockDriftBoundPPM + denominator - 1) / denominator + 1
    }

    /// How long a node that restarted with its terms (not wiped) waits before
    /// it campaigns for any shard. Its copy of a shard is what its log
    /// replayed: the writes it made as holder, not those it received as a
    /// follower (followers log none), yet its newest (term, seq) claims
    /// everything below. Campaigning at once, it could win (its claim is as
    /// new as any) and stream that holed copy over replicas that hold the
    /// missing writes. Standing back lets a replica that stayed up win
    /// first: its promise to the old holder ends within one lease plus
    /// margin of the crash, its rank wait is at most `replicationFactor`
    /// election timeouts, and a campaign that fails (voters still
    /// restarting) backs off at most two leases. Only when no such replica
    /// wins (the whole replica set restarted) does the restarted node go on
    /// to campaign with what it has.
    public var restartStandBackMs: Int64 {
        let quiet = leaseDurationMs + marginMs(for: leaseDurationMs)
        return quiet + 2 * leaseDurationMs + Int64(parameters.replicationFactor) * electionTimeoutMs
    }

    /// nil when the settings can run; otherwise why not.
    public var problem: String? {
        if leaseDurationMs <= 0 || leaseDurationMs > Int64(UInt32.max) { return "lease duration must be between 1 ms and 2^32 - 1 ms" }
        if tickIntervalMs <= 0 { return "the lease tick must be positive" }
        if tickIntervalMs * 2 > leaseDurationMs { return "the lease tick must be at most half the lease duration, so a lease is renewed well before it ends" }
        if electionTimeoutMs <= 0 { return "the election timeout must be positive" }
        if clockDriftBoundPPM < 0 || clockDriftBoundPPM >= 500_000 { return "the clock drift bound must be in 0..<500000 ppm" }
        return nil
    }
}

/// What the node had written to `data_dir` for one shard before it stopped:
/// the highest term it acted on and whom it voted for in that term (Raft's
/// currentTerm and votedFor). Given back at start so that terms never go
/// backwards and no vote is cast twice in one term across a restart.
/// `config` is the shard's replica set as of that term, once shard
/// movement sets one (nil: none yet, the replica set comes from the map).
public struct PersistedTerm: Sendable, Equatable {
    public var term: UInt32
    public var votedFor: NodeID?
    public var config: ShardConfig?

    public init(term: UInt32, votedFor: NodeID?, config: ShardConfig? = nil) {
        self.term = term
        self.votedFor = votedFor
        self.config = config
    }
}
