import AegisCluster

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

    /// One shard moving to or from this node: `state` is streaming (sent
    /// from here), receiving (to here), or catching_up (streamed from here,
    /// the follower not yet holding every write made since).
    public struct Move: Sendable, Equatable {
        public var shard: Int
        public var peer: String
        public var state: String
        public var bytes: Int
        public var slicesDone: Int
        public var ms: Int64
    }

    public var recordsSent = 0
    public var bytesSent = 0
    public var recordsReceived = 0
    public var acksReceived = 0
    public var acksRefused = 0
    /// Read probes sent again to another replica: the link to the one
    /// asked first broke before it answered.
    public var readProbesAskedAgain = 0
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
    /// As a follower: bytes of replicated records and stream slices taken.
    public var bytesReceived = 0
    public var streamBytesReceived = 0
    public var streamsReceived = 0
    public var streamsReceivedAbandoned = 0
    public var streamsReceiving = 0
    /// Shard streams running either way, and their rate since the moves
    /// running now began (0 when none runs).
    public var shardsMoving = 0
    public var moveRateBytesPerSecond = 0
    public var moves: [Move] = []

    public init() {}

    init(_ relay: ReplicationRelay, nowMs: Int64) {
        let c = relay.counters
        recordsSent = c.recordsSent
        bytesSent = c.bytesSent
        recordsReceived = c.recordsReceived
        acksReceived = c.acksReceived
        acksRefused = c.acksRefused
        readProbesAskedAgain = c.readProbesAskedAgain
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
        let incoming = relay.incoming
        bytesReceived = relay.bytesReceived
        streamBytesReceived = incoming.bytes
        streamsReceived = incoming.finished
        streamsReceivedAbandoned = incoming.abandoned
        streamsReceiving = incoming.running.count
        shardsMoving = relay.movesRunning
        if let soFar = relay.movesSoFar(nowMs: nowMs), relay.movesRunning > 0 {
            moveRateBytesPerSecond = TransferRate.bytesPerSecond(soFar.bytes, ms: soFar.ms)
        }
        moves = relay.streams.running.values.map { stream in
            Move(shard: stream.shard, peer: stream.follower.name, state: "streaming", bytes: stream.bytes,
                 slicesDone: Int(stream.acknowledged), ms: nowMs - stream.startedMs)
        } + incoming.running.values.map { stream in
            Move(shard: stream.shard, peer: stream.from, state: "receiving", bytes: stream.bytes,
                 slicesDone: stream.slicesApplied, ms: nowMs - stream.startedMs)
        } + relay.catchingUp.map { need, sinceMs in
            Move(shard: need.shard, peer: need.follower, state: "catching_up", bytes: 0, slicesDone: 0, ms: nowMs - sinceMs)
        }
        moves.sort { ($0.shard, $0.peer, $0.state) < ($1.shard, $1.peer, $1.state) }
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
