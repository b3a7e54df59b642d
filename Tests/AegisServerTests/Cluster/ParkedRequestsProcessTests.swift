import AegisProtocol
@testable import AegisServer
import Foundation
import Glibc
import Testing

/// A request that reaches its shard's primary while that node holds no
/// lease for the shard waits for the lease, or for the routing to name the
/// holder, instead of being answered TRYAGAIN (Reactor+Parking.swift).
/// Real processes, replication_factor 3, write_quorum 2.
@Suite(.serialized) struct ParkedRequestsProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// Two reactors (the harness's default is one): a request waits on the
    /// reactor that owns its shard, wherever its client is connected. A
    /// lease of 12 s outlasts the holders' pause below.
    static let arguments = ["--reactors", "2", "--lease-duration", "12s", "--write-quorum", "2", "--replication-batch-timeout", "0s",
                            "--wal-mode", "off"]

    /// A cluster whose node3 was stopped and started again while node1 and
    /// node2, which hold every lease, are paused (SIGSTOP): node3 serves
    /// clients but can hear no holder. Returns once its client port takes
    /// connections; the caller resumes the holders and stops all (`resumeAndStop`).
    static func node3RestartedBehindPausedHolders(_ name: String) throws -> [Member] {
        let members = try LeaseProcessTests.startCluster(directory: try PeerTLSProcessTests.temporaryDirectory(name), extra: arguments)
        let node3 = members[2]
        #expect(node3.stop() == 0, "SIGTERM stops node3 cleanly:\n\(node3.log())")
        for holder in members.prefix(2) { holder.signal(SIGSTOP) }
        do {
            try node3.start(seeds: members.map(\.gossipAddress), extra: arguments)
        } catch {
            resumeAndStop(members)
            throw error
        }
        #expect(waitUntil(seconds: 30) { (try? TestSocket(host: node3.host, port: node3.clientPort)) != nil }, "\(node3.log())")
        return members
    }

    /// Resumes the paused holders (SIGCONT), then stops every node.
    static func resumeAndStop(_ members: [Member]) {
        for member in members { member.signal(SIGCONT) }
        for member in members { member.stop() }
    }

    /// Writes sent through a node that has just restarted, before it could
    /// hear from any holder (node1 and node2 are paused with SIGSTOP while it
    /// starts and the writes go out), in the binary protocol and in RESP,
    /// each in one pipeline with a read of each key after its write, wait,
    /// and are all acknowledged (none refused) once the holders resume, each read sees its own connection's write before it, and
    /// every node holds every write afterwards. Without parking, node3 (alone
    /// in its map, so primary of every shard, and holding no lease) refused
    /// every write with `TRYAGAIN ... no lease holder here`.
    @Test(.hangBound) func writesThroughANodeJustRestartedWaitForTheirShardsHolderAndAreNeverRefused() throws {
        let members = try Self.node3RestartedBehindPausedHolders("parked")
        defer { Self.resumeAndStop(members) }
        let node3 = members[2]
        let socket = try TestSocket(host: node3.host, port: node3.clientPort, timeoutSeconds: 30)

        let binaryKeys = (0..<100).map { "parked-binary:\($0)" }
        let buffer = WireBuffer()
        for (i, key) in binaryKeys.enumerated() {
            BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: UInt64(2 * i), key: Array(key.utf8),
                                      value: Array(("v-" + key).utf8), ttlMs: 0, version: 0, into: buffer)
            BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: UInt64(2 * i + 1), key: Array(key.utf8),
                                      value: [], ttlMs: 0, version: 0, into: buffer)
        }
        try socket.send(buffer.readableArray())
        let keys = (0..<300).map { "parked:\($0)" }
        let commands = keys.flatMap { [["SET", $0, "v-" + $0], ["GET", $0]] }
        let (host, port) = (node3.host, node3.clientPort)
        let resp = BackgroundWork { try QuorumProcessTests.run(host: host, port: port, name: "node3", commands, pipelined: true) }
        // Time for the interpreter to start and send its pipeline; nothing
        // is answered meanwhile: no holder can be heard.
        Thread.sleep(forTimeInterval: 2)
        let waiting = RollingRestartProcessTests.metric(node3, "aegis_lease_parked_requests") ?? 0
        for holder in members.prefix(2) { holder.signal(SIGCONT) }

        let responses = try readBinaryResponses(socket, count: 2 * binaryKeys.count)
        #expect(responses.map(\.requestID) == (0..<UInt64(2 * binaryKeys.count)).map { $0 })
        let binarySets = stride(from: 0, to: responses.count, by: 2).map { responses[$0] }
        let binaryGets = stride(from: 1, to: responses.count, by: 2).map { responses[$0] }
        #expect(binarySets.allSatisfy { $0.status == BinaryStatus.ok.rawValue }, "\(binarySets.filter { $0.status != BinaryStatus.ok.rawValue }.prefix(3).map(\.error))")
        #expect(binaryGets.map { String(decoding: $0.value, as: UTF8.self) } == binaryKeys.map { "v-" + $0 })

        let replies = try resp.result()
        let writes = stride(from: 0, to: replies.count, by: 2).map { replies[$0] }
        let reads = stride(from: 1, to: replies.count, by: 2).map { replies[$0] }
        #expect(writes.allSatisfy { $0 == "True" }, "every write acknowledged, none refused: \(Set(writes).prefix(5))")
        #expect(reads == keys.map { "v-" + $0 }, "each read saw the write before it: \(zip(keys, reads).filter { $0.1 != "v-" + $0.0 }.prefix(5))")
        // Requests waited while the holders were paused: writes for the
        // lease, reads behind their key's write. Not all of them: a
        // connection is read no further while what it is owed is past its
        // bounds (Connection.isBackpressured).
        #expect(waiting > 0, "requests waiting while the holders were paused: \(waiting)")

        let parked = RollingRestartProcessTests.metric(node3, "aegis_lease_requests_parked_total") ?? 0
        #expect(parked >= waiting, "\(parked) parked in all, \(waiting) waiting at once")
        #expect(RollingRestartProcessTests.metric(node3, "aegis_lease_parked_timed_out_total") == 0)
        #expect(RollingRestartProcessTests.metric(node3, "aegis_lease_parked_requests") == 0, "nothing waits once answered")
        let info = try QuorumProcessTests.run(node3, [["INFO", "replication"]]).joined()
        // redis-py hands INFO back parsed, as a dict.
        #expect(info.contains("'lease_requests_parked': \(parked)"), "INFO replication counts them too: \(info)")

        let everyKey = keys + binaryKeys
        for member in members {
            #expect(waitUntil(seconds: 30) { (try? RollingRestartProcessTests.lacking(everyKey, on: member).isEmpty) == true },
                    "\(member.name) reads every acknowledged write: \((try? RollingRestartProcessTests.lacking(everyKey, on: member).prefix(5)).map { "\($0)" } ?? "")")
        }
    }

    /// Connections each sending `SET` of three 100 KB values to keys of one
    /// shard, then a `GET` of the last, in one pipeline; prints each
    /// connection's replies (an error as "error: <text>").
    static let roomFiller = """
    import json, sys, threading, redis
    host, port, keys = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    value = "x" * 100000
    results = [None] * (len(keys) // 3)
    def text(r):
        return "error: " + str(r) if isinstance(r, Exception) else str(r)
    def one(i):
        client = redis.Redis(host=host, port=port, socket_timeout=30)
        p = client.pipeline(transaction=False)
        mine = keys[3 * i:3 * i + 3]
        for key in mine: p.set(key, value)
        p.strlen(mine[-1])
        results[i] = [text(r) for r in p.execute(raise_on_error=False)]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(results))
    """

    /// The waiting room is bounded: 4 MiB of request bytes per reactor.
    /// Twenty clients write 100 KB values to one shard of a restarted node
    /// that cannot hear any holder: writes wait until that much waits; the
    /// ones after them, and a read behind them, are refused at once with a
    /// TRYAGAIN that says why. Those that waited are acknowledged once the
    /// holders resume, a read answered behind an acknowledged write sees it,
    /// and every node holds them.
    @Test(.hangBound) func theWaitingRoomIsBoundedAndWhatDoesNotFitIsRefusedAtOnce() throws {
        let members = try Self.node3RestartedBehindPausedHolders("parked-room")
        defer { Self.resumeAndStop(members) }
        let node3 = members[2]

        let shard = LeaseProcessTests.shard(of: "room:0")
        let keys = Array((0..<50_000).lazy.map { "room:\($0)" }.filter { LeaseProcessTests.shard(of: $0) == shard }.prefix(60))
        let keysJSON = String(decoding: try JSONSerialization.data(withJSONObject: keys), as: UTF8.self)
        let (host, port) = (node3.host, node3.clientPort)
        let filler = BackgroundWork { try runTool("python3", ["-c", Self.roomFiller, host, String(port), keysJSON]).output }
        Thread.sleep(forTimeInterval: 3)
        let waiting = RollingRestartProcessTests.metric(node3, "aegis_lease_parked_requests") ?? 0
        for holder in members.prefix(2) { holder.signal(SIGCONT) }
        let output = try filler.result()
        let perConnection = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String]], "\(output)")
        let full = "has requests waiting for its lease on this node and no room for more"
        let writes = perConnection.flatMap { $0.prefix(3) }
        let acknowledged = writes.count { $0 == "True" }
        #expect(writes.allSatisfy { $0 == "True" || $0.contains(full) }, "each write waited or was refused for want of room: \(Set(writes))")
        #expect(acknowledged > 0 && acknowledged < writes.count, "\(acknowledged) of \(writes.count) acknowledged")
        #expect(acknowledged * 100_000 <= ParkedRequests.limitBytes + 100_100, "no more than the room held waited: \(acknowledged)")
        for replies in perConnection {
            let read = replies[3]
            // A read is refused while the room is full; answered, it sees
            // the write before it if that was acknowledged, and nothing if
            // that was refused. Never a value from before its own write.
            #expect(read.contains(full) || read == (replies[2] == "True" ? "100000" : "0"),
                    "a read answered in its place: \(replies.map { $0.prefix(80) })")
        }
        #expect(waiting >= acknowledged, "\(waiting) waiting while the holders were paused, \(acknowledged) writes acknowledged")
        let acknowledgedKeys = zip(keys, writes).filter { $0.1 == "True" }.map(\.0)
        for member in members {
            #expect(waitUntil(seconds: 30) {
                (try? QuorumProcessTests.run(member, acknowledgedKeys.map { ["STRLEN", $0] }, pipelined: true))?.allSatisfy { $0 == "100000" } == true
            }, "\(member.name) holds every acknowledged write")
        }
    }
}
