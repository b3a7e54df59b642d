import Foundation
import Glibc
import Synchronization
import Testing

/// Three real `aegiskv` processes on 127.0.0.11-13 joining through their
/// seeds; kill -9 of one is seen as suspect, then dead, by the others; a
/// SIGTERM is seen as `left`. The wider real-process suite (five nodes,
/// partitions, the runbook check) lives with the cluster's other tests.
@Suite struct ClusterProcessTests {
    /// One node: its own loopback address, ports picked free on it.
    final class Member {
        let name: String
        let host: String
        let gossipPort: UInt16
        let healthPort: UInt16
        let clientPort: UInt16
        let logPath: String
        /// Each node its own: the lease terms live there.
        let dataDir: String
        var pid: pid_t = 0
        /// Set once the process was reaped: its pid may then belong to another.
        var exitStatus: Int32?

        init(index: Int, directory: String) throws {
            name = "node\(index)"
            host = "127.0.0.\(10 + index)"
            gossipPort = try freePort(on: host)
            healthPort = try freePort(on: host)
            clientPort = try freePort(on: host)
            logPath = directory + "/\(name).log"
            dataDir = directory + "/\(name)-data"
        }

        var gossipAddress: String { "\(host):\(gossipPort)" }

        /// Seeds come from `--seeds`, or from the JSON file `configFile` (which SIGHUP reloads).
        /// `extra` arguments come last, so they override the defaults above them. With
        /// `timingFlags` false the membership timings come from the file (flags would
        /// override what a reload of the file says).
        func start(seeds: [String], configFile: String? = nil, extra: [String] = [], timingFlags: Bool = true,
                   environment: [String: String] = [:]) throws {
            // `log()` is this start's; the starts before it stay in
            // `<name>.log.earlier` for a post-mortem of a restart test.
            if let earlier = FileManager.default.contents(atPath: logPath), !earlier.isEmpty {
                if let handle = FileHandle(forWritingAtPath: logPath + ".earlier") {
                    handle.seekToEndOfFile()
                    handle.write(earlier)
                    handle.closeFile()
                } else {
                    _ = FileManager.default.createFile(atPath: logPath + ".earlier", contents: earlier)
                }
            }
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            exitStatus = nil  // a restart: the pid about to be set is a live process again
            let seedArguments = configFile.map { ["--config", $0] } ?? ["--seeds", seeds.joined(separator: ",")]
            let timings = timingFlags ? ["--gossip-interval", "200ms", "--suspect-timeout", "1s", "--dead-timeout", "3s"] : []
            let arguments = seedArguments + [
                "--node-id", name, "--bind-addr", "\(host):\(clientPort)", "--health-addr", "\(host):\(healthPort)",
                "--gossip-bind-addr", gossipAddress, "--reactors", "1", "--data-dir", dataDir,
            ] + timings + ["--gossip-secret", "test-secret", "--max-memory-mb", "64"] + extra
            pid = try SpawnedNode.spawn(ServerHarness.binaryPath, arguments,
                                        environment: try SpawnedNode.childEnvironment(environment, journalFile: nil), output: logPath)
        }

        func get(_ path: String) -> String? {
            guard let result = try? runTool("curl", ["-s", "--max-time", "5", "http://\(host):\(healthPort)\(path)"]),
                  result.status == 0 else { return nil }
            return result.output
        }

        /// node_id → status as this node's /cluster shows them.
        func statuses() -> [String: String] {
            guard let body = get("/cluster"),
                  let lines = try? runTool("jq", ["-r", ".members[] | \"\\(.node_id) \\(.status)\""], input: body),
                  lines.status == 0 else { return [:] }
            var result: [String: String] = [:]
            for line in lines.output.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count == 2 { result[String(fields[0])] = String(fields[1]) }
            }
            return result
        }

        func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        func signal(_ number: Int32) { kill(pid, number) }

        func crash() {
            guard exitStatus == nil else { return }
            kill(pid, SIGKILL)
            exitStatus = SpawnedNode.waitForExit(pid, graceSeconds: 10)
        }

        @discardableResult
        func stop() -> Int32? {
            if let exitStatus { return exitStatus }
            kill(pid, SIGTERM)
            exitStatus = SpawnedNode.waitForExit(pid, graceSeconds: 20)
            if exitStatus == nil {
                kill(pid, SIGKILL)
                exitStatus = SpawnedNode.waitForExit(pid, graceSeconds: 10)
            }
            return exitStatus
        }
    }

    @Test(.hangBound) func threeNodesJoinThroughSeedsAndSeeACrashAndALeave() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-cluster-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        let seeds = members.map(\.gossipAddress)
        for member in members { try member.start(seeds: seeds) }
        defer { for member in members { member.stop() } }

        let everyone = ["node1": "alive", "node2": "alive", "node3": "alive"]
        for member in members {
            #expect(waitUntil(seconds: 60) { member.statuses() == everyone },
                    "\(member.name) sees \(member.statuses())\n\(member.log())")
            // The runbook's daily check reads the alive count this way.
            let metrics = member.get("/metrics") ?? ""
            let check = try runTool("bash", ["-c", "grep aegis_cluster_members | awk '{print $2}'"], input: metrics)
            #expect(check.output == "3\n", "\(check.output)")
            let rows = try runTool("jq", ["-r", ".members[] | \"\\(.node_id) \\(.gossip_addr) \\(.client_addr) \\(.self) \\(.incarnation > 0) \\(.last_heard_ms >= 0)\""],
                                   input: member.get("/cluster") ?? "")
            #expect(rows.output == members.map { "\($0.name) \($0.gossipAddress) \($0.host):\($0.clientPort) \($0 === member) true true\n" }.joined(),
                    "\(rows.output)")
            let info = try runTool("redis-cli", ["-h", member.host, "-p", "\(member.clientPort)", "INFO", "cluster"])
            for line in ["cluster_enabled:0", "cluster_members:3", "cluster_members_alive:3", "cluster_node_id:\(member.name)"] {
                #expect(info.output.contains(line + "\r\n") || info.output.contains(line + "\n"), "\(info.output)")
            }
        }

        members[2].crash()
        for member in members.prefix(2) {
            #expect(waitUntil(seconds: 30) { member.log().contains("member node3 alive -> suspect") }, "\(member.log())")
            #expect(waitUntil(seconds: 30) { member.statuses()["node3"] == "dead" }, "\(member.statuses())")
            #expect(member.log().contains("member node3 suspect -> dead"), "\(member.log())")
        }

        #expect(members[0].stop() == 0)
        #expect(waitUntil(seconds: 30) { members[1].statuses()["node1"] == "left" }, "\(members[1].statuses())")
        #expect(members[1].log().contains("member node1 alive -> left"), "\(members[1].log())")
    }
}

extension ClusterProcessTests {
    @Test(.hangBound) func aNodeWithoutSeedsJoinsOnceSIGHUPGivesItSome() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-cluster-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let first = try Member(index: 4, directory: directory)
        let second = try Member(index: 5, directory: directory)
        let config = directory + "/second.json"
        try #"{"seeds": []}"#.write(toFile: config, atomically: true, encoding: .utf8)
        try first.start(seeds: [])
        try second.start(seeds: [], configFile: config)
        defer { first.stop(); second.stop() }
        #expect(waitUntil(seconds: 30) { first.statuses() == ["node4": "alive"] && second.statuses() == ["node5": "alive"] })

        try #"{"seeds": ["\#(first.gossipAddress)"]}"#.write(toFile: config, atomically: true, encoding: .utf8)
        second.signal(SIGHUP)
        let both = ["node4": "alive", "node5": "alive"]
        #expect(waitUntil(seconds: 30) { first.statuses() == both && second.statuses() == both },
                "\(first.statuses()) \(second.statuses())\n\(second.log())")
        #expect(second.log().contains("cluster seeds reloaded"))
    }
}

/// Ports this test process has handed out. The kernel may give a port it
/// just took back to the next bind to 0, so two picks in a row (one node's
/// client and health ports, or two parallel tests' nodes) could otherwise
/// collide before either node binds; a node then refused to start with
/// "would listen on the same port".
private let portsHandedOut = Mutex<Set<UInt16>>([])

/// A port that is free on `host` now (bound to port 0 and released), never
/// one handed out before in this test process.
func freePort(on host: String) throws -> UInt16 {
    for _ in 0..<64 {
        let port = try kernelPickedPort(on: host)
        if portsHandedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
    throw HarnessError("no port on \(host) that this test process has not handed out already")
}

private func kernelPickedPort(on host: String) throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { Glibc.close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr(host)
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { throw HarnessError("bind \(host):0 failed") }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return UInt16(bigEndian: address.sin_port)
}
