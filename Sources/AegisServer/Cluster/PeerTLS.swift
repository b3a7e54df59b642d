import AegisConfig
import AegisTLS
import CSupport
import Glibc
import Synchronization

/// TLS on the links between nodes (cluster_tls_cert_file, _key_file,
/// _ca_file): the one context both ends of every link are made from, which a
/// SIGHUP replaces so that a rotated certificate needs no restart. Links
/// keep the context they were opened with; links opened after a reload use
/// the new one.
public final class PeerTLS: Sendable {
    private let current: Mutex<TLSContext>
    let reloads = Atomic<Int>(0)

    /// nil when cluster_tls_cert_file is empty (the loader has checked that
    /// the three keys are set together). Throws when a file is missing,
    /// unreadable or does not fit; the message names it.
    public static func make(_ config: AegisConfig) throws(TLSSetupError) -> PeerTLS? {
        guard !config.clusterTLSCertFile.isEmpty else { return nil }
        return PeerTLS(try context(config))
    }

    private init(_ context: TLSContext) { current = Mutex(context) }

    private static func context(_ config: AegisConfig) throws(TLSSetupError) -> TLSContext {
        try TLSContext(peerCertificate: config.clusterTLSCertFile, key: config.clusterTLSKeyFile, clusterCA: config.clusterTLSCAFile)
    }

    /// The context for a link opened now.
    var context: TLSContext { current.withLock { $0 } }

    /// Reads the three files again at the paths `config` names (the running
    /// ones: the paths need a restart); on failure the running context stays.
    public func reload(_ config: AegisConfig) -> TLSSetupError? {
        do {
            let fresh = try Self.context(config)
            current.withLock { $0 = fresh }
            reloads.add(1, ordering: .relaxed)
            return nil
        } catch {
            return error
        }
    }

    public var reloadsTotal: Int { reloads.load(ordering: .relaxed) }
}

/// Why a peer link was closed for TLS: the label of `aegis_peer_tls_refused_total`.
public enum PeerTLSRefusal: String, Sendable, CaseIterable, Error {
    /// The peer's first bytes did not open a TLS handshake (a node without cluster_tls_*).
    case plaintext
    /// The peer sent no certificate.
    case noCertificate = "no_certificate"
    /// Its certificate was not signed by the cluster CA (another CA, self-signed).
    case untrusted
    /// Its certificate is expired or not yet valid.
    case expired
    /// The peer refused this node's certificate (its alert arrived after the
    /// handshake, as TLS 1.3 lets a server reject a client certificate).
    case peerRefused = "peer_refused"
    /// Any other failure: a protocol error, an alert, the peer closing mid-handshake.
    case handshakeFailed = "handshake_failed"
    /// The handshake did not finish within its bound.
    case timeout
}

/// How a peer connection's bytes reach its socket: directly, or through a
/// TLS session on it (OpenSSL's socket BIO, as on the client port). The
/// connection reads and writes through this and nothing else, so the frame
/// logic above it is the same for both.
enum PeerTransport {
    case plain
    case tls(TLSSession)

    var isPlain: Bool {
        if case .plain = self { return true }
        return false
    }

    /// recv: bytes read, 0 at the end of the stream, or -errno (-EAGAIN:
    /// nothing yet; -EPROTO: a TLS error, the link is unusable).
    @inline(__always) func receive(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        switch self {
        case .plain:
            return aegis_socket_receive(fd, buffer, count)
        case .tls(let session):
            let (bytes, step) = session.read(buffer, count)
            switch step {
            case .done:
                // The scratch buffer holds a whole record (64 KiB > 16 KiB),
                // so OpenSSL keeps no decrypted bytes epoll could not signal.
                assert(session.bufferedBytes == 0, "decrypted bytes left in OpenSSL after a read")
                return bytes
            case .wantRead, .wantWrite: return -Int(EAGAIN)
            case .closed: return 0
            case .failed: return -Int(EPROTO)
            }
        }
    }

    /// send: bytes taken (maybe fewer than `count`), or -errno (-EAGAIN:
    /// the socket is full; the next call must start with the same bytes).
    @inline(__always) func send(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
        switch self {
        case .plain:
            return aegis_socket_send(fd, buffer, count)
        case .tls(let session):
            let (taken, step) = session.write(buffer, count)
            switch step {
            case .done: return taken
            case .wantRead, .wantWrite: return -Int(EAGAIN)
            case .closed: return -Int(EPIPE)
            case .failed: return -Int(EPROTO)
            }
        }
    }

    /// Frees the TLS session before its socket is closed (TLSSession's
    /// invariant); `notifyPeer` writes close_notify first.
    func release(notifyPeer: Bool) {
        if case .tls(let session) = self, !session.isFreed { session.free(notifyPeer: notifyPeer) }
    }
}

extension PeerConnection {
    /// The first byte of a record that opens a TLS handshake.
    static let tlsHandshakeRecordType: Int32 = 0x16

    enum HandshakeStep: Equatable {
        case done
        case waiting(wantsWrite: Bool)
        case refused(PeerTLSRefusal, detail: String)
    }

    /// One step of the TLS handshake, at each readiness of the socket; never
    /// blocks. On the accepting side a peer whose first byte does not open a
    /// handshake is refused before OpenSSL sees it.
    func advanceHandshake() -> HandshakeStep {
        guard case .tls(let session) = transport, state == .handshaking else { return .done }
        if case .accepted = role, !session.sawClientHello {
            let first = aegis_socket_peek_byte(fd)
            if first == -EAGAIN || first == -EINTR { return .waiting(wantsWrite: false) }
            if first < 0 { return .refused(.handshakeFailed, detail: "the peer closed the connection before its handshake") }
            if first != Self.tlsHandshakeRecordType {
                return .refused(.plaintext, detail: "its first byte (\(first)) does not open a TLS handshake: is cluster_tls_* unset there?")
            }
            session.sawClientHello = true
        }
        switch session.handshake() {
        case .done:
            switch role {
            case .accepted: state = .awaitingHello
            case .dialled: state = .open
            }
            return .done
        case .wantRead: return .waiting(wantsWrite: false)
        case .wantWrite: return .waiting(wantsWrite: true)
        case .closed:
            return .refused(.handshakeFailed, detail: "the peer closed the connection during the TLS handshake (does it have cluster_tls_* set, and accept this node's certificate?)")
        case .failed:
            let failure = TLSSession.lastFailure()
            switch session.certificateRefusal {
            case .outsideValidity?: return .refused(.expired, detail: "\(failure.text); peer certificate: \(session.verificationProblem)")
            case .untrusted?: return .refused(.untrusted, detail: "\(failure.text); peer certificate: \(session.verificationProblem)")
            case nil: return .refused(failure.peerSentNoCertificate ? .noCertificate : .handshakeFailed, detail: failure.text)
            }
        }
    }

    /// After its handshake the dialling side reads only what TLS itself
    /// sends (a key update, an alert, close_notify): nil while the link stays
    /// usable, else why it ends. Application bytes from the accepting side,
    /// which never writes frames, break the protocol and end it too.
    func readTLSControl(scratch: UnsafeMutableRawBufferPointer) -> Closure? {
        guard case .tls(let session) = transport, state == .open else { return nil }
        let (bytes, step) = session.read(scratch.baseAddress, scratch.count)
        switch step {
        case .done: return bytes > 0 ? .refused(.malformed) : nil
        case .wantRead, .wantWrite: return nil
        case .closed: return .endOfStream
        case .failed: return .tlsRefused(.peerRefused, detail: TLSSession.lastError())
        }
    }
}
