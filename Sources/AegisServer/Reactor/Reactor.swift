import AegisProtocol
import AegisStore
import AegisTLS
import CSupport
import Glibc
import Logging

/// One event loop on one thread (pinned to one core): its listening socket,
/// its connections, its shards, its inbound rings, its timers.
///
/// Thread confinement: a Reactor is built on the main thread before its
/// thread starts and is touched only by that thread afterwards
/// (`@unchecked Sendable` records exactly that hand-over).
///
/// Its state lives in parts, one job each, stored inline (structs, so the
/// request path reaches them without another pointer):
///
///   poller     epoll set, wake-up eventfd, maintenance timer (EventPoller.swift)
///   listener   accepting, pausing when out of descriptors, refusals (Listener.swift, Reactor+Accept.swift)
///   table      connection slots and the dirty list (ConnectionTable.swift, Reactor+Connections.swift)
///   buffers    what clients make it hold, and the bounds (ClientBufferAccount.swift)
///   shards     the shard stores it owns (OwnedShards.swift)
///   forwarding records for peers, backlog, awaited replies (Forwarding/)
///   log        write-ahead log, held replies, snapshots (Log/)
///   rate       the rate limit's local allowance (RateGate.swift)
///   schedule   maintenance, timeouts, publishing, drain (LoopSchedule.swift, Reactor+Maintenance.swift)
///   scratch    reused request-path buffers (RequestScratch.swift)
///   tlsBuffered  TLS connections with plaintext waiting in OpenSSL (Reactor+TLS.swift)
///   counters, commandMetrics: what it publishes (Reactor+Maintenance.swift)
///
/// Commands (Commands/) run against these parts. A replication or shard
/// role would be one more part with its own file(s), stepped from the loop.
///
/// One loop iteration, top to bottom (see `runOnce`):
///   wait for events (sleep only when no work is queued anywhere; a shard
///   stream's walk sleeps a short rest between slices)
///   → read ready sockets, parse every complete request, execute or forward
///   → drain inbound rings (requests for our shards, replies for our clients)
///   → requests waiting for a lease whose wait is over
///   → push records that waited for ring space
///   → flush replies, one write per connection
///   → at most one slice of a shard stream, when its pacing allows
///   → wake reactors we sent work to, only if they sleep
///   → timers: expiry sweep, connection timeouts.
final class Reactor: @unchecked Sendable {
    let index: Int
    let node: NodeContext
    let logger: Logger
    /// Every socket, epoll and log system call goes through it (Kernel/).
    let door: KernelDoor
    let poller: EventPoller
    var listener: Listener
    var table = ConnectionTable()
    var buffers: ClientBufferAccount
    var shards: OwnedShards
    var forwarding: ForwardingState
    var routes: ReactorRoutes
    var replica: ReplicaState
    var quorum: QuorumState
    var readQuorum: ReadQuorumState
    /// The shard leases this node holds (Replication/Reactor+Leases.swift).
    var leases = ReactorLeases()
    var log = ReactorLog()
    var rate = RateGate()
    var schedule = LoopSchedule()
    let scratch = RequestScratch()
    /// RENAME/RENAMENX/COPY waiting for another reactor (KeyMoves.swift).
    var moves = MoveTable()
    /// Requests waiting for their shard's lease (Replication/Reactor+Parking.swift).
    var parked: ParkedRequests
    /// Copies of shards this node no longer replicates, detached from their
    /// shards and freed a slice at a time between requests (Reactor+Routing.swift).
    var droppedCopies: [LazyFreeBatch] = []
    /// MSETNX over keys of several reactors (MSetNXAcrossReactors.swift).
    var keySets = MSetNXTable()
    /// WAITs asking for replicas: answered 0 when their timeout passes.
    var waits: [WaitingClient] = []
    /// AUTH answers held back after repeated failures from one address
    /// (Reactor+Auth.swift); at most one per connection.
    var heldAuthAnswers: [HeldAuthAnswer] = []
    /// TLS connections whose decrypted bytes wait in OpenSSL while their
    /// socket is empty (Reactor+TLS.swift); each listed once.
    var tlsBuffered: [Connection] = []

    /// Two clocks, both read once per loop iteration (vDSO reads, no
    /// syscall). `now` is the exact wall clock in unix ms: only for TTLs,
    /// which are absolute unix times and decided to the millisecond as
    /// redis-server decides them. Read after epoll_wait returns, it is never
    /// earlier than the arrival of the requests the batch answers (a
    /// forwarded request refreshes it: see `drainInbound`), so PTTL never
    /// answers more than was set. `monotonicMs` is the coarse monotonic
    /// clock: for every timer, timeout and deadline, which must not jump
    /// when NTP or an operator steps the wall clock (a step forward used to
    /// close every idle connection; a step back switched timeouts off).
    var now: Int64 = 0
    var monotonicMs: Int64 = 0
    var counters = ReactorStatsSnapshot()
    let commandMetrics = CommandMetrics()
    /// Debug builds check that only the reactor's thread runs it (OwnerThread.swift).
    var ownerThread = OwnerThread()

    init(index: Int, node: NodeContext, listenFD: Int32) throws {
        self.index = index
        self.node = node
        self.logger = node.logger
        let faults = try KernelFaultPlan.fromEnvironment()
        if let faults {
            logger.warning("kernel fault injection armed (for tests only)", metadata: [
                "reactor": "\(index)", "faults": "\(faults.specification)",
            ])
        }
        self.door = KernelDoor(faults: faults)
        let config = node.config
        self.poller = try EventPoller(
            wakeFD: node.interconnect.wakeFDs[index], listenFD: listenFD,
            maintenanceIntervalMs: max(Int(config.maintenanceInterval.milliseconds), 10), door: door)
        self.listener = Listener(fd: listenFD)
        let limitBytes = node.storeBudgetBytes / node.reactorCount
        let ledger = MemoryLedger(limitBytes: limitBytes, evictionRatio: config.evictionRatio)
        let inputCapBytes = config.clientInputMaxMB << 20
        self.buffers = ClientBufferAccount(
            inputCapBytes: inputCapBytes,
            inputBudgetBytes: config.maxMemoryMB == 0 ? Int.max : max(limitBytes / 4, inputCapBytes))
        self.shards = OwnedShards(reactor: index, shardOwner: node.shardOwner, ledger: ledger,
                                  tombstones: Self.tombstoneLimits(replicationFactor: config.replicationFactor))
        self.forwarding = ForwardingState(endpointCount: node.interconnect.endpointCount)
        self.replica = ReplicaState(enabled: config.replicationFactor > 1, shardCount: node.shardOwner.count)
        self.quorum = QuorumState(writeQuorum: config.replicationFactor > 1 ? config.writeQuorum : 0,
                                  shardCount: node.shardOwner.count)
        self.readQuorum = ReadQuorumState(readQuorum: config.replicationFactor > 1 ? config.readQuorum : 1)
        self.routes = ReactorRoutes(shardOwner: node.shardOwner, clusterEndpoint: node.interconnect.clusterEndpoint)
        self.parked = ParkedRequests(shardCount: node.shardOwner.count)
    }

    // MARK: - The loop

    func run() {
        // Not pinned: on machines where clients or other services share the
        // cores (as benchmarks here do), pinning kept a reactor off an idle
        // core and cost throughput; the scheduler keeps a busy thread on its
        // core anyway.
        ownerThread.claim()  // the hand-over from the thread that built (and replayed) this reactor
        shards.claim()
        now = aegis_now_ms()
        monotonicMs = aegis_monotonic_ms_coarse()
        while runOnce() {}
        node.interconnect.markExited(index)
        shutdown()
    }

    /// One iteration; returns false when the reactor should exit.
    private func runOnce() -> Bool {
        ownerThread.assertOwner("a reactor")
        #if DEBUG
        debugStallWhileRequested()
        #endif
        var timeoutMs = sleepTimeout()
        // A pass since the last publish changed what readers see (INFO,
        // /metrics, /stats): wake within 1 ms to publish it, rather than
        // sleep until the next event, which may be the maintenance timer
        // 100 ms away (a bulk load's last keys counted that late).
        let wakesToPublish = schedule.passSincePublish && (timeoutMs < 0 || timeoutMs > 1)
        if wakesToPublish { timeoutMs = 1 }
        // A walk holding credit, or a dropped copy to free: rest until the
        // next slice is due (sleeping, so a request that arrives meanwhile
        // is read at once), not poll.
        var streamRestNs: Int64 = 0
        if timeoutMs != 0 && hasBackgroundSliceDue {
            streamRestNs = replica.pacer.restRemainingNs(nowNs: aegis_monotonic_ns(), streamsOnly: droppedCopies.isEmpty)
            if streamRestNs == 0 { timeoutMs = 0 }
        }
        var slept = false
        var waitMs: Int32 = 0
        if timeoutMs != 0 && forwarding.awaitedReplies > 0 {
            // A reply from another reactor is due. Give up the core once
            // before sleeping: when that reactor was just woken to answer, it
            // often runs here and the reply is in the ring when we look
            // again, saving our sleep and its wake-up write. Measured: 12%
            // less CPU per request with two reactors, unpipelined.
            sched_yield()
        }
        if timeoutMs != 0 && node.interconnect.prepareToSleep(index) {
            // A lease set or routing published since this pass looked: the
            // cluster loop's wake-up (ClusterLoop.wakeReactorsForNewSets) may
            // have come before we said we sleep. Same handshake as the rings'.
            if node.routing.version != routes.version || node.leases.version != leases.version {
                node.interconnect.didWake(index)
            } else {
                waitMs = timeoutMs
                slept = true
            }
        }
        let restsForStream = slept && streamRestNs > 0 && (waitMs < 0 || streamRestNs < Int64(waitMs) * 1_000_000)
        let ready = restsForStream ? poller.wait(timeoutNs: streamRestNs) : poller.wait(timeoutMs: waitMs)
        if slept { node.interconnect.didWake(index) }
        now = aegis_now_ms()
        monotonicMs = aegis_monotonic_ms_coarse()
        counters.loopIterations &+= 1
        if node.routing.version != routes.version { applyRouting() }
        if node.leases.version != leases.version { applyLeases() }
        // One clock read per batch, not per request: see CommandMetrics.
        if ready > 0 { commandMetrics.batchStartNs = aegis_monotonic_ns() }

        var clientEventsReady = false
        if ready > 0 {
            for i in 0..<Int(ready) {
                let event = poller.events[i]
                if event.token < EventPoller.walToken || event.token == EventPoller.listenerToken { clientEventsReady = true }
                handle(event: event)
            }
        }
        drainInbound()
        abandonQuorumWaitsOfMovedShards()
        if !parked.isEmpty && (monotonicMs >= parked.earliestDeadlineMs || node.state == .draining) { resumeParked() }
        expireQuorumWaits()
        expireReadQuorums()
        submitLogBatch()
        flushOverflow()
        if !forwarding.backlog.parked.isEmpty { resumeParkedIfBacklogShrank() }
        if !tlsBuffered.isEmpty { readBufferedTLS() }
        flushDirty()
        if commandMetrics.batchRequests > 0 { commandMetrics.closeBatch(endNs: aegis_monotonic_ns()) }
        // After this pass's replies are written: a slice is microseconds of
        // copying and checksums, which the clients whose requests this pass
        // read should not wait for. Its records still leave in this pass
        // (notifyTargets). Paced: see StreamSlicePacer.
        // Freeing a dropped copy takes the same turns, after the streams
        // (and while stream_rate_limit_mb holds them).
        if hasBackgroundSliceDue {
            let sliceNs = aegis_monotonic_ns()
            if replica.pacer.sliceDue(nowNs: sliceNs, clientEventsReady: clientEventsReady) {
                if hasStreamSliceDue && replica.pacer.streamSliceAllowed(nowNs: sliceNs) {
                    walkOneStreamSlice(nowNs: sliceNs)
                } else if !droppedCopies.isEmpty {
                    freeOneSliceOfDroppedCopies(nowNs: sliceNs)
                }
            }
        }
        notifyTargets()
        if schedule.maintenanceDue || monotonicMs >= schedule.nextMaintenanceMs { maintenance() }
        if node.state == .draining { drainStep() }
        // Readers (INFO, metrics) need fresh numbers, not per-iteration ones:
        // publish once per clock tick of the coarse clock, or when the wake
        // for it came with nothing else to do (the coarse clock may not have
        // ticked yet: waiting for it cost a wake-up per millisecond).
        if monotonicMs != schedule.lastPublishedMs || (wakesToPublish && ready == 0) {
            schedule.lastPublishedMs = monotonicMs
            schedule.passSincePublish = false
            publishStats()
        } else {
            schedule.passSincePublish = true
        }
        return !shouldExit()
    }

    /// -1 = block until an event (the maintenance timer is one), 0 = poll,
    /// 1 = come back soon to retry records waiting for ring space. A walk
    /// with credit shortens it to its rest (`runOnce`).
    private func sleepTimeout() -> Int32 {
        if !table.dirty.isEmpty { return 0 }
        if forwarding.hasOverflow { return 1 }
        if !forwarding.backlog.parked.isEmpty { return 1 }
        if !tlsBuffered.isEmpty && hasReadableTLSBuffer { return 0 }
        return -1
    }

    private func handle(event: aegis_epoll_event) {
        switch event.token {
        case EventPoller.listenerToken:
            acceptConnections()
        case EventPoller.timerToken:
            poller.acknowledgeTimer()
            schedule.maintenanceDue = true
        case EventPoller.walToken:
            handleLogCompletions()
        case EventPoller.wakeToken:
            // Edge-triggered and never read: every write makes a new edge, and
            // skipping the read saves a syscall per wake-up. The 64-bit counter
            // cannot fill in the life of a process.
            break
        default:
            let slot = Int(truncatingIfNeeded: event.token & 0xFFFF_FFFF)
            let generation = UInt32(truncatingIfNeeded: event.token >> 32)
            guard let connection = table.connection(slot: slot, generation: generation) else { return }
            if let session = connection.tls {
                if !session.isEstablished {
                    advanceHandshake(connection, session)
                    return
                }
                if session.readWantsWrite && event.events & AEGIS_EPOLLOUT != 0 {
                    session.readWantsWrite = false
                    readAvailable(connection)
                    if connection.isClosed { return }
                }
            }
            if event.events & (AEGIS_EPOLLHUP | AEGIS_EPOLLERR) == 0 && event.events & AEGIS_EPOLLIN != 0 && outboundIsOverLimit {
                parkForBacklog(connection)
                return
            }
            if event.events & (AEGIS_EPOLLIN | AEGIS_EPOLLHUP | AEGIS_EPOLLERR) != 0 {
                readAvailable(connection)
            }
            if !connection.isClosed && event.events & AEGIS_EPOLLOUT != 0 {
                markDirty(connection)
            }
        }
    }

    // MARK: - Lifecycle

    /// Draining: no new connections; each connection is closed once every
    /// reply it is owed has been written. The reactor keeps serving its rings
    /// until every reactor has drained (others may still forward to it).
    private func drainStep() {
        if listener.fd >= 0 {
            poller.remove(listener.fd, .listener)
            door.closeSocket(listener.fd, .listener)
            listener.fd = -1
            schedule.drainDeadlineMs = monotonicMs + node.runtime.drainTimeoutMs.load(ordering: .relaxed)
        }
        for case let connection? in table.connections where connection.replies.isEmpty && connection.output.isEmpty && connection.input.isEmpty {
            close(connection)
        }
        if monotonicMs >= schedule.drainDeadlineMs { closeOverdueConnections() }
        noteSnapshotOwedAtStop()
        if counters.connections == 0 && !schedule.countedAsDrained {
            schedule.countedAsDrained = true
            node.drainedReactors.wrappingAdd(1, ordering: .acquiringAndReleasing)
        }
    }

    /// drain_timeout has run out: whatever is still owed is dropped. Said
    /// once, with how much, because a client that lost replies at a stop
    /// otherwise leaves no trace of it on the server.
    private func closeOverdueConnections() {
        var connectionsCut = 0
        var unsentBytes = 0
        var unansweredReplies = 0
        for case let connection? in table.connections {
            let bytes = connection.output.readableBytes + connection.replies.staging.readableBytes
            if bytes > 0 || !connection.replies.isEmpty {
                connectionsCut += 1
                unsentBytes += bytes
                unansweredReplies += connection.replies.outstanding
            }
            close(connection)
        }
        guard connectionsCut > 0 else { return }
        logger.warning("drain_timeout expired: replies owed to clients were dropped", metadata: [
            "reactor": "\(index)", "connections": "\(connectionsCut)", "unsent_bytes": "\(unsentBytes)",
            "queued_replies": "\(unansweredReplies)",
            "drain_timeout_ms": "\(node.runtime.drainTimeoutMs.load(ordering: .relaxed))",
        ])
    }

    private func shouldExit() -> Bool {
        node.state == .draining && schedule.countedAsDrained
            && node.drainedReactors.load(ordering: .acquiring) == node.reactorCount
            && !forwarding.hasOverflow
            && logIsSettled
    }

    private func shutdown() {
        for case let connection? in table.connections { close(connection) }
        if listener.fd >= 0 { door.closeSocket(listener.fd, .listener) }
        poller.close()
        publishStats()
        publishCommandStats()
    }
}

extension Duration {
    /// Whole milliseconds (durations in the config are at least 1 ms apart).
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
