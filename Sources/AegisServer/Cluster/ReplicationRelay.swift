import AegisCluster
import AegisStore

/// Payloads of replication acknowledgements (one version, little-endian
/// u32 term then u64 seq) and of replica progress (versions in a row).
enum ReplicationWire {
    static let versionBytes = 12

    static func encode(_ version: EntryVersion) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: versionBytes)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: version.term.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: version.seq.littleEndian, toByteOffset: 4, as: UInt64.self)
        }
        return bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) -> EntryVersion? {
        guard bytes.count == versionBytes else { return nil }
        return EntryVersion(term: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                            seq: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt64.self)))
    }

    /// A `.replicaProgress` payload: versions one after another, the first
    /// held by at least 2 replicas, the next by at least 3, ...
    static func encodeHeld(_ versions: [EntryVersion]) -> [UInt8] { versions.flatMap(encode) }

    /// nil when the payload is not a whole number of versions, or is empty.
    static func decodeHeld(_ bytes: UnsafeRawBufferPointer) -> [EntryVersion]? {
        guard !bytes.isEmpty, bytes.count % versionBytes == 0 else { return nil }
        return stride(from: 0, to: bytes.count, by: versionBytes).map {
            decode(UnsafeRawBufferPointer(rebasing: bytes[$0..<$0 + versionBytes]))!
        }
    }

    /// The header of a record that travels through the rings and the peer batches.
    static func header(_ kind: ForwardHeader.Kind, shard: Int, payloadLength: Int) -> ForwardHeader {
        ForwardHeader(kind: kind, wire: .resp2, connectionIndex: 0, connectionGeneration: 0, slotSequence: 0,
                      payloadLength: payloadLength,
                      route: ForwardRoute(originNode: ForwardingRelay.localOrigin, originReactor: 0, shard: UInt32(shard)))
    }
}

/// The cluster loop's half of replication (issue 12, W = 0): a primary's
/// writes come from its reactors' rings, go to each follower in the
/// forwarding relay's per-peer batch frames on the bulk lane, and the
/// followers' acknowledgements come back the same way.
///
/// Sender per peer, not per follower: a node follows many shards of one
/// primary, and the per-peer batch of `ForwardingRelay` already gathers,
/// per loop iteration, everything bound for one node into one frame. One
/// frame per peer per iteration carries every shard's records (and the
/// forwarded requests), so a node pays one write per peer, not one per
/// (shard, follower). Order per shard holds because a shard's records come
/// from one reactor's ring in order and one TCP connection carries them.
///
/// Per shard this node is primary for (with followers in the map) it keeps
/// a `ReplicationProgress` and a `RecentWrites` tail. A record goes out at
/// once to each follower that has been sent everything before it (its
/// `previous`); a follower behind (cut off, new, restarted, or repeating an
/// acknowledgement because it found a gap) is sent the tail after what it
/// acknowledged, at most every `catchUpIntervalNs`, in slices. A follower
/// whose missing records left the tail gets the shard streamed (`streams`,
/// `ShardStreams`): the shard's reactor walks it in slices this loop asks
/// for, a few at a time, and passes on to the follower's bulk lane; the
/// follower acknowledges each slice, and after the last one replication
/// goes on from the version the walk started at.
///
/// Memory: per replicated shard at most `tailRecordsMax` records and
/// `tailBytesMax` bytes (one larger record is kept alone); per stream at
/// most `ShardStreams.windowSlices` slices in flight. A slow follower
/// costs nothing more here: its link's outbound queue is bounded
/// (PeerConnection), overflowing it closes the link, which cuts the
/// follower off (`cutOffs`, and its streams end) until the catch-up sends
/// it the tail again (or a new stream).
///
/// Confined to the cluster loop's thread.
final class ReplicationRelay {
    /// replication_tail_records: records per shard kept for catching up.
    var tailRecordsMax = 1_024
    static let tailBytesMax = 256 << 10
    static let catchUpIntervalNs: Int64 = 50_000_000
    static let catchUpRecordsPerTurn = 512

    struct Counters: Equatable {
        var recordsSent = 0
        var bytesSent = 0
        var recordsFromReactors = 0
        var recordsReceived = 0
        var acksReceived = 0
        var acksRefused = 0
        var followerResets = 0
        var cutOffs = 0
        var streamsNeeded = 0
        var streamsStarted = 0
        var streamsFinished = 0
        var streamsAborted = 0
        var streamSlices = 0
        var streamBytes = 0
        /// Bytes of replicated records taken as a follower (stream slices are
        /// in `incoming`): with them, what a refill received.
        var recordBytesReceived = 0
        var malformed = 0
        /// Records and stream slices refused because their sender is not the
        /// shard's lease holder as this node knows it.
        var refusedNotHolder = 0
        /// Batches of new records moved to a follower's frame because they
        /// reached replication_batch_size, or because the oldest waited
        /// replication_batch_timeout (or the timeout is 0s).
        var batchesFull = 0
        var batchesTimedOut = 0
        /// Followers asked for a key's state by reads at read_quorum >= 2, and
        /// the repairs sent to followers those reads found stale.
        var readProbesSent = 0
        /// Probes sent again to another replica because the link to the
        /// one asked first broke before it answered.
        var readProbesAskedAgain = 0
        var readRepairsSent = 0
    }

    /// replication_batch_size and replication_batch_timeout: new records for
    /// a follower wait here until `batchRecordsMax` of them are staged or the
    /// oldest has waited `batchTimeoutNs`, then join the peer's frame, which
    /// leaves at the end of that loop iteration. 0 ns: at the end of the
    /// iteration that staged them, as if there were no staging.
    var batchRecordsMax = 128
    var batchTimeoutNs: Int64 = 0

    /// New records for one follower, framed as its batch frame carries them
    /// (length, header, record), so that moving them to the frame is one
    /// copy, not a header, an append and a retain/release per record.
    private struct StagedBatch {
        var framed: [UInt8] = []
        var records = 0
        var recordBytes = 0
        var oldestNs: Int64 = 0
    }
    /// Indexed by peer number: new records not in the follower's frame yet,
    /// in the order they were written (per shard, version order).
    private var staged: [StagedBatch] = []
    /// The peers with records in `staged`, so the loop's per-pass checks
    /// visit only those.
    private var stagedPeers: [UInt16] = []
    /// Per shard, the peer number of each of `progress[shard].followers`
    /// (nil while its address is unknown): resolved when the map or the
    /// addresses change, not by two string-keyed lookups per record and follower.
    /// Empty exactly where `progress` and `tails` are nil: `mapChanged`, the
    /// only place that sets or clears those, resolves these after.
    private var followerPeers: [[UInt16?]]
    /// Scratch for `fromReactor`: the followers a record goes to at once.
    private var sendingTo: [Int] = []

    /// One follower's lag as /cluster and the metrics show it.
    struct Lag: Equatable {
        var shard: Int
        var follower: String
        var records: UInt64
        var ms: Int64
    }

    private unowned let forwarding: ForwardingRelay
    private let shardOwner: [Int]
    private(set) var counters = Counters()
    /// Per shard (indexed by shard number), nil where this node is not a
    /// primary with followers. Arrays, mutated in place: a record on its way
    /// to followers costs no hashing and no copy of a shard's bookkeeping.
    private var progress: [ReplicationProgress?]
    /// The shards whose `progress` is not nil, kept by `mapChanged` (the
    /// only place that sets or clears one): the loop asks
    /// `anyFollowerBehind` on every pass, and a scan of every shard cost a
    /// node that replicates nothing 1% of its forwarding CPU.
    private var shardsWithFollowers: [Int] = []
    private var tails: [RecentWrites?]
    /// Per shard, what the shard's reactor was last told of how far its
    /// replicas hold it (`heldBy`).
    private var told: [[EntryVersion]]
    private var lastCatchUpNs: Int64 = 0
    /// Shard streams to followers: 16 slices of about 16 KiB in flight per
    /// stream (256 KiB: about one loopback round trip's worth at the rates
    /// measured in perf/README.md; the reactor paces the slices, so a larger
    /// window is no burst), 4 streams at once, given up after 10 s without a
    /// slice made or applied.
    private(set) var streams = ShardStreams(windowSlices: 16, concurrentMax: 4, stallMs: 10_000)
    /// (shard, follower) pairs already counted as needing a stream.
    private var streamNoted: Set<StreamNeed> = []
    /// As a follower: the shard streams arriving here.
    private(set) var incoming = IncomingShardStreams(stallMs: 10_000)
    /// (shard, follower) pairs streamed from here whose follower has not yet
    /// acknowledged every write since (the move's catching-up step), with
    /// when the stream ended (monotonic ms).
    private(set) var catchingUp: [StreamNeed: Int64] = [:]
    /// The moves through this node since the last time none ran, for the
    /// summary line once they end.
    private var burst: MoveBurst?
    struct StreamNeed: Hashable {
        var shard: Int
        var follower: String
    }
    private struct MoveBurst {
        var startedMs: Int64
        /// The last time a stream ran or ended.
        var activeMs: Int64
        var bytesSentBefore: Int
        var bytesReceivedBefore: Int
        var sentBefore: Int
        var receivedBefore: Int
    }
    /// Set by the loop: one notice-level line (rate-limited by the caller's use).
    var log: ((String) -> Void)?
    /// Set by the loop with leases: whether this node may resend a shard's
    /// records or stream it now (it holds the shard's lease).
    var maySend: ((Int) -> Bool)?
    /// Set by the loop with leases: the nodes that may be presumed to hold
    /// a shard's writes when this node takes it over (the voters of its
    /// lease). Without it every follower is.
    var presumedToHold: ((Int) -> [NodeID])?
    /// Set by the loop with leases: whether a shard's records and stream
    /// slices from a peer (by name) are taken at a monotonic ms.
    var acceptsFrom: ((Int, String, Int64) -> Bool)?

    /// This node's chains as a follower, for reminding holders (`remindHolder`).
    var follower: FollowerChains

    /// A record or stream slice refused: its sender may not replicate the
    /// shard to this node (`acceptsFrom`, which the caller asks per record).
    func noteRefusedNotHolder() { counters.refusedNotHolder += 1 }

    init(forwarding: ForwardingRelay, shardOwner: [Int]) {
        self.forwarding = forwarding
        self.shardOwner = shardOwner
        follower = FollowerChains(shardCount: shardOwner.count)
        progress = Array(repeating: nil, count: shardOwner.count)
        tails = Array(repeating: nil, count: shardOwner.count)
        told = Array(repeating: [], count: shardOwner.count)
        followerPeers = Array(repeating: [], count: shardOwner.count)
        newestHere = Array(repeating: .zero, count: shardOwner.count)
    }

    var replicatedShards: Int { shardsWithFollowers.count }

    /// True while some follower has not been sent every write (the loop then wakes to catch it up).
    var anyFollowerBehind: Bool {
        // Through inout, as in `take`: `progress[shard].map` copied each
        // shard's progress, on every pass of the loop.
        shardsWithFollowers.contains { shard in Self.hasFollowerBehind(&progress[shard]) }
    }

    private static func hasFollowerBehind(_ progress: inout ReplicationProgress?) -> Bool {
        guard progress != nil else { return false }
        let written = progress!.written
        return progress!.sent.contains { $0 < written }
    }

    func noteReceived(bytes: Int) {
        counters.recordsReceived += 1
        counters.recordBytesReceived += bytes
    }

    /// Per shard, the newest version this node's copy holds, as its reactor
    /// last showed it (a write, the chain it acknowledged, a finished
    /// stream) or its log replay left it.
    private var newestHere: [EntryVersion]

    /// The newest version this node's copy of `shard` holds now: a node
    /// that becomes the shard's primary starts its bookkeeping from it.
    /// The latest report, not the highest: a stream that replaced the copy
    /// leaves it at the stream's start, which may be below what the log
    /// replayed, and bookkeeping that starts above the copy streams it to
    /// its followers without end (each stream ends below the newest write
    /// it is told of, and the empty tail cannot fill the difference).
    func noteHeld(shard: Int, _ version: EntryVersion) {
        guard newestHere.indices.contains(shard) else { return }
        newestHere[shard] = version
    }

    // MARK: - The map

    /// Shards this node is primary for keep or start their bookkeeping;
    /// the others drop it.
    func mapChanged(_ routing: ClusterRouting) {
        for shard in 0..<min(routing.map.numShards, progress.count) {
            let followers = routing.primaryHere[shard] ? routing.followers[shard] : []
            if followers.isEmpty {
                progress[shard] = nil
                tails[shard] = nil
                told[shard] = []
                continue
            }
            if progress[shard] != nil {
                progress[shard]!.setFollowers(followers)
            } else {
                // Taking the shard over (a hand-off, an election) holding
                // writes: the followers are presumed to hold them too, as
                // after a failover (`resume`), until one says otherwise by
                // its acknowledgement; then the catch-up finds the tail
                // empty and streams the shard. Before, the bookkeeping began
                // at nothing and, until the next write, took a follower that
                // had restarted empty for one that holds everything.
                // Only the followers that replicated the shard with this
                // node (its voters) are presumed: a voter that lacks the
                // writes says so (its review of the holder's claim reminds
                // it), while a node the map made a follower in place of a
                // dead voter never hears a claim and would stay empty.
                progress[shard] = ReplicationProgress(followers: followers)
                let voters = presumedToHold?(shard)
                progress[shard]!.resume(after: newestHere[shard]) { voters?.contains($0) ?? true }
                tails[shard] = RecentWrites(countMax: tailRecordsMax, bytesMax: Self.tailBytesMax)
            }
        }
        shardsWithFollowers = progress.indices.filter { progress[$0] != nil }
        resolveFollowerPeers()
        streamNoted = streamNoted.filter { progress[$0.shard] != nil }
        abortStreams { [progress] stream in progress[stream.shard]?.followers.contains(stream.follower) != true }
    }

    /// Called by the forwarding relay whenever the map or the peers'
    /// addresses may have changed.
    func resolveFollowerPeers() {
        for shard in followerPeers.indices {
            followerPeers[shard] = progress[shard]?.followers.map { forwarding.peer(named: $0.name) } ?? []
        }
    }

    // MARK: - From this node's reactors

    /// A write the reactor owning `shard` made as its primary; returns its
    /// version when the record was taken.
    @discardableResult
    func fromReactor(_ header: ForwardHeader, record: UnsafeRawBufferPointer, nowNs: Int64) -> EntryVersion? {
        let shard = Int(header.route.shard)
        guard shard < progress.count else { return nil }
        let previous = header.replicatedPrevious
        guard case .record(let decoded, let length) = WALRecord.decode(record), length == record.count,
              decoded.shard == shard, decoded.version > previous else {
            counters.malformed += 1
            return nil
        }
        let peers = followerPeers[shard]
        guard !peers.isEmpty else { return nil }  // no followers (any more)
        let bytes = [UInt8](record)
        sendingTo.removeAll(keepingCapacity: true)
        // The bookkeeping is changed in place, through inout parameters:
        // reading `progress[shard]!` in this class copies the shard's
        // progress (its arrays retained and released) on every access. No
        // call in the block reaches back here (staging comes after it).
        let taken = Self.take(version: decoded.version, previous: previous, bytes: bytes, madeMs: nowNs / 1_000_000,
                              peers: peers, progress: &progress[shard], tail: &tails[shard], sendingTo: &sendingTo)
        switch taken {
        case .refused:
            counters.malformed += 1
            return nil
        case .taken:
            break
        }
        counters.recordsFromReactors += 1
        for i in sendingTo {
            stage(bytes, shard: shard, previous: previous, for: peers[i]!, nowNs: nowNs)
        }
        return decoded.version
    }

    private enum Taken { case refused, taken }

    /// The record's bookkeeping: tail, newest write, and which followers
    /// (indices into `peers`) it goes to at once, marked as sent to them.
    /// `progress` and `tail` are not nil: `peers` is not empty (see
    /// `followerPeers`). Not checked with `!= nil`, which copies them.
    private static func take(version: EntryVersion, previous: EntryVersion, bytes: [UInt8], madeMs: Int64, peers: [UInt16?],
                             progress: inout ReplicationProgress?, tail: inout RecentWrites?, sendingTo: inout [Int]) -> Taken {
        guard version > progress!.written else { return .refused }
        // The first write after taking the shard over (or after writes this
        // bookkeeping missed) follows writes the followers presumably hold.
        progress!.resume(after: previous)
        guard tail!.append(version: version, previous: previous, madeMs: madeMs, bytes: bytes) else { return .refused }
        progress!.wrote(version)
        // At once to each follower that was sent everything before it and
        // has a known address (the others are caught up from the tail).
        for i in progress!.sent.indices where i < peers.count && peers[i] != nil && progress!.sent[i] == previous {
            progress!.sent(version, toFollowerAt: i)
            sendingTo.append(i)
        }
        return .taken
    }

    /// Stages a new record for the follower at `peer` (counted as sent: a
    /// link that breaks before it leaves cuts the follower off, and what it
    /// had not acknowledged is sent again).
    private func stage(_ record: [UInt8], shard: Int, previous: EntryVersion, for peer: UInt16, nowNs: Int64) {
        let slot = Int(peer)
        if slot >= staged.count { staged.append(contentsOf: repeatElement(StagedBatch(), count: slot + 1 - staged.count)) }
        if staged[slot].records == 0 {
            staged[slot].oldestNs = nowNs
            stagedPeers.append(peer)
        }
        var header = ReplicationWire.header(.replicate, shard: shard, payloadLength: record.count)
        header.replicatedPrevious = previous
        record.withUnsafeBytes { ForwardingRelay.appendFramed(header, $0, to: &staged[slot].framed) }
        staged[slot].records += 1
        staged[slot].recordBytes += record.count
        if staged[slot].records >= batchRecordsMax {
            counters.batchesFull += 1
            moveToFrame(peer)
        }
    }

    /// Moves the staged batches that are due into their peers' frames;
    /// before the frames of the iteration leave.
    func sendDueBatches(nowNs: Int64) {
        guard !stagedPeers.isEmpty else { return }
        for peer in stagedPeers where nowNs - staged[Int(peer)].oldestNs >= batchTimeoutNs {
            counters.batchesTimedOut += 1
            moveToFrame(peer)
        }
    }

    /// Moves every staged batch into its peer's frame now: a hand-off's
    /// target is waited for, not batched for.
    func sendStagedNow() {
        for peer in stagedPeers { moveToFrame(peer) }
    }

    /// Whether `follower` is sent the shard's writes and acknowledged every
    /// one made here (a hand-off's target must hold them all).
    func followerHoldsEveryWrite(_ follower: NodeID, shard: Int) -> Bool {
        guard shard < progress.count, let shardProgress = progress[shard],
              let i = shardProgress.followers.firstIndex(of: follower) else { return false }
        return shardProgress.acknowledged[i] >= shardProgress.written
    }

    func isFollower(_ node: NodeID, of shard: Int) -> Bool {
        shard < progress.count && progress[shard]?.followers.contains(node) == true
    }

    /// Milliseconds until the oldest staged batch is due (the loop sleeps no
    /// longer); nil when nothing is staged.
    func msUntilBatchDue(nowNs: Int64) -> Int32? {
        guard let oldest = stagedPeers.map({ staged[Int($0)].oldestNs }).min() else { return nil }
        return Int32(clamping: max(0, (oldest + batchTimeoutNs - nowNs + 999_999) / 1_000_000))
    }

    private func moveToFrame(_ peer: UInt16) {
        let slot = Int(peer)
        guard slot < staged.count, staged[slot].records > 0 else { return }
        // Taken out first: a frame that cannot be queued cuts the follower
        // off (`cutOff`), which clears what is staged for it.
        var batch = StagedBatch()
        swap(&batch, &staged[slot])
        stagedPeers.removeAll { $0 == peer }
        counters.recordsSent += batch.records
        counters.bytesSent += batch.recordBytes
        batch.framed.withUnsafeBytes { forwarding.appendFramedRecords(peer: peer, $0) }
        // The buffer is kept for the next batch (no allocation per batch).
        if staged[slot].records == 0 {
            batch.framed.removeAll(keepingCapacity: true)
            batch.records = 0
            batch.recordBytes = 0
            staged[slot] = batch
        }
    }

    /// Appends one record to the peer's batch; false when no address is known for it.
    private func send(_ record: [UInt8], shard: Int, previous: EntryVersion, to follower: NodeID) -> Bool {
        guard let peer = forwarding.peer(named: follower.name) else { return false }
        var header = ReplicationWire.header(.replicate, shard: shard, payloadLength: record.count)
        header.replicatedPrevious = previous
        record.withUnsafeBytes { forwarding.appendToBatch(peer: peer, header, $0) }
        counters.recordsSent += 1
        counters.bytesSent += record.count
        return true
    }

    // MARK: - From the peers

    /// A follower's acknowledgement for one of this node's shards.
    func acknowledged(_ payload: UnsafeRawBufferPointer, shard: Int, from follower: String) {
        guard let version = ReplicationWire.decode(payload), let node = NodeID(follower),
              shard < progress.count, progress[shard] != nil else {
            counters.acksRefused += 1
            return
        }
        counters.acksReceived += 1
        switch progress[shard]!.acknowledge(version, from: node) {
        case .advanced:
            break
        case .duplicate:
            // A follower that found a gap repeats what it holds: send again from there.
            if let i = progress[shard]!.followers.firstIndex(of: node), progress[shard]!.sent[i] > progress[shard]!.acknowledged[i] {
                progress[shard]!.cutOff(node)
            }
        case .behind:
            counters.followerResets += 1
        case .unknownFollower, .neverSent:
            counters.acksRefused += 1
        }
        // For k = 2 ... replicas, the newest version at least k of them hold:
        // the reactor releases writes waiting for W = k, counts the replicas
        // a write reached (WAIT, timeouts), and drops tombstones below the last.
        tellReactorHeld(shard: shard)
    }

    private func tellReactorHeld(shard: Int) {
        let held = progress[shard]!.heldByAtLeast
        if held != told[shard] {
            told[shard] = held
            let bytes = ReplicationWire.encodeHeld(held)
            bytes.withUnsafeBytes {
                forwarding.toReactor(shardOwner[shard], ReplicationWire.header(.replicaProgress, shard: shard, payloadLength: $0.count), $0)
            }
        }
    }

    /// The batch to `peerName` could not be queued, or its bulk link broke:
    /// what was sent to it is sent again from what it acknowledged, and the
    /// read probes it has not answered go elsewhere (`readProbesLost`).
    func cutOff(peerName: String) {
        let peer = forwarding.peer(named: peerName)
        if let peer { readProbesLost(toPeer: peer) }
        guard let node = NodeID(peerName) else { return }
        // Staged records go again from the tail, after what it acknowledged.
        if let peer, Int(peer) < staged.count {
            staged[Int(peer)] = StagedBatch()
            stagedPeers.removeAll { $0 == peer }
        }
        abortStreams { $0.follower == node }
        var any = false
        for shard in progress.indices where progress[shard]?.followers.contains(node) == true {
            progress[shard]!.cutOff(node)
            any = true
        }
        if any { counters.cutOffs += 1 }
    }

    /// Repeats this node's acknowledgement of `shard` to its holder, as its
    /// reactor would after finding a gap: the holder sends what follows it
    /// from the tail, or streams the shard (`FollowerChains`).
    func remindHolder(_ holder: String, shard: Int) {
        guard let peer = forwarding.peer(named: holder), follower.acknowledged.indices.contains(shard) else { return }
        let header = ReplicationWire.header(.replicaAck, shard: shard, payloadLength: ReplicationWire.versionBytes)
        ReplicationWire.encode(follower.acknowledged[shard]).withUnsafeBytes { forwarding.appendToBatch(peer: peer, header, $0) }
    }

    // MARK: - Read quorums

    /// A read at R >= 2 on one of this node's shards: the key goes to the
    /// first R - 1 followers the map names (`header.connectionIndex`) whose
    /// link is not known to be down, in the peers' batch frames like
    /// replicated records (a follower killed is passed over, not waited for
    /// until write_timeout). Where fewer can be asked (no known address, or
    /// no link), the reactor is told how many were, and ends the read at
    /// once (`ForwardHeader.Flags.followersNotAsked`).
    func sendReadProbe(_ header: ForwardHeader, key: UnsafeRawBufferPointer, nowNs: Int64) {
        let shard = Int(header.route.shard)
        guard shard < progress.count, Int(header.route.originReactor) < forwarding.interconnect.reactorCount else { return }
        var probe = header
        probe.connectionIndex = 0
        probe.flags = 0
        var asked: [UInt16] = []
        let fromCopy = header.flags & ForwardHeader.Flags.answerFromCopy != 0
        for peer in readProbePeers(shard: shard, passingOverPrimary: fromCopy) where asked.count < header.connectionIndex {
            forwarding.appendToBatch(peer: peer, probe, key)
            counters.readProbesSent += 1
            asked.append(peer)
        }
        if !asked.isEmpty {
            unansweredProbes[ProbeKey(reactor: header.route.originReactor, ticket: header.slotSequence)] = UnansweredProbe(
                probe: probe, key: [UInt8](key), fromCopy: fromCopy, asked: asked, unanswered: asked, sentAtNs: nowNs)
        }
        if asked.count < header.connectionIndex { tellReactorTooFewAsked(probe, asked: asked.count) }
    }

    /// The reactor's read cannot reach its quorum: only `asked` of the
    /// replicas it needs were asked, or can still answer.
    private func tellReactorTooFewAsked(_ probe: ForwardHeader, asked: Int) {
        var notAsked = probe
        notAsked.kind = .readAnswer
        notAsked.flags = ForwardHeader.Flags.followersNotAsked
        notAsked.connectionIndex = UInt32(asked)
        notAsked.payloadLength = 0
        forwarding.toReactor(Int(probe.route.originReactor), notAsked, UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// Whom a read probe may ask, in order, of the peers whose address is
    /// known and whose link is not known to be down: the shard's followers
    /// while this node is its primary (`followerPeers`, resolved once per
    /// map, not by name per read). A read answered from this node's copy
    /// for a primary that cannot be reached (Reactor+CopyReads,
    /// `passingOverPrimary`) asks the shard's other followers: a probe sent
    /// to the dead primary on a link not yet known broken held the read
    /// until write_timeout (p99 1.35 s in a `perf/shard-move --scenario
    /// failure --read-quorum 2` run). A probe this loop reads after the
    /// routing that moved the shard away (a hand-off's release, read in an
    /// earlier pass than the reactor's probe) asks the shard's other
    /// replicas in that routing, the new primary among them: the read keeps
    /// its local state, and the newest of it and their answers is never
    /// older than it. Refusing it instead failed 10-20 reads in each
    /// `perf/shard-move --scenario leave --read-quorum 2` run.
    private func readProbePeers(shard: Int, passingOverPrimary: Bool) -> [UInt16] {
        let reachable = { (peer: UInt16?) in peer.flatMap { self.forwarding.linkIsDown($0) ? nil : $0 } }
        if progress[shard] != nil { return followerPeers[shard].compactMap(reachable) }
        guard let routing = forwarding.routing, shard < routing.followers.count else { return [] }
        let primary = passingOverPrimary ? [] : [routing.primaryName[shard]]
        return (primary + routing.followers[shard].map(\.name)).filter { !$0.isEmpty && $0 != routing.selfID.name }
            .compactMap { reachable(forwarding.peer(named: $0)) }
    }

    private struct ProbeKey: Hashable {
        var reactor: UInt16
        var ticket: UInt64
    }

    /// A read's probes that some peer asked has not answered yet.
    private struct UnansweredProbe {
        var probe: ForwardHeader
        var key: [UInt8]
        var fromCopy: Bool
        var asked: [UInt16]
        var unanswered: [UInt16]
        var sentAtNs: Int64
    }

    /// Probes on their way, until every peer asked answered: a peer whose
    /// link breaks first never will (a probe written just before a kill -9
    /// is lost with the link), and its read waited until write_timeout (30
    /// s by default) while the client's later replies queued behind it.
    private var unansweredProbes: [ProbeKey: UnansweredProbe] = [:]
    private var probesSweptAtNs: Int64 = 0
    /// Longer than any read waits by default (write_timeout 30 s): an
    /// entry this old belongs to a read that ended already.
    static let unansweredProbeLimitNs: Int64 = 60_000_000_000

    /// `peer` answered the probe of the read `ticket` of `reactor`.
    func readProbeAnswered(reactor: UInt16, ticket: UInt64, by peer: UInt16) {
        let key = ProbeKey(reactor: reactor, ticket: ticket)
        guard var waiting = unansweredProbes[key] else { return }
        waiting.unanswered.removeAll { $0 == peer }
        unansweredProbes[key] = waiting.unanswered.isEmpty ? nil : waiting
    }

    /// The link to `peer` broke or could not be opened: the probes it has
    /// not answered go to another replica not asked yet, or, with none
    /// left, their reads end at once (TRYAGAIN) instead of at write_timeout.
    private func readProbesLost(toPeer peer: UInt16) {
        for (key, var waiting) in unansweredProbes where waiting.unanswered.contains(peer) {
            waiting.unanswered.removeAll { $0 == peer }
            let shard = Int(waiting.probe.route.shard)
            if let next = readProbePeers(shard: shard, passingOverPrimary: waiting.fromCopy).first(where: { !waiting.asked.contains($0) }) {
                waiting.key.withUnsafeBytes { forwarding.appendToBatch(peer: next, waiting.probe, $0) }
                counters.readProbesSent += 1
                counters.readProbesAskedAgain += 1
                waiting.asked.append(next)
                waiting.unanswered.append(next)
            } else {
                tellReactorTooFewAsked(waiting.probe, asked: 0)
            }
            unansweredProbes[key] = waiting.unanswered.isEmpty ? nil : waiting
        }
    }

    /// Forgets probes whose reads ended long ago (a peer that never
    /// answered, as one no longer holding the shard does); once a second.
    func sweepUnansweredProbes(nowNs: Int64) {
        guard !unansweredProbes.isEmpty, nowNs - probesSweptAtNs >= 1_000_000_000 else { return }
        probesSweptAtNs = nowNs
        unansweredProbes = unansweredProbes.filter { nowNs - $0.value.sentAtNs < Self.unansweredProbeLimitNs }
    }

    /// The newest state a read found, for the follower (peer number in
    /// `header.connectionIndex`) that answered an older one. It travels on
    /// the bulk lane behind the records already queued for that follower,
    /// and is applied there only if newer than what the follower holds.
    func sendReadRepair(_ header: ForwardHeader, record: UnsafeRawBufferPointer) {
        guard let peer = UInt16(exactly: header.connectionIndex), forwarding.knowsPeer(peer) else {
            counters.malformed += 1
            return
        }
        var repair = header
        repair.connectionIndex = 0
        forwarding.appendToBatch(peer: peer, repair, record)
        counters.readRepairsSent += 1
    }

    // MARK: - Catching up

    /// Sends followers that are behind the records after what they
    /// acknowledged, from the tails; at most every `catchUpIntervalNs`.
    func catchUp(nowNs: Int64) {
        guard nowNs - lastCatchUpNs >= Self.catchUpIntervalNs else { return }
        lastCatchUpNs = nowNs
        abortStreams(streams.abortStalled(nowMs: nowNs / 1_000_000))
        reviewMoves(nowMs: nowNs / 1_000_000)
        for shard in progress.indices {
            guard var shardProgress = progress[shard], let tail = tails[shard] else { continue }
            if let maySend, !maySend(shard) {
                abortStreams { $0.shard == shard }
                continue
            }
            for (i, follower) in shardProgress.followers.enumerated() where shardProgress.sent[i] < shardProgress.written {
                if streams.isStreaming(shard: shard, to: follower) { continue }
                var needed = tail.after(shardProgress.sent[i], limit: Self.catchUpRecordsPerTurn)
                // Nothing after what it was sent, yet it was not sent the
                // newest write: the writes it lacks were made before this
                // node's tail began (it became primary holding them, by a
                // hand-off or an election, and nobody has written since).
                if needed == .records([]) { needed = .gone }
                switch needed {
                case .records(let records):
                    for record in records {
                        guard send(record.bytes, shard: shard, previous: record.previous, to: follower) else { break }
                        shardProgress.sent(record.version, to: follower)
                    }
                case .gone:
                    if streamNoted.insert(StreamNeed(shard: shard, follower: follower.name)).inserted {
                        counters.streamsNeeded += 1
                    }
                    startStream(shard: shard, to: follower, holding: shardProgress.sent[i],
                                tailStart: tail.servesFrom ?? .zero, nowNs: nowNs)
                }
            }
            progress[shard] = shardProgress
        }
    }

    // MARK: - Shard streams

    /// Starts streaming `shard` to `follower` unless a stream runs for the
    /// pair already or `ShardStreams.concurrentMax` run (a later turn tries again).
    private func startStream(shard: Int, to follower: NodeID, holding: EntryVersion, tailStart: EntryVersion, nowNs: Int64) {
        guard forwarding.peer(named: follower.name) != nil,
              let id = streams.start(shard: shard, follower: follower, nowMs: nowNs / 1_000_000) else { return }
        counters.streamsStarted += 1
        noteMoveActivity(nowMs: nowNs / 1_000_000)
        catchingUp[StreamNeed(shard: shard, follower: follower.name)] = nil
        log?("streaming shard \(shard) to \(follower.name): it holds \(holding), the recent-writes tail starts after \(tailStart)")
        grantSlices(id)
    }

    /// Asks the shard's reactor for as many slices as the stream's window allows.
    private func grantSlices(_ id: UInt32) {
        guard let stream = streams.running[id] else { return }
        if let maySend, !maySend(stream.shard) {
            abortStreams { $0.id == id }
            return
        }
        let slices = streams.grant(id)
        guard slices > 0 else { return }
        var header = ReplicationWire.header(.streamSlice, shard: stream.shard, payloadLength: 0)
        header.connectionIndex = id
        header.route.ticket = UInt64(slices) | (stream.requested == 0 ? ShardStreamWire.startWalk : 0)
        forwarding.toReactor(shardOwner[stream.shard], header, UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// A slice the shard's reactor walked: on to the follower's bulk lane.
    /// A slice of a stream given up meanwhile is dropped.
    func streamSliceFromReactor(_ header: ForwardHeader, payload: UnsafeRawBufferPointer, nowNs: Int64) {
        let id = header.connectionIndex
        let number = header.route.ticket & ~ShardStreamWire.lastSlice
        guard let stream = streams.running[id] else { return }
        // Checked per slice, not only on catch-up turns (every 50 ms): with a
        // 1 s lease the guard margin is shorter than that, and a follower
        // replaces its copy with a stream's first slice.
        if let maySend, !maySend(stream.shard) {
            abortStreams { $0.id == id }
            return
        }
        guard let peer = forwarding.peer(named: stream.follower.name),
              streams.produced(id, slice: number, last: header.route.ticket & ShardStreamWire.lastSlice != 0,
                               start: header.replicatedPrevious, bytes: payload.count, nowMs: nowNs / 1_000_000) else {
            abortStreams { $0.id == id }
            return
        }
        forwarding.appendToBatch(peer: peer, header, payload)
        counters.streamSlices += 1
        counters.streamBytes += payload.count
    }

    /// The follower `followerName` applied a slice.
    func streamAcknowledged(_ header: ForwardHeader, from followerName: String, nowNs: Int64) {
        guard let follower = NodeID(followerName) else { return }
        let number = header.route.ticket & ~ShardStreamWire.lastSlice
        switch streams.acknowledged(header.connectionIndex, slice: number, from: follower, nowMs: nowNs / 1_000_000) {
        case .more:
            grantSlices(header.connectionIndex)
        case .finished(let stream):
            counters.streamsFinished += 1
            // The next catch-up turn (at the end of this iteration) starts
            // the stream waiting for this one's place, instead of up to
            // catchUpIntervalNs later.
            lastCatchUpNs = 0
            streamNoted.remove(StreamNeed(shard: stream.shard, follower: follower.name))
            guard stream.shard < progress.count, progress[stream.shard] != nil, let start = stream.start else { return }
            progress[stream.shard]!.streamed(start, to: follower)
            // No write since the walk began: its start is the shard's newest write.
            if tails[stream.shard]?.newest == nil { progress[stream.shard]!.settle(atMost: start) }
            let ms = nowNs / 1_000_000 - stream.startedMs
            log?("streamed shard \(stream.shard) to \(follower.name): \(stream.bytes) bytes in \(stream.produced) slices, \(ms) ms, "
                + "\(TransferRate.megabytesPerSecondText(stream.bytes, ms: ms)) MB/s; replication goes on after \(start)")
            catchingUp[StreamNeed(shard: stream.shard, follower: follower.name)] = nowNs / 1_000_000
            noteMoveActivity(nowMs: nowNs / 1_000_000)
            tellReactorHeld(shard: stream.shard)
        case .refused:
            counters.acksRefused += 1
        }
    }

    private func abortStreams(where matches: (ShardStreams.Stream) -> Bool) {
        abortStreams(streams.abort(where: matches))
    }

    /// Stops the walks of streams given up; the pair may need a new one later.
    private func abortStreams(_ gone: [ShardStreams.Stream]) {
        for stream in gone {
            counters.streamsAborted += 1
            streamNoted.remove(StreamNeed(shard: stream.shard, follower: stream.follower.name))
            var header = ReplicationWire.header(.streamCancel, shard: stream.shard, payloadLength: 0)
            header.connectionIndex = stream.id
            forwarding.toReactor(shardOwner[stream.shard], header, UnsafeRawBufferPointer(start: nil, count: 0))
            log?("shard stream \(stream.id) of shard \(stream.shard) to \(stream.follower.name) given up after "
                + "\(stream.acknowledged) of \(stream.produced) slices applied")
        }
    }

    // MARK: - Moves received, and the moves' summary

    /// A slice of a stream for one of this node's shards arrived from
    /// `sender` and went to the shard's reactor.
    func streamSliceArrived(_ header: ForwardHeader, from sender: String, nowNs: Int64) {
        let nowMs = nowNs / 1_000_000
        noteMoveActivity(nowMs: nowMs)
        incoming.sliceArrived(shard: Int(header.route.shard), from: sender, id: header.connectionIndex,
                              number: header.route.ticket & ~ShardStreamWire.lastSlice, bytes: Int(header.payloadLength),
                              nowMs: nowMs)
    }

    /// This node's reactor applied a slice of a stream it received.
    func streamSliceAppliedHere(shard: Int, last: Bool, nowNs: Int64) {
        let nowMs = nowNs / 1_000_000
        guard let stream = incoming.sliceApplied(shard: shard, last: last, nowMs: nowMs) else { return }
        noteMoveActivity(nowMs: nowMs)
        let ms = nowMs - stream.startedMs
        log?("received shard \(shard) from \(stream.from): \(stream.bytes) bytes in \(stream.slicesApplied) slices, \(ms) ms, "
            + "\(TransferRate.megabytesPerSecondText(stream.bytes, ms: ms)) MB/s")
    }

    /// Bytes this node received as a follower: replicated records and stream slices.
    var bytesReceived: Int { counters.recordBytesReceived + incoming.bytes }

    /// Shard streams running through this node now, either way.
    var movesRunning: Int { streams.running.count + incoming.running.count }

    private func noteMoveActivity(nowMs: Int64) {
        guard burst == nil else {
            burst!.activeMs = nowMs
            return
        }
        burst = MoveBurst(startedMs: nowMs, activeMs: nowMs, bytesSentBefore: counters.streamBytes,
                          bytesReceivedBefore: incoming.bytes, sentBefore: counters.streamsFinished,
                          receivedBefore: incoming.finished)
    }

    /// How long no stream runs before the moves count as settled: the
    /// streams waiting for a turn start on the catch-up turn after one ends.
    static let movesSettleMs: Int64 = 1_000

    /// Bytes streamed either way since the moves running now began, and
    /// over how long: nil when none ran within `movesSettleMs`.
    func movesSoFar(nowMs: Int64) -> (bytes: Int, ms: Int64)? {
        guard let started = burst else { return nil }
        let bytes = counters.streamBytes - started.bytesSentBefore + incoming.bytes - started.bytesReceivedBefore
        return (bytes, max(0, nowMs - started.startedMs))
    }

    /// Drops incoming streams that stalled, ends the catching-up step of
    /// followers that hold every write, and once no stream runs either way,
    /// logs one line for the moves since the last time none ran.
    private func reviewMoves(nowMs: Int64) {
        for stream in incoming.expire(nowMs: nowMs) {
            log?("shard stream of shard \(stream.shard) from \(stream.from) given up here: no slice for "
                + "\(incoming.stallMs) ms after \(stream.slicesApplied) slices applied")
        }
        catchingUp = catchingUp.filter { need, _ in
            guard need.shard < progress.count, let node = NodeID(need.follower),
                  let lag = progress[need.shard]?.lagRecords(node) else { return false }
            return lag > 0
        }
        guard burst != nil else { return }
        if movesRunning > 0 { burst!.activeMs = nowMs }
        guard let started = burst, nowMs - started.activeMs >= Self.movesSettleMs else { return }
        burst = nil
        let sent = counters.streamBytes - started.bytesSentBefore
        let received = incoming.bytes - started.bytesReceivedBefore
        let ms = started.activeMs - started.startedMs
        log?("shard moves settled: sent \(counters.streamsFinished - started.sentBefore) shards (\(sent) bytes), "
            + "received \(incoming.finished - started.receivedBefore) shards (\(received) bytes) in \(ms) ms, "
            + "\(TransferRate.megabytesPerSecondText(sent + received, ms: ms)) MB/s")
    }

    // MARK: - Reporting

    /// Every follower's lag on this node's shards, in records and in ms
    /// (since the oldest write it has not acknowledged was made).
    func lags(nowMs: Int64) -> [Lag] {
        var out: [Lag] = []
        for (shard, shardProgress) in progress.enumerated() {
            guard let shardProgress else { continue }
            for (i, follower) in shardProgress.followers.enumerated() {
                let records = shardProgress.lagRecords(follower) ?? 0
                let oldest = records == 0 ? nil : tails[shard]?.madeMs(firstAfter: shardProgress.acknowledged[i])
                out.append(Lag(shard: shard, follower: follower.name, records: records, ms: oldest.map { max(0, nowMs - $0) } ?? 0))
            }
        }
        return out.sorted { ($0.shard, $0.follower) < ($1.shard, $1.follower) }
    }
}
