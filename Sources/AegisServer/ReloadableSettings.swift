import AegisConfig
import AegisLogging
import Logging

extension NodeContext {
    /// Puts the reloadable `keys` of `next` into effect and records `next`
    /// as the running configuration. The one place both SIGHUP reloads
    /// (Supervisor) and CONFIG SET (any reactor) go through, so the two
    /// never disagree about what runs.
    func applyReloadable(_ next: AegisConfig, keys: Set<String>) {
        runtime.apply(next, keys: keys)
        runtime.setRunning(next)
        if !keys.isDisjoint(with: CircuitBreakerPolicy.configKeys) {
            breakers.setPolicy(CircuitBreakerPolicy(next))
        }
        if keys.contains("seeds") {
            cluster.post(.seeds(next.seeds))
        }
        if keys.contains("log_level"), let level = Logger.Level(rawValue: next.logLevel) {
            LogControl.shared.level = level
        }
    }
}
