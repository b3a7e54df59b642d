import AegisCluster
import AegisConfig
import CSupport
import Glibc
import Logging

/// Builds the node's cluster loop from its configuration.
enum ClusterWiring {
    /// How long a stopping node spends telling the others it leaves: long
    /// enough to flush a `left` to every peer on a healthy network, short
    /// enough that a stop never waits on a peer that does not read.
    static func leaveAnnouncementMs(_ node: NodeContext) -> Int64 {
        min(2_000, max(100, node.runtime.drainTimeoutMs.load(ordering: .relaxed)))
    }

    /// How long a stopping node may spend handing its shards off before it
    /// says `left`: half of drain_timeout, at most 5 s. Hand-offs take
    /// milliseconds; the bound is for targets that do not answer (each is
    /// given up after LeaseDriver.handOffTimeoutMs) and for shards waiting
    /// for a renewal before they may start.
    static func leaveHandOffMs(_ node: NodeContext) -> Int64 {
        min(5_000, node.runtime.drainTimeoutMs.load(ordering: .relaxed) / 2)
    }

    static func makeLoop(node: NodeContext, logger: Logger) throws -> ClusterLoop<MembershipEngine> {
        let config = node.config
        guard let nodeID = NodeID(config.nodeID) else { throw StartupError("node_id \(config.nodeID) cannot name a cluster member") }
        let (listenFD, gossipPort) = try ClusterLoop<MembershipEngine>.bindGossip(host: config.gossipBindAddr.host, port: config.gossipBindAddr.port)
        let gossipAddress = advertised(config.gossipAdvertiseAddr, bindHost: config.gossipBindAddr.host, port: gossipPort)
        let clientAddress = advertised(config.clientAdvertiseAddr, bindHost: config.bindAddr.host, port: node.clientPort)
        let settings = ClusterSettings(
            nodeID: nodeID, gossipAddress: gossipAddress, clientAddress: clientAddress, seeds: config.seeds,
            gossipIntervalMs: config.gossipInterval.milliseconds, suspectTimeoutMs: config.suspectTimeout.milliseconds,
            deadTimeoutMs: config.deadTimeout.milliseconds,
            numShards: UInt32(config.numShards), virtualNodes: UInt32(config.virtualNodes),
            replicationFactor: UInt32(clamping: config.replicationFactor))
        if let problem = settings.problem {
            _ = aegis_close(listenFD)
            throw StartupError("cluster settings: \(problem)")
        }
        // Wall-clock ms at start: larger than any earlier run's incarnation
        // without state on disk (refutations add 1 at a time, far below the
        // gap between two starts), so a restarted node's `alive` overrides
        // what the others remember of its previous run, `dead` included.
        let incarnation = UInt64(max(1, aegis_now_ms_coarse()))
        let authenticator = GossipAuthenticator(secret: config.gossipSecret)
        let membership = ClusterNode(settings: settings, incarnation: incarnation,
                                     randomSeed: UInt64.random(in: .min ... .max), authenticator: authenticator)
        let loopSettings = ClusterLoopSettings(
            nodeID: config.nodeID, gossipAddress: gossipAddress, clientAddress: clientAddress,
            numShards: config.numShards, virtualNodes: config.virtualNodes, authenticator: authenticator,
            incarnation: incarnation, replicationFactor: config.replicationFactor,
            dialSourceHost: config.gossipBindAddr.host, tls: node.peerTLS,
            pendingAcceptsPerAddressMax: config.clusterPendingAcceptsPerAddress)
        let relay = ForwardingRelay(interconnect: node.interconnect, shardOwner: node.shardOwner, routingBoard: node.routing,
                                    breakers: node.breakers, selfID: config.nodeID)
        relay.replication.batchRecordsMax = config.replicationBatchSize
        relay.replication.tailRecordsMax = config.replicationTailRecords
        relay.replication.batchTimeoutNs = config.replicationBatchTimeout.milliseconds * 1_000_000
        relay.replyTimeoutMs = ForwardingRelay.replyTimeout(
            writeQuorum: config.replicationFactor > 1 ? config.writeQuorum : 0,
            readQuorum: config.replicationFactor > 1 ? config.readQuorum : 1, writeTimeoutMs: config.writeTimeout.milliseconds)
        let leases = try config.replicationFactor > 1
            ? makeLeases(node: node, nodeID: nodeID, incarnation: incarnation, authenticator: authenticator, logger: logger) : nil
        return try ClusterLoop(settings: loopSettings, listenFD: listenFD, engine: MembershipEngine(node: membership, reactorLag: node.reactorLag),
                               board: node.cluster, logger: logger, relay: relay, leases: leases)
    }

    /// Reads the terms back from data_dir; the driver writes the file once
    /// the node is in a cluster, so that a later start can tell a lost file
    /// from a new node.
    static func makeLeases(node: NodeContext, nodeID: NodeID, incarnation: UInt64, authenticator: GossipAuthenticator,
                           logger: Logger) throws -> LeaseDriver {
        let config = node.config
        let parameters = ClusterParameters(numShards: UInt32(config.numShards), virtualNodes: UInt32(config.virtualNodes),
                                           replicationFactor: UInt32(clamping: config.replicationFactor))
        // Renewed every quarter lease: three lost rounds in a row still keep it.
        let leaseMs = config.leaseDuration.milliseconds
        let settings = LeaseSettings(nodeID: nodeID, leaseDurationMs: leaseMs, tickIntervalMs: max(1, leaseMs / 4),
                                     electionTimeoutMs: config.leaseElectionTimeout.milliseconds, parameters: parameters)
        if let problem = settings.problem { throw StartupError("lease settings: \(problem)") }
        let loaded = try TermStore.load(directory: config.dataDir, numShards: config.numShards)
        // The restart stand-back is for copies that may lack writes: those a
        // log replayed, and with the log off the empty ones a restart leaves.
        // Without it two replicas restarted together with the log off elected
        // one of themselves with each other's grant while the third, which
        // held every write, refused; writes made at once at the new term put
        // the empty copy ahead of the third's, whose stream then replaced it
        // (7 and 43 of 3,000 acknowledged keys lost under a writer,
        // RefillProcessTests.twoReplicasRestartedEmptyWithTheLogOffUnderWritesDoNotEmptyTheThird).
        let machine = LeaseMachine(settings: settings, persisted: loaded.terms, emptyLearner: loaded.emptyLearner,
                                   restarted: loaded.restarted, restartedWithoutLog: config.walMode == .off,
                                   startedBlank: loaded.blank,
                                   stillBlank: loaded.stillBlank, life: incarnation,
                                   randomSeed: UInt64.random(in: .min ... .max), authenticator: authenticator)
        let store = TermStore(directory: config.dataDir, terms: loaded.terms, blankShards: machine.blankShards, loaded: loaded)
        logger.notice("leases: \(loaded.summary)", metadata: ["file": "\(store.path)"])
        return LeaseDriver(machine: machine, store: store, board: node.leases, logger: logger, hasSeeds: !config.seeds.isEmpty)
    }

    /// The explicit advertise address, else the bound one; a wildcard bind
    /// (0.0.0.0, ::) is announced by this machine's host name, which peers resolve.
    static func advertised(_ explicit: String, bindHost: String, port: Int) -> String {
        if !explicit.isEmpty { return explicit }
        var host = bindHost
        if host.isEmpty || host == "0.0.0.0" || host == "::" {
            var name = [CChar](repeating: 0, count: 256)
            host = gethostname(&name, name.count - 1) == 0
                ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "localhost"
        }
        return ClusterLoop<MembershipEngine>.hostPort(host, port)
    }
}
