import CSupport

/// An OpenSSL SSL_CTX made from PEM files: the certificate, key and (for
/// mTLS) CA a node serves with, or what a client trusts and presents.
///
/// Invariants: `pointer` is a valid context from `init` until `deinit`
/// frees it, and nothing changes it after `init`, which is what makes it
/// safe to share: OpenSSL documents SSL_new on an unchanging SSL_CTX as
/// thread-safe, and each session takes its own reference to the context,
/// so a context replaced by a reload lives on until its last session ends.
public final class TLSContext: @unchecked Sendable {
    public let pointer: OpaquePointer

    /// A server context: TLS 1.2 or newer; a non-empty `caFile` makes client
    /// certificates required and verified. Throws a message naming the file
    /// that could not be read or does not fit.
    public init(serverCertificate certFile: String, key keyFile: String, clientCA caFile: String,
                kernelOffload: Bool) throws(TLSSetupError) {
        var message = [CChar](repeating: 0, count: 512)
        guard let made = aegis_tls_server_context_create(certFile, keyFile, caFile, kernelOffload ? 1 : 0, &message, message.count) else {
            throw TLSSetupError(message: Self.text(message))
        }
        pointer = made
    }

    /// A client context: the server's certificate is checked against
    /// `caFile` (empty: the system's store); `certFile`/`keyFile` are presented when given.
    public init(clientTrusting caFile: String, certificate certFile: String, key keyFile: String) throws(TLSSetupError) {
        var message = [CChar](repeating: 0, count: 512)
        guard let made = aegis_tls_client_context_create(caFile, certFile, keyFile, &message, message.count) else {
            throw TLSSetupError(message: Self.text(message))
        }
        pointer = made
    }

    /// The context of the links between nodes, both the dialled and the
    /// accepted ends: `certFile`/`keyFile` presented, and every peer's
    /// certificate required and verified against `caFile`, the cluster CA.
    public init(peerCertificate certFile: String, key keyFile: String, clusterCA caFile: String) throws(TLSSetupError) {
        var message = [CChar](repeating: 0, count: 512)
        guard let made = aegis_tls_peer_context_create(certFile, keyFile, caFile, &message, message.count) else {
            throw TLSSetupError(message: Self.text(message))
        }
        pointer = made
    }

    deinit { aegis_tls_context_free(pointer) }

    /// When the certificate this context presents stops being valid, as
    /// OpenSSL prints it, and whether that is past; nil when it presents none.
    public var presentedCertificateValidity: (notAfter: String, expired: Bool)? {
        var text = [CChar](repeating: 0, count: 64)
        let state = aegis_tls_certificate_not_after(pointer, &text, text.count)
        return state < 0 ? nil : (Self.text(text), state == 1)
    }

    private static func text(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The OpenSSL this process runs with ("OpenSSL 3.0.x ...").
    public static var libraryVersion: String { String(cString: aegis_tls_library_version()) }
}

/// Why a TLS context could not be made; the message names the file.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
