import AegisCluster
import AegisProtocol
import AegisStore

/// A reactor's replication state (issue 12, W = 0). As a primary it sends
/// each write of a shard that has followers to the cluster loop as one WAL
/// record (the log's codec: one codec for the log, snapshots and
/// replication), with the version the shard held before it. As a follower
/// it applies the records the cluster loop hands it (`applyIfNewer`) in one
/// unbroken chain per shard, and acknowledges per shard, once per drain of
/// its rings, the newest version of that chain. Replicated
/// records are never written to this node's log (durability.md).
///
/// Confined to the reactor's thread.
struct ReplicaState {
    /// replication_factor > 1.
    let enabled: Bool
    /// Per shard, as a follower: the newest version of the primary's chain
    /// of records held here with none missing before it (`.zero` after a
    /// start: a restarted follower is sent everything again).
    var appliedThrough: [EntryVersion]
    /// Per shard, the peer (the cluster loop's number) its records came
    /// from since the last acknowledgement; nil when none came. An array by
    /// shard, not a dictionary: it is written once per replicated record.
    var pendingAckOrigin: [UInt16?]
    /// The shards whose `pendingAckOrigin` is set, in the order they got one.
    var pendingAckShards: [Int] = []
    /// The record being sent (reused).
    let record = WireBuffer()
    var recordsApplied = 0
    var recordsStale = 0
    var recordsMalformed = 0
    /// Records dropped because the one before them was not held here.
    var recordsPastGap = 0
    /// The shard (-1: none) and version the command just run wrote last,
    /// until its reply is delivered (it becomes the connection's last write, for WAIT).
    var justWroteShard = -1
    var justWroteVersion = EntryVersion.zero
    /// As a primary: the walks of the shard streams running from here.
    var walks: [ShardWalk] = []
    /// As a follower: per shard, the stream being received. Until its last
    /// slice the shard holds part of the primary's copy and no chain
    /// (`appliedThrough` is `.zero`).
    var incoming: [Int: IncomingStream] = [:]
    /// The slice being walked (reused).
    let slice = WireBuffer()
    /// When the next slice may be walked.
    var pacer = StreamSlicePacer()
    var streamWalksStarted = 0
    var streamsReceived = 0
    var streamSlicesRefused = 0

    init(enabled: Bool, shardCount: Int) {
        self.enabled = enabled
        appliedThrough = Array(repeating: .zero, count: shardCount)
        pendingAckOrigin = Array(repeating: nil, count: shardCount)
    }
}

extension Reactor {
    // MARK: - As a primary

    /// Whether a write to `shard` goes to followers: this node is its
    /// primary and the map gives it followers.
    @inline(__always) func replicates(_ shard: Int) -> Bool {
        replica.enabled && routes.isPrimaryHere(shard) && routes.hasFollowers(shard)
    }

    /// Sends the state of `key` after a write changed it, when its shard
    /// has followers and the log is off (with the log on, `replicateLogged`
    /// sends the log's bytes). `previous`: the shard's last write version
    /// before it.
    @inline(__always)
    func replicateKeyState(_ key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore, previous: EntryVersion) {
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        guard replicates(shard) else { return }
        let buffer = replica.record
        buffer.clear()
        appendKeyState(key, hash: hash, store: store, to: buffer)
        sendReplicated(buffer.readableView, shard: shard, previous: previous)
        buffer.clear()
        buffer.releaseIfIdle(keep: 1 << 20)
    }

    /// Sends a FLUSHALL of `shard` when it has followers and the log is off.
    func replicateFlush(shard: Int, previous: EntryVersion) {
        guard replicates(shard), let store = shards[shard] else { return }
        let buffer = replica.record
        buffer.clear()
        WALRecord.append(to: buffer, operation: .flushShard, shard: shard, version: store.lastWriteVersion, expiryMs: 0,
                         key: WALRecord.noBytes, value: WALRecord.noBytes)
        sendReplicated(buffer.readableView, shard: shard, previous: previous)
        buffer.clear()
    }

    /// Sends the record the log took last (from `start` of its filling
    /// buffer) when `shard` has followers: one codec, one encoding.
    @inline(__always)
    func replicateLogged(from start: Int, shard: Int, previous: EntryVersion) {
        guard replicates(shard), let wal = log.wal else { return }
        sendReplicated(UnsafeRawBufferPointer(rebasing: wal.filling.readableView[start...]), shard: shard, previous: previous)
    }

    private func sendReplicated(_ record: UnsafeRawBufferPointer, shard: Int, previous: EntryVersion) {
        var header = ReplicationWire.header(.replicate, shard: shard, payloadLength: record.count)
        header.replicatedPrevious = previous
        sendRecord(to: routes.clusterEndpoint, header: header, payload: record)
    }

    // MARK: - As a follower

    /// A primary's record for one of this reactor's shards. One past a gap
    /// (what it follows is not held here) is dropped unapplied and the held
    /// version acknowledged again, so the primary sends the gap first: a
    /// follower never holds a write without every write before it.
    func applyReplicated(_ header: ForwardHeader, record: UnsafeRawBufferPointer) {
        let shard = Int(header.route.shard)
        guard shard < shards.count, let store = shards[shard],
              case .record(let decoded, let length) = WALRecord.decode(record), length == record.count,
              decoded.shard == shard else {
            replica.recordsMalformed += 1
            return
        }
        if replica.pendingAckOrigin[shard] == nil { replica.pendingAckShards.append(shard) }
        replica.pendingAckOrigin[shard] = header.route.originNode
        if let incoming = replica.incoming[shard] {
            // The stream's primary is not the one replicating now (a
            // failover): what the stream brought is kept, and versions sort
            // it out against whatever chain the new primary sends.
            guard incoming.origin != header.route.originNode else {
                replica.recordsPastGap += 1
                return
            }
            replica.incoming[shard] = nil
        }
        guard header.replicatedPrevious <= replica.appliedThrough[shard] else {
            replica.recordsPastGap += 1
            return
        }
        let hash = KeyHash.hash(decoded.key)
        let changed: Bool
        switch decoded.operation {
        case .set:
            changed = store.applyIfNewer(decoded.key, hash: hash, .set(value: decoded.value, expiryMs: decoded.expiryMs),
                                         version: decoded.version, nowMs: now)
        case .delete:
            changed = store.applyIfNewer(decoded.key, hash: hash, .delete, version: decoded.version, nowMs: now)
        case .flushShard:
            changed = store.applyFlushIfNewer(version: decoded.version)
        case .snapshotEnd:
            replica.recordsMalformed += 1
            return
        }
        if changed {
            replica.recordsApplied += 1
            noteUnloggedChange(shard: shard)
        } else {
            replica.recordsStale += 1
        }
        if decoded.version > replica.appliedThrough[shard] { replica.appliedThrough[shard] = decoded.version }
    }

    /// One acknowledgement per shard that got records since the last call.
    func sendReplicaAcks() {
        guard !replica.pendingAckShards.isEmpty else { return }
        for shard in replica.pendingAckShards {
            guard let origin = replica.pendingAckOrigin[shard] else { continue }
            replica.pendingAckOrigin[shard] = nil
            var header = ReplicationWire.header(.replicaAck, shard: shard, payloadLength: ReplicationWire.versionBytes)
            header.route.originNode = origin
            ReplicationWire.encode(replica.appliedThrough[shard]).withUnsafeBytes {
                sendRecord(to: routes.clusterEndpoint, header: header, payload: $0)
            }
        }
        replica.pendingAckShards.removeAll(keepingCapacity: true)
    }
}
