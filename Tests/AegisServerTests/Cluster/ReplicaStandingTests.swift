@testable import AegisServer
import AegisCluster
import AegisStore
import Foundation
import Testing

/// How a follower stands against its holders (`LeaseDriver.reviewStanding`,
/// what /health and /ready say): two real lease drivers, node-a and node-b,
/// replication_factor 2, exchanging their frames directly.
@Suite struct ReplicaStandingTests {
    static let parameters = ClusterParameters(numShards: 8, virtualNodes: 16, replicationFactor: 2)
    static let members = [NodeID("node-a")!, NodeID("node-b")!]

    final class Pair {
        let drivers: [String: LeaseDriver]
        let directories: [String]
        var now: Int64 = 0

        init() throws {
            var drivers: [String: LeaseDriver] = [:]
            var directories: [String] = []
            for id in ReplicaStandingTests.members {
                let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegiskv-standing-\(UUID().uuidString)").path
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                directories.append(directory)
                let machine = LeaseMachine(settings: LeaseSettings(nodeID: id, parameters: ReplicaStandingTests.parameters),
                                           persisted: [:], emptyLearner: false, life: 1, randomSeed: UInt64(id.name.utf8.last!),
                                           authenticator: LeaseUpgradeTests.authenticator)
                drivers[id.name] = LeaseDriver(machine: machine, store: TermStore(directory: directory, terms: [:]), board: LeaseBoard(),
                                               logger: LogLines().logger, hasSeeds: true)
            }
            self.drivers = drivers
            self.directories = directories
            var sends: [(NodeID, [UInt8])] = []
            for driver in drivers.values {
                sends += driver.start(nowMs: 0)
                sends += driver.membersChanged(alive: ReplicaStandingTests.members, known: ReplicaStandingTests.members, nowMs: 0)
            }
            deliver(sends)
        }

        deinit { for directory in directories { try? FileManager.default.removeItem(atPath: directory) } }

        /// Delivers frames, and the answers they draw, until none is left.
        func deliver(_ sends: [(NodeID, [UInt8])]) {
            var pending = sends
            while !pending.isEmpty {
                let (to, frame) = pending.removeFirst()
                pending += drivers[to.name]?.received(frame, nowMs: now) ?? []
            }
        }

        /// Runs both drivers' timers up to `end`, 10 ms at a time.
        func run(until end: Int64) {
            while now < end {
                now += 10
                for driver in drivers.values { deliver(driver.fireDueTimers(nowMs: now)) }
            }
        }
    }

    /// A follower's copy is below its holder's newest claim for a moment
    /// after every renewal under writes (the ask outruns the batched records
    /// before it). A node that was in step is not taken out of step for that
    /// moment, only once it stays below for a renewal; a node that has not
    /// been in step since it started gets no such grace.
    @Test func aFollowerBelowAFreshClaimStaysInStepUntilARenewalPassesUnlessItNeverWasInStep() throws {
        let pair = try Pair()
        pair.run(until: 30_000)
        let a = try #require(pair.drivers["node-a"])
        let b = try #require(pair.drivers["node-b"])
        let shards = Int(Self.parameters.numShards)
        let heldByA = (0..<shards).filter { shard in a.shards(nowMs: pair.now).contains { $0.shard == shard && $0.heldForMs != nil } }
        try #require(!heldByA.isEmpty && heldByA.count < shards, "each node holds some of the shards: node-a holds \(heldByA)")
        let shard = heldByA[0]

        // node-b holds what every claim says: in step.
        var acknowledged = [EntryVersion](repeating: .zero, count: shards)
        _ = b.reviewStanding(acknowledged: acknowledged, nowMs: pair.now)
        #expect(b.standing.inStep, "\(b.standing)")

        // node-a writes; its next renewal claims the write, which node-b has not yet.
        let written = EntryVersion(term: a.shards(nowMs: pair.now).first { $0.shard == shard }!.term, seq: 5)
        a.localVersion(shard: shard, written, nowMs: pair.now)
        let claimedBefore = pair.now
        pair.run(until: pair.now + b.leaseMs / 4 + 20)
        let justAfterRenewal = pair.now
        _ = b.reviewStanding(acknowledged: acknowledged, nowMs: justAfterRenewal)
        #expect(b.standing.behind == 0 && b.standing.inStep, "below a claim a moment old: \(b.standing)")

        let behind = b.reviewStanding(acknowledged: acknowledged, nowMs: justAfterRenewal + b.behindGraceMs)
        #expect(b.standing.behind == 1 && !b.standing.inStep, "below it for a renewal: \(b.standing)")
        #expect(behind.map(\.shard) == [shard] && behind.first?.claim == written, "\(behind), claimed after \(claimedBefore)")

        // The records arrive: in step again at once.
        acknowledged[shard] = written
        _ = b.reviewStanding(acknowledged: acknowledged, nowMs: justAfterRenewal + b.behindGraceMs + 100)
        #expect(b.standing.inStep, "\(b.standing)")

        // A node that never was in step: no grace.
        let fresh = try Pair()
        fresh.run(until: 30_000)
        let freshA = try #require(fresh.drivers["node-a"])
        let freshB = try #require(fresh.drivers["node-b"])
        let freshShard = try #require((0..<shards).first { shard in freshA.shards(nowMs: fresh.now).contains { $0.shard == shard && $0.heldForMs != nil } })
        freshA.localVersion(shard: freshShard, EntryVersion(term: freshA.shards(nowMs: fresh.now).first { $0.shard == freshShard }!.term, seq: 5),
                            nowMs: fresh.now)
        fresh.run(until: fresh.now + freshB.leaseMs / 4 + 20)
        _ = freshB.reviewStanding(acknowledged: [EntryVersion](repeating: .zero, count: shards), nowMs: fresh.now)
        #expect(freshB.standing.behind == 1 && !freshB.standing.inStep, "first review, below a claim: \(freshB.standing)")
    }
}
