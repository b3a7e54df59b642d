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

    /// Monotonic counts, for INFO.
    let handshakesCompleted = Atomic<Int>(0)
    let handshakeFailures = Atomic<Int>(0)
    let handshakeTimeouts = Atomic<Int>(0)
    let plaintextRefusals = Atomic<Int>(0)
    let reloads = Atomic<Int>(0)

    /// nil when `tls_enabled` is false. Throws when a file is missing,
    /// unreadable or does not match (the message names the file).
    public static func make(_ config: AegisConfig) throws(TLSSetupError) -> TLSService? {
        guard config.tlsEnabled else { return nil }
        let offload = kernelOffersTLS()
        return TLSService(try Self.context(config, kernelOffload: offload), kernelOffload: offload)
    }

    private init(_ context: TLSContext, kernelOffload: Bool) {
        current = Mutex(context)
        kernelOffloadOffered = kernelOffload
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

    /// "kernel" or "user-space", as the start-up log and INFO say it.
    public var recordLayerMode: String { kernelOffloadOffered ? "kernel (kTLS) where the cipher allows" : "user-space" }

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

    public var handshakesCompletedTotal: Int { handshakesCompleted.load(ordering: .relaxed) }
    public var handshakeFailuresTotal: Int { handshakeFailures.load(ordering: .relaxed) }
    public var handshakeTimeoutsTotal: Int { handshakeTimeouts.load(ordering: .relaxed) }
    public var plaintextRefusalsTotal: Int { plaintextRefusals.load(ordering: .relaxed) }
    public var reloadsTotal: Int { reloads.load(ordering: .relaxed) }
}
