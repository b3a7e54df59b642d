@testable import AegisServer
import Foundation
import Glibc
import Testing

/// A stopping node hands the shards it holds to their other replicas
/// before it says `left` (issue 13, "Leave"; LeaseHandOffs.swift): three
/// real processes, replication_factor 3, node1 stopped with SIGTERM while
/// a client writes to node1's shards through node2.
@Suite(.serialized) struct LeaveHandOffProcessTests {
    typealias Member = ClusterProcessTests.Member

    /// Writes `count` keys of `shards` through host:port one by one, each
    /// retried every 10 ms while refused (for up to 30 s); prints the keys acknowledged and each refusal.
    static let writer = """
    import json, sys, time, redis
    client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=30)
    keys = json.loads(sys.argv[3])
    acked, refusals = [], []
    for key in keys:
        for attempt in range(3000):
            try:
                client.set(key, "v-" + key)
                acked.append(key)
                break
            except redis.exceptions.ResponseError as e:
                refusals.append(str(e))
                time.sleep(0.01)
    print(json.dumps({"acked": acked, "refusals": refusals}))
    """

    /// Keys whose shards `holder` leads, `count` of them.
    static func keys(heldBy shards: Set<Int>, count: Int) -> [String] {
        var keys: [String] = []
        var i = 0
        while keys.count < count {
            let key = "leave:\(i)"
            if shards.contains(LeaseProcessTests.shard(of: key)) { keys.append(key) }
            i += 1
        }
        return keys
    }

    @Test(.hangBound) func aStoppingNodeHandsEveryShardItHoldsToAReplicaAndLosesNoWrite() throws {
        let members = try LeaseProcessTests.startCluster(directory: try PeerTLSProcessTests.temporaryDirectory("leave"))
        defer { for member in members { member.stop() } }
        let before = try #require(LeaseProcessTests.leases(members[0]))
        let held = Set(before.filter { $0.value.held }.map(\.key))
        #expect(!held.isEmpty, "node1 holds some shards")

        let keys = Self.keys(heldBy: held, count: 1_500)
        let early = Array(keys.prefix(300)), during = Array(keys.dropFirst(300))
        let first = try QuorumProcessTests.run(members[1], early.map { ["SET", $0, "v-" + $0] }, pipelined: true)
        #expect(first.allSatisfy { $0 == "True" }, "\(Set(first))")

        // Writes to node1's shards go on through node2 while node1 stops.
        let host = members[1].host, port = members[1].clientPort
        let json = String(decoding: try JSONSerialization.data(withJSONObject: during), as: UTF8.self)
        let writer = BackgroundWork { try runTool("python3", ["-c", Self.writer, host, String(port), json]).output }
        Thread.sleep(forTimeInterval: 0.3)
        let survivorLogStart = [members[1].log().count, members[2].log().count]
        #expect(members[0].stop() == 0, "SIGTERM stops node1 cleanly:\n\(members[0].log())")
        let output = try writer.result()

        let log = members[0].log()
        let summary = log.split(separator: "\n").first { $0.contains("leaving: hand-offs over") }.map(String.init) ?? ""
        #expect(summary.contains(" handed_off=\(held.count) not_handed_off=0 still_held=0"),
                "node1 handed off every shard it held:\n\(log)")
        // Each of those shards went to a survivor by the hand-off, at the
        // next term, not by an election after node1's promises ran out.
        let survivorLogs = members[1].log() + members[2].log()
        let views = [members[1], members[2]].compactMap(LeaseProcessTests.leases)
        #expect(views.count == 2)
        // `lease term changed ... reason="handed over by node1" shards=3,7,...`
        // (or `shard=3`): one line per step on each survivor.
        let handedOver = Set(survivorLogs.split(separator: "\n").filter { $0.contains("reason=\"handed over by node1\" shard") }.flatMap { line in
            line.split(separator: "=").last!.split(separator: ",").compactMap { Int($0) }
        })
        for shard in held.sorted() {
            #expect(handedOver.contains(shard), "shard \(shard) handed over")
            let terms = views.compactMap { $0[shard]?.term }
            #expect(terms.allSatisfy { $0 == before[shard]!.term + 1 }, "shard \(shard) at the hand-off's term: \(terms)")
        }
        let sinceStop = zip([members[1], members[2]], survivorLogStart).map { String($0.0.log().dropFirst($0.1)) }.joined()
        #expect(!sinceStop.contains("no live lease"), "no survivor campaigned for a shard since node1 stopped:\n\(sinceStop)")

        let data = try #require(output.data(using: .utf8))
        let written = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String]], "\(output)")
        let acked = written["acked"] ?? []
        #expect(acked.count == during.count, "every write was acknowledged, some after a retry: \(written["refusals"] ?? [])")
        // node1 said farewell to both before it closed its links, and both
        // answered: nothing node2 sent it was on the way when they closed.
        let farewell = log.split(separator: "\n").first { $0.contains("peers answered this node's farewell") }.map(String.init) ?? ""
        #expect(farewell.contains("answered=2") && farewell.contains("sent=2") && farewell.contains("unanswered=0"), "\(log)")
        for survivor in [members[1], members[2]] {
            let metrics = survivor.get("/metrics") ?? ""
            #expect(metrics.contains("aegis_peer_farewells_total{event=\"received\"} 1"), "\(survivor.name) heard node1's farewell")
        }
        // Refused (TRYAGAIN, retried) only while a shard was frozen, or its
        // new holder not yet elected, or reached through a node that already
        // knew the new holder (one hop only), or routed to node1 after its
        // farewell where no next replica was known (not sent). Never
        // `forwarding failed`: before farewells a
        // request node2 sent node1 just before the link closed was cut with
        // it, and its client could not know whether it ran.
        for refusal in written["refusals"] ?? [] {
            #expect(refusal.contains("is being handed to another node") || refusal.contains("has no lease holder here")
                    || refusal.contains("in the view of the node that got it")
                    || refusal.contains("node1 is stopping, the request was not sent"), "\(refusal)")
        }
        let everyAcked = early + acked
        for member in [members[1], members[2]] {
            let values = try QuorumProcessTests.run(member, everyAcked.map { ["GET", $0] }, pipelined: true)
            let missing = zip(everyAcked, values).filter { pair in pair.1 != "v-" + pair.0 }
            #expect(missing.isEmpty, "\(member.name) lost \(missing.count) acknowledged writes: \(missing.prefix(5))")
        }
        #expect(members[1].statuses()["node1"] == "left" && members[2].statuses()["node1"] == "left")
        // node1 is gone with its counters; a survivor shows the families.
        let metrics = members[1].get("/metrics") ?? ""
        #expect(metrics.contains("aegis_lease_hand_offs_started_total 0"))
        #expect(metrics.contains("aegis_lease_hand_offs_ended_total{outcome=\"released\"} 0"))
        #expect(metrics.contains("aegis_lease_hand_off_pause_seconds_count 0"))
        // Plain text has no HELP lines (the runbook's grep), so promtool
        // says "no help text" for each family; nothing else may show.
        let lint = try runTool("promtool", ["check", "metrics"], input: metrics)
        let problems = lint.output.split(separator: "\n").filter { !$0.hasSuffix("no help text") }
        #expect(problems.isEmpty, "\(problems)")
        // Its log names every shard handed off, one line per target with
        // the pauses their writes saw.
        let handedOff = log.split(separator: "\n").filter { $0.contains(" handed to node") && $0.contains("pause_us=") }.map { line in
            line.contains("leases: shard ") ? 1 : Int(line.split(separator: "leases: ").last!.prefix { $0.isNumber }) ?? 0
        }
        #expect(handedOff.reduce(0, +) == held.count)
    }
}
