/// The table of every configuration key. Adding a key means: a property on
/// `AegisConfig`, its default in `AegisConfig.defaults`, one entry here, one
/// `@Option` in `ConfigFlags`, and a row in docs/configuration.md (a test
/// checks the table against this list).
enum ConfigKeys {
    static let all: [KeySpec] = [
        .string("node_id", \.nodeID, expected: "a node name without spaces or control characters, at most 255 bytes",
                check: checkNodeID,
                meaning: "Unique name of this node in the cluster; no spaces or control characters, at most 255 bytes."),
        .listenAddress("bind_addr", \.bindAddr,
                       meaning: "Where clients connect (AegisKV binary protocol and RESP). Port 0 = ephemeral."),
        .listenAddress("gossip_bind_addr", \.gossipBindAddr,
                       meaning: "Where other nodes connect: gossip, replication, forwarding, migration."),
        .listenAddress("health_addr", \.healthAddr,
                       meaning: "HTTP endpoint for /health, /ready, /metrics, /cluster, /stats, /admin, /debug."),
        .peerAddress("client_advertise_addr", \.clientAdvertiseAddr,
                     meaning: "Address announced to clients (redirects, /cluster); \"\" = derived from bind_addr."),
        .peerAddress("gossip_advertise_addr", \.gossipAdvertiseAddr,
                     meaning: "Address announced to other nodes; \"\" = derived from gossip_bind_addr."),
        .peerList("seeds", \.seeds,
                  meaning: "Gossip addresses of existing nodes to join through; empty = start a new cluster. Alias in the file: `addrs`."),
        .string("data_dir", \.dataDir, expected: "a non-empty directory path", check: { $0.isEmpty ? "it is empty" : nil },
                meaning: "Directory for node state, snapshots and (by default) the WAL."),
        .int("replication_factor", \.replicationFactor, range: 1...Int(Int32.max),
             meaning: "Copies of each shard: one primary plus replication_factor - 1 followers."),
        .int("num_shards", \.numShards, range: 1...65536,
             meaning: "Fixed number of shards keys hash into; must be the same on every node."),
        .int("virtual_nodes", \.virtualNodes, range: 1...65536,
             meaning: "Points per node on the consistent-hash ring; must be the same on every node."),
        .int("max_memory_mb", \.maxMemoryMB, range: 0...(Int.max >> 20),
             meaning: "Memory for cached data, in MiB; 0 = unlimited. What the process holds at start (measured, at most half of it) counts against it, so that RSS stays below it; the reactors share the rest."),
        .ratio("eviction_ratio", \.evictionRatio,
               meaning: "Eviction starts when data reaches this fraction of max_memory_mb."),
        .choice("wal_mode", \.walMode, choices: WALMode.allCases.map(\.rawValue),
                meaning: "Write-ahead log: `off` (pure cache), `write` (OS flushes), `fsync` (on disk before the reply)."),
        .string("wal_dir", \.walDir,
                meaning: "Directory for WAL segments; \"\" = `<data_dir>/wal`."),
        .int("wal_max_size_mb", \.walMaxSizeMB, range: 1...1_048_576,
             meaning: "A WAL segment is rotated when it reaches this size, in MiB. In fsync mode each reactor also keeps the next segment ready (written with zeros), so its log takes up to one segment more."),
        .duration("gossip_interval", \.gossipInterval, allowZero: false,
                  meaning: "Time between gossip rounds. Must be shorter than suspect_timeout."),
        .string("gossip_secret", \.gossipSecret, secret: true,
                meaning: "Shared secret authenticating node-to-node traffic; \"\" = none. Same on every node."),
        .duration("suspect_timeout", \.suspectTimeout, allowZero: false,
                  meaning: "A member that has not answered for this long becomes `suspect`."),
        .duration("dead_timeout", \.deadTimeout, allowZero: false,
                  meaning: "A member silent for this long is `dead` and its shards are rebuilt elsewhere. Must exceed suspect_timeout."),
        .int("max_conns", \.maxConns, range: 1...Int(Int32.max),
             meaning: "Client connections accepted at once; more are refused. Left unset, it is lowered to what the open-file limit can hold."),
        .int("client_input_max_mb", \.clientInputMaxMB, range: 1...65_536,
             meaning: "Most bytes of a request one client connection may buffer before it is complete, in MiB; a client past it gets an error and is closed. All connections together may buffer a quarter of max_memory_mb (unlimited when that is 0), and each reactor at least one client's worth."),
        .duration("read_timeout", \.readTimeout, allowZero: true,
                  meaning: "Longest wait for more bytes of a request a client has started sending; 0s = no limit."),
        .duration("write_timeout", \.writeTimeout, allowZero: true,
                  meaning: "Longest wait for a client to accept reply bytes, and for a write to reach write_quorum (then answered TIMEOUT); 0s = no limit."),
        .duration("idle_timeout", \.idleTimeout, allowZero: true,
                  meaning: "A client connection with no request in progress is closed after this long; 0s = never."),
        .int("replication_batch_size", \.replicationBatchSize, range: 1...1_048_576,
             meaning: "Most writes sent to a follower in one replication batch."),
        .duration("replication_batch_timeout", \.replicationBatchTimeout, allowZero: true,
                  meaning: "Longest a write waits for its replication batch to fill; 0s = send at once."),
        .duration("lease_duration", \.leaseDuration, allowZero: false,
                  meaning: "How long a shard's lease lasts (writes need it with replication_factor > 1); renewed every quarter of it. Same on every node."),
        .duration("lease_election_timeout", \.leaseElectionTimeout, allowZero: false,
                  meaning: "A replica other than a shard's preferred one campaigns for its lease after this silence times its rank."),
        .int("write_quorum", \.writeQuorum, range: 0...Int(Int32.max),
             meaning: "Acknowledgements (primary included) a write waits for; 0 = asynchronous. At most replication_factor."),
        .int("read_quorum", \.readQuorum, range: 1...Int(Int32.max), zeroMeans: 1,
             meaning: "Replicas a read consults; above 1, stale replicas are repaired. At most replication_factor. 0 (AegisKV v1's default, \"local only\") means 1."),
        .string("auth_token", \.authToken, secret: true,
                meaning: "Token clients must present (AUTH; `Authorization: Bearer` for /admin and /debug); \"\" = no authentication. Reloadable: connections already logged in stay so."),
        .string("auth_token_next", \.authTokenNext, secret: true,
                meaning: "A second token accepted alongside auth_token during a rotation; \"\" = none. Needs auth_token. See security.md."),
        .duration("auth_timeout", \.authTimeout, allowZero: true,
                  meaning: "While a token is set, a client connection that has not logged in (AUTH) within this long is closed; 0s = no limit."),
        .bool("protected_mode", \.protectedMode,
              meaning: "With no auth_token, answer only clients on loopback addresses (127.0.0.0/8, ::1); others get a DENIED error and are closed. false = answer every address (logged at start)."),
        .bool("tls_enabled", \.tlsEnabled,
              meaning: "Serve clients over TLS. Requires tls_cert_file and tls_key_file."),
        .string("tls_cert_file", \.tlsCertFile,
                meaning: "PEM certificate chain for TLS."),
        .string("tls_key_file", \.tlsKeyFile,
                meaning: "PEM private key for TLS."),
        .string("tls_ca_file", \.tlsCAFile,
                meaning: "PEM CA bundle for verifying peers; \"\" = system roots / no client verification."),
        .int("rate_limit", \.rateLimit, range: 0...Int(Int32.max),
             meaning: "Client operations per second this node accepts; 0 = unlimited."),
        .int("rate_burst", \.rateBurst, range: 0...Int(Int32.max),
             meaning: "Operations allowed in a burst above rate_limit; 0 = same as rate_limit."),
        .ratio("breaker_error_rate", \.breakerErrorRate,
               meaning: "A circuit breaker opens when this fraction of the calls in breaker_window failed."),
        .int("breaker_min_calls", \.breakerMinCalls, range: 1...Int(Int32.max),
             meaning: "Calls breaker_window must hold before breaker_error_rate can open a breaker."),
        .wholeSeconds("breaker_window", \.breakerWindow, range: 1...3600,
                      meaning: "Sliding window over which a breaker counts calls and failures (one bucket per second)."),
        .duration("breaker_cooldown", \.breakerCooldown, allowZero: false,
                  meaning: "How long an automatically opened breaker fails fast before it half-opens."),
        .int("breaker_half_open_trials", \.breakerHalfOpenTrials, range: 1...Int(Int32.max),
             meaning: "Trial calls a half-open breaker lets through; all succeeding closes it, one failing opens it again."),
        .duration("drain_timeout", \.drainTimeout, allowZero: true,
                  meaning: "On SIGTERM, longest wait for in-flight requests and shard hand-off before exiting."),
        .string("pid_file", \.pidFile,
                meaning: "File the process id is written to at start and removed from at exit; \"\" = none."),
        .word("log_level", \.logLevel, choices: AegisConfig.logLevels, spellings: ["warn": "warning"],
              meaning: "Least severe log level written to stderr. `warn` (AegisKV v1's spelling) means `warning`."),
        .choice("log_format", \.logFormat, choices: LogFormat.allCases.map(\.rawValue),
                meaning: "`text` (time, level, message, key=value) or `json` (one object per line); a `<N>` syslog priority prefix when stderr is the journal."),
        .duration("maintenance_interval", \.maintenanceInterval, allowZero: false,
                  meaning: "Period of background work: expiry sweep, eviction, WAL housekeeping."),
        .int("reactors", \.reactors, range: 0...4096,
             meaning: "Reactor (event-loop) threads; 0 = one per CPU the process may use: its CPU affinity (taskset, systemd CPUAffinity=), capped by a cgroup CPU quota rounded up. The rings between reactors share 64 MiB whatever the count (see operations.md, \"Memory between reactors\")."),
        .int("slowlog_log_slower_than", \.slowlogLogSlowerThan, range: -1...Int(Int32.max),
             meaning: "SLOWLOG records commands taking at least this many microseconds; -1 = none, 0 = every command. Also `CONFIG SET slowlog-log-slower-than`."),
        .int("slowlog_max_len", \.slowlogMaxLen, range: 0...1_000_000,
             meaning: "SLOWLOG entries kept (the oldest is dropped first). Also `CONFIG SET slowlog-max-len`."),
        .int("latency_monitor_threshold", \.latencyMonitorThreshold, range: 0...Int(Int32.max),
             meaning: "LATENCY LATEST/HISTORY record commands taking at least this many milliseconds; 0 = off. Also `CONFIG SET latency-monitor-threshold`."),
    ]

    static let byName: [String: KeySpec] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Keys of AegisKV v1's config.json with no counterpart here, and why
    /// each can be dropped. A v1 file is accepted unchanged (the runbook's
    /// upgrade keeps /etc/aegiskv/config.json); each is logged once at
    /// start. Listed in docs/configuration.md, "AegisKV v1 keys".
    static let v1Only: [(name: String, reason: String)] = [
        ("shard_max_bytes", "memory is bounded per node by max_memory_mb, shared by the reactors, not per shard"),
        ("replication_max_retries", "replication is not built in this release; when it is, followers catch up from the log instead of a retry count"),
        ("cross_dc_seeds", "AegisKV v1's deployment guide showed it, but v1 never read it"),
        ("cross_dc_replication", "AegisKV v1's deployment guide showed it, but v1 never read it"),
    ]

    static let v1OnlyByName: [String: String] = Dictionary(uniqueKeysWithValues: v1Only.map { ($0.name, $0.reason) })

    /// nil when `id` is a usable node id, else why not.
    @Sendable static func checkNodeID(_ id: String) -> String? {
        if id.isEmpty { return "it is empty" }
        if id.utf8.count > 255 { return "it is longer than 255 bytes" }
        if id.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
            return "it contains a space or control character"
        }
        return nil
    }
}
