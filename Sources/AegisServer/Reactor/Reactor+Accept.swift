import AegisProtocol
import CSupport
import Glibc

/// Accepting client connections: the listener, the pause when descriptors
/// run out, and the refusal in their own protocol of connections over
/// max_conns and, in protected mode, of clients off loopback (state in
/// Listener.swift).
extension Reactor {
    func acceptConnections() {
        // Bounded per iteration so a connection storm cannot starve clients.
        for _ in 0..<64 {
            var peer = ClientAddress.unknown
            let fd = door.accept(listener.fd, peer: &peer)
            if fd < 0 {
                let error = -fd
                if error == EAGAIN || error == EWOULDBLOCK || error == EINTR { return }
                if AcceptPause.concernsOneConnection(error) { continue }
                pauseAccepting(error: error)
                return
            }
            if let failures = listener.pause.noteAccepted() {
                logger.notice("accepting client connections again", metadata: [
                    "reactor": "\(index)", "failed_accepts": "\(failures)",
                ])
            }
            if node.state == .draining {
                door.closeSocket(fd, .client)
                continue
            }
            let open = node.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
            if open > node.runtime.maxConns.load(ordering: .relaxed) {
                counters.connectionsRejected &+= 1
                refuse(fd: fd, peer: peer, .atCapacity)
                continue
            }
            if !peer.isLoopback && node.clientAuth.refusesNonLoopback {
                node.clientAuth.protectedModeRefusals.add(1, ordering: .relaxed)
                refuse(fd: fd, peer: peer, .protectedMode)
                continue
            }
            register(fd: fd, peer: peer, refusal: nil)
        }
    }

    /// Out of descriptors (or kernel memory): the pending connection stays in
    /// the backlog and the listener stays readable, so stop polling it until
    /// the next maintenance tick instead of spinning on it.
    private func pauseAccepting(error: Int32) {
        if !listener.pause.isPaused { poller.remove(listener.fd, .listener) }
        guard let report = listener.pause.noteFailure(error: error, nowMs: monotonicMs) else { return }
        logger.warning("cannot accept client connections; pausing accepts until descriptors free up", metadata: [
            "reactor": "\(index)", "error": "\(SystemError(operation: "accept4", code: report.error))",
            "failed_accepts": "\(report.failures)", "interval_ms": "\(AcceptPause.reportIntervalMs)",
            "open_connections": "\(node.openConnections.load(ordering: .relaxed))",
        ])
    }

    /// Called every maintenance tick: one accept attempt per tick while
    /// descriptors are short costs nothing and notices when they free up.
    func resumeAcceptingIfPaused() {
        guard listener.pause.isPaused, listener.fd >= 0 else { return }
        // Left paused when epoll cannot take it back: the next tick retries.
        guard poller.add(listener.fd, AEGIS_EPOLLIN, token: EventPoller.listenerToken, .listener) == 0 else { return }
        listener.pause.resume()
        acceptConnections()
    }

    /// Over max_conns, or off loopback in protected mode. The protocol is
    /// not known until the client's first byte, and a RESP error line read
    /// by a binary client is a 759 MB frame length, so the connection is
    /// kept just long enough to hear it (see `answerRefusal`). It stays
    /// counted in openConnections meanwhile, and only a few wait at once:
    /// past that, or when the client says nothing within `refusalWaitMs`,
    /// it is closed without a word, which every client understands.
    private func refuse(fd: Int32, peer: ClientAddress, _ reason: Connection.Refusal) {
        listener.refusals.removeAll { $0.isClosed }
        if listener.refusals.count < Listener.maxRefusalsAwaitingFirstByte {
            // register closes the descriptor itself when it fails.
            if let connection = register(fd: fd, peer: peer, refusal: reason) { listener.refusals.append(connection) }
            return
        }
        node.openConnections.wrappingSubtract(1, ordering: .relaxed)
        door.closeSocket(fd, .client)
    }

    /// The first bytes of a connection refused at max_conns: answer in its
    /// protocol, then close. Returns false for any other connection.
    func answerRefusal(_ connection: Connection, _ buffer: WireBuffer) -> Bool {
        guard !listener.refusals.isEmpty, let position = listener.refusals.firstIndex(where: { $0 === connection }) else { return false }
        listener.refusals.remove(at: position)
        let text = connection.refusal == .protectedMode ? ClientAuth.protectedModeMessage : "ERR max number of clients reached"
        let view = buffer.readableView
        if WireProtocolSniffer.classify(firstByte: view[0]) == .binary {
            // The request id is echoed when the header got that far.
            let idOffset = BinaryWire.lengthPrefix + 3
            var requestID: UInt64 = 0
            if view.count >= idOffset + 8 && view[BinaryWire.lengthPrefix] == BinaryWire.magic {
                for byte in view[idOffset..<(idOffset + 8)] { requestID = requestID << 8 | UInt64(byte) }
            }
            connection.wire = .binary
            let binaryText = text.hasPrefix("ERR ") ? String(text.dropFirst(4)) : text
            BinaryResponseWriter.write(status: .error, requestID: requestID, errorText: binaryText, into: connection.output)
        } else {
            connection.wire = .resp2
            RESPWriter.error(string: text, into: connection.output)
        }
        if connection.refusal == .protectedMode {
            logger.debug("protected mode: refused a client off loopback", metadata: ["address": "\(connection.address)"])
        }
        connection.closeAfterFlush = true
        buffer.clear()
        markDirty(connection)
        return true
    }

    /// Refused connections that have not spoken within refusalWaitMs are
    /// closed (maintenance tick), so they hold no slot under max_conns long.
    func closeSilentRefusals() {
        guard !listener.refusals.isEmpty else { return }
        for connection in listener.refusals where !connection.isClosed && monotonicMs - connection.lastActivityMs >= Listener.refusalWaitMs {
            close(connection)
        }
        listener.refusals.removeAll { $0.isClosed }
    }

    @discardableResult
    private func register(fd: Int32, peer: ClientAddress, refusal: Connection.Refusal?) -> Connection? {
        let (slot, generation) = table.reserveSlot()
        let clientID = node.nextClientID.wrappingAdd(1, ordering: .relaxed).oldValue
        let connection = Connection(
            fd: fd, index: UInt32(slot), generation: generation, clientID: clientID,
            peer: "", address: peer, nowMs: monotonicMs, requiresAuth: node.clientAuth.tokenRequired)
        connection.refusal = refusal
        table.install(connection)
        // Counted before anything can fail: `close` takes it back.
        counters.connections += 1
        if let tls = node.tls, !attachTLS(connection, tls) {
            close(connection)
            return nil
        }
        connection.interest = AEGIS_EPOLLIN | AEGIS_EPOLLRDHUP
        let result = poller.add(fd, connection.interest, token: token(of: connection), .client)
        if result < 0 {
            logger.warning("epoll_ctl(add) failed", metadata: ["error": "\(SystemError(operation: "epoll_ctl", code: -result))"])
            close(connection)
            return nil
        }
        if refusal == nil { counters.connectionsAccepted &+= 1 }
        return connection
    }

    @inline(__always) func token(of connection: Connection) -> UInt64 {
        UInt64(connection.index) | UInt64(connection.generation) << 32
    }
}
