import Testing
@testable import AegisConfig

@Suite("Errors name the key, the source and what is expected")
struct ErrorTests {
    // MARK: unknown keys

    @Test func unknownKeyInFile() throws {
        let dir = TempDir()
        let error = try #require(loadError(json: #"{"max_memroy_mb": 5}"#, in: dir))
        let path = dir.path + "/config.json"
        #expect(error.description.hasPrefix("config: unknown key \"max_memroy_mb\" in \(path)"))
        #expect(error.description.contains("did you mean \"max_memory_mb\"?"))
        #expect(error.key == "max_memroy_mb")
        #expect(error.source == .file(path))
    }

    @Test func unknownEnvironmentVariable() throws {
        let error = try #require(loadError(env: ["AEGIS_MAX_MEMROY_MB": "5"]))
        #expect(error.description == "config: unknown key \"max_memroy_mb\" in AEGIS_MAX_MEMROY_MB (did you mean AEGIS_MAX_MEMORY_MB?)")
        #expect(error.source == .environment("AEGIS_MAX_MEMROY_MB"))
        let mixedCase = try #require(loadError(env: ["AEGIS_Bind_Addr": ":1"]))
        #expect(mixedCase.description.hasPrefix("config: unknown key \"bind_addr\" in AEGIS_Bind_Addr"))
        // The alias is for the file only.
        #expect(loadError(env: ["AEGIS_ADDRS": "a:1"])?.description.hasPrefix("config: unknown key \"addrs\" in AEGIS_ADDRS") == true)
    }

    // MARK: wrong types and bad values, per source

    @Test func badIntegerInEnvironmentMatchesTheDocumentedWording() throws {
        let error = try #require(loadError(env: ["AEGIS_MAX_MEMORY_MB": "lots"]))
        #expect(error.description == #"config: max_memory_mb in AEGIS_MAX_MEMORY_MB: expected a non-negative integer, got "lots""#)
        #expect(error.key == "max_memory_mb")
        #expect(error.source == .environment("AEGIS_MAX_MEMORY_MB"))
    }

    @Test func badIntegerInFileAndFlag() throws {
        let dir = TempDir()
        let fromFile = try #require(loadError(json: #"{"max_memory_mb": "lots"}"#, in: dir))
        #expect(fromFile.description
            == #"config: max_memory_mb in \#(dir.path)/config.json: expected a non-negative integer, got a string ("lots")"#)
        let fromFlag = try #require(loadError(args: ["--max-memory-mb", "lots"]))
        #expect(fromFlag.description == #"config: max_memory_mb in --max-memory-mb: expected a non-negative integer, got "lots""#)
        #expect(fromFlag.source == .flag("--max-memory-mb"))
    }

    @Test(arguments: [
        (#"{"max_memory_mb": 1.5}"#, "max_memory_mb", "got 1.5: not a whole number"),
        (#"{"max_memory_mb": -1}"#, "max_memory_mb", "expected a non-negative integer, got -1"),
        (#"{"max_memory_mb": 99999999999999999999}"#, "max_memory_mb", "too large"),
        (#"{"max_memory_mb": 9007199254740993}"#, "max_memory_mb", "no larger than 8796093022207"),
        (#"{"max_memory_mb": true}"#, "max_memory_mb", "got true"),
        (#"{"max_memory_mb": null}"#, "max_memory_mb", "got null"),
        (#"{"num_shards": 0}"#, "num_shards", "expected an integer from 1 to 65536, got 0"),
        (#"{"num_shards": 65537}"#, "num_shards", "expected an integer from 1 to 65536, got 65537"),
        (#"{"replication_factor": 0}"#, "replication_factor", "expected a positive integer, got 0"),
        (#"{"read_quorum": -1}"#, "read_quorum", "expected a non-negative integer, got -1"),
        (#"{"write_quorum": -1}"#, "write_quorum", "expected a non-negative integer, got -1"),
        (#"{"reactors": 5000}"#, "reactors", "expected an integer from 0 to 4096"),
        (#"{"max_conns": 0}"#, "max_conns", "expected a positive integer"),
        (#"{"eviction_ratio": 0}"#, "eviction_ratio", "expected a number greater than 0 and at most 1, got 0"),
        (#"{"eviction_ratio": 1.5}"#, "eviction_ratio", "got 1.5"),
        (#"{"eviction_ratio": "0.5"}"#, "eviction_ratio", #"got a string ("0.5")"#),
        (#"{"tls_enabled": "yes"}"#, "tls_enabled", #"expected true or false, got a string ("yes")"#),
        (#"{"tls_enabled": 1}"#, "tls_enabled", "expected true or false, got 1"),
        (#"{"node_id": 7}"#, "node_id", "got 7"),
        (#"{"node_id": ""}"#, "node_id", "it is empty"),
        (#"{"node_id": "my node"}"#, "node_id", "space or control character"),
        (#"{"data_dir": ""}"#, "data_dir", "expected a non-empty directory path"),
        (#"{"seeds": "a:1"}"#, "seeds", #"got a string ("a:1")"#),
        (#"{"seeds": ["a:1", 7]}"#, "seeds", "got 7 as entry 2"),
        (#"{"seeds": ["a:1", "b"]}"#, "seeds", #"got "b" as entry 2: missing ":port""#),
        (#"{"seeds": ["a:0"]}"#, "seeds", "port \"0\" is not a number from 1 to 65535"),
        (#"{"seeds": ["0.0.0.0:7701"]}"#, "seeds", "not an address others can reach"),
        (#"{"seeds": ["bad_host:7701"]}"#, "seeds", "not a valid host name or IP address"),
        (#"{"seeds": ["10.0.0.256:7701"]}"#, "seeds", "not a valid host name or IP address"),
        // Found by fuzz/run.sh (fuzz/regressions/config): the host was quoted
        // raw, so a line break in it split the one-line error in two.
        (#"{"seeds": ["\nnode2:7701"]}"#, "seeds", #"as entry 1: "\nnode2" is not a valid host name or IP address"#),
        (#"{"client_advertise_addr": ":7700"}"#, "client_advertise_addr", "the host is empty"),
        (#"{"read_timeout": "5\n"}"#, "read_timeout", #"unknown unit "\n""#),
        (#"{"wal_mode": "sync"}"#, "wal_mode", #"expected one of "off", "write", "fsync", got a string ("sync")"#),
        (#"{"log_format": "xml"}"#, "log_format", #"expected one of "text", "json""#),
        (#"{"log_level": "warning!"}"#, "log_level", #"expected one of "trace", "debug", "info", "notice", "warning", "error", "critical""#),
        (#"{"read_timeout": -5}"#, "read_timeout", "got the bare number -5: it is negative"),
        (#"{"read_timeout": 1.5e9}"#, "read_timeout", "a bare number is whole nanoseconds"),
        (#"{"gossip_interval": 0}"#, "gossip_interval", "expected a duration greater than zero"),
        (#"{"wal_max_size_mb": 0}"#, "wal_max_size_mb", "expected an integer from 1 to 1048576"),
        // A bound of 0 would close every TLS client at accept; more than one
        // address's source ports, or the node's peer accept slots, could never be reached.
        (#"{"tls_handshakes_per_address": 0}"#, "tls_handshakes_per_address", "expected an integer from 1 to 65535, got 0"),
        (#"{"tls_handshakes_per_address": -1}"#, "tls_handshakes_per_address", "expected an integer from 1 to 65535, got -1"),
        (#"{"tls_handshakes_per_address": 65536}"#, "tls_handshakes_per_address", "expected an integer from 1 to 65535, got 65536"),
        (#"{"tls_handshakes_per_address": "many"}"#, "tls_handshakes_per_address", #"got a string ("many")"#),
        (#"{"cluster_pending_accepts_per_address": 0}"#, "cluster_pending_accepts_per_address", "expected an integer from 1 to 1024, got 0"),
        (#"{"cluster_pending_accepts_per_address": 1025}"#, "cluster_pending_accepts_per_address", "expected an integer from 1 to 1024, got 1025"),
        (#"{"cluster_pending_accepts_per_address": 2.5}"#, "cluster_pending_accepts_per_address", "not a whole number"),
    ])
    func badFileValue(json: String, key: String, fragment: String) throws {
        let dir = TempDir()
        let error = try #require(loadError(json: json, in: dir))
        #expect(error.description.hasPrefix("config: \(key) in \(dir.path)/config.json: "), "\(error)")
        #expect(error.description.contains(fragment), "\(error)")
        #expect(!error.description.contains("\n"), "one problem, one line: \(error)")
        #expect(error.key == key)
        #expect(error.source == .file(dir.path + "/config.json"))
    }

    @Test(arguments: [
        ("AEGIS_SUSPECT_TIMEOUT", "30", "a number has no unit"),
        ("AEGIS_SUSPECT_TIMEOUT", "5x", #"unknown unit "x""#),
        ("AEGIS_SUSPECT_TIMEOUT", "-1s", "it is negative"),
        ("AEGIS_SUSPECT_TIMEOUT", "", "it is empty"),
        ("AEGIS_SUSPECT_TIMEOUT", "1s2", "a number has no unit"),
        ("AEGIS_SUSPECT_TIMEOUT", "s", "expected a number"),
        ("AEGIS_SUSPECT_TIMEOUT", "0s", "expected a duration greater than zero"),
        ("AEGIS_GOSSIP_INTERVAL", "0", "expected a duration greater than zero"),
        ("AEGIS_DEAD_TIMEOUT", "99999999999h", "it is too large"),
        ("AEGIS_BIND_ADDR", "localhost", #"missing ":port""#),
        ("AEGIS_BIND_ADDR", "example.com:7700", "not an IP address or localhost"),
        ("AEGIS_BIND_ADDR", ":70000", "not a number from 0 to 65535"),
        ("AEGIS_BIND_ADDR", ":", "not a number from 0 to 65535"),
        ("AEGIS_BIND_ADDR", "::1:7700", "needs brackets"),
        ("AEGIS_BIND_ADDR", "[::1]", #"missing ":port" after "]""#),
        ("AEGIS_BIND_ADDR", "[::1:7700", #"missing "]""#),
        ("AEGIS_BIND_ADDR", "[zz::1]:7700", "is not an IPv6 address"),
        ("AEGIS_BIND_ADDR", "256.0.0.1:7700", "not an IP address"),
        ("AEGIS_HEALTH_ADDR", "127.0.0.1:-1", "not a number from 0 to 65535"),
        ("AEGIS_SEEDS", "a:1,,b:2", "an entry is empty"),
        ("AEGIS_SEEDS", "a:1, b", #"got "b" as entry 2: missing ":port""#),
        ("AEGIS_WAL_MODE", "sync", #"expected one of "off", "write", "fsync", got "sync""#),
        ("AEGIS_TLS_ENABLED", "maybe", #"expected true or false, got "maybe""#),
        ("AEGIS_EVICTION_RATIO", "nan", "expected a number greater than 0 and at most 1"),
        ("AEGIS_REPLICATION_FACTOR", "2.0", #"expected a positive integer, got "2.0""#),
        ("AEGIS_MAX_MEMORY_MB", "99999999999999999999", "too large"),
    ])
    func badEnvironmentValue(name: String, value: String, fragment: String) throws {
        let key = String(name.dropFirst(6)).lowercased()
        let error = try #require(loadError(env: [name: value]))
        #expect(error.description.hasPrefix("config: \(key) in \(name): expected "), "\(error)")
        #expect(error.description.contains(fragment), "\(error)")
        #expect(!error.description.contains("\n"), "one problem, one line: \(error)")
        #expect(error.key == key)
        #expect(error.source == .environment(name))
        // The same text as a flag gives the same complaint, naming the flag.
        // (ArgumentParser itself rejects an empty option value.)
        if value.isEmpty { return }
        let flag = "--" + key.replacing("_", with: "-")
        let flagError = try #require(loadError(args: [flag + "=" + value]))
        #expect(flagError.description == error.description.replacing("in \(name):", with: "in \(flag):"))
    }

    @Test func smallBareNumberDurationInFileAsksWhetherSecondsWereMeant() throws {
        let dir = TempDir()
        let error = try #require(loadError(json: #"{"read_timeout": 30}"#, in: dir))
        #expect(error.description == #"config: read_timeout in \#(dir.path)/config.json: expected a duration such as "100ms", "30s", "5m", "1h" or "1m30s" (or, as AegisKV v1 wrote them, whole nanoseconds), got the bare number 30: a bare number is nanoseconds (AegisKV v1's format), so this is 30ns; write "30s" if seconds were meant"#)
    }

    @Test func seedsAndAddrsTogetherIsAnError() throws {
        let dir = TempDir()
        let error = try #require(loadError(json: #"{"seeds": ["a:1"], "addrs": ["b:1"]}"#, in: dir))
        #expect(error.description.hasPrefix("config: seeds and addrs are both set in \(dir.path)/config.json"))
        #expect(error.key == "seeds")
    }

    @Test func everyProblemIsReported() throws {
        let error = try #require(loadError(json: #"{"num_shards": 0, "bogus": 1}"#,
                                           env: ["AEGIS_WAL_MODE": "nope"], args: ["--reactors=-5"]))
        let lines = error.description.split(separator: "\n")
        #expect(lines.count == 4, "\(error)")
        #expect(lines.allSatisfy { $0.hasPrefix("config: ") })
        #expect(lines.contains { $0.contains("num_shards") })
        #expect(lines.contains { $0.contains("\"bogus\"") })
        #expect(lines.contains { $0.contains("AEGIS_WAL_MODE") })
        #expect(lines.contains { $0.contains("--reactors") })
    }

    @Test func aBadFileValueIsReportedEvenWhenOverridden() throws {
        let error = try #require(loadError(json: #"{"num_shards": 0}"#, args: ["--num-shards", "8"]))
        #expect(error.key == "num_shards")
    }

    @Test func secretsAreNotEchoed() throws {
        // A secret is any string, so only a JSON type mismatch can fail, and
        // that message names the type and value of what was given (not a secret).
        let error = try #require(loadError(json: #"{"auth_token": 12345}"#))
        #expect(error.description.contains("auth_token"))
    }

    // MARK: cross-field checks

    @Test func tlsNeedsCertificateAndKey() throws {
        let error = try #require(loadError(env: ["AEGIS_TLS_ENABLED": "true"]))
        #expect(error.description.contains("config: tls_enabled (true, from AEGIS_TLS_ENABLED) requires tls_cert_file, which is not set"))
        #expect(error.description.contains("requires tls_key_file, which is not set"))
        #expect(error.key == "tls_enabled")
        #expect(error.source == .environment("AEGIS_TLS_ENABLED"))
        let onlyKey = try #require(loadError(args: ["--tls-enabled", "true", "--tls-key-file", "k.pem"]))
        #expect(onlyKey.description == "config: tls_enabled (true, from --tls-enabled) requires tls_cert_file, which is not set")
        _ = try load(args: ["--tls-enabled", "true", "--tls-key-file", "k.pem", "--tls-cert-file", "c.pem"])
    }

    @Test func httpsOnTheOperationsPortNeedsCertificateAndKey() throws {
        let onlyCert = try #require(loadError(args: ["--health-tls-cert-file", "c.pem"]))
        #expect(onlyCert.description == "config: health_tls_cert_file (c.pem, from --health-tls-cert-file) needs health_tls_key_file too (https on health_addr takes a certificate and its key)")
        #expect(onlyCert.key == "health_tls_cert_file")
        let onlyKey = try #require(loadError(env: ["AEGIS_HEALTH_TLS_KEY_FILE": "k.pem"]))
        #expect(onlyKey.description.hasPrefix("config: health_tls_key_file (k.pem, from AEGIS_HEALTH_TLS_KEY_FILE) needs health_tls_cert_file too"))
        let caAlone = try #require(loadError(args: ["--health-tls-ca-file", "ca.pem"]))
        #expect(caAlone.description.contains("health_tls_ca_file (ca.pem, from --health-tls-ca-file) needs health_tls_cert_file and health_tls_key_file"))
        _ = try load(args: ["--health-tls-cert-file", "c.pem", "--health-tls-key-file", "k.pem", "--health-tls-ca-file", "ca.pem"])
    }

    @Test func tlsBetweenNodesNeedsCertificateKeyAndClusterCA() throws {
        let noCA = try #require(loadError(args: ["--cluster-tls-cert-file", "c.pem", "--cluster-tls-key-file", "k.pem"]))
        #expect(noCA.description == "config: cluster_tls_cert_file (c.pem, from --cluster-tls-cert-file) needs cluster_tls_ca_file too (TLS between nodes presents this node's certificate and key and verifies every peer's against the cluster CA)")
        #expect(noCA.key == "cluster_tls_cert_file")
        let caAlone = try #require(loadError(env: ["AEGIS_CLUSTER_TLS_CA_FILE": "ca.pem"]))
        #expect(caAlone.description.hasPrefix("config: cluster_tls_ca_file (ca.pem, from AEGIS_CLUSTER_TLS_CA_FILE) needs cluster_tls_cert_file and cluster_tls_key_file too"))
        #expect(caAlone.source == .environment("AEGIS_CLUSTER_TLS_CA_FILE"))
        let config = try load(args: ["--cluster-tls-cert-file", "c.pem", "--cluster-tls-key-file", "k.pem", "--cluster-tls-ca-file", "ca.pem"])
        #expect(config.config.clusterTLSCAFile == "ca.pem")
        #expect(AegisConfig.restartRequiredKeys.isSuperset(of: ["cluster_tls_cert_file", "cluster_tls_key_file", "cluster_tls_ca_file"]))
    }

    @Test func suspectTimeoutMustBeShorterThanDeadTimeout() throws {
        let error = try #require(loadError(args: ["--dead-timeout", "5s"]))
        #expect(error.description
            == "config: suspect_timeout (5s, the default) must be shorter than dead_timeout (5s, from --dead-timeout)")
        #expect(error.key == "suspect_timeout")
        #expect(error.source == .defaults)
    }

    @Test func gossipIntervalMustBeShorterThanSuspectTimeout() throws {
        let error = try #require(loadError(env: ["AEGIS_GOSSIP_INTERVAL": "5s"]))
        #expect(error.description
            == "config: gossip_interval (5s, from AEGIS_GOSSIP_INTERVAL) must be shorter than suspect_timeout (5s, the default)")
    }

    @Test func quorumsMayNotExceedReplicationFactor() throws {
        let dir = TempDir()
        let write = try #require(loadError(json: #"{"write_quorum": 4}"#, in: dir))
        #expect(write.description == "config: write_quorum (4, from \(dir.path)/config.json) must not exceed replication_factor (3, the default)")
        let read = try #require(loadError(json: #"{"read_quorum": 2}"#, args: ["--replication-factor", "1"]))
        #expect(read.description.hasPrefix("config: read_quorum (2, from "))
        #expect(read.description.hasSuffix("must not exceed replication_factor (1, from --replication-factor)"))
        _ = try load(json: #"{"write_quorum": 3, "read_quorum": 3}"#)
    }

    @Test func listenersMayNotShareAPort() throws {
        let error = try #require(loadError(args: ["--health-addr", "127.0.0.1:7700"]))
        #expect(error.description
            == "config: bind_addr (0.0.0.0:7700, the default) and health_addr (127.0.0.1:7700, from --health-addr) would listen on the same port")
        // Ephemeral ports never clash; different hosts on one port are fine.
        _ = try load(args: ["--bind-addr", "127.0.0.1:0", "--gossip-bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
        _ = try load(args: ["--bind-addr", "127.0.0.1:9000", "--gossip-bind-addr", "127.0.0.2:9000"])
    }

    // MARK: the file itself

    @Test func missingFile() throws {
        let dir = TempDir()
        let path = dir.path + "/absent.json"
        do {
            _ = try ConfigLoader.load(file: path, environment: [:], flags: ConfigFlags())
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description == "config: cannot read config file \(path): No such file or directory")
            #expect(error.source == .file(path))
        }
    }

    @Test func unreadableFile() throws {
        let dir = TempDir()
        do {
            _ = try ConfigLoader.load(file: dir.path, environment: [:], flags: ConfigFlags())
            Issue.record("loaded a directory")
        } catch {
            #expect(error.description == "config: cannot read config file \(dir.path): Is a directory")
        }
    }

    @Test(arguments: [
        ("{\"max_memory_mb\": 5,}", "line 1, column 21: trailing comma before \"}\""),
        ("{\n  \"tls_enabled\": tru\n}", "line 2, column 18: unexpected \"tru\"; expected a value (did you mean true?)"),
        ("{\"node_id\": \"abc}", "line 1, column 13: unterminated string"),
        ("{\"a\": 1 \"b\": 2}", "line 1, column 9: unexpected \"\\\"\"; expected \",\" or \"}\" after the value of \"a\""),
        ("{\"a\": 1, \"a\": 2}", "line 1, column 10: duplicate key \"a\""),
        ("{\"a\": 01}", "line 1, column 7: numbers may not have leading zeros"),
        ("{'a': 1}", "line 1, column 2: unexpected \"'\"; expected a member name in double quotes"),
        ("", "line 1, column 1: the file is empty; expected a JSON object such as {}"),
        ("{} {}", "line 1, column 4: unexpected \"{\" after the end of the top-level value"),
        ("{\"a\": [1, 2}", "line 1, column 12: unexpected \"}\"; expected \",\" or \"]\" in an array"),
        ("{\"a\": \"\\q\"}", "line 1, column 8: invalid escape \"\\q\" in a string"),
        // Found by fuzz/run.sh (fuzz/regressions/config): the escaped byte was
        // quoted raw, so a line break split the one-line error in two.
        ("{\"a\": \"\\\n\"}", "line 1, column 8: invalid escape: \"\\\" followed by character 0xA in a string"),
        ("{\"a\": ", "line 1, column 7: unexpected end of input; expected a value"),
    ])
    func malformedJSON(text: String, message: String) throws {
        let dir = TempDir()
        let error = try #require(loadError(json: text, in: dir))
        #expect(error.description == "config: \(dir.path)/config.json is not valid JSON: \(message)")
    }

    @Test func invalidUTF8IsMalformed() throws {
        let dir = TempDir()
        let path = dir.writeBytes(Array("{\"node_id\": \"ab".utf8) + [0xFF] + Array("\"}".utf8), to: "bad.json")
        do {
            _ = try ConfigLoader.load(file: path, environment: [:], flags: ConfigFlags())
            Issue.record("loaded invalid UTF-8")
        } catch {
            #expect(error.description == "config: \(path) is not valid JSON: line 1, column 16: the file is not valid UTF-8")
        }
    }

    @Test func topLevelMustBeAnObject() throws {
        let dir = TempDir()
        let error = try #require(loadError(json: #"["node_id"]"#, in: dir))
        #expect(error.description.hasPrefix("config: \(dir.path)/config.json must hold a JSON object"))
        #expect(error.description.hasSuffix("got an array"))
    }
}
