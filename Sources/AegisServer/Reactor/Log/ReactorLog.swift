import AegisCluster
import AegisProtocol

/// The reactor's write-ahead log state (Reactor+Log.swift drives it): the
/// writer, the replies and undo records each batch owes until it is
/// durable, and the snapshot in progress. Absent entirely (`wal` nil) when
/// wal_mode is off.
///
/// Invariants:
/// - `holdsInFlight` is in step with the writer's batches in flight,
///   oldest first: one hold per submitted batch, released when that batch
///   completes or fails;
/// - `holding` is the hold of the batch being filled; it owes nothing
///   while `wal.filling` is empty;
/// - `replyAwaitsLog` is set only between a command appending a record and
///   the delivery of its reply, which clears it.
///
/// Confined to its reactor's thread, like the writer.
struct ReactorLog {
    var wal: WALWriter?
    /// Set when the command just executed appended a log record: its reply
    /// must be held until that record is durable. Cleared by whoever
    /// delivers the reply.
    var replyAwaitsLog = false
    /// What the batch being filled owes until it is durable, and the same
    /// for each batch in flight (oldest first, in step with the log's).
    var holding = BatchHold()
    var holdsInFlight: [BatchHold] = []
    var spareHolds: [BatchHold] = []
    /// Reused for the writer's completion events.
    var events: [WALWriter.Event] = []
    /// When to next probe a failed disk.
    var nextProbeMs: Int64 = 0
    var snapshot = SnapshotProgress()
    /// Per shard, the chain of writes logged since the shard's first (from
    /// the replay on): what a snapshot keeps as proven heads, so that a
    /// replay after it can still prove the copy whole (`ReplayedCopy`).
    /// Broken by any change to the shard that is not logged.
    var chains: [ReplayedCopy] = []
    /// Per shard, true when the copy changed in a way the log does not hold
    /// since the last snapshot started (which writes every copy): a shard
    /// won so needs one (`snapshotAfterWinning`). Unlike a broken chain,
    /// a snapshot clears it, so a holder re-terming does not ask again.
    var unloggedSinceSnapshot: [Bool] = []
}

/// Where the running snapshot is, and when the next one may start.
struct SnapshotProgress {
    var nextAttemptMs: Int64 = 0
    /// Operator requests for a snapshot (NodeContext.walTruncateRequests) seen so far.
    var requestsSeen = 0
    /// The operator request the running snapshot answers (0 = none).
    var servesRequest = 0
    var wanted = false
    /// A shard was won whose copy the log does not prove (`snapshotAfterWinning`)
    /// and no snapshot started since: a stop writes one before the process
    /// exits, or a full recovery could elect a copy without the writes
    /// acknowledged under earlier holders.
    var owedForWins = false
    /// The running snapshot is the one owed for wins.
    var runningForWins = false
    /// The stop's wait for it was logged (once per process).
    var toldStopWaits = false
    /// Position of the scan: an index into the owned shards, and the cursor within it.
    var shardPosition = 0
    var cursor: UInt64 = 0
}

/// What one batch of the log owes until it is durable: the replies held
/// for it, and the state its writes replaced (to undo them if it fails).
final class BatchHold {
    let replies = WireBuffer()
    let undo = WireBuffer()
}
