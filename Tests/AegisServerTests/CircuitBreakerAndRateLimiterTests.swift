@testable import AegisAdmin
import AegisConfig
@testable import AegisServer
import Testing

/// The automatic side of the circuit breakers. Nothing in a single node
/// calls out yet, so these record outcomes against the registry directly,
/// with explicit clock values.
struct CircuitBreakerTests {
    let policy = CircuitBreakerPolicy(errorRateThreshold: 0.5, minimumCalls: 10, windowSeconds: 10, coolDownMs: 5_000, halfOpenTrials: 2)

    @Test func opensOnErrorRateOverTheWindowOnly() {
        let registry = CircuitBreakerRegistry(policy: policy)
        // 9 calls, all failing: below minimumCalls, stays closed.
        for _ in 0..<9 { registry.record("replication", success: false, nowMs: 1_000) }
        #expect(registry.status("replication", nowMs: 1_000)?.state == .closed)
        // 10th call: 10 failures of 10 -> open.
        registry.record("replication", success: false, nowMs: 1_500)
        let open = registry.status("replication", nowMs: 1_500)!
        #expect(open.state == .open && !open.manual && open.trips == 1)
        #expect(open.retryInMs == 5_000)
        #expect(!registry.allow("replication", nowMs: 2_000))
        #expect(registry.status("replication", nowMs: 2_000)?.totalRejected == 1)
    }

    @Test func healthyTrafficKeepsItClosedAndOldFailuresAge() {
        let registry = CircuitBreakerRegistry(policy: policy)
        for i in 0..<40 { registry.record("forwarding", success: i % 3 != 0, nowMs: 1_000) } // 14 of 40 fail
        #expect(registry.status("forwarding", nowMs: 1_000)?.state == .closed)
        // Failures 20 s ago are out of the 10 s window.
        for _ in 0..<9 { registry.record("downstream", success: false, nowMs: 1_000) }
        for _ in 0..<9 { registry.record("downstream", success: false, nowMs: 21_000) }
        #expect(registry.status("downstream", nowMs: 21_000)?.state == .closed)
        #expect(registry.status("downstream", nowMs: 21_000)?.windowCalls == 9)
    }

    @Test func halfOpensAfterCoolDownThenClosesOrReopens() {
        let registry = CircuitBreakerRegistry(policy: policy)
        for _ in 0..<10 { registry.record("peer-a", success: false, nowMs: 0) }
        #expect(!registry.allow("peer-a", nowMs: 4_999))
        #expect(registry.status("peer-a", nowMs: 5_000)?.state == .halfOpen)
        // Two trial calls let through, a third is refused until they report.
        #expect(registry.allow("peer-a", nowMs: 5_000))
        #expect(registry.allow("peer-a", nowMs: 5_000))
        #expect(!registry.allow("peer-a", nowMs: 5_000))
        registry.record("peer-a", success: true, nowMs: 5_010)
        registry.record("peer-a", success: true, nowMs: 5_020)
        #expect(registry.status("peer-a", nowMs: 5_020)?.state == .closed)

        for _ in 0..<10 { registry.record("peer-b", success: false, nowMs: 0) }
        #expect(registry.allow("peer-b", nowMs: 6_000))
        registry.record("peer-b", success: false, nowMs: 6_001)
        let reopened = registry.status("peer-b", nowMs: 6_001)!
        #expect(reopened.state == .open && reopened.trips == 2)
    }

    @Test func manualTripStaysOpenUntilReset() {
        let registry = CircuitBreakerRegistry(policy: policy)
        registry.trip("downstream", nowMs: 0)
        #expect(registry.status("downstream", nowMs: 1_000_000)?.state == .open)
        #expect(!registry.allow("downstream", nowMs: 1_000_000))
        #expect(registry.reset("downstream")?.state == .closed)
        #expect(registry.allow("downstream", nowMs: 1_000_001))
        #expect(registry.reset("no-such-service") == nil)
        #expect(registry.statuses().map(\.service) == ["downstream", "forwarding", "replication"])
    }

    /// A registry built from a configured policy opens at that error rate
    /// and not below it: 20% with at least 5 calls, over 30 s.
    @Test func customPolicyOpensAtItsErrorRateAndNotBelow() throws {
        var config = AegisConfig.defaults
        config.breakerErrorRate = 0.2
        config.breakerMinCalls = 5
        config.breakerWindow = .seconds(30)
        config.breakerCooldown = .milliseconds(1500)
        config.breakerHalfOpenTrials = 1
        let custom = CircuitBreakerPolicy(config)
        #expect(custom == CircuitBreakerPolicy(errorRateThreshold: 0.2, minimumCalls: 5, windowSeconds: 30,
                                               coolDownMs: 1_500, halfOpenTrials: 1))
        let registry = CircuitBreakerRegistry(policy: custom)
        // 1 failure in 6 calls (16.7%) is below 20%: closed, where the
        // default policy's 20-call minimum would not even count it.
        for i in 0..<6 { registry.record("replication", success: i != 5, nowMs: 1_000) }
        #expect(registry.status("replication", nowMs: 1_000)?.state == .closed)
        // 2 in 10 (20%), with the second failure 25 s later, still inside the 30 s window: open.
        for _ in 0..<3 { registry.record("replication", success: true, nowMs: 26_000) }
        #expect(registry.status("replication", nowMs: 26_000)?.state == .closed)
        registry.record("replication", success: false, nowMs: 26_000)
        let open = try #require(registry.status("replication", nowMs: 26_000))
        #expect(open.state == .open && open.windowCalls == 10 && open.windowFailures == 2)
        #expect(open.retryInMs == 1_500)
        #expect(registry.status("replication", nowMs: 27_500)?.state == .halfOpen)

        // The same traffic under the default policy (50%, 20 calls) stays closed.
        let defaults = CircuitBreakerRegistry(policy: CircuitBreakerPolicy(.defaults))
        for i in 0..<10 { defaults.record("replication", success: i % 5 != 0, nowMs: 1_000) }
        #expect(defaults.status("replication", nowMs: 1_000)?.state == .closed)
        #expect(defaults.policy == CircuitBreakerPolicy())
    }

    /// SIGHUP replaces the policy of breakers that exist already and of
    /// those made afterwards.
    @Test func setPolicyAppliesToExistingAndNewBreakers() {
        let registry = CircuitBreakerRegistry(policy: policy)
        // 4 failures of 10 calls: below 50%, closed.
        for i in 0..<10 { registry.record("replication", success: i >= 4, nowMs: 1_000) }
        #expect(registry.status("replication", nowMs: 1_000)?.state == .closed)
        registry.setPolicy(CircuitBreakerPolicy(errorRateThreshold: 0.4, minimumCalls: 10, windowSeconds: 5,
                                                coolDownMs: 1_000, halfOpenTrials: 1))
        #expect(registry.policy.errorRateThreshold == 0.4)
        // The window kept its counts through the resize; one more success
        // keeps 4 of 11 (36%) below 40%, one more failure makes 5 of 12.
        registry.record("replication", success: true, nowMs: 1_000)
        #expect(registry.status("replication", nowMs: 1_000)?.windowCalls == 11)
        #expect(registry.status("replication", nowMs: 1_000)?.state == .closed)
        registry.record("replication", success: false, nowMs: 1_000)
        #expect(registry.status("replication", nowMs: 1_000)?.state == .open)
        #expect(registry.status("replication", nowMs: 1_000)?.retryInMs == 1_000)
        // A breaker created after the change uses the new window: calls 6 s apart do not add up.
        for _ in 0..<9 { registry.record("peer-x", success: false, nowMs: 10_000) }
        registry.record("peer-x", success: false, nowMs: 16_000)
        #expect(registry.status("peer-x", nowMs: 16_000)?.windowCalls == 1)
        #expect(registry.status("peer-x", nowMs: 16_000)?.state == .closed)
    }

    /// A reload that changes halfOpenTrials while a breaker is half-open
    /// must neither strand it (no trials left, never closing) nor ignore it.
    @Test func changedTrialCountAppliesToAHalfOpenBreaker() {
        let registry = CircuitBreakerRegistry(policy: policy) // 2 trials, 5 s cool-down
        for _ in 0..<10 { registry.record("peer-a", success: false, nowMs: 0) }
        #expect(registry.allow("peer-a", nowMs: 5_000))
        #expect(registry.allow("peer-a", nowMs: 5_000))
        #expect(!registry.allow("peer-a", nowMs: 5_000))
        var more = policy
        more.halfOpenTrials = 3
        registry.setPolicy(more)
        // A third trial is now allowed, and two successes no longer close it.
        #expect(registry.allow("peer-a", nowMs: 5_001))
        registry.record("peer-a", success: true, nowMs: 5_002)
        registry.record("peer-a", success: true, nowMs: 5_002)
        #expect(registry.status("peer-a", nowMs: 5_002)?.state == .halfOpen)
        // Lowered back to 2 with 2 successes already seen: it closes.
        registry.setPolicy(policy)
        #expect(registry.status("peer-a", nowMs: 5_003)?.state == .closed)
        #expect(registry.allow("peer-a", nowMs: 5_003))
    }

    @Test func serviceNames() {
        #expect(CircuitBreakerRegistry.isValidName("node-3.dc1:7701"))
        #expect(!CircuitBreakerRegistry.isValidName(""))
        #expect(!CircuitBreakerRegistry.isValidName("a b"))
        #expect(!CircuitBreakerRegistry.isValidName(String(repeating: "x", count: 129)))
    }
}

struct RateLimiterTests {
    func limiter(rate: Int, burst: Int = 0, reactors: Int = 2) -> (RateLimiter, RuntimeSettings) {
        var config = AegisConfig.defaults
        config.rateLimit = rate
        config.rateBurst = burst
        let runtime = RuntimeSettings(config)
        return (RateLimiter(runtime: runtime, reactorCount: reactors), runtime)
    }

    @Test func grantsTheBurstThenRefillsWithTime() {
        let (bucket, _) = limiter(rate: 100, burst: 50)
        var granted = 0
        while true {
            let got = bucket.take(7, nowNs: 1_000_000_000)
            if got == 0 { break }
            granted += got
        }
        #expect(granted == 50)
        // 100 ms later: 10 tokens.
        #expect(bucket.take(1000, nowNs: 1_100_000_000) == 10)
        #expect(bucket.take(1, nowNs: 1_100_000_000) == 0)
        // A long pause refills to the burst, not beyond.
        #expect(bucket.take(1000, nowNs: 100_000_000_000) == 50)
    }

    @Test func offMeansEverythingAndAChangeRefillsToTheNewBurst() {
        let (bucket, runtime) = limiter(rate: 0)
        #expect(bucket.take(12345, nowNs: 0) == 12345)
        runtime.setRateLimit(opsPerSecond: 10, burst: 0)
        #expect(bucket.take(100, nowNs: 0) == 10) // burst 0 = same as the rate
        #expect(bucket.take(1, nowNs: 0) == 0)
        runtime.setRateLimit(opsPerSecond: 1000, burst: 200)
        #expect(bucket.take(1000, nowNs: 0) == 200)
    }

    @Test func chunksAreAboutOnePercentPerReactor() {
        let (bucket, _) = limiter(rate: 0, reactors: 4)
        #expect(bucket.chunkSize(rate: 5) == 1)
        #expect(bucket.chunkSize(rate: 100_000) == 250)
        #expect(bucket.chunkSize(rate: Int(Int32.max)) == 1000)
    }
}

struct MetricsFormatTests {
    @Test func acceptHeaderChoosesTheFormat() {
        #expect(MetricsFormat.negotiate(accept: nil) == .plain)
        #expect(MetricsFormat.negotiate(accept: "*/*") == .plain)
        #expect(MetricsFormat.negotiate(accept: "text/plain") == .plain)
        #expect(MetricsFormat.negotiate(accept: "text/plain;version=0.0.4;q=0.5,*/*;q=0.1") == .prometheus)
        #expect(MetricsFormat.negotiate(accept: "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5") == .openMetrics)
        #expect(MetricsFormat.negotiate(accept: "application/openmetrics-text;q=0.2,text/plain;version=0.0.4") == .prometheus)
        #expect(MetricsFormat.negotiate(accept: "application/openmetrics-text;q=0") == .plain)
    }

    @Test func bucketBoundsArePlainDecimals() {
        #expect(MetricsExposition.bucketLabels.first == "0.00005")
        #expect(MetricsExposition.bucketLabels.contains("0.001"))
        #expect(MetricsExposition.bucketLabels.last == "+Inf")
        #expect(MetricsExposition.formatSeconds(nanoseconds: 2_500_000_000) == "2.5")
    }
}
