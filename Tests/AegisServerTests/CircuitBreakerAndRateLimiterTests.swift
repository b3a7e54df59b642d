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
