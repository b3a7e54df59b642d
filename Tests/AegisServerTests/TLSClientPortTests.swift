import Foundation
import Glibc
import Testing

/// Issue 16 item 1: TLS on the client port, with real processes and real
/// clients (redis-cli --tls, redis-py with ssl=True, aegiskv-cli and
/// aegiskv-bench with --tls, openssl s_client). The certificates are made
/// by each test with openssl into a temporary directory.
@Suite(.serialized)
struct TLSClientPortTests {
    static func info(_ port: UInt16, _ certificates: TestPKI, field: String) throws -> String {
        let result = try runTool("redis-cli", ["--tls", "--cacert", certificates.caCert, "-p", "\(port)", "INFO", "stats"])
        let line = result.output.split(whereSeparator: \.isNewline).first { $0.hasPrefix(field + ":") }
        return line.map { String($0.dropFirst(field.count + 1)) } ?? "(no \(field) in: \(result.output))"
    }

    @Test func redisCLIPythonAegisCLIAndBenchSpeakTLSInBothProtocols() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let server = try ServerHarness(arguments: certificates.clientPortArguments)
        defer { #expect(server.stop() == 0) }
        let port = "\(server.port)"
        func cli(_ args: String...) throws -> String {
            let result = try runTool("redis-cli", ["--tls", "--cacert", certificates.caCert, "-p", port] + args)
            #expect(result.status == 0, "\(result.output)")
            return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try cli("PING") == "PONG")
        #expect(try cli("SET", "greeting", "hello over tls") == "OK")
        #expect(try cli("GET", "greeting") == "hello over tls")
        #expect(server.log().contains("TLS on the client port") && server.log().contains("record_layer="), "\(server.log())")

        // redis-py: pipelined requests and a value of many TLS records
        // (1 MiB), which exercises plaintext OpenSSL holds after a read.
        let script = """
            import redis, sys
            r = redis.Redis(host="127.0.0.1", port=\(port), ssl=True, ssl_ca_certs=sys.argv[1])
            assert r.get("greeting") == b"hello over tls"
            big = b"v" * (1 << 20)
            assert r.set("big", big)
            p = r.pipeline(transaction=False)
            for i in range(200):
                p.set(f"k{i}", i)
            for i in range(200):
                p.get(f"k{i}")
            replies = p.execute()
            assert replies[200:] == [str(i).encode() for i in range(200)], replies[200:210]
            assert r.get("big") == big
            # 300 requests, one TLS record each, sent without waiting: many
            # records arrive in one segment, the node reads them ahead in one
            # recv, and the socket signals nothing for the records behind the
            # first. All 300 must be answered.
            import socket, ssl
            context = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.create_connection(("127.0.0.1", \(port)), timeout=10)
            s = context.wrap_socket(raw, server_hostname="127.0.0.1")
            for i in range(300):
                s.send(b"*1\\r\\n$4\\r\\nPING\\r\\n")
            answers = b""
            while answers.count(b"+PONG\\r\\n") < 300:
                chunk = s.recv(65536)
                assert chunk, answers.count(b"+PONG\\r\\n")
                answers += chunk
            assert answers == b"+PONG\\r\\n" * 300
            print("python ok")
            """
        let python = try runTool("python3", ["-c", script, certificates.caCert])
        #expect(python.status == 0 && python.output.contains("python ok"), "\(python.output)")

        let aegisCLI = CLIToolTests.cliPath
        let set = try runTool(aegisCLI, ["--addr", "127.0.0.1:\(port)", "--tls", "--cacert", certificates.caCert, "set", "from-cli", "yes"])
        #expect(set.status == 0, "\(set.output)")
        let get = try runTool(aegisCLI, ["--addr", "127.0.0.1:\(port)", "--cacert", certificates.caCert, "get", "from-cli"])
        #expect(get.status == 0 && get.output.contains("yes"), "\(get.output)")
        // The node's certificate is checked: a client trusting another CA refuses it.
        let untrusted = try runTool(aegisCLI, ["--addr", "127.0.0.1:\(port)", "--tls", "--cacert", certificates.clientCert, "get", "from-cli"])
        #expect(untrusted.status == 2 && untrusted.output.contains("TLS handshake"), "\(untrusted.output)")

        // Both wire protocols through aegiskv-bench, values verified.
        for protocolName in ["resp", "aegis"] {
            try BenchToolTests.expectCleanRun(port: server.port, protocolName: protocolName,
                                              extra: ["--tls", "--cacert", certificates.caCert])
        }
        #expect(Int(try Self.info(server.port, certificates, field: "tls_handshakes")) ?? 0 >= 10)
    }

    @Test func mutualTLSRefusesClientsWithoutACertificateFromTheCA() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--tls-ca-file", certificates.caCert])
        defer { #expect(server.stop() == 0) }
        let port = "\(server.port)"
        let base = ["--tls", "--cacert", certificates.caCert, "-p", port]
        let refused = try runTool("redis-cli", base + ["PING"])
        #expect(!refused.output.contains("PONG"), "\(refused.output)")
        let accepted = try runTool("redis-cli", base + ["--cert", certificates.clientCert, "--key", certificates.clientKey, "PING"])
        #expect(accepted.output.trimmingCharacters(in: .whitespacesAndNewlines) == "PONG", "\(accepted.output)")
        // A certificate the CA did not sign (the CA's own key pair is not a client's) is refused too.
        let selfSigned = certificates.directory + "/stranger"
        _ = try runTool("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                    "-keyout", selfSigned + ".key", "-out", selfSigned + ".pem", "-days", "2", "-subj", "/CN=stranger"])
        let stranger = try runTool("redis-cli", base + ["--cert", selfSigned + ".pem", "--key", selfSigned + ".key", "PING"])
        #expect(!stranger.output.contains("PONG"), "\(stranger.output)")

        let aegisCLI = CLIToolTests.cliPath
        let withoutCert = try runTool(aegisCLI, ["--addr", "127.0.0.1:\(port)", "--cacert", certificates.caCert, "ping"])
        #expect(withoutCert.status == 2, "\(withoutCert.output)")
        let withCert = try runTool(aegisCLI, ["--addr", "127.0.0.1:\(port)", "--cacert", certificates.caCert,
                                              "--cert", certificates.clientCert, "--key", certificates.clientKey, "ping"])
        #expect(withCert.status == 0, "\(withCert.output)")
        let failures = try runTool("redis-cli", base + ["--cert", certificates.clientCert, "--key", certificates.clientKey, "INFO", "stats"])
        #expect(failures.output.contains("tls_handshake_failures:"), "\(failures.output)")
        #expect(!failures.output.contains("tls_handshake_failures:0"), "\(failures.output)")
    }

    @Test func plaintextAndStalledClientsAreClosedWhileATLSClientKeepsWorking() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        // One reactor: the TLS client and the bad ones share its loop.
        let server = try ServerHarness(arguments: certificates.clientPortArguments + ["--auth-timeout", "1s", "--log-level", "debug"],
                                       reactors: 1)
        defer { #expect(server.stop() == 0) }
        let script = """
            import redis, socket, sys, time
            r = redis.Redis(host="127.0.0.1", port=int(sys.argv[2]), ssl=True, ssl_ca_certs=sys.argv[1], single_connection_client=True)
            assert r.set("kept", "before")
            plain = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10)
            plain.sendall(b"PING\\r\\n")
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", "a plaintext client must be closed without an answer"
            # Half a ClientHello, then silence: closed after auth_timeout (1s), checked once a second.
            stalled = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10)
            stalled.sendall(b"\\x16\\x03\\x01\\x02\\x00\\x01")
            started = time.monotonic()
            assert r.get("kept") == b"before"
            assert stalled.recv(100) == b"", "a stalled handshake must be closed"
            assert time.monotonic() - started < 9
            assert r.set("kept", "after") and r.get("kept") == b"after"
            print("python ok")
            """
        let python = try runTool("python3", ["-c", script, certificates.caCert, "\(server.port)"])
        #expect(python.status == 0 && python.output.contains("python ok"), "\(python.output)")
        #expect(try Self.info(server.port, certificates, field: "tls_plaintext_refusals") == "1")
        #expect(try Self.info(server.port, certificates, field: "tls_handshake_timeouts") == "1")
        #expect(server.log().contains("did not start a TLS handshake"), "\(server.log())")
    }

    @Test func sighupServesTheRotatedCertificateAndKeepsTheOldOneOnABadFile() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let server = try ServerHarness(arguments: certificates.clientPortArguments)
        defer { #expect(server.stop() == 0) }
        func servedSubject() throws -> String {
            let result = try runTool("openssl", ["s_client", "-connect", "127.0.0.1:\(server.port)", "-CAfile", certificates.caCert,
                                                 "-verify_return_error"], input: "")
            let line = result.output.split(whereSeparator: \.isNewline).first { $0.hasPrefix("subject=") }
            return line.map(String.init) ?? "(no subject: \(result.output))"
        }
        func reloadAndWait(for text: String, count: Int) {
            kill(server.pid, SIGHUP)
            for _ in 0..<500 where server.log().components(separatedBy: text).count - 1 < count { usleep(20_000) }
        }
        #expect(try servedSubject().contains("server-one"))
        try FileManager.default.removeItem(atPath: certificates.serverCert)
        try FileManager.default.removeItem(atPath: certificates.serverKey)
        try FileManager.default.copyItem(atPath: certificates.secondServerCert, toPath: certificates.serverCert)
        try FileManager.default.copyItem(atPath: certificates.secondServerKey, toPath: certificates.serverKey)
        reloadAndWait(for: "TLS certificate and key loaded again", count: 1)
        #expect(try servedSubject().contains("server-two"), "\(server.log())")

        // A key that does not match: the reload is refused, server-two stays.
        try FileManager.default.removeItem(atPath: certificates.serverKey)
        try FileManager.default.copyItem(atPath: certificates.clientKey, toPath: certificates.serverKey)
        reloadAndWait(for: "TLS certificates not reloaded", count: 1)
        #expect(server.log().contains("TLS certificates not reloaded"), "\(server.log())")
        #expect(try servedSubject().contains("server-two"))
    }

    @Test func missingOrMismatchedFilesStopStartupNamingTheFile() throws {
        let certificates = try TestPKI()
        defer { certificates.remove() }
        let missing = certificates.directory + "/absent.pem"
        let cases: [(arguments: [String], named: String)] = [
            (["--tls-enabled", "true", "--tls-cert-file", missing, "--tls-key-file", certificates.serverKey], missing),
            (["--tls-enabled", "true", "--tls-cert-file", certificates.serverCert, "--tls-key-file", certificates.clientKey],
             certificates.clientKey),
            (certificates.clientPortArguments + ["--tls-ca-file", missing], missing),
        ]
        for (arguments, named) in cases {
            let validated = try runTool(ServerHarness.binaryPath, arguments + ["--validate"])
            #expect(validated.status == 2 && validated.output.contains(named), "\(validated.output)")
            let output = certificates.directory + "/start-\(UUID().uuidString).log"
            let port = try freePort()
            let status = try SpawnedNode.runToExit(["--bind-addr", "127.0.0.1:\(port)", "--reactors", "1"] + arguments,
                                                   journal: false, output: output)
            let log = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            #expect(status != 0 && log.contains(named) && !log.contains("serving"), "\(log)")
        }
    }
}
