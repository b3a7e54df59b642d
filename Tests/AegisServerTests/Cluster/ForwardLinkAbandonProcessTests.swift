@testable import AegisServer
import AegisStore
import Foundation
import Glibc
import Testing

/// A forwarded request that its peer never answers closes the bulk link to
/// that peer abortively, so that a write still queued in it cannot run after
/// a partition heals (docs/replication.md, "Only the holder replicates"), and
/// /metrics counts each such close. Three real nodes as in
/// `QuorumProcessTests`; the peer is made silent by SIGSTOP, and the
/// membership timeouts are long enough that nobody declares it dead while the
/// forward waits.
@Suite(.serialized) struct ForwardLinkAbandonProcessTests {
    static let counter = "aegis_cluster_forward_links_abandoned_total"

    static func shardsHeld(by member: ClusterProcessTests.Member) -> Set<Int>? {
        guard let shards = LeaseProcessTests.shardEntries(member) else { return nil }
        return Set(shards.filter { $0["lease_expires_in_ms"] is Int }.compactMap { $0["shard"] as? Int })
    }

    /// The nodes run the default 256 shards.
    static func shard(of key: String) -> Int {
        let hash = Array(key.utf8).withUnsafeBytes { KeyHash.hash($0) }
        return KeyHash.shard(of: hash, shardCount: 256)
    }

    @Test(.hangBound) func anUnansweredForwardClosesTheLinkAndIsCountedAndAnAnsweredOneIsNot() throws {
        let members = try QuorumProcessTests.startCluster(writeTimeout: "1s", suspectTimeout: "20s", deadTimeout: "30s")
        defer {
            for member in members { member.signal(SIGCONT) }
            for member in members { member.stop() }
        }
        let (entry, silent) = (members[0], members[1])
        // Writes go to the lease holder, which need not be the map's primary.
        let held = try #require(Self.shardsHeld(by: silent), "\(silent.name)'s /cluster lists its leases")
        let keys = Array((0..<100_000).lazy.map { "abandon:\($0)" }.filter { held.contains(Self.shard(of: $0)) }.prefix(3))
        try #require(keys.count == 3, "\(silent.name) holds a lease: \(held)")

        // Answered forwards leave the link alone.
        #expect(try QuorumProcessTests.run(entry, [["SET", keys[0], "answered"]]) == ["True"])
        #expect(QuorumProcessTests.metric(entry, Self.counter) == 0, "no link is abandoned while the peer answers")

        silent.signal(SIGSTOP)
        let unanswered = try QuorumProcessTests.run(entry, [["SET", keys[1], "unanswered"]]).first ?? ""
        #expect(unanswered.hasPrefix("error: forwarding failed") && unanswered.contains("did not answer"),
                "the forward to the paused \(silent.name) times out: \(unanswered)")
        let counted = waitUntil(seconds: 10) { QuorumProcessTests.metric(entry, Self.counter) == 1 }
        #expect(counted, "\(entry.name) counts the one link it closed: \(QuorumProcessTests.metric(entry, Self.counter) ?? -1)")
        #expect(entry.log().contains("bulk link closed, forwarded requests on it went unanswered"), "and logs it")

        // Resumed: a new link carries forwards again, and nothing more is counted.
        silent.signal(SIGCONT)
        var last: [String] = []
        let forwardsAgain = waitUntil(seconds: 30) {
            last = (try? QuorumProcessTests.run(entry, [["SET", keys[2], "after"]])) ?? []
            return last == ["True"]
        }
        #expect(forwardsAgain, "writes through \(entry.name) succeed once \(silent.name) runs again: \(last)")
        #expect(QuorumProcessTests.metric(entry, Self.counter) == 1, "an answered link is not counted")
    }
}
