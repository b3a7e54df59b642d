import AegisCluster
import AegisConfig
import AegisStore
import AegisTLS
import CSupport
import Glibc
import Logging

/// How the loop introduces itself to peers in its hellos.
struct ClusterLoopSettings {
    var nodeID: String
    /// The address peers dial to reach this node (gossip_advertise_addr, or
    /// derived from the bound gossip port).
    var gossipAddress: String
    var clientAddress: String
    var numShards: Int
    var virtualNodes: Int
    var authenticator: GossipAuthenticator
    var incarnation: UInt64
    /// For the shard map the loop computes (ShardMap's followers).
    var replicationFactor = 1
    /// The gossip bind host: outgoing links leave from it, so that on a
    /// machine with several node addresses each link shows its own node's
    /// address (empty or a wildcard: the kernel picks).
    var dialSourceHost: String = ""
    /// What this node announces to each peer it dials (/cluster's version column).
    var build = PeerAnnouncement(version: BuildInfo.version, commit: BuildInfo.commit)
    /// Most bytes all peer links together may hold for their peers
    /// (`peerQueueBudgetBytesDefault`); the link tests set less.
    var peerQueueBudgetBytes = ClusterLoopSettings.peerQueueBudgetBytesDefault
    /// TLS with mutual authentication on every link (cluster_tls_*); nil = plain TCP.
    var tls: PeerTLS?
    /// Accepted connections from one address that have not sent their
    /// hello yet (TLS handshake included); more from it are closed on
    /// accept, so that one address opening thousands of half-open
    /// connections cannot take all `ClusterLoop.maxAcceptedConnections` from
    /// the other nodes (cluster_pending_accepts_per_address). A node dials
    /// two links to each peer, and opens them within milliseconds of each
    /// other, so the default 64 leaves room for many nodes sharing one address.
    var pendingAcceptsPerAddressMax = AegisConfig.defaults.clusterPendingAcceptsPerAddress

    /// Each link's own limit (1 MiB control, 32 MiB bulk) bounds one peer,
    /// not the node: with many peers stalled at once their queues would add
    /// up without end. 64 MiB in all, as much as the reactors' ring grid,
    /// is memory outside max_memory_mb that docs/operations.md adds to the
    /// node's budget; it holds two fully stalled bulk links.
    static let peerQueueBudgetBytesDefault = 64 << 20
}

/// epoll tokens of the loop's own descriptors; connections count up from `firstConnection`.
enum ClusterLoopToken {
    static let listener: UInt64 = 1
    static let wake: UInt64 = 2
    /// The Interconnect's eventfd for the loop's endpoint (forwarding).
    static let interconnect: UInt64 = 3
    static let firstConnection: UInt64 = 16
}

/// The cluster's I/O: its own thread and epoll instance (never a reactor's),
/// the gossip listener, one pair of outbound connections per peer it sends
/// to, timers, and the engine those feed.
///
/// Threading: after `start`, every stored property except `board` is touched
/// by the loop thread only; other threads reach the loop through the board
/// (commands in, snapshots out), which is why the class may be
/// `@unchecked Sendable`. `assertOnLoop()` guards the loop-only entry points.
final class ClusterLoop<Engine: ClusterEngine>: @unchecked Sendable {
    /// A failed dial waits base·2^failures (capped), half of it jittered, so
    /// that nodes restarted together do not all redial in step.
    struct Backoff {
        var failures = 0
        var nextAttemptMs: Int64 = 0

        mutating func failed(nowMs: Int64, baseMs: Int64, capMs: Int64, random: inout SystemRandomNumberGenerator) -> Int64 {
            let exponent = min(failures, 20)
            failures += 1
            let delay = min(capMs, baseMs << exponent)
            let jittered = delay / 2 + Int64.random(in: 0...max(delay / 2, 1), using: &random)
            nextAttemptMs = nowMs + jittered
            return jittered
        }
    }

    private struct DialKey: Hashable {
        var address: String
        var lane: PeerLane
    }

    /// Redials start 100 ms after a failure and double to at most 2 s: a
    /// restarted peer is reached again well within one suspect_timeout, and
    /// the cap stays under the membership's seed retry interval (5 s), so
    /// every join attempt it logs really dials.
    static var peerRetryBaseMs: Int64 { 100 }
    static var peerRetryCapMs: Int64 { 2_000 }
    /// A dialled link that held this long resets its dial's backoff when it
    /// closes: the next dial is prompt again.
    static var stableLinkMs: Int64 { 1_000 }
    /// An accepted connection has this long to send its hello.
    static var helloTimeoutMs: Int64 { 5_000 }
    /// A dial unanswered this long is abandoned (the kernel would retry a
    /// SYN into a partition for two minutes), and a peer that acknowledges
    /// nothing written for this long fails its link (TCP_USER_TIMEOUT), so a
    /// partition shows as broken links rather than queues that only grow.
    static var connectTimeoutMs: Int64 { 3_000 }
    static var unacknowledgedTimeoutMs: Int64 { 10_000 }
    /// Accepted connections at once; more are closed on accept.
    static var maxAcceptedConnections: Int { AegisConfig.clusterAcceptedConnectionsMax }
    /// Refusals of one peer are logged at most this often.
    static var refusalLogIntervalMs: Int64 { 60_000 }
    /// Counters and last-heard times reach the board at most this stale.
    static var publishIntervalMs: Int64 { 100 }

    let board: ClusterBoard
    let engine: Engine
    /// Request forwarding between nodes; nil where the loop runs without
    /// reactors (the link tests).
    let relay: ForwardingRelay?
    /// The shard leases (replication_factor > 1); nil otherwise and in the link tests.
    let leases: LeaseDriver?
    let logger: Logger
    let settings: ClusterLoopSettings
    let boundPort: Int
    var selfGossipAddress: String { settings.gossipAddress }

    private let epollFD: Int32
    private let wakeFD: Int32
    private let listenFD: Int32
    private var loopThread: pthread_t?
    private var connections: [UInt64: PeerConnection] = [:]
    private var acceptedAt: [UInt64: Int64] = [:]
    /// How many of `acceptedAt`'s connections each remote address holds;
    /// an address is listed only while it holds one.
    private var pendingAcceptsByHost = PerKeyCount<String>()
    private var connectingSince: [UInt64: Int64] = [:]
    /// When each open dialled link opened (see `linkOpened`).
    private var dialledOpenedAt: [UInt64: Int64] = [:]
    private var ownerThread: pthread_t?
    private var dialled: [DialKey: UInt64] = [:]
    private var backoff: [DialKey: Backoff] = [:]
    private var nextToken = ClusterLoopToken.firstConnection
    private var timers: [UInt64: Int64] = [:]
    private var members: [String: ClusterMemberView] = [:]
    private var clientAddressOf: [String: String] = [:]
    /// What each peer announced on its current control connection; absent
    /// for a peer that has not dialled us yet or runs a release before 0.1.1.
    private var buildOf: [String: PeerAnnouncement] = [:]
    /// `buildOf` changed since the lease driver was last told which peers
    /// decode lease asks with the copy state.
    private var buildsChanged = false
    /// Whether each peer takes part in leases, on positive evidence from its
    /// current control connection; absent = not known yet.
    private var leaseSupportOf: [String: LeaseSupport] = [:]
    /// Set when `leaseSupportOf` changed and the lease driver has not seen it.
    private var leaseSupportChanged = false
    private var lastRefusalLogMs: [String: Int64] = [:]
    private var random = SystemRandomNumberGenerator()
    private var counters = ClusterSnapshot()
    private var dirty = true
    private var membershipChanged = true
    private var lastPublishMs: Int64 = 0
    private var heldForReactorsBytesSeen = 0
    private var leaveDeadlineMs: Int64?
    /// Set while the node hands its shards off before it says `left`: how
    /// long the announcement may then take.
    private var announceAfterHandOffsWithinMs: Int64?
    /// After hand-offs, a stopping node keeps answering its peers this long
    /// once it said `left`.
    private var answerPeersUntilMs: Int64 = .min
    static var answerPeersAfterHandOffsMs: Int64 { 200 }
    /// How long a stopping node waits for its peers' answers to its
    /// farewell (ForwardingRelay, "Farewells"), within drain_timeout: a
    /// peer that is slower than this is one whose link is in trouble anyway.
    static var farewellWaitMs: Int64 { 1_000 }
    private var farewellsUntilMs: Int64 = .min
    private var stopRequested = false
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    /// Binds gossip_bind_addr. A failure stops start-up: a node its peers
    /// cannot reach must not run as if it were in the cluster.
    static func bindGossip(host: String, port: UInt16) throws -> (fd: Int32, port: Int) {
        let listen = aegis_tcp_listen(host, port, 256, 0)
        if listen < 0 {
            throw StartupError("cannot listen on gossip_bind_addr \(hostPort(host, Int(port))): \(SystemError(operation: "bind", code: -listen))")
        }
        return (listen, Int(aegis_socket_local_port(listen)))
    }

    /// Takes over `listenFD` (from `bindGossip`); `run` serves it.
    init(settings: ClusterLoopSettings, listenFD: Int32, engine: Engine, board: ClusterBoard, logger: Logger,
         relay: ForwardingRelay? = nil, leases: LeaseDriver? = nil) throws {
        precondition(settings.pendingAcceptsPerAddressMax > 0, "no accepted connection could ever wait for its hello")
        self.settings = settings
        self.relay = relay
        self.leases = leases
        self.engine = engine
        self.board = board
        self.logger = logger
        self.listenFD = listenFD
        boundPort = Int(aegis_socket_local_port(listenFD))
        epollFD = aegis_epoll_create()
        wakeFD = aegis_eventfd_create()
        guard epollFD >= 0, wakeFD >= 0 else {
            _ = aegis_close(listenFD)
            throw StartupError("cluster loop: cannot create epoll or eventfd")
        }
        _ = aegis_epoll_add(epollFD, listenFD, AEGIS_EPOLLIN, ClusterLoopToken.listener)
        _ = aegis_epoll_add(epollFD, wakeFD, AEGIS_EPOLLIN, ClusterLoopToken.wake)
        board.attach(wakeFD: wakeFD)
        if let relay {
            // Edge-triggered and never read, as the reactors' own wake-up
            // eventfds: every write is a new edge, and a read per wake-up
            // was one syscall more on each hop of a forwarded batch.
            _ = aegis_epoll_add(epollFD, relay.wakeFD, AEGIS_EPOLLIN | AEGIS_EPOLLET, ClusterLoopToken.interconnect)
            relay.sendFrame = { [unowned self] address, frame in self.send(frame, to: address, lane: .bulk, nowMs: Self.nowMs()) }
            relay.replication.log = { [unowned self] text in self.logger.notice("\(text)") }
            relay.probeLink = { [unowned self] address in
                guard self.dialled[DialKey(address: address, lane: .bulk)] == nil else { return }
                _ = self.dial(address, lane: .bulk, nowMs: Self.nowMs())
            }
            relay.abandonLink = { [unowned self] address in
                guard let token = self.dialled[DialKey(address: address, lane: .bulk)], let connection = self.connections[token] else { return }
                self.logger.notice("cluster: bulk link closed, forwarded requests on it went unanswered; what it still held is dropped",
                                   metadata: ["peer": "\(address)"])
                self.close(connection, reason: .abandoned, nowMs: Self.nowMs(), notify: false)
            }
            if let leases {
                relay.replication.maySend = { shard in leases.maySendReplication(shard: shard, nowMs: Self.nowMs()) }
                relay.replication.presumedToHold = { shard in leases.machine.replicaSet(shard) }
                relay.replication.acceptsFrom = { shard, sender, nowMs in
                    leases.acceptsReplication(shard: shard, from: sender, nowMs: nowMs)
                }
            }
        }
    }

    deinit {
        scratch.deallocate()
    }

    static func hostPort(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Starts the loop on a thread of its own.
    func start() throws {
        loopThread = try Node.startThread { [self] in
            _ = aegis_set_current_thread_name("aegis-cluster")
            run()
        }
    }

    /// What the log replay left per shard (the newest version, and whether
    /// the copy is proved whole), told to the lease machine before the loop
    /// runs (so before this node votes or campaigns). Call before `start`:
    /// the loop's thread owns the driver.
    func noteReplayedShards(_ replayed: ReplayedShards) {
        precondition(loopThread == nil, "replayed versions are told before the cluster loop starts")
        for (shard, version) in replayed.versions { relay?.replication.noteHeld(shard: shard, version) }
        guard let leases, !replayed.versions.isEmpty || !replayed.whole.isEmpty else { return }
        let nowMs = Self.nowMs()
        for (shard, version) in replayed.versions { leases.localVersion(shard: shard, version, nowMs: nowMs) }
        for shard in replayed.whole.sorted() { leases.copyComplete(shard: shard, nowMs: nowMs) }
        logger.notice("leases: newest local versions from the log replay", metadata: [
            "shards": "\(replayed.versions.count)", "whole_shards": "\(replayed.whole.count)",
        ])
    }

    /// Waits for the loop thread to return (after a `.leave` or `.stop` command).
    func join() {
        if let thread = loopThread { pthread_join(thread, nil) }
        loopThread = nil
    }

    private func assertOnLoop() {
        assert(ownerThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false, "cluster loop state touched off its thread")
    }

    static func nowMs() -> Int64 { aegis_monotonic_ns() / 1_000_000 }

    // MARK: - The loop

    func run() {
        ownerThread = pthread_self()
        let started = Self.nowMs()
        members[settings.nodeID] = ClusterMemberView(
            nodeID: settings.nodeID, gossipAddress: selfGossipAddress, clientAddress: settings.clientAddress,
            status: .alive, incarnation: settings.incarnation, lastHeardMonotonicMs: started, isSelf: true)
        perform(engine.start(nowMs: started), nowMs: started)
        if let leases { sendLeaseFrames(leases.start(nowMs: started), nowMs: started) }
        var events = [aegis_epoll_event](repeating: aegis_epoll_event(), count: 64)
        while !stopRequested {
            let now = Self.nowMs()
            var wait = waitMs(nowMs: now)
            var slept = false
            if let relay {
                if relay.hasPending { wait = min(wait, 1) }
                if wait > 250 && relay.hasInFlight { wait = 250 }
                if let due = relay.replication.msUntilBatchDue(nowNs: aegis_monotonic_ns()) { wait = min(wait, due) }
                if wait != 0 && relay.notifiedReactors {
                    // A reactor was just handed records: give up the core
                    // once before sleeping, as a reactor waiting for another
                    // one's reply does (Reactor.runOnce). When that reactor
                    // runs here, its answers are in the ring when we look,
                    // saving this loop a sleep and the reactor a wake-up write.
                    sched_yield()
                }
                if wait != 0 {
                    slept = relay.interconnect.prepareToSleep(relay.endpoint)
                    if !slept { wait = 0 }
                }
            }
            let count = events.withUnsafeMutableBufferPointer {
                aegis_epoll_wait(epollFD, $0.baseAddress, Int32($0.count), wait)
            }
            if slept, let relay { relay.interconnect.didWake(relay.endpoint) }
            let woke = Self.nowMs()
            if count > 0 {
                // Control frames before bulk ones: a release read first is in
                // the routing before the requests sent after it reach the
                // reactors (`serve`). From two senders they arrive in either
                // order: a voter that heard of a hand-off forwarded to its
                // target a request read here beside the old holder's
                // release, and the target sent it back on the routing from
                // before (perf/shard-move --scenario leave, at the hop limit).
                bulkEvents.removeAll(keepingCapacity: true)
                for event in events.prefix(Int(count)) {
                    if connections[event.token]?.lane == .bulk { bulkEvents.append(event) } else { handle(event, nowMs: woke) }
                }
                for event in bulkEvents { handle(event, nowMs: woke) }
            }
            if let relay { relayStep(relay) }
            fireDueTimers(nowMs: woke)
            if let leases { leaseStep(leases, nowMs: woke) }
            if let leases, let relay { leavingStep(leases, relay, nowMs: woke) }
            expireSilentAccepts(nowMs: woke)
            abandonSlowDials(nowMs: woke)
            // A request forwarded through this node (to a shard's new
            // holder, after a hand-off) gets its answer before the link goes,
            // and so do those peers sent before they heard of the hand-offs;
            // once every peer answered the farewell, none can come after.
            if let deadline = leaveDeadlineMs, woke >= deadline || (woke >= answerPeersUntilMs && !anyOutputQueued
                    && relay?.awaitsReplies != true && (relay?.awaitsFarewells != true || woke >= farewellsUntilMs)) {
                logFarewells()
                break
            }
            publishIfDue(nowMs: woke, force: false)
            if let relay { wakeReactorsForNewSets(relay) }
        }
        shutDown()
    }

    /// This pass's events on bulk links, served after the others.
    private var bulkEvents: [aegis_epoll_event] = []

    /// The lease set and the routing the reactors were last woken for.
    private var reactorsWokenFor = (leases: UInt64(0), routing: UInt64(0))

    /// Reactors pick up a new lease set or routing when they wake, and one
    /// with no client traffic sleeps until its next event or maintenance
    /// tick (100 ms). A request waiting there for its shard's lease (or for
    /// the routing to name the holder) waited that much past the news, and
    /// a hand-off's freeze started that late. Wakes only reactors that sleep.
    private func wakeReactorsForNewSets(_ relay: ForwardingRelay) {
        let now = (leases: leases?.publishedVersion ?? 0, routing: relay.routing?.version ?? 0)
        guard now != reactorsWokenFor else { return }
        reactorsWokenFor = now
        for reactor in 0..<relay.interconnect.reactorCount { relay.interconnect.notify(reactor) }
    }

    private var anyOutputQueued: Bool { connections.values.contains { $0.hasQueuedOutput } }

    private func waitMs(nowMs: Int64) -> Int32 {
        var next = nowMs + 1_000
        if let timer = timers.values.min() { next = min(next, timer) }
        if let timer = leases?.nextTimerMs { next = min(next, timer) }
        if dirty { next = min(next, lastPublishMs + Self.publishIntervalMs) }
        if let deadline = leaveDeadlineMs { next = min(next, deadline) }
        if leaveDeadlineMs != nil && answerPeersUntilMs > nowMs { next = min(next, answerPeersUntilMs) }
        if leaveDeadlineMs != nil && farewellsUntilMs > nowMs && relay?.awaitsFarewells == true { next = min(next, farewellsUntilMs) }
        // Handing off: acknowledgements and freezes are looked for each pass.
        if announceAfterHandOffsWithinMs != nil { next = min(next, nowMs + 2) }
        if !acceptedAt.isEmpty || !connectingSince.isEmpty { next = min(next, nowMs + 250) }
        return Int32(clamping: max(0, next - nowMs))
    }

    private func handle(_ event: aegis_epoll_event, nowMs: Int64) {
        switch event.token {
        case ClusterLoopToken.listener: acceptAll(nowMs: nowMs)
        case ClusterLoopToken.interconnect:
            // Records are taken every iteration (relayStep); the eventfd is
            // edge-triggered and never read (its 64-bit counter cannot fill
            // in the life of a process).
            break
        case ClusterLoopToken.wake:
            var counter: UInt64 = 0
            _ = aegis_read(wakeFD, &counter, 8)
            for command in board.takeCommands() { obey(command, nowMs: nowMs) }
        default:
            guard let connection = connections[event.token] else { return }
            serve(connection, events: event.events, nowMs: nowMs)
        }
    }

    private func obey(_ command: ClusterCommand, nowMs: Int64) {
        switch command {
        case .seeds(let newSeeds):
            logger.notice("cluster seeds reloaded", metadata: ["seeds": "\(newSeeds.joined(separator: ","))"])
            perform(engine.seedsChanged(newSeeds, nowMs: nowMs), nowMs: nowMs)
        case .timings(let timings):
            perform(engine.timingsChanged(timings, nowMs: nowMs), nowMs: nowMs)
            dirty = true
        case let .leave(handOffWithinMs, announceWithinMs):
            guard leaveDeadlineMs == nil, announceAfterHandOffsWithinMs == nil else { return }
            if relay != nil, let leases, leases.beginLeaving(nowMs: nowMs, withinMs: handOffWithinMs) {
                announceAfterHandOffsWithinMs = announceWithinMs
            } else {
                announceLeave(withinMs: announceWithinMs, nowMs: nowMs)
            }
        case .stop:
            stopRequested = true
        }
    }

    private func announceLeave(withinMs: Int64, nowMs: Int64, afterHandOffs: Bool = false) {
        leaveDeadlineMs = nowMs + max(0, withinMs)
        // Peers may have sent requests for the shards handed off before the
        // releases reached them: they are answered (forwarded to the new
        // holders) rather than cut with the link.
        if afterHandOffs { answerPeersUntilMs = nowMs + min(max(0, withinMs), Self.answerPeersAfterHandOffsMs) }
        perform(engine.leave(nowMs: nowMs), nowMs: nowMs)
        sayFarewell(nowMs: nowMs)
    }

    /// Tells every peer that takes it that this node is about to close its
    /// links, so that none has a request on the way when it does.
    private func sayFarewell(nowMs: Int64) {
        guard let relay else { return }
        let peers = members.values.compactMap { member -> (name: String, address: String)? in
            guard !member.isSelf, member.status == .alive || member.status == .suspect,
                  buildOf[member.nodeID]?.capabilities.contains(.farewell) == true else { return nil }
            return (member.nodeID, member.gossipAddress)
        }
        relay.sayFarewell(to: peers)
        farewellsUntilMs = nowMs + Self.farewellWaitMs
    }

    private func logFarewells() {
        guard let relay, farewellsUntilMs != .min else { return }
        let counters = relay.counters
        let unanswered = relay.farewellsUnanswered
        logger.log(level: unanswered == 0 ? .info : .notice, "cluster: peers answered this node's farewell", metadata: [
            "answered": "\(counters.farewellsAcknowledged)", "sent": "\(counters.farewellsSent)", "unanswered": "\(unanswered)",
        ])
    }

    /// While a stopping node hands its shards off (LeaseDriver.stepLeaving):
    /// `left` goes out once they are handed off or time is up.
    private func leavingStep(_ leases: LeaseDriver, _ relay: ForwardingRelay, nowMs: Int64) {
        guard let announceWithinMs = announceAfterHandOffsWithinMs else { return }
        let alive = Set(members.values.filter { $0.status == .alive }.compactMap { NodeID($0.nodeID) })
        let replication = relay.replication
        let (sends, finished) = leases.stepLeaving(nowMs: nowMs, alive: alive,
                                                   holdsEveryWrite: { replication.followerHoldsEveryWrite($0, shard: $1) },
                                                   isFollower: { replication.isFollower($0, of: $1) })
        sendLeaseFrames(sends, nowMs: nowMs)
        if finished {
            announceAfterHandOffsWithinMs = nil
            announceLeave(withinMs: announceWithinMs, nowMs: nowMs, afterHandOffs: true)
        }
    }

    private func shutDown() {
        let now = Self.nowMs()
        relay?.stop(nowNs: aegis_monotonic_ns())
        if var me = members[settings.nodeID], leaveDeadlineMs != nil {
            me.status = .left
            members[settings.nodeID] = me
            membershipChanged = true
        }
        for connection in Array(connections.values) { close(connection, reason: nil, nowMs: now, notify: false) }
        _ = aegis_close(listenFD)
        board.detach()
        _ = aegis_close(wakeFD)
        _ = aegis_close(epollFD)
        publishIfDue(nowMs: now, force: true)
        var final = board.snapshot
        final.running = false
        board.publish(final)
    }

    // MARK: - Accepting and reading

    private func acceptAll(nowMs: Int64) {
        for _ in 0..<64 {
            let fd = aegis_tcp_accept(listenFD)
            if fd < 0 { return }
            if acceptedAt.count + connections.count >= Self.maxAcceptedConnections {
                _ = aegis_close(fd)
                continue
            }
            let host = Self.remoteHost(fd)
            guard pendingAcceptsByHost.take(host, limit: settings.pendingAcceptsPerAddressMax) else {
                _ = aegis_close(fd)
                counters.dropped[.addressLimit, default: 0] += 1
                logRefusal(.addressLimit, peer: host.isEmpty ? "unknown" : host, nowMs: nowMs)
                dirty = true
                continue
            }
            var transport = PeerTransport.plain
            if let tls = settings.tls {
                guard let session = TLSSession(context: tls.context, fd: fd, isServer: true) else {
                    logger.warning("cluster: cannot create a TLS session for a peer connection", metadata: ["error": "\(TLSSession.lastError())"])
                    pendingAcceptsByHost.give(host)
                    _ = aegis_close(fd)
                    continue
                }
                transport = .tls(session)
            }
            let connection = PeerConnection(fd: fd, token: takeToken(), role: .accepted,
                                            state: transport.isPlain ? .awaitingHello : .handshaking, transport: transport)
            connection.remoteHost = host
            connections[connection.token] = connection
            acceptedAt[connection.token] = nowMs
            _ = aegis_epoll_add(epollFD, fd, AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP, connection.token)
            dirty = true
        }
    }

    /// An accepted connection sent its hello or closed: no longer counted
    /// against its address. False when it was not awaiting one.
    private func stopAwaitingHello(_ connection: PeerConnection) -> Bool {
        guard acceptedAt.removeValue(forKey: connection.token) != nil else { return false }
        pendingAcceptsByHost.give(connection.remoteHost)
        return true
    }

    private func takeToken() -> UInt64 {
        defer { nextToken += 1 }
        return nextToken
    }

    private func serve(_ connection: PeerConnection, events: UInt32, nowMs: Int64) {
        if case .dialled = connection.role {
            serveDialled(connection, events: events, nowMs: nowMs)
            return
        }
        if connection.state == .handshaking {
            guard handshake(connection, nowMs: nowMs) else { return }
        }
        let received = connection.readFrames(scratch: scratch, authenticator: settings.authenticator)
        counters.bytesReceived += received.bytes
        dirty = dirty || received.bytes > 0
        if connection.state == .open, stopAwaitingHello(connection), let hello = connection.hello {
            accepted(hello, on: connection)
        }
        guard connections[connection.token] != nil else { return }
        if let hello = connection.hello {
            for frame in received.frames {
                if PeerAnnouncement.isAnnouncement(frame) {
                    counters.messagesReceived[Self.announcementType, default: 0] += 1
                    switch PeerAnnouncement.decode(frame, settings.authenticator) {
                    case .success(let build):
                        heard(from: hello.nodeID, nowMs: nowMs)
                        announced(build, by: hello.nodeID)
                        if connection.awaitingLeaseEvidence {
                            connection.awaitingLeaseEvidence = false
                            classify(hello.nodeID, build.capabilities.contains(.leases) ? .speaksLeases : .predatesLeases)
                        }
                    case .failure(let refusal):
                        close(connection, reason: .refused(refusal), nowMs: nowMs, notify: true)
                        return
                    }
                    continue
                }
                if frame.count > 4 && frame[4] == ForwardingRelay.batchMarker, let relay {
                    counters.messagesReceived[Self.forwardBatchType, default: 0] += 1
                    heard(from: hello.nodeID, nowMs: nowMs)
                    // The batch's requests reach the reactors now, the routing
                    // at the end of the pass: a holder learned from a lease
                    // frame read before them (a hand-off's release) must be
                    // in the routing first. Otherwise the release's target,
                    // told by the old holder to run a request, sent it back
                    // to it on the routing from before (perf/shard-move
                    // --scenario leave: refused at the hop limit).
                    if leases?.holdersMoved == true { refreshRouting(relay) }
                    if !relay.receivedBatch(frame, fromAddress: hello.gossipAddress, name: hello.nodeID, nowNs: aegis_monotonic_ns()) {
                        close(connection, reason: .refused(.malformed), nowMs: nowMs, notify: true)
                        return
                    }
                    continue
                }
                if LeaseCodec.isLeaseFrame(frame) {
                    counters.messagesReceived[Self.leaseType, default: 0] += 1
                    heard(from: hello.nodeID, nowMs: nowMs)
                    // A node without leases (replication_factor 1 here) answers none.
                    // Dated when read, not when the loop woke: a granter's promise
                    // must not start before the request was sent, or it could end
                    // before the holder's lease (a loop stalled between its wake-up
                    // and this read would promise from the past).
                    if let leases {
                        let readAtMs = Self.nowMs()
                        sendLeaseFrames(leases.received(frame, nowMs: readAtMs), nowMs: readAtMs)
                    }
                    continue
                }
                counters.messagesReceived[engine.messageType(frame), default: 0] += 1
                heard(from: hello.nodeID, nowMs: nowMs)
                // A node with leases announces right after its hello on every
                // connection it dials, and TCP keeps that order: gossip first
                // comes only from a release that announces nothing (0.1.0).
                if connection.awaitingLeaseEvidence {
                    connection.awaitingLeaseEvidence = false
                    classify(hello.nodeID, .predatesLeases)
                }
                perform(engine.received(frame, from: hello, nowMs: nowMs), nowMs: nowMs)
            }
        }
        if let closure = received.closure {
            close(connection, reason: closure, nowMs: nowMs, notify: true)
        } else if events & (AEGIS_EPOLLHUP | AEGIS_EPOLLERR) != 0 {
            close(connection, reason: .endOfStream, nowMs: nowMs, notify: true)
        }
    }

    /// A peer of another cluster shape is refused here, after its MAC was
    /// checked: its num_shards or virtual_nodes would place keys differently.
    private func accepted(_ hello: PeerHello, on connection: PeerConnection) {
        if hello.numShards != UInt32(settings.numShards) || hello.virtualNodes != UInt32(settings.virtualNodes) {
            close(connection, reason: .refused(.clusterMismatch), nowMs: Self.nowMs(), notify: true)
            return
        }
        // A peer that dialled in is up: a dial to it still backing off from
        // while it was down (refused during its restart) would drop what this
        // node sends it meanwhile. The answer to a restarted node's join was
        // dropped so, and it stayed alone (every write refused, every read
        // served from its own copy) until its seed retry 5 s later.
        if hello.nodeID != settings.nodeID {
            for lane in PeerLane.allCases { backoff[DialKey(address: hello.gossipAddress, lane: lane)] = nil }
        }
        // A new control connection is a (re)started peer: what it runs now
        // comes in the announcement that follows, or never from a release
        // before 0.1.1, which must not keep the build its predecessor named.
        if hello.lane == .control, buildOf.removeValue(forKey: hello.nodeID) != nil {
            membershipChanged = true
            buildsChanged = true
        }
        // The same for its lease support: classified again from this
        // connection's first frame (a node restarted on another release).
        // The previous classification stands until that frame: dropping it
        // here would count a member of a release before leases as speaking
        // them for a pass whenever its hello and first frame arrive in
        // separate reads, switching enforcement on for that moment (every
        // overdue campaign fired, terms raised, writes refused).
        if hello.lane == .control && hello.nodeID != settings.nodeID {
            connection.awaitingLeaseEvidence = true
        }
        if !hello.clientAddress.isEmpty, clientAddressOf[hello.nodeID] != hello.clientAddress {
            clientAddressOf[hello.nodeID] = hello.clientAddress
            if var member = members[hello.nodeID], member.clientAddress.isEmpty {
                member.clientAddress = hello.clientAddress
                members[hello.nodeID] = member
                membershipChanged = true
            }
        }
    }

    private func announced(_ build: PeerAnnouncement, by nodeID: String) {
        guard nodeID != settings.nodeID, buildOf[nodeID] != build else { return }
        if buildOf[nodeID] == nil && buildOf.count >= Self.maxAcceptedConnections { return }
        buildOf[nodeID] = build
        membershipChanged = true
        buildsChanged = true
        logger.info("cluster: peer announced its build", metadata: [
            "peer": "\(nodeID)", "version": "\(build.version)", "commit": "\(build.commit)",
        ])
    }

    /// nil: not known (a new control connection, until its first frame).
    private func classify(_ nodeID: String, _ support: LeaseSupport?) {
        guard leaseSupportOf[nodeID] != support else { return }
        if support != nil && leaseSupportOf[nodeID] == nil && leaseSupportOf.count >= Self.maxAcceptedConnections { return }
        leaseSupportOf[nodeID] = support
        leaseSupportChanged = true
        membershipChanged = true
        if support == .predatesLeases {
            logger.notice("cluster: peer runs a release before leases (it grants none)", metadata: ["peer": "\(nodeID)"])
        }
    }

    private func heard(from nodeID: String, nowMs: Int64) {
        guard var member = members[nodeID], !member.isSelf else { return }
        member.lastHeardMonotonicMs = nowMs
        members[nodeID] = member
        dirty = true
    }

    private func expireSilentAccepts(nowMs: Int64) {
        for (token, since) in acceptedAt where nowMs - since > Self.helloTimeoutMs {
            guard let connection = connections[token] else { continue }
            let reason: PeerConnection.Closure = connection.state == .handshaking
                ? .tlsRefused(.timeout, detail: "no complete TLS handshake within \(Self.helloTimeoutMs) ms of accepting") : .refused(.malformed)
            close(connection, reason: reason, nowMs: nowMs, notify: true)
        }
    }

    private func abandonSlowDials(nowMs: Int64) {
        for (token, since) in connectingSince where nowMs - since > Self.connectTimeoutMs {
            guard let connection = connections[token] else { continue }
            let reason: PeerConnection.Closure = connection.state == .handshaking
                ? .tlsRefused(.timeout, detail: "no complete TLS handshake within \(Self.connectTimeoutMs) ms of dialling") : .failed(ETIMEDOUT)
            close(connection, reason: reason, nowMs: nowMs, notify: true)
        }
    }

    // MARK: - Dialling and writing

    private func serveDialled(_ connection: PeerConnection, events: UInt32, nowMs: Int64) {
        guard case .dialled(let address, let lane) = connection.role else { return }
        if connection.state == .connecting {
            guard events & (AEGIS_EPOLLOUT | AEGIS_EPOLLERR | AEGIS_EPOLLHUP) != 0 else { return }
            let error = aegis_socket_pending_error(connection.fd)
            if error != 0 {
                close(connection, reason: .failed(error), nowMs: nowMs, notify: true)
                return
            }
            connection.connected()
            if connection.state == .handshaking {
                watchWritable(connection, false)
            } else {
                linkOpened(connection, key: DialKey(address: address, lane: lane), nowMs: nowMs)
                return
            }
        }
        if connection.state == .handshaking {
            if handshake(connection, nowMs: nowMs) { linkOpened(connection, key: DialKey(address: address, lane: lane), nowMs: nowMs) }
            return
        }
        if !connection.transport.isPlain, events & AEGIS_EPOLLIN != 0 {
            if let closure = connection.readTLSControl(scratch: scratch) {
                close(connection, reason: closure, nowMs: nowMs, notify: true)
                return
            }
            if events & (AEGIS_EPOLLRDHUP | AEGIS_EPOLLHUP | AEGIS_EPOLLERR) == 0 {
                if events & AEGIS_EPOLLOUT != 0 { flush(connection, nowMs: nowMs) }
                return
            }
        }
        if events & (AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP | AEGIS_EPOLLHUP | AEGIS_EPOLLERR) != 0 {
            // The accepting side never writes: anything readable is its close
            // (a refused hello, a restart) or a protocol violation.
            close(connection, reason: .endOfStream, nowMs: nowMs, notify: true)
            return
        }
        if events & AEGIS_EPOLLOUT != 0 { flush(connection, nowMs: nowMs) }
    }

    /// A dialled link is ready for frames: TCP connected, and TLS done where it runs.
    /// The dial's backoff is not cleared here but when the link closes after
    /// holding for `stableLinkMs`: a dialled TLS 1.3 link opens before the
    /// peer has judged this node's certificate, and a peer that then refuses
    /// it would otherwise be redialled, a full handshake each time, at the
    /// base delay forever.
    private func linkOpened(_ connection: PeerConnection, key: DialKey, nowMs: Int64) {
        connectingSince[connection.token] = nil
        dialledOpenedAt[connection.token] = nowMs
        if key.lane == .bulk { relay?.linkOpened(address: key.address) }
        flush(connection, nowMs: nowMs)
    }

    /// Advances a link's TLS handshake by one step; true once it is done
    /// (the caller goes on to frames), false while it waits or after it
    /// failed and the link was closed. A handshake is bounded by the time a
    /// link has to open: `connectTimeoutMs` dialled, `helloTimeoutMs` accepted.
    private func handshake(_ connection: PeerConnection, nowMs: Int64) -> Bool {
        switch connection.advanceHandshake() {
        case .done:
            counters.peerTLSHandshakes += 1
            dirty = true
            // A last step that wanted to write left EPOLLOUT on; level-triggered,
            // it would wake the loop without end (a dialled link's flush sets it again if needed).
            watchWritable(connection, false)
            return true
        case .waiting(let wantsWrite):
            watchWritable(connection, wantsWrite)
            return false
        case .refused(let refusal, let detail):
            close(connection, reason: .tlsRefused(refusal, detail: detail), nowMs: nowMs, notify: true)
            return false
        }
    }

    @discardableResult
    private func send(_ message: [UInt8], to address: String, lane: PeerLane, nowMs: Int64) -> Bool {
        let connection: PeerConnection
        if let token = dialled[DialKey(address: address, lane: lane)], let existing = connections[token] {
            connection = existing
        } else if let dialledNow = dial(address, lane: lane, nowMs: nowMs) {
            connection = dialledNow
        } else {
            counters.unsent += 1
            dirty = true
            return false
        }
        guard makeRoomInPeerQueues(for: message.count, sendingOn: connection, nowMs: nowMs) else {
            counters.unsent += 1
            return false
        }
        guard connection.enqueue(frame: message) else {
            counters.unsent += 1
            close(connection, reason: .outboundFull, nowMs: nowMs, notify: true)
            return false
        }
        let type = message.count > 4 && message[4] == ForwardingRelay.batchMarker ? Self.forwardBatchType
            : LeaseCodec.isLeaseFrame(message) ? Self.leaseType : engine.messageType(message)
        counters.messagesSent[type, default: 0] += 1
        dirty = true
        if connection.state == .open { flush(connection, nowMs: nowMs) }
        return true
    }

    /// Bytes every link holds for its peer now: a sum over a few dozen
    /// links at most per send, cheaper than keeping a total in step with
    /// every enqueue, partial write and close.
    private var peerQueuedBytes: Int { connections.values.reduce(0) { $0 + $1.outboundBytes } }

    /// Keeps all links' queues within `peerQueueBudgetBytes`: while `bytes`
    /// more would pass it, the link holding the most is closed, since a
    /// queue only grows that large behind a peer that stopped reading (the
    /// others drain as fast as their peers read). False when that link is
    /// the one `bytes` were for: the message is dropped with it.
    private func makeRoomInPeerQueues(for bytes: Int, sendingOn connection: PeerConnection, nowMs: Int64) -> Bool {
        var queued = peerQueuedBytes
        while queued + bytes > settings.peerQueueBudgetBytes {
            guard let largest = connections.values.max(by: { $0.outboundBytes < $1.outboundBytes }),
                  largest.outboundBytes > 0 else { return true }
            counters.peerQueueBudgetClosures += 1
            logger.warning("cluster: peer links reached their memory budget; closing the one holding the most", metadata: [
                "peer": "\(peerName(largest))", "queued_bytes": "\(largest.outboundBytes)",
                "all_links_bytes": "\(queued)", "budget_bytes": "\(settings.peerQueueBudgetBytes)",
            ])
            close(largest, reason: .outboundFull, nowMs: nowMs, notify: true)
            if largest === connection { return false }
            queued = peerQueuedBytes
        }
        return true
    }

    /// Opens the connection for (address, lane) unless its backoff says wait.
    private func dial(_ address: String, lane: PeerLane, nowMs: Int64) -> PeerConnection? {
        let key = DialKey(address: address, lane: lane)
        if let waiting = backoff[key], waiting.nextAttemptMs > nowMs { return nil }
        guard let (host, port) = Self.split(address) else {
            logger.warning("cluster: cannot dial a malformed peer address", metadata: ["address": "\(address)"])
            markFailed(key, nowMs: nowMs, error: EINVAL)
            return nil
        }
        let fd = aegis_tcp_connect(host, port, UInt32(Self.unacknowledgedTimeoutMs), settings.dialSourceHost)
        if fd < 0 {
            markFailed(key, nowMs: nowMs, error: -fd)
            return nil
        }
        var transport = PeerTransport.plain
        if let tls = settings.tls {
            guard let session = TLSSession(context: tls.context, fd: fd, isServer: false) else {
                logger.warning("cluster: cannot create a TLS session for a peer link", metadata: ["error": "\(TLSSession.lastError())"])
                _ = aegis_close(fd)
                markFailed(key, nowMs: nowMs, error: ENOMEM)
                return nil
            }
            transport = .tls(session)
        }
        let connection = PeerConnection(fd: fd, token: takeToken(), role: .dialled(address: address, lane: lane), state: .connecting,
                                        transport: transport)
        connections[connection.token] = connection
        dialled[key] = connection.token
        connectingSince[connection.token] = nowMs
        let hello = PeerHello(lane: lane, numShards: UInt32(settings.numShards), virtualNodes: UInt32(settings.virtualNodes),
                              nodeID: settings.nodeID, gossipAddress: selfGossipAddress, clientAddress: settings.clientAddress)
        _ = connection.enqueue(frame: hello.frame(settings.authenticator))
        if lane == .control {
            _ = connection.enqueue(frame: settings.build.frame(settings.authenticator))
            counters.messagesSent[Self.announcementType, default: 0] += 1
        }
        _ = aegis_epoll_add(epollFD, fd, AEGIS_EPOLLIN | AEGIS_EPOLLOUT | AEGIS_EPOLLRDHUP, connection.token)
        connection.watchingWritable = true
        dirty = true
        return connection
    }

    /// Backs the dial off. Only debug is logged here: the membership logs
    /// each join attempt through a seed itself, and a member that stays
    /// unreachable shows as suspect, then dead.
    private func markFailed(_ key: DialKey, nowMs: Int64, error: Int32) {
        var state = backoff[key] ?? Backoff()
        let delay = state.failed(nowMs: nowMs, baseMs: Self.peerRetryBaseMs, capMs: Self.peerRetryCapMs, random: &random)
        backoff[key] = state
        logger.debug("cluster: peer not reachable", metadata: [
            "address": "\(key.address)", "lane": "\(key.lane.name)", "error": "\(SystemError(operation: "connect", code: error))",
            "attempt": "\(state.failures)", "next_attempt_ms": "\(delay)",
        ])
    }

    static func split(_ address: String) -> (String, UInt16)? {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]), port > 0 else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    private func flush(_ connection: PeerConnection, nowMs: Int64) {
        switch connection.flush() {
        case .drained(let written):
            counters.bytesSent += written
            watchWritable(connection, false)
        case .blocked(let written):
            counters.bytesSent += written
            watchWritable(connection, true)
        case .failed(let error):
            close(connection, reason: .failed(error), nowMs: nowMs, notify: true)
        }
        dirty = true
    }

    private func watchWritable(_ connection: PeerConnection, _ watch: Bool) {
        guard connection.watchingWritable != watch else { return }
        connection.watchingWritable = watch
        let events = AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP | (watch ? AEGIS_EPOLLOUT : 0)
        _ = aegis_epoll_modify(epollFD, connection.fd, events, connection.token)
    }

    // MARK: - Closing

    private func close(_ connection: PeerConnection, reason: PeerConnection.Closure?, nowMs: Int64, notify: Bool) {
        guard connections.removeValue(forKey: connection.token) != nil else { return }
        // Named while the socket is open: an accepted connection without a
        // hello is known only by its peer address, which needs the descriptor.
        let peer = reason == nil ? "" : peerName(connection)
        _ = stopAwaitingHello(connection)
        connectingSince[connection.token] = nil
        _ = aegis_epoll_remove(epollFD, connection.fd)
        // A TLS refusal ends with OpenSSL's alert already written: a plain
        // close lets the peer read it (a reset could discard it), so the
        // refused node learns why too. Only an open link says close_notify.
        connection.transport.release(notifyPeer: connection.state == .open && reason.map(Self.isOrderly) ?? true)
        switch reason {
        case .refused?, .abandoned?: _ = aegis_socket_abort_on_close(connection.fd)
        default: break
        }
        _ = aegis_close(connection.fd)
        dirty = true
        switch reason {
        case .refused(let refusal)?:
            counters.dropped[refusal, default: 0] += 1
            logRefusal(refusal, peer: peer, nowMs: nowMs)
        case .tlsRefused(let refusal, let detail)?:
            counters.peerTLSRefused[refusal, default: 0] += 1
            logTLSRefusal(refusal, detail: detail, peer: peer, connection: connection, nowMs: nowMs)
        case .abandoned?:
            counters.abandonedForwardLinks += 1
        case .outboundFull?:
            counters.slowPeerClosures += 1
            logger.warning("cluster: peer link closed, the peer stopped reading and its queue filled", metadata: [
                "peer": "\(peer)", "lane": "\(connection.lane?.name ?? "-")",
            ])
        default:
            break
        }
        guard case .dialled(let address, let lane) = connection.role else { return }
        let key = DialKey(address: address, lane: lane)
        if let openedAt = dialledOpenedAt.removeValue(forKey: connection.token), nowMs - openedAt >= Self.stableLinkMs {
            backoff[key] = nil
        }
        if dialled[key] == connection.token { dialled[key] = nil }
        if lane == .bulk { relay?.linkLost(address: address, anySent: connection.wroteFrames) }
        switch reason {
        case .failed(let error)?:
            markFailed(key, nowMs: nowMs, error: error)
        case .endOfStream? where connection.state == .connecting:
            markFailed(key, nowMs: nowMs, error: ECONNREFUSED)
        case .endOfStream?, .outboundFull?, .refused?, .tlsRefused?:
            // Closed by the peer or for its behaviour: wait a little before
            // redialling, so a peer that refuses every hello is not hammered.
            var state = backoff[key] ?? Backoff()
            _ = state.failed(nowMs: nowMs, baseMs: Self.peerRetryBaseMs, capMs: Self.peerRetryCapMs, random: &random)
            backoff[key] = state
        case .abandoned?, nil:
            break
        }
        if notify && !stopRequested && leaveDeadlineMs == nil {
            perform(engine.linkBroke(address: address, nowMs: nowMs), nowMs: nowMs)
        }
    }

    private static func isOrderly(_ reason: PeerConnection.Closure) -> Bool {
        switch reason {
        case .endOfStream, .outboundFull: return true
        case .failed, .refused, .tlsRefused, .abandoned: return false
        }
    }

    /// One warning per peer and reason per minute, as for other refusals,
    /// with the peer's address and OpenSSL's own words.
    private func logTLSRefusal(_ refusal: PeerTLSRefusal, detail: String, peer: String, connection: PeerConnection, nowMs: Int64) {
        guard refusalLogDue(peer + " tls " + refusal.rawValue, nowMs: nowMs) else { return }
        let side: String
        if case .dialled = connection.role { side = "dialled" } else { side = "accepted" }
        logger.warning("cluster: peer link refused by TLS (cluster_tls_*): \(refusal.rawValue)", metadata: [
            "peer": "\(peer)", "link": "\(side)", "reason": "\(refusal.rawValue)", "openssl": "\(detail)",
            "logged_at_most_every_s": "\(Self.refusalLogIntervalMs / 1000)",
        ])
    }

    private func peerName(_ connection: PeerConnection) -> String {
        if case .dialled(let address, _) = connection.role { return address }
        if let hello = connection.hello { return hello.nodeID }
        return connection.remoteHost.isEmpty ? "unknown" : connection.remoteHost
    }

    /// Read at accept: a peer that reset the connection (as one refusing
    /// this node's certificate does) no longer has an address to ask for.
    private static func remoteHost(_ fd: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard aegis_socket_peer_host(fd, &buffer, buffer.count) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether a refusal keyed by peer and reason was not logged within the
    /// interval (and notes it now). The keys come from peers' addresses, which
    /// an outsider chooses, so entries past their interval are dropped once
    /// there are 4,096.
    private func refusalLogDue(_ key: String, nowMs: Int64) -> Bool {
        if let last = lastRefusalLogMs[key], nowMs - last < Self.refusalLogIntervalMs { return false }
        lastRefusalLogMs[key] = nowMs
        if lastRefusalLogMs.count > 4096 { lastRefusalLogMs = lastRefusalLogMs.filter { nowMs - $0.value < Self.refusalLogIntervalMs } }
        return true
    }

    /// One line per peer and reason per minute: another cluster's node
    /// retrying every second must not flood the log.
    private func logRefusal(_ refusal: PeerRefusal, peer: String, nowMs: Int64) {
        guard refusalLogDue(peer + " " + refusal.rawValue, nowMs: nowMs) else { return }
        let why: String
        switch refusal {
        case .badMAC: why = "authentication failed (a node of another cluster, or a different gossip_secret)"
        case .clusterMismatch: why = "its num_shards or virtual_nodes differ from this cluster's"
        case .unknownVersion: why = "it speaks an unknown protocol version"
        case .malformed: why = "it did not speak the peer protocol"
        case .oversize: why = "it sent a frame larger than the limit"
        case .addressLimit: why = "its address already has \(settings.pendingAcceptsPerAddressMax) connections open without a hello (half-open connections are closed on accept)"
        }
        logger.warning("cluster: refused peer: \(why)", metadata: [
            "peer": "\(peer)", "reason": "\(refusal.rawValue)", "logged_at_most_every_s": "\(Self.refusalLogIntervalMs / 1000)",
        ])
    }

    // MARK: - Timers and actions

    private func fireDueTimers(nowMs: Int64) {
        // Most passes (every forwarded batch makes two) have no timer due:
        // they should not build an empty dictionary to find that out.
        guard timers.values.contains(where: { $0 <= nowMs }) else { return }
        let due = timers.filter { $0.value <= nowMs }.sorted { $0.value < $1.value }
        // A timer may change what only the engine shows (local health), even
        // on a node alone that sends nothing.
        if !due.isEmpty { dirty = true }
        for (id, at) in due where timers[id] == at {
            timers[id] = nil
            perform(engine.timerFired(id, nowMs: nowMs, lateMs: nowMs - at), nowMs: nowMs)
        }
    }

    private func perform(_ actions: [ClusterLoopAction], nowMs: Int64) {
        assertOnLoop()
        for action in actions {
            switch action {
            case .send(let address, let lane, let message):
                if address == selfGossipAddress { continue }
                send(message, to: address, lane: lane, nowMs: nowMs)
            case .setTimer(let id, let at):
                timers[id] = at
            case .cancelTimer(let id):
                timers[id] = nil
            case .member(let view, let previous, let reason):
                memberChanged(view, previous: previous, reason: reason, nowMs: nowMs)
            case .dropped(let refusal, let peer):
                counters.dropped[refusal, default: 0] += 1
                dirty = true
                logRefusal(refusal, peer: peer, nowMs: nowMs)
            case .log(let level, let message):
                logger.log(level: level, "\(message)")
            }
        }
    }

    private func memberChanged(_ view: ClusterMemberView, previous: MemberStatus?, reason: String, nowMs: Int64) {
        var updated = view
        let known = members[view.nodeID]
        updated.isSelf = view.nodeID == settings.nodeID
        updated.lastHeardMonotonicMs = known?.lastHeardMonotonicMs ?? nowMs
        if updated.clientAddress.isEmpty { updated.clientAddress = known?.clientAddress ?? clientAddressOf[view.nodeID] ?? "" }
        members[view.nodeID] = updated
        membershipChanged = true
        dirty = true
        let from = previous ?? known?.status
        // A member that left stopped: whatever it runs when it comes back
        // shows on the control connection it dials then. Without this, its
        // return (learned through another link first) would revive the
        // previous process's classification. A dead one keeps it: it may be
        // the same process behind a partition, on a link that never redials.
        if view.status == .left && view.nodeID != settings.nodeID { classify(view.nodeID, nil) }
        if let leases { leaseMembersChanged(leases, nowMs: nowMs) }
        if from != view.status {
            logger.notice("member \(view.nodeID) \(from?.description ?? "none") -> \(view.status) reason=\(reason)", metadata: [
                "incarnation": "\(view.incarnation)", "gossip_addr": "\(view.gossipAddress)",
            ])
        }
    }

    // MARK: - Publishing

    private func publishIfDue(nowMs: Int64, force: Bool) {
        assertOnLoop()
        guard force || membershipChanged || (dirty && nowMs - lastPublishMs >= Self.publishIntervalMs) else { return }
        var snapshot = counters
        snapshot.running = true
        snapshot.selfID = settings.nodeID
        if var me = members[settings.nodeID] {
            me.lastHeardMonotonicMs = nowMs
            members[settings.nodeID] = me
        }
        snapshot.leaseSupport = leaseSupportOf
        snapshot.members = members.values.sorted { $0.nodeID.utf8.lexicographicallyPrecedes($1.nodeID.utf8) }
        for index in snapshot.members.indices {
            let build: PeerAnnouncement? = snapshot.members[index].isSelf ? settings.build : buildOf[snapshot.members[index].nodeID]
            snapshot.members[index].version = build?.version
            snapshot.members[index].commit = build?.commit
        }
        var connected = 0
        var connecting = 0
        for connection in connections.values {
            guard case .dialled = connection.role else { continue }
            if connection.state == .open { connected += 1 } else { connecting += 1 }
        }
        snapshot.linksConnected = connected
        snapshot.linksConnecting = connecting
        snapshot.peerQueuedBytes = peerQueuedBytes
        snapshot.peerQueueBudgetBytes = settings.peerQueueBudgetBytes
        snapshot.peerTLSEnabled = settings.tls != nil
        if let relay { contributeForwarding(relay, to: &snapshot) }
        if let leases { snapshot.leases = LeaseSnapshot(leases, routing: relay?.routing, nowMs: nowMs) }
        if let relay { snapshot.catchUp = catchUp.snapshot(bytesReceived: relay.replication.bytesReceived, nowMs: nowMs) }
        engine.contribute(to: &snapshot)
        board.publish(snapshot)
        lastPublishMs = nowMs
        dirty = false
        membershipChanged = false
    }

    // MARK: - Leases

    /// Lease frames go on the control lane, beside the probes: a renewal
    /// stuck behind replication data could let a lease run out.
    private func sendLeaseFrames(_ frames: [(NodeID, [UInt8])], nowMs: Int64) {
        for (node, frame) in frames {
            guard let address = members[node.name]?.gossipAddress, !address.isEmpty, address != selfGossipAddress else {
                counters.unsent += 1
                continue
            }
            send(frame, to: address, lane: .control, nowMs: nowMs)
        }
        if !frames.isEmpty { dirty = true }
        // Writes go to the lease holder: routing is rebuilt at once.
        if leases?.holdersMoved == true { membershipChanged = true }
    }

    /// Timers, and the versions the reactors reported since the last pass.
    private func leaseStep(_ leases: LeaseDriver, nowMs: Int64) {
        if let relay {
            for (shard, version) in relay.takeLocalVersions() { leases.localVersion(shard: shard, version, nowMs: nowMs) }
            for shard in relay.takeCompletedCopies().sorted() { leases.copyComplete(shard: shard, nowMs: nowMs) }
            let frozen = relay.takeFrozenShards()
            if !frozen.isEmpty {
                for (shard, leasesVersion) in frozen { leases.shardFrozen(shard, leasesVersion: leasesVersion) }
                // The last writes before the freeze leave now, not after
                // replication_batch_timeout: the hand-off waits for them.
                relay.replication.sendStagedNow()
                relay.sendBatches()
            }
        }
        if buildsChanged {
            buildsChanged = false
            leases.peersDecodingCopyState(buildOf.compactMap { $0.value.capabilities.contains(.leaseCopyState) ? $0.key : nil })
            leases.peersDecodingConfig(buildOf.compactMap { $0.value.capabilities.contains(.leaseConfig) ? $0.key : nil })
        }
        // Once per pass, so that a hello and the frame after it, read
        // together, never switch enforcement on and off in between.
        if leaseSupportChanged { updateLeaseEnforcement(leases) }
        sendLeaseFrames(leases.fireDueTimers(nowMs: nowMs), nowMs: nowMs)
        if let relay, nowMs - lastStandingReviewMs >= Self.standingReviewIntervalMs {
            lastStandingReviewMs = nowMs
            let nowNs = aegis_monotonic_ns()
            let before = leases.standing
            for behind in leases.reviewStanding(acknowledged: relay.replication.follower.acknowledged, nowMs: nowMs)
            where relay.replication.follower.shouldRemind(shard: behind.shard, claim: behind.claim, nowNs: nowNs) {
                relay.replication.remindHolder(behind.holder.name, shard: behind.shard)
            }
            if leases.standing != before { dirty = true }
            let bytesReceived = relay.replication.bytesReceived
            for line in catchUp.review(leases.standing, bytesReceived: bytesReceived, nowMs: nowMs) {
                logger.log(level: line.level, "\(line.message)", metadata: line.metadata.mapValues { .string($0) })
            }
            if catchUp.current != nil { dirty = true }
        }
    }

    /// How often the loop compares this node's copies with what their
    /// holders claim (`LeaseDriver.reviewStanding`): /health follows it
    /// within this, and a review walks every shard.
    static var standingReviewIntervalMs: Int64 { 100 }
    private var lastStandingReviewMs: Int64 = 0
    private lazy var catchUp = CatchUpProgress(nodeStartMs: leases?.createdMs ?? Self.nowMs())

    private func leaseMembersChanged(_ leases: LeaseDriver, nowMs: Int64) {
        let alive = members.values.filter { $0.status == .alive }.compactMap { NodeID($0.nodeID) }
        let known = members.values.filter { $0.status != .left }.compactMap { NodeID($0.nodeID) }
        updateLeaseEnforcement(leases)
        sendLeaseFrames(leases.membersChanged(alive: alive, known: known, nowMs: nowMs), nowMs: nowMs)
    }

    /// A dead member keeps its classification (it may come back on the same
    /// release); one that left, or whose new connection has not shown its
    /// release yet, does not hold enforcement off.
    private func updateLeaseEnforcement(_ leases: LeaseDriver) {
        leaseSupportChanged = false
        let predating = leaseSupportOf.compactMap { name, support in
            support == .predatesLeases && members[name].map { $0.status != .left } == true ? name : nil
        }
        leases.predatingMembersChanged(predating)
    }

    // MARK: - Forwarding

    static var forwardBatchType: String { "forward_batch" }
    /// The label of lease frames (requests and replies) in aegis_gossip_messages_*_total.
    static var leaseType: String { "lease" }
    /// The label of PeerAnnouncement frames in aegis_gossip_messages_*_total.
    static var announcementType: String { "announcement" }

    /// One pass per iteration: take the reactors' records, answer what
    /// timed out, send one batch per peer, hand records to the reactors.
    private func relayStep(_ relay: ForwardingRelay) {
        let nowNs = aegis_monotonic_ns()
        relay.drainReactors(nowNs: nowNs)
        relay.expire(nowNs: nowNs)
        relay.sendBatches()
        relay.flushPending()
        relay.notifyReactors()
        // Records held for a full ring are memory the metrics report.
        if relay.heldForReactorsBytes != heldForReactorsBytesSeen {
            heldForReactorsBytesSeen = relay.heldForReactorsBytes
            dirty = true
        }
    }

    /// The map follows the alive set (self included); the snapshot shows
    /// it with the forwarding counters.
    private func contributeForwarding(_ relay: ForwardingRelay, to snapshot: inout ClusterSnapshot) {
        if membershipChanged || relay.routing == nil { refreshRouting(relay) }
        if let routing = relay.routing {
            snapshot.placementDigest = routing.digestHex
            for i in snapshot.members.indices {
                guard let id = NodeID(snapshot.members[i].nodeID) else { continue }
                snapshot.members[i].shardsPrimary = routing.map.shards(primaryOn: id).count
                snapshot.members[i].shardsFollower = routing.map.shards(followerOn: id).count
            }
        }
        snapshot.forwarding = ForwardingSnapshot(relay)
        snapshot.replication = ReplicationSnapshot(relay.replication, nowMs: Self.nowMs())
    }

    /// Rebuilds the routing the reactors go by from the members and the
    /// lease holders; a routing that routes alike is not published again.
    private func refreshRouting(_ relay: ForwardingRelay) {
        // A stopping node keeps the members it served by: its own `left`
        // would otherwise give it a map without itself, a "shard map
        // changed" notice on every stop, and reactors forwarding even the
        // keys they hold to peers while they drain, through a relay about
        // to stop. It still takes the holders its hand-offs name, so the
        // writes that waited through a shard's freeze go on to the target.
        let leavingWith = leaveDeadlineMs == nil ? nil : relay.routing?.map.members
        if leaveDeadlineMs == nil || leavingWith != nil {
            let alive = leavingWith ?? members.values.filter { $0.status == .alive }.compactMap { NodeID($0.nodeID) }
            var gossip: [String: String] = [:]
            var client: [String: String] = [:]
            for member in members.values {
                gossip[member.nodeID] = member.gossipAddress
                client[member.nodeID] = member.clientAddress.isEmpty ? clientAddressOf[member.nodeID] ?? "" : member.clientAddress
            }
            let before = relay.routing
            _ = leases?.takeHoldersMoved()
            if let routing = relay.updateMap(members: alive, gossipAddresses: gossip, clientAddresses: client,
                                             numShards: settings.numShards, virtualNodes: settings.virtualNodes,
                                             replicationFactor: settings.replicationFactor, leaseHolders: leases?.routingHolders ?? [],
                                             withoutReplication: Set(leases?.predatingMembers ?? [])),
               routing.version != before?.version, leavingWith == nil,
               // Only what a holder's renewal taught (the map's guess was right) is no news.
               routing.map != before?.map || routing.primaryName != before?.primaryName {
                logger.notice("shard map changed", metadata: [
                    "placement_digest": "\(routing.digestHex)", "members": "\(routing.map.members.count)",
                    "shards_primary_here": "\(routing.shardsPrimaryHere)",
                ])
            }
        }
    }
}
