import AegisConfig
import AegisServer
import Testing

@Suite("Reload plan")
struct ReloadPlanTests {
    @Test func reloadableChangesApplyAndOthersStay() {
        let running = AegisConfig.defaults
        var loaded = running
        loaded.logLevel = "debug"
        loaded.seeds = ["a:1"]
        loaded.maxMemoryMB = 2048
        loaded.gossipSecret = "hunter2"
        let plan = ReloadPlan(running: running, loaded: loaded)
        #expect(plan.applied.map(\.key) == ["seeds", "log_level"])
        #expect(plan.restartRequired.map(\.key) == ["max_memory_mb", "gossip_secret"])
        #expect(plan.next.logLevel == "debug" && plan.next.seeds == ["a:1"])
        #expect(plan.next.maxMemoryMB == running.maxMemoryMB && plan.next.gossipSecret == "")
        let report = plan.report(notes: ["seeds": "stored", "gossip_secret": "never shown"])
        #expect(report == #"reload: applied seeds "" → a:1 (stored), log_level info → debug; not applied, restart required: max_memory_mb 1024 → 2048, gossip_secret "" → <redacted>"#)
        #expect(!report.contains("hunter2"))
    }

    @Test func nothingChanged() {
        let plan = ReloadPlan(running: .defaults, loaded: .defaults)
        #expect(plan.isEmpty)
        #expect(plan.report() == "reload: configuration unchanged")
    }
}
