import Testing
@testable import AegisConfig

/// AegisKV v1 (Go) config files and flags, read unchanged with v1's meanings.
@Suite("AegisKV v1 files and flags")
struct V1UpgradeTests {
    /// Keys and values as v1's `SaveToFile` wrote them: durations as Go
    /// `time.Duration` nanoseconds, `read_quorum` 0, v1-only keys.
    static let v1File = """
        {
          "node_id": "node1", "bind_addr": "127.0.0.1:7700", "data_dir": "/var/lib/aegiskv",
          "seeds": [], "replication_factor": 1, "num_shards": 256, "virtual_nodes": 100,
          "max_memory_mb": 1024, "eviction_ratio": 0.9, "shard_max_bytes": 67108864,
          "wal_mode": "off", "wal_dir": "/var/lib/aegiskv/wal", "wal_max_size_mb": 64,
          "gossip_bind_addr": "127.0.0.1:7701", "gossip_advertise_addr": "", "gossip_interval": 1000000000,
          "suspect_timeout": 5000000000, "dead_timeout": 10000000000, "gossip_secret": "",
          "client_advertise_addr": "", "read_timeout": 30000000000, "write_timeout": 30000000000, "max_conns": 10000,
          "replication_batch_size": 100, "replication_batch_timeout": 10000000, "replication_max_retries": 3,
          "auth_token": "", "tls_enabled": false, "tls_cert_file": "", "tls_key_file": "", "tls_ca_file": "",
          "health_addr": ":7702", "maintenance_interval": 10000000000, "rate_limit": 0, "rate_burst": 0,
          "log_level": "warn", "write_quorum": 0, "read_quorum": 0, "drain_timeout": 30000000000, "pid_file": ""
        }
        """

    @Test func v1FileLoadsWithV1Meanings() throws {
        let dir = TempDir()
        let loaded = try load(json: Self.v1File, in: dir)
        let config = loaded.config
        #expect(config.gossipInterval == .seconds(1))
        #expect(config.deadTimeout == .seconds(10))
        #expect(config.replicationBatchTimeout == .milliseconds(10))
        #expect(config.drainTimeout == .seconds(30))
        #expect(config.readQuorum == 1)
        #expect(config.logLevel == "warning")
        #expect(loaded.ignoredV1Keys.map(\.key) == ["shard_max_bytes", "replication_max_retries"])
        let first = try #require(loaded.ignoredV1Keys.first)
        #expect(first.message.hasPrefix("config: shard_max_bytes in \(dir.path)/config.json is an AegisKV v1 key with no counterpart"))
        #expect(loaded.explicitlySet["shard_max_bytes"] == nil)
    }

    @Test func v1KeysAreOnlyIgnoredInTheFile() throws {
        // An environment variable or flag for them never existed in v1: still a typo-catching error.
        let error = try #require(loadError(env: ["AEGIS_SHARD_MAX_BYTES": "1"]))
        #expect(error.description.hasPrefix("config: unknown key \"shard_max_bytes\" in AEGIS_SHARD_MAX_BYTES"))
    }

    @Test func warnIsWarningEverywhere() throws {
        #expect(try load(args: ["--log-level", "warn"]).config.logLevel == "warning")
        #expect(try load(env: ["AEGIS_LOG_LEVEL": "WARN"]).config.logLevel == "warning")
    }

    @Test func v1FlagsSetTheirKeysAndErrorsNameTheV1Flag() throws {
        let loaded = try load(args: [
            "--bind", "127.0.0.1:9100", "--gossip", "127.0.0.1:9101", "--gossip-advertise", "10.0.0.1:9101",
            "--client-advertise", "10.0.0.1:9100", "--addrs", "10.0.0.2:7701,10.0.0.3:7701", "--shards", "128",
            "--wal", "write", "--max-memory", "512", "--tls-ca", "/etc/ca.pem", "--tls-cert", "/etc/c.pem",
        ])
        let config = loaded.config
        #expect(config.bindAddr.description == "127.0.0.1:9100")
        #expect(config.gossipBindAddr.description == "127.0.0.1:9101")
        #expect(config.gossipAdvertiseAddr == "10.0.0.1:9101")
        #expect(config.clientAdvertiseAddr == "10.0.0.1:9100")
        #expect(config.seeds == ["10.0.0.2:7701", "10.0.0.3:7701"])
        #expect(config.numShards == 128)
        #expect(config.walMode == .write)
        #expect(config.maxMemoryMB == 512)
        #expect(config.tlsCAFile == "/etc/ca.pem")
        #expect(config.tlsCertFile == "/etc/c.pem")
        #expect(!config.tlsEnabled, "a certificate without a key did not turn TLS on in v1")
        #expect(loaded.source(of: "bind_addr") == .flag("--bind"))

        let error = try #require(loadError(args: ["--shards", "0"]))
        #expect(error.description.hasPrefix("config: num_shards in --shards: expected an integer from 1 to 65536"), "\(error)")
    }

    @Test func currentFlagWinsOverItsV1Name() throws {
        let loaded = try load(args: ["--bind-addr", "127.0.0.1:9200", "--bind", "127.0.0.1:9100"])
        #expect(loaded.config.bindAddr.description == "127.0.0.1:9200")
    }

    @Test func certificateAndKeyTurnTLSOnAsInV1() throws {
        let loaded = try load(args: ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"])
        #expect(loaded.config.tlsEnabled)
        #expect(loaded.source(of: "tls_enabled") == .flag("--tls-cert and --tls-key"))
    }

    @Test func documentationListsEveryV1KeyAndFlag() throws {
        let docs = String(#filePath).split(separator: "/", omittingEmptySubsequences: false).dropLast(3)
            .joined(separator: "/") + "/docs/configuration.md"
        let text = try #require(readText(docs))
        let section = try #require(text.split(separator: "### AegisKV v1 keys").last?.split(separator: "## Keys").first)
        for (name, reason) in ConfigKeys.v1Only {
            #expect(section.contains("| `\(name)` | \(reason) |"), "\(name)")
        }
        for (flag, key) in ConfigFlags.v1Flags {
            #expect(section.contains("| `--\(flag)` | `\(ConfigLoader.flag(forKey: key))` |"), "--\(flag)")
        }
    }
}
