import ArgumentParser

/// Every configuration key as a `--kebab-case` option taking text. The text
/// is parsed and validated by `ConfigLoader`, so a bad flag is reported in
/// the same words as a bad file value or environment variable. Include it in
/// a command with `@OptionGroup var config: ConfigFlags`.
public struct ConfigFlags: ParsableArguments {
    @Option(name: .customLong("node-id"), help: ConfigFlags.help("node_id", "id"))
    public var nodeID: String?
    @Option(name: .customLong("bind-addr"), help: ConfigFlags.help("bind_addr", "host:port"))
    public var bindAddr: String?
    @Option(name: .customLong("gossip-bind-addr"), help: ConfigFlags.help("gossip_bind_addr", "host:port"))
    public var gossipBindAddr: String?
    @Option(name: .customLong("health-addr"), help: ConfigFlags.help("health_addr", "host:port"))
    public var healthAddr: String?
    @Option(name: .customLong("health-tls-cert-file"), help: ConfigFlags.help("health_tls_cert_file", "path"))
    public var healthTLSCertFile: String?
    @Option(name: .customLong("health-tls-key-file"), help: ConfigFlags.help("health_tls_key_file", "path"))
    public var healthTLSKeyFile: String?
    @Option(name: .customLong("health-tls-ca-file"), help: ConfigFlags.help("health_tls_ca_file", "path"))
    public var healthTLSCAFile: String?
    @Option(name: .customLong("client-advertise-addr"), help: ConfigFlags.help("client_advertise_addr", "host:port"))
    public var clientAdvertiseAddr: String?
    @Option(name: .customLong("gossip-advertise-addr"), help: ConfigFlags.help("gossip_advertise_addr", "host:port"))
    public var gossipAdvertiseAddr: String?
    @Option(name: .customLong("seeds"), help: ConfigFlags.help("seeds", "host:port,..."))
    public var seeds: String?
    @Option(name: .customLong("data-dir"), help: ConfigFlags.help("data_dir", "dir"))
    public var dataDir: String?
    @Option(name: .customLong("replication-factor"), help: ConfigFlags.help("replication_factor", "n"))
    public var replicationFactor: String?
    @Option(name: .customLong("num-shards"), help: ConfigFlags.help("num_shards", "n"))
    public var numShards: String?
    @Option(name: .customLong("virtual-nodes"), help: ConfigFlags.help("virtual_nodes", "n"))
    public var virtualNodes: String?
    @Option(name: .customLong("max-memory-mb"), help: ConfigFlags.help("max_memory_mb", "n"))
    public var maxMemoryMB: String?
    @Option(name: .customLong("eviction-ratio"), help: ConfigFlags.help("eviction_ratio", "ratio"))
    public var evictionRatio: String?
    @Option(name: .customLong("wal-mode"), help: ConfigFlags.help("wal_mode", "mode"))
    public var walMode: String?
    @Option(name: .customLong("wal-dir"), help: ConfigFlags.help("wal_dir", "dir"))
    public var walDir: String?
    @Option(name: .customLong("wal-max-size-mb"), help: ConfigFlags.help("wal_max_size_mb", "n"))
    public var walMaxSizeMB: String?
    @Option(name: .customLong("gossip-interval"), help: ConfigFlags.help("gossip_interval", "duration"))
    public var gossipInterval: String?
    @Option(name: .customLong("gossip-secret"), help: ConfigFlags.help("gossip_secret", "secret"))
    public var gossipSecret: String?
    @Option(name: .customLong("cluster-tls-cert-file"), help: ConfigFlags.help("cluster_tls_cert_file", "path"))
    public var clusterTLSCertFile: String?
    @Option(name: .customLong("cluster-tls-key-file"), help: ConfigFlags.help("cluster_tls_key_file", "path"))
    public var clusterTLSKeyFile: String?
    @Option(name: .customLong("cluster-tls-ca-file"), help: ConfigFlags.help("cluster_tls_ca_file", "path"))
    public var clusterTLSCAFile: String?
    @Option(name: .customLong("cluster-pending-accepts-per-address"), help: ConfigFlags.help("cluster_pending_accepts_per_address", "n"))
    public var clusterPendingAcceptsPerAddress: String?
    @Option(name: .customLong("suspect-timeout"), help: ConfigFlags.help("suspect_timeout", "duration"))
    public var suspectTimeout: String?
    @Option(name: .customLong("dead-timeout"), help: ConfigFlags.help("dead_timeout", "duration"))
    public var deadTimeout: String?
    @Option(name: .customLong("max-conns"), help: ConfigFlags.help("max_conns", "n"))
    public var maxConns: String?
    @Option(name: .customLong("client-input-max-mb"), help: ConfigFlags.help("client_input_max_mb", "n"))
    public var clientInputMaxMB: String?
    @Option(name: .customLong("read-timeout"), help: ConfigFlags.help("read_timeout", "duration"))
    public var readTimeout: String?
    @Option(name: .customLong("write-timeout"), help: ConfigFlags.help("write_timeout", "duration"))
    public var writeTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: ConfigFlags.help("idle_timeout", "duration"))
    public var idleTimeout: String?
    @Option(name: .customLong("replication-batch-size"), help: ConfigFlags.help("replication_batch_size", "n"))
    public var replicationBatchSize: String?
    @Option(name: .customLong("replication-batch-timeout"), help: ConfigFlags.help("replication_batch_timeout", "duration"))
    public var replicationBatchTimeout: String?
    @Option(name: .customLong("replication-tail-records"), help: ConfigFlags.help("replication_tail_records", "n"))
    public var replicationTailRecords: String?
    @Option(name: .customLong("stream-rate-limit-mb"), help: ConfigFlags.help("stream_rate_limit_mb", "n"))
    public var streamRateLimitMB: String?
    @Option(name: .customLong("lease-duration"), help: ConfigFlags.help("lease_duration", "duration"))
    public var leaseDuration: String?
    @Option(name: .customLong("lease-election-timeout"), help: ConfigFlags.help("lease_election_timeout", "duration"))
    public var leaseElectionTimeout: String?
    @Option(name: .customLong("write-quorum"), help: ConfigFlags.help("write_quorum", "n"))
    public var writeQuorum: String?
    @Option(name: .customLong("read-quorum"), help: ConfigFlags.help("read_quorum", "n"))
    public var readQuorum: String?
    @Option(name: .customLong("auth-token"), help: ConfigFlags.help("auth_token", "secret"))
    public var authToken: String?
    @Option(name: .customLong("auth-token-next"), help: ConfigFlags.help("auth_token_next", "secret"))
    public var authTokenNext: String?
    @Option(name: .customLong("auth-timeout"), help: ConfigFlags.help("auth_timeout", "duration"))
    public var authTimeout: String?
    @Option(name: .customLong("protected-mode"), help: ConfigFlags.help("protected_mode", "bool"))
    public var protectedMode: String?
    @Option(name: .customLong("tls-enabled"), help: ConfigFlags.help("tls_enabled", "bool"))
    public var tlsEnabled: String?
    @Option(name: .customLong("tls-cert-file"), help: ConfigFlags.help("tls_cert_file", "path"))
    public var tlsCertFile: String?
    @Option(name: .customLong("tls-key-file"), help: ConfigFlags.help("tls_key_file", "path"))
    public var tlsKeyFile: String?
    @Option(name: .customLong("tls-ca-file"), help: ConfigFlags.help("tls_ca_file", "path"))
    public var tlsCAFile: String?
    @Option(name: .customLong("tls-handshakes-per-address"), help: ConfigFlags.help("tls_handshakes_per_address", "n"))
    public var tlsHandshakesPerAddress: String?
    @Option(name: .customLong("rate-limit"), help: ConfigFlags.help("rate_limit", "n"))
    public var rateLimit: String?
    @Option(name: .customLong("rate-burst"), help: ConfigFlags.help("rate_burst", "n"))
    public var rateBurst: String?
    @Option(name: .customLong("breaker-error-rate"), help: ConfigFlags.help("breaker_error_rate", "ratio"))
    public var breakerErrorRate: String?
    @Option(name: .customLong("breaker-min-calls"), help: ConfigFlags.help("breaker_min_calls", "n"))
    public var breakerMinCalls: String?
    @Option(name: .customLong("breaker-window"), help: ConfigFlags.help("breaker_window", "duration"))
    public var breakerWindow: String?
    @Option(name: .customLong("breaker-cooldown"), help: ConfigFlags.help("breaker_cooldown", "duration"))
    public var breakerCooldown: String?
    @Option(name: .customLong("breaker-half-open-trials"), help: ConfigFlags.help("breaker_half_open_trials", "n"))
    public var breakerHalfOpenTrials: String?
    @Option(name: .customLong("drain-timeout"), help: ConfigFlags.help("drain_timeout", "duration"))
    public var drainTimeout: String?
    @Option(name: .customLong("pid-file"), help: ConfigFlags.help("pid_file", "path"))
    public var pidFile: String?
    @Option(name: .customLong("log-level"), help: ConfigFlags.help("log_level", "level"))
    public var logLevel: String?
    @Option(name: .customLong("log-format"), help: ConfigFlags.help("log_format", "format"))
    public var logFormat: String?
    @Option(name: .customLong("maintenance-interval"), help: ConfigFlags.help("maintenance_interval", "duration"))
    public var maintenanceInterval: String?
    @Option(name: .customLong("reactors"), help: ConfigFlags.help("reactors", "n"))
    public var reactors: String?
    // Unconditional: its documented "off" value is -1, which the parser
    // would otherwise take for a flag and report the value as missing.
    @Option(name: .customLong("slowlog-log-slower-than"), parsing: .unconditional, help: ConfigFlags.help("slowlog_log_slower_than", "microseconds"))
    public var slowlogLogSlowerThan: String?
    @Option(name: .customLong("slowlog-max-len"), help: ConfigFlags.help("slowlog_max_len", "n"))
    public var slowlogMaxLen: String?
    @Option(name: .customLong("latency-monitor-threshold"), help: ConfigFlags.help("latency_monitor_threshold", "milliseconds"))
    public var latencyMonitorThreshold: String?

    // AegisKV v1's flag names, with its meanings (its cmd/aegis/main.go),
    // so that its unit files and scripts start this node unchanged. Hidden
    // from --help to keep one name per setting there; listed in
    // docs/configuration.md, "AegisKV v1 flags".
    @Option(name: .customLong("bind"), help: ConfigFlags.v1Help("bind_addr"))
    public var v1Bind: String?
    @Option(name: .customLong("gossip"), help: ConfigFlags.v1Help("gossip_bind_addr"))
    public var v1Gossip: String?
    @Option(name: .customLong("gossip-advertise"), help: ConfigFlags.v1Help("gossip_advertise_addr"))
    public var v1GossipAdvertise: String?
    @Option(name: .customLong("client-advertise"), help: ConfigFlags.v1Help("client_advertise_addr"))
    public var v1ClientAdvertise: String?
    @Option(name: .customLong("addrs"), help: ConfigFlags.v1Help("seeds"))
    public var v1Addrs: String?
    @Option(name: .customLong("shards"), help: ConfigFlags.v1Help("num_shards"))
    public var v1Shards: String?
    @Option(name: .customLong("wal"), help: ConfigFlags.v1Help("wal_mode"))
    public var v1WAL: String?
    @Option(name: .customLong("max-memory"), help: ConfigFlags.v1Help("max_memory_mb"))
    public var v1MaxMemory: String?
    @Option(name: .customLong("tls-cert"), help: ConfigFlags.v1Help("tls_cert_file"))
    public var v1TLSCert: String?
    @Option(name: .customLong("tls-key"), help: ConfigFlags.v1Help("tls_key_file"))
    public var v1TLSKey: String?
    @Option(name: .customLong("tls-ca"), help: ConfigFlags.v1Help("tls_ca_file"))
    public var v1TLSCA: String?

    /// v1 flag name (without dashes) → the key it sets.
    public static var v1Flags: [(flag: String, key: String)] { v1Options.map { ($0.flag, $0.key) } }

    /// Each v1 flag with the option that holds it, so the table and the
    /// values read from it cannot fall out of step.
    private static var v1Options: [(flag: String, key: String, value: KeyPath<ConfigFlags, String?>)] {
        [
            ("bind", "bind_addr", \.v1Bind), ("gossip", "gossip_bind_addr", \.v1Gossip),
            ("gossip-advertise", "gossip_advertise_addr", \.v1GossipAdvertise),
            ("client-advertise", "client_advertise_addr", \.v1ClientAdvertise), ("addrs", "seeds", \.v1Addrs),
            ("shards", "num_shards", \.v1Shards), ("wal", "wal_mode", \.v1WAL), ("max-memory", "max_memory_mb", \.v1MaxMemory),
            ("tls-cert", "tls_cert_file", \.v1TLSCert), ("tls-key", "tls_key_file", \.v1TLSKey), ("tls-ca", "tls_ca_file", \.v1TLSCA),
        ]
    }

    /// Every long option name of the settings, without dashes.
    public static var longNames: [String] {
        ConfigKeys.all.map { String($0.flag.dropFirst(2)) } + v1Flags.map(\.flag)
    }

    static func v1Help(_ key: String) -> ArgumentHelp {
        ArgumentHelp("AegisKV v1 name of \(ConfigLoader.flag(forKey: key))", valueName: "value", visibility: .hidden)
    }

    /// No flags. (ArgumentParser also calls this to read the option
    /// definitions; use `ConfigFlags.parse(arguments)` for real arguments.)
    public init() {}

    static func help(_ key: String, _ valueName: String) -> ArgumentHelp {
        let meaning = ConfigKeys.byName[key]?.meaning ?? ""
        return ArgumentHelp("\(meaning) (\(key); env \(ConfigLoader.environmentVariable(forKey: key)))", valueName: valueName)
    }

    /// The flags given, as (key, text) pairs: v1 names first, so that the
    /// current name wins when both are given, then `AegisConfig.allKeys` order.
    var values: [(key: String, value: String, flag: String)] {
        guard isParsed else { return [] }
        var given: [(key: String, value: String, flag: String)] = Self.v1Options.compactMap { option in
            self[keyPath: option.value].map { (key: option.key, value: $0, flag: "--" + option.flag) }
        }
        // v1 served TLS whenever it was given a certificate and a key.
        if v1TLSCert != nil && v1TLSKey != nil {
            given.append(("tls_enabled", "true", "--tls-cert and --tls-key"))
        }
        let all: [(String, String?)] = [
            ("node_id", nodeID),
            ("bind_addr", bindAddr),
            ("gossip_bind_addr", gossipBindAddr),
            ("health_addr", healthAddr),
            ("health_tls_cert_file", healthTLSCertFile),
            ("health_tls_key_file", healthTLSKeyFile),
            ("health_tls_ca_file", healthTLSCAFile),
            ("client_advertise_addr", clientAdvertiseAddr),
            ("gossip_advertise_addr", gossipAdvertiseAddr),
            ("seeds", seeds),
            ("data_dir", dataDir),
            ("replication_factor", replicationFactor),
            ("num_shards", numShards),
            ("virtual_nodes", virtualNodes),
            ("max_memory_mb", maxMemoryMB),
            ("eviction_ratio", evictionRatio),
            ("wal_mode", walMode),
            ("wal_dir", walDir),
            ("wal_max_size_mb", walMaxSizeMB),
            ("gossip_interval", gossipInterval),
            ("gossip_secret", gossipSecret),
            ("cluster_tls_cert_file", clusterTLSCertFile),
            ("cluster_tls_key_file", clusterTLSKeyFile),
            ("cluster_tls_ca_file", clusterTLSCAFile),
            ("cluster_pending_accepts_per_address", clusterPendingAcceptsPerAddress),
            ("suspect_timeout", suspectTimeout),
            ("dead_timeout", deadTimeout),
            ("max_conns", maxConns),
            ("client_input_max_mb", clientInputMaxMB),
            ("read_timeout", readTimeout),
            ("write_timeout", writeTimeout),
            ("idle_timeout", idleTimeout),
            ("replication_batch_size", replicationBatchSize),
            ("replication_batch_timeout", replicationBatchTimeout),
            ("replication_tail_records", replicationTailRecords),
            ("stream_rate_limit_mb", streamRateLimitMB),
            ("lease_duration", leaseDuration),
            ("lease_election_timeout", leaseElectionTimeout),
            ("write_quorum", writeQuorum),
            ("read_quorum", readQuorum),
            ("auth_token", authToken),
            ("auth_token_next", authTokenNext),
            ("auth_timeout", authTimeout),
            ("protected_mode", protectedMode),
            ("tls_enabled", tlsEnabled),
            ("tls_cert_file", tlsCertFile),
            ("tls_key_file", tlsKeyFile),
            ("tls_ca_file", tlsCAFile),
            ("tls_handshakes_per_address", tlsHandshakesPerAddress),
            ("rate_limit", rateLimit),
            ("rate_burst", rateBurst),
            ("breaker_error_rate", breakerErrorRate),
            ("breaker_min_calls", breakerMinCalls),
            ("breaker_window", breakerWindow),
            ("breaker_cooldown", breakerCooldown),
            ("breaker_half_open_trials", breakerHalfOpenTrials),
            ("drain_timeout", drainTimeout),
            ("pid_file", pidFile),
            ("log_level", logLevel),
            ("log_format", logFormat),
            ("maintenance_interval", maintenanceInterval),
            ("reactors", reactors),
            ("slowlog_log_slower_than", slowlogLogSlowerThan),
            ("slowlog_max_len", slowlogMaxLen),
            ("latency_monitor_threshold", latencyMonitorThreshold),
        ]
        let current: [(key: String, value: String, flag: String)] = all.compactMap { key, value in
            value.map { (key: key, value: $0, flag: ConfigLoader.flag(forKey: key)) }
        }
        return given + current
    }

    /// False for a value made with `init()` rather than by parsing arguments.
    /// Its property wrappers still hold ArgumentParser's definitions, and
    /// reading one would trap, so `ConfigFlags()` must be recognised as "no
    /// flags" without touching them. Mirror reads the wrapper's storage
    /// (`_parsedValue`, an enum whose case is `value` once parsed).
    private var isParsed: Bool {
        guard let wrapper = Mirror(reflecting: self).children.first?.value,
              let storage = Mirror(reflecting: wrapper).children.first?.value
        else { return false }
        return Mirror(reflecting: storage).children.first?.label == "value"
    }
}
