import AegisConfig
import Logging
import Synchronization

/// Who may use the client port, shared by every reactor and the operations
/// server: the tokens (auth_token, and auth_token_next during a rotation),
/// protected mode, the AUTH deadline, and the count of failed AUTH per
/// client address that slows down guessing.
///
/// Reads on the request path are relaxed atomics (`tokenRequired` at
/// accept and for a connection not logged in); the tokens and the failure
/// table sit behind mutexes taken only for AUTH itself, which is rare.
public final class ClientAuth: Sendable {
    private let tokens: Mutex<[[UInt8]]>
    private let tokenIsSet = Atomic<Bool>(false)
    private let protectedModeOn = Atomic<Bool>(true)
    private let authTimeout = Atomic<Int64>(0)
    private let failures: Mutex<AuthFailureTable>
    /// TLS with tls_ca_file: every client has shown a certificate the CA
    /// signed before it can send a byte, which authenticates it as a token
    /// would. Fixed at start (the TLS keys need a restart).
    private let clientCertificatesVerified: Bool

    /// Counters for /metrics (all monotonic).
    let failedAttempts = Atomic<Int>(0)
    let delayedAnswers = Atomic<Int>(0)
    let refusedAttempts = Atomic<Int>(0)
    let authTimeouts = Atomic<Int>(0)
    let protectedModeRefusals = Atomic<Int>(0)

    public init(_ config: AegisConfig, failurePolicy: AuthFailureTable.Policy = .standard) {
        tokens = Mutex([])
        failures = Mutex(AuthFailureTable(policy: failurePolicy))
        clientCertificatesVerified = Self.verifiesClientCertificates(config)
        apply(config)
    }

    /// The keys `apply` reads; a reload touching one of them calls it.
    public static let configKeys: Set<String> = ["auth_token", "auth_token_next", "protected_mode", "auth_timeout"]

    public func apply(_ config: AegisConfig) {
        let accepted = [config.authToken, config.authTokenNext].filter { !$0.isEmpty }.map { Array($0.utf8) }
        tokens.withLock { $0 = accepted }
        tokenIsSet.store(!accepted.isEmpty, ordering: .relaxed)
        protectedModeOn.store(config.protectedMode, ordering: .relaxed)
        authTimeout.store(config.authTimeout.milliseconds, ordering: .relaxed)
    }

    /// A client must send AUTH before anything else.
    public var tokenRequired: Bool { tokenIsSet.load(ordering: .relaxed) }
    public var protectedMode: Bool { protectedModeOn.load(ordering: .relaxed) }
    /// Protected mode in force: on, and nothing else authenticates clients.
    public var refusesNonLoopback: Bool { protectedMode && !tokenRequired && !clientCertificatesVerified }

    static func verifiesClientCertificates(_ config: AegisConfig) -> Bool { config.tlsEnabled && !config.tlsCAFile.isEmpty }
    /// How long a connection may stay without AUTH while a token is set; 0 = no limit.
    public var authTimeoutMs: Int64 { authTimeout.load(ordering: .relaxed) }

    /// True when `given` is one of the accepted tokens. Every token is
    /// compared in full, whichever matched, so the time taken tells neither
    /// which one nor how many leading bytes were right.
    public func matches(_ given: UnsafeRawBufferPointer) -> Bool {
        tokens.withLock { accepted in
            var matched = false
            for token in accepted {
                let equal = token.withUnsafeBytes { constantTimeEquals(given, $0) }
                matched = matched || equal
            }
            return matched
        }
    }

    public func matches(_ given: String) -> Bool {
        var copy = given
        return copy.withUTF8 { matches(UnsafeRawBufferPointer($0)) }
    }

    /// When to answer an AUTH from `address` (see AuthFailureTable).
    func answerTiming(for address: ClientAddress, nowMs: Int64) -> AuthFailureTable.Timing {
        let timing = failures.withLock { $0.answerTiming(for: address, nowMs: nowMs) }
        switch timing {
        case .now: break
        case .holdUntil: delayedAnswers.add(1, ordering: .relaxed)
        case .refuse: refusedAttempts.add(1, ordering: .relaxed)
        }
        return timing
    }

    func noteFailure(from address: ClientAddress, nowMs: Int64) {
        failedAttempts.add(1, ordering: .relaxed)
        failures.withLock { $0.noteFailure(from: address, nowMs: nowMs) }
    }

    /// Addresses with failures on record, for /stats.
    public var addressesWithFailures: Int { failures.withLock { $0.count } }
    public var failedAttemptsTotal: Int { failedAttempts.load(ordering: .relaxed) }
    public var delayedAnswersTotal: Int { delayedAnswers.load(ordering: .relaxed) }
    public var refusedAttemptsTotal: Int { refusedAttempts.load(ordering: .relaxed) }
    public var authTimeoutsTotal: Int { authTimeouts.load(ordering: .relaxed) }
    public var protectedModeRefusalsTotal: Int { protectedModeRefusals.load(ordering: .relaxed) }

    /// The refusal a client off loopback gets in protected mode, worded as
    /// redis-server's DENIED: why, and the ways to open the node up.
    public static let protectedModeMessage =
        "DENIED AegisKV is running in protected mode because protected_mode is on and no auth_token is set. "
        + "In this mode only clients on loopback addresses (127.0.0.0/8, ::1) are answered. "
        + "To serve clients on other hosts, do one of the following: "
        + "1) set auth_token (config file, AEGIS_AUTH_TOKEN or --auth-token; a reload with SIGHUP applies it) and have clients send AUTH; "
        + "2) set \"protected_mode\": false in the config file and reload (systemctl reload aegiskv), "
        + "or send CONFIG SET protected_mode no from a client on this host, but only if the node cannot be reached from untrusted networks; "
        + "3) for a test, restart the node with --protected-mode false. "
        + "One of these is enough."
}

/// Failed AUTH attempts per client address, and when an AUTH from each
/// may be answered. Below `threshold` failures an answer goes out at once;
/// from then on the answers to one address, over all its connections and
/// reactors, go out one per `delayMs` (so guessing from one address runs at
/// one guess per second however many connections it opens), and an AUTH
/// that would wait longer than `backlogMs` is refused without being
/// checked. An address that has not failed for `forgetMs` starts again
/// from zero. Success does not clear the count: a client sharing the
/// address (NAT) must not reset an attacker's.
///
/// Invariant: at most `policy.capacity` addresses are held; when full, the
/// one whose last failure is oldest is dropped.
public struct AuthFailureTable: Sendable {
    public struct Policy: Sendable {
        public var threshold: Int
        public var delayMs: Int64
        public var backlogMs: Int64
        public var forgetMs: Int64
        public var capacity: Int

        public static let standard = Policy(threshold: 10, delayMs: 1000, backlogMs: 10_000, forgetMs: 600_000, capacity: 4096)

        public init(threshold: Int, delayMs: Int64, backlogMs: Int64, forgetMs: Int64, capacity: Int) {
            precondition(threshold >= 0 && delayMs > 0 && backlogMs >= delayMs && forgetMs > 0 && capacity > 0)
            self.threshold = threshold
            self.delayMs = delayMs
            self.backlogMs = backlogMs
            self.forgetMs = forgetMs
            self.capacity = capacity
        }
    }

    public enum Timing: Equatable, Sendable {
        case now
        case holdUntil(Int64)
        case refuse
    }

    struct Record {
        var failures: Int
        var lastFailureMs: Int64
        var nextAnswerMs: Int64
    }

    let policy: Policy
    private var records: [ClientAddress: Record] = [:]

    public init(policy: Policy) { self.policy = policy }

    public var count: Int { records.count }

    public mutating func answerTiming(for address: ClientAddress, nowMs: Int64) -> Timing {
        guard var record = records[address] else { return .now }
        if nowMs - record.lastFailureMs >= policy.forgetMs {
            records[address] = nil
            return .now
        }
        if record.failures < policy.threshold { return .now }
        let answerMs = max(nowMs, record.nextAnswerMs) + policy.delayMs
        if answerMs - nowMs > policy.backlogMs { return .refuse }
        record.nextAnswerMs = answerMs
        records[address] = record
        return .holdUntil(answerMs)
    }

    public mutating func noteFailure(from address: ClientAddress, nowMs: Int64) {
        if var record = records[address], nowMs - record.lastFailureMs < policy.forgetMs {
            record.failures += 1
            record.lastFailureMs = nowMs
            records[address] = record
            return
        }
        if records[address] == nil && records.count >= policy.capacity { dropOldest(nowMs: nowMs) }
        records[address] = Record(failures: 1, lastFailureMs: nowMs, nextAnswerMs: 0)
        assert(records.count <= policy.capacity)
    }

    public func failures(of address: ClientAddress) -> Int { records[address]?.failures ?? 0 }

    /// Forgotten records first; if none, the one whose last failure is oldest.
    private mutating func dropOldest(nowMs: Int64) {
        let before = records.count
        records = records.filter { nowMs - $0.value.lastFailureMs < policy.forgetMs }
        if records.count < before { return }
        if let oldest = records.min(by: { $0.value.lastFailureMs < $1.value.lastFailureMs })?.key {
            records[oldest] = nil
        }
    }
}

/// Compares a secret without an early exit: the time depends only on the
/// lengths, not on how many leading bytes were right.
public func constantTimeEquals(_ given: UnsafeRawBufferPointer, _ expected: UnsafeRawBufferPointer) -> Bool {
    var difference = UInt8(given.count == expected.count ? 0 : 1)
    for i in 0..<given.count {
        difference |= given[i] ^ (i < expected.count ? expected[i] : 0)
    }
    return difference == 0
}

extension Node {
    /// Says at start who the client port answers, so that turning protected
    /// mode off is a choice that shows in the log.
    static func logAccessPolicy(_ config: AegisConfig, logger: Logger) {
        if !config.authToken.isEmpty {
            logger.info("clients must send AUTH", metadata: [
                "auth_timeout": "\(config.authTimeout)", "auth_token_next": "\(config.authTokenNext.isEmpty ? "unset" : "set")",
            ])
        } else if ClientAuth.verifiesClientCertificates(config) {
            logger.info("clients must present a certificate signed by tls_ca_file (mTLS); protected mode does not apply",
                        metadata: ["tls_ca_file": "\(config.tlsCAFile)"])
        } else if config.protectedMode {
            logger.info("protected mode: no auth_token is set, so only clients on loopback addresses are answered; set auth_token (or protected_mode false) to serve other hosts",
                        metadata: ["bind_addr": "\(config.bindAddr)"])
        } else {
            logger.warning("protected mode is off (protected_mode: false) and no auth_token is set: clients on any address are answered without authentication",
                           metadata: ["bind_addr": "\(config.bindAddr)"])
        }
    }
}
