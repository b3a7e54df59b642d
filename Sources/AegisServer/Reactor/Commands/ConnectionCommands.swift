import AegisConfig
import AegisProtocol
import CSupport
import Glibc

/// Stage 2 for commands about the connection or the node rather than a key;
/// the reactor holding the connection answers them itself.
extension Reactor {
    /// The Redis version whose command set and replies this node follows,
    /// reported where clients look for one.
    static let redisCompatibleVersion = "7.0.0"

    func executeConnectionCommand(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        switch command {
        case .ping:
            if args.count == 1 {
                RESPWriter.simpleString("PONG", into: out)
            } else if args.count == 2 {
                RESPWriter.bulk(args.bytes(1), into: out)
            } else {
                RESPWriter.error("ERR wrong number of arguments for 'ping' command", into: out)
            }
        case .echo:
            RESPWriter.bulk(args.bytes(1), into: out)
        case .hello:
            executeHello(args, connection, into: out)
        case .auth:
            guard args.count <= 3 else {
                RESPWriter.error("ERR syntax error", into: out)
                return
            }
            authenticate(connection, user: args.count == 3 ? args.string(1) : nil, password: args.bytes(args.count - 1), into: out)
        case .select:
            guard let database = args.integer(1) else {
                RESPWriter.error("ERR value is not an integer or out of range", into: out)
                return
            }
            if database == 0 { RESPWriter.simpleString("OK", into: out) } else { RESPWriter.error("ERR DB index is out of range", into: out) }
        case .quit:
            RESPWriter.simpleString("OK", into: out)
            connection.closeAfterFlush = true
        case .client:
            executeClient(args, connection, into: out)
        case .command:
            executeCommandIntrospection(args, connection, into: out)
        case .info:
            RESPWriter.verbatim(infoText(sections: (1..<args.count).map { args.string($0).lowercased() }), connection.respVersion, into: out)
        case .config:
            executeConfig(args, connection, into: out)
        case .time:
            var now = timeval()
            gettimeofday(&now, nil)
            RESPWriter.arrayHeader(2, into: out)
            RESPWriter.bulk(string: String(now.tv_sec), into: out)
            RESPWriter.bulk(string: String(now.tv_usec), into: out)
        default:
            executeServerCommand(command, args, connection, into: out)
        }
    }

    /// Answers AUTH into `out`; true when the credentials were right.
    @discardableResult
    private func authenticate(_ connection: Connection, user: String?, password: UnsafeRawBufferPointer, into out: WireBuffer) -> Bool {
        let auth = node.clientAuth
        if !auth.tokenRequired {
            // As redis-server's default user without a password: any
            // password logs it in (clients whose URL carries `default:pw@`
            // send one), other users do not exist, and only the one-argument
            // form is refused, as a hint that the configuration may be wrong.
            if user == nil {
                RESPWriter.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?", into: out)
                return false
            } else if user == "default" {
                connection.authenticated = true
                RESPWriter.simpleString("OK", into: out)
                return true
            } else {
                RESPWriter.error("WRONGPASS invalid username-password pair or user is disabled.", into: out)
                return false
            }
        }
        if (user == nil || user == "default") && auth.matches(password) {
            connection.authenticated = true
            RESPWriter.simpleString("OK", into: out)
            return true
        }
        auth.noteFailure(from: connection.address, nowMs: monotonicMs)
        RESPWriter.error("WRONGPASS invalid username-password pair or user is disabled.", into: out)
        return false
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]
    private func executeHello(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        var version = connection.respVersion
        var i = 1
        if args.count >= 2 {
            guard let requested = args.integer(1) else {
                RESPWriter.error("ERR Protocol version is not an integer or out of range", into: out)
                return
            }
            guard requested == 2 || requested == 3 else {
                RESPWriter.error("NOPROTO unsupported protocol version", into: out)
                return
            }
            version = requested == 3 ? .resp3 : .resp2
            i = 2
        }
        var newName: String? = nil
        while i < args.count {
            if args.matches(i, "AUTH") && i + 2 < args.count {
                let scratch = WireBuffer()
                // A wrong user or password is refused even when no token is
                // set (the connection is then already logged in), as
                // redis-server refuses it.
                if !authenticate(connection, user: args.string(i + 1), password: args.bytes(i + 2), into: scratch) {
                    out.append(scratch.readableView)
                    return
                }
                i += 3
            } else if args.matches(i, "SETNAME") && i + 1 < args.count {
                newName = args.string(i + 1)
                i += 2
            } else {
                RESPWriter.error(string: "ERR Syntax error in HELLO option '\(args.string(i))'", into: out)
                return
            }
        }
        if !connection.authenticated {
            RESPWriter.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time", into: out)
            return
        }
        if let newName {
            guard isValidClientName(newName) else {
                RESPWriter.error("ERR Client names cannot contain spaces, newlines or special characters.", into: out)
                return
            }
            connection.name = newName.isEmpty ? nil : newName
        }
        connection.wire = version == .resp3 ? .resp3 : .resp2
        RESPWriter.mapHeader(7, version, into: out)
        RESPWriter.bulk(string: "server", into: out); RESPWriter.bulk(string: "aegiskv", into: out)
        RESPWriter.bulk(string: "version", into: out); RESPWriter.bulk(string: BuildInfo.version, into: out)
        RESPWriter.bulk(string: "proto", into: out); RESPWriter.integer(version == .resp3 ? 3 : 2, into: out)
        RESPWriter.bulk(string: "id", into: out); RESPWriter.integer(connection.clientID, into: out)
        RESPWriter.bulk(string: "mode", into: out); RESPWriter.bulk(string: "standalone", into: out)
        RESPWriter.bulk(string: "role", into: out); RESPWriter.bulk(string: "master", into: out)
        RESPWriter.bulk(string: "modules", into: out); RESPWriter.arrayHeader(0, into: out)
    }

    /// Redis's wording: a known subcommand with the wrong arity, or an unknown one.
    private func subcommandError(_ args: ArgumentsView, command: String, known: Set<String>) -> String {
        let subcommand = args.string(1)
        if known.contains(subcommand.uppercased()) {
            return "ERR wrong number of arguments for '\(command)|\(subcommand.lowercased())' command"
        }
        return "ERR unknown subcommand '\(subcommand)'. Try \(command.uppercased()) HELP."
    }

    private func isValidClientName(_ name: String) -> Bool {
        name.utf8.allSatisfy { $0 > 32 && $0 < 127 }
    }

    private func executeClient(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        if executeClientIntrospection(args, connection, into: out) { return }
        if args.matches(1, "SETNAME") && args.count == 3 {
            let name = args.string(2)
            guard isValidClientName(name) else {
                RESPWriter.error("ERR Client names cannot contain spaces, newlines or special characters.", into: out)
                return
            }
            connection.name = name.isEmpty ? nil : name
            RESPWriter.simpleString("OK", into: out)
        } else if args.matches(1, "GETNAME") && args.count == 2 {
            if let name = connection.name { RESPWriter.bulk(string: name, into: out) } else { RESPWriter.null(connection.respVersion, into: out) }
        } else if args.matches(1, "ID") && args.count == 2 {
            RESPWriter.integer(connection.clientID, into: out)
        } else if args.matches(1, "SETINFO") && args.count == 4 {
            executeClientSetInfo(args, connection, into: out)
        } else if args.matches(1, "HELP") && args.count == 2 {
            IntrospectionHelp.write(.client, into: out)
        } else {
            RESPWriter.error(string: subcommandError(args, command: "client", known: ["SETNAME", "GETNAME", "ID", "SETINFO", "HELP"]), into: out)
        }
    }

    /// CLIENT SETINFO LIB-NAME|LIB-VER value, with redis-server 7.2's rules:
    /// other attributes are refused, and values with spaces, newlines or
    /// other characters outside `!`...`~` (they would break CLIENT LIST's
    /// space-separated fields).
    private func executeClientSetInfo(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        let attribute = args.string(2)
        let isName = args.matches(2, "LIB-NAME")
        guard isName || args.matches(2, "LIB-VER") else {
            RESPWriter.error(string: "ERR Unrecognized option '\(attribute)'", into: out)
            return
        }
        let value = args.bytes(3)
        guard value.allSatisfy({ $0 >= UInt8(ascii: "!") && $0 <= UInt8(ascii: "~") }) else {
            RESPWriter.error(string: "ERR \(attribute) cannot contain spaces, newlines or special characters.", into: out)
            return
        }
        let text = args.string(3)
        if isName { connection.libraryName = text.isEmpty ? nil : text } else { connection.libraryVersion = text.isEmpty ? nil : text }
        RESPWriter.simpleString("OK", into: out)
    }

    /// COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND DOCS: enough for
    /// redis-cli, redis-benchmark and client libraries that introspect.
    private func executeCommandIntrospection(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        if args.count >= 2 && executeCommandLists(args, connection, into: out) { return }
        let all = RESPCommand.allCases.filter { $0 != .unknown }
        if args.count == 1 || (args.count == 2 && args.matches(1, "INFO")) {
            RESPWriter.arrayHeader(all.count, into: out)
            for command in all { writeCommandInfo(command, connection.respVersion, into: out) }
        } else if args.matches(1, "COUNT") && args.count == 2 {
            RESPWriter.integer(all.count, into: out)
        } else if args.matches(1, "INFO") {
            RESPWriter.arrayHeader(args.count - 2, into: out)
            for i in 2..<args.count {
                let command = RESPCommand.lookup(args.bytes(i))
                if command == .unknown { RESPWriter.null(connection.respVersion, into: out) } else { writeCommandInfo(command, connection.respVersion, into: out) }
            }
        } else if args.matches(1, "HELP") && args.count == 2 {
            IntrospectionHelp.write(.command, into: out)
        } else if args.matches(1, "DOCS") {
            // As redis-server: every command without names, unknown names left out.
            let named = args.count == 2 ? all : (2..<args.count).map { RESPCommand.lookup(args.bytes($0)) }.filter { $0 != .unknown }
            RESPWriter.mapHeader(named.count, connection.respVersion, into: out)
            for command in named { writeCommandDocs(command, connection.respVersion, into: out) }
        } else {
            RESPWriter.error(string: "ERR unknown subcommand '\(args.string(1))'. Try COMMAND HELP.", into: out)
        }
    }

    /// One command as COMMAND INFO answers it, in redis-server's layout:
    /// name, arity, flags, first/last/step key, ACL categories, tips, key
    /// specs, subcommands (RESP3 sends the lists as sets and the specs as maps).
    private func writeCommandInfo(_ command: RESPCommand, _ version: RESPVersion, into out: WireBuffer) {
        let described = command.commandDescription
        func set(_ count: Int) {
            if version == .resp3 { out.append("~"); out.appendDecimal(count); out.append("\r\n") } else { RESPWriter.arrayHeader(count, into: out) }
        }
        RESPWriter.arrayHeader(10, into: out)
        RESPWriter.bulk(string: command.name, into: out)
        RESPWriter.integer(command.arity, into: out)
        set(described.flags.count)
        for flag in described.flags { RESPWriter.simpleString(flag, into: out) }
        let spec = described.keySpec
        RESPWriter.integer(spec == nil ? 0 : 1, into: out)
        // The legacy last key is absolute (1 for one key); the spec's is relative (0).
        RESPWriter.integer(spec.map { $0.lastKey == 0 ? 1 : $0.lastKey } ?? 0, into: out)
        RESPWriter.integer(spec?.keyStep ?? 0, into: out)
        set(described.categories.count)
        for category in described.categories { RESPWriter.simpleString(category, into: out) }
        set(described.tips.count)
        for tip in described.tips { RESPWriter.bulk(string: tip.description, into: out) }
        set(spec == nil ? 0 : 1)
        if let spec {
            RESPWriter.mapHeader(3, version, into: out)
            RESPWriter.bulk(string: "flags", into: out)
            set(spec.flags.count)
            for flag in spec.flags { RESPWriter.simpleString(flag, into: out) }
            RESPWriter.bulk(string: "begin_search", into: out)
            RESPWriter.mapHeader(2, version, into: out)
            RESPWriter.bulk(string: "type", into: out); RESPWriter.bulk(string: "index", into: out)
            RESPWriter.bulk(string: "spec", into: out)
            RESPWriter.mapHeader(1, version, into: out)
            RESPWriter.bulk(string: "index", into: out); RESPWriter.integer(1, into: out)
            RESPWriter.bulk(string: "find_keys", into: out)
            RESPWriter.mapHeader(2, version, into: out)
            RESPWriter.bulk(string: "type", into: out); RESPWriter.bulk(string: "range", into: out)
            RESPWriter.bulk(string: "spec", into: out)
            RESPWriter.mapHeader(3, version, into: out)
            RESPWriter.bulk(string: "lastkey", into: out); RESPWriter.integer(spec.lastKey, into: out)
            RESPWriter.bulk(string: "keystep", into: out); RESPWriter.integer(spec.keyStep, into: out)
            RESPWriter.bulk(string: "limit", into: out); RESPWriter.integer(0, into: out)
        }
        set(0)
    }

    /// One command as COMMAND DOCS answers it: name, then a map of summary,
    /// since, group and complexity.
    private func writeCommandDocs(_ command: RESPCommand, _ version: RESPVersion, into out: WireBuffer) {
        let described = command.commandDescription
        RESPWriter.bulk(string: command.name, into: out)
        RESPWriter.mapHeader(4, version, into: out)
        RESPWriter.bulk(string: "summary", into: out); RESPWriter.bulk(string: described.summary, into: out)
        RESPWriter.bulk(string: "since", into: out); RESPWriter.bulk(string: described.since.description, into: out)
        RESPWriter.bulk(string: "group", into: out); RESPWriter.bulk(string: described.group.description, into: out)
        RESPWriter.bulk(string: "complexity", into: out); RESPWriter.bulk(string: described.complexity.description, into: out)
    }

    /// CONFIG GET pattern...: this node's settings under their config-file
    /// names, plus the Redis names tools ask for (maxmemory, save, appendonly).
    private func executeConfig(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        if executeConfigSet(args, into: out) { return }
        guard args.matches(1, "GET"), args.count >= 3 else {
            if args.matches(1, "HELP") && args.count == 2 {
                IntrospectionHelp.write(.config, into: out)
            } else if args.matches(1, "SET") {
                RESPWriter.error("ERR CONFIG SET is not supported: edit the config file and send SIGHUP, or restart", into: out)
            } else {
                RESPWriter.error(string: subcommandError(args, command: "config", known: ["GET", "HELP"]), into: out)
            }
            return
        }
        let settings = configSettings()
        var matched: [(String, String)] = []
        for (name, value) in settings {
            for i in 2..<args.count where globMatch(pattern: args.string(i).lowercased(), subject: name) {
                matched.append((name, value))
                break
            }
        }
        RESPWriter.mapHeader(matched.count, connection.respVersion, into: out)
        for (name, value) in matched {
            RESPWriter.bulk(string: name, into: out)
            RESPWriter.bulk(string: value, into: out)
        }
    }

    private func configSettings() -> [(String, String)] {
        // As running now: reloaded keys included, the rate limit as the admin endpoint may have set it.
        var c = node.runtime.running
        c.rateLimit = node.runtime.currentRateLimit
        c.rateBurst = node.runtime.rateBurst.load(ordering: .relaxed)
        func duration(_ d: Duration) -> String { "\(d.milliseconds)ms" }
        return [
            ("node_id", c.nodeID), ("bind_addr", c.bindAddr.description), ("gossip_bind_addr", c.gossipBindAddr.description),
            ("health_addr", c.healthAddr.description), ("client_advertise_addr", c.clientAdvertiseAddr),
            ("gossip_advertise_addr", c.gossipAdvertiseAddr), ("seeds", c.seeds.joined(separator: ",")),
            ("data_dir", c.dataDir), ("replication_factor", String(c.replicationFactor)), ("num_shards", String(c.numShards)),
            ("virtual_nodes", String(c.virtualNodes)), ("max_memory_mb", String(c.maxMemoryMB)),
            ("eviction_ratio", String(c.evictionRatio)), ("wal_mode", c.walMode.rawValue), ("wal_dir", c.effectiveWALDir),
            ("wal_max_size_mb", String(c.walMaxSizeMB)), ("gossip_interval", duration(c.gossipInterval)),
            ("suspect_timeout", duration(c.suspectTimeout)), ("dead_timeout", duration(c.deadTimeout)),
            ("max_conns", String(c.maxConns)), ("read_timeout", duration(c.readTimeout)), ("write_timeout", duration(c.writeTimeout)),
            ("idle_timeout", duration(c.idleTimeout)), ("replication_batch_size", String(c.replicationBatchSize)),
            ("replication_batch_timeout", duration(c.replicationBatchTimeout)),
            ("replication_tail_records", String(c.replicationTailRecords)),
            ("stream_rate_limit_mb", String(c.streamRateLimitMB)), ("write_quorum", String(c.writeQuorum)),
            ("lease_duration", duration(c.leaseDuration)), ("lease_election_timeout", duration(c.leaseElectionTimeout)),
            ("read_quorum", String(c.readQuorum)), ("tls_enabled", c.tlsEnabled ? "true" : "false"),
            ("tls_handshakes_per_address", String(c.tlsHandshakesPerAddress)),
            ("cluster_pending_accepts_per_address", String(c.clusterPendingAcceptsPerAddress)),
            // Whether a token is set, never the token (security.md).
            ("auth_token", c.authToken.isEmpty ? "" : "<redacted>"), ("auth_token_next", c.authTokenNext.isEmpty ? "" : "<redacted>"),
            ("auth_timeout", duration(c.authTimeout)), ("protected_mode", c.protectedMode ? "yes" : "no"),
            ("protected-mode", c.protectedMode ? "yes" : "no"),
            ("rate_limit", String(c.rateLimit)), ("rate_burst", String(c.rateBurst)),
            ("breaker_error_rate", String(c.breakerErrorRate)), ("breaker_min_calls", String(c.breakerMinCalls)),
            ("breaker_window", duration(c.breakerWindow)), ("breaker_cooldown", duration(c.breakerCooldown)),
            ("breaker_half_open_trials", String(c.breakerHalfOpenTrials)), ("drain_timeout", duration(c.drainTimeout)),
            ("pid_file", c.pidFile), ("log_level", c.logLevel), ("log_format", c.logFormat.rawValue),
            ("maintenance_interval", duration(c.maintenanceInterval)), ("reactors", String(node.reactorCount)),
            // Redis names that tools read.
            ("maxmemory", String(c.maxMemoryMB * 1024 * 1024)), ("maxmemory-policy", "s3-fifo"),
            ("maxclients", String(c.maxConns)), ("save", ""), ("appendonly", c.walMode == .off ? "no" : "yes"),
            ("appendfsync", c.walMode == .fsync ? "always" : "no"), ("databases", "1"),
            ("timeout", String(c.idleTimeout.milliseconds / 1000)),
            ("slowlog_log_slower_than", String(c.slowlogLogSlowerThan)), ("slowlog_max_len", String(c.slowlogMaxLen)),
            ("latency_monitor_threshold", String(c.latencyMonitorThreshold)),
            ("slowlog-log-slower-than", String(c.slowlogLogSlowerThan)), ("slowlog-max-len", String(c.slowlogMaxLen)),
            ("latency-monitor-threshold", String(c.latencyMonitorThreshold)),
        ]
    }

    func infoText(sections requested: [String]) -> String {
        // As redis-server groups them: no argument or "default" is every
        // section but commandstats, "all" and "everything" add it.
        let everything = requested.contains("all") || requested.contains("everything")
        let defaults = everything || requested.isEmpty || requested.contains("default")
        func wants(_ section: String) -> Bool {
            requested.contains(section) || (section == "commandstats" ? everything : defaults)
        }
        let totals = node.totals()
        let commands = node.commandTotals()
        let config = node.config
        let uptimeSeconds = (aegis_monotonic_ms_coarse() - node.startedMonotonicMs) / 1000
        var lines: [String] = []
        if wants("server") {
            lines += ["# Server", "aegiskv_version:\(BuildInfo.version)", "aegiskv_git_sha1:\(BuildInfo.commit)", "aegiskv_build_date:\(BuildInfo.buildDate)",
                      "redis_version:\(Self.redisCompatibleVersion)",
                      "redis_mode:standalone", "os:Linux", "arch_bits:64", "multiplexing_api:epoll",
                      "process_id:\(getpid())", "run_id:\(config.nodeID)", "tcp_port:\(node.boundClientPort.load(ordering: .relaxed))",
                      "uptime_in_seconds:\(uptimeSeconds)", "uptime_in_days:\(uptimeSeconds / 86400)",
                      "reactors:\(node.reactorCount)", "num_shards:\(config.numShards)", ""]
        }
        if wants("clients") {
            lines += ["# Clients", "connected_clients:\(totals.connections)", "maxclients:\(node.runtime.maxConns.load(ordering: .relaxed))", ""]
        }
        if wants("memory") {
            let rss = residentSetBytes()
            lines += ["# Memory", "used_memory:\(totals.usedMemoryBytes)", "used_memory_human:\(humanBytes(totals.usedMemoryBytes))",
                      "used_memory_rss:\(rss)", "used_memory_rss_human:\(humanBytes(rss))",
                      "mem_clients_normal:\(totals.clientBufferBytes)",
                      "lazyfree_pending_objects:\(totals.lazyFreePendingObjects)",
                      "used_memory_interconnect:\(node.interconnectMemoryBytes(totals))",
                      "maxmemory:\(config.maxMemoryMB * 1024 * 1024)", "maxmemory_human:\(humanBytes(config.maxMemoryMB * 1024 * 1024))",
                      "maxmemory_policy:s3-fifo", "eviction_ratio:\(config.evictionRatio)", ""]
        }
        if wants("stats") {
            lines += ["# Stats", "total_connections_received:\(totals.connectionsAccepted)",
                      "total_commands_processed:\(totals.commands)",
                      "total_net_input_bytes:\(totals.bytesIn)", "total_net_output_bytes:\(totals.bytesOut)",
                      "rejected_connections:\(totals.connectionsRejected)", "expired_keys:\(totals.expired)",
                      "evicted_keys:\(totals.evictions)", "keyspace_hits:\(totals.keyspaceHits)",
                      "keyspace_misses:\(totals.keyspaceMisses)", "forwarded_requests:\(totals.forwardedRequests)",
                      "protocol_errors:\(totals.protocolErrors)", "total_error_replies:\(commands.errors.reduce(0, +))"]
            if let tls = node.tls {
                // Only on a TLS port, as redis-server's tls_* fields.
                lines += ["tls_handshakes:\(tls.handshakesCompletedTotal)", "tls_handshake_failures:\(tls.handshakeFailuresTotal)",
                          "tls_handshake_timeouts:\(tls.handshakeTimeoutsTotal)", "tls_plaintext_refusals:\(tls.plaintextRefusalsTotal)",
                          "tls_handshakes_in_progress:\(tls.handshakesInProgress)",
                          "tls_handshakes_address_limited:\(tls.addressLimitRefusalsTotal)",
                          "tls_certificate_reloads:\(tls.reloadsTotal)",
                          "tls_record_layer:\(tls.kernelOffloadOffered ? "kernel" : "user-space")"]
            }
            lines.append("")
        }
        if wants("persistence") {
            lines += ["# Persistence", "wal_mode:\(config.walMode.rawValue)",
                      "wal_dir:\(config.walMode == .off ? "" : config.effectiveWALDir)",
                      "wal_writable:\(totals.walRefusingWrites == 0 ? 1 : 0)", "wal_batches:\(totals.walBatches)",
                      "wal_bytes:\(totals.walBytes)", "wal_snapshots:\(totals.walSnapshots)", "wal_errors:\(totals.walErrors)"]
            lines += walFlushInfoLines(node.walFlushStats() ?? WALFlushStats()) + [""]
        }
        if wants("replication") {
            // AegisKV replicates between its own nodes (INFO cluster), never
            // to Redis replicas: to a Redis tool this node is a primary
            // with none attached.
            // The quorum fields are AegisKV's own: redis has no write quorum
            // (its WAIT is per connection; min-replicas-to-write refuses instead).
            let quorum = totals.quorum
            lines += ["# Replication", "role:master", "connected_slaves:0",
                      "replication_factor:\(config.replicationFactor)",
                      "write_quorum:\(config.replicationFactor > 1 ? config.writeQuorum : 0)",
                      "quorum_waits:\(quorum.waits)", "quorum_timeouts:\(quorum.timeouts)",
                      "quorum_unreachable:\(quorum.unreachable)",
                      "read_quorum:\(config.replicationFactor > 1 ? config.readQuorum : 1)",
                      "read_quorum_waits:\(quorum.readWaits)", "read_quorum_timeouts:\(quorum.readTimeouts)",
                      "read_repairs_sent:\(quorum.readRepairsSent)", "read_repairs_applied:\(quorum.readRepairsApplied)"]
            // Reads of a shard whose lease this node does not hold are served
            // from the local replica and may be stale.
            let leases = node.cluster.snapshot.leases
            lines += ["lease_enforced:\(leases.enforced ? 1 : 0)", "lease_shards_held:\(leases.held)",
                      "lease_reads_possibly_stale_shards:\(leases.readsPossiblyStaleShards)",
                      "lease_write_refusals:\(totals.leaseRefusals)",
                      "lease_requests_parked:\(totals.requestsParked)", "lease_parked_timed_out:\(totals.parkedTimedOut)",
                      "lease_parked_waiting:\(totals.parkedWaiting)", ""]
        }
        if wants("cpu") { lines += cpuInfoLines() }
        if wants("commandstats") { lines += commandStatsLines(commands) }
        if wants("errorstats") {
            lines.append("# Errorstats")
            // redis-server lists them in byte order of the code.
            for (code, count) in commands.errorCodes.sorted(by: { $0.key < $1.key }) {
                lines.append("errorstat_\(code):count=\(count)")
            }
            lines.append("")
        }
        if wants("cluster") { lines += clusterInfoLines() }
        if wants("keyspace") {
            lines.append("# Keyspace")
            if totals.items > 0 { lines.append("db0:keys=\(totals.items)") }
            lines.append("")
        }
        return lines.joined(separator: "\r\n")
    }
}

extension Reactor {
    /// INFO commandstats in redis-server 7.0's words. `calls` and
    /// `failed_calls` leave out the rejected requests, as there; `usec` is
    /// what SLOWLOG's timing measured (0 while neither SLOWLOG nor LATENCY
    /// has a threshold) on the reactor that read the command.
    func commandStatsLines(_ commands: CommandStatsSnapshot) -> [String] {
        var lines = ["# Commandstats"]
        for (id, name) in CommandMetricsLayout.names.enumerated() where id != 0 && commands.calls[id] > 0 {
            let rejected = commands.rejected[id]
            let calls = commands.calls[id] - rejected
            let usec = commands.timeNs[id] / 1000
            lines.append("cmdstat_\(name):calls=\(calls),usec=\(usec),usec_per_call=\(Self.twoDecimals(usec, per: calls))"
                         + ",rejected_calls=\(rejected),failed_calls=\(commands.errors[id] - rejected)")
        }
        lines.append("")
        return lines
    }

    /// `total / count` with two decimals, rounded half up (0.00 for no count).
    static func twoDecimals(_ total: Int, per count: Int) -> String {
        guard count > 0 else { return "0.00" }
        let hundredths = (total * 100 + count / 2) / count
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// INFO cluster: what the cluster loop last published (a copy taken
    /// under its lock; nothing of the loop's own state is read here).
    func clusterInfoLines() -> [String] {
        let snapshot = node.cluster.snapshot
        let me = snapshot.selfMember
        let alone = snapshot.members.isEmpty
        // cluster_enabled is Redis Cluster's flag: clients that see 1 switch
        // to the Redis Cluster protocol (CLUSTER SLOTS, MOVED), which this
        // node does not speak; any node answers for any key instead.
        return ["# Cluster", "cluster_enabled:0",
                "cluster_members:\(alone ? 1 : snapshot.members.count)",
                "cluster_members_alive:\(alone ? 1 : snapshot.count(.alive))",
                "cluster_members_suspect:\(snapshot.count(.suspect))",
                "cluster_members_dead:\(snapshot.count(.dead))",
                "cluster_shards_owned:\(me?.shardsPrimary ?? node.config.numShards)",
                "cluster_shards_replica:\(me?.shardsFollower ?? 0)",
                "cluster_node_id:\(node.config.nodeID)", "cluster_local_health:\(snapshot.localHealth)"]
            + (snapshot.placementDigest.map { ["cluster_placement_digest:\($0)"] } ?? [])
            + refillInfoLines(snapshot) + [""]
    }

    /// The figures of /stats' `refill` and /cluster's `moves`, for an
    /// operator on redis-cli: whether this node serves every shard it
    /// replicates (as /health judges it), the catch-up running now or the
    /// last one, and the shards streaming to or from it.
    func refillInfoLines(_ snapshot: ClusterSnapshot) -> [String] {
        let standing = node.replicaStanding(snapshot)
        let catchUp = snapshot.catchUp
        return ["cluster_in_step:\(standing.inStep ? 1 : 0)",
                "cluster_shards_replicated:\(standing.replicated)",
                "cluster_shards_caught_up:\(standing.caughtUp)",
                "cluster_shards_behind:\(standing.behind)",
                "cluster_shards_without_holder:\(standing.withoutHolder)",
                "cluster_catch_up_running:\(catchUp.running ? 1 : 0)",
                "cluster_catch_up_bytes_received:\(catchUp.bytes)",
                "cluster_catch_up_seconds:\(Self.twoDecimals(Int(clamping: catchUp.ms), per: 1_000))",
                "cluster_catch_up_bytes_per_second:\(catchUp.bytesPerSecond)",
                "cluster_shards_moving:\(snapshot.replication.shardsMoving)",
                "cluster_shard_move_rate_bytes_per_second:\(snapshot.replication.moveRateBytesPerSecond)"]
    }
}

extension Reactor {
    /// INFO cpu: the process's and its children's CPU seconds, as
    /// redis-server reports them (getrusage).
    func cpuInfoLines() -> [String] {
        func seconds(_ who: Int32) -> (system: String, user: String) {
            var usage = rusage()
            guard getrusage(__rusage_who_t(who), &usage) == 0 else { return ("0.000000", "0.000000") }
            func text(_ time: timeval) -> String {
                let micros = String(time.tv_usec)
                return "\(time.tv_sec)." + String(repeating: "0", count: max(0, 6 - micros.count)) + micros
            }
            return (text(usage.ru_stime), text(usage.ru_utime))
        }
        let me = seconds(RUSAGE_SELF.rawValue)
        let children = seconds(RUSAGE_CHILDREN.rawValue)
        return ["# CPU", "used_cpu_sys:\(me.system)", "used_cpu_user:\(me.user)",
                "used_cpu_sys_children:\(children.system)", "used_cpu_user_children:\(children.user)", ""]
    }
}

func humanBytes(_ bytes: Int) -> String {
    let units = ["B", "K", "M", "G", "T"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    if unit == 0 { return "\(bytes)B" }
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)\(units[unit])"
}

/// Resident set size of this process, from /proc/self/statm.
func residentSetBytes() -> Int { processMemoryBytes().resident }

/// (virtual size, resident set) of this process in bytes, from
/// /proc/self/statm; zeros when it cannot be read.
public func processMemoryBytes() -> (virtual: Int, resident: Int) {
    guard let text = Platform.readText("/proc/self/statm") else { return (0, 0) }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let size = Int(fields[0]), let resident = Int(fields[1]) else { return (0, 0) }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    return (size * page, resident * page)
}

extension Reactor {
    /// INFO persistence: the node's device flushes (fsync mode; zeros
    /// otherwise). The histograms as `<upper bound>=<count>` pairs, not
    /// cumulative, last bound `inf`; latency bounds in microseconds.
    func walFlushInfoLines(_ flushes: WALFlushStats) -> [String] {
        func pairs(_ bounds: [String], _ counts: [Int]) -> String {
            zip(bounds + ["inf"], counts).map { "\($0)=\($1)" }.joined(separator: ",")
        }
        return [
            "wal_flushes:\(flushes.flushes)", "wal_own_flushes:\(flushes.ownFlushes)", "wal_flush_failures:\(flushes.failures)",
            "wal_flushes_last_second:\(flushes.flushesLastSecond)",
            "wal_flush_busy_percent:\(min(100, Int((Double(flushes.flushBusyNsLastSecond) / 1e7).rounded())))",
            "wal_flush_records:\(flushes.records)",
            "wal_records_per_flush_avg:\(Self.twoDecimals(flushes.records, per: flushes.flushes))",
            "wal_records_per_flush:\(pairs(WALFlushStats.recordBounds.map(String.init), flushes.recordBuckets))",
            "wal_flush_latency_avg_us:\(Self.twoDecimals(Int(flushes.latencySumNs / 1000), per: flushes.flushes))",
            "wal_flush_latency_us:\(pairs(WALFlushStats.latencyBoundsNs.map { String($0 / 1000) }, flushes.latencyBuckets))",
        ]
    }
}
