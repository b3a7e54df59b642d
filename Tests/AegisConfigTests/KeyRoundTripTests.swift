import Testing
@testable import AegisConfig

/// A non-default value for one key, written for each layer, and how the
/// loaded value reads back. `with` holds other keys the value needs (for
/// cross-field checks), given in the same layer.
struct Sample: Sendable {
    var json: String
    var text: String
    var expected: String
    /// When the file's value reads back differently from the text one.
    var expectedFromFile: String? = nil
    var with: [String: (json: String, text: String)] = [:]
}

/// One sample per key. A key added to the code without a sample here fails
/// `everyKeyHasASample`; a key without a flag or an apply path fails the
/// round trips.
let samples: [String: Sample] = [
    "node_id": Sample(json: #""node-7""#, text: "node-7", expected: "node-7"),
    "bind_addr": Sample(json: #""127.0.0.1:9000""#, text: "127.0.0.1:9000", expected: "127.0.0.1:9000"),
    "gossip_bind_addr": Sample(json: #""[::1]:9001""#, text: "[::1]:9001", expected: "[::1]:9001"),
    "health_addr": Sample(json: #"":9002""#, text: ":9002", expected: "0.0.0.0:9002"),
    "health_tls_cert_file": Sample(json: #""/etc/aegiskv/ops.pem""#, text: "/etc/aegiskv/ops.pem", expected: "/etc/aegiskv/ops.pem",
                                   with: ["health_tls_key_file": (#""/k.pem""#, "/k.pem")]),
    "health_tls_key_file": Sample(json: #""/etc/aegiskv/ops.key""#, text: "/etc/aegiskv/ops.key", expected: "/etc/aegiskv/ops.key",
                                  with: ["health_tls_cert_file": (#""/c.pem""#, "/c.pem")]),
    "health_tls_ca_file": Sample(json: #""/etc/aegiskv/ops-ca.pem""#, text: "/etc/aegiskv/ops-ca.pem", expected: "/etc/aegiskv/ops-ca.pem",
                                 with: ["health_tls_cert_file": (#""/c.pem""#, "/c.pem"), "health_tls_key_file": (#""/k.pem""#, "/k.pem")]),
    "client_advertise_addr": Sample(json: #""node7.example.com:7700""#, text: "node7.example.com:7700",
                                    expected: "node7.example.com:7700"),
    "gossip_advertise_addr": Sample(json: #""10.0.0.7:7701""#, text: "10.0.0.7:7701", expected: "10.0.0.7:7701"),
    "seeds": Sample(json: #"["a.example:7701", "10.0.0.2:7701", "[fe80::1]:7701"]"#,
                    text: "a.example:7701, 10.0.0.2:7701,[fe80::1]:7701",
                    expected: "a.example:7701,10.0.0.2:7701,[fe80::1]:7701"),
    "data_dir": Sample(json: #""/tmp/aegis-data""#, text: "/tmp/aegis-data", expected: "/tmp/aegis-data"),
    "replication_factor": Sample(json: "5", text: "5", expected: "5"),
    "num_shards": Sample(json: "65536", text: "65536", expected: "65536"),
    "virtual_nodes": Sample(json: "64", text: "64", expected: "64"),
    "max_memory_mb": Sample(json: "0", text: "0", expected: "0"),
    "eviction_ratio": Sample(json: "1", text: "0.75", expected: "0.75", expectedFromFile: "1.0"),
    "wal_mode": Sample(json: #""fsync""#, text: "fsync", expected: "fsync"),
    "wal_dir": Sample(json: #""/tmp/aegis-wal""#, text: "/tmp/aegis-wal", expected: "/tmp/aegis-wal"),
    "wal_max_size_mb": Sample(json: "128", text: "128", expected: "128"),
    "gossip_interval": Sample(json: #""500ms""#, text: "500ms", expected: "500ms"),
    "gossip_secret": Sample(json: #""s3cret""#, text: "s3cret", expected: "s3cret"),
    "cluster_tls_cert_file": Sample(json: #""/etc/aegiskv/peer.pem""#, text: "/etc/aegiskv/peer.pem", expected: "/etc/aegiskv/peer.pem",
                                    with: ["cluster_tls_key_file": (#""/k.pem""#, "/k.pem"), "cluster_tls_ca_file": (#""/ca.pem""#, "/ca.pem")]),
    "cluster_tls_key_file": Sample(json: #""/etc/aegiskv/peer.key""#, text: "/etc/aegiskv/peer.key", expected: "/etc/aegiskv/peer.key",
                                   with: ["cluster_tls_cert_file": (#""/c.pem""#, "/c.pem"), "cluster_tls_ca_file": (#""/ca.pem""#, "/ca.pem")]),
    "cluster_tls_ca_file": Sample(json: #""/etc/aegiskv/cluster-ca.pem""#, text: "/etc/aegiskv/cluster-ca.pem", expected: "/etc/aegiskv/cluster-ca.pem",
                                  with: ["cluster_tls_cert_file": (#""/c.pem""#, "/c.pem"), "cluster_tls_key_file": (#""/k.pem""#, "/k.pem")]),
    "cluster_pending_accepts_per_address": Sample(json: "8", text: "1024", expected: "1024", expectedFromFile: "8"),
    "suspect_timeout": Sample(json: #""10s""#, text: "10s", expected: "10s"),
    "dead_timeout": Sample(json: #""1m""#, text: "1m", expected: "1m"),
    "max_conns": Sample(json: "100", text: "100", expected: "100"),
    "client_input_max_mb": Sample(json: "16", text: "16", expected: "16"),
    "read_timeout": Sample(json: #""1m30s""#, text: "1m30s", expected: "1m30s"),
    "write_timeout": Sample(json: #""0s""#, text: "0s", expected: "0s"),
    "idle_timeout": Sample(json: #""5m""#, text: "5m", expected: "5m"),
    "replication_batch_size": Sample(json: "256", text: "256", expected: "256"),
    "replication_batch_timeout": Sample(json: #""2ms""#, text: "2ms", expected: "2ms"),
    "replication_tail_records": Sample(json: "64", text: "64", expected: "64"),
    "stream_rate_limit_mb": Sample(json: "25", text: "25", expected: "25"),
    "write_quorum": Sample(json: "2", text: "2", expected: "2"),
    "lease_duration": Sample(json: #""2s""#, text: "2s", expected: "2s"),
    "lease_election_timeout": Sample(json: #""1500ms""#, text: "1500ms", expected: "1s500ms"),
    "read_quorum": Sample(json: "3", text: "3", expected: "3"),
    "auth_token": Sample(json: #""hunter2""#, text: "hunter2", expected: "hunter2"),
    "auth_token_next": Sample(json: #""hunter3""#, text: "hunter3", expected: "hunter3",
                              with: ["auth_token": (#""hunter2""#, "hunter2")]),
    "auth_timeout": Sample(json: #""3s""#, text: "3s", expected: "3s"),
    "protected_mode": Sample(json: "false", text: "false", expected: "false"),
    "tls_enabled": Sample(json: "true", text: "true", expected: "true",
                          with: ["tls_cert_file": (#""/c.pem""#, "/c.pem"), "tls_key_file": (#""/k.pem""#, "/k.pem")]),
    "tls_cert_file": Sample(json: #""/etc/aegiskv/cert.pem""#, text: "/etc/aegiskv/cert.pem", expected: "/etc/aegiskv/cert.pem"),
    "tls_key_file": Sample(json: #""/etc/aegiskv/key.pem""#, text: "/etc/aegiskv/key.pem", expected: "/etc/aegiskv/key.pem"),
    "tls_ca_file": Sample(json: #""/etc/aegiskv/ca.pem""#, text: "/etc/aegiskv/ca.pem", expected: "/etc/aegiskv/ca.pem"),
    "tls_handshakes_per_address": Sample(json: "65535", text: "1", expected: "1", expectedFromFile: "65535"),
    "rate_limit": Sample(json: "1000", text: "1000", expected: "1000"),
    "rate_burst": Sample(json: "2000", text: "2000", expected: "2000"),
    "breaker_error_rate": Sample(json: "0.25", text: "0.2", expected: "0.2", expectedFromFile: "0.25"),
    "breaker_min_calls": Sample(json: "5", text: "5", expected: "5"),
    "breaker_window": Sample(json: #""1m""#, text: "60s", expected: "1m"),
    "breaker_cooldown": Sample(json: #""1m30s""#, text: "1500ms", expected: "1s500ms", expectedFromFile: "1m30s"),
    "breaker_half_open_trials": Sample(json: "1", text: "1", expected: "1"),
    "drain_timeout": Sample(json: #""1m""#, text: "1m", expected: "1m"),
    "pid_file": Sample(json: #""/var/run/aegiskv.pid""#, text: "/var/run/aegiskv.pid", expected: "/var/run/aegiskv.pid"),
    "log_level": Sample(json: #""debug""#, text: "DEBUG", expected: "debug"),
    "log_format": Sample(json: #""json""#, text: "json", expected: "json"),
    "maintenance_interval": Sample(json: #""250ms""#, text: "250ms", expected: "250ms"),
    "reactors": Sample(json: "2", text: "2", expected: "2"),
    "slowlog_log_slower_than": Sample(json: "-1", text: "0", expected: "0", expectedFromFile: "-1"),
    "slowlog_max_len": Sample(json: "1000", text: "1000", expected: "1000"),
    "latency_monitor_threshold": Sample(json: "100", text: "100", expected: "100"),
]

enum Layer: String, CaseIterable, Sendable {
    case file, environment, flag
}

@Suite("Every key round-trips")
struct KeyRoundTripTests {
    @Test func everyKeyHasASample() {
        #expect(Set(samples.keys) == Set(AegisConfig.allKeys))
        #expect(AegisConfig.allKeys.count == Set(AegisConfig.allKeys).count, "duplicate key")
        #expect(AegisConfig.allKeys.count == 65)
    }

    @Test(arguments: AegisConfig.allKeys, Layer.allCases)
    func keyRoundTrips(key: String, layer: Layer) throws {
        let sample = try #require(samples[key], "no sample for \(key)")
        var settings = sample.with.map { ($0.key, $0.value) }
        settings.append((key, (sample.json, sample.text)))
        let dir = TempDir()
        var file: String?
        var env: [String: String] = [:]
        var args: [String] = []
        let expectedSource: ConfigSource
        switch layer {
        case .file:
            let body = settings.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ",\n  ")
            file = dir.write("{\n  \(body)\n}\n")
            expectedSource = .file(file!)
        case .environment:
            for (name, value) in settings { env["AEGIS_" + name.uppercased()] = value.text }
            expectedSource = .environment("AEGIS_" + key.uppercased())
        case .flag:
            for (name, value) in settings { args += ["--" + name.replacing("_", with: "-"), value.text] }
            expectedSource = .flag("--" + key.replacing("_", with: "-"))
        }
        let loaded = try ConfigLoader.load(file: file, environment: env, flags: args.isEmpty ? ConfigFlags() : ConfigFlags.parse(args))
        let spec = try #require(ConfigKeys.byName[key])
        let expected = layer == .file ? sample.expectedFromFile ?? sample.expected : sample.expected
        #expect(spec.value(loaded.config).text == expected)
        #expect(loaded.source(of: key) == expectedSource)
        #expect(Set(loaded.config.changedKeys(from: .defaults)) == Set(settings.map(\.0)))
        #expect(loaded.config.changedKeys(from: .defaults).contains(key))
    }

    @Test func flagsAndEnvironmentNamesFollowTheKeys() throws {
        #expect(ConfigLoader.environmentVariable(forKey: "bind_addr") == "AEGIS_BIND_ADDR")
        #expect(ConfigLoader.flag(forKey: "max_memory_mb") == "--max-memory-mb")
        for key in AegisConfig.allKeys {
            // Every flag exists and is recorded under its key.
            let sample = try #require(samples[key])
            let flags = try ConfigFlags.parse([ConfigLoader.flag(forKey: key), sample.text])
            #expect(flags.values.map(\.key) == [key])
            #expect(flags.values.map(\.value) == [sample.text])
        }
    }

    @Test func unknownFlagsAreRejectedByTheParser() {
        #expect(throws: (any Error).self) { try ConfigFlags.parse(["--max-memroy-mb", "5"]) }
    }
}
