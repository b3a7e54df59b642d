import AegisCluster
import AegisProtocol
import AegisStore

/// How a held read's reply is written again when a follower holds a newer
/// state than the primary: the client's protocol and what it needs.
enum QuorumReadForm {
    case resp(KeyRead, RESPVersion)
    /// Binary GET, the binary protocol's one read.
    case binary(requestID: UInt64)
}

/// A read of one key the command just run made on a shard at
/// read_quorum >= 2, until its reply is delivered (and held).
struct PendingQuorumRead {
    var shard: Int
    var key: [UInt8]
    /// The key's state here as one WAL record, and its version.
    var localRecord: [UInt8]
    var localVersion: EntryVersion
    var form: QuorumReadForm
    /// Read on this node's follower copy for a primary that cannot be
    /// reached (Reactor+CopyReads), not as the shard's primary.
    var fromCopy: Bool
}

/// One replica's state of a held read's key.
struct QuorumReadAnswer {
    /// The follower's peer number in the cluster loop.
    var peer: UInt32
    var version: EntryVersion
    var record: [UInt8]
    /// False when the replica's copy is not whole (`ForwardHeader.Flags.copyNotWhole`).
    var whole: Bool
}

struct QuorumReadHold {
    var reply: HeldReply
    var read: PendingQuorumRead
    var asked: Int
    var answers: [QuorumReadAnswer] = []
    var deadlineMs: Int64
}

/// A reactor's read quorum (`read_quorum` R >= 2), for the reads of one key
/// (RESP GET, EXISTS, STRLEN, TYPE, TTL, PTTL, EXPIRETIME, PEXPIRETIME,
/// GETRANGE, SUBSTR; the parts of MGET and multi-key EXISTS, one per key;
/// binary GET) on shards this node is primary for.
///
/// The path of such a read:
/// - The read runs here as always, and notes the key's state (a WAL record:
///   its entry, or a DEL at the version it is known deleted at) in
///   `pending`; its reply is then held under a ticket, like a write's at
///   W >= 2, so the reactor goes on serving (the connection's later replies
///   wait behind it in their slots, in order).
/// - A `readProbe` to the cluster loop asks the first R - 1 followers of the
///   map for their state of the key; each answers `readAnswer`.
/// - When R - 1 answered: the newest state wins. Replicas that answered an
///   older one get the newest record (`readRepair`, applied with
///   `applyIfNewer`: never a write with a new version). When a follower is
///   newer than this primary, the primary applies it too and the reply is
///   written again from it (`KeyRead`: the same answer, from the new entry).
/// - Fewer than R - 1 answers by `write_timeout`: a TRYAGAIN error saying
///   how many replicas answered; the shard map giving fewer than R
///   replicas: NOREPLICAS at once; fewer than R - 1 other replicas that
///   the cluster loop could ask, or that can still answer (a link broke
///   and no replica is left to ask instead): TRYAGAIN at once. A read
///   answered from a copy for an unreachable primary (Reactor+CopyReads)
///   goes the same way, that primary left out. The shard's primary moving
///   away while the read waits does not end it: the answers of the replicas
///   asked still make a quorum of the copies the read began with (a write
///   acknowledged at W before is on W of them). Only where a follower
///   answered newer and this node's copy was dropped meanwhile is it
///   TRYAGAIN, since the newer state cannot be read here.
///
/// Invariants: `pending` is set only between a read on a shard with R >= 2
/// and the delivery of its reply (which always goes through `hold`, since
/// `readAwaitsQuorum` keeps the in-place reply paths off); each ticket in
/// `held` leaves it exactly once (answered, timed out, or abandoned), and an
/// answer for a ticket no longer held is ignored.
///
/// Confined to the reactor's thread.
struct ReadQuorumState {
    /// read_quorum when replication_factor > 1, else 1.
    let readQuorum: Int
    var pending: PendingQuorumRead?
    /// Set while a read diverted from an unreachable primary runs on this
    /// node's copy (`answerReadFromCopy`): it consults R replicas too.
    var answeringFromCopy = false
    var held: [UInt64: QuorumReadHold] = [:]
    var nextTicket: UInt64 = 1
    /// No held read's deadline is earlier (it may be later: answered reads
    /// leave it behind), so the expiry pass runs only once one may be due.
    var nextDeadlineMs = Int64.max
    /// The state a probe's answer or a repair is encoded in (reused).
    let record = WireBuffer()

    init(readQuorum: Int) {
        self.readQuorum = readQuorum
    }
}

extension Reactor {
    /// Whether a read of one key of `shard` consults other replicas: R >= 2
    /// and this node is the shard's primary, or answers it from its copy
    /// for a primary that cannot be reached. Its reply must then go through `hold`.
    @inline(__always) func readAwaitsQuorum(_ shard: Int) -> Bool {
        readQuorum.readQuorum >= 2 && (routes.isPrimaryHere(shard) || readQuorum.answeringFromCopy)
    }

    /// A read of `key` ran on a shard with R >= 2: its reply will be held
    /// until R replicas answered (see ReadQuorumState).
    func noteQuorumRead(_ key: UnsafeRawBufferPointer, hash: UInt64, store: ShardStore, form: QuorumReadForm) {
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        guard readAwaitsQuorum(shard) else { return }
        let buffer = readQuorum.record
        buffer.clear()
        let known = store.readQuorumVersion(key, hash: hash, nowMs: now)
        WALRecord.appendState(of: key, store.get(key, hash: hash, nowMs: now), deletedAt: known, shard: shard, to: buffer)
        readQuorum.pending = PendingQuorumRead(shard: shard, key: [UInt8](key), localRecord: [UInt8](buffer.readableView),
                                               localVersion: known, form: form, fromCopy: !routes.isPrimaryHere(shard))
        buffer.clear()
        log.replyAwaitsLog = true
    }

    /// Takes the reply of a read noted by `noteQuorumRead`.
    func holdForReadQuorum(_ reply: HeldReply, _ read: PendingQuorumRead) {
        let r = readQuorum.readQuorum
        counters.quorum.readWaits += 1
        // Read from a copy, the primary that cannot be reached counts for
        // nothing: the map's followers of the shard (this node among them) are left.
        let replicas = read.fromCopy ? routes.followerCount(read.shard)
            : routes.isPrimaryHere(read.shard) ? routes.followerCount(read.shard) + 1 : 0
        if replicas < r && read.fromCopy {
            counters.quorum.readUnreachable += 1
            deliverQuorumError(reply, code: "NOREPLICAS", "read needs \(r) replicas (read_quorum): shard \(read.shard)'s "
                + "primary cannot be reached and the shard map gives it \(replicas) other replica\(replicas == 1 ? "" : "s"); "
                + "retry once a new primary is elected, or lower read_quorum")
            return
        }
        if replicas < r {
            counters.quorum.readUnreachable += 1
            deliverQuorumError(reply, code: "NOREPLICAS", "read needs \(r) replicas (read_quorum): the shard map gives shard "
                + "\(read.shard) \(replicas) replica\(replicas == 1 ? "" : "s"); retry when the cluster has them, or lower read_quorum")
            return
        }
        let ticket = readQuorum.nextTicket
        readQuorum.nextTicket &+= 1
        let timeoutMs = node.runtime.writeTimeoutMs.load(ordering: .relaxed)
        let deadlineMs = timeoutMs > 0 ? monotonicMs &+ timeoutMs : Int64.max
        readQuorum.held[ticket] = QuorumReadHold(reply: reply, read: read, asked: r - 1, deadlineMs: deadlineMs)
        readQuorum.nextDeadlineMs = min(readQuorum.nextDeadlineMs, deadlineMs)
        var header = ReplicationWire.header(.readProbe, shard: read.shard, payloadLength: read.key.count)
        header.connectionIndex = UInt32(r - 1)
        // The loop asks the other replicas, not the primary this read was diverted from.
        if read.fromCopy { header.flags = ForwardHeader.Flags.answerFromCopy }
        header.slotSequence = ticket
        header.route.originReactor = UInt16(index)
        read.key.withUnsafeBytes { sendRecord(to: routes.clusterEndpoint, header: header, payload: $0) }
    }

    // MARK: - As a follower

    /// A primary asks for this replica's state of one key.
    func answerReadProbe(_ header: ForwardHeader, key: UnsafeRawBufferPointer) {
        let shard = Int(header.route.shard)
        guard shard < shards.count, let store = shards[shard] else { return }
        let hash = KeyHash.hash(key)
        guard KeyHash.shard(of: hash, shardCount: shards.count) == shard else {
            replica.recordsMalformed += 1
            return
        }
        let buffer = readQuorum.record
        buffer.clear()
        WALRecord.appendState(of: key, store.get(key, hash: hash, nowMs: now),
                              deletedAt: store.readQuorumVersion(key, hash: hash, nowMs: now), shard: shard, to: buffer)
        var answer = header
        answer.kind = .readAnswer
        answer.flags = routes.isPrimaryHere(shard) || holdsWholeCopy(shard) ? 0 : ForwardHeader.Flags.copyNotWhole
        answer.payloadLength = buffer.readableBytes
        sendRecord(to: routes.clusterEndpoint, header: answer, payload: buffer.readableView)
        buffer.clear()
        buffer.releaseIfIdle(keep: 1 << 20)
    }

    /// The newest state a primary's read found, for a key this replica held
    /// older. Applied only if newer; it is not part of the primary's chain
    /// of records, so it moves neither `appliedThrough` nor an acknowledgement.
    func applyReadRepair(_ header: ForwardHeader, record: UnsafeRawBufferPointer) {
        let shard = Int(header.route.shard)
        guard shard < shards.count, let store = shards[shard],
              case .record(let decoded, let length) = WALRecord.decode(record), length == record.count,
              decoded.shard == shard, decoded.operation == .set || decoded.operation == .delete else {
            replica.recordsMalformed += 1
            return
        }
        let hash = KeyHash.hash(decoded.key)
        let write: ReplicatedWrite = decoded.operation == .set ? .set(value: decoded.value, expiryMs: decoded.expiryMs) : .delete
        let known = store.knownVersion(decoded.key, hash: hash, nowMs: now)
        store.applyIfNewer(decoded.key, hash: hash, write, version: decoded.version, nowMs: now)
        if decoded.version > known {
            counters.quorum.readRepairsApplied += 1
            noteUnloggedChange(shard: shard)
        }
    }

    // MARK: - The answers

    /// A follower's state of a held read's key, or the cluster loop's word
    /// that it could ask, or still hear from, fewer replicas than the read needs.
    func collectReadAnswer(_ header: ForwardHeader, record: UnsafeRawBufferPointer) {
        let ticket = header.slotSequence
        guard var hold = readQuorum.held[ticket] else { return }  // answered, timed out or abandoned already
        if header.flags & ForwardHeader.Flags.followersNotAsked != 0 {
            guard header.connectionIndex < hold.asked else { return }
            readQuorum.held[ticket] = nil
            refuseHeldRead(hold, "this node could reach \(header.connectionIndex) of the \(hold.asked) other replicas of shard "
                + "\(hold.read.shard) it needs (a replica's link is down or broke, or its address is not known yet)")
            return
        }
        guard case .record(let decoded, let length) = WALRecord.decode(record), length == record.count,
              decoded.shard == hold.read.shard, decoded.operation == .set || decoded.operation == .delete,
              hold.read.key.withUnsafeBytes({ $0.elementsEqual(decoded.key) }),
              !hold.answers.contains(where: { $0.peer == header.connectionIndex }) else {
            replica.recordsMalformed += 1
            return
        }
        let whole = header.flags & ForwardHeader.Flags.copyNotWhole == 0
        if !whole && hold.read.fromCopy {
            // A read answered from a copy counts on the others to hold what
            // the unreachable primary acknowledged; one that may have holes cannot say.
            readQuorum.held[ticket] = nil
            refuseHeldRead(hold, "shard \(hold.read.shard)'s primary cannot be reached and a replica asked holds no whole copy yet")
            return
        }
        hold.answers.append(QuorumReadAnswer(peer: header.connectionIndex, version: decoded.version, record: [UInt8](record), whole: whole))
        guard hold.answers.count >= hold.asked else {
            readQuorum.held[ticket] = hold
            return
        }
        readQuorum.held[ticket] = nil
        finishQuorumRead(hold)
    }

    /// R replicas answered: repair the stale ones, answer with the newest.
    private func finishQuorumRead(_ hold: QuorumReadHold) {
        // Only a whole copy's state may replace this one's: see `ForwardHeader.Flags.copyNotWhole`.
        let newest = hold.answers.filter(\.whole).max { $0.version < $1.version }.flatMap { $0.version > hold.read.localVersion ? $0 : nil }
        let newestVersion = newest?.version ?? hold.read.localVersion
        let newestRecord = newest?.record ?? hold.read.localRecord
        for answer in hold.answers where answer.version < newestVersion {
            var header = ReplicationWire.header(.readRepair, shard: hold.read.shard, payloadLength: newestRecord.count)
            header.connectionIndex = answer.peer
            newestRecord.withUnsafeBytes { sendRecord(to: routes.clusterEndpoint, header: header, payload: $0) }
            counters.quorum.readRepairsSent += 1
        }
        if newest != nil && !routes.holdsCopy(hold.read.shard) {
            // The shard moved away while the read waited, and its copy here
            // was dropped: the newer state can be neither kept nor read here.
            refuseHeldRead(hold, "shard \(hold.read.shard) moved to another node while the read waited")
            return
        }
        guard newest != nil, let store = shards[hold.read.shard],
              newestRecord.withUnsafeBytes({ repairHere($0, store: store) }) else {
            let reply = hold.reply
            reply.bytes.withUnsafeBytes {
                deliverHeld(reply.kind, wire: reply.wire, source: reply.source, connectionIndex: reply.connectionIndex,
                            generation: reply.generation, sequence: reply.sequence, route: reply.route, $0)
            }
            return
        }
        // This primary was the stale one: the reply is the follower's newer state.
        counters.quorum.readRepairsApplied += 1
        let out = quorum.replyScratch
        out.clear()
        hold.read.key.withUnsafeBytes { key in
            let entry = store.get(key, hash: KeyHash.hash(key), nowMs: now)
            switch hold.read.form {
            case .resp(let read, let version): writeKeyRead(read, entry, version: version, into: out)
            case .binary(let requestID): writeBinaryGet(entry, requestID: requestID, into: out)
            }
        }
        let reply = hold.reply
        deliverHeld(reply.kind, wire: reply.wire, source: reply.source, connectionIndex: reply.connectionIndex,
                    generation: reply.generation, sequence: reply.sequence, route: reply.route, out.readableView)
        out.clear()
    }

    /// Applies a follower's newer record of a key here; true when it was newer.
    private func repairHere(_ record: UnsafeRawBufferPointer, store: ShardStore) -> Bool {
        guard case .record(let decoded, _) = WALRecord.decode(record) else { return false }
        let hash = KeyHash.hash(decoded.key)
        let write: ReplicatedWrite = decoded.operation == .set ? .set(value: decoded.value, expiryMs: decoded.expiryMs) : .delete
        guard decoded.version > store.knownVersion(decoded.key, hash: hash, nowMs: now) else { return false }
        store.applyIfNewer(decoded.key, hash: hash, write, version: decoded.version, nowMs: now)
        noteUnloggedChange(shard: decoded.shard)
        return true
    }

    // MARK: - Ends without R answers

    /// Answers the held reads whose `write_timeout` passed; looks at them
    /// only once the earliest deadline may have come.
    @inline(__always)
    func expireReadQuorums() {
        guard monotonicMs >= readQuorum.nextDeadlineMs else { return }
        let nowMs = monotonicMs
        let due = readQuorum.held.filter { $0.value.deadlineMs <= nowMs }.keys.sorted()
        readQuorum.nextDeadlineMs = readQuorum.held.values.lazy.filter { $0.deadlineMs > nowMs }.map(\.deadlineMs).min() ?? .max
        let timeoutMs = node.runtime.writeTimeoutMs.load(ordering: .relaxed)
        for ticket in due {
            guard let hold = readQuorum.held.removeValue(forKey: ticket) else { continue }
            refuseHeldRead(hold, "only \(hold.answers.count + 1) of \(readQuorum.readQuorum) replicas of shard \(hold.read.shard) "
                + "answered within write_timeout (\(timeoutMs) ms)")
        }
    }

    /// Ends a held read that cannot reach its quorum (already out of
    /// `held`) with a retryable TRYAGAIN saying `why`.
    private func refuseHeldRead(_ hold: QuorumReadHold, _ why: String) {
        counters.quorum.readTimeouts += 1
        deliverQuorumError(hold.reply, code: "TRYAGAIN", "read_quorum \(readQuorum.readQuorum) not reached: \(why); "
            + "the read changed nothing and may be retried")
    }
}
