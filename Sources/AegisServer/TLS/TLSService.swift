import AegisConfig
import AegisTLS
import Glibc
import Logging
import Synchronization

/// TLS on the client port, shared by every reactor: the context new
/// connections are made from (replaced by a SIGHUP reload, so a rotated
/// certificate needs no restart), the record-layer mode, and the counts.
///
/// A reactor takes the current context once per accepted connection (one
/// uncontended lock; the handshake that follows costs far more). A
/// connection keeps the context it was accepted with: a reload changes only
/// connections accepted after it.
public final class TLSService: Sendable {
    private let current: Mutex<TLSContext>
    /// Whether OpenSSL was asked to hand the record layer to the kernel
    /// after each handshake (kTLS): only when the kernel offers the tls ULP.
    public let kernelOffloadOffered: Bool

    /// Handshakes in progress per client address, across every reactor, at
    /// most `tls_handshakes_per_address` each; a connection past it is
    /// closed at accept. A handshake is one round trip plus a few
    /// milliseconds of CPU, so a client host reaches the default (128) only
    /// by opening that many connections at the same instant (redis-benchmark
    /// -c 50 stays well under it); an address holding them half-open
    /// (slowloris, 10,000 half-open connections) holds no more than that many
    /// descriptors and sessions, each for at most the handshake's time limit.
    let admission: HandshakeAdmission

    /// Monotonic counts, for INFO and /metrics.
    let handshakesCompleted = Atomic<Int>(0)
    /// Of those, handshakes after which OpenSSL handed a direction of the
    /// record layer to the kernel (kTLS); the rest run in user space.
    let kernelRecordLayerHandshakes = Atomic<Int>(0)
    let plaintextRefusals = Atomic<Int>(0)
    let noCertificateFailures = Atomic<Int>(0)
    let badCertificateFailures = Atomic<Int>(0)
    let protocolFailures = Atomic<Int>(0)
    let handshakeTimeouts = Atomic<Int>(0)
    let abandonedHandshakes = Atomic<Int>(0)
    let addressLimitRefusals = Atomic<Int>(0)
    let reloads = Atomic<Int>(0)

    /// nil when `tls_enabled` is false. Throws when a file is missing,
    /// unreadable or does not match (the message names the file).
    public static func make(_ config: AegisConfig) throws(TLSSetupError) -> TLSService? {
        guard config.tlsEnabled else { return nil }
        let offload = kernelOffersTLS()
        return TLSService(try Self.context(config, kernelOffload: offload), kernelOffload: offload,
                          handshakesPerAddressMax: config.tlsHandshakesPerAddress)
    }

    private init(_ context: TLSContext, kernelOffload: Bool, handshakesPerAddressMax: Int) {
        current = Mutex(context)
        kernelOffloadOffered = kernelOffload
        admission = HandshakeAdmission(maxPerAddress: handshakesPerAddressMax)
    }

    private static func context(_ config: AegisConfig, kernelOffload: Bool) throws(TLSSetupError) -> TLSContext {
        try TLSContext(serverCertificate: config.tlsCertFile, key: config.tlsKeyFile, clientCA: config.tlsCAFile,
                       kernelOffload: kernelOffload)
    }

    /// The context for a connection accepted now.
    var context: TLSContext { current.withLock { $0 } }

    /// Loads the files `config` names again (every SIGHUP: a rotated
    /// certificate keeps its path, so no key changes); on success new
    /// connections use them, on failure the running context stays and the
    /// error is returned. The paths themselves need a restart, as the spec
    /// says of TLS configuration: `config` is the running one.
    public func reload(_ config: AegisConfig) -> TLSSetupError? {
        do {
            let fresh = try Self.context(config, kernelOffload: kernelOffloadOffered)
            current.withLock { $0 = fresh }
            reloads.add(1, ordering: .relaxed)
            return nil
        } catch {
            return error
        }
    }

    /// The record layer new connections are set up for: the kernel's when it
    /// offers the tls ULP (OpenSSL still falls back per connection for a
    /// cipher the kernel lacks, which `handshakesCompletedTotal(_:)` shows).
    public var recordLayer: RecordLayer { kernelOffloadOffered ? .kernel : .userSpace }

    /// The start-up log's words for it, with the reason for user space.
    public static func recordLayerText(kernelOffersTLS: Bool) -> String {
        kernelOffersTLS ? "kernel (kTLS) where the cipher allows"
            : "user-space (the kernel offers no tls ULP: /proc/sys/net/ipv4/tcp_available_ulp does not list tls)"
    }

    /// The kernel lists the ULPs it can attach to a TCP socket here; "tls"
    /// is there once the tls module is loaded (or built in).
    static func kernelOffersTLS() -> Bool {
        guard let file = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r") else { return false }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), file) != nil else { return false }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("tls")
    }

    /// Counts a handshake that did not finish.
    func count(_ failure: ClientTLSFailure) {
        switch failure {
        case .plaintext: plaintextRefusals.add(1, ordering: .relaxed)
        case .noCertificate: noCertificateFailures.add(1, ordering: .relaxed)
        case .badCertificate: badCertificateFailures.add(1, ordering: .relaxed)
        case .protocolError: protocolFailures.add(1, ordering: .relaxed)
        case .timeout: handshakeTimeouts.add(1, ordering: .relaxed)
        case .closed: abandonedHandshakes.add(1, ordering: .relaxed)
        }
    }

    public func failuresTotal(_ failure: ClientTLSFailure) -> Int {
        switch failure {
        case .plaintext: plaintextRefusals.load(ordering: .relaxed)
        case .noCertificate: noCertificateFailures.load(ordering: .relaxed)
        case .badCertificate: badCertificateFailures.load(ordering: .relaxed)
        case .protocolError: protocolFailures.load(ordering: .relaxed)
        case .timeout: handshakeTimeouts.load(ordering: .relaxed)
        case .closed: abandonedHandshakes.load(ordering: .relaxed)
        }
    }

    /// Whether the kernel carries the record layer (kTLS); otherwise OpenSSL does, in user space.
    public enum RecordLayer: String, CaseIterable, Sendable {
        case kernel
        case userSpace = "user_space"
    }

    /// Handshakes completed, by the record layer their connection went on with.
    public func handshakesCompletedTotal(_ layer: RecordLayer) -> Int {
        let kernel = kernelRecordLayerHandshakes.load(ordering: .relaxed)
        return layer == .kernel ? kernel : handshakesCompleted.load(ordering: .relaxed) - kernel
    }

    public var handshakesCompletedTotal: Int { handshakesCompleted.load(ordering: .relaxed) }
    /// What INFO has always called tls_handshake_failures: OpenSSL refused the handshake.
    public var handshakeFailuresTotal: Int {
        failuresTotal(.noCertificate) + failuresTotal(.badCertificate) + failuresTotal(.protocolError)
    }
    public var handshakeTimeoutsTotal: Int { failuresTotal(.timeout) }
    public var plaintextRefusalsTotal: Int { failuresTotal(.plaintext) }
    public var addressLimitRefusalsTotal: Int { addressLimitRefusals.load(ordering: .relaxed) }
    public var handshakesInProgress: Int { admission.inProgressTotal }
    public var reloadsTotal: Int { reloads.load(ordering: .relaxed) }
}

/// Why a handshake on the client port did not finish: the label of
/// `aegis_tls_handshake_failures_total`.
public enum ClientTLSFailure: String, CaseIterable, Sendable {
    /// The first byte did not open a TLS handshake record.
    case plaintext
    /// Client certificates are required (tls_ca_file) and it sent none.
    case noCertificate = "no_certificate"
    /// Its certificate did not verify: another CA, self-signed, expired, not yet valid.
    case badCertificate = "bad_certificate"
    /// Anything else OpenSSL refused: garbage after the record header, no
    /// common version or cipher, an alert from the client (which refused our certificate).
    case protocolError = "protocol"
    /// Not finished within the handshake's time limit (slowloris).
    case timeout
    /// The client closed or reset the connection before finishing (a TCP
    /// health check, a client giving up).
    case closed
}

/// How many handshakes each client address has in progress, shared by the
/// reactors (an address's connections are spread over them by the
/// kernel's SO_REUSEPORT hash, so a per-reactor count would not bound it).
///
/// Bounded: an address is listed only while it has a handshake in
/// progress, each of which holds an open connection, so the table never
/// holds more entries than there are connections (max_conns).
final class HandshakeAdmission: Sendable {
    let maxPerAddress: Int
    private let inProgress = Mutex(PerKeyCount<ClientAddress>())
    private let total = Atomic<Int>(0)

    init(maxPerAddress: Int) {
        precondition(maxPerAddress > 0)
        self.maxPerAddress = maxPerAddress
    }

    /// Takes a slot for a handshake from `address`; false when it already has `maxPerAddress`.
    func admit(_ address: ClientAddress) -> Bool {
        let admitted = inProgress.withLock { $0.take(address, limit: maxPerAddress) }
        if admitted { total.add(1, ordering: .relaxed) }
        return admitted
    }

    /// Gives back a slot `admit` took: the handshake finished, failed, or its connection closed.
    func release(_ address: ClientAddress) {
        inProgress.withLock { $0.give(address) }
        total.subtract(1, ordering: .relaxed)
    }

    var inProgressTotal: Int { total.load(ordering: .relaxed) }
}
