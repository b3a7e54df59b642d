import CSupport
import Glibc

/// One TLS connection's OpenSSL state: an SSL on the connection's own
/// non-blocking socket, through OpenSSL's socket BIO (docs/security.md says
/// why that BIO and not memory BIOs).
///
/// Invariants, checked by assertions in debug builds:
/// - `session` is valid from `init` until `free()` (or `deinit`), and never
///   used after: every call asserts `!isFreed`, and `free()` runs at most once.
/// - one thread uses it, the one that made it (a reactor for the node's
///   connections, the client's thread in aegiskv-cli and aegiskv-bench).
/// - the socket outlives it: the owner frees the session before closing the
///   descriptor (close_notify is written on it).
public final class TLSSession {
    private let session: OpaquePointer
    public private(set) var isFreed = false
    /// The handshake finished; reads and writes carry application data.
    public private(set) var isEstablished = false
    /// The first byte has been seen to open a TLS record (a plaintext
    /// client is refused before OpenSSL is involved).
    public var sawClientHello = false
    /// SSL_read needed to write (a TLS 1.3 key update's answer) and is
    /// waiting for the socket to become writable.
    public var readWantsWrite = false
    /// Listed by its owner among the sessions whose decrypted bytes wait
    /// in OpenSSL while the socket itself is empty.
    public var isListedAsBuffered = false
    #if DEBUG
    private let owner = pthread_self()
    #endif

    public enum Step: Equatable, Sendable {
        case done
        case wantRead
        case wantWrite
        case closed
        case failed
    }

    /// A session on `fd`, which it neither owns nor closes. A client session
    /// checks the server's certificate against `host` (a name or an IP literal).
    public init?(context: TLSContext, fd: Int32, isServer: Bool, host: String = "") {
        guard let made = aegis_tls_session_create(context.pointer, fd, isServer ? 1 : 0, host) else { return nil }
        session = made
    }

    deinit {
        if !isFreed { aegis_tls_session_free(session) }
    }

    @inline(__always) private func assertUsable() {
        assert(!isFreed, "a TLS session used after it was freed")
        #if DEBUG
        precondition(pthread_equal(owner, pthread_self()) != 0, "a TLS session used from a thread that does not own it")
        #endif
    }

    @inline(__always) private static func step(_ code: Int32) -> Step {
        switch code {
        case 0: return .done
        case AEGIS_TLS_WANT_READ: return .wantRead
        case AEGIS_TLS_WANT_WRITE: return .wantWrite
        case AEGIS_TLS_CLOSED: return .closed
        default: return .failed
        }
    }

    /// One step of the handshake; never blocks.
    public func handshake() -> Step {
        assertUsable()
        assert(!isEstablished)
        let result = Self.step(aegis_tls_handshake(session))
        if result == .done { isEstablished = true }
        return result
    }

    /// Plaintext bytes read, or why none were.
    @inline(__always) public func read(_ buffer: UnsafeMutableRawPointer?, _ count: Int) -> (bytes: Int, step: Step) {
        assertUsable()
        assert(isEstablished)
        let result = aegis_tls_read(session, buffer, Int32(clamping: count))
        return result > 0 ? (Int(result), .done) : (0, Self.step(result))
    }

    /// Plaintext bytes taken (possibly fewer than `count`), or why none were.
    /// After `.wantWrite` the next call must start with the same bytes.
    @inline(__always) public func write(_ buffer: UnsafeRawPointer?, _ count: Int) -> (bytes: Int, step: Step) {
        assertUsable()
        assert(isEstablished)
        let result = aegis_tls_write(session, buffer, Int32(clamping: count))
        return result > 0 ? (Int(result), .done) : (0, Self.step(result))
    }

    /// Decrypted bytes OpenSSL holds that a read would return at once.
    public var bufferedBytes: Int {
        assertUsable()
        return Int(aegis_tls_pending(session))
    }

    /// True when OpenSSL holds input for this session that the socket will
    /// not signal again: decrypted bytes, or bytes read ahead of the record
    /// being returned (a server context reads ahead).
    public var holdsInput: Bool {
        assertUsable()
        return aegis_tls_has_pending(session) == 1
    }

    public var protocolVersion: String {
        assertUsable()
        return String(cString: aegis_tls_version(session))
    }

    /// Why the peer's certificate was refused, when it was ("" when it was not).
    public var verificationProblem: String {
        assertUsable()
        let result = aegis_tls_verify_result(session)
        return result == 0 ? "" : String(cString: aegis_tls_verify_text(result))
    }

    /// Why the peer's certificate failed verification, as a kind a metric
    /// can count; nil when none failed (none was sent, or it passed).
    public var certificateRefusal: CertificateRefusal? {
        assertUsable()
        let result = aegis_tls_verify_result(session)
        if result == 0 { return nil }
        return result == AEGIS_TLS_VERIFY_EXPIRED || result == AEGIS_TLS_VERIFY_NOT_YET_VALID ? .outsideValidity : .untrusted
    }

    public enum CertificateRefusal: Sendable {
        /// Expired or not yet valid.
        case outsideValidity
        /// Not signed by a trusted CA (another CA, self-signed), or unusable.
        case untrusted
    }

    /// Whether the kernel carries the records (kTLS) in each direction.
    public var kernelOffload: (send: Bool, receive: Bool) {
        assertUsable()
        let bits = aegis_tls_kernel_offloaded(session)
        return (bits & 1 != 0, bits & 2 != 0)
    }

    /// The calling thread's last OpenSSL error, taken off its queue.
    public static func lastError() -> String { lastFailure().text }

    /// The same, with whether OpenSSL's reason was that the peer sent no
    /// certificate where one is required, or that the peer closed the
    /// connection in the middle of a record.
    public static func lastFailure() -> (text: String, peerSentNoCertificate: Bool, peerClosed: Bool) {
        var text = [CChar](repeating: 0, count: 256)
        let reason = aegis_tls_last_error(&text, text.count)
        let message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (message, reason == AEGIS_TLS_REASON_PEER_SENT_NO_CERTIFICATE, reason == AEGIS_TLS_REASON_UNEXPECTED_EOF)
    }

    /// For clients: runs the handshake to its end, waiting for the socket
    /// with poll, each wait at most `timeoutMs`. Throws why it failed.
    public func completeHandshake(fd: Int32, timeoutMs: Int32) throws(TLSSetupError) {
        while true {
            let events: Int16
            switch handshake() {
            case .done: return
            case .wantRead: events = Int16(POLLIN)
            case .wantWrite: events = Int16(POLLOUT)
            case .closed:
                throw TLSSetupError(message: "the server closed the connection during the handshake (does it serve TLS, and accept this client's certificate?)")
            case .failed:
                let certificate = verificationProblem
                throw TLSSetupError(message: certificate.isEmpty ? Self.lastError() : "server certificate: " + certificate)
            }
            var poller = pollfd(fd: fd, events: events, revents: 0)
            var ready: Int32
            repeat { ready = poll(&poller, 1, timeoutMs) } while ready < 0 && errno == EINTR
            if ready == 0 { throw TLSSetupError(message: "no handshake answer within \(timeoutMs) ms") }
        }
    }

    /// Sends close_notify (once, without waiting for the peer's) and frees
    /// the OpenSSL state; the socket is the caller's to close afterwards.
    public func free(notifyPeer: Bool) {
        assertUsable()
        if notifyPeer && isEstablished { _ = aegis_tls_shutdown(session) }
        aegis_tls_session_free(session)
        isFreed = true
    }
}
