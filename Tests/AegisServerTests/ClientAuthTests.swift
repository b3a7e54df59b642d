import AegisConfig
@testable import AegisServer
import Testing

/// The pure parts of client authentication: which addresses are loopback,
/// the per-address failure table, and token matching with a rotation.
@Suite("Client auth")
struct ClientAuthTests {
    @Test func loopbackAddresses() throws {
        for text in ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1"] {
            #expect(try #require(ClientAddress(text)).isLoopback, "\(text)")
        }
        for text in ["10.0.0.1", "128.0.0.1", "126.255.255.255", "0.0.0.0", "::", "::2", "fe80::1", "::ffff:10.0.0.1", "2001:db8::1"] {
            #expect(try !#require(ClientAddress(text)).isLoopback, "\(text)")
        }
        #expect(!ClientAddress.unknown.isLoopback)
        #expect(ClientAddress("not an address") == nil)
        #expect(ClientAddress("10.1.2.3")?.description == "10.1.2.3")
        #expect(ClientAddress("2001:db8::1")?.description == "2001:db8::1")
        #expect(ClientAddress("10.1.2.3") == ClientAddress("::ffff:10.1.2.3"))
    }

    static let policy = AuthFailureTable.Policy(threshold: 3, delayMs: 1000, backlogMs: 3000, forgetMs: 60_000, capacity: 4)

    @Test func answersAreSpacedOutPastTheThresholdThenRefused() throws {
        var table = AuthFailureTable(policy: Self.policy)
        let attacker = try #require(ClientAddress("10.0.0.9"))
        let neighbour = try #require(ClientAddress("10.0.0.10"))
        for _ in 0..<3 {
            #expect(table.answerTiming(for: attacker, nowMs: 100) == .now)
            table.noteFailure(from: attacker, nowMs: 100)
        }
        #expect(table.failures(of: attacker) == 3)
        // One answer per second for the address, over all its connections.
        #expect(table.answerTiming(for: attacker, nowMs: 200) == .holdUntil(1200))
        #expect(table.answerTiming(for: attacker, nowMs: 200) == .holdUntil(2200))
        #expect(table.answerTiming(for: attacker, nowMs: 200) == .holdUntil(3200))
        // A fourth would wait past the 3 s backlog: refused, not queued.
        #expect(table.answerTiming(for: attacker, nowMs: 200) == .refuse)
        #expect(table.answerTiming(for: neighbour, nowMs: 200) == .now)
        // Once the queue has drained, the next answer waits one delay again.
        #expect(table.answerTiming(for: attacker, nowMs: 10_000) == .holdUntil(11_000))
        // Forgotten after forgetMs without a failure.
        #expect(table.answerTiming(for: attacker, nowMs: 100 + 60_000) == .now)
        #expect(table.failures(of: attacker) == 0)
    }

    @Test func theTableStaysWithinItsCapacity() throws {
        var table = AuthFailureTable(policy: Self.policy)
        for i in 0..<10 {
            table.noteFailure(from: try #require(ClientAddress("10.0.1.\(i)")), nowMs: Int64(i))
            #expect(table.count <= Self.policy.capacity)
        }
        // The oldest went first; the newest are still counted.
        #expect(table.failures(of: try #require(ClientAddress("10.0.1.0"))) == 0)
        #expect(table.failures(of: try #require(ClientAddress("10.0.1.9"))) == 1)
    }

    @Test func bothTokensMatchDuringARotation() {
        var config = AegisConfig.defaults
        config.authToken = "old-token"
        config.authTokenNext = "new-token"
        let auth = ClientAuth(config)
        #expect(auth.tokenRequired && !auth.refusesNonLoopback)
        #expect(auth.matches("old-token") && auth.matches("new-token"))
        #expect(!auth.matches("old-toke") && !auth.matches("old-token2") && !auth.matches("") && !auth.matches("new-tokeN"))
        config.authToken = "new-token"
        config.authTokenNext = ""
        auth.apply(config)
        #expect(auth.matches("new-token") && !auth.matches("old-token"))
        config.authToken = ""
        auth.apply(config)
        #expect(!auth.tokenRequired && auth.refusesNonLoopback)
        config.protectedMode = false
        auth.apply(config)
        #expect(!auth.refusesNonLoopback)
    }

    @Test func constantTimeCompareChecksEveryByteAndTheLength() {
        func equal(_ a: String, _ b: String) -> Bool {
            Array(a.utf8).withUnsafeBytes { x in Array(b.utf8).withUnsafeBytes { y in constantTimeEquals(x, y) } }
        }
        #expect(equal("abc", "abc") && equal("", ""))
        #expect(!equal("abc", "abd") && !equal("abc", "ab") && !equal("ab", "abc") && !equal("", "a") && !equal("xbc", "abc"))
    }
}
