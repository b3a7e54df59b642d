@testable import AegisServer
import AegisCluster
import AegisProtocol
import AegisStore
import Foundation
import Glibc
import Testing

/// Any node answers for any key: three real nodes on 127.0.0.11-13 (two
/// reactors each, so a request may cross reactors and nodes), clients of
/// both protocols on every node.
@Suite(.serialized) struct ForwardingProcessTests {
    typealias Member = ClusterProcessTests.Member
    static let keyCount = 10_000

    /// Three nodes that agree on one map with three members.
    static func startCluster() throws -> [Member] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-forwarding-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        let seeds = members.map(\.gossipAddress)
        for member in members { try member.start(seeds: seeds, extra: ["--reactors", "2"]) }
        var digests: [String] = []
        let agreed = waitUntil(seconds: 60) {
            digests = members.map { member in
                guard let body = member.get("/cluster"),
                      let out = try? runTool("jq", ["-r", "[.placement_digest, (.members | map(select(.status == \"alive\")) | length)] | join(\" \")"], input: body)
                else { return "" }
                return out.output
            }
            return digests.allSatisfy { $0 == digests[0] && $0.hasSuffix(" 3\n") }
        }
        // Writes need the shards' leases (won a few seconds after the last start).
        if !agreed || !LeaseProcessTests.waitForEveryShardHeld(members) {
            for member in members { member.stop() }
            throw HarnessError("no common map with 3 members: \(digests)\n\(members.map { $0.log() }.joined(separator: "\n"))")
        }
        return members
    }

    /// The map the nodes compute (defaults: 256 shards, 128 virtual nodes).
    static func primary(of key: String) throws -> String {
        let map = try ShardMap(members: ["node1", "node2", "node3"].compactMap(NodeID.init), numShards: 256, virtualNodes: 128, replicationFactor: 1)
        let hash = Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }
        return map.primary(ofShard: KeyHash.shard(of: hash, shardCount: 256)).name
    }

    static func value(_ prefix: String, _ i: Int) -> String { "\(prefix)-value-\(i)-\(i &* 7919 % 10_007)" }

    @Test(.hangBound) func tenThousandKeysReadTheSameThroughEveryNodeWithEveryClient() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-forwarding-io-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

        // redis-cli --pipe writes set A through node1, pipelined.
        var pipe = ""
        for i in 0..<Self.keyCount {
            let key = "a:\(i)", value = Self.value("a", i)
            pipe += "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n"
        }
        try pipe.write(toFile: directory + "/set-a.resp", atomically: true, encoding: .utf8)
        let written = try runTool("bash", ["-c", "redis-cli -h \(members[0].host) -p \(members[0].clientPort) --pipe < \(directory)/set-a.resp"])
        #expect(written.status == 0 && written.output.contains("errors: 0, replies: \(Self.keyCount)"), "\(written.output)")

        // redis-py writes set B through node2 and reads A and B through every node, pipelined.
        let script = """
        import sys, redis
        hosts = sys.argv[1:]
        def value(prefix, i): return "%s-value-%d-%d" % (prefix, i, (i * 7919) % 10007)
        n = \(Self.keyCount)
        host, port = hosts[1].split(":")
        client = redis.Redis(host=host, port=int(port), socket_timeout=30)
        p = client.pipeline(transaction=False)
        for i in range(n): p.set("b:%d" % i, value("b", i))
        assert all(r is True for r in p.execute()), "set b"
        for target in hosts:
            host, port = target.split(":")
            client = redis.Redis(host=host, port=int(port), socket_timeout=30, decode_responses=True)
            for prefix in ("a", "b"):
                p = client.pipeline(transaction=False)
                for i in range(n): p.get("%s:%d" % (prefix, i))
                got = p.execute()
                bad = [i for i in range(n) if got[i] != value(prefix, i)]
                assert not bad, "%s: %s wrong, first %s -> %r" % (target, prefix, bad[0], got[bad[0]])
            keys = ["a:%d" % i for i in range(0, 300)]
            assert client.mget(keys) == [value("a", i) for i in range(0, 300)], "mget through " + target
            assert client.exists(*keys) == 300, "exists through " + target
        print("all checks passed")
        """
        try script.write(toFile: directory + "/check.py", atomically: true, encoding: .utf8)
        let addresses = members.map { "\($0.host):\($0.clientPort)" }
        let python = try runTool("python3", [directory + "/check.py"] + addresses)
        #expect(python.status == 0 && python.output.contains("all checks passed"), "\(python.output)")

        // The binary client writes set C through node3 and reads A and C through every node, pipelined.
        let binaryWrites = WireBuffer()
        for i in 0..<Self.keyCount {
            BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: UInt64(i), key: Array("c:\(i)".utf8),
                                      value: Array(Self.value("c", i).utf8), ttlMs: 0, version: 0, into: binaryWrites)
        }
        let writer = try TestSocket(host: members[2].host, port: members[2].clientPort, timeoutSeconds: 30)
        try writer.send(binaryWrites.readableArray())
        let setReplies = try Self.readResponses(writer, count: Self.keyCount)
        #expect(setReplies.allSatisfy { $0.status == BinaryStatus.ok.rawValue }, "\(setReplies.first { $0.status != 0 }.map { "\($0)" } ?? "")")
        #expect(setReplies.map(\.requestID) == (0..<Self.keyCount).map(UInt64.init), "replies in request order")
        for member in members {
            for prefix in ["a", "c"] {
                let reads = WireBuffer()
                for i in 0..<Self.keyCount {
                    BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: UInt64(i), key: Array("\(prefix):\(i)".utf8),
                                              value: [], ttlMs: 0, version: 0, into: reads)
                }
                let socket = try TestSocket(host: member.host, port: member.clientPort, timeoutSeconds: 30)
                try socket.send(reads.readableArray())
                let replies = try Self.readResponses(socket, count: Self.keyCount)
                let wrong = (0..<Self.keyCount).filter { replies[$0].requestID != UInt64($0) || replies[$0].value != Array(Self.value(prefix, $0).utf8) }
                #expect(wrong.isEmpty, "\(member.name) \(prefix): \(wrong.count) wrong, first \(wrong.first.map { "\(replies[$0])" } ?? "")")
            }
        }

        // redis-cli through every node: every value of set C, 500 keys per
        // MGET (each split over the three nodes); one command at a time
        // would measure the machine's scheduling, not the cluster.
        var mgets = ""
        for start in stride(from: 0, to: Self.keyCount, by: 500) {
            mgets += "MGET " + (start..<(start + 500)).map { "c:\($0)" }.joined(separator: " ") + "\n"
        }
        try mgets.write(toFile: directory + "/mget-c.txt", atomically: true, encoding: .utf8)
        let expected = (0..<Self.keyCount).map { Self.value("c", $0) + "\n" }.joined()
        for member in members {
            let read = try runTool("bash", ["-c", "redis-cli -h \(member.host) -p \(member.clientPort) < \(directory)/mget-c.txt"])
            #expect(read.status == 0 && read.output == expected, "\(member.name): \(read.output.prefix(300))")
        }

        // DEL splits per node: 100 keys, about a third on each.
        let deleteKeys = (0..<100).map { "a:\($0)" }.joined(separator: " ")
        let deleted = try runTool("bash", ["-c", "redis-cli -h \(members[1].host) -p \(members[1].clientPort) DEL \(deleteKeys)"])
        #expect(deleted.output == "100\n", "\(deleted.output)")
        for member in members {
            let left = try runTool("bash", ["-c", "redis-cli -h \(member.host) -p \(member.clientPort) EXISTS \(deleteKeys) a:100"])
            #expect(left.output == "1\n", "\(member.name): \(left.output)")
        }

        // Each node forwarded to both others, and nothing failed.
        for member in members {
            let metrics = member.get("/metrics") ?? ""
            for other in members where other.name != member.name {
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("aegis_forwarded_requests_total{peer=\"\(other.name)\"}") }
                #expect((line?.split(separator: " ").last.flatMap { Int($0) } ?? 0) > 1000, "\(member.name) → \(other.name): \(line ?? "no line")")
            }
            #expect(!metrics.split(separator: "\n").contains { $0.hasPrefix("aegis_forward_errors_total") && !$0.hasSuffix(" 0") },
                    "\(member.name): \(metrics.split(separator: "\n").filter { $0.hasPrefix("aegis_forward_errors_total") })")
        }
    }

    static func readResponses(_ socket: TestSocket, count: Int) throws -> [BinaryResponse] {
        var received: [UInt8] = []
        var offset = 0
        var responses: [BinaryResponse] = []
        while responses.count < count {
            let chunk = try socket.receiveSome()
            if chunk.isEmpty { throw HarnessError("closed after \(responses.count) responses") }
            received.removeFirst(offset)
            offset = 0
            received += chunk
            while let response = try received.withUnsafeBytes({ try BinaryResponseParser.parse(UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
                responses.append(response)
                offset += response.frameLength
            }
        }
        return responses
    }

    /// A forwarded request for a shard the receiving node is not primary
    /// for goes on to the holder its routing names, and its reply comes
    /// back the same way; one passed on `Reactor.maxHops` times already is
    /// answered with a retryable error naming the owner, never passed on
    /// again. The test
    /// plays a peer: it says hello on node1's gossip port and sends batches;
    /// node1 answers on a link it dials back.
    @Test(.hangBound) func aForwardedRequestForAShardTheNodeDoesNotOwnGoesOnUpToTwiceThenIsRefusedWithTheOwner() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        let key = try (0..<1000).map { "k\($0)" }.first { try Self.primary(of: $0) == "node2" }!
        let hash = Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }
        let shard = KeyHash.shard(of: hash, shardCount: 256)
        let written = try runTool("redis-cli", ["-h", members[1].host, "-p", String(members[1].clientPort), "SET", key, "held-by-node2"])
        #expect(written.output == "OK\n", "\(written.output)")

        let listenPort = try freePort(on: "127.0.0.14")
        let listener = try PeerListener(host: "127.0.0.14", port: listenPort)
        let peer = try RawPeer(port: members[0].gossipPort, host: members[0].host)
        let hello = PeerHello(lane: .bulk, numShards: 256, virtualNodes: 128, nodeID: "node9",
                              gossipAddress: "127.0.0.14:\(listenPort)", clientAddress: "127.0.0.14:1")
        peer.send(hello.frame(GossipAuthenticator(secret: "test-secret")))

        // A GET in each protocol, as a first hop (0) or as one relayed already (1 or more).
        func send(hops: UInt8) {
            let resp = Array("*2\r\n$3\r\nGET\r\n$\(key.utf8.count)\r\n\(key)\r\n".utf8)
            let binary = WireBuffer()
            BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: 77, key: Array(key.utf8), value: [], ttlMs: 0, version: 0, into: binary)
            var batch: [UInt8] = [ForwardingRelay.batchMarker]
            for (sequence, (wire, payload)) in [(WireKind.resp2, resp), (.binary, binary.readableArray())].enumerated() {
                let header = ForwardHeader(kind: .request, wire: wire, connectionIndex: 5, connectionGeneration: 1, slotSequence: UInt64(sequence),
                                           payloadLength: payload.count, route: ForwardRoute(originNode: 0, originReactor: 0, shard: UInt32(shard)),
                                           hops: hops)
                var record = [UInt8](repeating: 0, count: ForwardHeader.size)
                record.withUnsafeMutableBytes { header.store(to: $0.baseAddress!) }
                withUnsafeBytes(of: UInt32(record.count + payload.count)) { batch += $0 }
                batch += record + payload
            }
            peer.sendFrame(batch)
        }
        func replies(in frame: [UInt8]) throws -> [(ForwardHeader, [UInt8])] {
            #expect(frame.first == ForwardingRelay.batchMarker)
            var offset = 1
            var payloads: [(ForwardHeader, [UInt8])] = []
            try frame.withUnsafeBytes { bytes in
                while offset < bytes.count {
                    let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                    guard let header = ForwardHeader.loadChecked(from: UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)...])) else { throw HarnessError("bad record") }
                    payloads.append((header, Array(bytes[(offset + 4 + ForwardHeader.size)..<(offset + 4 + length)])))
                    offset += 4 + length
                }
            }
            return payloads
        }
        // node1's routing names node2 as the shard's holder once node2's
        // lease round reached it; until then it has only the map's guess,
        // and a first hop waits on the shard's reactor for the holder
        // (Reactor+Parking) instead of being refused. Sent again if it
        // was refused all the same (it waited out the parking limit).
        var refusedFirstHops = 0
        var relayed: [(ForwardHeader, [UInt8])] = []
        // The two replies of a send, whether they come back in one batch
        // or two (each request waits, or is relayed, on its own).
        func bothReplies(afterHello: Bool) throws -> [(ForwardHeader, [UInt8])] {
            var frames = try listener.frames(count: afterHello ? 2 : 1, seconds: 20)
            var collected = try replies(in: frames.last!)
            while collected.count < 2 {
                frames = try listener.frames(count: 1, seconds: 20)
                collected += try replies(in: frames[0])
            }
            return collected
        }
        for attempt in 0..<50 {
            send(hops: 0)
            // node1 dials back with its hello, then the reply batch.
            relayed = try bothReplies(afterHello: attempt == 0)
            guard relayed.contains(where: { $0.0.wire == .resp2 && $0.1.starts(with: Array("-TRYAGAIN".utf8)) }) else { break }
            refusedFirstHops += 1
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(refusedFirstHops == 0, "a first hop waits for the holder rather than being refused")
        #expect(relayed.count == 2)
        #expect(relayed.allSatisfy { $0.0.kind == .reply && $0.0.route.shard == UInt32(shard) && $0.0.connectionIndex == 5 })
        let relayedRESP = relayed.first { $0.0.wire == .resp2 }.map { String(decoding: $0.1, as: UTF8.self) }
        #expect(relayedRESP == "$13\r\nheld-by-node2\r\n", "\(relayedRESP ?? "no RESP reply")")
        let relayedBinary = try relayed.first { $0.0.wire == .binary }.flatMap { reply in try reply.1.withUnsafeBytes { try BinaryResponseParser.parse($0) } }
        #expect(relayedBinary?.status == BinaryStatus.ok.rawValue && relayedBinary?.requestID == 77, "\(String(describing: relayedBinary))")
        #expect(relayedBinary.map { Array($0.value) } == Array("held-by-node2".utf8))

        // Passed on once already, it goes on a second time: the views of
        // three nodes may disagree for a moment while a node hands off.
        send(hops: 1)
        let relayedAgain = try bothReplies(afterHello: false)
        #expect(relayedAgain.count == 2)
        #expect(relayedAgain.first { $0.0.wire == .resp2 }.map { String(decoding: $0.1, as: UTF8.self) } == "$13\r\nheld-by-node2\r\n")

        send(hops: Reactor.maxHops)
        let refused = try bothReplies(afterHello: false)
        #expect(refused.count == 2)
        #expect(refused.allSatisfy { $0.0.kind == .reply && $0.0.route.shard == UInt32(shard) })
        let text = refused.first { $0.0.wire == .resp2 }.map { String(decoding: $0.1, as: UTF8.self) } ?? ""
        #expect(text.hasPrefix("-TRYAGAIN shard \(shard) is owned by node2 (\(members[1].host):\(members[1].clientPort))"), "\(text)")
        let redirect = try refused.first { $0.0.wire == .binary }.flatMap { reply in try reply.1.withUnsafeBytes { try BinaryResponseParser.parse($0) } }
        #expect(redirect?.status == BinaryStatus.redirect.rawValue && redirect?.requestID == 77, "\(String(describing: redirect))")
        #expect(redirect?.address == "\(members[1].host):\(members[1].clientPort)")

        // Each is counted where it was decided, and nowhere else; the two
        // refused at the hop limit apart from those that found no holder.
        var counts: (relayed: Int?, refused: Int?, atHopLimit: Int?)
        _ = waitUntil(seconds: 10) {
            counts = (RollingRestartProcessTests.metric(members[0], "aegis_forward_relayed_total"),
                      RollingRestartProcessTests.metric(members[0], "aegis_forward_not_owner_total"),
                      RollingRestartProcessTests.metric(members[0], "aegis_forward_hop_limit_total"))
            return counts == (4, 2 + 2 * refusedFirstHops, 2)
        }
        let described = "node1 relayed \(counts.relayed.map(String.init) ?? "missing"), refused \(counts.refused.map(String.init) ?? "missing"), "
            + "\(counts.atHopLimit.map(String.init) ?? "missing") at the hop limit"
        #expect(counts == (4, 2 + 2 * refusedFirstHops, 2), "\(described)")
        for member in members.dropFirst() {
            #expect(RollingRestartProcessTests.metric(member, "aegis_forward_not_owner_total") == 0
                    && RollingRestartProcessTests.metric(member, "aegis_forward_relayed_total") == 0)
        }
    }

    /// A peer that is gone: writes for its shards get a clear error (or,
    /// once a new holder took the shard, OK) within a bounded time, and the
    /// client's other requests are answered. Reads of its shards are
    /// answered from the copies left (CopyReadsProcessTests).
    @Test(.hangBound) func aCrashedPeerGivesPromptErrorsAndOtherKeysStillWork() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        let keys = (0..<2000).map { "p\($0)" }
        let onNode3 = try keys.filter { try Self.primary(of: $0) == "node3" }.prefix(20)
        let onNode2 = try keys.filter { try Self.primary(of: $0) == "node2" }.prefix(20)
        let node1 = "redis-cli -h \(members[0].host) -p \(members[0].clientPort)"
        for key in onNode3 + onNode2 {
            #expect(try runTool("bash", ["-c", "\(node1) SET \(key) v"]).output == "OK\n")
        }
        members[2].crash()
        let started = Date()
        // One connection, pipelined: writes of node3's keys and reads of node2's alternate.
        let commands = zip(onNode3, onNode2).map { "SET \($0) w\nGET \($1)\n" }.joined()
        let result = try runTool("bash", ["-c", "timeout 30 \(node1)"], input: commands)
        let elapsed = Date().timeIntervalSince(started)
        #expect(result.status == 0 && elapsed < 15, "took \(elapsed) s: \(result.output)")
        // redis-cli prints an error reply, then an empty line; a nil reply as an empty line.
        var lines: [Substring] = []
        var afterError = false
        for line in result.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if afterError && line.isEmpty { afterError = false; continue }
            afterError = line.hasPrefix("ERR") || line.hasPrefix("TRYAGAIN")
            lines.append(line)
        }
        #expect(lines.count == 40, "\(result.output)")
        for (i, line) in lines.enumerated() {
            if i % 2 == 1 {
                #expect(line == "v", "node2's key \(i / 2): \(line)")
            } else {
                // `forwarding failed` when the request was on the link as
                // it broke (it may have run); TRYAGAIN when no link was up
                // to send it on, or node3's breaker opened (it ran nowhere).
                #expect(line.hasPrefix("ERR forwarding failed")
                            || line.hasPrefix("TRYAGAIN ") && line.contains("node3") && line.hasSuffix("the request was not sent; retry")
                            || line == "OK",
                        "node3's key \(i / 2): \(line)")
            }
        }
    }

    @Test(.hangBound) func manyFailuresToACrashedPeerLeaveForwardingToTheOthersOpen() throws {
        let members = try Self.startCluster()
        defer { for member in members { member.stop() } }
        let keys = (0..<2000).map { "q\($0)" }
        let onNode3 = try keys.filter { try Self.primary(of: $0) == "node3" }.prefix(40)
        let onNode2 = try keys.filter { try Self.primary(of: $0) == "node2" }.prefix(10)
        let node1 = "redis-cli -h \(members[0].host) -p \(members[0].clientPort)"
        for key in onNode2 { #expect(try runTool("bash", ["-c", "\(node1) SET \(key) v"]).output == "OK\n") }
        members[2].crash()
        // One connection per request: each failure is its own batch, so
        // node3's breaker (and, before the fix, 'forwarding') sees 40
        // failures in its window, twice breaker_min_calls.
        let failing = onNode3.map { "\(node1) GET \($0)" }.joined(separator: "; ")
        let failures = try runTool("bash", ["-c", "timeout 60 bash -c '\(failing)'"])
        #expect(failures.status == 0 && !failures.output.contains("\nv\n"), "\(failures.output)")
        // node2 is healthy: its keys are still forwarded to it.
        for key in onNode2 {
            #expect(try runTool("bash", ["-c", "\(node1) GET \(key)"]).output == "v\n", "node2's key \(key)")
        }
        let status = try #require(members[0].get("/admin/circuit-breaker/status"))
        #expect(try runTool("jq", ["-r", "[.breakers[] | select(.service == \"forwarding\") | .state] | join(\",\")"], input: status).output == "closed\n",
                "\(status)")

        // The operator's switch (runbook, "Circuit Breaker Trip"): with
        // 'forwarding' open, node1 sends nothing on, and says so with the
        // retryable refusal, so a client knows the write ran nowhere.
        let admin = "http://\(members[0].host):\(members[0].healthPort)/admin/circuit-breaker"
        #expect(try runTool("curl", ["-s", "-X", "POST", "\(admin)/trip?service=forwarding"]).status == 0)
        let key = onNode2.first!
        let refused = try runTool("bash", ["-c", "\(node1) SET \(key) written-while-open"]).output
        #expect(refused.trimmingCharacters(in: .newlines) == "TRYAGAIN the circuit breaker for node2 (or 'forwarding') is open, the request was not sent; retry",
                "\(refused)")
        let onOwner = "redis-cli -h \(members[1].host) -p \(members[1].clientPort)"
        #expect(try runTool("bash", ["-c", "\(onOwner) GET \(key)"]).output == "v\n", "the refused write ran nowhere")
        #expect(try runTool("curl", ["-s", "-X", "POST", "\(admin)/reset?service=forwarding"]).status == 0)
        #expect(try runTool("bash", ["-c", "\(node1) SET \(key) written-after-reset"]).output == "OK\n")
        #expect(try runTool("bash", ["-c", "\(onOwner) GET \(key)"]).output == "written-after-reset\n")
    }
}

/// Accepts one connection and reads length-prefixed frames from it, frame
/// by frame across calls (the node keeps the link it dialled).
final class PeerListener {
    let fd: Int32
    private var connection: Int32 = -1
    private var buffer: [UInt8] = []

    init(host: String, port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 4) == 0 else { throw HarnessError("listen on \(host):\(port) failed: errno \(errno)") }
    }

    deinit {
        if connection >= 0 { Glibc.close(connection) }
        Glibc.close(fd)
    }

    /// The payloads (after each 4-byte big-endian length) of the next `count` frames.
    func frames(count: Int, seconds: Int) throws -> [[UInt8]] {
        if connection < 0 {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(seconds * 1000)) > 0 else { throw HarnessError("nobody dialled back") }
            connection = accept(fd, nil, nil)
            guard connection >= 0 else { throw HarnessError("accept failed") }
        }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var frames: [[UInt8]] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while frames.count < count {
            if buffer.count >= 4 {
                let length = buffer.prefix(4).reduce(0) { $0 << 8 | Int($1) }
                if buffer.count >= 4 + length {
                    frames.append(Array(buffer[4..<(4 + length)]))
                    buffer.removeFirst(4 + length)
                    continue
                }
            }
            let got = recv(connection, &chunk, chunk.count, 0)
            guard got > 0 else { throw HarnessError("connection ended after \(frames.count) frames") }
            buffer += chunk[0..<got]
        }
        return frames
    }
}
