import AegisTLS
import Logging

/// A node serving a certificate past its end date is refused by every
/// client and peer that verifies it, and each of them says only "verify
/// failed" on its own side. So the node says it too, in its own log, at
/// start and after each reload; it still serves: a rotation may be on its
/// way, and refusing to start would take the cache down for a file that a
/// SIGHUP can fix (the operations port does the same, OperationsTLS).
enum CertificateExpiry {
    /// The client port's and the peer links' certificates as they are in
    /// use now (the paths need a restart, so the start-up ones name them).
    static func warnIfExpired(_ node: NodeContext, logger: Logger) {
        if let tls = node.tls {
            warnIfExpired(tls.context, file: node.config.tlsCertFile,
                          consequence: "clients that verify it refuse the client port's TLS handshakes", logger: logger)
        }
        if let peerTLS = node.peerTLS {
            warnIfExpired(peerTLS.context, file: node.config.clusterTLSCertFile,
                          consequence: "other nodes refuse this node's peer links, so it cannot stay in the cluster", logger: logger)
        }
    }

    private static func warnIfExpired(_ context: TLSContext, file: String, consequence: String, logger: Logger) {
        guard let validity = context.presentedCertificateValidity, validity.expired else { return }
        logger.warning("the certificate this node presents has expired: \(consequence); replace the file and reload (SIGHUP)", metadata: [
            "cert_file": "\(file)", "not_after": "\(validity.notAfter)",
        ])
    }
}
