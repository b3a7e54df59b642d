@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Glibc
import Synchronization
import Testing

/// Read quorums and quorum waits that outlive their primary (issue 12),
/// with real processes on 127.0.0.11-14, replication_factor 3 (the default).
/// A follower made stale is one restarted empty (kill -9, no log): the
/// primary's bookkeeping still counts it as holding what it acknowledged
/// before, and no shard stream refills it (docs/replication.md), so only a
/// read repair brings it the key back.
@Suite(.serialized) struct ReadQuorumProcessTests {
    typealias Member = ClusterProcessTests.Member

    static func map(_ names: [String]) throws -> ShardMap {
        try ShardMap(members: names.compactMap(NodeID.init), numShards: 256, virtualNodes: 128, replicationFactor: 3)
    }

    static func shard(of key: String) -> Int {
        KeyHash.shard(of: Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }, shardCount: 256)
    }

    /// The first key `prefix:<i>` for which `accept(shard)` holds.
    static func key(_ prefix: String, where accept: (Int) -> Bool) -> String {
        var i = 0
        while !accept(shard(of: "\(prefix):\(i)")) { i += 1 }
        return "\(prefix):\(i)"
    }

    static func metric(_ member: Member, _ name: String) -> Int { QuorumProcessTests.metric(member, name) ?? 0 }

    /// A counter reaches `value` on `member` (the reactors publish their counters on their own schedule).
    static func awaitMetric(_ member: Member, _ name: String, atLeast value: Int) -> Int {
        var seen = 0
        _ = waitUntil(seconds: 10) {
            seen = metric(member, name)
            return seen >= value
        }
        return seen
    }

    /// A cluster at read_quorum 2 whose follower timings keep a node that
    /// restarts (`restartEmpty`) in the map.
    static func startClusterReadingAtTwo() throws -> [Member] {
        try QuorumProcessTests.startCluster(writeTimeout: "5s", suspectTimeout: "10s", deadTimeout: "12s", extra: ["--read-quorum", "2"])
    }

    /// A cluster at read_quorum 3 whose reads time out after 1 s.
    static func startClusterReadingAtThree(suspectTimeout: String, deadTimeout: String) throws -> [Member] {
        try QuorumProcessTests.startCluster(writeTimeout: "1s", suspectTimeout: suspectTimeout, deadTimeout: deadTimeout, extra: ["--read-quorum", "3"])
    }

    /// kill -9 and start again without a log: the node holds nothing, and
    /// the map never dropped it (suspect_timeout 10 s, or `flags`' own).
    static func restartEmpty(_ member: Member, of members: [Member], waitForMap: Bool = true, flags: [String] = [
        "--write-quorum", "2", "--write-timeout", "5s", "--suspect-timeout", "10s", "--dead-timeout", "12s", "--read-quorum", "2",
    ]) throws {
        member.crash()
        try member.start(seeds: members.map(\.gossipAddress), extra: flags)
        if waitForMap { #expect(ReplicationProcessTests.waitForMap(members), "\(member.name) is back in the same map") }
    }

    /// A key whose primary is node1 and whose follower asked at R = 2 is
    /// node2, which is also its primary once node1 is gone.
    static func keyReadFromNode2(_ prefix: String) throws -> String {
        let all = try map(["node1", "node2", "node3"])
        let withoutNode1 = try map(["node2", "node3"])
        return key(prefix) {
            all.primary(ofShard: $0).name == "node1" && all.followers(ofShard: $0).first?.name == "node2"
                && withoutNode1.primary(ofShard: $0).name == "node2"
        }
    }

    /// Runs `commands` on `member` until it answers `expected` (a probe or a
    /// repair lost while a link to a restarted node was coming back is sent
    /// again by the next read); the last replies.
    static func readUntil(_ member: Member, _ commands: [[String]], answer expected: ([String]) -> Bool) -> [String] {
        var replies: [String] = []
        _ = waitUntil(seconds: 30) {
            replies = (try? QuorumProcessTests.run(member, commands)) ?? []
            return expected(replies)
        }
        return replies
    }

    @Test(.hangBound) func aReadAtTwoRepairsTheFollowerItAskedThatRestartedEmpty() throws {
        let members = try Self.startClusterReadingAtTwo()
        defer { for member in members { member.stop() } }
        // node1 is primary, node2 the follower a read at R = 2 asks, and the primary once node1 is gone.
        let key = try Self.keyReadFromNode2("rq")
        #expect(try QuorumProcessTests.run(members[0], [["SET", key, "kept"], ["WAIT", "2", "5000"]]) == ["True", "2"])
        #expect(try QuorumProcessTests.run(members[0], [["GET", key]]) == ["kept"], "all three hold it: nothing to repair")
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_waits_total", atLeast: 1) == 1)
        #expect(Self.metric(members[0], "aegis_read_repairs_sent_total") == 0)

        // node2 comes back empty; the map never dropped it (suspect_timeout 10 s).
        try Self.restartEmpty(members[1], of: members)

        // The read asks node2, which answers that it has nothing: the primary's
        // value is the answer, and node2 gets the record.
        var reply: [String] = []
        #expect(waitUntil(seconds: 30) {
            reply = (try? QuorumProcessTests.run(members[0], [["GET", key]])) ?? []
            return reply == ["kept"]
        }, "\(reply)")
        // (A probe or repair lost while node1's link to node2 was coming back is sent again by the next read.)
        let repairs = Self.awaitMetric(members[0], "aegis_read_repairs_sent_total", atLeast: 1)
        #expect(repairs >= 1)
        #expect(Self.awaitMetric(members[1], "aegis_read_repairs_applied_total", atLeast: 1) == 1, "applied once: a second copy is not newer")

        // Repaired: the next read finds node2 as new as node1, through any node.
        let waits = Self.metric(members[0], "aegis_read_quorum_waits_total")
        #expect(try QuorumProcessTests.run(members[2], [["GET", key]]) == ["kept"], "a read forwarded to the primary consults R too")
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_waits_total", atLeast: waits + 1) == waits + 1)
        #expect(Self.metric(members[0], "aegis_read_repairs_sent_total") == repairs, "nothing left to repair")

        // node1 gone: node2 is the primary. It answers from its own copy (the
        // repaired one), and node3, asked at R = 2, is as new: no repair either way.
        members[0].crash()
        #expect(ReplicationProcessTests.waitForMap([members[1], members[2]]), "node2 and node3 agree without node1")
        #expect(waitUntil(seconds: 30) {
            reply = (try? QuorumProcessTests.run(members[1], [["GET", key]])) ?? []
            return reply == ["kept"]
        }, "\(reply)")
        #expect(Self.metric(members[1], "aegis_read_repairs_applied_total") == 1, "node2 needed nothing from node3")
        #expect(Self.metric(members[1], "aegis_read_repairs_sent_total") == 0, "node3 was not stale")
    }

    @Test(.hangBound) func aReadAtThreeWithOneReplicaPausedErrorsSayingHowManyAnswered() throws {
        let members = try Self.startClusterReadingAtThree(suspectTimeout: "10s", deadTimeout: "12s")
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { member.stop() }
        }
        let key = try QuorumProcessTests.keys("rp", primary: "node1", count: 1)[0]
        #expect(try QuorumProcessTests.run(members[0], [["SET", key, "v"], ["GET", key]]) == ["True", "v"])

        members[2].signal(SIGSTOP)
        // W = 2 is still reached; R = 3 is not. The GET behind it on the connection still gets its answer.
        let replies = try QuorumProcessTests.run(members[0], [["SET", key, "w"], ["GET", key], ["PING"]])
        #expect(replies.count == 3 && replies[0] == "True" && replies[2] == "True", "\(replies)")
        let refusal = replies.count == 3 ? replies[1] : ""
        #expect(refusal.contains("read_quorum 3 not reached: only 2 of 3 replicas of shard \(Self.shard(of: key)) answered within write_timeout"),
                "\(replies)")
        #expect(refusal.contains("may be retried"), "\(replies)")
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_timeouts_total", atLeast: 1) == 1)
        var info = ""
        _ = waitUntil(seconds: 10) {
            info = (try? QuorumProcessTests.run(members[0], [["INFO", "replication"]]))?.first ?? ""
            return info.contains("'read_quorum_timeouts': 1")
        }
        // redis-py gives INFO back as a dict.
        #expect(info.contains("'read_quorum': 3") && info.contains("'read_quorum_timeouts': 1"), "\(info)")

        members[2].signal(SIGCONT)
        var reply: [String] = []
        #expect(waitUntil(seconds: 30) {
            reply = (try? QuorumProcessTests.run(members[0], [["GET", key]])) ?? []
            return reply == ["w"]
        }, "all three answer again: \(reply)")
    }

    /// Reads held for R = 2 on every node (some forwarded), MGET's keys
    /// included, between writes held for W = 2: every connection's replies
    /// keep the order of its requests, and each read sees the write before it.
    @Test(.hangBound) func pipelinedReadsAndWritesAtTwoKeepTheirOrder() throws {
        let members = try QuorumProcessTests.startCluster(writeTimeout: "10s", extra: ["--read-quorum", "2"])
        defer { for member in members { member.stop() } }
        var commands: [[String]] = []
        var expected: [String] = []
        for i in 0..<120 {
            let key = "o:\(i)"
            commands += [["SET", key, "v\(i)"], ["GET", key], ["APPEND", key, "+"], ["MGET", key, "o:\(i / 2)", "absent:\(i)"], ["GET", key]]
            expected += ["True", "v\(i)", String("v\(i)+".utf8.count), "['v\(i)+', 'v\(i / 2)+', None]", "v\(i)+"]
        }
        let replies = try QuorumProcessTests.run(members[1], commands, pipelined: true)
        let wrong = zip(replies, expected).enumerated().filter { $0.element.0 != $0.element.1 }
        #expect(replies.count == expected.count && wrong.isEmpty, "first differences: \(wrong.prefix(5))")
        for member in members {
            #expect(Self.awaitMetric(member, "aegis_read_quorum_waits_total", atLeast: 1) > 0, "\(member.name) held reads")
            #expect(Self.metric(member, "aegis_read_quorum_timeouts_total") == 0)
        }
    }

    /// A read at R = 2 waits for the follower it asked, which is paused
    /// and then killed: when the link to it breaks, the probe goes to the
    /// shard's other follower and the read is answered. Before, a probe
    /// lost with its link left the read waiting until write_timeout (30 s
    /// by default; 5 s here) and answered TRYAGAIN; under load every later
    /// reply of that client connection waited behind it (12,800 of 25,000
    /// requests timed out in a `perf/shard-move --scenario failure
    /// --read-quorum 2` run).
    @Test(.hangBound) func aReadWhoseAskedFollowerDiesIsAnsweredByTheOtherFollower() throws {
        let members = try Self.startClusterReadingAtTwo()
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { member.stop() }
        }
        // node1 is primary, node2 the follower a read at R = 2 asks first.
        let key = try Self.keyReadFromNode2("lost-probe")
        #expect(try QuorumProcessTests.run(members[0], [["SET", key, "kept"], ["WAIT", "2", "5000"], ["GET", key]]) == ["True", "2", "kept"])
        let askedAgain = Self.metric(members[0], "aegis_read_probes_asked_again_total")

        members[1].signal(SIGSTOP)
        let host = members[0].host, port = members[0].clientPort, name = members[0].name
        let read = BackgroundWork { try QuorumProcessTests.run(host: host, port: port, name: name, [["GET", key]]) }
        Thread.sleep(forTimeInterval: 0.5)  // the probe is on node2's link, unanswered
        members[1].crash()
        #expect(try read.result() == ["kept"], "answered by node3 once node2's link broke")
        #expect(Self.awaitMetric(members[0], "aegis_read_probes_asked_again_total", atLeast: askedAgain + 1) == askedAgain + 1)
        #expect(Self.metric(members[0], "aegis_read_quorum_timeouts_total") == 0)
    }

    /// node1 writes keys as their primary (its log holds them), stops
    /// (SIGTERM: its shards go to node2 and node3), and every key is
    /// deleted through the others, whose tombstones go once both have the
    /// delete. node1 starts again from its log, its copies holding the old
    /// values until the holders' streams replace them, while reads at R = 2
    /// run through node2 and node3 and ask node1 among others. A replica
    /// whose copy is not whole says so, and its state never replaces the
    /// asker's: before, a read repair took node1's replayed value for newer
    /// than a delete the holder had let go, and the key came back on every
    /// replica (chaos/run --nodes 3 --minutes 3 --seed 42 --write-quorum 2
    /// --read-quorum 2 --faults leave,join,kill9,pause: 2 keys).
    @Test(.hangBound) func aRestartedReplicasReplayedValuesNeverBringADeletedKeyBack() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("rq-replayed")
        let flags = ["--read-quorum", "2", "--write-quorum", "2", "--wal-mode", "write"]
        let members = try LeaseProcessTests.startCluster(directory: directory, extra: flags)
        defer { for member in members { member.stop() } }
        let held = Set(try #require(LeaseProcessTests.leases(members[0])).filter { $0.value.held }.map(\.key))
        let keys = LeaveHandOffProcessTests.keys(heldBy: held, count: 1_000)
        let stored = try QuorumProcessTests.run(members[0], keys.map { ["SET", $0, "old"] }, pipelined: true)
        #expect(stored.allSatisfy { $0 == "True" }, "\(Set(stored))")
        #expect(members[0].stop() == 0, "SIGTERM stops node1 cleanly")
        let deleted = try QuorumProcessTests.run(members[1], keys.map { ["DEL", $0] }, pipelined: true)
        #expect(deleted.allSatisfy { $0 == "1" }, "\(Set(deleted))")

        let readers = try Self.startReaders(keys, through: [members[1], members[2]], seconds: 5, deleted: true)
        Thread.sleep(forTimeInterval: 0.5)
        try members[0].start(seeds: members.map(\.gossipAddress), extra: flags)
        for (reader, member) in zip(readers, [members[1], members[2]]) {
            let rounds = try Self.readerRounds(reader, member)
            #expect(rounds.wrong.isEmpty, "\(member.name) read \(rounds.wrong.count) deleted keys back, first: \(rounds.wrong.prefix(3))")
        }
        #expect(ReplicationProcessTests.waitForMap(members))
        for member in members {
            let values = try QuorumProcessTests.run(member, keys.map { ["GET", $0] }, pipelined: true)
            let back = zip(keys, values).filter { $0.1 != "None" }
            #expect(back.isEmpty, "through \(member.name), \(back.count) deleted keys are back: \(back.prefix(3))")
        }
    }

    /// Reads `keys` through host:port in pipelined rounds of 100 until
    /// `seconds` passed; prints the rounds, the replies that were errors
    /// and the keys read with another value than "v-<key>", or, with a
    /// fifth argument `deleted`, with any value at all.
    static let roundsReader = """
    import json, sys, time, redis
    client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=30, decode_responses=True)
    keys = json.loads(sys.argv[3])
    stop = time.monotonic() + float(sys.argv[4])
    deleted = sys.argv[5:] == ["deleted"]
    rounds, errors, wrong = 0, [], []
    while time.monotonic() < stop:
        for start in range(0, len(keys), 100):
            batch = keys[start:start + 100]
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.get(key)
            for key, value in zip(batch, pipe.execute(raise_on_error=False)):
                if isinstance(value, Exception):
                    errors.append(str(value))
                elif value != (None if deleted else "v-" + key):
                    wrong.append(key + "=" + str(value))
        rounds += 1
    print(json.dumps({"rounds": rounds, "errors": errors, "wrong": wrong}))
    """

    /// One `roundsReader` per member, started now.
    static func startReaders(_ keys: [String], through members: [Member], seconds: Int, deleted: Bool) throws -> [BackgroundWork<String>] {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: keys), as: UTF8.self)
        return members.map { member in
            let host = member.host, port = member.clientPort
            let arguments = ["-c", Self.roundsReader, host, String(port), json, String(seconds)] + (deleted ? ["deleted"] : [])
            return BackgroundWork { try runTool("python3", arguments).output }
        }
    }

    /// A reader's errors and wrong values, once it read more than one round.
    static func readerRounds(_ reader: BackgroundWork<String>, _ member: Member) throws -> (errors: [String], wrong: [String]) {
        let output = try reader.result()
        let result = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
        #expect((result["rounds"] as? Int ?? 0) > 1, "\(member.name) read more than one round: \(output.prefix(300))")
        return (result["errors"] as? [String] ?? ["no result"], result["wrong"] as? [String] ?? ["no result"])
    }

    /// A stopping node hands off every shard it holds while reads of them
    /// wait for their quorum there (read_quorum 2). The hand-off's routing
    /// no longer ends those reads: the replica asked answers, or, where the
    /// node's loop read the probe after the shard moved, the shard's other
    /// replicas are asked. Before, reads held at the moment of the hand-off
    /// were answered TRYAGAIN (10-40 in each `perf/shard-move --scenario
    /// leave --read-quorum 2` run).
    @Test(.hangBound) func readsAtTwoHeldByAStoppingNodeAreAnsweredThroughItsHandOffs() throws {
        let directory = try PeerTLSProcessTests.temporaryDirectory("rq-leave")
        let members = try LeaseProcessTests.startCluster(directory: directory, extra: ["--read-quorum", "2"])
        defer { for member in members { member.stop() } }
        let held = Set(try #require(LeaseProcessTests.leases(members[0])).filter { $0.value.held }.map(\.key))
        #expect(!held.isEmpty, "node1 holds some shards")
        let keys = LeaveHandOffProcessTests.keys(heldBy: held, count: 600)
        let stored = try QuorumProcessTests.run(members[1], keys.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(stored.allSatisfy { $0 == "True" }, "\(Set(stored))")

        let readers = try Self.startReaders(keys, through: [members[1], members[2]], seconds: 4, deleted: false)
        Thread.sleep(forTimeInterval: 1)
        #expect(members[0].stop() == 0, "SIGTERM stops node1 cleanly:\n\(members[0].log())")
        let log = members[0].log()
        #expect(log.contains(" handed_off=\(held.count) not_handed_off=0 still_held=0"), "node1 handed off every shard it held:\n\(log)")
        for (reader, member) in zip(readers, [members[1], members[2]]) {
            let rounds = try Self.readerRounds(reader, member)
            #expect(rounds.errors.isEmpty, "\(member.name): \(rounds.errors.count) reads refused, first: \(rounds.errors.prefix(3))")
            #expect(rounds.wrong.isEmpty, "\(member.name) read wrong values: \(rounds.wrong.prefix(3))")
        }
    }

    /// The other reads of one key consult R replicas as GET does: TTL,
    /// STRLEN, EXISTS (each key of a multi-key EXISTS), TYPE and GETRANGE at
    /// R = 2 find the follower that restarted empty stale and repair it, and
    /// the repair carries the key's expiry.
    @Test(.hangBound) func everyReadOfOneKeyAtTwoRepairsTheFollowerThatRestartedEmpty() throws {
        let members = try Self.startClusterReadingAtTwo()
        defer { for member in members { member.stop() } }
        let expiring = try Self.keyReadFromNode2("rt"), sized = try Self.keyReadFromNode2("rs"), present = try Self.keyReadFromNode2("re")
        #expect(try QuorumProcessTests.run(members[0], [
            ["SET", expiring, "e", "EX", "100000"], ["SET", sized, "hello"], ["SET", present, "p"], ["WAIT", "2", "5000"],
        ]) == ["True", "True", "True", "2"])
        // A loaded machine may cross a second between the SET and the TTL.
        let firstReads = try QuorumProcessTests.run(members[0], [["TTL", expiring], ["STRLEN", sized], ["EXISTS", present, sized]])
        #expect(firstReads.count == 3 && (99_990...100_000).contains(Int(firstReads[0]) ?? 0) && Array(firstReads.dropFirst()) == ["5", "2"],
                "all three hold them: nothing to repair: \(firstReads)")
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_waits_total", atLeast: 4) == 4, "one wait per key read")
        #expect(Self.metric(members[0], "aegis_read_repairs_sent_total") == 0)

        // Read at once, not after the three agree on the map: node2 reminds
        // its holder within a second or two of its start that it holds
        // nothing, and the stream that follows refills it (seen in CI: no
        // repair left to make). node1 never dropped node2 from its map.
        try Self.restartEmpty(members[1], of: members, waitForMap: false)
        let ttl = Self.readUntil(members[0], [["TTL", expiring]]) { $0.count == 1 && (99_000...100_000).contains(Int($0[0]) ?? 0) }
        #expect(ttl.count == 1 && (99_000...100_000).contains(Int(ttl[0]) ?? 0), "\(ttl)")
        #expect(Self.awaitMetric(members[1], "aegis_read_repairs_applied_total", atLeast: 1) == 1, "the TTL read repaired node2")
        #expect(Self.readUntil(members[0], [["STRLEN", sized], ["TYPE", sized], ["GETRANGE", sized, "1", "2"]]) { $0 == ["5", "string", "el"] }
                == ["5", "string", "el"])
        #expect(Self.awaitMetric(members[1], "aegis_read_repairs_applied_total", atLeast: 2) == 2, "the STRLEN read repaired node2")
        #expect(Self.readUntil(members[2], [["EXISTS", present, sized, "absent:rq"]]) { $0 == ["2"] } == ["2"],
                "a multi-key EXISTS counts each key, each a read of its shard, forwarded to the primary")
        #expect(Self.awaitMetric(members[1], "aegis_read_repairs_applied_total", atLeast: 3) == 3, "EXISTS repaired node2's last key")

        // node1 gone: node2 (or node3, if node2 lost the election) answers
        // from a repaired copy, expiry included.
        members[0].crash()
        #expect(ReplicationProcessTests.waitForMap([members[1], members[2]]), "node2 and node3 agree without node1")
        let after = Self.readUntil(members[1], [["TTL", expiring], ["GET", sized], ["EXISTS", present]]) {
            $0.count == 3 && (99_000...100_000).contains(Int($0[0]) ?? 0) && $0[1] == "hello" && $0[2] == "1"
        }
        #expect(after.count == 3 && (99_000...100_000).contains(Int(after[0]) ?? 0) && after[1] == "hello" && after[2] == "1", "\(after)")
    }

    /// At R = 3 with the third replica paused, the reads of one key time
    /// out with TRYAGAIN; once the map drops it (2 replicas for R = 3),
    /// they are answered NOREPLICAS at once.
    @Test(.hangBound) func readsOfOneKeyAtThreeTimeOutThenFindTooFewReplicas() throws {
        let members = try Self.startClusterReadingAtThree(suspectTimeout: "4s", deadTimeout: "6s")
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { member.stop() }
        }
        let all = try Self.map(["node1", "node2", "node3"])
        let withoutNode3 = try Self.map(["node1", "node2"])
        let key = Self.key("rn") { all.primary(ofShard: $0).name == "node1" && withoutNode3.primary(ofShard: $0).name == "node1" }
        let shard = Self.shard(of: key)
        #expect(try QuorumProcessTests.run(members[0], [["SET", key, "v", "EX", "100000"], ["WAIT", "2", "5000"]]) == ["True", "2"])

        members[2].signal(SIGSTOP)
        let reads = [["TTL", key], ["STRLEN", key], ["EXISTS", key, key], ["TYPE", key], ["PING"]]
        let timedOut = try QuorumProcessTests.run(members[0], reads, pipelined: true)
        #expect(timedOut.count == reads.count && timedOut.last == "True", "\(timedOut)")
        for reply in timedOut.dropLast() {
            #expect(reply.contains("read_quorum 3 not reached: only 2 of 3 replicas of shard \(shard) answered within write_timeout")
                    && reply.contains("may be retried"), "\(timedOut)")
        }
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_timeouts_total", atLeast: 5) == 5, "one per key read")

        #expect(ReplicationProcessTests.waitForMap([members[0], members[1]]), "node1 and node2 drop the paused node3")
        let refused = try QuorumProcessTests.run(members[1], [["PTTL", key], ["GETRANGE", key, "0", "-1"], ["EXISTS", key]])
        #expect(refused.count == 3, "\(refused)")
        for reply in refused {
            #expect(reply.contains("read needs 3 replicas (read_quorum): the shard map gives shard \(shard) 2 replicas"), "\(refused)")
        }
        #expect(Self.awaitMetric(members[0], "aegis_read_quorum_unreachable_total", atLeast: 3) == 3)
    }

    /// After a failover a follower can be newer than its primary: node2
    /// is paused, and node1 and node3 restart empty, so that one of them
    /// (holding nothing) wins each shard's lease with the other's vote.
    /// (A paused node cannot be made to miss a write: the kernel keeps what
    /// its socket received while it was stopped.) Reads of one key at R = 3
    /// find node2's newer state, apply it on the primary, answer from it
    /// (TTL, STRLEN, EXISTS: not the primary's empty copy), and repair the
    /// third replica.
    @Test(.hangBound) func readsAtThreeAnswerAFollowersNewerStateAfterAFailover() throws {
        // Nobody leaves the map while paused; 3 s leases so that a restarted node wins soon.
        let extra = ["--read-quorum", "3", "--lease-duration", "3s", "--lease-election-timeout", "1s"]
        let members = try QuorumProcessTests.startCluster(writeTimeout: "5s", suspectTimeout: "40s", deadTimeout: "50s", extra: extra)
        let flags = ["--write-quorum", "2", "--write-timeout", "5s", "--suspect-timeout", "40s", "--dead-timeout", "50s"] + extra
        defer {
            for member in members where member.pid != 0 { member.signal(SIGCONT) }
            for member in members where member.pid != 0 { member.stop() }
        }
        let all = try Self.map(["node1", "node2", "node3"])
        let onNode1 = { (prefix: String) in Self.key(prefix) { all.primary(ofShard: $0).name == "node1" } }
        let expiring = onNode1("fe"), sized = onNode1("fs"), present = onNode1("fp")
        let shards = Set([expiring, sized, present].map(Self.shard(of:)))
        #expect(try QuorumProcessTests.run(members[0], [
            ["SET", expiring, "new", "EX", "100000"], ["WAIT", "2", "5000"], ["SET", sized, "newer value"], ["WAIT", "2", "5000"],
            ["SET", present, "p"], ["WAIT", "2", "5000"],
        ]) == ["True", "2", "True", "2", "True", "2"], "node2 holds all three")

        members[1].signal(SIGSTOP)
        try Self.restartEmpty(members[0], of: members, waitForMap: false, flags: flags)
        try Self.restartEmpty(members[2], of: members, waitForMap: false, flags: flags)
        #expect(waitUntil(seconds: 60) {
            let views = [members[0], members[2]].map(LeaseProcessTests.leases)
            return shards.allSatisfy { shard in views.count { $0?[shard]?.held == true } == 1 }
        }, "node1 or node3, holding nothing now, wins each of the keys' shards")
        members[1].signal(SIGCONT)

        let replies = Self.readUntil(members[0], [["TTL", expiring], ["STRLEN", sized], ["EXISTS", present]]) {
            $0.count == 3 && (99_000...100_000).contains(Int($0[0]) ?? 0) && $0[1] == "11" && $0[2] == "1"
        }
        #expect(replies.count == 3 && (99_000...100_000).contains(Int(replies[0]) ?? 0) && replies[1] == "11" && replies[2] == "1",
                "node2's newer state, not the primary's empty copy: \(replies)")
        // Per key: the primary applies node2's record, and repairs the other restarted node.
        let applied = { Self.metric(members[0], "aegis_read_repairs_applied_total") + Self.metric(members[2], "aegis_read_repairs_applied_total") }
        #expect(waitUntil(seconds: 10) { applied() >= 6 } && applied() == 6, "\(applied())")
        #expect(Self.metric(members[1], "aegis_read_repairs_applied_total") == 0, "node2 was the newest")
        #expect(try QuorumProcessTests.run(members[2], [["GET", sized], ["PTTL", present]]) == ["newer value", "-1"])
        #expect(applied() == 6, "repaired everywhere: nothing newer was left to apply")
    }

    /// The records `follower` still lacks of `shard`, as `primary`'s /cluster reports them.
    static func lag(_ primary: Member, shard: Int, follower: String) -> Int? {
        primary.get("/cluster").flatMap { lag(clusterBody: $0, shard: shard, follower: follower) }
    }

    /// The records `follower` still lacks of `shard`, from the shard's primary's /cluster body.
    static func lag(clusterBody body: String, shard: Int, follower: String) -> Int? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let replication = object["replication"] as? [String: Any],
              let shards = replication["shards"] as? [[String: Any]],
              let entry = shards.first(where: { $0["shard"] as? Int == shard }),
              let followers = entry["followers"] as? [[String: Any]],
              let lag = followers.first(where: { $0["node_id"] as? String == follower }) else { return nil }
        return lag["lag_records"] as? Int
    }

    /// write_quorum 3: a write held on a shard's lease holder ends at once
    /// when the shard's primary moves away, long before the 60 s
    /// write_timeout, with an error that says the write may have been
    /// applied. With leases the primary is the holder while it is one of the
    /// shard's owners, so a node joining no longer moves it; it moves when a
    /// holder that is not the map's first owner loses its lease (routing then
    /// falls back to that owner). So: the map's first owner P of a shard is
    /// paused until another replica H wins the shard, P is resumed, the third
    /// replica F is paused, a write through H waits for F (H and P hold it),
    /// then P is paused again: H cannot renew, its lease ends, and the
    /// shard's primary moves to P.
    @Test(.hangBound) func aWriteWaitingWhenItsPrimaryMovesAwayEndsAtOnce() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-moved-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let members = try (1...3).map { try Member(index: $0, directory: directory) }
        let flags = ["--write-quorum", "3", "--write-timeout", "60s", "--suspect-timeout", "30s", "--dead-timeout", "40s",
                     // 3 s, not 1 s: on a loaded machine grants took up to 1.8 s to
                     // arrive, so no 1 s lease could be won or kept and the shard
                     // never settled on the holder the test moves away from.
                     "--lease-duration", "3s", "--lease-election-timeout", "1s"]
        defer {
            // pid 0 (a node not started) would signal this test's own process group.
            for member in members where member.pid != 0 { member.signal(SIGCONT) }
            for member in members where member.pid != 0 { member.stop() }
        }
        for member in members { try member.start(seeds: members.map(\.gossipAddress), extra: flags) }
        #expect(ReplicationProcessTests.waitForMap(members))
        try #require(LeaseProcessTests.waitForEveryShardHeld(members), "every shard gets a lease holder")
        let three = try Self.map(["node1", "node2", "node3"])
        let member = { (name: String) in members.first { $0.name == name }! }
        let key = Self.key("mv") { _ in true }
        let shard = Self.shard(of: key)
        let first = member(three.primary(ofShard: shard).name)

        first.signal(SIGSTOP)
        var holderName: String?
        #expect(waitUntil(seconds: 30) {
            holderName = members.first { $0.name != first.name && LeaseProcessTests.leases($0)?[shard]?.held == true }?.name
            return holderName != nil
        }, "another replica wins shard \(shard) while \(first.name) is paused")
        let holder = member(try #require(holderName))
        let third = members.first { $0.name != first.name && $0.name != holder.name }!
        first.signal(SIGCONT)
        third.signal(SIGSTOP)

        let outcome = HeldWriteOutcome()
        let host = holder.host, port = holder.clientPort, name = holder.name
        let writer = Thread {
            var text = ""
            // Refused while the holder's renewals settle with the resumed
            // replica (it may campaign once on waking): retried.
            let deadline = Date().addingTimeInterval(20)
            repeat {
                do {
                    text = try QuorumProcessTests.run(host: host, port: port, name: name, [["SET", key, "moving"]]).first ?? "no reply"
                } catch {
                    text = "no reply: \(error)"
                }
                if text.contains("has no lease holder here") { usleep(100_000) }
            } while text.contains("has no lease holder here") && Date() < deadline
            outcome.value.withLock { $0 = text }
        }
        writer.start()
        // Held: it cannot reach W = 3 with the third replica paused.
        #expect(waitUntil(seconds: 20) { Self.metric(holder, "aegis_quorum_waits_total") >= 1 })
        #expect(waitUntil(seconds: 20) { Self.lag(holder, shard: shard, follower: first.name) == 0 },
                "\(first.name) acknowledged the write")
        first.signal(SIGSTOP)
        var text = ""
        #expect(waitUntil(seconds: 50) {
            text = outcome.value.withLock { $0 } ?? ""
            return !text.isEmpty
        }, "the held write was answered")
        // The holder and the map's first owner hold it: 2 of 3.
        #expect(text.hasPrefix("error: ") && text.contains("write applied on 2 of 3 replicas when shard \(shard)'s primary moved to another node"),
                "\(text)")
        #expect(text.contains("it may or may not survive a failover"), "\(text)")
        #expect(Self.metric(holder, "aegis_quorum_timeouts_total") == 0, "not ended by write_timeout")
        #expect(Self.awaitMetric(holder, "aegis_quorum_primary_moved_total", atLeast: 1) >= 1)
    }
}

/// What the write held in `aWriteWaitingWhenItsPrimaryMovesAwayEndsAtOnce` was answered, from the thread that sent it.
final class HeldWriteOutcome: Sendable {
    let value = Mutex<String?>(nil)
}
