import AegisCluster
import AegisSimulation
import Testing

@Suite struct SimulationTests {
    /// A few seeds of each kind, and the regression list: the same engine
    /// `aegiskv-sim --seeds N` runs, in a debug build.
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6] + RegressionSeeds.seeds)
    func seedHoldsEveryInvariant(_ seed: UInt64) {
        let report = Simulation(scenario: Scenario.generate(seed: seed)).run()
        #expect(report.violations.isEmpty, "replay: aegiskv-sim --seed \(seed)")
        #expect(report.framesSent > 0)
    }

    /// Seeds that lost an acknowledged write when a node wiped whole came
    /// back as on a first start: it asked again for a term its earlier life
    /// had won and was granted it as that holder's renewal, with nothing
    /// (seed 5000104: "node3 won complete through 0.0, below 1.79
    /// acknowledged at W = 2").
    @Test(arguments: [UInt64(5_000_104), 5_000_791])
    func aWipedNodeThatLooksNewWinsNothingOnItsEarlierLifesVotes(_ seed: UInt64) {
        let options = Scenario.Options(wipesLookNew: true)
        let report = Simulation(scenario: Scenario.generate(seed: seed, options: options)).run()
        #expect(report.violations.isEmpty, "replay: aegiskv-sim --seed \(seed) --wipes-look-new")
    }

    /// A wiped node that looks new is blank (`ShardLease.blank`): its grant
    /// counts for a new lease only beside a majority of other grants or
    /// with every voter's. Seed 9500059 failed before that with
    /// `--strict-keepers` ("node4 won complete through 1.14, below 1.15
    /// acknowledged at W = 2 and held whole by [node0]"): a majority that
    /// counted a wiped node's grant left out the one running replica that
    /// held the write.
    @Test func aWipedNodesGrantDoesNotElectOverTheLiveReplicaHoldingTheWrites() {
        let seed: UInt64 = 9_500_059
        let options = Scenario.Options(strictKeepers: true, wipesLookNew: true)
        let report = Simulation(scenario: Scenario.generate(seed: seed, options: options)).run()
        #expect(report.violations.isEmpty, "replay: aegiskv-sim --seed \(seed) --strict-keepers --wipes-look-new")
    }

    /// Two seeds that failed a first form of the blank rule: blank grants
    /// counted where every voter membership held alive granted, and a
    /// wiped node's second vote in a term whose first holder was down made
    /// a second holder of it (9600838: "shard 10 term 2 held by node8 and
    /// node3"); a whole voter refused a holed candidate counting a blank
    /// replica among those that could elect without it, and the shard had
    /// no holder (9600991).
    @Test(arguments: [UInt64(9_600_838), 9_600_991])
    func blankGrantsMakeNoSecondHolderOfATermAndStallNoShard(_ seed: UInt64) {
        let options = Scenario.Options(wipesLookNew: true)
        let report = Simulation(scenario: Scenario.generate(seed: seed, options: options)).run()
        #expect(report.violations.isEmpty, "replay: aegiskv-sim --seed \(seed) --wipes-look-new")
    }

    /// Nodes restarted before any complete copy reached them stay blank
    /// (`stillBlank`). With that alone these seeds elected no one for a
    /// shard no write reached: all three replicas blank, two of them
    /// restarted (holed), and the holed two refused each other's campaigns
    /// in deference to the third's whole claim of nothing, while the third
    /// campaigned only at a term they had spent. A whole claim of nothing
    /// is no reason to refuse now.
    @Test(arguments: [UInt64(5_500_000), 5_500_487, 5_500_560, 5_500_659])
    func replicasStillBlankAfterARestartElectAHolderWhereNoWriteWasMade(_ seed: UInt64) {
        let options = Scenario.Options(quickRestarts: true, restartCascades: true, wipesLookNew: true)
        let report = Simulation(scenario: Scenario.generate(seed: seed, options: options)).run()
        #expect(report.violations.isEmpty, "replay: aegiskv-sim --seed \(seed) --wipes-look-new --quick-restarts --restart-cascades")
        #expect(report.restartsStillBlank > 0)
    }

    @Test func theSameSeedGivesTheSameTrace() {
        for seed: UInt64 in [11, 12] {
            let first = Simulation(scenario: Scenario.generate(seed: seed)).run()
            let second = Simulation(scenario: Scenario.generate(seed: seed)).run()
            #expect(first.traceHash == second.traceHash)
            #expect(first.eventsProcessed == second.eventsProcessed)
        }
        let other = Simulation(scenario: Scenario.generate(seed: 13)).run()
        #expect(other.traceHash != Simulation(scenario: Scenario.generate(seed: 11)).run().traceHash)
    }

    @Test func corruptedFramesAreInjectedAndRefused() {
        let report = Simulation(scenario: Scenario.generate(seed: 21, kind: .chaos)).run()
        #expect(report.corruptFramesRefused > 0)
    }

    @Test func aCrashIsSuspectedAndDeclaredDead() {
        var scenario = Scenario.generate(seed: 31, kind: .mild)
        scenario.lossRate = 0
        scenario.faults = [.crash(node: 1, at: 15_000, restartAt: nil)]
        let report = Simulation(scenario: scenario).run()
        #expect(report.violations.isEmpty)
        #expect(report.suspectDelaysMs.count == 1)
        #expect(report.deadDelaysMs.count == 1)
        if let suspected = report.suspectDelaysMs.first {
            #expect(suspected <= scenario.settings.suspectTimeoutMs + 2 * scenario.settings.gossipIntervalMs)
        }
    }

    /// Reactors that lag past half a gossip interval raise the node's local
    /// health through the same code path the server drives; a lag within it
    /// does not, and neither stops anyone from agreeing or calls anyone dead.
    @Test(arguments: [(lagMs: Int64(2000), lifeguard: true), (lagMs: 400, lifeguard: true), (lagMs: 2000, lifeguard: false)])
    func laggingReactorsStretchOnlyTheirOwnNode(_ lagMs: Int64, lifeguard: Bool) {
        var scenario = Scenario.generate(seed: 41, kind: .mild, lifeguard: lifeguard)
        scenario.lossRate = 0
        scenario.faults = [.reactorLag(node: 1, at: 10_000, until: 30_000, lagMs: lagMs)]
        let report = Simulation(scenario: scenario).run()
        #expect(report.violations.isEmpty)
        #expect(report.falseSuspicions == 0 && report.falseDeaths == 0)
        #expect((report.localHealthPeak > 0) == (lifeguard && lagMs > scenario.settings.gossipIntervalMs / 2))
    }
}
