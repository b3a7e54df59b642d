import AegisProtocol
import AegisStore
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
/// One loop iteration, top to bottom (see `runOnce`):
///   wait for events (sleep only when no work is queued anywhere)
///   → read ready sockets, parse every complete request, execute or forward
///   → drain inbound rings (requests for our shards, replies for our clients)
///   → push records that waited for ring space
///   → flush replies, one write per connection
///   → wake reactors we sent work to, only if they sleep
///   → timers: expiry sweep, connection timeouts.
final class Reactor: @unchecked Sendable {
    let index: Int
    let node: NodeContext
    let logger: Logger
    let epollFD: Int32
    private var listenFD: Int32
    /// Whether accepting is paused for want of descriptors (AcceptPause.swift).
    private var acceptPause = AcceptPause()
    /// Connections refused at max_conns that have not sent their first byte
    /// yet: the refusal must be worded in their protocol. At most
    /// `maxRefusalsAwaitingFirstByte`, each for at most `refusalWaitMs`.
    private var refusals: [Connection] = []
    private let wakeFD: Int32
    /// Fires every maintenance interval, so epoll_wait can block without a
    /// timeout: a timeout would arm a kernel hrtimer on every sleep.
    private let maintenanceTimerFD: Int32

    // Connections: a slot table with generations, so a reply that arrives
    // after its connection closed and the slot was reused is recognised.
    var connections: [Connection?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private var dirty: [Connection] = []

    // Shards this reactor owns (nil for the others) and their memory budget.
    let shards: [ShardStore?]
    let ledger: MemoryLedger
    let ownedShardIndices: [Int]

    // Reused scratch space: nothing on the request path allocates per request.
    let readScratch = WireBuffer(capacity: 256 * 1024)
    let replyScratch = WireBuffer(capacity: 64 * 1024)
    let partScratch = WireBuffer(capacity: 1024)
    let valueScratch = WireBuffer()
    let scanScratch = WireBuffer()
    let arguments = RESPArguments()
    let forwardedArguments = RESPArguments()
    let respLimits = RESPLimits()
    let binaryLimits = BinaryLimits()

    /// Bounds on what clients make this reactor hold (client_input_max_mb):
    /// one connection's partial request, and all of its connections' input
    /// buffers together (its share of a quarter of max_memory_mb, at least
    /// one connection's cap).
    let inputCapBytes: Int
    let inputBudgetBytes: Int
    /// Capacities of this reactor's connection buffers: input buffers, and
    /// all buffers (input, output, reply staging). Kept exact by
    /// `chargeBuffers`; reported in INFO and to the memory ledger.
    var inputBufferBytes = 0
    var clientBufferBytes = 0

    // Outbound records that did not fit their ring yet, per target reactor.
    var overflow: [WireBuffer]
    var mustNotify: [Bool]
    /// Debug builds check that only the reactor's thread runs it (OwnerThread.swift).
    var ownerThread = OwnerThread()
    /// What this reactor holds for its peers beyond the rings, and the
    /// clients it stopped reading because of it (Router.swift).
    var backlog = OutboundBacklog()
    private var events: UnsafeMutablePointer<aegis_epoll_event>
    private static let maxEvents: Int32 = 256

    /// Two clocks, both read once per loop iteration (vDSO reads, no
    /// syscall). `now` is the coarse wall clock in unix ms: only for TTLs,
    /// which are absolute unix times. `monotonicMs` is the coarse monotonic
    /// clock: for every timer, timeout and deadline, which must not jump
    /// when NTP or an operator steps the wall clock (a step forward used to
    /// close every idle connection; a step back switched timeouts off).
    var now: Int64 = 0
    var monotonicMs: Int64 = 0
    var counters = ReactorStatsSnapshot()
    let commandMetrics = CommandMetrics()
    /// Rate limit state (CommandMetrics.swift): on/off as of the last
    /// publishStats, and requests this reactor may still admit.
    var rateLimited = false
    var rateLimitSeen = 0
    var rateAllowance = 0
    private var nextMaintenanceMs: Int64 = 0
    private var nextTimeoutCheckMs: Int64 = 0
    private var sweepShardCursor = 0
    private var drainDeadlineMs: Int64 = 0
    private var countedAsDrained = false
    private var lastPublishedMs: Int64 = 0
    private var maintenanceDue = false
    /// Requests this reactor forwarded whose replies have not come back yet.
    var awaitedReplies = 0

    // Write-ahead log (nil when wal_mode is off); see Reactor+WAL.swift.
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
    var walEvents: [WALWriter.Event] = []
    var nextSnapshotAttemptMs: Int64 = 0
    var nextLogProbeMs: Int64 = 0
    var snapshotRequestsSeen = 0
    /// The operator request the running snapshot answers (0 = none).
    var snapshotServesRequest = 0
    var snapshotWanted = false
    var snapshotShardPosition = 0
    var snapshotCursor: UInt64 = 0

    static let listenerToken = UInt64.max
    static let wakeToken = UInt64.max - 1
    static let timerToken = UInt64.max - 2
    static let walToken = UInt64.max - 3

    init(index: Int, node: NodeContext, listenFD: Int32) throws {
        self.index = index
        self.node = node
        self.logger = node.logger
        self.listenFD = listenFD
        let epollFD = aegis_epoll_create()
        if epollFD < 0 { throw SystemError(operation: "epoll_create1", code: -epollFD) }
        self.epollFD = epollFD
        self.wakeFD = node.interconnect.wakeFDs[index]
        let intervalMs = max(Int(node.config.maintenanceInterval.milliseconds), 10)
        let timerFD = aegis_timerfd_create_periodic(Int32(intervalMs))
        if timerFD < 0 { throw SystemError(operation: "timerfd_create", code: -timerFD) }
        self.maintenanceTimerFD = timerFD
        let config = node.config
        let limitBytes = node.storeBudgetBytes / node.reactorCount
        self.ledger = MemoryLedger(limitBytes: limitBytes, evictionRatio: config.evictionRatio)
        self.inputCapBytes = config.clientInputMaxMB << 20
        self.inputBudgetBytes = config.maxMemoryMB == 0 ? Int.max : max(limitBytes / 4, inputCapBytes)
        var shards: [ShardStore?] = []
        var owned: [Int] = []
        for shard in 0..<config.numShards {
            if node.shardOwner[shard] == index {
                shards.append(ShardStore(ledger: ledger))
                owned.append(shard)
            } else {
                shards.append(nil)
            }
        }
        self.shards = shards
        self.ownedShardIndices = owned
        self.overflow = (0..<node.reactorCount).map { _ in WireBuffer() }
        self.mustNotify = Array(repeating: false, count: node.reactorCount)
        self.events = .allocate(capacity: Int(Self.maxEvents))
        try check(aegis_epoll_add(epollFD, listenFD, AEGIS_EPOLLIN, Self.listenerToken), "epoll_ctl(listener)")
        try check(aegis_epoll_add(epollFD, wakeFD, AEGIS_EPOLLIN | AEGIS_EPOLLET, Self.wakeToken), "epoll_ctl(eventfd)")
        try check(aegis_epoll_add(epollFD, maintenanceTimerFD, AEGIS_EPOLLIN, Self.timerToken), "epoll_ctl(timerfd)")
    }

    private func check(_ result: Int32, _ operation: String) throws {
        if result < 0 { throw SystemError(operation: operation, code: -result) }
    }

    // MARK: - The loop

    func run() {
        // Not pinned: on machines where clients or other services share the
        // cores (as benchmarks here do), pinning kept a reactor off an idle
        // core and cost throughput; the scheduler keeps a busy thread on its
        // core anyway.
        ownerThread.claim()  // the hand-over from the thread that built (and replayed) this reactor
        now = aegis_now_ms_coarse()
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
        let timeoutMs = sleepTimeout()
        var slept = false
        var waitMs: Int32 = 0
        if timeoutMs != 0 && awaitedReplies > 0 {
            // A reply from another reactor is due. Give up the core once
            // before sleeping: when that reactor was just woken to answer, it
            // often runs here and the reply is in the ring when we look
            // again, saving our sleep and its wake-up write. Measured: 12%
            // less CPU per request with two reactors, unpipelined.
            sched_yield()
        }
        if timeoutMs != 0 && node.interconnect.prepareToSleep(index) {
            waitMs = timeoutMs
            slept = true
        }
        let ready = aegis_epoll_wait(epollFD, events, Self.maxEvents, waitMs)
        if slept { node.interconnect.didWake(index) }
        now = aegis_now_ms_coarse()
        monotonicMs = aegis_monotonic_ms_coarse()
        counters.loopIterations &+= 1
        // One clock read per batch, not per request: see CommandMetrics.
        if ready > 0 { commandMetrics.batchStartNs = aegis_monotonic_ns() }

        if ready > 0 {
            for i in 0..<Int(ready) {
                handle(event: events[i])
            }
        }
        drainInbound()
        submitLogBatch()
        flushOverflow()
        if !backlog.parked.isEmpty { resumeParkedIfBacklogShrank() }
        flushDirty()
        if commandMetrics.batchRequests > 0 { commandMetrics.closeBatch(endNs: aegis_monotonic_ns()) }
        notifyTargets()
        if maintenanceDue || monotonicMs >= nextMaintenanceMs { maintenance() }
        if node.state == .draining { drainStep() }
        // Readers (INFO, metrics) need fresh numbers, not per-iteration ones:
        // publish once per clock tick of the coarse clock.
        if monotonicMs != lastPublishedMs {
            lastPublishedMs = monotonicMs
            publishStats()
        }
        return !shouldExit()
    }

    /// -1 = block until an event (the maintenance timer is one), 0 = poll,
    /// 1 = come back soon to retry records waiting for ring space.
    private func sleepTimeout() -> Int32 {
        if !dirty.isEmpty { return 0 }
        for buffer in overflow where !buffer.isEmpty { return 1 }
        if !backlog.parked.isEmpty { return 1 }
        return -1
    }

    private func handle(event: aegis_epoll_event) {
        switch event.token {
        case Self.listenerToken:
            acceptConnections()
        case Self.timerToken:
            _ = aegis_timerfd_acknowledge(maintenanceTimerFD)
            maintenanceDue = true
        case Self.walToken:
            handleLogCompletions()
        case Self.wakeToken:
            // Edge-triggered and never read: every write makes a new edge, and
            // skipping the read saves a syscall per wake-up. The 64-bit counter
            // cannot fill in the life of a process.
            break
        default:
            let slot = Int(truncatingIfNeeded: event.token & 0xFFFF_FFFF)
            let generation = UInt32(truncatingIfNeeded: event.token >> 32)
            guard slot < connections.count, let connection = connections[slot], connection.generation == generation else { return }
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

    // MARK: - Accepting

    private func acceptConnections() {
        // Bounded per iteration so a connection storm cannot starve clients.
        for _ in 0..<64 {
            let fd = aegis_tcp_accept(listenFD)
            if fd < 0 {
                let error = -fd
                if error == EAGAIN || error == EWOULDBLOCK || error == EINTR { return }
                if AcceptPause.concernsOneConnection(error) { continue }
                pauseAccepting(error: error)
                return
            }
            if let failures = acceptPause.noteAccepted() {
                logger.notice("accepting client connections again", metadata: [
                    "reactor": "\(index)", "failed_accepts": "\(failures)",
                ])
            }
            if node.state == .draining {
                _ = aegis_close(fd)
                continue
            }
            let open = node.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
            if open > node.runtime.maxConns.load(ordering: .relaxed) {
                counters.connectionsRejected &+= 1
                refuseAtCapacity(fd: fd)
                continue
            }
            register(fd: fd, refusing: false)
        }
    }

    /// Out of descriptors (or kernel memory): the pending connection stays in
    /// the backlog and the listener stays readable, so stop polling it until
    /// the next maintenance tick instead of spinning on it.
    private func pauseAccepting(error: Int32) {
        if !acceptPause.isPaused { _ = aegis_epoll_remove(epollFD, listenFD) }
        guard let report = acceptPause.noteFailure(error: error, nowMs: monotonicMs) else { return }
        logger.warning("cannot accept client connections; pausing accepts until descriptors free up", metadata: [
            "reactor": "\(index)", "error": "\(SystemError(operation: "accept4", code: report.error))",
            "failed_accepts": "\(report.failures)", "interval_ms": "\(AcceptPause.reportIntervalMs)",
            "open_connections": "\(node.openConnections.load(ordering: .relaxed))",
        ])
    }

    /// Called every maintenance tick: one accept attempt per tick while
    /// descriptors are short costs nothing and notices when they free up.
    private func resumeAcceptingIfPaused() {
        guard acceptPause.isPaused, listenFD >= 0 else { return }
        // Left paused when epoll cannot take it back: the next tick retries.
        guard aegis_epoll_add(epollFD, listenFD, AEGIS_EPOLLIN, Self.listenerToken) == 0 else { return }
        acceptPause.resume()
        acceptConnections()
    }

    static let maxRefusalsAwaitingFirstByte = 16
    static let refusalWaitMs: Int64 = 1000

    /// Over max_conns. The protocol is not known until the client's first
    /// byte, and a RESP error line read by a binary client is a 759 MB frame
    /// length, so the connection is kept just long enough to hear it (see
    /// `answerRefusal`). It stays counted in openConnections meanwhile, and
    /// only a few wait at once: past that, or when the client says nothing
    /// within `refusalWaitMs`, it is closed without a word, which every
    /// client understands.
    private func refuseAtCapacity(fd: Int32) {
        refusals.removeAll { $0.isClosed }
        if refusals.count < Self.maxRefusalsAwaitingFirstByte {
            // register closes the descriptor itself when it fails.
            if let connection = register(fd: fd, refusing: true) { refusals.append(connection) }
            return
        }
        node.openConnections.wrappingSubtract(1, ordering: .relaxed)
        _ = aegis_close(fd)
    }

    /// The first bytes of a connection refused at max_conns: answer in its
    /// protocol, then close. Returns false for any other connection.
    private func answerRefusal(_ connection: Connection, _ buffer: WireBuffer) -> Bool {
        guard !refusals.isEmpty, let position = refusals.firstIndex(where: { $0 === connection }) else { return false }
        refusals.remove(at: position)
        let view = buffer.readableView
        if WireProtocolSniffer.classify(firstByte: view[0]) == .binary {
            // The request id is echoed when the header got that far.
            let idOffset = BinaryWire.lengthPrefix + 3
            var requestID: UInt64 = 0
            if view.count >= idOffset + 8 && view[BinaryWire.lengthPrefix] == BinaryWire.magic {
                for byte in view[idOffset..<(idOffset + 8)] { requestID = requestID << 8 | UInt64(byte) }
            }
            connection.wire = .binary
            BinaryResponseWriter.write(status: .error, requestID: requestID, errorText: "max number of clients reached", into: connection.output)
        } else {
            connection.wire = .resp2
            RESPWriter.error("ERR max number of clients reached", into: connection.output)
        }
        connection.closeAfterFlush = true
        buffer.clear()
        markDirty(connection)
        return true
    }

    /// Refused connections that have not spoken within refusalWaitMs are
    /// closed (maintenance tick), so they hold no slot under max_conns long.
    private func closeSilentRefusals() {
        guard !refusals.isEmpty else { return }
        for connection in refusals where !connection.isClosed && monotonicMs - connection.lastActivityMs >= Self.refusalWaitMs {
            close(connection)
        }
        refusals.removeAll { $0.isClosed }
    }

    @discardableResult
    private func register(fd: Int32, refusing: Bool) -> Connection? {
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
            generations[slot] &+= 1
        } else {
            slot = connections.count
            connections.append(nil)
            generations.append(0)
        }
        let clientID = node.nextClientID.wrappingAdd(1, ordering: .relaxed).oldValue
        let connection = Connection(
            fd: fd, index: UInt32(slot), generation: generations[slot], clientID: clientID,
            peer: "", nowMs: monotonicMs, requiresAuth: !node.config.authToken.isEmpty)
        connections[slot] = connection
        connection.interest = AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP
        let result = aegis_epoll_add(epollFD, fd, connection.interest, token(of: connection))
        if result < 0 {
            logger.warning("epoll_ctl(add) failed", metadata: ["error": "\(SystemError(operation: "epoll_ctl", code: -result))"])
            close(connection)
            return nil
        }
        counters.connections += 1
        if !refusing { counters.connectionsAccepted &+= 1 }
        return connection
    }

    @inline(__always) func token(of connection: Connection) -> UInt64 {
        UInt64(connection.index) | UInt64(connection.generation) << 32
    }

    // MARK: - Reading

    private func readAvailable(_ connection: Connection) {
        if connection.isBackpressured || connection.closeAfterFlush { return }
        // Complete requests are parsed straight out of the shared scratch;
        // only a partial request is copied into the connection's own buffer.
        let usesScratch = connection.input.isEmpty
        let buffer = usesScratch ? readScratch : connection.input
        assert(!usesScratch || readScratch.isEmpty)
        // A partial request is read no further than the connection's cap,
        // so the buffer never grows past it before the check below.
        let room = usesScratch ? Int.max : inputCapBytes - connection.input.readableBytes
        if room <= 0 {
            refuseOversizedInput(connection)
            return
        }
        let space = buffer.writableSpace(minimum: min(16 * 1024, room))
        let count = aegis_socket_receive(connection.fd, space.baseAddress, min(space.count, room))
        if count <= 0 {
            if count == 0 || (-count != EAGAIN && -count != EINTR) { close(connection) }
            return
        }
        buffer.commitWrite(count)
        counters.bytesIn &+= count
        connection.lastActivityMs = monotonicMs
        processInput(connection, buffer)
        if connection.isClosed {
            readScratch.clear()
            return
        }
        if usesScratch && !readScratch.isEmpty {
            connection.input.append(readScratch.readableView)
            readScratch.clear()
        }
        noteInputState(connection)
        if connection.isBackpressured { updateInterest(connection) }
    }

    /// Tracks how long unparsed input has waited (the read timeout), gives
    /// back the input buffer once it is empty, and holds a partial request
    /// to its bounds.
    private func noteInputState(_ connection: Connection) {
        if connection.input.isEmpty {
            connection.partialSinceMs = 0
            connection.input.releaseIfIdle(keep: 0)
        } else if connection.partialSinceMs == 0 {
            connection.partialSinceMs = monotonicMs
        }
        chargeBuffers(connection)
        // Input held back by backpressure is complete requests, and is not
        // read further until they have run: only a partial request can grow.
        guard !connection.input.isEmpty && !connection.inputHeldBack && !connection.closeAfterFlush else { return }
        let needed = connection.partialRequestNeeded
        if connection.input.readableBytes >= inputCapBytes || needed > inputCapBytes {
            // A request whose announced size is over the cap is refused as
            // soon as its length is read, not after the cap has been filled.
            refuseOversizedInput(connection)
            return
        }
        if needed > connection.input.readableBytes {
            connection.input.reserve(totalReadable: needed)
            chargeBuffers(connection)
        }
        if inputBufferBytes > inputBudgetBytes {
            shedLargestInputs()
        }
    }

    /// Over the reactor's input budget, the connections holding the most
    /// unparsed input are refused, largest first, as Redis's
    /// maxmemory-clients evicts its largest clients: the many clients with
    /// a small request in progress are not the ones that filled it. Runs
    /// only when over the budget, which no well-behaved load reaches.
    private func shedLargestInputs() {
        while inputBufferBytes > inputBudgetBytes {
            var largest: Connection?
            for case let candidate? in connections where !candidate.closeAfterFlush && !candidate.input.isEmpty {
                if candidate.chargedInputBytes > (largest?.chargedInputBytes ?? 0) { largest = candidate }
            }
            guard let largest else { return }
            refuseInput(largest, "node input buffers full: clients are sending more unfinished requests than this node holds; retry later")
        }
    }

    private func refuseOversizedInput(_ connection: Connection) {
        refuseInput(connection, "request larger than client_input_max_mb (\(inputCapBytes >> 20) MiB)")
    }

    /// Answers with an error in the connection's protocol, after the
    /// replies it is owed, drops its partial request and closes it.
    private func refuseInput(_ connection: Connection, _ reason: String) {
        counters.protocolErrors &+= 1
        logger.debug("closing connection: input over its bound", metadata: ["client": "\(connection.clientID)", "reason": "\(reason)"])
        connection.input.clear()
        connection.respResume = .start
        connection.binaryFrameNeeded = 0
        connection.partialSinceMs = 0
        connection.input.releaseIfIdle(keep: 0)
        if connection.wire == .binary {
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: 0, errorText: reason, into: $0) }
        } else {
            withReply(connection) { RESPWriter.error(string: "ERR " + reason, into: $0) }
        }
        connection.closeAfterFlush = true
        chargeBuffers(connection)
        markDirty(connection)
        updateInterest(connection)
    }

    /// Brings this reactor's counts of client buffer bytes up to date with
    /// the connection's buffers (a few loads when nothing changed).
    @inline(__always) func chargeBuffers(_ connection: Connection) {
        let input = connection.input.capacity
        let all = input + connection.output.capacity + connection.replies.staging.capacity
        inputBufferBytes += input - connection.chargedInputBytes
        clientBufferBytes += all - connection.chargedBufferBytes
        connection.chargedInputBytes = input
        connection.chargedBufferBytes = all
    }

    private func unchargeBuffers(_ connection: Connection) {
        inputBufferBytes -= connection.chargedInputBytes
        clientBufferBytes -= connection.chargedBufferBytes
        connection.chargedInputBytes = 0
        connection.chargedBufferBytes = 0
    }

    /// Reads and drops what the client already sent before a connection is
    /// closed for bad input: closing with unread bytes makes the kernel send
    /// a reset, and the client would lose the error that explains why.
    /// Bounded, so a client that keeps sending cannot hold the reactor.
    private func discardPendingInput(_ connection: Connection) {
        for _ in 0..<16 {
            readScratch.clear()
            let space = readScratch.writableSpace(minimum: 16 * 1024)
            let count = aegis_socket_receive(connection.fd, space.baseAddress, space.count)
            if count <= 0 { break }
            counters.bytesIn &+= count
        }
        readScratch.clear()
    }

    /// Parses and dispatches every complete request in `buffer`, stopping early
    /// when the connection's output is over its bound.
    func processInput(_ connection: Connection, _ buffer: WireBuffer) {
        connection.inputHeldBack = false
        var handledAny = false
        while !buffer.isEmpty && !connection.isClosed && !connection.closeAfterFlush {
            if connection.isBackpressured {
                connection.inputHeldBack = true
                break
            }
            guard let wire = connection.wire ?? sniff(connection, buffer) else { return }
            let consumed: Int
            switch wire {
            case .binary: consumed = intakeBinary(connection, buffer.readableView)
            case .resp2, .resp3: consumed = intakeRESP(connection, buffer.readableView)
            }
            if consumed == 0 { break }
            buffer.consume(consumed)
            handledAny = true
        }
        if handledAny { markDirty(connection) }
    }

    private func sniff(_ connection: Connection, _ buffer: WireBuffer) -> WireKind? {
        if answerRefusal(connection, buffer) { return nil }
        switch WireProtocolSniffer.classify(firstByte: buffer.readableView[0]) {
        case .binary: connection.wire = .binary
        case .resp: connection.wire = .resp2
        case .unknown where buffer.readableView[0] < 0x20 || buffer.readableView[0] >= 0x80:
            // Not text, so not RESP: most likely an oversized or corrupt
            // binary frame, which the binary parser answers in kind.
            connection.wire = .binary
        case .unknown:
            counters.protocolErrors &+= 1
            connection.wire = .resp2
            RESPWriter.error("ERR Protocol error: unrecognised first byte; expected RESP or AegisKV binary v1", into: connection.output)
            connection.closeAfterFlush = true
            buffer.clear()
            markDirty(connection)
            return nil
        }
        return connection.wire
    }

    // MARK: - Writing

    @inline(__always) func markDirty(_ connection: Connection) {
        if !connection.isDirty {
            connection.isDirty = true
            dirty.append(connection)
        }
    }

    private func flushDirty() {
        // New dirty connections can appear while flushing (a close frees a
        // slot); iterate by index.
        var i = 0
        while i < dirty.count {
            let connection = dirty[i]
            connection.isDirty = false
            if !connection.isClosed { flush(connection) }
            i += 1
        }
        dirty.removeAll(keepingCapacity: true)
    }

    private func flush(_ connection: Connection) {
        if !connection.replies.isEmpty { connection.replies.drain(into: connection.output) }
        let output = connection.output
        while !output.isEmpty {
            let view = output.readableView
            let written = aegis_socket_send(connection.fd, view.baseAddress, view.count)
            if written < 0 {
                if -written == EAGAIN { break }
                if -written == EINTR { continue }
                close(connection)
                return
            }
            counters.bytesOut &+= written
            output.consume(written)
        }
        if output.isEmpty {
            connection.writeBlockedSinceMs = 0
            output.releaseIfIdle(keep: 16 * 1024)
            if connection.closeAfterFlush && connection.replies.isEmpty {
                discardPendingInput(connection)
                close(connection)
                return
            }
        } else if connection.writeBlockedSinceMs == 0 {
            connection.writeBlockedSinceMs = monotonicMs
        }
        // Requests held back by backpressure run as soon as the output is
        // back under its bound, not only once it is empty: a client that
        // reads slowly keeps about the bound of replies ready, and one that
        // does not read holds the bound, not whatever was left when the
        // last reply crossed it.
        if connection.inputHeldBack && !connection.isBackpressured {
            processInput(connection, connection.input)
            if connection.isClosed { return }
            noteInputState(connection)
        }
        chargeBuffers(connection)
        updateInterest(connection)
    }

    func updateInterest(_ connection: Connection) {
        guard !connection.isClosed else { return }
        // Parked for the outbound backlog (Router.swift): no read events, and
        // no RDHUP either, which would fire on every wait until unparked.
        let parked = isParkedForBacklog(connection)
        var wanted: UInt32 = parked ? 0 : AEGIS_EPOLLRDHUP
        if !connection.output.isEmpty { wanted |= AEGIS_EPOLLOUT }
        if !connection.isBackpressured && !connection.closeAfterFlush && !parked { wanted |= AEGIS_EPOLLIN }
        if wanted != connection.interest {
            connection.interest = wanted
            _ = aegis_epoll_modify(epollFD, connection.fd, wanted, token(of: connection))
        }
    }

    func close(_ connection: Connection) {
        guard !connection.isClosed else { return }
        connection.isClosed = true
        _ = aegis_epoll_remove(epollFD, connection.fd)
        _ = aegis_close(connection.fd)
        connection.replies.reset()
        unchargeBuffers(connection)
        connections[Int(connection.index)] = nil
        freeSlots.append(Int(connection.index))
        counters.connections -= 1
        node.openConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    // MARK: - Timers

    private func maintenance() {
        let interval = max(Int64(node.config.maintenanceInterval.milliseconds), 10)
        maintenanceDue = false
        nextMaintenanceMs = monotonicMs + interval
        resumeAcceptingIfPaused()
        closeSilentRefusals()
        sweepExpired()
        logMaintenance()
        publishCommandStats()
        if monotonicMs >= nextTimeoutCheckMs {
            nextTimeoutCheckMs = monotonicMs + 1000
            enforceTimeouts()
        }
    }

    /// Redis-style active expiry: a bounded slice of the table per tick, in
    /// rotation over this reactor's shards.
    private func sweepExpired() {
        guard !ownedShardIndices.isEmpty else { return }
        var budget = 8192
        var visited = 0
        while budget > 0 && visited < ownedShardIndices.count {
            let shard = shards[ownedShardIndices[sweepShardCursor]]!
            counters.expired &+= shard.expireSweep(nowMs: now, maxSlots: 256)
            budget -= 256
            visited += 1
            sweepShardCursor = (sweepShardCursor + 1) % ownedShardIndices.count
        }
    }

    private func enforceTimeouts() {
        let runtime = node.runtime
        let readMs = runtime.readTimeoutMs.load(ordering: .relaxed)
        let writeMs = runtime.writeTimeoutMs.load(ordering: .relaxed)
        let idleMs = runtime.idleTimeoutMs.load(ordering: .relaxed)
        let now = monotonicMs  // the connections' times are monotonic
        for case let connection? in connections {
            if readMs > 0 && connection.partialSinceMs != 0 && now - connection.partialSinceMs > readMs {
                logger.debug("closing connection: read timeout", metadata: ["client": "\(connection.clientID)"])
                close(connection)
            } else if writeMs > 0 && connection.writeBlockedSinceMs != 0 && now - connection.writeBlockedSinceMs > writeMs {
                logger.debug("closing connection: write timeout", metadata: ["client": "\(connection.clientID)"])
                close(connection)
            } else if idleMs > 0 && connection.replies.isEmpty && connection.output.isEmpty && now - connection.lastActivityMs > idleMs {
                close(connection)
            }
        }
    }

    private func publishStats() {
        var items = 0
        for shardIndex in ownedShardIndices { items += shards[shardIndex]!.count }
        counters.items = items
        ledger.collectLazyFree()
        counters.usedMemoryBytes = ledger.usedBytes
        counters.clientBufferBytes = clientBufferBytes
        if ledger.clientBufferBytes != clientBufferBytes { ledger.clientBufferBytes = clientBufferBytes }
        counters.lazyFreePendingObjects = ledger.lazyFreePendingEntries
        counters.evictions = ledger.evictions
        counters.interconnectBytes = outboundMemoryBytes
        if let wal {
            counters.walBatches = wal.batchesCommitted
            counters.walBytes = wal.bytesCommitted
            counters.walBatchInFlight = wal.batchesInFlight
            counters.walRefusingWrites = wal.acceptsWrites ? 0 : 1
        }
        node.stats[index].publish(counters)
        refreshRateLimit()
    }

    // MARK: - Lifecycle

    /// Draining: no new connections; each connection is closed once every
    /// reply it is owed has been written. The reactor keeps serving its rings
    /// until every reactor has drained (others may still forward to it).
    private func drainStep() {
        if listenFD >= 0 {
            _ = aegis_epoll_remove(epollFD, listenFD)
            _ = aegis_close(listenFD)
            listenFD = -1
            drainDeadlineMs = monotonicMs + node.runtime.drainTimeoutMs.load(ordering: .relaxed)
        }
        for case let connection? in connections where connection.replies.isEmpty && connection.output.isEmpty && connection.input.isEmpty {
            close(connection)
        }
        if monotonicMs >= drainDeadlineMs { closeOverdueConnections() }
        if counters.connections == 0 && !countedAsDrained {
            countedAsDrained = true
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
        for case let connection? in connections {
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
        node.state == .draining && countedAsDrained
            && node.drainedReactors.load(ordering: .acquiring) == node.reactorCount
            && overflow.allSatisfy(\.isEmpty)
            && logIsSettled
    }

    private func shutdown() {
        for case let connection? in connections { close(connection) }
        if listenFD >= 0 { _ = aegis_close(listenFD) }
        _ = aegis_close(epollFD)
        _ = aegis_close(maintenanceTimerFD)
        publishStats()
        publishCommandStats()
        events.deallocate()
    }
}

extension Duration {
    /// Whole milliseconds (durations in the config are at least 1 ms apart).
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
