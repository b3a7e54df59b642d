import AegisCluster
import AegisSimulation
import ArgumentParser
import Dispatch
import Foundation
import Synchronization

@main
struct AegisSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegiskv-sim",
        abstract: "Runs 3 to 16 real AegisCluster nodes over a simulated network and clock, from one seed.",
        discussion: """
            Each seed draws a cluster of 3 to 16 nodes, network loss (0-30%), delay, reordering, \
            duplication, corrupted frames, clock drift (up to 2%), and faults: symmetric and one-way \
            partitions, crashes with or without restart, graceful leaves, process pauses of 0.5-10 s, \
            overloaded nodes (each message handled 0.1-3 s late) and nodes whose reactors lag 0.1-5 s \
            while their cluster loop keeps up (the lag is reported to Lifeguard's local health). \
            Timings: gossip interval 1 s, suspect timeout 4 s, dead timeout 10 s, push/pull every 5 s. \
            Faults heal \(Scenario.healAtMs / 1000) s into the run.

            Invariants checked as it runs:
              1. \(Scenario.agreementRounds) rounds (gossip intervals) after the faults heal, and again \
            at the end, every live node holds every running node alive and every stopped one dead, \
            left or unknown. Sooner: a running node that another running node holds suspect or dead \
            is alive again in its view within 2 x (gossip interval + 2% drift + 2 x the seed's longest \
            delay) of the heal, or of the verdict when that came later.
              2. With loss <= 10% and no partition ("mild" seeds), no node that was running, and \
            neither paused nor overloaded during the last dead_timeout, is declared dead.
              3. A crashed node is suspected by a live node within suspect_timeout + 2 gossip \
            intervals (checked when no loss, partition, pause, overload, reactor lag or other crash could excuse a delay).
              4. A frame that fails authentication changes no state.
              5. Leases (per shard, granted by a majority of its replicas, clocks skewed up to 60 s \
            and drifting up to 2%): at most one holder per shard per term; no two nodes hold one shard's \
            lease at the same true time; terms never go backwards, across restarts too, and are persisted \
            before they are acted on; an empty learner (a restart with a wiped data_dir) never holds a \
            lease; after membership agrees, every shard with a live majority has a holder within a stated bound.

            The last line of --seed N names the seed and the hash of its trace; the same seed always \
            gives the same hash. A failing seed prints the command that replays it.
            """
    )

    @Option(help: "Run this one seed and print its trace hash.")
    var seed: UInt64?

    @Option(help: "Run this many seeds, after the fixed regression seeds.")
    var seeds: Int?

    @Option(help: "First seed of --seeds (default: drawn at random and printed).")
    var firstSeed: UInt64?

    @Flag(help: "Measure false positives (loss <= 10%, no partition, pauses) with Lifeguard on and off, over --seeds.")
    var falsePositives = false

    @Flag(help: "Plain SWIM: no local health awareness, fixed suspicion timeout.")
    var noLifeguard = false

    @Option(help: "Force the scenario kind: chaos or mild (default: drawn from the seed).")
    var kind: String?

    @Flag(help: "Add 0-2 quick restarts per seed: a node killed and back within 0.3-2.5 s, before membership suspects it (a holder back so soon is still the preferred candidate).")
    var quickRestarts = false

    @Flag(help: "Add one restart cascade per seed: three nodes killed in turn, each back within 0.3-4 s, the next killed 1-6 s after the one before, so restarted nodes stand back at once (chaos seed 14).")
    var restartCascades = false

    @Flag(help: "A crash keeps only the node's log (the writes it made as holder), not what it received as a follower, as in the server: a restarted copy can have a hole below its newest version.")
    var crashKeepsOnlyTheLog = false

    @Flag(help: "Report a lease won below an acknowledged write also when only one running replica besides the winner held the write (by default two must: one may be a double fault).")
    var strictKeepers = false

    @Flag(help: "Start every node with each shard's replica configuration persisted (epoch 1, the placement's owners), as a founded cluster: majorities counted over configs, asks carrying them.")
    var configs = false

    @Flag(help: "Implies --configs: holders move shards to random new voters before the heal (model stream, then the joint and final steps), W = 2 counted in each set.")
    var configChanges = false

    @Flag(help: "A wiped restart comes back as on a first start (no terms, not an empty learner), as the server does after its whole data_dir was removed.")
    var wipesLookNew = false

    @Flag(help: "A crash keeps the terms and nothing else, as the server with wal_mode off (its default): a restarted node's copies are empty.")
    var logOff = false

    @Flag(help: "Print each scenario and every violation.")
    var verbose = false

    var options: Scenario.Options {
        Scenario.Options(quickRestarts: quickRestarts, restartCascades: restartCascades,
                         crashKeepsOnlyTheLog: crashKeepsOnlyTheLog, strictKeepers: strictKeepers, configs: configs,
                         configChanges: configChanges, wipesLookNew: wipesLookNew, logOff: logOff)
    }

    mutating func validate() throws {
        guard (seed == nil) != (seeds == nil) else { throw ValidationError("give exactly one of --seed N and --seeds N") }
        if let seeds, seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if let kind, Scenario.Kind(rawValue: kind) == nil { throw ValidationError("--kind is chaos or mild") }
        if falsePositives && seeds == nil { throw ValidationError("--false-positives needs --seeds N") }
        if logOff && crashKeepsOnlyTheLog { throw ValidationError("--log-off and --crash-keeps-only-the-log say opposite things of what a crash keeps") }
    }

    func run() throws {
        let kind = self.kind.flatMap(Scenario.Kind.init(rawValue:))
        if let seed {
            try runOne(seed: seed, kind: kind)
        } else if let seeds, falsePositives {
            measureFalsePositives(count: seeds)
        } else if let seeds {
            try runMany(count: seeds, kind: kind)
        }
    }

    func replayCommand(_ seed: UInt64, kind: Scenario.Kind?) -> String {
        var command = "aegiskv-sim --seed \(seed)"
        if noLifeguard { command += " --no-lifeguard" }
        command += options.flags
        if let kind { command += " --kind \(kind.rawValue)" }
        return command
    }

    /// The scenario of a seed under this run's options; Sendable, so the
    /// parallel runs can call it without capturing the command.
    func scenarios(kind: Scenario.Kind?) -> @Sendable (UInt64) -> Scenario {
        let lifeguard = !noLifeguard, options = options
        return { seed in Scenario.generate(seed: seed, kind: kind, lifeguard: lifeguard, options: options) }
    }

    func runOne(seed: UInt64, kind: Scenario.Kind?) throws {
        let scenario = scenarios(kind: kind)(seed)
        let started = DispatchTime.now().uptimeNanoseconds
        let report = Simulation(scenario: scenario).run()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        print(describe(scenario))
        print("events \(report.eventsProcessed), frames \(report.framesSent), corrupted frames refused \(report.corruptFramesRefused), simulated \(scenario.endAt / 1000) s in \(String(format: "%.3f", seconds)) s")
        print("crash -> first suspect: \(Distribution(report.suspectDelaysMs).summary)")
        print("crash -> first dead: \(Distribution(report.deadDelaysMs).summary)")
        print("false dead verdicts: \(report.falseDeaths), false suspect verdicts: \(report.falseSuspicions)")
        print("leases acquired \(report.leasesAcquired), term changes \(report.termChanges), corrupted lease frames refused \(report.corruptLeaseFramesRefused), restarted copies replayed whole \(report.replayedWholeCopies), configs adopted \(report.configsAdopted), config changes proposed \(report.configChangesProposed), configs committed \(report.configsCommitted), hand-offs \(report.handOffsReleased) of \(report.handOffsStarted), leases let go for a newer whole copy \(report.yieldsToNewerWholeCopies), restarts still blank \(report.restartsStillBlank)")
        for violation in report.violations { print("VIOLATION \(violation)") }
        if !report.passed { print("replay: \(replayCommand(seed, kind: kind))") }
        print("seed \(seed) trace \(hex(report.traceHash)) \(report.passed ? "ok" : "FAILED")")
        if !report.passed { throw ExitCode.failure }
    }

    func runMany(count: Int, kind: Scenario.Kind?) throws {
        let first = firstSeed ?? UInt64.random(in: 0..<(UInt64.max / 2))
        let list = RegressionSeeds.seeds + (0..<UInt64(count)).map { first &+ $0 }
        print("running \(RegressionSeeds.seeds.count) regression seeds and \(count) seeds from \(first)")
        let scenario = scenarios(kind: kind)
        let started = DispatchTime.now().uptimeNanoseconds
        let reports = runInParallel(list) { seed in Simulation(scenario: scenario(seed)).run() }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        // Determinism: the first seed again must give the same trace.
        let again = Simulation(scenario: scenario(list[0])).run()
        var failed = reports.filter { !$0.passed }
        if again.traceHash != reports[0].traceHash {
            print("NONDETERMINISM seed \(list[0]): trace \(hex(reports[0].traceHash)) then \(hex(again.traceHash))")
        }
        for report in failed {
            print("FAILED seed \(report.scenario.seed) (\(report.scenario.kind.rawValue), \(report.scenario.nodeCount) nodes)")
            let shown = verbose ? report.violations : Array(report.violations.prefix(3))
            for violation in shown { print("  \(violation)") }
            print("  replay: \(replayCommand(report.scenario.seed, kind: kind))")
        }
        let suspect = Distribution(reports.flatMap(\.suspectDelaysMs))
        let dead = Distribution(reports.flatMap(\.deadDelaysMs))
        let nodeSeconds = reports.map(\.nodeSeconds).reduce(0, +)
        print("crash -> first suspect: \(suspect.summary)")
        print("crash -> first dead: \(dead.summary)")
        print("false deaths (all kinds): \(reports.map(\.falseDeaths).reduce(0, +)) in \(Int(nodeSeconds / 3600)) simulated node-hours")
        print("corrupted frames refused: \(reports.map(\.corruptFramesRefused).reduce(0, +)) membership, \(reports.map(\.corruptLeaseFramesRefused).reduce(0, +)) lease")
        let faults = reports.map { $0.scenario.faults.count + $0.scenario.wipedRestarts.count }.reduce(0, +)
        print("faults injected: \(faults) (partitions, crashes, wiped restarts, pauses, leaves, overloads, lagging reactors; plus loss, duplication, corruption, drift and ±60 s lease clock skew in every seed)")
        print("leases acquired: \(reports.map(\.leasesAcquired).reduce(0, +)), term changes: \(reports.map(\.termChanges).reduce(0, +)), restarted copies replayed whole: \(reports.map(\.replayedWholeCopies).reduce(0, +)), configs adopted: \(reports.map(\.configsAdopted).reduce(0, +)), config changes proposed: \(reports.map(\.configChangesProposed).reduce(0, +)), configs committed: \(reports.map(\.configsCommitted).reduce(0, +)), hand-offs released: \(reports.map(\.handOffsReleased).reduce(0, +)) of \(reports.map(\.handOffsStarted).reduce(0, +)), releases before the target's ask: \(reports.map(\.releasesBeforeAsk).reduce(0, +)), leases let go for a newer whole copy: \(reports.map(\.yieldsToNewerWholeCopies).reduce(0, +)) in \(reports.count { $0.yieldsToNewerWholeCopies > 0 }) seeds, restarts still blank: \(reports.map(\.restartsStillBlank).reduce(0, +)) in \(reports.count { $0.restartsStillBlank > 0 }) seeds")
        if again.traceHash != reports[0].traceHash { failed.append(again) }
        print("\(list.count) seeds in \(String(format: "%.1f", seconds)) s: \(list.count - failed.count) passed, \(failed.count) failed (first seed \(first))")
        if !failed.isEmpty { throw ExitCode.failure }
    }

    func measureFalsePositives(count: Int) {
        let first = firstSeed ?? 1
        let list = (0..<UInt64(count)).map { first &+ $0 }
        print("false positives over \(count) mild seeds from \(first): loss 0-10%, delay, duplication, drift, pauses 0.5-10 s, overloaded nodes, lagging reactors, no partition, no crash; verdicts about a node paused, overloaded or cut off in the dead_timeout before are not counted")
        for lifeguard in [true, false] {
            let started = DispatchTime.now().uptimeNanoseconds
            let reports = runInParallel(list) { seed in
                var scenario = Scenario.generate(seed: seed, kind: .mild, lifeguard: lifeguard)
                // Only the fault window matters here; the agreement phase after it is skipped.
                scenario.endAt = scenario.healAt
                return Simulation(scenario: scenario).run()
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            let nodeHours = reports.map(\.nodeSeconds).reduce(0, +) / 3600
            let deaths = reports.map(\.falseDeaths).reduce(0, +)
            let suspicions = reports.map(\.falseSuspicions).reduce(0, +)
            let seedsWithDeaths = reports.filter { $0.falseDeaths > 0 }.count
            let seedsWithSuspicions = reports.filter { $0.falseSuspicions > 0 }.count
            let label = lifeguard ? "lifeguard on " : "lifeguard off"
            print("\(label): false dead: \(deaths) verdicts, \(seedsWithDeaths) of \(count) seeds (\(percent(seedsWithDeaths, count))); false suspect: \(suspicions) verdicts, \(seedsWithSuspicions) of \(count) seeds (\(percent(seedsWithSuspicions, count))); \(Int(nodeHours)) node-hours, \(String(format: "%.1f", seconds)) s")
        }
    }

    func runInParallel(_ seeds: [UInt64], _ body: @escaping @Sendable (UInt64) -> SimulationReport) -> [SimulationReport] {
        let results = Mutex<[Int: SimulationReport]>([:])
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var index = worker
            while index < seeds.count {
                let report = body(seeds[index])
                results.withLock { $0[index] = report }
                index += workers
            }
        }
        return results.withLock { collected in seeds.indices.map { collected[$0]! } }
    }

    func describe(_ scenario: Scenario) -> String {
        var lines = ["seed \(scenario.seed): \(scenario.kind.rawValue), \(scenario.nodeCount) nodes, lifeguard \(scenario.lifeguard ? "on" : "off"), loss \(String(format: "%.1f", scenario.lossRate * 100))%, delay \(scenario.delayMinMs)-\(scenario.delayMaxMs) ms, duplicates \(String(format: "%.1f", scenario.duplicateRate * 100))%, heal at \(scenario.healAt) ms"]
        for fault in scenario.faults {
            switch fault {
            case let .partition(from, to, at, until): lines.append("  partition \(from) -> \(to) from \(at) to \(until) ms")
            case let .crash(node, at, restartAt):
                let wiped = restartAt.map { scenario.wipedRestarts.contains(Scenario.NodeMoment(node: node, at: $0)) } ?? false
                lines.append("  crash node\(node) at \(at) ms, restart \(restartAt.map { "at \($0) ms" } ?? "never")\(wiped ? " with a wiped data_dir (empty learner)" : "")")
            case let .pause(node, at, until): lines.append("  pause node\(node) from \(at) to \(until) ms")
            case let .leave(node, at): lines.append("  node\(node) leaves at \(at) ms")
            case let .slow(node, at, until, extra): lines.append("  node\(node) overloaded (+\(extra) ms per message) from \(at) to \(until) ms")
            case let .reactorLag(node, at, until, lag): lines.append("  node\(node) reactors \(lag) ms late (cluster loop on time) from \(at) to \(until) ms")
            }
        }
        return lines.joined(separator: "\n")
    }

    func percent(_ part: Int, _ whole: Int) -> String {
        String(format: "%.2f%%", 100 * Double(part) / Double(max(1, whole)))
    }

    func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
