import AegisProtocol
import Foundation
import Glibc
import Testing

/// The runbook's upgrade keeps AegisKV v1's config.json and unit file: the
/// node must start from both unchanged (issue 15, "A drop-in upgrade").
@Suite(.serialized)
struct V1UpgradeNodeTests {
    func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-v1-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts the binary with exactly `arguments` (no flags added) and waits for `port`.
    func start(_ arguments: [String], port: UInt16, log: String) throws -> pid_t {
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let environment = try SpawnedNode.childEnvironment([:], journalFile: nil)
        let pid = try SpawnedNode.spawn(ServerHarness.binaryPath, arguments, environment: environment, output: log)
        for _ in 0..<500 {
            if let socket = try? TestSocket(port: port) { socket.close(); return pid }
            if SpawnedNode.waitForExit(pid, graceSeconds: 0) != nil {
                throw HarnessError("aegiskv exited: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            usleep(20_000)
        }
        stopProcess(pid)
        throw HarnessError("aegiskv did not open port \(port)")
    }

    func ask(_ port: UInt16, _ command: String...) throws -> String {
        let socket = try TestSocket(port: port)
        defer { socket.close() }
        return String(decoding: try exchange(socket, command), as: UTF8.self)
    }

    @Test func startsFromAV1ConfigFileWithTheV1UnitsSingleDashFlag() throws {
        let dir = try directory()
        let port = try freePort()
        // As v1's SaveToFile wrote it: durations in nanoseconds, read_quorum 0, v1-only keys.
        let file = """
            {
              "node_id": "node1", "bind_addr": "127.0.0.1:\(port)", "data_dir": "\(dir)",
              "seeds": [], "replication_factor": 3, "num_shards": 256, "virtual_nodes": 100,
              "max_memory_mb": 256, "eviction_ratio": 0.9, "shard_max_bytes": 67108864,
              "wal_mode": "off", "wal_dir": "\(dir)/wal", "wal_max_size_mb": 64,
              "gossip_bind_addr": "127.0.0.1:0", "gossip_advertise_addr": "", "gossip_interval": 1000000000,
              "suspect_timeout": 5000000000, "dead_timeout": 10000000000, "gossip_secret": "",
              "client_advertise_addr": "", "read_timeout": 30000000000, "write_timeout": 30000000000, "max_conns": 10000,
              "replication_batch_size": 100, "replication_batch_timeout": 10000000, "replication_max_retries": 3,
              "auth_token": "", "tls_enabled": false, "tls_cert_file": "", "tls_key_file": "", "tls_ca_file": "",
              "health_addr": "127.0.0.1:0", "maintenance_interval": 10000000000, "rate_limit": 0, "rate_burst": 0,
              "log_level": "warn", "write_quorum": 0, "read_quorum": 0, "drain_timeout": 30000000000, "pid_file": ""
            }
            """
        let path = dir + "/config.json"
        try file.write(toFile: path, atomically: true, encoding: .utf8)
        let log = dir + "/stderr.log"
        let pid = try start(["-config", path], port: port, log: log)
        defer { stopProcess(pid) }
        #expect(try ask(port, "PING") == "+PONG\r\n")
        #expect(try ask(port, "CONFIG", "GET", "read_timeout") == "*2\r\n$12\r\nread_timeout\r\n$7\r\n30000ms\r\n")
        #expect(try ask(port, "CONFIG", "GET", "read_quorum") == "*2\r\n$11\r\nread_quorum\r\n$1\r\n1\r\n")
        #expect(try ask(port, "CONFIG", "GET", "log_level") == "*2\r\n$9\r\nlog_level\r\n$7\r\nwarning\r\n")
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        for key in ["shard_max_bytes", "replication_max_retries"] {
            let lines = text.split(separator: "\n").filter { $0.contains("\(key) in \(path) is an AegisKV v1 key") }
            #expect(lines.count == 1, "logged once as ignored: \(text)")
        }
    }

    @Test func startsFromAV1CommandLine() throws {
        let dir = try directory()
        let port = try freePort()
        let log = dir + "/stderr.log"
        // v1's flag names, in Go's single-dash spelling and in the double-dash one.
        let pid = try start([
            "-bind", "127.0.0.1:\(port)", "-gossip", "127.0.0.1:0", "--gossip-advertise", "127.0.0.1:7701",
            "-client-advertise", "127.0.0.1:\(port)", "-shards", "64", "-wal=off", "--max-memory", "128",
            "-tls-ca", dir + "/ca.pem", "-log-level", "warn", "-health-addr", "127.0.0.1:0", "-data-dir", dir,
            "-node-id", "v1node", "-replication-factor", "1",
        ], port: port, log: log)
        defer { stopProcess(pid) }
        #expect(try ask(port, "PING") == "+PONG\r\n")
        let info = try ask(port, "INFO", "server")
        #expect(info.contains("num_shards:64\r\n"), "\(info)")
        #expect(try ask(port, "CONFIG", "GET", "maxmemory") == "*2\r\n$9\r\nmaxmemory\r\n$9\r\n134217728\r\n")
        #expect(try ask(port, "CONFIG", "GET", "gossip_advertise_addr")
            == "*2\r\n$21\r\ngossip_advertise_addr\r\n$14\r\n127.0.0.1:7701\r\n")
    }

    /// v1 clients put a connection back in their pool after an error: an
    /// oversized key must not close it. And v1 clients send negative TTLs
    /// for "no expiry".
    @Test func binaryClientsOfV1KeepTheirConnectionAndNegativeTTLMeansNoExpiry() throws {
        let node = try ServerHarness()
        defer { #expect(node.stop() == 0) }
        let socket = try TestSocket(port: node.port)
        func call(_ command: BinaryCommand, id: UInt64, key: [UInt8], value: [UInt8] = [], ttl: Int64 = 0) throws -> BinaryResponse {
            let out = WireBuffer()
            BinaryRequestWriter.write(command: command.rawValue, requestID: id, key: key, value: value, ttlMs: ttl, version: 0, into: out)
            try socket.send(Array(out.readableView))
            let bytes = try socket.receive { (try? $0.withUnsafeBytes { try BinaryResponseParser.parse($0) }) != nil }
            return try #require(try bytes.withUnsafeBytes { try BinaryResponseParser.parse($0) })
        }
        let oversized = try call(.set, id: 1, key: [UInt8](repeating: 0x6B, count: 70_000), value: Array("v".utf8))
        #expect(oversized.knownStatus == .error && oversized.requestID == 1 && oversized.error == "key too long", "\(oversized)")
        #expect(try call(.ping, id: 2, key: []).knownStatus == .ok, "the same connection still answers")
        #expect(try call(.set, id: 3, key: Array("n".utf8), value: Array("v".utf8), ttl: -1).knownStatus == .ok)
        let read = try call(.get, id: 4, key: Array("n".utf8))
        #expect(read.knownStatus == .ok && read.value == Array("v".utf8) && read.ttlMs == 0, "\(read)")
    }

    @Test func versionPrintsTheVersion() throws {
        for flag in ["--version", "-version"] {
            let result = try runTool(ServerHarness.binaryPath, [flag])
            #expect(result.status == 0, "\(flag): \(result.output)")
            #expect(result.output.hasPrefix("aegiskv "), "\(flag): \(result.output)")
        }
    }
}
