import AegisCluster
import AegisConfig
import AegisServer
import CSupport
import Glibc

/// The JSON documents of /stats, /cluster, /debug/reactors, /debug/memory
/// and the circuit-breaker endpoints, built from what the reactors publish.
struct NodeReports {
    let node: NodeContext

    var stateName: String {
        switch node.state {
        case .starting: return "starting"
        case .serving: return "serving"
        case .draining: return "draining"
        case .stopped: return "stopped"
        }
    }

    var uptimeSeconds: Int { Int(max(aegis_monotonic_ms_coarse() - node.startedMonotonicMs, 0) / 1000) }

    var maxMemoryBytes: Int { node.config.maxMemoryMB * 1024 * 1024 }

    /// The address clients should use: client_advertise_addr, or the bound client port.
    var clientAddress: String {
        let config = node.config
        if !config.clientAdvertiseAddr.isEmpty { return config.clientAdvertiseAddr }
        return hostPort(config.bindAddr.host, node.clientPort)
    }

    var gossipAddress: String {
        let config = node.config
        if !config.gossipAdvertiseAddr.isEmpty { return config.gossipAdvertiseAddr }
        return hostPort(config.gossipBindAddr.host, Int(config.gossipBindAddr.port))
    }

    private func hostPort(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The members the cluster loop last published, sorted by node id and
    /// this node included; before the loop runs, this node alone.
    func cluster() -> JSONValue {
        let snapshot = node.cluster.snapshot
        let now = aegis_monotonic_ms_coarse()
        let members: [JSONValue]
        if snapshot.members.isEmpty {
            members = [.object([
                ("node_id", .string(node.config.nodeID)), ("address", .string(clientAddress)),
                ("client_addr", .string(clientAddress)), ("gossip_addr", .string(gossipAddress)),
                ("status", .string("alive")), ("version", .string(BuildInfo.version)), ("commit", .string(BuildInfo.commit)),
                ("last_heard_ms", .int(0)), ("self", .bool(true)),
            ])]
        } else {
            members = snapshot.members.map { member in
                let client = member.clientAddress.isEmpty && member.isSelf ? clientAddress : member.clientAddress
                var fields: [(String, JSONValue)] = [
                    ("node_id", .string(member.nodeID)), ("address", .string(client)), ("client_addr", .string(client)),
                    ("gossip_addr", .string(member.gossipAddress)), ("status", .string(member.status.description)),
                    ("incarnation", .int(Int(clamping: member.incarnation))),
                    // null: the member has not dialled this node yet, or runs a
                    // release that does not announce its build (before 0.1.1).
                    ("version", member.version.map(JSONValue.string) ?? .null),
                    ("commit", member.commit.map(JSONValue.string) ?? .null),
                    // Whether it takes part in leases; "unknown" until its
                    // control connection to this node showed which release it runs.
                    ("leases", .string(member.isSelf ? LeaseSupport.speaksLeases.rawValue : snapshot.leaseSupport[member.nodeID]?.rawValue ?? "unknown")),
                ]
                if let primary = member.shardsPrimary { fields.append(("shards_primary", .int(primary))) }
                if let follower = member.shardsFollower { fields.append(("shards_follower", .int(follower))) }
                let heard = member.isSelf ? 0 : max(0, now - member.lastHeardMonotonicMs)
                fields.append(("last_heard_ms", .int(Int(heard))))
                fields.append(("self", .bool(member.isSelf)))
                return .object(fields)
            }
        }
        var document: [(String, JSONValue)] = [("node_id", .string(node.config.nodeID))]
        if let digest = snapshot.placementDigest { document.append(("placement_digest", .string(digest))) }
        document.append(("members", .array(members)))
        document.append(("member_count", .int(members.count)))
        document.append(("num_shards", .int(node.config.numShards)))
        if let timings = snapshot.timings {
            document.append(("gossip_interval_ms", .int(Int(clamping: timings.gossipIntervalMs))))
            document.append(("suspect_timeout_ms", .int(Int(clamping: timings.suspectTimeoutMs))))
            document.append(("dead_timeout_ms", .int(Int(clamping: timings.deadTimeoutMs))))
        }
        document.append(("local_health", .int(snapshot.localHealth)))
        document.append(("replication", Self.replication(snapshot.replication)))
        document.append(("moves", Self.moves(snapshot.replication, handOffs: snapshot.leases.handOffsRunning)))
        document.append(("leases", Self.leases(snapshot.leases, standing: node.replicaStanding(snapshot))))
        return .object(document)
    }

    /// The burst the limiter applies: rate_burst, or the rate when it is 0;
    /// 0 while there is no limit.
    var rateBurstInEffect: Int {
        node.runtime.currentRateLimit > 0 ? node.runtime.currentRateBurst : 0
    }

    func rateLimit() -> JSONValue {
        let runtime = node.runtime
        let rate = runtime.currentRateLimit
        return .object([
            ("enabled", .bool(rate > 0)),
            ("ops_per_sec", .int(rate)),
            ("burst", .int(rateBurstInEffect)),
            ("tokens_available", rate > 0 ? .int(node.rateLimiter.availableTokens) : .null),
            ("rejected_total", .int(node.totals().rateLimited)),
        ])
    }

    func stats() -> JSONValue {
        let perReactor = node.stats.map { $0.snapshot() }
        let totals = node.totals()
        let commands = node.commandTotals()
        var perCommand: [(String, JSONValue)] = []
        for (i, name) in CommandMetricsLayout.names.enumerated() where commands.calls[i] > 0 || commands.errors[i] > 0 {
            perCommand.append((name, .object([("calls", .int(commands.calls[i])), ("errors", .int(commands.errors[i]))])))
        }
        let (_, rss) = ProcessMemory.statm()
        let lookups = totals.keyspaceHits + totals.keyspaceMisses
        return .object([
            ("node_id", .string(node.config.nodeID)),
            ("version", .object([
                ("version", .string(BuildInfo.version)),
                ("commit", .string(BuildInfo.commit)),
                ("build_date", .string(BuildInfo.buildDate)),
            ])),
            ("state", .string(stateName)),
            ("uptime_seconds", .int(uptimeSeconds)),
            ("pid", .int(Int(getpid()))),
            ("items", .int(totals.items)),
            ("memory", .object([
                ("used_bytes", .int(totals.usedMemoryBytes)),
                ("max_bytes", .int(maxMemoryBytes)),
                ("rss_bytes", .int(rss)),
            ])),
            ("connections", .object([
                ("active", .int(totals.connections)),
                ("accepted_total", .int(totals.connectionsAccepted)),
                ("rejected_total", .int(totals.connectionsRejected)),
                ("max", .int(node.config.maxConns)),
            ])),
            ("commands", .object([
                // Requests received from clients; a forwarded request counts once.
                ("total", .int(commands.calls.reduce(0, +))),
                ("forwarded_between_reactors", .int(totals.forwardedRequests)),
                ("per_command", .object(perCommand)),
            ])),
            ("keyspace", .object([
                ("hits", .int(totals.keyspaceHits)),
                ("misses", .int(totals.keyspaceMisses)),
                ("hit_ratio", lookups > 0 ? .double(Double(totals.keyspaceHits) / Double(lookups)) : .null),
            ])),
            ("evictions", .int(totals.evictions)),
            ("expired", .int(totals.expired)),
            ("network", .object([("bytes_in", .int(totals.bytesIn)), ("bytes_out", .int(totals.bytesOut))])),
            ("protocol_errors", .int(totals.protocolErrors)),
            ("rate_limit", rateLimit()),
            ("refill", refill()),
            ("wal", .object([
                ("mode", .string(node.config.walMode.rawValue)),
                ("directory", node.config.walMode == .off ? .null : .string(node.config.effectiveWALDir)),
                ("writable", .bool(totals.walRefusingWrites == 0)),
                ("batches", .int(totals.walBatches)),
                ("written_bytes", .int(totals.walBytes)),
                ("snapshots", .int(totals.walSnapshots)),
                ("errors", .int(totals.walErrors)),
            ])),
            ("reactors", .array(perReactor.enumerated().map { index, s in
                .object([
                    ("index", .int(index)), ("items", .int(s.items)), ("used_memory_bytes", .int(s.usedMemoryBytes)),
                    ("connections", .int(s.connections)), ("commands", .int(s.commands)),
                ])
            })),
        ])
    }

    func reactors() -> JSONValue {
        let limit = node.reactorCount > 0 ? maxMemoryBytes / node.reactorCount : 0
        return .object([
            ("reactor_count", .int(node.reactorCount)),
            ("reactors", .array((0..<node.reactorCount).map { index in
                let s = node.stats[index].snapshot()
                let owned = node.shardOwner.indices.filter { node.shardOwner[$0] == index }
                return .object([
                    ("index", .int(index)),
                    ("loop_iterations", .int(s.loopIterations)),
                    ("connections", .int(s.connections)),
                    ("owned_shards", .int(owned.count)),
                    ("owned_shard_range", owned.isEmpty ? .null : .string("\(owned.first!)-\(owned.last!)")),
                    ("items", .int(s.items)),
                    ("used_memory_bytes", .int(s.usedMemoryBytes)),
                    ("memory_limit_bytes", .int(limit)),
                    ("inbound_ring_bytes", .int(node.interconnect.inboundDepthBytes(index))),
                    ("commands", .int(s.commands)),
                    ("forwarded_requests", .int(s.forwardedRequests)),
                    ("evictions", .int(s.evictions)),
                    ("expired", .int(s.expired)),
                    ("wal_batches_in_flight", .int(s.walBatchInFlight)),
                    ("wal_writable", .bool(s.walRefusingWrites == 0)),
                    ("wal_batches", .int(s.walBatches)),
                    ("wal_snapshots", .int(s.walSnapshots)),
                ])
            })),
        ])
    }

    func memory() -> JSONValue {
        let memory = ProcessMemory.read()
        let totals = node.totals()
        return .object([
            ("rss_bytes", .int(memory.residentBytes)),
            ("virtual_bytes", .int(memory.virtualBytes)),
            ("mallinfo2", memory.allocatorJSON),
            ("ledger", .object([
                ("used_bytes", .int(totals.usedMemoryBytes)),
                ("limit_bytes", .int(maxMemoryBytes)),
                ("eviction_ratio", .double(node.config.evictionRatio)),
                ("evictions", .int(totals.evictions)),
                ("items", .int(totals.items)),
            ])),
        ])
    }

    static func breaker(_ status: CircuitBreakerStatus) -> JSONValue {
        .object([
            ("service", .string(status.service)),
            ("state", .string(status.state.rawValue)),
            ("manual", .bool(status.manual)),
            ("window_calls", .int(status.windowCalls)),
            ("window_failures", .int(status.windowFailures)),
            ("successes_total", .int(status.totalSuccesses)),
            ("failures_total", .int(status.totalFailures)),
            ("rejected_total", .int(status.totalRejected)),
            ("trips", .int(status.trips)),
            ("retry_in_ms", status.retryInMs.map { .int(Int($0)) } ?? .null),
        ])
    }

    func breakers() -> JSONValue {
        let (policy, statuses) = node.breakers.snapshot()
        return .object([
            ("breakers", .array(statuses.map(Self.breaker))),
            ("policy", .object([
                ("error_rate_threshold", .double(policy.errorRateThreshold)),
                ("minimum_calls", .int(policy.minimumCalls)),
                ("window_seconds", .int(policy.windowSeconds)),
                ("cool_down_ms", .int(Int(policy.coolDownMs))),
                ("half_open_trials", .int(policy.halfOpenTrials)),
            ])),
        ])
    }
}

extension NodeReports {
    /// Where this node stands against its shards' holders, in /health,
    /// /ready and /cluster (no name holds "ok": /health's body is grepped for it).
    static func standingFields(_ standing: ReplicaStanding) -> [(String, JSONValue)] {
        [("shards_replicated", .int(standing.replicated)), ("shards_behind", .int(standing.behind)),
         ("shards_without_holder", .int(standing.withoutHolder))]
    }

    /// /cluster's leases part: per shard the term this node knows and, where
    /// it holds the lease, the ms left of it on its own clock. `standing` as
    /// /health judges it (`NodeContext.replicaStanding`), so that `in_step` never says true
    /// while /health says catching_up (before the loop's first review).
    static func leases(_ leases: LeaseSnapshot, standing: ReplicaStanding) -> JSONValue {
        let shards: [JSONValue] = leases.shards.map { shard in
            var fields: [(String, JSONValue)] = [("shard", .int(shard.shard)), ("term", .int(Int(shard.term)))]
            fields.append(("lease_expires_in_ms", shard.heldForMs.map { .int(Int(clamping: $0)) } ?? .null))
            fields.append(("local_version", .object([("term", .int(Int(shard.localTerm))), ("seq", .int(Int(clamping: shard.localSeq)))])))
            fields.append(("copy_may_have_hole", .bool(shard.copyMayHaveHole)))
            fields.append(("blank", .bool(shard.blank)))
            return .object(fields)
        }
        var document: [(String, JSONValue)] = [
            ("enforced", .bool(leases.enforced)),
            ("members_predating_leases", .array(leases.membersPredatingLeases.map(JSONValue.string))),
            ("empty_learner", .bool(leases.emptyLearner)),
            ("lease_ms", .int(Int(clamping: leases.leaseMs))), ("shards_held", .int(leases.held)),
            ("blank_shards", .int(leases.blank)),
            ("reads_possibly_stale_shards", .int(leases.readsPossiblyStaleShards)),
            ("elections_started", .int(leases.electionsStarted)), ("elections_won", .int(leases.electionsWon)),
            ("elections_lost", .int(leases.electionsLost)), ("term_changes", .int(leases.termChanges)),
            ("holed_candidates_refused", .int(leases.holedCandidatesRefused)),
            ("in_step", .bool(standing.inStep)),
        ] + standingFields(standing)
        if let why = leases.stoppedBy { document.append(("stopped_by", .string(why))) }
        document.append(("shards", .array(shards)))
        return .object(document)
    }

    /// /cluster's `moves`: every shard moving to or from this node now, by
    /// state: streaming (sent from here), receiving, catching_up (streamed
    /// from here, its follower not yet holding every write since), and
    /// handing_off (its lease, from here to `peer`).
    static func moves(_ replication: ReplicationSnapshot, handOffs: [LeaseSnapshot.HandOff]) -> JSONValue {
        let streams: [JSONValue] = replication.moves.map { move in
            .object([("shard", .int(move.shard)), ("state", .string(move.state)), ("peer", .string(move.peer)),
                     ("bytes", .int(move.bytes)), ("slices_done", .int(move.slicesDone)), ("ms", .int(Int(clamping: move.ms)))])
        }
        let leases: [JSONValue] = handOffs.map { handOff in
            .object([("shard", .int(handOff.shard)), ("state", .string("handing_off")), ("peer", .string(handOff.target)),
                     ("ms", .int(Int(clamping: handOff.ms)))])
        }
        return .object([
            ("shards_moving", .int(replication.shardsMoving)),
            ("rate_bytes_per_second", .int(replication.moveRateBytesPerSecond)),
            ("shards", .array(streams + leases)),
        ])
    }

    /// /stats' `refill`: where this node stands against the holders of the
    /// shards it replicates (as /health judges it), and the catch-up running
    /// now (after a start, the refill of a wiped node) or else the last one.
    func refill() -> JSONValue {
        let snapshot = node.cluster.snapshot
        let standing = node.replicaStanding(snapshot)
        let catchUp = snapshot.catchUp
        return .object([
            ("in_step", .bool(standing.inStep)), ("running", .bool(catchUp.running)),
            ("shards_replicated", .int(standing.replicated)), ("shards_caught_up", .int(standing.caughtUp)),
            ("shards_behind", .int(standing.behind)), ("shards_without_holder", .int(standing.withoutHolder)),
            ("bytes_received", .int(catchUp.bytes)), ("seconds", .double(Double(catchUp.ms) / 1_000)),
            ("bytes_per_second", .int(catchUp.bytesPerSecond)),
        ])
    }

    /// /cluster's replication part: per shard this node is primary for, each
    /// follower's lag.
    static func replication(_ replication: ReplicationSnapshot) -> JSONValue {
        var byShard: [Int: [JSONValue]] = [:]
        for lag in replication.lags {
            byShard[lag.shard, default: []].append(.object([
                ("node_id", .string(lag.follower)), ("lag_records", .int(Int(clamping: lag.records))), ("lag_ms", .int(Int(lag.ms))),
            ]))
        }
        let shards: [JSONValue] = byShard.keys.sorted().map { shard in
            .object([("shard", .int(shard)), ("followers", .array(byShard[shard]!))])
        }
        return .object([
            ("shards_replicated_here", .int(replication.replicatedShards)),
            ("records_sent", .int(replication.recordsSent)), ("records_received", .int(replication.recordsReceived)),
            ("cutoffs", .int(replication.cutOffs)), ("streams_needed", .int(replication.streamsNeeded)),
            ("streams_started", .int(replication.streamsStarted)), ("streams_finished", .int(replication.streamsFinished)),
            ("streams_aborted", .int(replication.streamsAborted)), ("streams_running", .int(replication.streamsRunning)),
            ("stream_bytes", .int(replication.streamBytes)),
            ("shards", .array(shards)),
        ])
    }
}
