import AegisConfig
import AegisTLS
import CSupport
import Logging
import Synchronization

/// What every reactor shares: read-only configuration and layout, the
/// interconnect, lifecycle state and the counters each reactor publishes.
/// Everything mutable here is an atomic.
public final class NodeContext: Sendable {
    public let config: AegisConfig
    public let reactorCount: Int
    public let interconnect: Interconnect
    public let logger: Logger
    public let startedAtMs: Int64
    /// Start on the monotonic clock: uptime must not jump with the wall clock.
    public let startedMonotonicMs: Int64
    public let stats: [PublishedReactorStats]
    /// Shard → reactor. Contiguous ranges, so a SCAN that runs off the end
    /// of one shard usually continues on the same reactor.
    public let shardOwner: [Int]
    /// Values that SIGHUP and the admin endpoints may change while serving.
    public let runtime: RuntimeSettings
    /// Tokens, protected mode and failed-AUTH counts for the client port (and /admin, /debug).
    public let clientAuth: ClientAuth
    /// TLS on the client port; nil when tls_enabled is false.
    public let tls: TLSService?
    /// TLS on the links between nodes; nil when cluster_tls_* is not set.
    public let peerTLS: PeerTLS?
    /// The token bucket behind runtime.rateLimit, shared by all reactors.
    public let rateLimiter: RateLimiter
    /// Breakers for outbound dependencies (replication, forwarding, peers).
    public let breakers: CircuitBreakerRegistry
    /// Per-command counters and latency, published on the maintenance tick.
    public let commandStats: [PublishedCommandStats]
    /// What the cluster loop publishes (members, gossip counters) and the
    /// commands it takes (seeds reload, leave).
    public let cluster = ClusterBoard()
    /// The shard map the cluster loop computed last, as reactors route by it.
    public let routing = RoutingBoard()
    /// The shard leases this node holds, as the cluster loop last published them.
    let leases = LeaseBoard()
    /// How late each reactor's loop runs; the cluster loop feeds it to
    /// Lifeguard's local health (ReactorLag.swift).
    let reactorLag: [ReactorLag]
    /// SLOWLOG entries and LATENCY events of every reactor.
    let timings = CommandTimings()

    let lifecycle = Atomic<Int>(Lifecycle.starting.rawValue)
    let openConnections = Atomic<Int>(0)
    let nextClientID = Atomic<Int>(1)
    let drainedReactors = Atomic<Int>(0)
    let boundClientPort = Atomic<Int>(0)
    /// Bumped by an operator's request for a snapshot plus log truncation
    /// (POST /admin/wal/truncate); each reactor answers by taking one.
    let walTruncateRequests = Atomic<Int>(0)
    /// The node-wide flush of `wal_mode: fsync`, set once the log directory
    /// exists (Node.recoverLogs), before any reactor opens its log.
    let walFlusherSlot = Mutex<WALNodeFlusher?>(nil)
    var walFlusher: WALNodeFlusher? { walFlusherSlot.withLock { $0 } }

    /// The node's device flushes (fsync mode), nil before the log is open or without fsync.
    public func walFlushStats() -> WALFlushStats? { walFlusher?.stats() }

    public enum Lifecycle: Int, Sendable {
        case starting = 0
        case serving = 1
        case draining = 2
        case stopped = 3
    }

    public init(config: AegisConfig, reactorCount: Int, logger: Logger) throws {
        self.config = config
        self.reactorCount = reactorCount
        self.logger = logger
        self.interconnect = try Interconnect(reactorCount: reactorCount)
        self.startedAtMs = aegis_now_ms_coarse()
        self.startedMonotonicMs = aegis_monotonic_ms_coarse()
        self.runtime = RuntimeSettings(config)
        self.clientAuth = ClientAuth(config)
        do {
            self.tls = try TLSService.make(config)
        } catch {
            throw StartupError("config: tls_enabled is true but TLS cannot be set up: \(error.message)")
        }
        do {
            self.peerTLS = try PeerTLS.make(config)
        } catch {
            throw StartupError("config: cluster_tls_cert_file is set but TLS between nodes cannot be set up: \(error.message)")
        }
        self.rateLimiter = RateLimiter(runtime: runtime, reactorCount: reactorCount)
        self.breakers = CircuitBreakerRegistry(policy: CircuitBreakerPolicy(config))
        self.commandStats = (0..<reactorCount).map { _ in PublishedCommandStats() }
        self.stats = (0..<reactorCount).map { _ in PublishedReactorStats() }
        self.reactorLag = (0..<reactorCount).map { _ in ReactorLag() }
        self.shardOwner = (0..<config.numShards).map { $0 * reactorCount / config.numShards }
        self.storeBudgetBytes = Self.storeBudget(maxBytes: config.maxMemoryMB * 1024 * 1024,
                                                 residentBytes: residentSetBytes() + Self.lateMemoryReserveBytes)
    }

    /// The part of max_memory_mb the reactors' ledgers share (0 = unlimited).
    /// What the process holds before it stores anything (code, runtime,
    /// rings: 17 MB here) is memory too; left out, RSS passed max_memory_mb
    /// by 2% with 8-byte values. It is measured once at start, at most half the limit.
    public let storeBudgetBytes: Int

    /// What the process brings in after this measurement (the cluster loop:
    /// swift-crypto's code and tables, its thread's stack and malloc arena,
    /// its buffers; an idle node's RSS measured 1.7 MB above the same node
    /// without the loop), plus headroom for a store table that doubles near
    /// the limit. The ledger charges the new table and evicts entries to pay
    /// for it; the likely reason RSS still passes the budget by about one
    /// table (not verified) is that the evicted entries' small blocks stay
    /// in malloc's free lists. Measured with
    /// MemoryBoundTests' 8-byte fill at max_memory_mb 128: peak RSS 134.6 MB
    /// with 6 MiB reserved, 134.3 MB with 8 MiB, 124.5 MB with 16 MiB (the
    /// step is the doubling no longer happening before the budget is
    /// reached). Charging a table's growth before it happens would be the
    /// real fix; until then this reserve keeps RSS under the limit.
    static let lateMemoryReserveBytes = 16 << 20

    static func storeBudget(maxBytes: Int, residentBytes: Int) -> Int {
        if maxBytes == 0 { return 0 }
        return maxBytes - min(residentBytes, maxBytes / 2)
    }

    public var state: Lifecycle { Lifecycle(rawValue: lifecycle.load(ordering: .acquiring))! }

    /// The client port actually bound (differs from config when it was 0).
    public var clientPort: Int { boundClientPort.load(ordering: .relaxed) }

    public func commandTotals() -> CommandStatsSnapshot {
        commandStats.reduce(into: CommandStatsSnapshot.zero) { $0.add($1.snapshot()) }
    }

    /// Node-wide totals, summed from the reactors' published counters.
    public func totals() -> ReactorStatsSnapshot {
        stats.reduce(into: ReactorStatsSnapshot()) { $0.add($1.snapshot()) }
    }

    /// Memory between reactors and between them and the cluster loop: every
    /// ring, plus what each side holds for the other beyond them (INFO
    /// used_memory_interconnect). The loop's share is as fresh as its last
    /// published snapshot (at most 100 ms old while it changes).
    public func interconnectMemoryBytes(_ totals: ReactorStatsSnapshot) -> Int {
        interconnect.ringBytes + interconnect.clusterRingBytes + totals.interconnectBytes
            + cluster.snapshot.forwarding.heldForReactorsBytes + interconnect.indirectBytesInFlight(from: interconnect.clusterEndpoint)
    }
}

/// Counters a reactor keeps in plain memory on the request path and stores
/// here once per loop iteration (relaxed stores, no read-modify-write), so
/// readers on other threads (INFO, DBSIZE, /metrics) never slow it down.
public final class PublishedReactorStats: Sendable {
    let items = Atomic<Int>(0)
    let replicaItems = Atomic<Int>(0)
    let usedMemoryBytes = Atomic<Int>(0)
    let clientBufferBytes = Atomic<Int>(0)
    let lazyFreePendingObjects = Atomic<Int>(0)
    let interconnectBytes = Atomic<Int>(0)
    let evictions = Atomic<Int>(0)
    let expired = Atomic<Int>(0)
    let commands = Atomic<Int>(0)
    let keyspaceHits = Atomic<Int>(0)
    let keyspaceMisses = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    let connectionsAccepted = Atomic<Int>(0)
    let connectionsRejected = Atomic<Int>(0)
    let bytesIn = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    let loopIterations = Atomic<Int>(0)
    let forwardedRequests = Atomic<Int>(0)
    let forwardNotOwner = Atomic<Int>(0)
    let forwardRelayed = Atomic<Int>(0)
    let forwardHopLimit = Atomic<Int>(0)
    let readsFromCopyServed = Atomic<Int>(0)
    let readsFromCopyRefused = Atomic<Int>(0)
    let readsFromCopyAtHolder = Atomic<Int>(0)
    let leaseRefusals = Atomic<Int>(0)
    let requestsParked = Atomic<Int>(0)
    let parkedTimedOut = Atomic<Int>(0)
    let parkedWaiting = Atomic<Int>(0)
    let protocolErrors = Atomic<Int>(0)
    let walErrors = Atomic<Int>(0)
    let walTruncateServed = Atomic<Int>(0)
    let walRefusingWrites = Atomic<Int>(0)
    let walBatchInFlight = Atomic<Int>(0)
    let walBytes = Atomic<Int>(0)
    let walBatches = Atomic<Int>(0)
    let walSnapshots = Atomic<Int>(0)
    let rateLimited = Atomic<Int>(0)
    let streamEntriesSent = Atomic<Int>(0)
    let streamEntriesApplied = Atomic<Int>(0)
    /// Changes only when a write waited for its quorum: behind a lock, stored
    /// only when it changed.
    let quorum = Mutex(QuorumCounters())

    func publish(_ s: ReactorStatsSnapshot) {
        items.store(s.items, ordering: .relaxed)
        replicaItems.store(s.replicaItems, ordering: .relaxed)
        usedMemoryBytes.store(s.usedMemoryBytes, ordering: .relaxed)
        clientBufferBytes.store(s.clientBufferBytes, ordering: .relaxed)
        lazyFreePendingObjects.store(s.lazyFreePendingObjects, ordering: .relaxed)
        interconnectBytes.store(s.interconnectBytes, ordering: .relaxed)
        evictions.store(s.evictions, ordering: .relaxed)
        expired.store(s.expired, ordering: .relaxed)
        commands.store(s.commands, ordering: .relaxed)
        keyspaceHits.store(s.keyspaceHits, ordering: .relaxed)
        keyspaceMisses.store(s.keyspaceMisses, ordering: .relaxed)
        connections.store(s.connections, ordering: .relaxed)
        connectionsAccepted.store(s.connectionsAccepted, ordering: .relaxed)
        connectionsRejected.store(s.connectionsRejected, ordering: .relaxed)
        bytesIn.store(s.bytesIn, ordering: .relaxed)
        bytesOut.store(s.bytesOut, ordering: .relaxed)
        loopIterations.store(s.loopIterations, ordering: .relaxed)
        forwardedRequests.store(s.forwardedRequests, ordering: .relaxed)
        forwardNotOwner.store(s.forwardNotOwner, ordering: .relaxed)
        forwardRelayed.store(s.forwardRelayed, ordering: .relaxed)
        forwardHopLimit.store(s.forwardHopLimit, ordering: .relaxed)
        readsFromCopyServed.store(s.readsFromCopyServed, ordering: .relaxed)
        readsFromCopyRefused.store(s.readsFromCopyRefused, ordering: .relaxed)
        readsFromCopyAtHolder.store(s.readsFromCopyAtHolder, ordering: .relaxed)
        leaseRefusals.store(s.leaseRefusals, ordering: .relaxed)
        requestsParked.store(s.requestsParked, ordering: .relaxed)
        parkedTimedOut.store(s.parkedTimedOut, ordering: .relaxed)
        parkedWaiting.store(s.parkedWaiting, ordering: .relaxed)
        protocolErrors.store(s.protocolErrors, ordering: .relaxed)
        walErrors.store(s.walErrors, ordering: .relaxed)
        walTruncateServed.store(s.walTruncateServed, ordering: .relaxed)
        walRefusingWrites.store(s.walRefusingWrites, ordering: .relaxed)
        walBatchInFlight.store(s.walBatchInFlight, ordering: .relaxed)
        walBytes.store(s.walBytes, ordering: .relaxed)
        walBatches.store(s.walBatches, ordering: .relaxed)
        walSnapshots.store(s.walSnapshots, ordering: .relaxed)
        rateLimited.store(s.rateLimited, ordering: .relaxed)
        streamEntriesSent.store(s.streamEntriesSent, ordering: .relaxed)
        streamEntriesApplied.store(s.streamEntriesApplied, ordering: .relaxed)
        if s.quorum.anyCounted { quorum.withLock { if $0 != s.quorum { $0 = s.quorum } } }
    }

    public func snapshot() -> ReactorStatsSnapshot {
        ReactorStatsSnapshot(
            items: items.load(ordering: .relaxed),
            replicaItems: replicaItems.load(ordering: .relaxed),
            usedMemoryBytes: usedMemoryBytes.load(ordering: .relaxed),
            clientBufferBytes: clientBufferBytes.load(ordering: .relaxed),
            lazyFreePendingObjects: lazyFreePendingObjects.load(ordering: .relaxed),
            interconnectBytes: interconnectBytes.load(ordering: .relaxed),
            evictions: evictions.load(ordering: .relaxed),
            expired: expired.load(ordering: .relaxed),
            commands: commands.load(ordering: .relaxed),
            keyspaceHits: keyspaceHits.load(ordering: .relaxed),
            keyspaceMisses: keyspaceMisses.load(ordering: .relaxed),
            connections: connections.load(ordering: .relaxed),
            connectionsAccepted: connectionsAccepted.load(ordering: .relaxed),
            connectionsRejected: connectionsRejected.load(ordering: .relaxed),
            bytesIn: bytesIn.load(ordering: .relaxed),
            bytesOut: bytesOut.load(ordering: .relaxed),
            loopIterations: loopIterations.load(ordering: .relaxed),
            forwardedRequests: forwardedRequests.load(ordering: .relaxed),
            forwardNotOwner: forwardNotOwner.load(ordering: .relaxed),
            forwardRelayed: forwardRelayed.load(ordering: .relaxed),
            forwardHopLimit: forwardHopLimit.load(ordering: .relaxed),
            readsFromCopyServed: readsFromCopyServed.load(ordering: .relaxed),
            readsFromCopyRefused: readsFromCopyRefused.load(ordering: .relaxed),
            readsFromCopyAtHolder: readsFromCopyAtHolder.load(ordering: .relaxed),
            leaseRefusals: leaseRefusals.load(ordering: .relaxed),
            requestsParked: requestsParked.load(ordering: .relaxed),
            parkedTimedOut: parkedTimedOut.load(ordering: .relaxed),
            parkedWaiting: parkedWaiting.load(ordering: .relaxed),
            protocolErrors: protocolErrors.load(ordering: .relaxed),
            walErrors: walErrors.load(ordering: .relaxed),
            walTruncateServed: walTruncateServed.load(ordering: .relaxed),
            walRefusingWrites: walRefusingWrites.load(ordering: .relaxed),
            walBatchInFlight: walBatchInFlight.load(ordering: .relaxed),
            walBytes: walBytes.load(ordering: .relaxed),
            walBatches: walBatches.load(ordering: .relaxed),
            walSnapshots: walSnapshots.load(ordering: .relaxed),
            rateLimited: rateLimited.load(ordering: .relaxed),
            streamEntriesSent: streamEntriesSent.load(ordering: .relaxed),
            streamEntriesApplied: streamEntriesApplied.load(ordering: .relaxed),
            quorum: quorum.withLock { $0 }
        )
    }
}

public struct ReactorStatsSnapshot: Sendable, Equatable {
    public var items = 0
    /// Entries of the shards this node holds a copy of without being their
    /// primary (not in `items`, as DBSIZE counts).
    public var replicaItems = 0
    public var usedMemoryBytes = 0
    /// Bytes allocated to client connections' input and output buffers.
    public var clientBufferBytes = 0
    /// Entries FLUSHALL ASYNC removed that are not freed yet.
    public var lazyFreePendingObjects = 0
    /// What the reactor holds for its peers beyond the rings: overflow
    /// buffers and heap copies of large payloads not yet consumed.
    public var interconnectBytes = 0
    public var evictions = 0
    public var expired = 0
    public var commands = 0
    public var keyspaceHits = 0
    public var keyspaceMisses = 0
    public var connections = 0
    public var connectionsAccepted = 0
    public var connectionsRejected = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var loopIterations = 0
    public var forwardedRequests = 0
    /// Requests other nodes forwarded here for a shard this node is not the
    /// primary of in its own view, answered TRYAGAIN / REDIRECT.
    public var forwardNotOwner = 0
    /// Requests another node forwarded here for a shard another node holds
    /// in this node's view, passed on to that holder (one hop more).
    public var forwardRelayed = 0
    /// Of `forwardNotOwner`: those this node would have passed on to the
    /// holder it knows, but that had been passed on `Reactor.maxHops`
    /// times already.
    public var forwardHopLimit = 0
    /// Reads sent here because their shard's primary could not be reached
    /// (ForwardingRelay, "Reads while the primary is unreachable"):
    /// answered from this node's copy, or refused as it held no whole one;
    /// or run as any request of the shard where this node holds its lease
    /// by then (the sender still named the unreachable primary).
    public var readsFromCopyServed = 0
    public var readsFromCopyRefused = 0
    public var readsFromCopyAtHolder = 0
    /// Writes refused because this node did not hold the shard's lease.
    public var leaseRefusals = 0
    /// Requests that waited for their shard's lease rather than being
    /// refused at once (Reactor+Parking.swift); those still unresolved at
    /// the wait's limit; those waiting now.
    public var requestsParked = 0
    public var parkedTimedOut = 0
    public var parkedWaiting = 0
    public var protocolErrors = 0
    /// Failed log writes, fsyncs and snapshots.
    public var walErrors = 0
    /// The newest truncate request (NodeContext.walTruncateRequests) a snapshot started after it has served.
    public var walTruncateServed = 0
    /// Reactors whose log refuses writes after a disk fault (0 or 1 per reactor).
    public var walRefusingWrites = 0
    /// Log batches in flight now (for /debug/reactors).
    public var walBatchInFlight = 0
    /// Log bytes made durable.
    public var walBytes = 0
    /// Log batches made durable.
    public var walBatches = 0
    /// Snapshots this reactor completed since start.
    public var walSnapshots = 0
    /// Requests refused by the rate limit.
    public var rateLimited = 0
    /// Entries of shard streams this reactor walked and sent as a primary,
    /// and applied as a follower.
    public var streamEntriesSent = 0
    public var streamEntriesApplied = 0
    /// Writes that waited for write_quorum, and how.
    public var quorum = QuorumCounters()

    mutating func add(_ o: ReactorStatsSnapshot) {
        items += o.items
        replicaItems += o.replicaItems
        usedMemoryBytes += o.usedMemoryBytes
        clientBufferBytes += o.clientBufferBytes
        lazyFreePendingObjects += o.lazyFreePendingObjects
        interconnectBytes += o.interconnectBytes
        evictions += o.evictions
        expired += o.expired
        commands += o.commands
        keyspaceHits += o.keyspaceHits
        keyspaceMisses += o.keyspaceMisses
        connections += o.connections
        connectionsAccepted += o.connectionsAccepted
        connectionsRejected += o.connectionsRejected
        bytesIn += o.bytesIn
        bytesOut += o.bytesOut
        loopIterations += o.loopIterations
        forwardedRequests += o.forwardedRequests
        forwardNotOwner += o.forwardNotOwner
        forwardRelayed += o.forwardRelayed
        forwardHopLimit += o.forwardHopLimit
        readsFromCopyServed += o.readsFromCopyServed
        readsFromCopyRefused += o.readsFromCopyRefused
        readsFromCopyAtHolder += o.readsFromCopyAtHolder
        leaseRefusals += o.leaseRefusals
        requestsParked += o.requestsParked
        parkedTimedOut += o.parkedTimedOut
        parkedWaiting += o.parkedWaiting
        protocolErrors += o.protocolErrors
        walErrors += o.walErrors
        walTruncateServed = max(walTruncateServed, o.walTruncateServed)
        walRefusingWrites += o.walRefusingWrites
        walBatchInFlight += o.walBatchInFlight
        walBytes += o.walBytes
        walBatches += o.walBatches
        walSnapshots += o.walSnapshots
        rateLimited += o.rateLimited
        streamEntriesSent += o.streamEntriesSent
        streamEntriesApplied += o.streamEntriesApplied
        quorum.add(o.quorum)
    }
}
