import AegisTLS
import CSupport
import Glibc

/// TLS on the client port (tls_enabled), inside the reactor's own loop:
/// each accepted connection gets an OpenSSL session on its non-blocking
/// socket; the handshake advances one step per epoll readiness (never
/// blocking), and once it is done reads and writes go through SSL_read and
/// SSL_write where a plaintext connection calls recv and send. Everything
/// above (sniffing RESP or binary, parsing, replies) is unchanged.
///
/// A TLS record is decrypted whole, and the server context reads ahead
/// (one recv per wake-up instead of one for a record's header and one for
/// its body), so OpenSSL can hold input the socket no longer signals:
/// plaintext of a record, or the next records read ahead. Such connections
/// are listed in `tlsBuffered` and read again before the loop sleeps.
extension Reactor {
    /// The first byte of every TLS record that opens a handshake (ContentType handshake).
    static let tlsHandshakeRecordType = 0x16

    /// Gives a newly accepted connection its TLS session; false when its
    /// address already has its share of handshakes in progress, or OpenSSL
    /// could not make a session (out of memory), and the caller closes it.
    func attachTLS(_ connection: Connection, _ tls: TLSService) -> Bool {
        guard tls.admission.admit(connection.address) else {
            tls.addressLimitRefusals.add(1, ordering: .relaxed)
            logger.debug("TLS port: closing a connection, its address has too many handshakes in progress", metadata: [
                "address": "\(connection.address)", "limit": "\(tls.admission.maxPerAddress)",
            ])
            return false
        }
        connection.holdsHandshakeSlot = true
        guard let session = TLSSession(context: tls.context, fd: connection.fd, isServer: true) else {
            logger.warning("cannot create a TLS session for a client connection", metadata: ["error": "\(TLSSession.lastError())"])
            return false
        }
        connection.tls = session
        return true
    }

    /// The connection's handshake is over, finished or not: its address's slot is free again.
    func releaseHandshakeSlot(_ connection: Connection) {
        guard connection.holdsHandshakeSlot else { return }
        connection.holdsHandshakeSlot = false
        node.tls?.admission.release(connection.address)
    }

    /// Reads and drops what the client sent that nobody will read (once,
    /// bounded), so that the close that follows is a FIN the client sees
    /// after any alert, not a reset that discards it.
    private func dropUnreadInput(_ connection: Connection) {
        _ = door.receive(connection.fd, scratch.read.writableSpace(minimum: 4096).baseAddress, 4096)
    }

    /// Closes a connection whose handshake did not finish, counted by why.
    private func closeHandshake(_ connection: Connection, _ failure: ClientTLSFailure) {
        node.tls?.count(failure)
        close(connection)
    }

    /// One step of a connection's handshake, at each readiness of its socket.
    func advanceHandshake(_ connection: Connection, _ session: TLSSession) {
        if !session.sawClientHello {
            let first = aegis_socket_peek_byte(connection.fd)
            if first == -EAGAIN || first == -EINTR { return }
            if first < 0 {
                closeHandshake(connection, .closed)
                return
            }
            if Int(first) != Self.tlsHandshakeRecordType {
                logger.debug("TLS port: closing a client that did not start a TLS handshake (plaintext?)", metadata: [
                    "address": "\(connection.address)", "first_byte": "\(first)",
                ])
                dropUnreadInput(connection)
                closeHandshake(connection, .plaintext)
                return
            }
            session.sawClientHello = true
        }
        connection.lastActivityMs = monotonicMs
        switch session.handshake() {
        case .done:
            releaseHandshakeSlot(connection)
            if let tls = node.tls {
                tls.handshakesCompleted.add(1, ordering: .relaxed)
                // What OpenSSL did, not what was asked: it keeps the record
                // layer in user space for a cipher the kernel lacks.
                let offload = session.kernelOffload
                if offload.send || offload.receive { tls.kernelRecordLayerHandshakes.add(1, ordering: .relaxed) }
            }
            setInterest(connection, AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP)
            // A TLS 1.3 client may send its first request right behind its
            // Finished message; read it now rather than wait for an edge.
            readAvailable(connection)
        case .wantRead:
            setInterest(connection, AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP)
        case .wantWrite:
            setInterest(connection, AEGIS_EPOLLOUT | AEGIS_EPOLLRDHUP)
        case .closed:
            closeHandshake(connection, .closed)
        case .failed:
            let failure = TLSSession.lastFailure()
            let certificate = session.verificationProblem
            let reason: ClientTLSFailure = session.certificateRefusal != nil ? .badCertificate
                : failure.peerSentNoCertificate ? .noCertificate : failure.peerClosed ? .closed : .protocolError
            logger.debug("TLS handshake failed; closing the connection", metadata: [
                "address": "\(connection.address)", "reason": "\(reason.rawValue)", "error": "\(failure.text)",
                "client_certificate": "\(certificate.isEmpty ? "-" : certificate)",
            ])
            // OpenSSL has written its alert (certificate expired, certificate
            // required, ...). A TLS 1.3 client counts its handshake done once it
            // sent its Finished and sends a request right behind it; closing
            // with that request unread would be a reset, and the client would
            // see "connection reset" instead of the alert that says why.
            dropUnreadInput(connection)
            closeHandshake(connection, reason)
        }
    }

    private func setInterest(_ connection: Connection, _ wanted: UInt32) {
        guard !connection.isClosed, wanted != connection.interest else { return }
        connection.interest = wanted
        _ = poller.modify(connection.fd, wanted, token: token(of: connection))
    }

    /// recv for a TLS connection: plaintext bytes, 0 when the peer closed,
    /// -EAGAIN when a record is not complete yet, -EPROTO on a TLS error.
    func receiveTLS(_ connection: Connection, _ session: TLSSession, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        let (bytes, step) = session.read(buffer, count)
        switch step {
        case .done:
            if !session.isListedAsBuffered && session.holdsInput {
                session.isListedAsBuffered = true
                tlsBuffered.append(connection)
            }
            return bytes
        case .wantRead:
            return -Int(EAGAIN)
        case .wantWrite:
            // A TLS 1.3 key update must be answered before reading on.
            session.readWantsWrite = true
            updateInterest(connection)
            return -Int(EAGAIN)
        case .closed:
            return 0
        case .failed:
            logger.debug("TLS error on a client connection; closing it", metadata: [
                "client": "\(connection.clientID)", "error": "\(TLSSession.lastError())",
            ])
            return -Int(EPROTO)
        }
    }

    /// send for a TLS connection: plaintext bytes taken, -EAGAIN when the
    /// socket is full, -EPIPE when the connection is gone.
    func sendTLS(_ session: TLSSession, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
        let (taken, step) = session.write(bytes, count)
        switch step {
        case .done: return taken
        case .wantRead, .wantWrite: return -Int(EAGAIN)
        case .closed, .failed:
            _ = TLSSession.lastError()
            return -Int(EPIPE)
        }
    }

    /// True when a listed connection can be read now (not held by its own backpressure).
    var hasReadableTLSBuffer: Bool {
        tlsBuffered.contains { !$0.isClosed && !$0.isBackpressured && !$0.closeAfterFlush }
    }

    /// Reads the plaintext OpenSSL holds for listed connections; those
    /// still backpressured stay listed until their replies drain.
    func readBufferedTLS() {
        let listed = tlsBuffered
        tlsBuffered.removeAll(keepingCapacity: true)
        for connection in listed {
            guard !connection.isClosed, let session = connection.tls else { continue }
            session.isListedAsBuffered = false
            if !session.holdsInput { continue }
            if connection.isBackpressured || connection.closeAfterFlush {
                session.isListedAsBuffered = true
                tlsBuffered.append(connection)
                continue
            }
            readAvailable(connection)
        }
    }

    /// The longest a TLS handshake may take: auth_timeout (also while no
    /// token is set), else idle_timeout, else 10 s. A handshake that stops
    /// half-way (slowloris) holds a descriptor and a session, so it is
    /// bounded even where a logged-in client would not be.
    func handshakeLimitMs(idleMs: Int64) -> Int64 {
        let authMs = node.clientAuth.authTimeoutMs
        if authMs > 0 { return authMs }
        return idleMs > 0 ? idleMs : 10_000
    }

    /// Closes a connection whose handshake has run past its limit; true when it did.
    func closeIfHandshakeStalled(_ connection: Connection, limitMs: Int64, now: Int64) -> Bool {
        guard let session = connection.tls, !session.isEstablished, now - connection.connectedMs > limitMs else { return false }
        logger.debug("closing connection: TLS handshake not finished in time", metadata: [
            "address": "\(connection.address)", "limit_ms": "\(limitMs)",
        ])
        closeHandshake(connection, .timeout)
        return true
    }
}
