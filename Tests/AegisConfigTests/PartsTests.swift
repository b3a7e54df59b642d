import Testing
@testable import AegisConfig

@Suite("Durations")
struct DurationTextTests {
    @Test(arguments: [
        ("100ms", Duration.milliseconds(100)), ("30s", .seconds(30)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
        ("1m30s", .seconds(90)), ("0s", .zero), ("0", .zero), ("1.5h", .seconds(5400)), (".5s", .milliseconds(500)),
        ("1h0m0s", .seconds(3600)), ("2us", .microseconds(2)), ("2\u{00B5}s", .microseconds(2)), ("7ns", .nanoseconds(7)),
        ("1s500ms", .milliseconds(1500)), ("300ms", .milliseconds(300)), ("1.s", .seconds(1)),
    ])
    func parses(text: String, expected: Duration) throws {
        #expect(try DurationText.parse(text).get() == expected)
    }

    @Test(arguments: ["", "30", ".s", "-1s", "1d", "s", "1 s", "1s ", "+1s", "1e3s", "1.2.3s"])
    func rejects(text: String) {
        #expect(throws: DurationProblem.self) { try DurationText.parse(text).get() }
    }

    @Test(arguments: [
        (Duration.zero, "0s"), (.milliseconds(100), "100ms"), (.seconds(90), "1m30s"), (.seconds(3600), "1h"),
        (.milliseconds(1500), "1s500ms"), (.nanoseconds(3_600_000_000_001), "1h1ns"), (.milliseconds(5), "5ms"),
    ])
    func formats(duration: Duration, text: String) throws {
        #expect(DurationText.format(duration) == text)
        #expect(try DurationText.parse(text).get() == duration)
    }
}

@Suite("Socket addresses")
struct SocketAddressTests {
    @Test(arguments: [
        (":7700", "0.0.0.0", UInt16(7700), "0.0.0.0:7700"),
        ("localhost:0", "127.0.0.1", 0, "127.0.0.1:0"),
        ("LOCALHOST:1", "127.0.0.1", 1, "127.0.0.1:1"),
        ("10.1.2.3:65535", "10.1.2.3", 65535, "10.1.2.3:65535"),
        ("[::1]:7700", "::1", 7700, "[::1]:7700"),
        ("[::]:7700", "::", 7700, "[::]:7700"),
        ("[0:0:0:0:0:0:0:1]:1", "::1", 1, "[::1]:1"),
        ("[FE80::A]:2", "fe80::a", 2, "[fe80::a]:2"),
    ])
    func parses(text: String, host: String, port: UInt16, description: String) throws {
        let address = try #require(SocketAddress(parsing: text))
        #expect(address.host == host)
        #expect(address.port == port)
        #expect(address.description == description)
        #expect(SocketAddress(parsing: address.description) == address)
    }

    @Test(arguments: ["", "7700", "host:7700", "1.2.3:7700", "01.2.3.4:1", "::1:7700", "[::1]", "[::1]7700", ":65536",
                      ": 1", ":+1", "[1.2.3.4]:1", "localhost:", "1.2.3.4:port"])
    func rejects(text: String) {
        #expect(SocketAddress(parsing: text) == nil)
    }

    @Test func peerAddressesAllowHostNames() {
        #expect(AddressSyntax.checkPeer("existing-node:7701") == nil)
        #expect(AddressSyntax.checkPeer("node1.prod.example.com:7701") == nil)
        #expect(AddressSyntax.checkPeer("10.0.0.1:7701") == nil)
        #expect(AddressSyntax.checkPeer("[2001:db8::1]:7701") == nil)
        #expect(AddressSyntax.checkPeer("-bad:7701") != nil)
        #expect(AddressSyntax.checkPeer("a..b:7701") != nil)
        #expect(AddressSyntax.checkPeer("node:0") != nil)
        #expect(AddressSyntax.checkPeer("[::]:7701") != nil)
        #expect(AddressSyntax.checkPeer(String(repeating: "a", count: 64) + ":1") != nil)
    }
}

@Suite("JSON reader")
struct JSONReaderTests {
    @Test func readsEveryKindOfValue() throws {
        let text = #" { "s": "a\"b\\c\/d\n\u00e9\ud83d\ude00", "n": -12.5e+3, "i": 0, "t": true, "f": false, "z": null, "a": [1, [], {}], "o": {"k": "v"} } "#
        guard case .object(let members) = try JSONParser.parse(Array(text.utf8)).get() else {
            Issue.record("not an object")
            return
        }
        #expect(members.map(\.name) == ["s", "n", "i", "t", "f", "z", "a", "o"])
        guard case .string(let s) = members[0].value else { Issue.record("s"); return }
        #expect(s == "a\"b\\c/d\né😀")
        guard case .number(let n) = members[1].value else { Issue.record("n"); return }
        #expect(n == "-12.5e+3")
        guard case .array(let a) = members[6].value else { Issue.record("a"); return }
        #expect(a.count == 3)
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)).get() }
    }

    @Test func rejectsLoneSurrogatesAndRawControlCharacters() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#"{"a": "\ud800"}"#.utf8)).get() }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("{\"a\": \"x\ty\"}".utf8)).get() }
    }
}

@Suite("Keys, reloading and documentation")
struct KeyMetadataTests {
    @Test func changedKeysListsDifferencesInKeyOrder() {
        var other = AegisConfig.defaults
        #expect(other.changedKeys(from: .defaults).isEmpty)
        other.logLevel = "debug"
        other.bindAddr = SocketAddress(host: "127.0.0.1", port: 7700)
        other.seeds = ["a:1"]
        other.readTimeout = .seconds(31)
        #expect(other.changedKeys(from: .defaults) == ["bind_addr", "seeds", "read_timeout", "log_level"])
        #expect(AegisConfig.defaults.changedKeys(from: other) == ["bind_addr", "seeds", "read_timeout", "log_level"])
    }

    @Test func restartRequiredKeysAreKnownAndCoverTheRunbook() {
        #expect(AegisConfig.restartRequiredKeys.isSubset(of: Set(AegisConfig.allKeys)))
        for key in ["node_id", "bind_addr", "gossip_bind_addr", "health_addr", "tls_enabled", "tls_cert_file", "tls_key_file",
                    "tls_ca_file", "replication_factor", "num_shards", "reactors", "data_dir", "wal_dir", "wal_mode",
                    "virtual_nodes", "pid_file", "log_format", "max_memory_mb", "eviction_ratio", "maintenance_interval",
                    "gossip_secret",
                    // Like the other TLS keys: fixed for the process's life (security.md, "Bounds on handshakes").
                    "tls_handshakes_per_address", "cluster_pending_accepts_per_address"] {
            #expect(AegisConfig.restartRequiredKeys.contains(key), "\(key)")
        }
        // The runbook and product promise these apply on SIGHUP.
        for key in ["log_level", "rate_limit", "rate_burst", "seeds", "read_timeout", "write_timeout", "idle_timeout",
                    "suspect_timeout", "dead_timeout", "drain_timeout", "max_conns",
                    // Token rotation and protected mode need no restart (security.md).
                    "auth_token", "auth_token_next", "auth_timeout", "protected_mode"] {
            #expect(AegisConfig.reloadableKeys.contains(key), "\(key)")
        }
        #expect(AegisConfig.reloadableKeys.count + AegisConfig.restartRequiredKeys.count == AegisConfig.allKeys.count)
    }

    @Test func copyValueTakesOneKeyFromAnotherConfiguration() {
        var other = AegisConfig.defaults
        other.readTimeout = .seconds(3)
        other.seeds = ["a:1"]
        other.logLevel = "debug"
        var running = AegisConfig.defaults
        for key in ["read_timeout", "seeds"] { running.copyValue(ofKey: key, from: other) }
        #expect(other.changedKeys(from: running) == ["log_level"])
        running.copyValue(ofKey: "nope", from: other)
        #expect(other.changedKeys(from: running) == ["log_level"])
    }

    @Test func displayValueRedactsSecrets() {
        var config = AegisConfig.defaults
        #expect(config.displayValue(forKey: "auth_token") == "")
        config.authToken = "hunter2"
        config.gossipSecret = "s"
        #expect(config.displayValue(forKey: "auth_token") == "<redacted>")
        #expect(config.displayValue(forKey: "gossip_secret") == "<redacted>")
        #expect(config.displayValue(forKey: "read_timeout") == "30s")
        #expect(config.displayValue(forKey: "bind_addr") == "0.0.0.0:7700")
        #expect(config.displayValue(forKey: "nope") == nil)
    }

    /// docs/configuration.md must contain the table generated from the code.
    @Test func documentationTableMatchesTheCode() throws {
        let docs = String(#filePath).split(separator: "/", omittingEmptySubsequences: false).dropLast(3)
            .joined(separator: "/") + "/docs/configuration.md"
        let text = try #require(readText(docs), "cannot read \(docs)")
        let table = ConfigDocumentation.table()
        #expect(text.contains(table), "docs/configuration.md is out of date; the table should read:\n\(table)")
    }

    @Test func helpMentionsEveryFlag() {
        let help = ConfigFlags.helpMessage()
        for key in AegisConfig.allKeys {
            #expect(help.contains(ConfigLoader.flag(forKey: key)), "\(key)")
        }
    }
}
