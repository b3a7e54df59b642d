import Foundation
import Glibc
import Testing

/// Issue 16's bad input during TLS handshakes, with real processes: every
/// way a client-port handshake can end is counted in /metrics by reason,
/// the record layer in use is stated (user space on a kernel without the
/// tls ULP) and checked per connection, and 10,000 half-open handshakes
/// from one address hold only that address's share while a client from
/// another address is served, on the client port and on the node port.
@Suite(.serialized)
struct TLSHandshakeBoundsTests {
    /// The value of one sample in the plain /metrics shape, nil when absent.
    static func metric(_ healthURL: String, _ sample: String) -> Int? {
        guard let result = try? runTool("curl", ["-s", "--max-time", "5", healthURL + "/metrics"]), result.status == 0,
              let line = result.output.split(separator: "\n").first(where: { $0.hasPrefix(sample + " ") }) else { return nil }
        return Int(line.split(separator: " ").last ?? "")
    }

    static func failures(_ healthURL: String, _ reason: String) -> Int? {
        metric(healthURL, "aegis_tls_handshake_failures_total{reason=\"\(reason)\"}")
    }

    /// Every way a handshake can end without finishing.
    static let failureReasons = ["no_certificate", "bad_certificate", "plaintext", "protocol", "closed", "timeout"]

    /// The failure counts by reason and the handshakes in progress, from one
    /// scrape (nil when /metrics did not answer), so that a poll spawns one
    /// curl rather than one per reason.
    static func handshakeOutcomes(_ healthURL: String) -> (failures: [String: Int], inProgress: Int)? {
        guard let result = try? runTool("curl", ["-s", "--max-time", "5", healthURL + "/metrics"]), result.status == 0 else { return nil }
        var samples: [String: Int] = [:]
        for line in result.output.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int(parts[1]) { samples[String(parts[0])] = value }
        }
        guard let inProgress = samples["aegis_tls_handshakes_in_progress"] else { return nil }
        var failures: [String: Int] = [:]
        for reason in failureReasons {
            guard let count = samples["aegis_tls_handshake_failures_total{reason=\"\(reason)\"}"] else { return nil }
            failures[reason] = count
        }
        return (failures, inProgress)
    }

    /// Polls `condition` every 50 ms until it holds or `seconds` pass: each
    /// poll spawns a curl, and on a loaded two-core machine polling faster
    /// only takes CPU from the node under test.
    static func pollUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }

    /// Whether this kernel offers the tls ULP (kTLS); not on the machine these tests were written on.
    static var kernelOffersTLS: Bool {
        let listed = (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_available_ulp", encoding: .utf8)) ?? ""
        return listed.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("tls")
    }

    /// python3 with `arguments`, running on while the test goes on; stdout and stderr go to `output`.
    static func background(_ arguments: [String], output: String) throws -> pid_t {
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        return try SpawnedNode.spawn("/usr/bin/python3", arguments, environment: ProcessInfo.processInfo.environment, output: output)
    }

    static func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// One bad client per mode, run by a Python script so that each does
    /// exactly one thing to the socket.
    static let badClient = """
        import socket, sys, time
        mode, port = sys.argv[1], int(sys.argv[2])
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode == "plaintext":
            s.sendall(b"PING\\r\\n")
        elif mode == "garbage":
            # A record header that opens a handshake, then bytes no handshake message starts with.
            s.sendall(b"\\x16\\x03\\x01\\x00\\x10" + b"\\xee" * 16)
        elif mode == "stall":
            # Half a ClientHello, then nothing.
            s.sendall(b"\\x16\\x03\\x01\\x02\\x00\\x01")
            print("sent", flush=True)
        elif mode == "close":
            s.close()
            print("closed")
            sys.exit(0)
        answer = b""
        try:
            while True:
                chunk = s.recv(100)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            answer += b"(still open)"
        # Closed, after at most a TLS alert record (content type 21) saying why.
        closed = answer == b"" or (answer[0] == 0x15 and len(answer) == 7)
        print("server closed" if closed else "answer: %r" % answer)
        """

    @Test(.hangBound) func metricsCountEveryHandshakeOutcomeByReasonAndTheRecordLayer() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--tls-ca-file", certificates.caCert,
                                                                                      "--auth-timeout", "5s"])
        defer { #expect(server.stop() == 0) }
        let url = server.healthURL
        let port = "\(server.port)"
        let base = ["--tls", "--cacert", certificates.caCert, "-p", port]
        #expect(Self.metric(url, "aegis_tls_enabled") == 1)

        // The harness's readiness check connected and closed: counts are compared
        // as deltas from once that connection has ended and been counted. On a
        // loaded machine the node may not have accepted it yet when the test
        // first asks, and a baseline taken then counted it in the deltas.
        var baseline: (failures: [String: Int], inProgress: Int)?
        let settled = Self.pollUntil(seconds: 30) {
            baseline = Self.handshakeOutcomes(url)
            return baseline.map { $0.inProgress == 0 && $0.failures.values.reduce(0, +) >= 1 } ?? false
        }
        #expect(settled, "the readiness check's connection is counted once it ends: \(String(describing: baseline))")
        let before = baseline?.failures ?? [:]
        let accepted = try runTool("redis-cli", base + ["--cert", certificates.clientCert, "--key", certificates.clientKey, "PING"])
        #expect(accepted.output.contains("PONG"), "\(accepted.output)")
        let withoutCertificate = try runTool("redis-cli", base + ["PING"])
        #expect(!withoutCertificate.output.contains("PONG"), "\(withoutCertificate.output)")
        let foreign = try runTool("redis-cli", base + ["--cert", certificates.foreignClientCert, "--key", certificates.foreignClientKey, "PING"])
        #expect(!foreign.output.contains("PONG"), "\(foreign.output)")
        for mode in ["plaintext", "garbage", "close"] {
            let result = try runTool("python3", ["-c", Self.badClient, mode, port])
            #expect(result.status == 0 && !result.output.contains("answer:"), "\(mode): \(result.output)")
        }
        // One of each, and no handshake timed out: every client above ended its own.
        let expected = Dictionary(uniqueKeysWithValues: Self.failureReasons.map { ($0, (before[$0] ?? 0) + ($0 == "timeout" ? 0 : 1)) })
        var now: (failures: [String: Int], inProgress: Int)?
        #expect(Self.pollUntil(seconds: 30) { now = Self.handshakeOutcomes(url); return now?.failures == expected },
                "before \(before), expected \(expected), now \(String(describing: now))\n\(server.log().suffix(3000))")

        // A stalled handshake is in progress until auth_timeout (5 s from the
        // connect, checked once a second) closes it. The wait starts once the
        // client says its half hello is sent: python's start-up under load
        // must not eat into that window.
        let stallOutput = certificates.directory + "/stall.out"
        let stall = try Self.background(["-c", Self.badClient, "stall", port], output: stallOutput)
        #expect(Self.pollUntil(seconds: 30) { Self.text(stallOutput).contains("sent") }, "\(Self.text(stallOutput))")
        #expect(Self.pollUntil(seconds: 5) { Self.handshakeOutcomes(url)?.inProgress == 1 },
                "\(String(describing: Self.handshakeOutcomes(url)))")
        #expect(Self.pollUntil(seconds: 30) { Self.handshakeOutcomes(url)?.failures["timeout"] == (before["timeout"] ?? 0) + 1 },
                "\(String(describing: Self.handshakeOutcomes(url)))\n\(server.log().suffix(3000))")
        #expect(SpawnedNode.waitForExit(stall, graceSeconds: 30) == 0)
        #expect(Self.text(stallOutput).contains("server closed"), "\(Self.text(stallOutput))")
        #expect(Self.metric(url, "aegis_tls_handshakes_in_progress") == 0)

        // The record layer: stated, and what OpenSSL did per connection.
        let kernel = Self.kernelOffersTLS
        #expect(Self.metric(url, "aegis_tls_record_layer{mode=\"user_space\"}") == (kernel ? 0 : 1))
        #expect(Self.metric(url, "aegis_tls_record_layer{mode=\"kernel\"}") == (kernel ? 1 : 0))
        // The accepted PING's handshake, under the layer offered: redis-cli's
        // default suites (AES-GCM) are ones the kernel's tls ULP carries.
        let offered = kernel ? "kernel" : "user_space"
        let completed = Self.metric(url, "aegis_tls_handshakes_total{record_layer=\"\(offered)\"}") ?? -1
        #expect(completed >= 1, "\(offered)")
        if !kernel {
            #expect(Self.metric(url, "aegis_tls_handshakes_total{record_layer=\"kernel\"}") == 0)
            #expect(server.log().contains("record_layer=\"user-space (the kernel offers no tls ULP") ||
                    server.log().contains("record_layer=user-space (the kernel offers no tls ULP"), "\(server.log().prefix(3000))")
        }
        #expect(Self.metric(url, "aegis_tls_handshakes_address_limited_total") == 0)
    }

    /// openssl s_client over TLS 1.2 to 127.0.0.1:argv[1] trusting argv[2]:
    /// sends the request argv[3], asks to renegotiate (`R`), sends it again;
    /// prints how often the answer argv[4] came back, then the output's end.
    static let renegotiationAttempt = """
        import subprocess, sys, time
        client = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:" + sys.argv[1], "-CAfile", sys.argv[2],
                                   "-tls1_2", "-legacy_renegotiation", "-crlf"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        request = sys.argv[3].encode()
        for line, pause in [(request, 1.5), (b"R\\n", 2), (request, 1.5)]:
            try:
                client.stdin.write(line)
                client.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(pause)
        try:
            client.stdin.close()
        except BrokenPipeError:
            pass
        output = client.stdout.read().decode(errors="replace")  # to its exit: stdin is closed
        client.wait(timeout=10)
        print("answers", output.count(sys.argv[4]))
        print(output[-1500:])
        """

    /// A TLS 1.2 client asking to renegotiate (openssl s_client's `R`) gets
    /// no second handshake: the node refuses (SSL_OP_NO_RENEGOTIATION) and
    /// closes that connection, and goes on serving others.
    @Test(.hangBound) func aRenegotiationAttemptClosesOnlyThatConnection() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--log-level", "debug"], reactors: 1)
        defer { #expect(server.stop() == 0) }
        let handshakesBefore = Self.metric(server.healthURL, "aegis_tls_handshakes_total{record_layer=\"user_space\"}") ?? -1
        let result = try runTool("python3", ["-c", Self.renegotiationAttempt, "\(server.port)", certificates.caCert, "PING\n", "+PONG"])
        #expect(result.output.contains("answers 1"), "one PING answered before the attempt, none after: \(result.output)")
        #expect(result.output.contains("RENEGOTIATING"), "the client did ask: \(result.output)")
        #expect(Self.metric(server.healthURL, "aegis_tls_handshakes_total{record_layer=\"user_space\"}") == handshakesBefore + 1)
        let other = try runTool("redis-cli", ["--tls", "--cacert", certificates.caCert, "-p", "\(server.port)", "PING"])
        #expect(other.output.contains("PONG"), "\(other.output)")
        #expect(server.log().contains("TLS error on a client connection"), "\(server.log().suffix(3000))")
    }

    /// The same on the https operations port (swift-nio-ssl, BoringSSL,
    /// which has no server-side renegotiation): the request before the
    /// attempt is answered, none after, and curl is served meanwhile.
    @Test(.hangBound) func aRenegotiationAttemptOnTheOperationsPortClosesOnlyThatConnection() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try ServerHarness(arguments: pki.serverArguments(), reactors: 1)
        defer { #expect(server.stop() == 0) }
        let request = "GET /health HTTP/1.1\nHost: 127.0.0.1\n\n"
        let result = try runTool("python3", ["-c", Self.renegotiationAttempt, "\(server.healthPort)", pki.caCert, request, "HTTP/1.1 200"])
        #expect(result.output.contains("answers 1"), "one request answered before the attempt, none after: \(result.output)")
        #expect(result.output.contains("RENEGOTIATING"), "the client did ask: \(result.output)")
        let other = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "https://127.0.0.1:\(server.healthPort)/health"])
        #expect(other.output.contains(#""status":"ok""#), "\(other.output)")
    }

    @Test func aPlaintextNodeShowsTLSOffInMetrics() throws {
        let server = try ServerHarness(reactors: 1)
        defer { #expect(server.stop() == 0) }
        #expect(Self.metric(server.healthURL, "aegis_tls_enabled") == 0)
        #expect(Self.metric(server.healthURL, "aegis_tls_record_layer{mode=\"user_space\"}") == 0)
        #expect(Self.metric(server.healthURL, "aegis_tls_handshakes_in_progress") == 0)
    }

    /// `count` connections from 127.0.0.1 that each send half a ClientHello
    /// and stop, held while a client from 127.0.0.2 and one more from
    /// 127.0.0.1 try a handshake and a PING, then closed; one `name value`
    /// line per observation.
    static let halfOpenAttack = """
        import socket, ssl, sys, time, urllib.request
        port, health, ca, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
        def metric(name):
            body = urllib.request.urlopen(health + "/metrics", timeout=10).read().decode()
            for line in body.splitlines():
                if line.startswith(name + " "):
                    return int(line.split()[-1])
            return None
        def served(source):
            context = ssl.create_default_context(cafile=ca)
            raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"PING\\r\\n")
                return tls.recv(100) == b"+PONG\\r\\n"
        rss_before = metric("aegis_resident_memory_bytes")
        closed_before = metric('aegis_tls_handshake_failures_total{reason="closed"}')
        held = []
        for _ in range(count):
            s = socket.socket()
            s.settimeout(10)
            s.bind(("127.0.0.1", 0))
            s.connect(("127.0.0.1", port))
            try:
                s.send(b"\\x16\\x03\\x01\\x02\\x00\\x01")
            except OSError:
                pass
            held.append(s)
        deadline = time.time() + 30
        # Settled: every connection is either holding a handshake or was closed at accept.
        while (metric("aegis_tls_handshakes_address_limited_total") + metric("aegis_tls_handshakes_in_progress") < count
               and time.time() < deadline):
            time.sleep(0.1)
        print("in_progress", metric("aegis_tls_handshakes_in_progress"))
        print("address_limited", metric("aegis_tls_handshakes_address_limited_total"))
        print("other_address_served", served("127.0.0.2"))
        try:
            same = served("127.0.0.1")
        except (OSError, ssl.SSLError):
            same = False
        print("same_address_served", same)
        print("rss_growth_mib", round((metric("aegis_resident_memory_bytes") - rss_before) / 1048576, 1))
        for s in held:
            s.close()
        deadline = time.time() + 30
        while metric("aegis_tls_handshakes_in_progress") != 0 and time.time() < deadline:
            time.sleep(0.1)
        print("in_progress_after", metric("aegis_tls_handshakes_in_progress"))
        print("closed_mid_handshake", metric('aegis_tls_handshake_failures_total{reason="closed"}') - closed_before)
        print("served_after", served("127.0.0.1"))
        """

    /// Runs `halfOpenAttack` with `count` connections against `server` and
    /// checks that exactly `bound` of them were held; the script's output.
    static func expectHalfOpenAttackBounded(_ server: ServerHarness, _ certificates: TestPKI, count: Int, bound: Int) throws -> String {
        let result = try runTool("python3", ["-c", halfOpenAttack, "\(server.port)", server.healthURL, certificates.caCert, "\(count)"])
        let lines = Dictionary(result.output.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: " ", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { $1 })
        #expect(result.status == 0, "\(result.output)")
        #expect(lines["in_progress"] == "\(bound)", "\(result.output)")
        #expect(lines["address_limited"] == "\(count - bound)", "\(result.output)")
        #expect(lines["other_address_served"] == "True", "\(result.output)")
        #expect(lines["same_address_served"] == "False", "\(result.output)")
        #expect(lines["in_progress_after"] == "0", "\(result.output)")
        #expect(lines["closed_mid_handshake"] == "\(bound)", "\(result.output)")
        #expect(lines["served_after"] == "True", "\(result.output)")
        return result.output
    }

    /// 10,000 connections from 127.0.0.1 that each send half a ClientHello
    /// and stop: the node keeps 128 of them (the default per-address bound)
    /// and closes the rest at accept; a client from 127.0.0.2 is served
    /// meanwhile, and a new one from 127.0.0.1 is refused until the
    /// address's handshakes end.
    @Test(.hangBound) func tenThousandHalfOpenHandshakesFromOneAddressLeaveOthersServed() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        // auth_timeout long enough that the held handshakes outlast the attack.
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--auth-timeout", "120s"])
        defer { #expect(server.stop() == 0) }
        let output = try Self.expectHalfOpenAttackBounded(server, certificates, count: 10_000, bound: 128)
        print("client port, 10,000 half-open handshakes from one address: \(output)")
    }

    /// tls_handshakes_per_address set low in the configuration file is the
    /// bound real clients meet: of 20 half-open handshakes from one address
    /// the node holds 4, over two reactors, and states the bound at start.
    @Test(.hangBound) func aConfiguredHandshakeBoundIsTheOneClientsMeet() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let file = certificates.directory + "/bound.json"
        try #"{"tls_handshakes_per_address": 4, "auth_timeout": "120s"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--config", file], reactors: 2)
        defer { #expect(server.stop() == 0) }
        _ = try Self.expectHalfOpenAttackBounded(server, certificates, count: 20, bound: 4)
        let log = server.log()
        #expect(log.contains("handshakes_per_address=4") || log.contains("handshakes_per_address=\"4\""), "\(log.prefix(3000))")
        let shown = try runTool("redis-cli", ["--tls", "--cacert", certificates.caCert, "-p", "\(server.port)",
                                              "CONFIG", "GET", "tls_handshakes_per_address"])
        #expect(shown.output.contains("tls_handshakes_per_address\n4"), "\(shown.output)")
    }

    /// Bounds that cannot work are refused before anything listens, naming
    /// the key, where each came from and what it takes.
    @Test(arguments: [
        (["--tls-handshakes-per-address", "0"], "tls_handshakes_per_address in --tls-handshakes-per-address: expected an integer from 1 to 65535, got \"0\""),
        (["--tls-handshakes-per-address=-5"], "tls_handshakes_per_address in --tls-handshakes-per-address: expected an integer from 1 to 65535, got \"-5\""),
        (["--tls-handshakes-per-address", "100000"], "tls_handshakes_per_address in --tls-handshakes-per-address: expected an integer from 1 to 65535, got \"100000\""),
        (["--cluster-pending-accepts-per-address", "0"], "cluster_pending_accepts_per_address in --cluster-pending-accepts-per-address: expected an integer from 1 to 1024, got \"0\""),
        (["--cluster-pending-accepts-per-address", "5000"], "cluster_pending_accepts_per_address in --cluster-pending-accepts-per-address: expected an integer from 1 to 1024, got \"5000\""),
    ])
    func validateRefusesBoundsThatCannotWork(arguments: [String], message: String) throws {
        let result = try runTool(ServerHarness.binaryPath, ["--validate"] + arguments)
        #expect(result.status != 0, "\(result.output)")
        #expect(result.output.contains(message), "\(result.output)")
    }

    @Test func validateRefusesABadBoundInAFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-bounds-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try #"{"cluster_pending_accepts_per_address": -1}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try runTool(ServerHarness.binaryPath, ["--validate", "--config", file])
        #expect(result.status != 0, "\(result.output)")
        #expect(result.output.contains("cluster_pending_accepts_per_address in \(file): expected an integer from 1 to 1024, got -1"),
                "\(result.output)")
        try #"{"cluster_pending_accepts_per_address": 1024, "tls_handshakes_per_address": 65535}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let accepted = try runTool(ServerHarness.binaryPath, ["--validate", "--config", file])
        #expect(accepted.status == 0, "the largest bounds are accepted: \(accepted.output)")
    }

    /// `count` connections from 127.0.0.1 to a node's peer port that each
    /// send half a ClientHello; prints how many the node left open after a
    /// second (`open N`), then holds them until the file `argv[4]` exists.
    static let halfOpenPeerAttack = """
        import os, select, socket, sys, time
        host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        held = []
        for _ in range(count):
            s = socket.socket()
            s.settimeout(10)
            s.bind(("127.0.0.1", 0))
            s.connect((host, port))
            try:
                s.send(b"\\x16\\x03\\x01\\x02\\x00\\x01")
            except OSError:
                pass
            held.append(s)
        time.sleep(1)  # well within the 5 s a connection has for its hello
        # Closed by the node: readable at end of stream (or reset). poll, not select: descriptors pass 1024.
        poller = select.poll()
        for s in held:
            poller.register(s, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(0)}
        open_now = 0
        for s in held:
            if s.fileno() not in ready:
                open_now += 1
                continue
            try:
                if s.recv(1) != b"":
                    open_now += 1
            except OSError:
                pass
        print("open", open_now, flush=True)
        deadline = time.time() + 120  # hold them until told, bounded
        while not os.path.exists(sys.argv[4]) and time.time() < deadline:
            time.sleep(0.1)
        """

    /// The node port: 3,000 half-open TLS connections from 127.0.0.1 to a
    /// seed keep at most 64 connections there (the per-address bound on
    /// connections without a hello) instead of all 1,024 accept slots, and a
    /// new node joins through that seed meanwhile.
    @Test(.hangBound) func halfOpenPeerConnectionsFromOneAddressDoNotKeepNodesOut() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let directory = try PeerTLSProcessTests.temporaryDirectory("peer-tls-halfopen")
        let members = try PeerTLSProcessTests.startTLSCluster(pki, indexes: 21...22, directory: directory)
        defer { for member in members { member.stop() } }
        #expect(ReplicationProcessTests.waitForMap(members))
        let seed = members[0]
        let attack = try HalfOpenPeerAttack(on: seed, connections: 3000, directory: directory)
        defer { attack.finish() }
        #expect(attack.waitUntilOpened(), "\(attack.output)")
        let open = attack.open
        #expect(open >= 0 && open <= 64, "\(attack.output)")
        // A third node joins through the attacked seed while the attacker holds its connections.
        let joiner = try ClusterProcessTests.Member(index: 23, directory: directory)
        let identity = try pki.issuePeerCertificate(joiner.name, serial: "0x7777")
        try joiner.start(seeds: [seed.gossipAddress], extra: ["--reactors", "1"] + pki.peerArguments(cert: identity.cert, key: identity.key))
        defer { joiner.stop() }
        #expect(waitUntil(seconds: 30) { seed.statuses()[joiner.name] == "alive" }, "\(seed.log().suffix(3000))")
        let limited = PeerTLSProcessTests.metric(seed, "aegis_cluster_messages_dropped_total{reason=\"address_limit\"}")
        #expect(limited >= 3000 - 64, "\(limited)")
        #expect(seed.log().contains("address_limit"), "\(seed.log().suffix(3000))")
        #expect(Set(seed.statuses().values) == ["alive"])
    }

    /// cluster_pending_accepts_per_address set low is the bound peers meet:
    /// of 200 half-open TLS connections from one address a node keeps at
    /// most 3, refuses the rest at accept with the bound in its warning, and
    /// a node from another address joins meanwhile.
    @Test(.hangBound) func aConfiguredPendingAcceptBoundIsTheOnePeersMeet() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let directory = try PeerTLSProcessTests.temporaryDirectory("peer-tls-bound")
        let seed = try ClusterProcessTests.Member(index: 24, directory: directory)
        let seedIdentity = try pki.issuePeerCertificate(seed.name, serial: "0x7801")
        try seed.start(seeds: [], extra: ["--cluster-pending-accepts-per-address", "3"]
                       + pki.peerArguments(cert: seedIdentity.cert, key: seedIdentity.key))
        defer { seed.stop() }
        #expect(waitUntil(seconds: 30) { seed.statuses()[seed.name] == "alive" }, "\(seed.log().suffix(3000))")
        let attack = try HalfOpenPeerAttack(on: seed, connections: 200, directory: directory)
        defer { attack.finish() }
        #expect(attack.waitUntilOpened(), "\(attack.output)")
        let open = attack.open
        #expect(open >= 1 && open <= 3, "\(attack.output)")
        let joiner = try ClusterProcessTests.Member(index: 25, directory: directory)
        let identity = try pki.issuePeerCertificate(joiner.name, serial: "0x7802")
        try joiner.start(seeds: [seed.gossipAddress], extra: pki.peerArguments(cert: identity.cert, key: identity.key))
        defer { joiner.stop() }
        #expect(waitUntil(seconds: 30) { seed.statuses()[joiner.name] == "alive" }, "\(seed.log().suffix(3000))")
        let limited = PeerTLSProcessTests.metric(seed, "aegis_cluster_messages_dropped_total{reason=\"address_limit\"}")
        #expect(limited >= 200 - 3, "\(limited)")
        #expect(seed.log().contains("its address already has 3 connections open without a hello"), "\(seed.log().suffix(3000))")
    }
}

/// `TLSHandshakeBoundsTests.halfOpenPeerAttack` run against one node's peer
/// port: it opens `connections` TCP connections that never send a hello,
/// says how many stay open, and holds them until `finish`.
struct HalfOpenPeerAttack {
    let pid: pid_t
    let outputPath: String
    let releasePath: String

    init(on node: ClusterProcessTests.Member, connections: Int, directory: String) throws {
        outputPath = directory + "/attack.out"
        releasePath = directory + "/attack.release"
        pid = try TLSHandshakeBoundsTests.background(
            ["-c", TLSHandshakeBoundsTests.halfOpenPeerAttack, node.host, "\(node.gossipPort)", "\(connections)", releasePath],
            output: outputPath)
    }

    var output: String { TLSHandshakeBoundsTests.text(outputPath) }

    /// Whether the attacker said how many connections it holds, within 60 s.
    func waitUntilOpened() -> Bool { waitUntil(seconds: 60) { output.contains("open ") } }

    /// The connections it holds open; -1 before it said.
    var open: Int { output.split(separator: "\n").first { $0.hasPrefix("open ") }.flatMap { Int($0.dropFirst(5)) } ?? -1 }

    /// Lets the attacker close its connections and exit (killed if it does not).
    func finish() {
        _ = FileManager.default.createFile(atPath: releasePath, contents: nil)
        if SpawnedNode.waitForExit(pid, graceSeconds: 10) == nil { kill(pid, SIGKILL) }
    }
}
