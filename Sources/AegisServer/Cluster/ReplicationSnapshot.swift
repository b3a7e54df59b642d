/// Replication as /metrics and /cluster show it: this node's side as a
/// primary (records and bytes sent, acknowledgements, cut-offs, followers
/// that need a stream) and the lag of each follower of each shard.
public struct ReplicationSnapshot: Sendable, Equatable {
    public struct Lag: Sendable, Equatable {
        public var shard: Int
        public var follower: String
        /// Writes the follower has not acknowledged.
        public var records: UInt64
        /// Since the oldest write it has not acknowledged was made (0 when none, or when the tail no longer holds it).
        public var ms: Int64
    }

    public var recordsSent = 0
    public var bytesSent = 0
    public var recordsReceived = 0
    public var acksReceived = 0
    public var acksRefused = 0
    /// Records and stream slices refused: their sender is not the shard's lease holder as this node knows it.
    public var refusedNotHolder = 0
    public var followerResets = 0
    /// As a follower: acknowledgements repeated to holders (FollowerChains).
    public var catchUpReminders = 0
    public var cutOffs = 0
    public var streamsNeeded = 0
    public var streamsStarted = 0
    public var streamsFinished = 0
    public var streamsAborted = 0
    public var streamsRunning = 0
    public var streamBytes = 0
    public var malformed = 0
    public var batchesFull = 0
    public var batchesTimedOut = 0
    /// Shards this node is primary for that have followers.
    public var replicatedShards = 0
    public var lags: [Lag] = []

    public init() {}

    init(_ relay: ReplicationRelay, nowMs: Int64) {
        let c = relay.counters
        recordsSent = c.recordsSent
        bytesSent = c.bytesSent
        recordsReceived = c.recordsReceived
        acksReceived = c.acksReceived
        acksRefused = c.acksRefused
        refusedNotHolder = c.refusedNotHolder
        followerResets = c.followerResets
        catchUpReminders = relay.follower.reminders
        cutOffs = c.cutOffs
        streamsNeeded = c.streamsNeeded
        streamsStarted = c.streamsStarted
        streamsFinished = c.streamsFinished
        streamsAborted = c.streamsAborted
        streamsRunning = relay.streams.running.count
        streamBytes = c.streamBytes
        malformed = c.malformed
        batchesFull = c.batchesFull
        batchesTimedOut = c.batchesTimedOut
        replicatedShards = relay.replicatedShards
        lags = relay.lags(nowMs: nowMs).map { Lag(shard: $0.shard, follower: $0.follower, records: $0.records, ms: $0.ms) }
    }

    /// Per follower over every shard: the records it lacks and its worst lag in ms.
    public var lagByFollower: [(follower: String, records: UInt64, ms: Int64)] {
        var records: [String: UInt64] = [:]
        var ms: [String: Int64] = [:]
        for lag in lags {
            records[lag.follower, default: 0] += lag.records
            ms[lag.follower] = max(ms[lag.follower] ?? 0, lag.ms)
        }
        return records.keys.sorted().map { ($0, records[$0]!, ms[$0]!) }
    }
}
