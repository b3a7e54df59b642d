import AegisCluster
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
        if !keys.isDisjoint(with: ClientAuth.configKeys) {
            clientAuth.apply(next)
        }
        if keys.contains("seeds") {
            cluster.post(.seeds(next.seeds))
        }
        if !keys.isDisjoint(with: ["gossip_interval", "suspect_timeout", "dead_timeout"]) {
            // The loader already refused an order that cannot run (interval <
            // suspect < dead); the state machine checks again and keeps its
            // old timings, with a warning, if they still could not.
            cluster.post(.timings(MembershipTimings(
                gossipIntervalMs: next.gossipInterval.milliseconds,
                suspectTimeoutMs: next.suspectTimeout.milliseconds,
                deadTimeoutMs: next.deadTimeout.milliseconds)))
        }
        if keys.contains("log_level"), let level = Logger.Level(rawValue: next.logLevel) {
            LogControl.shared.level = level
        }
    }
}
