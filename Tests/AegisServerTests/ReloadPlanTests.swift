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
        loaded.authToken = "secret"
        let plan = ReloadPlan(running: running, loaded: loaded)
        #expect(plan.applied.map(\.key) == ["seeds", "log_level"])
        #expect(plan.restartRequired.map(\.key) == ["max_memory_mb", "auth_token"])
        #expect(plan.next.logLevel == "debug" && plan.next.seeds == ["a:1"])
        #expect(plan.next.maxMemoryMB == running.maxMemoryMB && plan.next.authToken == "")
        let report = plan.report(notes: ["seeds": "stored", "auth_token": "never shown"])
        #expect(report == #"reload: applied seeds "" → a:1 (stored), log_level info → debug; not applied, restart required: max_memory_mb 1024 → 2048, auth_token "" → <redacted>"#)
        #expect(!report.contains("secret"))
    }

    @Test func nothingChanged() {
        let plan = ReloadPlan(running: .defaults, loaded: .defaults)
        #expect(plan.isEmpty)
        #expect(plan.report() == "reload: configuration unchanged")
    }
}
