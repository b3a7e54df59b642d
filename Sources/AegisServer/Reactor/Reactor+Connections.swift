import AegisProtocol
import AegisTLS
import CSupport
import Glibc

/// A connection's life after accept: reading and the bounds on what it may
/// send unparsed, dispatching complete requests, writing replies in one
/// write per connection per iteration, epoll interest, and closing.
extension Reactor {
    // MARK: - Reading

    func readAvailable(_ connection: Connection) {
        if connection.isBackpressured || connection.closeAfterFlush { return }
        // Complete requests are parsed straight out of the shared scratch;
        // only a partial request is copied into the connection's own buffer.
        let usesScratch = connection.input.isEmpty
        let buffer = usesScratch ? scratch.read : connection.input
        assert(!usesScratch || scratch.read.isEmpty)
        // A partial request is read no further than the connection's cap,
        // so the buffer never grows past it before the check below.
        let room = usesScratch ? Int.max : buffers.inputCapBytes - connection.input.readableBytes
        if room <= 0 {
            refuseOversizedInput(connection)
            return
        }
        let space = buffer.writableSpace(minimum: min(16 * 1024, room))
        let wanted = min(space.count, room)
        let count = if let session = connection.tls {
            receiveTLS(connection, session, space.baseAddress, wanted)
        } else {
            door.receive(connection.fd, space.baseAddress, wanted)
        }
        if count <= 0 {
            if count == 0 || (-count != EAGAIN && -count != EINTR) { close(connection) }
            return
        }
        buffer.commitWrite(count)
        counters.bytesIn &+= count
        connection.lastActivityMs = monotonicMs
        processInput(connection, buffer)
        if connection.isClosed {
            scratch.read.clear()
            return
        }
        if usesScratch && !scratch.read.isEmpty {
            connection.input.append(scratch.read.readableView)
            scratch.read.clear()
        }
        noteInputState(connection)
        if connection.isBackpressured { updateInterest(connection) }
    }

    /// Tracks how long unparsed input has waited (the read timeout), gives
    /// back the input buffer once it is empty, and holds a partial request
    /// to its bounds.
    private func noteInputState(_ connection: Connection) {
        if connection.input.isEmpty {
            connection.partialSinceMs = 0
            connection.input.releaseIfIdle(keep: 0)
        } else if connection.partialSinceMs == 0 {
            connection.partialSinceMs = monotonicMs
        }
        chargeBuffers(connection)
        // Input held back by backpressure is complete requests, and is not
        // read further until they have run: only a partial request can grow.
        guard !connection.input.isEmpty && !connection.inputHeldBack && !connection.closeAfterFlush else { return }
        let needed = connection.partialRequestNeeded
        if connection.input.readableBytes >= buffers.inputCapBytes || needed > buffers.inputCapBytes {
            // A request whose announced size is over the cap is refused as
            // soon as its length is read, not after the cap has been filled.
            refuseOversizedInput(connection)
            return
        }
        if needed > connection.input.readableBytes {
            connection.input.reserve(totalReadable: needed)
            chargeBuffers(connection)
        }
        if buffers.isOverInputBudget {
            shedLargestInputs()
        }
    }

    /// Over the reactor's input budget, the connections holding the most
    /// unparsed input are refused, largest first, as Redis's
    /// maxmemory-clients evicts its largest clients: the many clients with
    /// a small request in progress are not the ones that filled it. Runs
    /// only when over the budget, which no well-behaved load reaches.
    private func shedLargestInputs() {
        while buffers.isOverInputBudget {
            var largest: Connection?
            for case let candidate? in table.connections where !candidate.closeAfterFlush && !candidate.input.isEmpty {
                if candidate.chargedInputBytes > (largest?.chargedInputBytes ?? 0) { largest = candidate }
            }
            guard let largest else { return }
            refuseInput(largest, "node input buffers full: clients are sending more unfinished requests than this node holds; retry later")
        }
    }

    private func refuseOversizedInput(_ connection: Connection) {
        refuseInput(connection, "request larger than client_input_max_mb (\(buffers.inputCapBytes >> 20) MiB)")
    }

    /// Answers with an error in the connection's protocol, after the
    /// replies it is owed, drops its partial request and closes it.
    private func refuseInput(_ connection: Connection, _ reason: String) {
        counters.protocolErrors &+= 1
        logger.debug("closing connection: input over its bound", metadata: ["client": "\(connection.clientID)", "reason": "\(reason)"])
        connection.input.clear()
        connection.respResume = .start
        connection.binaryFrameNeeded = 0
        connection.partialSinceMs = 0
        connection.input.releaseIfIdle(keep: 0)
        if connection.wire == .binary {
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: 0, errorText: reason, into: $0) }
        } else {
            withReply(connection) { RESPWriter.error(string: "ERR " + reason, into: $0) }
        }
        connection.closeAfterFlush = true
        chargeBuffers(connection)
        markDirty(connection)
        updateInterest(connection)
    }

    /// Brings this reactor's counts of client buffer bytes up to date with
    /// the connection's buffers (a few loads when nothing changed).
    @inline(__always) func chargeBuffers(_ connection: Connection) {
        buffers.charge(connection)
    }

    /// Reads and drops what the client already sent before a connection is
    /// closed for bad input: closing with unread bytes makes the kernel send
    /// a reset, and the client would lose the error that explains why.
    /// Bounded, so a client that keeps sending cannot hold the reactor.
    private func discardPendingInput(_ connection: Connection) {
        for _ in 0..<16 {
            scratch.read.clear()
            let space = scratch.read.writableSpace(minimum: 16 * 1024)
            let count = if let session = connection.tls {
                receiveTLS(connection, session, space.baseAddress, space.count)
            } else {
                door.receive(connection.fd, space.baseAddress, space.count)
            }
            if count <= 0 { break }
            counters.bytesIn &+= count
        }
        scratch.read.clear()
    }

    /// Parses and dispatches every complete request in `buffer`, stopping early
    /// when the connection's output is over its bound.
    func processInput(_ connection: Connection, _ buffer: WireBuffer) {
        connection.inputHeldBack = false
        var handledAny = false
        while !buffer.isEmpty && !connection.isClosed && !connection.closeAfterFlush {
            if connection.isBackpressured {
                connection.inputHeldBack = true
                break
            }
            guard let wire = connection.wire ?? sniff(connection, buffer) else { return }
            let consumed: Int
            switch wire {
            case .binary: consumed = intakeBinary(connection, buffer.readableView)
            case .resp2, .resp3: consumed = intakeRESP(connection, buffer.readableView)
            }
            if consumed == 0 { break }
            buffer.consume(consumed)
            handledAny = true
        }
        if handledAny { markDirty(connection) }
    }

    private func sniff(_ connection: Connection, _ buffer: WireBuffer) -> WireKind? {
        if answerRefusal(connection, buffer) { return nil }
        switch WireProtocolSniffer.classify(firstByte: buffer.readableView[0]) {
        case .binary: connection.wire = .binary
        case .resp: connection.wire = .resp2
        }
        return connection.wire
    }

    // MARK: - Writing

    @inline(__always) func markDirty(_ connection: Connection) {
        table.markDirty(connection)
    }

    func flushDirty() {
        // New dirty connections can appear while flushing (a close frees a
        // slot); iterate by index.
        var i = 0
        while i < table.dirty.count {
            let connection = table.dirty[i]
            connection.isDirty = false
            if !connection.isClosed { flush(connection) }
            i += 1
        }
        table.clearDirty()
    }

    private func flush(_ connection: Connection) {
        if !connection.replies.isEmpty { connection.replies.drain(into: connection.output) }
        if let slot = connection.moveSlot, connection.replies.isSent(slot) { connection.moveSlot = nil }
        let output = connection.output
        while !output.isEmpty {
            let view = output.readableView
            let written = if let session = connection.tls {
                sendTLS(session, view.baseAddress, view.count)
            } else {
                door.send(connection.fd, view.baseAddress, view.count)
            }
            if written < 0 {
                if -written == EAGAIN { break }
                if -written == EINTR { continue }
                close(connection)
                return
            }
            counters.bytesOut &+= written
            output.consume(written)
        }
        if output.isEmpty {
            connection.writeBlockedSinceMs = 0
            output.releaseIfIdle(keep: 16 * 1024)
            if connection.closeAfterFlush && connection.replies.isEmpty {
                discardPendingInput(connection)
                close(connection)
                return
            }
        } else if connection.writeBlockedSinceMs == 0 {
            connection.writeBlockedSinceMs = monotonicMs
        }
        // Requests held back by backpressure run as soon as the output is
        // back under its bound, not only once it is empty: a client that
        // reads slowly keeps about the bound of replies ready, and one that
        // does not read holds the bound, not whatever was left when the
        // last reply crossed it.
        if connection.inputHeldBack && !connection.isBackpressured {
            processInput(connection, connection.input)
            if connection.isClosed { return }
            noteInputState(connection)
        }
        chargeBuffers(connection)
        updateInterest(connection)
    }

    func updateInterest(_ connection: Connection) {
        guard !connection.isClosed else { return }
        // Parked for the outbound backlog (Reactor+Forwarding.swift): no read events, and
        // no RDHUP either, which would fire on every wait until unparked.
        let parked = isParkedForBacklog(connection)
        var wanted: UInt32 = parked ? 0 : AEGIS_EPOLLRDHUP
        if let session = connection.tls {
            // The handshake sets its own interest (Reactor+TLS.swift).
            if !session.isEstablished { return }
            if session.readWantsWrite { wanted |= AEGIS_EPOLLOUT }
        }
        if !connection.output.isEmpty { wanted |= AEGIS_EPOLLOUT }
        if !connection.isBackpressured && !connection.closeAfterFlush && !parked { wanted |= AEGIS_EPOLLIN }
        if wanted != connection.interest {
            connection.interest = wanted
            _ = poller.modify(connection.fd, wanted, token: token(of: connection))
        }
    }

    func close(_ connection: Connection) {
        guard !connection.isClosed else { return }
        connection.isClosed = true
        poller.remove(connection.fd, .client)
        releaseHandshakeSlot(connection)
        if let session = connection.tls {
            // Freed before the descriptor closes: it writes close_notify on it.
            session.free(notifyPeer: true)
            connection.tls = nil
        }
        door.closeSocket(connection.fd, .client)
        connection.replies.reset()
        buffers.uncharge(connection)
        table.remove(connection)
        counters.connections -= 1
        node.openConnections.wrappingSubtract(1, ordering: .relaxed)
    }
}
