import AegisCluster

/// One simulated run, drawn entirely from a seed: cluster size, network
/// quality, and the faults with their times. All times are milliseconds of
/// the simulation's true clock (each node reads its own drifting clock).
public struct Scenario: Sendable, Equatable {
    public enum Fault: Sendable, Equatable {
        /// Traffic from every node in `from` to every node in `to` is lost; symmetric
        /// partitions list both directions.
        case partition(from: [Int], to: [Int], at: Int64, until: Int64)
        /// kill -9; restarted at `restartAt` with a higher incarnation, or never.
        case crash(node: Int, at: Int64, restartAt: Int64?)
        /// The process stops running (a GC or swap storm): timers and messages
        /// wait until it resumes.
        case pause(node: Int, at: Int64, until: Int64)
        /// A graceful stop (SIGTERM): the node announces `left`, then exits for good.
        case leave(node: Int, at: Int64)
        /// An overloaded process: what it receives waits `extraDelayMs` before it
        /// is handled, and its driver reports that lag (`localHealth`) each second.
        case slow(node: Int, at: Int64, until: Int64, extraDelayMs: Int64)
        /// The node's reactors run `lagMs` late (a busy client load) while its
        /// cluster loop keeps up: messages are handled on time, but the driver
        /// reports the lag (`localHealth`) before each protocol period, as the
        /// server's cluster loop does with what its reactors publish. The node stays reachable,
        /// so nothing excuses a dead verdict about it or by it.
        case reactorLag(node: Int, at: Int64, until: Int64, lagMs: Int64)
    }

    public enum Kind: String, Sendable, CaseIterable {
        /// Any fault the issue lists.
        case chaos
        /// Loss ≤ 10%, no partition, no crash: nobody reachable may be declared dead.
        case mild
    }

    public var seed: UInt64
    public var kind: Kind
    public var nodeCount: Int
    public var lossRate: Double
    public var duplicateRate: Double
    public var corruptRate: Double
    public var delayMinMs: Int64
    public var delayMaxMs: Int64
    public var driftPPM: [Int64]
    public var faults: [Fault]
    /// From here on no fault is active: loss, partitions and pauses are over and
    /// every crashed node that will restart has.
    public var healAt: Int64
    public var endAt: Int64
    public var lifeguard: Bool
    public var settings: SimulationTiming
    /// Added to each node's clock as its lease machine reads it, within
    /// ±60 s: a wall-clock skew far beyond Aerospike's 27 s limit, harmless
    /// because no clock reading ever crosses from one node to another.
    public var leaseClockSkewMs: [Int64]
    /// Restarts that come back with a wiped data_dir: persisted terms gone,
    /// the node an empty learner.
    public var wipedRestarts: Set<NodeMoment>
    public var options = Options()
    public var leases: LeaseTiming

    /// The harsher faults and checks `aegiskv-sim` can add (its `--help`
    /// says each). All are off by default: with them a few seeds in a
    /// thousand still lose acknowledged writes (docs/replication.md, "Not
    /// built yet").
    public struct Options: Sendable, Equatable {
        /// 0-2 kills of a node that comes back within 0.3-2.5 s.
        public var quickRestarts = false
        /// One cascade of three kills, each node back within 0.3-4 s, the
        /// next killed 1-6 s after the one before.
        public var restartCascades = false
        /// A crash keeps only the log, the writes the node made as holder,
        /// and not the writes it received as a follower (as in the server);
        /// off, a crash keeps the whole copy. See `Simulation.startLeases`.
        public var crashKeepsOnlyTheLog = false
        /// Also count a lease won below an acknowledged write as a violation
        /// when only one running replica besides the winner still held the
        /// write (by default two must: with one, the other copy may have
        /// been lost to a crash, a double fault). That one could have been
        /// elected, as in chaos seed 14, where the only whole copy lost the race.
        public var strictKeepers = false
        /// Every node first starts with each shard's replica configuration
        /// persisted (epoch 1, the placement's owners), as a founded cluster
        /// will: majorities are counted over configs, asks carry them, and a
        /// node that comes back without them (after a wipe) learns them from
        /// `configStale` answers. Off, no shard has one, as in the server
        /// until shard movement sets them.
        public var configs = false
        /// With `configs`: before the heal, holders move shards to random new
        /// voters (as the shard mover will): the newcomers get the holder's
        /// copy by a model stream and its writes after it, then the holder
        /// proposes the change (`LeaseEvent.proposeConfig`). W = 2 is counted
        /// in each set of the holder's configuration.
        public var configChanges = false
        /// A wiped restart comes back as on a first start (no terms, and not
        /// an empty learner), as the server does when its whole data_dir was
        /// removed (`rm -rf /var/lib/aegiskv/*`): nothing on disk tells it
        /// from a new node. Off, a wipe leaves the marker that makes it an
        /// empty learner.
        public var wipesLookNew = false
        /// A crash keeps the terms and nothing else, as the server with
        /// `wal_mode: off` (its default): a restarted node's copies are
        /// empty, and it stands back once (`restartedWithoutLog`).
        public var logOff = false

        public init(quickRestarts: Bool = false, restartCascades: Bool = false, crashKeepsOnlyTheLog: Bool = false,
                    strictKeepers: Bool = false, configs: Bool = false, configChanges: Bool = false,
                    wipesLookNew: Bool = false, logOff: Bool = false) {
            self.logOff = logOff
            self.quickRestarts = quickRestarts
            self.restartCascades = restartCascades
            self.crashKeepsOnlyTheLog = crashKeepsOnlyTheLog
            self.strictKeepers = strictKeepers
            self.configs = configs || configChanges
            self.configChanges = configChanges
            self.wipesLookNew = wipesLookNew
        }

        /// The `aegiskv-sim` flags that ask for these options, each with a leading space.
        public var flags: String {
            [(quickRestarts, " --quick-restarts"), (restartCascades, " --restart-cascades"),
             (crashKeepsOnlyTheLog, " --crash-keeps-only-the-log"), (strictKeepers, " --strict-keepers"),
             (configs && !configChanges, " --configs"), (configChanges, " --config-changes"),
             (wipesLookNew, " --wipes-look-new"), (logOff, " --log-off")]
                .filter(\.0).map(\.1).joined()
        }
    }

    public var crashKeepsOnlyTheLog: Bool { options.crashKeepsOnlyTheLog }
    public var strictKeepers: Bool { options.strictKeepers }

    public struct NodeMoment: Sendable, Hashable {
        public var node: Int
        public var at: Int64

        public init(node: Int, at: Int64) {
            self.node = node
            self.at = at
        }
    }

    /// The lease machines' timings, shortened like the membership ones.
    public struct LeaseTiming: Sendable, Equatable {
        public var durationMs: Int64 = 2000
        public var tickIntervalMs: Int64 = 500
        public var electionTimeoutMs: Int64 = 2000
        /// The simulator's clocks drift by up to 20,000 ppm (`driftPPM`).
        public var clockDriftBoundPPM: Int64 = 20_000
        /// Few shards keep the lease traffic (one request per node pair per
        /// tick) from dwarfing membership's in the simulator's CPU budget.
        public var numShards: UInt32 = 16
        public var virtualNodes: UInt32 = 32
        public var replicationFactor: UInt32 = 3
    }

    /// After membership agrees (`agreementRounds` after the heal), every shard
    /// with a majority of its replicas running and not empty learners has a
    /// holder within this long. The slowest path it covers: promises made
    /// before the agreement run out (one lease plus margin), the replicas
    /// that step in for an empty-learner preferred one wait out their
    /// election timeouts (two ranks), a candidate that is behind stands back
    /// (one lease and RF + 1 election timeouts), and up to two campaigns are
    /// refused (a stale term, a split vote) and backed off by up to two
    /// leases each, each retry waiting for the next tick. With
    /// `configChanges` a shard may be left in a joint configuration, whose
    /// voters are up to twice the replication factor: the rank waits and the
    /// stand-back of a candidate that is behind (a new voter that missed the
    /// old holder's last writes) grow with them.
    public var leaseLivenessBoundMs: Int64 {
        let margin = LeaseSettings.marginMs(for: leases.durationMs, clockDriftBoundPPM: leases.clockDriftBoundPPM)
        let voters = Int64(leases.replicationFactor) * (options.configChanges ? 2 : 1)
        let rankWaits = options.configChanges ? voters - 1 : 2
        return 2 * (leases.durationMs + margin) + rankWaits * leases.electionTimeoutMs
            + (leases.durationMs + (voters + 1) * leases.electionTimeoutMs)
            + 2 * 2 * leases.durationMs + 2 * leases.tickIntervalMs
    }

    public var leaseLivenessDueAt: Int64 {
        healAt + Self.agreementRounds * settings.gossipIntervalMs + leaseLivenessBoundMs
    }

    /// The timeouts the simulated nodes run with: the defaults' shape,
    /// shortened so that a run covers many suspicion cycles.
    public struct SimulationTiming: Sendable, Equatable {
        public var gossipIntervalMs: Int64 = 1000
        public var suspectTimeoutMs: Int64 = 4000
        public var deadTimeoutMs: Int64 = 10_000
        public var pushPullIntervalMs: Int64 = 5000
        public var seedRetryIntervalMs: Int64 = 2000
    }

    /// The scenario's clocks drift by at most this much (`driftPPM`).
    public static let clockDriftBoundPPM: Int64 = 20_000

    /// A running member that a running node holds suspect or dead is alive
    /// again in its view within this long of the heal, or of the verdict
    /// when that came later (with Lifeguard from the start of its
    /// suspicion; plain SWIM leaves a suspect to its probe turn, so there
    /// from the dead verdict). The path it covers: the node tells the member
    /// what it holds at its next reconnect tick (one gossip interval of its
    /// drifting clock), and the member's refutation comes back in the ack
    /// (two deliveries). Twice that, for margin: one round is the design.
    public var healedLivenessBoundMs: Int64 {
        let tick = settings.gossipIntervalMs + settings.gossipIntervalMs * Self.clockDriftBoundPPM / 1_000_000 + 1
        return 2 * (tick + 2 * delayMaxMs)
    }

    /// Rounds (gossip intervals) after `healAt` by which every live node must
    /// agree on membership. The slowest path it covers: a member whose last
    /// probe started just before the heal is suspected after suspect_timeout +
    /// 2 intervals, stays suspect for up to Lifeguard's stretched timeout
    /// (3 × (dead_timeout − suspect_timeout)) without confirmations, and the
    /// verdict or a refutation then needs a few push/pull intervals to reach
    /// nodes that gossip missed: 4 + 2 + 18 + 3 × 5 ≈ 40 s with the timings above.
    public static let agreementRounds: Int64 = 45

    static let joinPhaseMs: Int64 = 8000
    static let faultWindowMs: Int64 = 35_000
    public static var healAtMs: Int64 { joinPhaseMs + faultWindowMs }

    public static func generate(seed: UInt64, kind: Kind? = nil, lifeguard: Bool = true,
                                options: Options = Options()) -> Scenario {
        var random = ClusterRandom(seed: seed ^ 0x5CE7_A510_5EED_0001)
        let kind = kind ?? (Int.random(in: 0..<4, using: &random) == 0 ? .mild : .chaos)
        let timing = SimulationTiming()
        let nodeCount = Int.random(in: 3...16, using: &random)
        let lossRate: Double
        switch kind {
        case .mild: lossRate = Double.random(in: 0...0.10, using: &random)
        case .chaos: lossRate = Bool.random(using: &random) ? 0 : Double.random(in: 0...0.30, using: &random)
        }
        let delayMin = Int64.random(in: 1...5, using: &random)
        let delayMax = delayMin + Int64.random(in: 0...200, using: &random)
        let drift = (0..<nodeCount).map { _ in Int64.random(in: -clockDriftBoundPPM...clockDriftBoundPPM, using: &random) }
        let faultStart = joinPhaseMs
        let healAt = faultStart + faultWindowMs
        var faults: [Fault] = []
        let faultCount = Int.random(in: 0...4, using: &random)
        for _ in 0..<faultCount {
            let at = Int64.random(in: faultStart..<(healAt - 500), using: &random)
            let choice = kind == .mild ? 2 : Int.random(in: 0..<7, using: &random) / 2
            switch choice {
            case 0:
                let until = min(healAt, at + Int64.random(in: 2000...20_000, using: &random))
                var nodes = Array(0..<nodeCount)
                nodes.shuffle(using: &random)
                let cut = Int.random(in: 1..<nodeCount, using: &random)
                let sideA = Array(nodes[..<cut]).sorted(), sideB = Array(nodes[cut...]).sorted()
                faults.append(.partition(from: sideA, to: sideB, at: at, until: until))
                if Bool.random(using: &random) { faults.append(.partition(from: sideB, to: sideA, at: at, until: until)) }
            case 1:
                let node = Int.random(in: 0..<nodeCount, using: &random)
                let restart: Int64? = Int.random(in: 0..<10, using: &random) < 3
                    ? nil : min(healAt, at + Int64.random(in: 1000...20_000, using: &random))
                faults.append(.crash(node: node, at: at, restartAt: restart))
            case 3:
                faults.append(.leave(node: Int.random(in: 0..<nodeCount, using: &random), at: at))
            default:
                let node = Int.random(in: 0..<nodeCount, using: &random)
                let until = min(healAt, at + Int64.random(in: 500...10_000, using: &random))
                faults.append(.pause(node: node, at: at, until: until))
            }
        }
        faults = Self.keepingMajorityUp(faults, nodeCount: nodeCount)
        // Drawn from a stream of its own so that adding it left every earlier
        // seed's other draws, and so the regression seeds, as they were.
        var overload = ClusterRandom(seed: seed ^ 0x0510_3000_0000_0003)
        for _ in 0..<Int.random(in: 0...2, using: &overload) {
            let at = Int64.random(in: faultStart..<(healAt - 1000), using: &overload)
            faults.append(.slow(node: Int.random(in: 0..<nodeCount, using: &overload), at: at,
                                until: min(healAt, at + Int64.random(in: 3000...20_000, using: &overload)),
                                extraDelayMs: Int64.random(in: 100...3000, using: &overload)))
        }
        // A stream of its own too, for the same reason.
        var reactors = ClusterRandom(seed: seed ^ 0x0EAC_7000_0000_0004)
        for _ in 0..<Int.random(in: 0...2, using: &reactors) {
            let at = Int64.random(in: faultStart..<(healAt - 1000), using: &reactors)
            faults.append(.reactorLag(node: Int.random(in: 0..<nodeCount, using: &reactors), at: at,
                                      until: min(healAt, at + Int64.random(in: 3000...20_000, using: &reactors)),
                                      lagMs: Int64.random(in: 100...5000, using: &reactors)))
        }
        // Leases draw from their own stream too, leaving membership's draws as they were.
        var leaseDraws = ClusterRandom(seed: seed ^ 0x1EA5_E000_0000_0005)
        let skew = (0..<nodeCount).map { _ in Int64.random(in: -60_000...60_000, using: &leaseDraws) }
        var wiped = Set<NodeMoment>()
        for fault in faults {
            guard case let .crash(node, _, restartAt?) = fault else { continue }
            if Int.random(in: 0..<4, using: &leaseDraws) == 0 { wiped.insert(NodeMoment(node: node, at: restartAt)) }
        }
        // Quick restarts (back within about one lease, before membership
        // suspects the node), from a stream of their own: a holder killed and
        // back so soon is still the preferred candidate, and its log holds
        // only the writes it made as holder. Never wiped: a wipe loses the
        // terms, and the node comes back an empty learner.
        var quick = ClusterRandom(seed: seed ^ 0x0B1C_C000_0000_0006)
        for _ in 0..<(options.quickRestarts ? Int.random(in: 0...2, using: &quick) : 0) {
            let at = Int64.random(in: faultStart..<(healAt - 5000), using: &quick)
            faults.append(.crash(node: Int.random(in: 0..<nodeCount, using: &quick), at: at,
                                 restartAt: at + Int64.random(in: 300...2500, using: &quick)))
        }
        // Restart cascades, from a stream of their own: chaos seed 14 killed
        // three replicas in turn within one restart stand-back, so two
        // restarted nodes stood back at once while the whole replica that
        // had stayed up longest was killed before either stand-back ended
        // (docs/replication.md, "Tried on 2 December and reverted"). Quick
        // restarts bring back at most two nodes, apart, and never do that.
        if options.restartCascades {
            var cascade = ClusterRandom(seed: seed ^ 0x0CA5_CADE_0000_0007)
            var at = Int64.random(in: faultStart..<(healAt - 20_000), using: &cascade)
            for node in (0..<nodeCount).shuffled(using: &cascade).prefix(3) {
                faults.append(.crash(node: node, at: at, restartAt: at + Int64.random(in: 300...4000, using: &cascade)))
                at += Int64.random(in: 1000...6000, using: &cascade)
            }
        }
        var scenario = Scenario(
            seed: seed, kind: kind, nodeCount: nodeCount, lossRate: lossRate,
            duplicateRate: Double.random(in: 0...0.05, using: &random),
            corruptRate: 0.01, delayMinMs: delayMin, delayMaxMs: delayMax, driftPPM: drift,
            faults: faults, healAt: healAt,
            endAt: healAt + (agreementRounds + 5) * timing.gossipIntervalMs,
            lifeguard: lifeguard, settings: timing,
            leaseClockSkewMs: skew, wipedRestarts: wiped, leases: LeaseTiming())
        scenario.endAt = max(scenario.endAt, scenario.leaseLivenessDueAt + timing.gossipIntervalMs)
        scenario.options = options
        return scenario
    }

    /// Permanent crashes are limited to a minority, and never take all of the
    /// seeds (nodes 0...2): a cluster with nobody left to join through cannot
    /// be expected to agree.
    static func keepingMajorityUp(_ faults: [Fault], nodeCount: Int) -> [Fault] {
        var permanentlyDown = Set<Int>()
        var kept: [Fault] = []
        for fault in faults {
            let permanent: Int? = switch fault {
            case let .crash(node, _, nil): node
            case let .leave(node, _): node
            default: nil
            }
            if let node = permanent {
                let seedsLeft = (0..<min(3, nodeCount)).filter { $0 != node && !permanentlyDown.contains($0) }
                guard permanentlyDown.count + 1 <= (nodeCount - 1) / 2, !seedsLeft.isEmpty,
                      !permanentlyDown.contains(node) else { continue }
                permanentlyDown.insert(node)
            }
            kept.append(fault)
        }
        return kept
    }

    public var hasPartition: Bool {
        faults.contains { if case .partition = $0 { true } else { false } }
    }

    public var hasCrash: Bool {
        faults.contains { if case .crash = $0 { true } else { false } }
    }
}
