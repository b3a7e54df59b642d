/// How the write-ahead log is used: not at all, written and left to the OS,
/// or synced to disk before a write is acknowledged.
public enum WALMode: String, Sendable, CaseIterable {
    case off, write, fsync
}

/// How log lines are formatted on stderr.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// The complete, validated configuration of one node.
///
/// Obtain one from `ConfigLoader.load`, which layers defaults, the JSON
/// file, `AEGIS_*` environment variables and `--flags`. Each property
/// corresponds to one snake_case key; `AegisConfig.allKeys` lists them and
/// docs/configuration.md describes them.
public struct AegisConfig: Sendable, Equatable {
    public var nodeID: String
    public var bindAddr: SocketAddress
    public var gossipBindAddr: SocketAddress
    public var healthAddr: SocketAddress
    /// "" = health_addr serves plain http; else https with this chain and health_tls_key_file.
    public var healthTLSCertFile: String
    public var healthTLSKeyFile: String
    /// "" = no client certificate asked on health_addr.
    public var healthTLSCAFile: String
    /// "host:port" clients are told to use for this node; "" = derive from bind_addr.
    public var clientAdvertiseAddr: String
    /// "host:port" peers are told to use for this node; "" = derive from gossip_bind_addr.
    public var gossipAdvertiseAddr: String
    /// Gossip addresses ("host:port") of nodes to join through.
    public var seeds: [String]
    public var dataDir: String
    public var replicationFactor: Int
    public var numShards: Int
    public var virtualNodes: Int
    /// Megabytes of data before eviction; 0 = unlimited.
    public var maxMemoryMB: Int
    public var evictionRatio: Double
    public var walMode: WALMode
    /// "" = `<data_dir>/wal`; see `effectiveWALDir`.
    public var walDir: String
    public var walMaxSizeMB: Int
    public var gossipInterval: Duration
    public var gossipSecret: String
    /// "" = peer links on gossip_bind_addr are plain TCP; else TLS with mutual
    /// authentication, this node presenting this chain and cluster_tls_key_file.
    public var clusterTLSCertFile: String
    public var clusterTLSKeyFile: String
    /// The cluster CA: peers must present a certificate it signed.
    public var clusterTLSCAFile: String
    /// Accepted peer connections from one address still without their hello (TLS handshake included).
    public var clusterPendingAcceptsPerAddress: Int
    public var suspectTimeout: Duration
    public var deadTimeout: Duration
    public var maxConns: Int
    /// Most bytes of unparsed requests one client connection may buffer, in MiB.
    public var clientInputMaxMB: Int
    /// Zero = no timeout.
    public var readTimeout: Duration
    /// Zero = no timeout.
    public var writeTimeout: Duration
    /// Zero = idle connections are never closed.
    public var idleTimeout: Duration
    public var replicationBatchSize: Int
    public var replicationBatchTimeout: Duration
    /// Writes per shard a primary keeps to catch followers up from.
    public var replicationTailRecords: Int
    /// MiB per second this node sends as shard streams, all together; 0 = no limit.
    public var streamRateLimitMB: Int
    /// How long a shard lease lasts; renewed every quarter of it.
    public var leaseDuration: Duration
    /// A replica that is not a shard's preferred candidate campaigns after this silence times its rank.
    public var leaseElectionTimeout: Duration
    /// 0 = asynchronous replication.
    public var writeQuorum: Int
    public var readQuorum: Int
    public var authToken: String
    /// A second token accepted alongside auth_token while clients move to it.
    public var authTokenNext: String
    /// Close a connection that has not sent a right AUTH for this long; zero = never.
    public var authTimeout: Duration
    /// With no token set, answer only loopback clients.
    public var protectedMode: Bool
    public var tlsEnabled: Bool
    public var tlsCertFile: String
    public var tlsKeyFile: String
    public var tlsCAFile: String
    /// Client TLS handshakes in progress at once from one address, over every reactor.
    public var tlsHandshakesPerAddress: Int
    /// Operations per second; 0 = no limit.
    public var rateLimit: Int
    /// 0 = same as rate_limit.
    public var rateBurst: Int
    /// Failure fraction over breaker_window at which a circuit breaker opens.
    public var breakerErrorRate: Double
    /// Calls breaker_window must hold before breaker_error_rate counts.
    public var breakerMinCalls: Int
    /// Whole seconds (the breakers keep one bucket per second).
    public var breakerWindow: Duration
    public var breakerCooldown: Duration
    public var breakerHalfOpenTrials: Int
    public var drainTimeout: Duration
    /// "" = no pid file.
    public var pidFile: String
    /// One of `AegisConfig.logLevels` (swift-log's `Logger.Level` raw values).
    public var logLevel: String
    public var logFormat: LogFormat
    public var maintenanceInterval: Duration
    /// Reactor threads; 0 = one per CPU the process may use (CPUBudget).
    public var reactors: Int
    /// SLOWLOG: commands taking at least this many microseconds are
    /// logged; -1 logs none, 0 every command (Redis's slowlog-log-slower-than).
    public var slowlogLogSlowerThan: Int
    /// SLOWLOG: entries kept, newest first (Redis's slowlog-max-len).
    public var slowlogMaxLen: Int
    /// LATENCY: commands taking at least this many milliseconds are
    /// recorded as latency events; 0 = off (Redis's latency-monitor-threshold).
    public var latencyMonitorThreshold: Int

    /// A working single node: every default, node_id = this machine's host name.
    public static let defaults = AegisConfig(
        nodeID: Platform.hostName(),
        bindAddr: SocketAddress(host: "0.0.0.0", port: 7700),
        gossipBindAddr: SocketAddress(host: "0.0.0.0", port: 7701),
        healthAddr: SocketAddress(host: "0.0.0.0", port: 7702),
        healthTLSCertFile: "",
        healthTLSKeyFile: "",
        healthTLSCAFile: "",
        clientAdvertiseAddr: "",
        gossipAdvertiseAddr: "",
        seeds: [],
        dataDir: "/var/lib/aegiskv",
        replicationFactor: 3,
        numShards: 256,
        virtualNodes: 128,
        maxMemoryMB: 1024,
        evictionRatio: 0.9,
        walMode: .off,
        walDir: "",
        walMaxSizeMB: 64,
        gossipInterval: .seconds(1),
        gossipSecret: "",
        clusterTLSCertFile: "",
        clusterTLSKeyFile: "",
        clusterTLSCAFile: "",
        clusterPendingAcceptsPerAddress: 64,
        suspectTimeout: .seconds(5),
        deadTimeout: .seconds(30),
        maxConns: 50_000,
        clientInputMaxMB: 80,
        readTimeout: .seconds(30),
        writeTimeout: .seconds(30),
        idleTimeout: .zero,
        replicationBatchSize: 128,
        replicationBatchTimeout: .milliseconds(5),
        replicationTailRecords: 1_024,
        streamRateLimitMB: 0,
        leaseDuration: .seconds(4),
        leaseElectionTimeout: .seconds(4),
        writeQuorum: 0,
        readQuorum: 1,
        authToken: "",
        authTokenNext: "",
        authTimeout: .seconds(10),
        protectedMode: true,
        tlsEnabled: false,
        tlsCertFile: "",
        tlsKeyFile: "",
        tlsCAFile: "",
        tlsHandshakesPerAddress: 128,
        rateLimit: 0,
        rateBurst: 0,
        breakerErrorRate: 0.5,
        breakerMinCalls: 20,
        breakerWindow: .seconds(10),
        breakerCooldown: .seconds(30),
        breakerHalfOpenTrials: 3,
        drainTimeout: .seconds(10),
        pidFile: "",
        logLevel: "info",
        logFormat: .text,
        maintenanceInterval: .milliseconds(100),
        reactors: 0,
        slowlogLogSlowerThan: 10_000,
        slowlogMaxLen: 128,
        latencyMonitorThreshold: 0
    )

    /// Peer connections the cluster loop keeps accepted at once; more are
    /// closed on accept. Also the most `cluster_pending_accepts_per_address`
    /// can usefully be: past it, one address could take every slot.
    public static let clusterAcceptedConnectionsMax = 1024

    /// The most `tls_handshakes_per_address` can be: one source address
    /// reaches the client port from at most this many source ports at once,
    /// so a larger bound could never be reached.
    public static let tlsHandshakesPerAddressCeiling = 65_535

    /// The log levels `log_level` accepts, least to most severe.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Where WAL segments live: `wal_dir`, or `<data_dir>/wal` when it is empty.
    public var effectiveWALDir: String {
        if !walDir.isEmpty { return walDir }
        if dataDir.hasSuffix("/") { return dataDir + "wal" }
        return dataDir + "/wal"
    }

    /// `rate_burst`, or `rate_limit` when the burst is 0.
    public var effectiveRateBurst: Int { rateBurst == 0 ? rateLimit : rateBurst }

    /// Every accepted key (snake_case), in documentation order. The alias
    /// `addrs` (for `seeds`) is not listed; see `keyAliases`.
    public static let allKeys: [String] = ConfigKeys.all.map(\.name)

    /// Other names accepted in the JSON file: alias → key.
    public static let keyAliases: [String: String] = ["addrs": "seeds"]

    /// Keys that a SIGHUP reload applies at once, in `allKeys` order. The
    /// list is explicit so that a new key needs a restart until someone
    /// makes the running node pick it up and adds it here. The cluster
    /// timings and seeds are kept in the node's runtime settings for the
    /// cluster layer to read.
    public static let reloadableKeys: [String] = allKeys.filter {
        [
            "seeds", "gossip_interval", "suspect_timeout", "dead_timeout", "max_conns",
            "read_timeout", "write_timeout", "idle_timeout", "rate_limit", "rate_burst",
            "breaker_error_rate", "breaker_min_calls", "breaker_window", "breaker_cooldown", "breaker_half_open_trials",
            "drain_timeout", "log_level", "slowlog_log_slower_than", "slowlog_max_len", "latency_monitor_threshold",
            "auth_token", "auth_token_next", "auth_timeout", "protected_mode", "stream_rate_limit_mb",
        ].contains($0)
    }

    /// Keys that take effect only when the process restarts: every key not
    /// in `reloadableKeys`. A reload that finds one changed names it in the
    /// log and keeps running with the old value.
    public static let restartRequiredKeys: Set<String> = Set(allKeys).subtracting(reloadableKeys)

    /// Config keys (snake_case, in `allKeys` order) whose values differ between the two.
    public func changedKeys(from other: AegisConfig) -> [String] {
        ConfigKeys.all.filter { $0.value(self) != $0.value(other) }.map(\.name)
    }

    /// Sets `key` to its value in `other`; an unknown key changes nothing.
    public mutating func copyValue(ofKey key: String, from other: AegisConfig) {
        ConfigKeys.byName[key]?.copy(&self, other)
    }

    /// The value of `key` as text (durations as "30s", lists comma-separated),
    /// with `auth_token`, `auth_token_next` and `gossip_secret` shown as "<redacted>" when set.
    /// Nil for an unknown key. Meant for log lines such as reload reports.
    public func displayValue(forKey key: String) -> String? {
        guard let spec = ConfigKeys.byName[key] else { return nil }
        let value = spec.value(self)
        if spec.isSecret, value != .string("") { return "<redacted>" }
        return value.text
    }

    /// The whole configuration as a JSON object, one key per line in
    /// `allKeys` order, secrets redacted unless asked otherwise. Loading it
    /// back as a file gives the same configuration (when not redacted).
    public func jsonDescription(redactingSecrets: Bool = true) -> String {
        let lines = ConfigKeys.all.map { spec -> String in
            let value = spec.value(self)
            let json = spec.isSecret && redactingSecrets && value != .string("") ? quoted("<redacted>") : value.json
            return "  \(quoted(spec.name)): \(json)"
        }
        return "{\n" + lines.joined(separator: ",\n") + "\n}"
    }
}
