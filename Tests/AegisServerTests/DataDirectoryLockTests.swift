@testable import AegisServer
import AegisProtocol
import Foundation
import Testing

/// Two nodes on one data_dir (or one wal_dir) would interleave their logs
/// and share one lease-terms file: the second is refused at start, and the
/// first keeps serving.
@Suite struct DataDirectoryLockTests {
    static func scratch(_ name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-lock-\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func startSecond(_ arguments: [String]) throws -> (output: String, status: Int32) {
        try runTool("timeout", ["20", ServerHarness.binaryPath, "--bind-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
                                 "--gossip-bind-addr", "127.0.0.1:0", "--reactors", "1"] + arguments)
    }

    @Test func aSecondNodeOnTheSameDataDirIsRefusedNamingTheFirst() throws {
        let dataDir = try Self.scratch("data")
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let first = try ServerHarness(arguments: ["--data-dir", dataDir, "--wal-mode", "write"], reactors: 1)
        defer { #expect(first.stop() == 0) }
        let client = try RESPTestClient(port: first.port)
        #expect(try client.command("SET", "k", "before") == .simple("OK"))

        let second = try Self.startSecond(["--data-dir", dataDir, "--wal-mode", "write"])
        #expect(second.status == 1, "\(second.output)")
        #expect(second.output.contains("data_dir \(dataDir) is in use by another aegiskv (pid \(first.pid))"), "\(second.output)")
        #expect(try client.command("GET", "k") == .bulk(Array("before".utf8)), "the first node still serves")
        #expect(try client.command("SET", "k", "after") == .simple("OK"))
    }

    @Test func aSecondNodeOnTheSameWALDirIsRefusedAndARestartIsNot() throws {
        let walDir = try Self.scratch("wal") + "/wal"
        let (firstData, secondData) = (try Self.scratch("one"), try Self.scratch("two"))
        defer { for path in [walDir, firstData, secondData] { try? FileManager.default.removeItem(atPath: path) } }
        let first = try ServerHarness(arguments: ["--data-dir", firstData, "--wal-mode", "write", "--wal-dir", walDir], reactors: 1)
        let second = try Self.startSecond(["--data-dir", secondData, "--wal-mode", "write", "--wal-dir", walDir])
        #expect(second.status == 1 && second.output.contains("wal_dir \(walDir) is in use by another aegiskv"), "\(second.output)")
        // kill -9 leaves the lock file behind, but the kernel dropped the lock with the process.
        _ = first.stop(signal: SIGKILL)
        let restarted = try ServerHarness(arguments: ["--data-dir", firstData, "--wal-mode", "write", "--wal-dir", walDir], reactors: 1)
        #expect(restarted.stop() == 0)
    }
}
