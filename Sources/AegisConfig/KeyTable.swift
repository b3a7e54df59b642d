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
             meaning: "Memory for cached data, in MiB; 0 = unlimited."),
        .ratio("eviction_ratio", \.evictionRatio,
               meaning: "Eviction starts when data reaches this fraction of max_memory_mb."),
        .choice("wal_mode", \.walMode, choices: WALMode.allCases.map(\.rawValue),
                meaning: "Write-ahead log: `off` (pure cache), `write` (OS flushes), `fsync` (on disk before the reply)."),
        .string("wal_dir", \.walDir,
                meaning: "Directory for WAL segments; \"\" = `<data_dir>/wal`."),
        .int("wal_max_size_mb", \.walMaxSizeMB, range: 1...1_048_576,
             meaning: "A WAL segment is rotated when it reaches this size, in MiB."),
        .duration("gossip_interval", \.gossipInterval, allowZero: false,
                  meaning: "Time between gossip rounds. Must be shorter than suspect_timeout."),
        .string("gossip_secret", \.gossipSecret, secret: true,
                meaning: "Shared secret authenticating node-to-node traffic; \"\" = none. Same on every node."),
        .duration("suspect_timeout", \.suspectTimeout, allowZero: false,
                  meaning: "A member that has not answered for this long becomes `suspect`."),
        .duration("dead_timeout", \.deadTimeout, allowZero: false,
                  meaning: "A member silent for this long is `dead` and its shards are rebuilt elsewhere. Must exceed suspect_timeout."),
        .int("max_conns", \.maxConns, range: 1...Int(Int32.max),
             meaning: "Client connections accepted at once; more are refused."),
        .duration("read_timeout", \.readTimeout, allowZero: true,
                  meaning: "Longest wait for more bytes of a request a client has started sending; 0s = no limit."),
        .duration("write_timeout", \.writeTimeout, allowZero: true,
                  meaning: "Longest wait for a client to accept reply bytes; 0s = no limit."),
        .duration("idle_timeout", \.idleTimeout, allowZero: true,
                  meaning: "A client connection with no request in progress is closed after this long; 0s = never."),
        .int("replication_batch_size", \.replicationBatchSize, range: 1...1_048_576,
             meaning: "Most writes sent to a follower in one replication batch."),
        .duration("replication_batch_timeout", \.replicationBatchTimeout, allowZero: true,
                  meaning: "Longest a write waits for its replication batch to fill; 0s = send at once."),
        .int("write_quorum", \.writeQuorum, range: 0...Int(Int32.max),
             meaning: "Acknowledgements (primary included) a write waits for; 0 = asynchronous. At most replication_factor."),
        .int("read_quorum", \.readQuorum, range: 1...Int(Int32.max),
             meaning: "Replicas a read consults; above 1, stale replicas are repaired. At most replication_factor."),
        .string("auth_token", \.authToken, secret: true,
                meaning: "Token clients must present (AUTH); \"\" = no authentication."),
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
        .duration("drain_timeout", \.drainTimeout, allowZero: true,
                  meaning: "On SIGTERM, longest wait for in-flight requests and shard hand-off before exiting."),
        .string("pid_file", \.pidFile,
                meaning: "File the process id is written to at start and removed from at exit; \"\" = none."),
        .word("log_level", \.logLevel, choices: AegisConfig.logLevels,
              meaning: "Least severe log level written to stderr."),
        .choice("log_format", \.logFormat, choices: LogFormat.allCases.map(\.rawValue),
                meaning: "`text` (time, level, message, key=value) or `json` (one object per line); a `<N>` syslog priority prefix when stderr is the journal."),
        .duration("maintenance_interval", \.maintenanceInterval, allowZero: false,
                  meaning: "Period of background work: expiry sweep, eviction, WAL housekeeping."),
        .int("reactors", \.reactors, range: 0...4096,
             meaning: "Reactor (event-loop) threads; 0 = one per online CPU."),
    ]

    static let byName: [String: KeySpec] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

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
