import Foundation
import Glibc
import Testing

/// https on the operations port (health_tls_* keys), driven by the real
/// binary and real clients: curl, promtool, openssl s_client. Every
/// certificate is made by the test with openssl in a temporary directory.
@Suite(.serialized)
struct OperationsTLSTests {
    @Test func curlWithTheCAGetsHealthAndMetricsAndPromtoolReadsTheScrape() throws {
        let pki = try TestPKI()
        let server = try ServerHarness(arguments: pki.serverArguments())
        defer { #expect(server.stop() == 0) }
        let base = "https://127.0.0.1:\(server.healthPort)"

        let health = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, base + "/health"])
        #expect(health.status == 0 && health.output.contains(#""status":"ok""#), "\(health.output)")
        let scrape = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert,
                                          "-H", "Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1", base + "/metrics"])
        #expect(scrape.status == 0, "\(scrape.output)")
        #expect(scrape.output.contains("\naegis_health_tls_enabled 1\n"), "\(scrape.output)")
        #expect(scrape.output.contains("\naegis_health_tls_certificate_expiry_timestamp_seconds "))
        let lint = try runTool("promtool", ["check", "metrics"], input: scrape.output)
        #expect(lint.status == 0 && lint.output.isEmpty, "\(lint.output)")
        for path in ["/cluster", "/stats"] {
            let answer = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "-o", "/dev/null",
                                              "-w", "%{http_code}", base + path])
            #expect(answer.output == "200", "\(path): \(answer.output)")
        }
        let post = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "-X", "POST",
                                        base + "/admin/rate-limit?ops_per_sec=9"])
        #expect(post.status == 0 && post.output.contains("9"), "\(post.output)")

        // curl's own trust store does not know the test CA: verification fails (exit 60).
        let untrusted = try runTool("curl", ["-sS", "--max-time", "10", base + "/health"])
        #expect(untrusted.status == 60, "\(untrusted.status): \(untrusted.output)")
        #expect(server.log().contains("operations port serves https"))
        #expect(server.log().contains("health_scheme=https"), "\(server.log())")
    }

    @Test func plainHTTPToTheHTTPSPortGetsAClearErrorAndTheServerKeepsServing() throws {
        let pki = try TestPKI()
        let server = try ServerHarness(arguments: pki.serverArguments())
        defer { #expect(server.stop() == 0) }
        let plain = try runTool("curl", ["-sS", "--max-time", "10", "-w", "\n%{http_code}", "http://127.0.0.1:\(server.healthPort)/health"])
        #expect(plain.output.contains("this port serves https: use https://"), "\(plain.output)")
        #expect(plain.output.hasSuffix("\n400"), "\(plain.output)")
        // Garbage that starts like a TLS record fails the handshake instead.
        let socket = try TestSocket(port: server.healthPort)
        try socket.send("\u{16}\u{03}\u{01}\u{00}\u{05}hello, not a ClientHello")
        socket.close()

        let base = "https://127.0.0.1:\(server.healthPort)"
        let health = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, base + "/health"])
        #expect(health.output.contains(#""status":"ok""#), "\(health.output)")
        let metrics = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, base + "/metrics"]).output
        #expect(metrics.contains("\naegis_health_tls_plaintext_refusals_total 1\n"), "\(metrics)")
        #expect(try waitForTLSMetric(pki, base, "aegis_health_tls_handshake_failures_total") { $0 >= 1 })
    }

    /// Handshakes that stop halfway hold no place for long: past the port's
    /// 64 connections the longest-waiting is closed to let a new caller in,
    /// and each is closed at the request deadline (10 s) anyway.
    @Test func stalledHandshakesAreClosedAndDoNotLockOthersOut() throws {
        let pki = try TestPKI()
        let server = try ServerHarness(arguments: pki.serverArguments())
        defer { #expect(server.stop() == 0) }
        // A TLS record header announcing a 512-byte ClientHello, and 3 bytes of it.
        let partialClientHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]
        var stalled: [TestSocket] = []
        for _ in 0..<80 {
            let socket = try TestSocket(port: server.healthPort, timeoutSeconds: 30)
            try socket.send(partialClientHello)
            stalled.append(socket)
        }
        usleep(1_500_000)
        let health = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert,
                                          "https://127.0.0.1:\(server.healthPort)/health"])
        #expect(health.output.contains(#""status":"ok""#), "\(health.output)")
        #expect(stalled.filter { !$0.waitForClose() }.isEmpty, "a stalled handshake outlived the request deadline")
        for socket in stalled { socket.close() }
    }

    @Test func aCAFileRequiresAClientCertificateItSigned() throws {
        let pki = try TestPKI()
        let server = try ServerHarness(arguments: pki.serverArguments(clientCA: true))
        defer { #expect(server.stop() == 0) }
        let url = "https://127.0.0.1:\(server.healthPort)/health"
        let withoutCertificate = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, url])
        #expect(withoutCertificate.status != 0, "\(withoutCertificate.output)")
        #expect(!withoutCertificate.output.contains("ok"))
        let foreign = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert,
                                           "--cert", pki.foreignClientCert, "--key", pki.foreignClientKey, url])
        #expect(foreign.status != 0, "\(foreign.output)")
        let signed = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert,
                                          "--cert", pki.clientCert, "--key", pki.clientKey, url])
        #expect(signed.status == 0 && signed.output.contains(#""status":"ok""#), "\(signed.output)")
        // A Prometheus with a client certificate scrapes, and sees the two refusals counted.
        let base = "https://127.0.0.1:\(server.healthPort)"
        #expect(try waitForTLSMetric(pki, base, "aegis_health_tls_handshake_failures_total", client: true) { $0 >= 2 })
    }

    @Test func sighupServesTheRotatedCertificateAndKeepsItWhenTheNewOneIsBad() throws {
        let pki = try TestPKI()
        let server = try ServerHarness(arguments: pki.serverArguments())
        defer { #expect(server.stop() == 0) }
        #expect(try servedSerial(server.healthPort, pki) == "1001")

        try pki.issueServerCertificate(serial: "0x2002")
        kill(server.pid, SIGHUP)
        #expect(waitForLog(server) { $0.contains("operations port certificate, key and CA files read again") }, "\(server.log())")
        #expect(try servedSerial(server.healthPort, pki) == "2002")

        // A half-written rotation: the certificate file is not PEM.
        try "not a certificate\n".write(toFile: pki.serverCert, atomically: true, encoding: .utf8)
        kill(server.pid, SIGHUP)
        #expect(waitForLog(server) { $0.contains("operations port certificate not reloaded") }, "\(server.log())")
        #expect(server.log().contains("health_tls_cert_file \(pki.serverCert): it holds no PEM certificate"), "\(server.log())")
        #expect(try servedSerial(server.healthPort, pki) == "2002")
        let metrics = try runTool("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert,
                                           "https://127.0.0.1:\(server.healthPort)/metrics"]).output
        #expect(metrics.contains("\naegis_health_tls_reloads_total 1\n"), "\(metrics)")
        #expect(metrics.contains("\naegis_health_tls_reload_failures_total 1\n"), "\(metrics)")
    }

    @Test func unusableFilesStopTheStartNamingTheFile() throws {
        let pki = try TestPKI()
        let missing = pki.directory + "/missing.pem"
        try expectStartRefused(["--health-tls-cert-file", missing, "--health-tls-key-file", pki.serverKey],
                               saying: "health_tls_cert_file \(missing): open: No such file or directory")
        // The key of another certificate (the client's).
        try expectStartRefused(["--health-tls-cert-file", pki.serverCert, "--health-tls-key-file", pki.clientKey],
                               saying: "health_tls_key_file \(pki.clientKey): it is not the private key of the certificate in health_tls_cert_file \(pki.serverCert)")
        try expectStartRefused(["--health-tls-cert-file", pki.serverCert, "--health-tls-key-file", pki.serverCert],
                               saying: "health_tls_key_file \(pki.serverCert): it holds no usable PEM private key")
        try expectStartRefused(pki.serverArguments() + ["--health-tls-ca-file", pki.serverKey],
                               saying: "health_tls_ca_file \(pki.serverKey): it holds no PEM certificate")
        let unreadable = pki.directory + "/unreadable.pem"
        try FileManager.default.copyItem(atPath: pki.serverCert, toPath: unreadable)
        chmod(unreadable, 0)
        if getuid() != 0 {  // root reads it anyway
            try expectStartRefused(["--health-tls-cert-file", unreadable, "--health-tls-key-file", pki.serverKey],
                                   saying: "health_tls_cert_file \(unreadable): open: Permission denied")
        }
        // --validate reads the files too.
        let output = pki.directory + "/validate.log"
        let status = try SpawnedNode.runToExit(["--validate", "--health-tls-cert-file", missing, "--health-tls-key-file", pki.serverKey],
                                               journal: false, output: output)
        #expect(status == 2)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text.contains("config: health_tls_cert_file \(missing): open: No such file or directory"), "\(text)")
    }

    // MARK: - Helpers

    private func expectStartRefused(_ arguments: [String], saying message: String) throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("tls-start-\(UUID().uuidString).log").path
        let status = try SpawnedNode.runToExit(["--bind-addr", "127.0.0.1:0"] + arguments, journal: false, output: output)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(status == 1, "\(text)")
        #expect(text.contains("cannot start: cannot serve https on health_addr: " + message), "\(text)")
    }

    /// The serial of the certificate the port presents, as openssl prints it.
    private func servedSerial(_ port: UInt16, _ pki: TestPKI) throws -> String {
        let command = "openssl s_client -connect 127.0.0.1:\(port) -CAfile \(pki.caCert) -verify_return_error </dev/null 2>/dev/null"
            + " | openssl x509 -noout -serial"
        let result = try runTool("bash", ["-c", command])
        guard result.status == 0, let line = result.output.split(separator: "\n").first, line.hasPrefix("serial=") else {
            throw HarnessError("no certificate from port \(port): \(result.output)")
        }
        return String(line.dropFirst("serial=".count))
    }

    private func waitForLog(_ server: ServerHarness, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if condition(server.log()) { return true }
            usleep(20_000)
        }
        return condition(server.log())
    }

    /// Polls /metrics over https until `name`'s value satisfies `condition`:
    /// the node counts a failed handshake after the client has seen it fail.
    private func waitForTLSMetric(_ pki: TestPKI, _ base: String, _ name: String, client: Bool = false,
                                  _ condition: (Int) -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(20)
        var last = ""
        while Date() < deadline {
            var arguments = ["-sS", "--max-time", "10", "--cacert", pki.caCert]
            if client { arguments += ["--cert", pki.clientCert, "--key", pki.clientKey] }
            last = try runTool("curl", arguments + [base + "/metrics"]).output
            let value = last.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Int($0.split(separator: " ")[1]) }
            if let value, condition(value) { return true }
            usleep(50_000)
        }
        Issue.record("\(name) never matched: \(last)")
        return false
    }
}
