import AegisConfig
import AegisServer
import Glibc
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// https on the operations port (health_addr): the certificate, key and
/// optional client CA named by the health_tls_* keys, turned into the
/// NIOSSLContext each new connection is served with.
///
/// The files are read at start (a problem stops the node, naming the file)
/// and again on every SIGHUP, so a certificate rotated in place (same paths,
/// new contents) is served without a restart; a reload that cannot use the
/// new files keeps the previous context, logs why and counts it.
/// Connections already open keep the context they started with.
public final class OperationsTLS: Sendable {
    /// The three paths; `ca` is "" when no client certificate is asked for.
    public struct Files: Sendable, Equatable {
        public var certificate: String
        public var key: String
        public var ca: String

        /// nil when the configuration leaves health_addr on plain http.
        public init?(_ config: AegisConfig) {
            guard !config.healthTLSCertFile.isEmpty else { return nil }
            certificate = config.healthTLSCertFile
            key = config.healthTLSKeyFile
            ca = config.healthTLSCAFile
        }
    }

    /// What a successful load produced: the context and the facts the log
    /// and /metrics show about the certificate it serves.
    struct Material: Sendable {
        var context: NIOSSLContext
        /// The leaf certificate's serial number, hex, as `openssl x509 -serial` prints it.
        var serial: String
        /// Seconds since the epoch after which the leaf certificate is no longer valid.
        var notValidAfter: Int
    }

    public let files: Files
    private let current: Mutex<Material>
    private let reloads = Atomic<Int>(0)
    private let reloadFailures = Atomic<Int>(0)
    private let handshakeFailures = Atomic<Int>(0)
    private let plaintextRefusals = Atomic<Int>(0)

    /// A file larger than this is refused rather than read: a chain or CA
    /// bundle is a few KiB, and a wrong path (a log, a disk image) must not
    /// make the node read gigabytes.
    static let maxFileBytes = 1 << 20

    /// Loads the files the configuration names; nil when https is not
    /// configured. The error names the key and the file at fault.
    public static func start(_ config: AegisConfig, logger: Logger) throws(TLSFileError) -> OperationsTLS? {
        guard let files = Files(config) else { return nil }
        let material = try load(files)
        let tls = OperationsTLS(files: files, material: material)
        logger.info("operations port serves https", metadata: tls.metadata(material))
        warnIfExpired(material, logger: logger)
        return tls
    }

    /// `aegiskv --validate`: the files load as they would at start.
    public static func check(_ config: AegisConfig) throws(TLSFileError) {
        guard let files = Files(config) else { return }
        _ = try load(files)
    }

    private init(files: Files, material: Material) {
        self.files = files
        self.current = Mutex(material)
    }

    /// The context for a connection accepted now.
    var context: NIOSSLContext { current.withLock { $0.context } }

    /// Reads the files again (SIGHUP). Runs on the supervisor's thread:
    /// NIOSSLContext creation reads files and must stay off the event loop.
    public func reload(report: Logger) {
        let material: Material
        do {
            material = try Self.load(files)
        } catch {
            reloadFailures.wrappingAdd(1, ordering: .relaxed)
            let serving = current.withLock { $0.serial }
            report.error("reload: operations port certificate not reloaded, still serving the previous one: \(error)", metadata: [
                "serial": "\(serving)",
            ])
            return
        }
        current.withLock { $0 = material }
        reloads.wrappingAdd(1, ordering: .relaxed)
        report.notice("reload: operations port certificate, key and CA files read again", metadata: metadata(material))
        Self.warnIfExpired(material, logger: report)
    }

    func countHandshakeFailure() { handshakeFailures.wrappingAdd(1, ordering: .relaxed) }
    func countPlaintextRefusal() { plaintextRefusals.wrappingAdd(1, ordering: .relaxed) }

    private func metadata(_ material: Material) -> Logger.Metadata {
        [
            "cert_file": "\(files.certificate)", "serial": "\(material.serial)",
            "not_after": "\(material.notValidAfter)",
            "client_certificates": "\(files.ca.isEmpty ? "not asked" : "required, signed by \(files.ca)")",
        ]
    }

    private static func warnIfExpired(_ material: Material, logger: Logger) {
        guard material.notValidAfter < Int(time(nil)) else { return }
        logger.warning("the operations port's certificate has expired: https clients that verify it will refuse it", metadata: [
            "serial": "\(material.serial)", "not_after": "\(material.notValidAfter)",
        ])
    }

    /// The /metrics families of the operations port's TLS; `tls` is nil on
    /// plain http (the counters are then 0, so dashboards need no special case).
    static func families(_ tls: OperationsTLS?) -> [MetricsExposition.Family] {
        typealias Exposition = MetricsExposition
        var result = [
            Exposition.gauge("aegis_health_tls_enabled", "1 when health_addr serves https (health_tls_cert_file set), 0 for plain http.", tls == nil ? 0 : 1),
            Exposition.counter("aegis_health_tls_handshake_failures", "TLS handshakes on health_addr that failed (bad or missing client certificate, unknown CA, garbage).",
                               tls?.handshakeFailures.load(ordering: .relaxed) ?? 0),
            Exposition.counter("aegis_health_tls_plaintext_refusals", "Plain-http requests to the https health_addr, answered 400 and closed.",
                               tls?.plaintextRefusals.load(ordering: .relaxed) ?? 0),
            Exposition.counter("aegis_health_tls_reloads", "SIGHUP reloads that read the health_tls_* files again and serve them.",
                               tls?.reloads.load(ordering: .relaxed) ?? 0),
            Exposition.counter("aegis_health_tls_reload_failures", "SIGHUP reloads whose health_tls_* files could not be used (the previous certificate stays).",
                               tls?.reloadFailures.load(ordering: .relaxed) ?? 0),
        ]
        if let tls {
            result.append(Exposition.gauge("aegis_health_tls_certificate_expiry_timestamp_seconds",
                                           "When the certificate health_addr serves stops being valid (seconds since the epoch).",
                                           tls.current.withLock { $0.notValidAfter }))
        }
        return result
    }

    // MARK: - Loading

    static func load(_ files: Files) throws(TLSFileError) -> Material {
        let chain = try certificates(key: "health_tls_cert_file", path: files.certificate)
        let keyBytes = try read(key: "health_tls_key_file", path: files.key)
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw TLSFileError(key: "health_tls_key_file", path: files.key,
                               problem: "it holds no usable PEM private key (an encrypted key is not supported)")
        }
        let sources = chain.map { NIOSSLCertificateSource.certificate($0) }
        var configuration: TLSConfiguration
        if files.ca.isEmpty {
            configuration = .makeServerConfiguration(certificateChain: sources, privateKey: .privateKey(privateKey))
        } else {
            let authorities = try certificates(key: "health_tls_ca_file", path: files.ca)
            configuration = .makeServerConfigurationWithMTLS(
                certificateChain: sources, privateKey: .privateKey(privateKey), trustRoots: .certificates(authorities))
            // Lets a client holding several certificates (curl, Prometheus) pick the one this CA signed.
            configuration.sendCANameList = true
        }
        configuration.minimumTLSVersion = .tlsv12
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            // The key parsed above, so BoringSSL refusing it here means it
            // does not match the leaf certificate (SSL_CTX_use_PrivateKey's check).
            if case NIOSSLError.failedToLoadPrivateKey = error {
                throw TLSFileError(key: "health_tls_key_file", path: files.key,
                                   problem: "it is not the private key of the certificate in health_tls_cert_file \(files.certificate)")
            }
            throw TLSFileError(key: "health_tls_cert_file", path: files.certificate,
                               problem: "cannot be served with health_tls_key_file \(files.key): \(error)")
        }
        let leaf = chain[0]
        return Material(context: context, serial: hex(leaf.serialNumber), notValidAfter: Int(leaf.notValidAfter))
    }

    private static func certificates(key: String, path: String) throws(TLSFileError) -> [NIOSSLCertificate] {
        let bytes = try read(key: key, path: path)
        let parsed = try? NIOSSLCertificate.fromPEMBytes(bytes)
        guard let parsed, !parsed.isEmpty else {
            throw TLSFileError(key: key, path: path, problem: "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        return parsed
    }

    /// The whole file, read with the node's own errno wording, so "missing"
    /// and "not readable by the aegiskv user" read differently.
    private static func read(key: String, path: String) throws(TLSFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw TLSFileError(key: key, path: path, problem: "\(SystemError(operation: "open", code: errno))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TLSFileError(key: key, path: path, problem: "\(SystemError(operation: "read", code: errno))")
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
            if bytes.count > maxFileBytes {
                throw TLSFileError(key: key, path: path, problem: "it is larger than \(maxFileBytes >> 20) MiB, too large for PEM certificates or a key")
            }
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789ABCDEF")
        let text = String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] })
        return text.isEmpty ? "00" : text
    }
}

/// A health_tls_* file that cannot be used, naming the key and the path.
public struct TLSFileError: Error, CustomStringConvertible {
    public var key: String
    public var path: String
    public var problem: String

    public var description: String { "\(key) \(path): \(problem)" }
}
