import Foundation
import Glibc
import Testing

/// Issue 16 item 3: "a Prometheus scrape over https works", with a real
/// Prometheus server (Debian's `prometheus` package, which also brings the
/// promtool the other tests use) scraping the operations port every second:
/// one job presents the client certificate health_tls_ca_file asks for and
/// is up; one does not and is down with a TLS error, and the node counts it.
@Suite(.serialized)
struct PrometheusScrapeTests {
    /// Prometheus's answer to an instant `query`, via its HTTP API.
    static func query(_ port: UInt16, _ query: String) -> String {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        return (try? runTool("curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(port)/api/v1/query?query=\(encoded)"]))?.output ?? ""
    }

    // A bound against a hang, not a timing check: swift-testing counts it from
    // when the test is scheduled, so on a loaded 2-core machine the wait for a
    // free worker thread counts too (CI met 2 minutes so).
    @Test(.hangBound) func prometheusScrapesTheHTTPSPortWithAClientCertificateAndIsRefusedWithout() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try ServerHarness(arguments: pki.serverArguments(clientCA: true), reactors: 1)
        defer { #expect(server.stop() == 0) }
        let target = "127.0.0.1:\(server.healthPort)"
        let configuration = """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: with-certificate
                scheme: https
                tls_config:
                  ca_file: \(pki.caCert)
                  cert_file: \(pki.clientCert)
                  key_file: \(pki.clientKey)
                static_configs:
                  - targets: ["\(target)"]
              - job_name: without-certificate
                scheme: https
                tls_config:
                  ca_file: \(pki.caCert)
                static_configs:
                  - targets: ["\(target)"]
            """
        let configFile = pki.directory + "/prometheus.yml"
        try configuration.write(toFile: configFile, atomically: true, encoding: .utf8)
        let check = try runTool("promtool", ["check", "config", configFile])
        #expect(check.status == 0, "\(check.output)")

        let port = try freePort()
        let output = pki.directory + "/prometheus.log"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let prometheus = try SpawnedNode.spawn("/usr/bin/prometheus", [
            "--config.file=\(configFile)", "--storage.tsdb.path=\(pki.directory)/prometheus-data",
            "--web.listen-address=127.0.0.1:\(port)",
        ], environment: ProcessInfo.processInfo.environment, output: output)
        defer {
            kill(prometheus, SIGTERM)
            if SpawnedNode.waitForExit(prometheus, graceSeconds: 10) == nil { kill(prometheus, SIGKILL) }
        }
        func log() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

        // Targets are picked up within about 5 s of start; then one scrape a second.
        let up = #"up{job="with-certificate"}"#
        #expect(waitUntil(seconds: 60) { Self.query(port, up).contains(#""1"]"#) }, "\(Self.query(port, up))\n\(log().suffix(2000))")
        let served = Self.query(port, #"aegis_health_tls_enabled{job="with-certificate"}"#)
        #expect(served.contains(#""1"]"#), "the scrape carried the node's metrics: \(served)")
        let refused = #"up{job="without-certificate"}"#
        #expect(waitUntil(seconds: 30) { Self.query(port, refused).contains(#""0"]"#) }, "\(Self.query(port, refused))")
        let targets = (try runTool("curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(port)/api/v1/targets"])).output
        #expect(targets.contains("certificate required") || targets.contains("bad certificate"),
                "Prometheus names the TLS refusal: \(targets.prefix(3000))")
        // The node counts the refused scrapes.
        let metrics = try runTool("curl", ["-s", "--max-time", "5", "--cacert", pki.caCert, "--cert", pki.clientCert, "--key", pki.clientKey,
                                           "https://\(target)/metrics"]).output
        let failures = metrics.split(separator: "\n").first { $0.hasPrefix("aegis_health_tls_handshake_failures_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(failures >= 1, "\(metrics.prefix(2000))")
    }
}
