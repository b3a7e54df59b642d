import AegisConfig
@testable import AegisServer
import Glibc
import Testing

@Suite("Open file budget and accept pause")
struct OpenFileBudgetTests {
    static func loaded(maxConns: Int?) -> LoadedConfig {
        var config = AegisConfig.defaults
        var set: [String: ConfigSource] = [:]
        if let maxConns {
            config.maxConns = maxConns
            set["max_conns"] = .flag("--max-conns")
        }
        return LoadedConfig(config: config, explicitlySet: set)
    }

    @Test func theDefaultFollowsTheLimitAndAChosenValueIsKept() {
        let budget = OpenFileBudget(fileLimit: 20_000, reactors: 2)
        #expect(budget.reserved == 64 + OperationsPortLimits.maxConnections + 32)
        #expect(budget.verdict(for: Self.loaded(maxConns: nil)) == .defaultLowered(to: 20_000 - budget.reserved))
        #expect(budget.fitted(Self.loaded(maxConns: nil)).config.maxConns == 20_000 - budget.reserved)
        #expect(budget.verdict(for: Self.loaded(maxConns: 50_000)) == .cannotHonour(possible: 20_000 - budget.reserved))
        #expect(budget.fitted(Self.loaded(maxConns: 50_000)).config.maxConns == 50_000)
        #expect(budget.verdict(for: Self.loaded(maxConns: 1000)) == .fits)
        #expect(OpenFileBudget(fileLimit: 1_048_576, reactors: 8).verdict(for: Self.loaded(maxConns: nil)) == .fits)
        // An unreadable limit changes nothing.
        #expect(OpenFileBudget(fileLimit: -1, reactors: 2).verdict(for: Self.loaded(maxConns: nil)) == .fits)
        // A limit below the reserve still leaves one connection.
        #expect(OpenFileBudget(fileLimit: 50, reactors: 2).connectionsPossible == 1)
    }

    @Test func acceptFailuresAreReportedOncePerIntervalWithTheirCount() {
        var pause = AcceptPause()
        #expect(pause.noteAccepted() == nil)
        let first = pause.noteFailure(error: EMFILE, nowMs: 1_000)
        #expect(first?.failures == 1 && pause.isPaused)
        var reports = 0
        // Ten failures a second (one per maintenance tick) for 25 s.
        for tick in 1...250 {
            pause.resume()
            if pause.noteFailure(error: EMFILE, nowMs: 1_000 + Int64(tick) * 100) != nil { reports += 1 }
        }
        #expect(reports == 2)
        let next = pause.noteFailure(error: EMFILE, nowMs: 31_000)
        #expect(next?.failures == 51)
        #expect(pause.noteAccepted() == 252)
        #expect(pause.noteAccepted() == nil)
        // A new outage is reported at once.
        #expect(pause.noteFailure(error: ENFILE, nowMs: 31_100)?.failures == 1)
        #expect(AcceptPause.concernsOneConnection(ECONNABORTED) && !AcceptPause.concernsOneConnection(EMFILE))
    }
}
