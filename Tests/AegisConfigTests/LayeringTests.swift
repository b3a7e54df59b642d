import Testing
@testable import AegisConfig

@Suite("Defaults and layering")
struct LayeringTests {
    @Test func defaultsLoadWithNothingSet() throws {
        let loaded = try ConfigLoader.load(file: nil, environment: [:], flags: ConfigFlags())
        #expect(loaded.config == AegisConfig.defaults)
        #expect(loaded.explicitlySet.isEmpty)
        let config = loaded.config
        #expect(!config.nodeID.isEmpty)
        #expect(config.nodeID == Platform.hostName())
        #expect(config.bindAddr == SocketAddress(host: "0.0.0.0", port: 7700))
        #expect(config.gossipBindAddr.description == "0.0.0.0:7701")
        #expect(config.healthAddr.description == "0.0.0.0:7702")
        #expect(config.clientAdvertiseAddr == "" && config.gossipAdvertiseAddr == "")
        #expect(config.seeds == [])
        #expect(config.dataDir == "/var/lib/aegiskv")
        #expect(config.replicationFactor == 3)
        #expect(config.numShards == 256)
        #expect(config.virtualNodes == 128)
        #expect(config.maxMemoryMB == 1024)
        #expect(config.evictionRatio == 0.9)
        #expect(config.walMode == .off)
        #expect(config.walDir == "")
        #expect(config.effectiveWALDir == "/var/lib/aegiskv/wal")
        #expect(config.walMaxSizeMB == 64)
        #expect(config.gossipInterval == .seconds(1))
        #expect(config.gossipSecret == "")
        #expect(config.suspectTimeout == .seconds(5))
        #expect(config.deadTimeout == .seconds(30))
        #expect(config.maxConns == 50_000)
        #expect(config.readTimeout == .seconds(30))
        #expect(config.writeTimeout == .seconds(30))
        #expect(config.idleTimeout == .zero)
        #expect(config.replicationBatchSize == 128)
        #expect(config.replicationBatchTimeout == .milliseconds(5))
        #expect(config.writeQuorum == 0)
        #expect(config.readQuorum == 1)
        #expect(config.authToken == "")
        #expect(config.tlsEnabled == false)
        #expect(config.tlsCertFile == "" && config.tlsKeyFile == "" && config.tlsCAFile == "")
        #expect(config.rateLimit == 0 && config.rateBurst == 0)
        #expect(config.drainTimeout == .seconds(10))
        #expect(config.pidFile == "")
        #expect(config.logLevel == "info")
        #expect(config.logFormat == .text)
        #expect(config.maintenanceInterval == .milliseconds(100))
        #expect(config.reactors == 0)
    }

    @Test func eachLayerOverridesThePreviousOne() throws {
        let json = #"{"max_memory_mb": 100, "log_level": "warning", "data_dir": "/srv/file"}"#
        let env = ["AEGIS_MAX_MEMORY_MB": "200", "AEGIS_LOG_LEVEL": "error", "PATH": "/usr/bin"]
        let args = ["--max-memory-mb", "300"]

        let fileOnly = try load(json: json)
        #expect(fileOnly.config.maxMemoryMB == 100)
        #expect(fileOnly.sourcePath("max_memory_mb").hasSuffix("/config.json"))

        let fileAndEnv = try load(json: json, env: env)
        #expect(fileAndEnv.config.maxMemoryMB == 200)
        #expect(fileAndEnv.config.logLevel == "error")
        #expect(fileAndEnv.config.dataDir == "/srv/file")
        #expect(fileAndEnv.source(of: "max_memory_mb") == .environment("AEGIS_MAX_MEMORY_MB"))

        let all = try load(json: json, env: env, args: args)
        #expect(all.config.maxMemoryMB == 300)
        #expect(all.config.logLevel == "error")
        #expect(all.config.dataDir == "/srv/file")
        #expect(all.source(of: "max_memory_mb") == .flag("--max-memory-mb"))
        #expect(all.source(of: "log_level") == .environment("AEGIS_LOG_LEVEL"))
        #expect(all.sourcePath("data_dir").hasSuffix("/config.json"))
        #expect(all.source(of: "bind_addr") == .defaults)
        #expect(Set(all.explicitlySet.keys) == ["max_memory_mb", "log_level", "data_dir"])

        let flagsOverDefaults = try load(args: ["--bind-addr", "127.0.0.1:0"])
        #expect(flagsOverDefaults.config.bindAddr == SocketAddress(host: "127.0.0.1", port: 0))
    }

    @Test func flagsMadeWithInitAreNoFlags() throws {
        #expect(ConfigFlags().values.isEmpty)
        #expect(try ConfigFlags.parse([]).values.isEmpty)
        let loaded = try ConfigLoader.load(file: nil, environment: ["AEGIS_NUM_SHARDS": "8"], flags: ConfigFlags())
        #expect(loaded.config.numShards == 8)
    }

    @Test func aNegativeFlagValueIsAValueNotAFlag() throws {
        #expect(try load(args: ["--slowlog-log-slower-than", "-1"]).config.slowlogLogSlowerThan == -1)
        #expect(try load(args: ["--slowlog-log-slower-than=-1"]).config.slowlogLogSlowerThan == -1)
    }

    @Test func unrelatedEnvironmentVariablesAreIgnored() throws {
        let loaded = try load(env: ["HOME": "/root", "AEGISX": "1", "aegis_bind_addr": "nonsense"])
        #expect(loaded.explicitlySet.isEmpty)
    }

    @Test func runbookEmergencyConfigParses() throws {
        let json = """
            {
              "node_id": "emergency-node-1",
              "seeds": ["existing-node:7701"],
              "max_memory_mb": 32768
            }
            """
        let loaded = try load(json: json)
        #expect(loaded.config.nodeID == "emergency-node-1")
        #expect(loaded.config.seeds == ["existing-node:7701"])
        #expect(loaded.config.maxMemoryMB == 32768)
        #expect(Set(loaded.explicitlySet.keys) == ["node_id", "seeds", "max_memory_mb"])
        #expect(loaded.config.changedKeys(from: .defaults) == ["node_id", "seeds", "max_memory_mb"])
    }

    @Test func runbookRateLimitEmergencyFileParses() throws {
        let loaded = try load(json: #"{"rate_limit": 1000}"#)
        #expect(loaded.config.rateLimit == 1000)
        #expect(loaded.config.effectiveRateBurst == 1000)
        #expect(loaded.config.changedKeys(from: .defaults) == ["rate_limit"])
    }

    @Test func addrsIsAnAliasForSeeds() throws {
        let loaded = try load(json: #"{"addrs": ["n1:7701", "n2:7701"]}"#)
        #expect(loaded.config.seeds == ["n1:7701", "n2:7701"])
        #expect(loaded.explicitlySet["seeds"] != nil)
        #expect(loaded.explicitlySet["addrs"] == nil)
    }

    @Test func emptyObjectAndEmptyValuesAreFine() throws {
        #expect(try load(json: "{}").config == .defaults)
        #expect(try load(json: "\u{FEFF}{ }\n").config == .defaults)
        let cleared = try load(json: #"{"seeds": ["a:1"]}"#, env: ["AEGIS_SEEDS": ""])
        #expect(cleared.config.seeds == [])
    }

    @Test func effectiveWALDirFollowsDataDirUnlessSet() throws {
        #expect(try load(args: ["--data-dir", "/srv/aegis"]).config.effectiveWALDir == "/srv/aegis/wal")
        #expect(try load(args: ["--data-dir", "/srv/aegis/"]).config.effectiveWALDir == "/srv/aegis/wal")
        #expect(try load(args: ["--data-dir", "/srv/aegis", "--wal-dir", "/fast/wal"]).config.effectiveWALDir == "/fast/wal")
    }

    @Test func jsonDescriptionLoadsBackToTheSameConfig() throws {
        let loaded = try load(json: #"{"seeds": ["a:1", "[::1]:2"], "auth_token": "t\"ok", "eviction_ratio": 0.5}"#,
                              args: ["--read-timeout", "1m30s", "--wal-mode", "fsync", "--tls-enabled", "true",
                                     "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"])
        let dir = TempDir()
        let again = try ConfigLoader.load(file: dir.write(loaded.config.jsonDescription(redactingSecrets: false)),
                                          environment: [:], flags: ConfigFlags())
        #expect(again.config == loaded.config)
        #expect(again.explicitlySet.count == AegisConfig.allKeys.count)
        let redacted = loaded.config.jsonDescription()
        #expect(redacted.contains(#""auth_token": "<redacted>""#))
        #expect(redacted.contains(#""gossip_secret": """#))
        #expect(!redacted.contains("t\\\"ok"))
    }
}

extension LoadedConfig {
    /// The file path recorded for `key` (tests write files to fresh temp paths).
    func sourcePath(_ key: String) -> String {
        if case .file(let path) = explicitlySet[key] { return path }
        return "<not from a file>"
    }
}
