import AegisCluster
import AegisProtocol
import AegisStore
import CSupport

/// A reply held until the writes of its command reach `write_quorum`:
/// where it goes (as the log's held replies say it) and its bytes.
struct HeldReply {
    var kind: Reactor.HeldKind
    var wire: WireKind
    var source: Int
    var connectionIndex: UInt32
    var generation: UInt32
    var sequence: UInt64
    var route: ForwardRoute
    var bytes: [UInt8]
}

/// A reactor's write quorum (`write_quorum` W >= 2): replies of writes
/// held until W replicas (the primary counted) hold them, in the order of
/// each connection's requests (the reply slots keep it, as for the log).
///
/// The path of a write at W >= 2:
/// - `recordedWrite` notes (shard, version) of each key it changes
///   (`awaitQuorum`); the reply's delivery sees `log.replyAwaitsLog` set and
///   holds the reply here under a ticket instead of sending it; with the log
///   on, a `quorumTicket` marker in the log's batch says when it is durable.
/// - The cluster loop, on each follower acknowledgement, sends the shard's
///   reactor the newest version held by at least k replicas, for every k
///   (`replicaProgress`); `QuorumWaits` gives back the tickets at or below
///   the version held by W.
/// - A reply goes out when every shard its command wrote is at W and its log
///   batch (if any) is durable; at `write_timeout` it is replaced by a
///   TIMEOUT error that says the write may have been applied; at once by a
///   NOREPLICAS error when the shard map gives the shard fewer than W
///   replicas. It is never answered OK below W.
///
/// Invariants: every ticket in `held` has at most one wait per shard in
/// `waits`, and `shardsLeft` counts those not released yet; a ticket leaves
/// `held` exactly once (released, timed out, or the log failed), and a
/// wait or log marker that finds its ticket gone is ignored.
///
/// Confined to the reactor's thread.
struct QuorumState {
    let writeQuorum: Int
    /// The writes of the command being run that wait for W: the newest
    /// version per shard it wrote. Empty between commands.
    private(set) var pendingShards: [Int] = []
    private(set) var pendingVersions: [EntryVersion] = []
    var waits = QuorumWaits<UInt64>()
    var held: [UInt64: QuorumHold] = [:]
    var nextTicket: UInt64 = 1
    /// Per shard this node is primary for, from the cluster loop: at index
    /// k - 2, the newest version at least k replicas hold.
    var heldBy: [[EntryVersion]]
    /// Shards a new routing moved away, whose waits end once this pass read
    /// its rings (`abandonQuorumWaitsOfMovedShards`).
    var movedAway: [Int] = []
    var lastExpiryCheckMs: Int64 = -1
    /// Where an error replacing a held reply, or a WAIT's answer, is written
    /// (the request path's scratch buffers may hold the very reply being replaced).
    let replyScratch = WireBuffer()

    init(writeQuorum: Int, shardCount: Int) {
        self.writeQuorum = writeQuorum
        heldBy = Array(repeating: [], count: shardCount)
    }

    var awaitsQuorum: Bool { !pendingShards.isEmpty }

    mutating func note(shard: Int, version: EntryVersion) {
        if let i = pendingShards.firstIndex(of: shard) {
            pendingVersions[i] = version
        } else {
            pendingShards.append(shard)
            pendingVersions.append(version)
        }
    }

    mutating func takePending() -> [(shard: Int, version: EntryVersion)] {
        let out = zip(pendingShards, pendingVersions).map { (shard: $0, version: $1) }
        pendingShards.removeAll(keepingCapacity: true)
        pendingVersions.removeAll(keepingCapacity: true)
        return out
    }

    /// Replicas (the primary counted) known to hold `shard` through `version`.
    func replicasHolding(shard: Int, version: EntryVersion) -> Int {
        guard shard < heldBy.count else { return 1 }
        return 1 + heldBy[shard].count { $0 >= version }
    }

    /// Whether W replicas hold `shard` through `version` already.
    func isCommitted(shard: Int, version: EntryVersion) -> Bool {
        replicasHolding(shard: shard, version: version) >= writeQuorum
    }
}

struct QuorumHold {
    var reply: HeldReply
    /// The (shard, version) pairs the command wrote.
    var needs: [(shard: Int, version: EntryVersion)]
    var shardsLeft: Int
    var awaitingLog: Bool
    var startedNs: Int64
}

/// Quorum counters a reactor publishes (summed over reactors for INFO and
/// /metrics); the wait-time buckets are upper bounds in ms, then +Inf.
public struct QuorumCounters: Equatable, Sendable {
    public static let waitBucketsMs: [Int64] = [1, 2, 5, 10, 25, 50, 100, 250, 1_000, 5_000]
    /// Writes whose reply waited for write_quorum.
    public var waits = 0
    /// Of those, answered TIMEOUT at write_timeout.
    public var timeouts = 0
    /// Of those, answered NOREPLICAS at once: the map gives the shard fewer than W replicas.
    public var unreachable = 0
    /// Reads at read_quorum >= 2 on this node's shards: held for answers,
    /// answered TRYAGAIN (fewer than R replicas answered in time, or the
    /// primary moved), answered NOREPLICAS at once (the map gives fewer than
    /// R replicas); records sent to replicas found stale, and repairs
    /// applied here (as a follower, or as a primary a follower was newer than).
    public var readWaits = 0
    public var readTimeouts = 0
    public var readUnreachable = 0
    public var readRepairsSent = 0
    public var readRepairsApplied = 0
    /// Writes at W >= 2 answered at once because their shard's primary moved to another node.
    public var primaryMoved = 0
    /// Time the released ones waited, and their count per bucket.
    public var waitSumNs: Int64 = 0
    public var waitBuckets = [Int](repeating: 0, count: QuorumCounters.waitBucketsMs.count + 1)

    public init() {}

    /// Whether anything was counted (a reactor publishes only then).
    var anyCounted: Bool { waits != 0 || readWaits != 0 || readRepairsApplied != 0 }

    mutating func add(_ o: QuorumCounters) {
        waits += o.waits
        timeouts += o.timeouts
        unreachable += o.unreachable
        readWaits += o.readWaits
        readTimeouts += o.readTimeouts
        readUnreachable += o.readUnreachable
        readRepairsSent += o.readRepairsSent
        readRepairsApplied += o.readRepairsApplied
        primaryMoved += o.primaryMoved
        waitSumNs += o.waitSumNs
        for i in waitBuckets.indices where i < o.waitBuckets.count { waitBuckets[i] += o.waitBuckets[i] }
    }
}

extension Reactor {
    /// `recordedWrite` changed a key of `shard` (now at `version`): its
    /// command's reply waits for the write quorum.
    @inline(__always)
    func awaitQuorum(shard: Int, version: EntryVersion) {
        log.replyAwaitsLog = true
        quorum.note(shard: shard, version: version)
    }

    /// Takes the reply of a command whose writes wait for W (see QuorumState).
    func holdForQuorum(_ reply: HeldReply) {
        let needs = quorum.takePending()
        let w = quorum.writeQuorum
        counters.quorum.waits += 1
        if let short = needs.first(where: { !routes.isPrimaryHere($0.shard) || routes.followerCount($0.shard) + 1 < w }) {
            // W replicas do not exist in the map: waiting could only time out.
            counters.quorum.unreachable += 1
            let replicas = routes.isPrimaryHere(short.shard) ? routes.followerCount(short.shard) + 1 : 0
            let text = "write applied on 1 of \(w) replicas: the shard map gives shard \(short.shard) \(replicas) "
                + "replica\(replicas == 1 ? "" : "s"); it may or may not survive a failover"
            deliverQuorumError(reply, code: "NOREPLICAS", text)
            return
        }
        let ticket = quorum.nextTicket
        quorum.nextTicket &+= 1
        let timeoutMs = node.runtime.writeTimeoutMs.load(ordering: .relaxed)
        let deadlineMs = timeoutMs > 0 ? monotonicMs &+ timeoutMs : Int64.max
        var left = 0
        for need in needs where !quorum.isCommitted(shard: need.shard, version: need.version) {
            quorum.waits.wait(shard: need.shard, version: need.version, deadlineMs: deadlineMs, ticket: ticket)
            left += 1
        }
        let awaitingLog = log.wal != nil
        let hold = QuorumHold(reply: reply, needs: needs, shardsLeft: left, awaitingLog: awaitingLog,
                              startedNs: aegis_monotonic_ns())
        if left == 0 && !awaitingLog {
            finishQuorum(hold)
            return
        }
        quorum.held[ticket] = hold
        if awaitingLog {
            holdForLog(.quorumTicket, wire: reply.wire, source: index, connectionIndex: 0, generation: 0, sequence: ticket,
                       UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    /// The log batch holding the writes of `ticket` is durable, or failed.
    func logSettled(quorumTicket ticket: UInt64, failure: String?) {
        guard var hold = quorum.held[ticket] else { return }  // timed out meanwhile
        if let failure {
            quorum.held[ticket] = nil
            deliverQuorumError(hold.reply, code: "ERR", Self.logFailureText(failure))
            return
        }
        hold.awaitingLog = false
        if hold.shardsLeft == 0 {
            quorum.held[ticket] = nil
            finishQuorum(hold)
        } else {
            quorum.held[ticket] = hold
        }
    }

    /// How far the replicas of one of this reactor's shards hold it, from
    /// the cluster loop (ReplicationRelay.acknowledged).
    func applyReplicaProgress(_ header: ForwardHeader, payload: UnsafeRawBufferPointer) {
        let shard = Int(header.route.shard)
        guard shard < shards.count, let store = shards[shard], let held = ReplicationWire.decodeHeld(payload) else { return }
        quorum.heldBy[shard] = held
        // The last: held by every replica; tombstones at or below it protect nothing.
        store.dropTombstones(acknowledgedThrough: held.last!)
        let w = quorum.writeQuorum
        if w >= 2 && w - 2 < held.count && quorum.waits.count > 0 {
            for ticket in quorum.waits.committed(shard: shard, through: held[w - 2]) {
                guard var hold = quorum.held[ticket] else { continue }
                hold.shardsLeft -= 1
                if hold.shardsLeft == 0 && !hold.awaitingLog {
                    quorum.held[ticket] = nil
                    finishQuorum(hold)
                } else {
                    quorum.held[ticket] = hold
                }
            }
        }
        if !waits.isEmpty { answerReachedWaits() }
    }

    /// Answers the held writes whose `write_timeout` passed; once per tick
    /// of the coarse clock while any waits.
    @inline(__always)
    func expireQuorumWaits() {
        guard quorum.waits.count > 0, monotonicMs != quorum.lastExpiryCheckMs else { return }
        quorum.lastExpiryCheckMs = monotonicMs
        for ticket in quorum.waits.expired(nowMs: monotonicMs) {
            guard let hold = quorum.held.removeValue(forKey: ticket) else { continue }
            counters.quorum.timeouts += 1
            let reached = hold.needs.map { quorum.replicasHolding(shard: $0.shard, version: $0.version) }.min() ?? 1
            let text = "write applied on \(reached) of \(quorum.writeQuorum) replicas; it may or may not survive a failover"
            deliverQuorumError(hold.reply, code: "TIMEOUT", text)
        }
    }

    /// The shards a routing installed this pass moved away: their waits end
    /// after the pass read its rings. A hand-off's holder releases in the
    /// loop pass that read the target's acknowledgement of its last writes,
    /// and the progress that reaches W for them is in the ring before the
    /// routing that names the target; judged on the routing first, such a
    /// write was answered "may or may not survive" although it had reached
    /// W (chaos/run --faults leave,join, one in 81,716 operations).
    func abandonQuorumWaitsOfMovedShards() {
        guard !quorum.movedAway.isEmpty else { return }
        let moved = quorum.movedAway
        quorum.movedAway.removeAll()
        abandonQuorumWaits(shards: moved)
    }

    /// `lost`: shards this node stopped being primary for. Their waiting
    /// writes can no longer be counted here (acknowledgements go to the new
    /// primary): each ends now, saying it may have been applied, instead of
    /// at write_timeout.
    func abandonQuorumWaits(shards lost: [Int]) {
        guard quorum.waits.count > 0 else { return }
        for shard in lost {
            for ticket in quorum.waits.abandon(shard: shard) {
                guard let hold = quorum.held.removeValue(forKey: ticket) else { continue }
                counters.quorum.primaryMoved += 1
                let reached = hold.needs.map { quorum.replicasHolding(shard: $0.shard, version: $0.version) }.min() ?? 1
                deliverQuorumError(hold.reply, code: "TRYAGAIN", "write applied on \(reached) of \(quorum.writeQuorum) replicas "
                    + "when shard \(shard)'s primary moved to another node; it may or may not survive a failover")
            }
        }
        quorum.heldBy = quorum.heldBy.enumerated().map { lost.contains($0.offset) ? [] : $0.element }
    }

    private func finishQuorum(_ hold: QuorumHold) {
        let waitedNs = max(0, aegis_monotonic_ns() - hold.startedNs)
        counters.quorum.waitSumNs &+= waitedNs
        let waitedMs = waitedNs / 1_000_000
        let bucket = QuorumCounters.waitBucketsMs.firstIndex { waitedMs < $0 } ?? QuorumCounters.waitBucketsMs.count
        counters.quorum.waitBuckets[bucket] += 1
        let reply = hold.reply
        reply.bytes.withUnsafeBytes {
            deliverHeld(reply.kind, wire: reply.wire, source: reply.source, connectionIndex: reply.connectionIndex,
                        generation: reply.generation, sequence: reply.sequence, route: reply.route, $0)
        }
    }

    func deliverQuorumError(_ reply: HeldReply, code: String, _ text: String) {
        let out = quorum.replyScratch
        out.clear()
        reply.bytes.withUnsafeBytes { writeHeldError(code: code, text, wire: reply.wire, originalReply: $0, into: out) }
        deliverHeld(reply.kind, wire: reply.wire, source: reply.source, connectionIndex: reply.connectionIndex,
                    generation: reply.generation, sequence: reply.sequence, route: reply.route, out.readableView)
        out.clear()
    }
}
