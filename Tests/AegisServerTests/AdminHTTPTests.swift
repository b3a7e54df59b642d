import AegisProtocol
import Foundation
import Glibc
import Testing

/// The HTTP operations server (health_addr) driven by real tools: curl, jq,
/// promtool, the runbook's own health-check script, redis-py.
struct AdminHTTPTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()

    // MARK: - The runbook and the tools it uses

    @Test func runbookDailyHealthCheckPassesVerbatim() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        // 3 MiB of data and one open client, so the figures are not all zero.
        let socket = try TestSocket(port: server.port)
        defer { socket.close() }
        let value = String(repeating: "x", count: 3 * 1024 * 1024)
        #expect(try socket.set("big", value) == Array("+OK\r\n".utf8))
        try waitForMetric(server, "aegis_active_connections") { $0 == 1 }
        try waitForMetric(server, "aegis_cache_size_bytes") { $0 >= 3 * 1024 * 1024 }

        let original = try String(contentsOf: Self.directory.appendingPathComponent("runbook/daily-health-check.sh"), encoding: .utf8)
        let nodesLine = #"NODES=("node1:7702" "node2:7702" "node3:7702")"#
        #expect(original.contains(nodesLine))
        let script = original.replacingOccurrences(of: nodesLine, with: #"NODES=("127.0.0.1:\#(server.healthPort)")"#)
        let result = try runTool("bash", ["-c", script])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("✓ Health: OK"), "\(result.output)")
        #expect(result.output.contains("  Memory: 3 MB"), "\(result.output)")
        #expect(result.output.contains("  Connections: 1\n"), "\(result.output)")
        #expect(result.output.contains("  Cluster members: 1\n"), "\(result.output)")
        #expect(!result.output.contains("FAILED"))
    }

    @Test func plainMetricsHaveOneLinePerRunbookNameAndPromtoolParsesThem() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try runTool("redis-cli", ["-p", String(server.port), "SET", "a", "1"])
        let plain = try http("GET", server.healthURL + "/metrics")
        #expect(plain.status == 200)
        #expect(plain.headers["content-type"]?.hasPrefix("text/plain") == true)
        #expect(!plain.body.contains("# HELP"))
        #expect(!plain.body.contains("# TYPE"))
        for name in ["aegis_cache_size_bytes", "aegis_active_connections", "aegis_cluster_members"] {
            let lines = plain.body.split(separator: "\n").filter { $0.contains(name) }
            #expect(lines.count == 1, "\(name): \(lines)")
            let fields = lines.first?.split(separator: " ") ?? []
            #expect(fields.count == 2 && Int(fields[1]) != nil, "\(lines)")
        }
        for name in ["aegis_cache_items", "aegis_shards_owned", "aegis_evictions_total", "aegis_expired_keys_total",
                     "aegis_keyspace_hits_total", "aegis_keyspace_misses_total", "aegis_connections_accepted_total",
                     "aegis_connections_rejected_total", "aegis_network_received_bytes_total", "aegis_network_sent_bytes_total",
                     "aegis_protocol_errors_total", "aegis_rate_limited_requests_total",
                     #"aegis_commands_total{command="get"}"#, #"aegis_command_errors_total{command="set"}"#,
                     #"aegis_command_duration_seconds_bucket{family="write",le="+Inf"}"#] {
            #expect(plain.body.contains("\n" + name + " "), "\(name) missing")
        }
        // Without HELP lines promtool's linter says "no help text" for every
        // metric (the runbook's grep forbids them in this format); anything
        // else (a parse error, a naming problem) would show here.
        let lint = try runTool("promtool", ["check", "metrics"], input: plain.body)
        let problems = lint.output.split(separator: "\n").filter { !$0.hasSuffix("no help text") }
        #expect(problems.isEmpty, "\(problems)")
        #expect(lint.output.contains("aegis_cache_size_bytes no help text"))
    }

    @Test func prometheusAndOpenMetricsScrapersGetMetadata() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try runTool("redis-cli", ["-p", String(server.port), "SET", "a", "1"])
        try waitForMetric(server, #"aegis_commands_total{command="set"}"#) { $0 == 1 }
        let prometheus = try http("GET", server.healthURL + "/metrics", headers: ["Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1"])
        #expect(prometheus.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(prometheus.body.contains("# TYPE aegis_cache_size_bytes gauge\n"))
        #expect(prometheus.body.contains("# TYPE aegis_evictions_total counter\n"))
        #expect(prometheus.body.contains("# TYPE aegis_command_duration_seconds histogram\n"))
        let lint = try runTool("promtool", ["check", "metrics"], input: prometheus.body)
        #expect(lint.status == 0, "\(lint.output)")
        #expect(lint.output.isEmpty, "\(lint.output)")
        // A write was measured: its family's +Inf bucket and count agree.
        #expect(prometheus.body.contains(#"aegis_command_duration_seconds_count{family="write"} 1"#))
        #expect(prometheus.body.contains(#"aegis_command_duration_seconds_bucket{family="write",le="+Inf"} 1"#))

        // What Prometheus 2.x sends: OpenMetrics preferred.
        let scraperAccept = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        let open = try http("GET", server.healthURL + "/metrics", headers: [scraperAccept])
        #expect(open.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8")
        #expect(open.body.hasSuffix("# EOF\n"))
        #expect(open.body.contains("# TYPE aegis_evictions counter\naegis_evictions_total "))
        #expect(open.body.contains("# HELP aegis_active_connections "))
        // promtool reads only the Prometheus text format; the OpenMetrics
        // reference parser (prometheus_client) checks this one.
        let parse = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n"
            + "families = {f.name: f.type for f in parse(sys.stdin.read())}\n"
            + "print(families['aegis_evictions'], families['aegis_command_duration_seconds'], len(families))"
        let parsed = try runTool("python3", ["-c", parse], input: open.body)
        #expect(parsed.status == 0, "\(parsed.output)")
        #expect(parsed.output.hasPrefix("counter histogram "), "\(parsed.output)")
    }

    @Test func clusterListsThisNodeAlive() throws {
        let server = try ServerHarness(arguments: ["--node-id", "test-node-1"])
        defer { #expect(server.stop() == 0) }
        let body = try http("GET", server.healthURL + "/cluster").body
        let alive = try runTool("jq", ["-e", #".members[] | .status == "alive""#], input: body)
        #expect(alive.status == 0 && alive.output == "true\n", "\(alive.output)")
        let count = try runTool("jq", [".members | length"], input: body)
        #expect(count.output == "1\n")
        let member = try runTool("jq", ["-r", #".members[0] | "\(.node_id) \(.client_addr)""#], input: body)
        #expect(member.output == "test-node-1 127.0.0.1:\(server.port)\n")
    }

    // MARK: - Endpoints, methods, parameters

    @Test func readOnlyEndpointsAnswerJSON() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        try runTool("redis-cli", ["-p", String(server.port), "SET", "k", "v"])
        try waitForMetric(server, "aegis_cache_items") { $0 == 1 }
        // Per-command counters are published on the maintenance tick, later than items.
        try waitForMetric(server, #"aegis_commands_total{command="set"}"#) { $0 == 1 }
        let health = try http("GET", server.healthURL + "/health")
        #expect(health.status == 200 && health.body.contains("ok"))
        #expect(try http("GET", server.healthURL + "/ready").status == 200)
        #expect(try http("GET", server.healthURL + "/live").status == 200)

        let stats = try http("GET", server.healthURL + "/stats").body
        #expect(try jq(".items", stats) == "1")
        #expect(try jq(".reactors | length", stats) == "2")
        #expect(try jq(".rate_limit.enabled", stats) == "false")
        #expect(try jq(".uptime_seconds >= 0 and .memory.used_bytes > 0 and .connections.accepted_total >= 1", stats) == "true")
        #expect(try jq(".commands.per_command.set.calls", stats) == "1")

        let reactors = try http("GET", server.healthURL + "/debug/reactors").body
        #expect(try jq(".reactors | length", reactors) == "2")
        #expect(try jq("[.reactors[].owned_shards] | add", reactors) == "256")
        #expect(try jq(".reactors | all(.loop_iterations > 0 and (.inbound_ring_bytes | type) == \"number\")", reactors) == "true")

        let memory = try http("GET", server.healthURL + "/debug/memory").body
        #expect(try jq(".mallinfo2.arena > 0 and .rss_bytes > 0 and .ledger.used_bytes > 0", memory) == "true")
    }

    @Test func gcTrimsAndReports() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let gc = try http("POST", server.healthURL + "/admin/gc")
        #expect(gc.status == 200, "\(gc.body)")
        #expect(try jq("(.trimmed | type) == \"boolean\" and .rss_freed_bytes >= 0 and .rss_before_bytes > 0", gc.body) == "true")
        let wrong = try http("GET", server.healthURL + "/admin/gc")
        #expect(wrong.status == 405)
        #expect(wrong.headers["allow"] == "POST")
        #expect(try jq(".error | length > 0", wrong.body) == "true")
    }

    @Test func wrongMethodsUnknownPathsAndBadParameters() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let url = server.healthURL
        let post = try http("POST", url + "/health")
        #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
        #expect(try http("DELETE", url + "/metrics").status == 405)
        #expect(try http("GET", url + "/admin/rate-limit?ops_per_sec=1").status == 405)
        #expect(try http("GET", url + "/admin/circuit-breaker/trip?service=downstream").status == 405)
        #expect(try http("POST", url + "/admin/circuit-breaker/status").status == 405)
        for path in ["/nope", "/admin/nope", "/debug/pprof/profile", "/healthz", "/"] {
            let missing = try http("GET", url + path)
            #expect(missing.status == 404, "\(path)")
            #expect(try jq(".error", missing.body).contains("no endpoint"), "\(path)")
        }
        for query in ["", "?ops_per_sec=", "?ops_per_sec=abc", "?ops_per_sec=-1", "?ops_per_sec=1.5",
                      "?ops_per_sec=99999999999", "?ops_per_sec=10&burst=x", "?ops_per_sec=10&bogus=1",
                      "?ops_per_sec=1&ops_per_sec=2", "?ops_per_sec=%zz"] {
            let bad = try http("POST", url + "/admin/rate-limit" + query)
            #expect(bad.status == 400, "\(query): \(bad.body)")
            #expect(bad.headers["content-type"] == "application/json")
            #expect(try jq(".error | length > 0", bad.body) == "true", "\(query)")
        }
        #expect(try http("GET", url + "/stats?x=1").status == 400)
        // Not HTTP at all: NIO's parser answers 400 and the connection is closed.
        let raw = try TestSocket(port: server.healthPort)
        defer { raw.close() }
        try raw.send("GARBAGE\r\n\r\n")
        let reply = try raw.receive { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
        #expect(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 400"))
        #expect(raw.waitForClose())
        // Nothing bad took effect.
        #expect(try jq(".rate_limit.enabled", http("GET", url + "/stats").body) == "false")
    }

    @Test func circuitBreakersTripListAndReset() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let url = server.healthURL + "/admin/circuit-breaker"
        let initial = try http("GET", url + "/status").body
        #expect(try jq("[.breakers[].service] | sort | join(\",\")", initial) == "\"downstream,forwarding,replication\"")
        #expect(try jq(".breakers | all(.state == \"closed\")", initial) == "true")

        let trip = try http("POST", url + "/trip?service=downstream")
        #expect(trip.status == 200)
        #expect(try jq(".state + \" \" + (.manual | tostring) + \" \" + (.trips | tostring)", trip.body) == "\"open true 1\"")
        let status = try http("GET", url + "/status").body
        #expect(try jq(".breakers[] | select(.service == \"downstream\") | .state", status) == "\"open\"")
        let metrics = try http("GET", server.healthURL + "/metrics").body
        #expect(metrics.contains(#"aegis_circuit_breaker_open{service="downstream"} 1"#))

        // A peer's breaker is created by its first trip.
        #expect(try http("POST", url + "/trip?service=node-7.example:7701").status == 200)
        #expect(try jq(".breakers | length", http("GET", url + "/status").body) == "4")

        let reset = try http("POST", url + "/reset?service=downstream")
        #expect(reset.status == 200)
        #expect(try jq(".state", reset.body) == "\"closed\"")
        let unknown = try http("POST", url + "/reset?service=never-seen")
        #expect(unknown.status == 404)
        #expect(try jq(".error", unknown.body).contains("never-seen"))
        for query in ["", "?service=", "?service=a%20b", "?service=" + String(repeating: "x", count: 129), "?name=downstream"] {
            #expect(try http("POST", url + "/trip" + query).status == 400, "\(query)")
            #expect(try http("POST", url + "/reset" + query).status == 400, "\(query)")
        }
    }

    /// The breaker policy comes from the configuration (file and flags),
    /// shows in status, and a SIGHUP with a changed file replaces it for
    /// every breaker while a flag keeps winning over the file.
    @Test func breakerPolicyFromConfigShowsInStatusAndReloads() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-breaker-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/config.json"
        try #"{"breaker_min_calls": 40, "breaker_window": "20s"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let server = try ServerHarness(arguments: ["--config", file, "--breaker-error-rate", "0.2"])
        defer { #expect(server.stop() == 0) }
        let url = server.healthURL + "/admin/circuit-breaker"
        let policy = ".policy | [.error_rate_threshold, .minimum_calls, .window_seconds, .cool_down_ms, .half_open_trials]"
        #expect(try jq(policy, http("GET", url + "/status").body) == "[0.2,40,20,30000,3]")
        #expect(try http("POST", url + "/trip?service=downstream").status == 200)

        try """
            {"breaker_error_rate": 0.9, "breaker_min_calls": 8, "breaker_window": "30s",
             "breaker_cooldown": "1m", "breaker_half_open_trials": 2}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        kill(server.pid, SIGHUP)
        var log = server.log()
        for _ in 0..<1000 where !log.contains("reload:") {
            usleep(10_000)
            log = server.log()
        }
        let report = log.split(separator: "\n").first { $0.contains("reload:") } ?? ""
        #expect(report.contains("breaker_min_calls 40 → 8") && report.contains("breaker_window 20s → 30s"), "\(report)")
        #expect(!report.contains("breaker_error_rate"), "the flag wins over the file: \(report)")
        let status = try http("GET", url + "/status").body
        #expect(try jq(policy, status) == "[0.2,8,30,60000,2]")
        // Existing breakers keep their state under the new policy.
        #expect(try jq(".breakers[] | select(.service == \"downstream\") | .state", status) == "\"open\"")
        let shown = try runTool("redis-cli", ["-p", String(server.port), "CONFIG", "GET", "breaker_*"]).output
        #expect(shown.contains("breaker_min_calls\n8"), "CONFIG GET shows what runs: \(shown)")
    }

    // MARK: - Auth

    @Test func adminAndDebugNeedTheBearerTokenWhenSet() throws {
        let server = try ServerHarness(arguments: ["--auth-token", "s3cret-token"])
        defer { #expect(server.stop() == 0) }
        let url = server.healthURL
        for path in ["/admin/circuit-breaker/status", "/debug/memory", "/debug/reactors", "/admin/nope"] {
            for headers in [[], ["Authorization: Bearer wrong"], ["Authorization: Bearer s3cret-toke"],
                            ["Authorization: Bearer s3cret-token2"], ["Authorization: Basic s3cret-token"], ["Authorization: s3cret-token"]] {
                let denied = try http("GET", url + path, headers: headers)
                #expect(denied.status == 401, "\(path) \(headers)")
                #expect(try jq(".error", denied.body).contains("Bearer"), "\(path)")
            }
        }
        for method in ["POST"] {
            #expect(try http(method, url + "/admin/rate-limit?ops_per_sec=1").status == 401)
            #expect(try http(method, url + "/admin/gc").status == 401)
            #expect(try http(method, url + "/admin/circuit-breaker/trip?service=downstream").status == 401)
        }
        // Nothing the unauthorised calls asked for happened.
        let auth = ["Authorization: Bearer s3cret-token"]
        #expect(try jq(".rate_limit.enabled", http("GET", url + "/stats").body) == "false")
        #expect(try jq(".breakers | all(.state == \"closed\")", http("GET", url + "/admin/circuit-breaker/status", headers: auth).body) == "true")
        #expect(try http("GET", url + "/debug/memory", headers: auth).status == 200)
        #expect(try http("GET", url + "/debug/memory", headers: ["authorization: bearer s3cret-token"]).status == 200)
        #expect(try http("GET", url + "/admin/nope", headers: auth).status == 404)
        for open in ["/health", "/ready", "/live", "/metrics"] {
            #expect(try http("GET", url + open).status == 200, "\(open)")
        }
    }

    // MARK: - Rate limit

    @Test func rateLimitRefusesTheExcessAndLiftsAtZero() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let script = Self.directory.appendingPathComponent("python/rate_limit_check.py").path
        let result = try runTool("python3", [script, String(server.port), server.healthURL])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("OK"))
        try waitForMetric(server, "aegis_rate_limited_requests_total") { $0 > 0 }
        let stats = try http("GET", server.healthURL + "/stats").body
        #expect(try jq(".rate_limit.enabled == false and .rate_limit.rejected_total > 0", stats) == "true")
        #expect(server.log().contains("admin: rate limit set"))
    }

    @Test func rateLimitFromConfigAppliesToBothProtocolsAndShowsInStats() throws {
        let server = try ServerHarness(arguments: ["--rate-limit", "2", "--rate-burst", "2"])
        defer { #expect(server.stop() == 0) }
        let stats = try http("GET", server.healthURL + "/stats").body
        #expect(try jq(".rate_limit.enabled and .rate_limit.ops_per_sec == 2 and .rate_limit.burst == 2", stats) == "true")

        // RESP: 30 requests on one connection (redis-cli reads them from stdin).
        let commands = String(repeating: "PING\n", count: 30)
        let resp = try runTool("redis-cli", ["-p", String(server.port)], input: commands)
        let lines = resp.output.split(separator: "\n")
        #expect(lines.count == 30, "\(resp.output)")
        #expect(lines.contains { $0.contains("rate limit exceeded") }, "\(resp.output)")
        #expect(lines.allSatisfy { $0 == "PONG" || $0.hasPrefix("ERR rate limit exceeded") }, "\(resp.output)")

        // Binary protocol: the matching status is ERROR with the same text; the connection stays open.
        let socket = try TestSocket(port: server.port)
        defer { socket.close() }
        let buffer = WireBuffer()
        for id in 1...20 {
            BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: UInt64(id), key: Array("k".utf8), value: [], ttlMs: 0, version: 0, into: buffer)
        }
        try socket.send(buffer.readableArray())
        let responses = try readBinaryResponses(socket, count: 20)
        #expect(responses.map(\.requestID) == (1...20).map { UInt64($0) })
        let refused = responses.filter { $0.status == BinaryStatus.error.rawValue }
        #expect(!refused.isEmpty)
        #expect(refused.allSatisfy { $0.error.contains("rate limit exceeded") })
        #expect(responses.allSatisfy { $0.status == BinaryStatus.error.rawValue || $0.status == BinaryStatus.notFound.rawValue })
    }

    // MARK: - Lifecycle

    @Test func healthIs503WhileDraining() throws {
        let server = try ServerHarness(arguments: ["--drain-timeout", "60s", "--read-timeout", "0s"])
        defer { server.stop(signal: SIGKILL) }
        // A partial request keeps this connection (and so the drain) open.
        let socket = try TestSocket(port: server.port)
        try socket.send("*2\r\n$3\r\nGET\r\n")
        try waitForMetric(server, "aegis_active_connections") { $0 == 1 }
        kill(server.pid, SIGTERM)
        var health = try http("GET", server.healthURL + "/health")
        for _ in 0..<500 where health.status == 200 {
            usleep(20_000)
            health = try http("GET", server.healthURL + "/health")
        }
        #expect(health.status == 503)
        #expect(!health.body.contains("ok"), "\(health.body)")
        #expect(try http("GET", server.healthURL + "/ready").status == 503)
        #expect(try http("GET", server.healthURL + "/live").status == 200)
        let runbookCheck = try runTool("bash", ["-c", "curl -s http://127.0.0.1:\(server.healthPort)/health | grep -q ok"])
        #expect(runbookCheck.status != 0)
        socket.close()
        #expect(server.stop() == 0)
    }

    @Test func healthAddrInUseRefusesStartup() throws {
        let first = try ServerHarness()
        defer { #expect(first.stop() == 0) }
        let result = try runTool(ServerHarness.binaryPath, [
            "--bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:\(first.healthPort)", "--gossip-bind-addr", "127.0.0.1:0",
            "--reactors", "1", "--data-dir", first.pidFile + ".data",
        ])
        #expect(result.status != 0)
        #expect(result.output.contains("cannot listen on health_addr 127.0.0.1:\(first.healthPort)"), "\(result.output)")
    }

    @Test func ephemeralHealthPortIsLogged() throws {
        let server = try ServerHarness(arguments: ["--health-addr", "127.0.0.1:0"])
        defer { #expect(server.stop() == 0) }
        // The client port opens just before the "serving" line is written.
        var log = server.log()
        for _ in 0..<500 where !log.contains("serving") {
            usleep(10_000)
            log = server.log()
        }
        guard let range = log.range(of: #"health_addr=127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else {
            Issue.record("no health_addr in the serving line: \(log)")
            return
        }
        let port = log[range].split(separator: ":").last.map(String.init) ?? ""
        #expect(port != "0")
        #expect(try http("GET", "http://127.0.0.1:\(port)/health").status == 200)
    }

    // MARK: - Helpers

    struct HTTPResult {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    /// One request with curl; headers come back lower-cased.
    func http(_ method: String, _ url: String, headers: [String] = []) throws -> HTTPResult {
        var arguments = ["-s", "-S", "--max-time", "10", "-X", method, "-D", "-"]
        for header in headers { arguments += ["-H", header] }
        arguments.append(url)
        let result = try runTool("curl", arguments)
        guard result.status == 0, let split = result.output.range(of: "\r\n\r\n") else {
            throw HarnessError("curl \(method) \(url) failed (\(result.status)): \(result.output)")
        }
        let headerLines = result.output[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusFields = headerLines.first?.split(separator: " ") ?? []
        var parsed: [String: String] = [:]
        for line in headerLines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            parsed[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return HTTPResult(status: statusFields.count > 1 ? Int(statusFields[1]) ?? 0 : 0, headers: parsed,
                          body: String(result.output[split.upperBound...]))
    }

    /// jq's compact output for `filter` applied to `json`, without the newline.
    func jq(_ filter: String, _ json: String) throws -> String {
        let result = try runTool("jq", ["-c", filter], input: json)
        if result.status != 0 { throw HarnessError("jq \(filter) failed: \(result.output) on \(json)") }
        return result.output.trimmingCharacters(in: .newlines)
    }

    /// Polls the plain /metrics until `sample`'s value satisfies `condition`
    /// (reactors publish on their clock tick, so a figure lags a moment).
    func waitForMetric(_ server: ServerHarness, _ sample: String, _ condition: (Int) -> Bool) throws {
        var last = ""
        for _ in 0..<500 {
            let body = try http("GET", server.healthURL + "/metrics").body
            if let line = body.split(separator: "\n").first(where: { $0.hasPrefix(sample + " ") }) {
                last = String(line)
                if let value = Int(line.split(separator: " ").last ?? ""), condition(value) { return }
            }
            usleep(20_000)
        }
        throw HarnessError("metric \(sample) never reached the expected value; last: \(last)")
    }
}
