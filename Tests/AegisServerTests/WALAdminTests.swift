import Foundation
import Glibc
import Testing

/// The write-ahead log as operators see it on the operations port:
/// `POST /admin/wal/truncate` (runbook), its metrics, and the runbook's
/// Go profiling URLs answered with their Swift equivalents.
struct WALAdminTests {
    let http = AdminHTTPTests()

    @Test func truncateSnapshotsEveryReactorAndDeletesCoveredSegments() throws {
        let walDirectory = WALCrashTests.temporaryDirectory("wal-admin")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let server = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let client = try RESPTestClient(port: server.port)
        let value = String(repeating: "t", count: 8 * 1024)
        for round in 0..<40 {
            _ = try client.pipeline((0..<16).map { ["SET", "key-\($0)", value + String(round)] })
        }
        let before = WALCrashTests.files(in: walDirectory).filter { $0.hasSuffix(".wal") }
        #expect(before.count >= 2, "\(before)")

        // The runbook's command, with the test node's port.
        let result = try runTool("curl", ["-s", "-X", "POST", server.healthURL + "/admin/wal/truncate"])
        #expect(result.status == 0)
        #expect(try http.jq(".completed", result.output) == "true", "\(result.output)")
        #expect(try http.jq(".reactors_done", result.output) == "2")
        let after = WALCrashTests.files(in: walDirectory)
        #expect(after.filter { $0.hasSuffix(".snap") }.count == 2, "\(after)")
        for segment in before { #expect(!after.contains(segment), "\(segment) is covered and must be gone") }
        try http.waitForMetric(server, "aegis_wal_snapshots_total") { $0 >= 2 }
        // A second request is answered by new snapshots, not the ones just taken.
        _ = try client.pipeline((0..<16).map { ["SET", "key-\($0)", value + "39"] })
        let second = try runTool("curl", ["-s", "-X", "POST", server.healthURL + "/admin/wal/truncate"])
        #expect(try http.jq(".completed", second.output) == "true", "\(second.output)")
        try http.waitForMetric(server, "aegis_wal_snapshots_total") { $0 >= 4 }
        try http.waitForMetric(server, "aegis_wal_batches_total") { $0 > 0 }
        try http.waitForMetric(server, "aegis_wal_writable") { $0 == 1 }

        // Everything is still there after a crash: the snapshot replaced the log.
        kill(server.pid, SIGKILL)
        _ = server.stop(signal: SIGKILL)
        let restarted = try ServerHarness(arguments: WALCrashTests.walArguments(walDirectory), reactors: 2)
        let again = try RESPTestClient(port: restarted.port)
        for k in 0..<16 {
            #expect(try again.command("GET", "key-\(k)").text == value + "39")
        }
        #expect(restarted.log().contains("snapshot_entries=16"), "\(restarted.log())")
        #expect(restarted.stop() == 0)
    }

    @Test func truncateWithoutALogIsAConflict() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let response = try http.http("POST", server.healthURL + "/admin/wal/truncate")
        #expect(response.status == 409)
        #expect(response.body.contains("wal_mode is off"))
        #expect(try http.http("GET", server.healthURL + "/admin/wal/truncate").status == 405)
    }

    @Test func truncateNeedsTheTokenWhenAuthIsOn() throws {
        let server = try ServerHarness(arguments: ["--auth-token", "s3cret"])
        defer { #expect(server.stop() == 0) }
        #expect(try http.http("POST", server.healthURL + "/admin/wal/truncate").status == 401)
        #expect(try http.http("POST", server.healthURL + "/admin/wal/truncate", headers: ["Authorization: Bearer s3cret"]).status == 409)
    }

    @Test func runbookProfilingURLsAnswerWithTheSwiftEquivalents() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let threads = try runTool("curl", ["-s", server.healthURL + "/debug/pprof/goroutine?debug=1"])
        #expect(threads.output.contains("[aegis-reactor-0]"), "\(threads.output)")
        #expect(threads.output.contains("[aegis-admin]"), "\(threads.output)")
        let json = try http.http("GET", server.healthURL + "/debug/pprof/goroutine")
        #expect(try http.jq("[.threads[].name] | index(\"aegis-reactor-1\") != null", json.body) == "true")
        let heap = try http.http("GET", server.healthURL + "/debug/pprof/heap")
        #expect(heap.status == 200)
        #expect(try http.jq(".rss_bytes > 0", heap.body) == "true")
        #expect(try http.http("GET", server.healthURL + "/debug/pprof/heap?seconds=5").status == 400)
    }
}
