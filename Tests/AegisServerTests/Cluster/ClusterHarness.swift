import Foundation
import Glibc
import Testing

/// One member as a node's `GET /cluster` lists it (issue 11's operations
/// surface: node_id, addresses, status, incarnation, shards, last heard).
struct ClusterMember: CustomStringConvertible {
    var nodeID: String
    var status: String
    var incarnation: Int
    var gossipAddr: String
    /// nil until placement is in the build: the node omits the field then
    /// rather than invent a figure.
    var shardsPrimary: Int?
    var isSelf: Bool

    var description: String { "\(nodeID)=\(status)/i\(incarnation)" + (shardsPrimary.map { "/p\($0)" } ?? "") }
}

/// A node's answer to `GET /cluster`.
struct ClusterView: CustomStringConvertible {
    var nodeID: String
    var placementDigest: String?
    var members: [ClusterMember]

    init(json: String) throws {
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let nodeID = object["node_id"] as? String,
              let members = object["members"] as? [[String: Any]] else {
            throw HarnessError("/cluster is not the agreed document: \(json)")
        }
        self.nodeID = nodeID
        placementDigest = object["placement_digest"] as? String
        self.members = try members.map { member in
            guard let id = member["node_id"] as? String, let status = member["status"] as? String else {
                throw HarnessError("a /cluster member lacks node_id or status: \(json)")
            }
            return ClusterMember(nodeID: id, status: status, incarnation: member["incarnation"] as? Int ?? -1,
                                 gossipAddr: member["gossip_addr"] as? String ?? "",
                                 shardsPrimary: member["shards_primary"] as? Int, isSelf: member["self"] as? Bool ?? false)
        }
    }

    func member(_ nodeID: String) -> ClusterMember? { members.first { $0.nodeID == nodeID } }
    func status(of nodeID: String) -> String? { member(nodeID)?.status }
    var aliveIDs: Set<String> { Set(members.filter { $0.status == "alive" }.map(\.nodeID)) }

    var description: String {
        "\(nodeID) sees [" + members.map(\.description).joined(separator: " ") + "] digest=\(placementDigest ?? "none")"
    }
}

/// A network namespace of the test's own, so nftables rules and fixed ports
/// (7700/7701/7702, the runbook's) touch nothing outside it.
///
/// The namespace is held by a `sleep` that `unshare -n` execs into: its PID
/// names the namespace (/proc/PID/ns/net), nodes and tools enter it with
/// `nsenter --net=...` (which execs, so a node's PID is still the node's),
/// and stopping that PID when the test ends lets the kernel free the
/// namespace with every rule in it. The test process itself stays in the
/// machine's namespace: entering one is per thread, and Swift's test
/// runner moves work between threads.
final class PrivateNetwork: @unchecked Sendable {
    let holderPID: pid_t
    private var stopped = false

    /// A fresh namespace with `lo` up, or the reason none can be made here.
    static func make() -> Result<PrivateNetwork, SkipReason> {
        if geteuid() != 0 { return .failure(SkipReason("not root: unshare -n needs CAP_SYS_ADMIN")) }
        for tool in ["unshare", "nsenter", "ip", "nft"] where (try? runTool("sh", ["-c", "command -v \(tool)"]))?.status != 0 {
            return .failure(SkipReason("\(tool) is not installed (scripts/ensure-deps --test installs it)"))
        }
        // Bounded: the holder ends by itself if a crashed test never stops it.
        guard let pid = try? startProcess("unshare", ["-n", "sleep", "600"]) else {
            return .failure(SkipReason("cannot run unshare"))
        }
        let network = PrivateNetwork(holderPID: pid)
        let ours = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? ""
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let theirs = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) ?? ours
            if theirs != ours {
                if let up = try? network.run("ip", ["link", "set", "lo", "up"]), up.status == 0 { return .success(network) }
                break
            }
            if SpawnedNode.waitForExit(pid, graceSeconds: 0) != nil { break }
            usleep(10_000)
        }
        network.stop()
        return .failure(SkipReason("unshare -n did not give a namespace with lo up (a container without CAP_SYS_ADMIN?)"))
    }

    private init(holderPID: pid_t) { self.holderPID = holderPID }

    /// The command prefix that runs a program inside the namespace.
    var launcher: [String] { ["/usr/bin/nsenter", "--net=/proc/\(holderPID)/ns/net", "--"] }

    @discardableResult
    func run(_ tool: String, _ arguments: [String], input: String? = nil) throws -> (output: String, status: Int32) {
        try runTool(launcher[0], Array(launcher.dropFirst()) + [tool] + arguments, input: input)
    }

    /// Drops every packet from `source` to `destination` on the output hook
    /// (loopback traffic passes it once). One call is a one-way cut; call it
    /// both ways for a symmetric one.
    func drop(from source: String, to destination: String) throws {
        let rules = """
            table inet aegis_partition {
              chain output {
                type filter hook output priority 0; policy accept;
                ip saddr \(source) ip daddr \(destination) drop
              }
            }
            """
        let result = try run("nft", ["-f", "-"], input: rules)
        if result.status != 0 { throw HarnessError("nft refused the rule: \(result.output)") }
    }

    /// Removes every cut.
    func heal() throws {
        let result = try run("nft", ["delete", "table", "inet", "aegis_partition"])
        if result.status != 0 { throw HarnessError("nft delete table failed: \(result.output)") }
    }

    /// True when a TCP connection from `source` to `destination`:`port`
    /// completes: proof that a rule is (or is no longer) in force.
    func connects(from source: String, to destination: String, port: UInt16) -> Bool {
        let probe = try? run("curl", ["-s", "-o", "/dev/null", "--max-time", "1", "--interface", source,
                                      "http://\(destination):\(port)/health"])
        return probe?.status == 0
    }

    func stop() {
        if stopped { return }
        stopped = true
        stopProcess(holderPID, graceSeconds: 5)
    }

    deinit { stop() }
}

struct SkipReason: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Timers short enough that a test sees `suspect` and `dead` within seconds
/// (the defaults are 1 s / 5 s / 30 s-ish; these keep the suite small).
struct ClusterTimers {
    var gossipInterval = "200ms"
    var suspectTimeout = "1s"
    var deadTimeout = "3s"
}

/// N real `aegiskv` processes on 127.0.0.11, .12, ... with node ids
/// node1..nodeN, node2..nodeN seeded with node1's gossip address. Each node
/// is a `SpawnedNode` (started, signalled and reaped by PID). In the
/// machine's namespace every port is ephemeral; inside a `PrivateNetwork`
/// each node uses the production ports 7700/7701/7702 on its own address,
/// which is what lets the runbook's `node1:7702` resolve there.
final class ClusterHarness: @unchecked Sendable {
    struct Slot {
        let nodeID: String
        let host: String
        let clientPort: UInt16
        let gossipPort: UInt16
        let healthPort: UInt16
        let dataDir: String
        var secret: String
        var seeds: [String]
        var process: SpawnedNode?
        /// Logs of earlier runs of this node (restarts start a new log).
        var earlierLogs: [String] = []
    }

    static let numShards = 64
    let network: PrivateNetwork?
    let timers: ClusterTimers
    /// Appended to every node's arguments, so they override the harness's.
    let extraArguments: [String]
    let root: String
    private(set) var slots: [Slot] = []

    var size: Int { slots.count }
    func host(_ node: Int) -> String { slots[node - 1].host }
    func gossipAddress(_ node: Int) -> String { "\(host(node)):\(slots[node - 1].gossipPort)" }
    func healthURL(_ node: Int) -> String { "http://\(host(node)):\(slots[node - 1].healthPort)" }
    func process(_ node: Int) -> SpawnedNode? { slots[node - 1].process }
    static func nodeID(_ node: Int) -> String { "node\(node)" }
    static func address(_ node: Int) -> String { "127.0.0.\(10 + node)" }

    /// Lays out `size` nodes; `start` runs them. `secret` and `seeds` may
    /// differ per node (1-based) for the tests of refused and lonely nodes.
    init(size: Int, network: PrivateNetwork? = nil, timers: ClusterTimers = ClusterTimers(),
         secret: (Int) -> String = { _ in "aegis-test-cluster" }, seeds: ((Int) -> [String])? = nil,
         extraArguments: [String] = []) throws {
        precondition((1...20).contains(size), "loopback addresses 127.0.0.11...30 are reserved for these tests")
        self.network = network
        self.timers = timers
        self.extraArguments = extraArguments
        root = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-cluster-\(UUID().uuidString)").path
        var gossipPorts: [UInt16] = []
        for node in 1...size {
            let host = Self.address(node)
            let ports: (UInt16, UInt16, UInt16) = try network == nil
                ? (freePort(on: host), freePort(on: host), freePort(on: host)) : (7700, 7701, 7702)
            let dataDir = root + "/\(Self.nodeID(node))"
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            gossipPorts.append(ports.1)
            slots.append(Slot(nodeID: Self.nodeID(node), host: host, clientPort: ports.0, gossipPort: ports.1,
                              healthPort: ports.2, dataDir: dataDir, secret: secret(node), seeds: []))
        }
        let firstSeed = "\(Self.address(1)):\(gossipPorts[0])"
        for node in 1...size {
            slots[node - 1].seeds = seeds?(node) ?? (node == 1 ? [] : [firstSeed])
        }
    }

    func arguments(_ node: Int) -> [String] {
        let slot = slots[node - 1]
        var arguments = ["--node-id", slot.nodeID,
                         "--gossip-bind-addr", "\(slot.host):\(slot.gossipPort)",
                         "--health-addr", "\(slot.host):\(slot.healthPort)",
                         "--gossip-interval", timers.gossipInterval,
                         "--suspect-timeout", timers.suspectTimeout,
                         "--dead-timeout", timers.deadTimeout,
                         "--num-shards", String(Self.numShards),
                         "--reactors", "1", "--max-memory-mb", "64",
                         "--data-dir", slot.dataDir]
        if !slot.secret.isEmpty { arguments += ["--gossip-secret", slot.secret] }
        if !slot.seeds.isEmpty { arguments += ["--seeds", slot.seeds.joined(separator: ",")] }
        return arguments + extraArguments
    }

    /// Starts every node, node1 first, each once its /cluster answers.
    func startAll() throws {
        for node in 1...size { try start(node) }
    }

    /// Starts (or restarts) one node with its data directory kept.
    func start(_ node: Int) throws {
        if slots[node - 1].process?.isRunning == true { throw HarnessError("node\(node) is already running") }
        if let previous = slots[node - 1].process { slots[node - 1].earlierLogs.append(previous.log()) }
        let slot = slots[node - 1]
        let process = try SpawnedNode(arguments: arguments(node), waitForPort: false, port: slot.clientPort,
                                      host: slot.host, launcher: network?.launcher ?? [])
        slots[node - 1].process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if !process.isRunning { throw HarnessError("node\(node) exited at start: \(process.log())") }
            if (try? view(of: node)) != nil { return }
            usleep(50_000)
        }
        throw HarnessError("node\(node) never answered /cluster: \(process.log())")
    }

    /// kill -9: no goodbye, the others must find out by themselves.
    func kill9(_ node: Int) {
        guard let process = slots[node - 1].process else { return }
        process.signal(SIGKILL)
        // Reaped through SpawnedNode, which then knows the PID is gone: the
        // SIGTERM that stop() sends meets a zombie, whose PID is not reused
        // before the reap.
        process.stop(graceSeconds: 10)
    }

    /// SIGTERM, waiting for the exit; returns the exit status.
    @discardableResult
    func terminate(_ node: Int) -> Int32 {
        slots[node - 1].process?.stop(graceSeconds: 20) ?? -1
    }

    func stopAll() {
        for slot in slots { _ = slot.process?.stop(graceSeconds: 10) }
    }

    deinit {
        stopAll()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Every log line this node wrote, across restarts.
    func log(_ node: Int) -> String {
        (slots[node - 1].earlierLogs + [slots[node - 1].process?.log() ?? ""]).joined()
    }

    func logLines(_ node: Int) -> [Substring] { log(node).split(separator: "\n") }

    // MARK: - Asking the nodes

    /// One GET through curl, inside the namespace when there is one.
    func get(_ node: Int, _ path: String) throws -> String {
        let arguments = ["-s", "-f", "--max-time", "5", healthURL(node) + path]
        let result = try network?.run("curl", arguments) ?? runTool("curl", arguments)
        guard result.status == 0 else { throw HarnessError("curl \(healthURL(node))\(path) failed (\(result.status))") }
        return result.output
    }

    func view(of node: Int) throws -> ClusterView { try ClusterView(json: get(node, "/cluster")) }

    /// The value of one plain /metrics sample (`name` with its labels), nil when absent.
    func metric(_ node: Int, _ sample: String) throws -> Double? {
        let body = try get(node, "/metrics")
        guard let line = body.split(separator: "\n").first(where: { $0.hasPrefix(sample + " ") }) else { return nil }
        return Double(line.split(separator: " ").last ?? "")
    }

    /// Polls the views of `nodes` (default: every running node) until
    /// `condition` holds for them together; returns the views that passed.
    /// The bound is generous because the suite shares two cores with other
    /// tests: it bounds the wait, it is not the figure under test.
    @discardableResult
    func waitUntil(_ what: String, nodes: [Int]? = nil, timeoutSeconds: Double = 30,
                   _ condition: ([Int: ClusterView]) -> Bool) throws -> [Int: ClusterView] {
        let asked = nodes ?? (1...size).filter { slots[$0 - 1].process?.isRunning == true }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var views: [Int: ClusterView] = [:]
        var problem = ""
        repeat {
            views = [:]
            problem = ""
            for node in asked {
                do { views[node] = try view(of: node) } catch { problem = "\(error)" }
            }
            if problem.isEmpty && condition(views) { return views }
            usleep(100_000)
        } while Date() < deadline
        throw HarnessError("not within \(timeoutSeconds) s: \(what)\n" + describe(views) + problem + "\n" + logTails())
    }

    func describe(_ views: [Int: ClusterView]) -> String {
        views.keys.sorted().map { "  \(views[$0]!)\n" }.joined()
    }

    func logTails(lines: Int = 12) -> String {
        (1...size).map { node in
            "--- node\(node) log (last \(lines) lines):\n" + logLines(node).suffix(lines).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    // MARK: - Conditions the tests share

    /// Every asked node lists exactly `expected` as alive, and no one else as alive.
    static func allAlive(_ expected: Set<String>) -> ([Int: ClusterView]) -> Bool {
        { views in views.values.allSatisfy { $0.aliveIDs == expected } }
    }

    /// The same, present placement digest on every asked node.
    static func sameDigest(_ views: [Int: ClusterView]) -> Bool {
        let digests = Set(views.values.map { $0.placementDigest ?? "" })
        return digests.count == 1 && !(digests.first ?? "").isEmpty
    }

    /// Waits (bounded) until `nodes` publish one placement digest, and
    /// records an issue instead of throwing when they do not: membership
    /// checks go on without placement, so a failure says which part broke.
    /// Returns the last views seen either way.
    func expectOnePlacement(nodes: [Int]? = nil, timeoutSeconds: Double = 15,
                            sourceLocation: SourceLocation = #_sourceLocation) throws -> [Int: ClusterView] {
        do {
            // A build without placement never publishes a digest: say so
            // at once rather than wait out the full bound.
            try waitUntil("some node publishes placement_digest", nodes: nodes, timeoutSeconds: 3) { views in
                views.values.contains { $0.placementDigest != nil }
            }
            return try waitUntil("one placement digest everywhere", nodes: nodes, timeoutSeconds: timeoutSeconds,
                                 Self.sameDigest)
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
            let asked = nodes ?? (1...size).filter { slots[$0 - 1].process?.isRunning == true }
            var views: [Int: ClusterView] = [:]
            for node in asked { views[node] = try view(of: node) }
            return views
        }
    }

    static func nodeIDs(_ nodes: ClosedRange<Int>) -> Set<String> { Set(nodes.map(nodeID)) }
}

/// Checks that the live members of `view` own every shard as primary, each
/// live member some, and members that are not alive none. Records an issue
/// (rather than throwing) so a test goes on to its other checks.
func expectShardsSpread(_ view: ClusterView, numShards: Int = ClusterHarness.numShards,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let alive = view.members.filter { $0.status == "alive" }
    let primaries = alive.compactMap(\.shardsPrimary)
    guard primaries.count == alive.count else {
        Issue.record("\(view.nodeID)'s /cluster has no shards_primary for some member: \(view)", sourceLocation: sourceLocation)
        return
    }
    #expect(primaries.reduce(0, +) == numShards, "\(view)", sourceLocation: sourceLocation)
    #expect(primaries.allSatisfy { $0 > 0 }, "\(view)", sourceLocation: sourceLocation)
    for gone in view.members where gone.status != "alive" {
        #expect((gone.shardsPrimary ?? 0) == 0, "\(gone.nodeID) is \(gone.status) but owns shards: \(view)",
                sourceLocation: sourceLocation)
    }
    if let digest = view.placementDigest {
        #expect(digest.count == 16 && digest.allSatisfy(\.isHexDigit), "placement_digest \(digest)", sourceLocation: sourceLocation)
    } else {
        Issue.record("\(view.nodeID)'s /cluster has no placement_digest", sourceLocation: sourceLocation)
    }
}
