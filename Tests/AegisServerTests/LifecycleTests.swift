import Foundation
import Glibc
import Testing

@Suite(.serialized)
struct LifecycleTests {
    @Test func sigtermDrainsExitsZeroAndRemovesPIDFile() throws {
        let server = try ServerHarness(arguments: ["--drain-timeout", "5s"])
        let pidText = try String(contentsOfFile: server.pidFile, encoding: .utf8)
        #expect(pidText.trimmingCharacters(in: .whitespacesAndNewlines) == String(server.pid))
        let socket = try TestSocket(port: server.port)
        try socket.send("SET k v\r\n")
        _ = try socket.receive { $0.count >= 5 }
        // A request left half-sent keeps the drain open until drain_timeout.
        // Checked after exit (as before), the idle client's close proved
        // nothing: exiting closes every socket, whatever the drain did.
        let halfSent = try TestSocket(port: server.port)
        try halfSent.send("SET half")
        usleep(200_000)
        kill(server.pid, SIGTERM)
        #expect(socket.waitForClose())
        // Closed by the drain at its start, not at drain_timeout (which
        // closes every connection) nor by the exit: the half-sent one is
        // still open and the node still runs.
        var byte: UInt8 = 0
        let peeked = recv(halfSent.fd, &byte, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        #expect(peeked < 0 && errno == EAGAIN, "the half-sent connection closed with the idle one: \(peeked)")
        #expect(server.process.isRunning, "the idle connection was closed only by the exit")
        #expect(server.stop(signal: SIGTERM) == 0)
        #expect(!FileManager.default.fileExists(atPath: server.pidFile))
        #expect(server.log().contains("draining"))
    }

    @Test func sigintAlsoStopsCleanly() throws {
        let server = try ServerHarness()
        #expect(server.stop(signal: SIGINT) == 0)
    }

    @Test func unknownConfigKeyStopsStartup() throws {
        let directory = FileManager.default.temporaryDirectory
        let file = directory.appendingPathComponent("aegis-bad-\(UUID().uuidString).json").path
        try #"{"max_memroy_mb": 10}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try runTool(ServerHarness.binaryPath, ["--config", file, "--validate"])
        #expect(result.status != 0)
        #expect(result.output.contains("max_memroy_mb"))
    }

    @Test func validateAcceptsAGoodFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-good-\(UUID().uuidString).json").path
        try #"{"node_id": "emergency-node-1", "seeds": ["existing-node:7701"], "max_memory_mb": 32768}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try runTool(ServerHarness.binaryPath, ["--config", file, "--validate"])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test func environmentOverridesAreApplied() throws {
        let server = try ServerHarness(environment: ["AEGIS_MAX_CONNS": "1234"])
        defer { #expect(server.stop() == 0) }
        let info = try runTool("redis-cli", ["-p", String(server.port), "CONFIG", "GET", "max_conns"]).output
        #expect(info.contains("1234"))
    }

    @Test func portInUseIsAClearStartupError() throws {
        let first = try ServerHarness()
        defer { #expect(first.stop() == 0) }
        let result = try runTool(ServerHarness.binaryPath, ["--bind-addr", "127.0.0.1:\(first.port)", "--data-dir", first.pidFile + ".data"])
        #expect(result.status != 0)
        #expect(result.output.contains("cannot listen"))
    }
}
