import Testing
@testable import AegisCluster
@testable import AegisSimulation

/// The lease machines under the simulator, and the simulator's lease
/// checker itself: each invariant must be able to fail.
@Suite struct LeaseSimulationTests {
    @Test func failoverUnderACrashAWipeAndAPartitionKeepsEveryLeaseInvariant() {
        var scenario = Scenario.generate(seed: 77, kind: .mild)
        scenario.lossRate = 0.05
        scenario.faults = [
            .crash(node: 0, at: 12_000, restartAt: 24_000),
            .crash(node: 1, at: 14_000, restartAt: 30_000),
            .partition(from: [2], to: Array(3..<scenario.nodeCount), at: 20_000, until: 32_000),
            .partition(from: Array(3..<scenario.nodeCount), to: [2], at: 20_000, until: 32_000),
            .pause(node: 3, at: 15_000, until: 21_000),
        ]
        scenario.wipedRestarts = [Scenario.NodeMoment(node: 1, at: 30_000)]
        let report = Simulation(scenario: scenario).run()
        #expect(report.violations.isEmpty, "\(report.violations)")
        // Every shard was won at least once, and the faults forced new terms.
        #expect(report.leasesAcquired > Int(scenario.leases.numShards))
        #expect(report.termChanges > 0)
    }

    @Test func corruptedLeaseFramesAreInjectedAndRefused() {
        var scenario = Scenario.generate(seed: 21, kind: .chaos)
        scenario.corruptRate = 0.2
        let report = Simulation(scenario: scenario).run()
        #expect(report.corruptLeaseFramesRefused > 0)
        #expect(report.violations.isEmpty, "\(report.violations)")
    }

    func quietSimulation() -> Simulation {
        var scenario = Scenario.generate(seed: 5, kind: .mild)
        scenario.faults = []
        return Simulation(scenario: scenario)
    }

    @Test func theCheckerCatchesTwoHoldersAtOnce() {
        let simulation = quietSimulation()
        simulation.nodes[0].disk[3] = PersistedTerm(term: 1, votedFor: simulation.nodes[0].nodeID)
        simulation.nodes[1].disk[3] = PersistedTerm(term: 2, votedFor: simulation.nodes[1].nodeID)
        simulation.now = 10_000
        simulation.held(3, term: 1, until: simulation.localTime(0, 12_000) + simulation.nodes[0].leaseSkewMs, by: 0)
        #expect(simulation.report.violations.isEmpty)
        simulation.now = 11_000
        simulation.held(3, term: 2, until: simulation.localTime(1, 13_000) + simulation.nodes[1].leaseSkewMs, by: 1)
        #expect(simulation.report.violations.count == 1)
        #expect(simulation.report.violations.first?.contains("lease runs") == true)
    }

    @Test func theCheckerCatchesTwoHoldersInOneTerm() {
        let simulation = quietSimulation()
        for index in 0..<2 { simulation.nodes[index].disk[2] = PersistedTerm(term: 4, votedFor: nil) }
        simulation.now = 10_000
        simulation.held(2, term: 4, until: simulation.localTime(0, 10_500) + simulation.nodes[0].leaseSkewMs, by: 0)
        simulation.now = 20_000
        simulation.held(2, term: 4, until: simulation.localTime(1, 20_500) + simulation.nodes[1].leaseSkewMs, by: 1)
        #expect(simulation.report.violations.count == 1)
        #expect(simulation.report.violations.first?.contains("term 4 held by") == true)
    }

    @Test func theCheckerCatchesTermsGoingBackAndActsBeforePersisting() {
        let simulation = quietSimulation()
        simulation.persist(PersistedTerm(term: 5, votedFor: nil), shard: 1, by: 0)
        simulation.persist(PersistedTerm(term: 4, votedFor: nil), shard: 1, by: 0)
        simulation.persist(PersistedTerm(term: 6, votedFor: simulation.nodes[1].nodeID), shard: 1, by: 0)
        simulation.persist(PersistedTerm(term: 6, votedFor: simulation.nodes[2].nodeID), shard: 1, by: 0)
        simulation.performLease([.termChanged(shard: 1, old: 6, new: 9, reason: "test")], of: 0)
        simulation.nodes[2].emptyLearner = true
        simulation.nodes[2].disk[0] = PersistedTerm(term: 1, votedFor: nil)
        simulation.now = 50_000
        simulation.held(0, term: 1, until: simulation.localTime(2, 50_100) + simulation.nodes[2].leaseSkewMs, by: 2)
        let violations = simulation.report.violations
        #expect(violations.count == 4, "\(violations)")
        #expect(violations.contains { $0.contains("below") })
        #expect(violations.contains { $0.contains("after voting for") })
        #expect(violations.contains { $0.contains("before persisting") })
        #expect(violations.contains { $0.contains("empty learner") })
    }

    /// `--config-changes`: holders move shards to new voters through the
    /// joint step under a crash, a partition and loss, and every invariant
    /// (one config committed per epoch, on a majority of each set; W = 2
    /// counted per set) holds.
    @Test func configChangesUnderFaultsKeepEveryLeaseInvariant() {
        var scenario = Scenario.generate(seed: 77, kind: .mild)
        scenario.options = Scenario.Options(configChanges: true)
        scenario.lossRate = 0.05
        scenario.faults = [
            .crash(node: 0, at: 14_000, restartAt: 24_000),
            .partition(from: [2], to: Array(3..<scenario.nodeCount), at: 20_000, until: 30_000),
            .partition(from: Array(3..<scenario.nodeCount), to: [2], at: 20_000, until: 30_000),
        ]
        let report = Simulation(scenario: scenario).run()
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.configChangesProposed > 0)
        // Each change commits its joint and its final config on every node
        // that wins under them; founding's epoch 1 is committed too.
        #expect(report.configsCommitted > report.configChangesProposed)
    }

    @Test func theCheckerCatchesTwoConfigsCommittedAtOneEpochAndAConfigGoingBack() {
        let simulation = quietSimulation()
        let ids = simulation.nodes.prefix(3).map(\.nodeID)
        let first = ShardConfig(epoch: 2, voters: ids)!
        let other = ShardConfig(epoch: 2, voters: Array(ids.reversed()))!
        for index in 0..<3 { simulation.nodes[index].disk[4] = PersistedTerm(term: 3, votedFor: nil, config: first) }
        simulation.committed(first, shard: 4, by: 0)
        #expect(simulation.report.violations.isEmpty)
        simulation.committed(other, shard: 4, by: 1)
        #expect(simulation.report.violations.count == 1)
        #expect(simulation.report.violations.last?.contains("at the same epoch") == true)
        // Persisted by one node of three: no majority.
        let lonely = ShardConfig(epoch: 5, voters: ids)!
        simulation.nodes[0].disk[6] = PersistedTerm(term: 1, votedFor: nil, config: lonely)
        simulation.committed(lonely, shard: 6, by: 0)
        #expect(simulation.report.violations.last?.contains("persisted only by") == true)
        simulation.persist(PersistedTerm(term: 4, votedFor: nil, config: ShardConfig(epoch: 1, voters: ids)!), shard: 4, by: 2)
        #expect(simulation.report.violations.last?.contains("persisted config epoch 1") == true)
        #expect(simulation.report.violations.count == 3)
    }
}
