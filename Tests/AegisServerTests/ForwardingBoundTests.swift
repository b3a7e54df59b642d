import AegisServer
import AegisStore
import Foundation
import Glibc
import Testing

/// Traffic between reactors when one of them stops answering, on the real
/// binary: a debug build's stall hook (AEGISKV_DEBUG_STALL_FILE, see
/// Reactor+DebugHooks.swift) holds reactor 1 at the top of its loop while a
/// file exists, as a reactor stuck in a long command would.
@Suite(.serialized)
struct ForwardingBoundTests {
    /// A node of two reactors with the stall hook armed.
    private struct StallableNode {
        let server: ServerHarness
        let stallFile: String
        let shards: Int

        init(arguments: [String] = []) throws {
            let base = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-stall-\(UUID().uuidString)").path
            stallFile = base + ".1"
            server = try ServerHarness(arguments: arguments, environment: ["AEGISKV_DEBUG_STALL_FILE": base], reactors: 2)
            let info = try TestSocket(port: server.port)
            try info.send("INFO server\r\n")
            let text = String(decoding: try info.receive { String(decoding: $0, as: UTF8.self).contains("num_shards:") && $0.suffix(4) == Array("\r\n\r\n".utf8) }, as: UTF8.self)
            shards = Int(text.split(separator: "\r\n").first { $0.hasPrefix("num_shards:") }!.dropFirst("num_shards:".count))!
        }

        /// Stops reactor 1 and waits until it says so (it reaches its loop
        /// top within a maintenance interval).
        func stall() throws {
            #expect(FileManager.default.createFile(atPath: stallFile, contents: nil))
            let deadline = Date().addingTimeInterval(10)
            while !server.log().contains("debug hook: reactor stalled") {
                if Date() > deadline { throw HarnessError("reactor 1 did not stall: is this a debug build?\n\(server.log())") }
                usleep(10_000)
            }
        }

        func resume() { unlink(stallFile) }

        /// Keys whose shard reactor 1 owns (shards are split in contiguous ranges).
        func keysOfReactor1(_ count: Int) -> [String] {
            var keys: [String] = []
            var i = 0
            while keys.count < count {
                let key = "stalled-\(i)"
                let shard = Array(key.utf8).withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: shards) }
                if shard * 2 / shards == 1 { keys.append(key) }
                i += 1
            }
            return keys
        }

        /// Connections the kernel gave to reactor 0: with reactor 1 stalled,
        /// they are the ones whose PING is answered.
        func connectionsOnReactor0(atLeast wanted: Int) throws -> [TestSocket] {
            var answered: [TestSocket] = []
            var tried = 0
            while answered.count < wanted && tried < wanted * 8 {
                tried += 1
                let socket = try TestSocket(port: server.port, timeoutSeconds: 1)
                try socket.send("PING\r\n")
                if let reply = try? socket.receiveSome(), reply == Array("+PONG\r\n".utf8) { answered.append(socket) }
            }
            if answered.count < wanted { throw HarnessError("only \(answered.count) of \(tried) connections landed on reactor 0") }
            return answered
        }
    }

    private static func set(_ key: String, _ value: String) -> String {
        "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n"
    }

    /// One gauge from /metrics (the operations port answers on its own
    /// thread, while the client port's reactors are stalled or parked).
    private static func metric(_ server: ServerHarness, _ name: String) throws -> Int? {
        let (text, status) = try runTool("curl", ["-s", "http://127.0.0.1:\(server.healthPort)/metrics"])
        guard status == 0 else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Int($0.dropFirst(name.count + 1)) }
    }

    private static func info(_ port: UInt16, field: String) throws -> Int? {
        let socket = try TestSocket(port: port)
        try socket.send("INFO memory\r\n")
        let text = String(decoding: try socket.receive { $0.suffix(4) == Array("\r\n\r\n".utf8) }, as: UTF8.self)
        return text.split(separator: "\r\n").first { $0.hasPrefix(field + ":") }.flatMap { Int($0.dropFirst(field.count + 1)) }
    }

    /// Issue 14, item 2: clients of reactor 0 pipeline 1 MiB SETs for keys
    /// of the stalled reactor 1. Reactor 0 stops reading them once its
    /// outbound records reach their bound, instead of queueing every
    /// request (12 connections × 16 in flight × 1 MiB = 192 MiB before the
    /// fix); the queued bytes show in INFO; once reactor 1 resumes, every
    /// SET is answered.
    /// The rings of a 2-reactor node: two 1 MiB grid rings, the two 4 KiB
    /// diagonal slots, and each reactor's 1 MiB pair to and from the cluster loop.
    static let ringBytes = 2 * (1 << 20) + 2 * Interconnect.ringCapacityBytesMin + 2 * 2 * (1 << 20)

    /// An idle node reports exactly its rings: none is left out, the
    /// cluster loop's included (they are allocated whether or not the node has peers).
    @Test func anIdleNodeReportsEveryRingAsInterconnectMemory() throws {
        let server = try ServerHarness(reactors: 2)
        defer { #expect(server.stop() == 0) }
        var reported = try Self.metric(server, "aegis_interconnect_memory_bytes")
        let deadline = Date().addingTimeInterval(5)
        while reported != Self.ringBytes, Date() < deadline {
            usleep(50_000)
            reported = try Self.metric(server, "aegis_interconnect_memory_bytes")
        }
        #expect(reported == Self.ringBytes, "aegis_interconnect_memory_bytes: \(reported.map(String.init) ?? "missing")")
        #expect(try Self.info(server.port, field: "used_memory_interconnect") == Self.ringBytes)
    }

    @Test func aStalledReactorMakesItsPeersStopReadingInsteadOfGrowing() throws {
        let node = try StallableNode()
        defer { node.resume(); #expect(node.server.stop() == 0) }
        try node.stall()
        let clients = try node.connectionsOnReactor0(atLeast: 12)
        let keys = node.keysOfReactor1(16)
        let value = String(repeating: "v", count: 1 << 20)
        let pipeline = Array(keys.map { Self.set($0, value) }.joined().utf8)
        let baseline = node.server.residentBytes()

        let senders = clients.map { client in JoinableThread { try? client.send(pipeline) } }
        var peakGrowth = 0
        for _ in 0..<30 {
            usleep(100_000)
            peakGrowth = max(peakGrowth, node.server.residentBytes() - baseline)
        }
        // The rings plus the held records (about the 4 MiB bound).
        let held = try Self.metric(node.server, "aegis_interconnect_memory_bytes")
        print("stalled reactor 1: peak RSS growth \(peakGrowth >> 10) KiB, aegis_interconnect_memory_bytes \(held.map(String.init) ?? "missing")")
        #expect(peakGrowth < 64 << 20, "the node grew by \(peakGrowth >> 20) MiB while reactor 1 was stalled")
        #expect((held ?? 0) > Self.ringBytes + 2 << 20 && (held ?? 0) < 64 << 20, "aegis_interconnect_memory_bytes: \(held.map(String.init) ?? "missing")")

        node.resume()
        for sender in senders { #expect(sender.join(timeoutSeconds: 30)) }
        for client in clients {
            var received: [UInt8] = []
            while received.count < 5 * keys.count, let chunk = try? client.receiveSome(), !chunk.isEmpty { received += chunk }
            #expect(received == Array(String(repeating: "+OK\r\n", count: keys.count).utf8))
        }
        // Once everything went through, INFO counts the rings and nothing
        // held (reactors publish their figures within a maintenance tick).
        var settled = try Self.info(node.server.port, field: "used_memory_interconnect")
        let deadline = Date().addingTimeInterval(5)
        while let value = settled, value >= Self.ringBytes + 2 << 20, Date() < deadline {
            usleep(50_000)
            settled = try Self.info(node.server.port, field: "used_memory_interconnect")
        }
        #expect(settled != nil && settled! >= Self.ringBytes && settled! < Self.ringBytes + 2 << 20, "INFO used_memory_interconnect: \(settled.map(String.init) ?? "missing")")
    }

    /// Issue 14, item 7: a reactor that exits while its peer still has
    /// replies queued for it (more than their ring holds) must not hang the
    /// peer, and so the node's stop.
    @Test func shutdownEndsWhenAReactorExitsBeforeItsPeerFlushedRepliesToIt() throws {
        let node = try StallableNode(arguments: ["--drain-timeout", "300ms"])
        defer { node.resume() }
        let key = node.keysOfReactor1(1)[0]
        let loader = try TestSocket(port: node.server.port)
        try loader.send(Self.set(key, String(repeating: "r", count: 200 * 1024)))
        #expect(try loader.receive { $0.count >= 5 } == Array("+OK\r\n".utf8))
        try node.stall()
        let clients = try node.connectionsOnReactor0(atLeast: 4)
        // 64 GETs wait in reactor 1's inbound ring; their 12.8 MB of replies
        // will need many ring-fulls once it resumes.
        for client in clients { try client.send(String(repeating: "GET \(key)\r\n", count: 16)) }
        usleep(200_000)
        kill(node.server.pid, SIGTERM)
        let draining = Date().addingTimeInterval(10)
        while !node.server.log().contains("draining") && Date() < draining { usleep(10_000) }
        usleep(500_000)  // past the drain deadline: reactor 0 has closed its clients
        node.resume()
        let deadline = Date().addingTimeInterval(15)
        while node.server.process.isRunning && Date() < deadline { usleep(20_000) }
        let stopped = !node.server.process.isRunning
        #expect(stopped, "the node was still running 15 s after SIGTERM")
        if stopped {
            #expect(node.server.process.terminationStatus == 0)
        } else {
            node.server.stop(signal: SIGKILL)
        }
    }
}
