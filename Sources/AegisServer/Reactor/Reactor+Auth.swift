import AegisProtocol

/// An AUTH answer held back until `dueMs` (ClientAuth's failure table
/// decided when); the reply was computed when the AUTH arrived.
struct HeldAuthAnswer {
    let connectionIndex: UInt32
    let generation: UInt32
    let sequence: UInt64
    let dueMs: Int64
    let reply: [UInt8]
}

/// AUTH under attack: after `AuthFailureTable.Policy.threshold` failures
/// from one address, its AUTH answers are held in the connection's reply
/// queue and released on the maintenance tick, as WAIT's are, so the
/// reactor never sleeps for them; and a connection that has not logged in
/// within auth_timeout is closed.
extension Reactor {
    static let authBacklogMessage = "too many failed AUTH attempts from this address: AUTH answers to it are slowed down and this one was not checked; retry later"

    /// RESP AUTH, or HELLO with AUTH, while a token is set: true when it was
    /// held or refused here, false when it should run and be answered now.
    func guardAuth(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, id: Int) -> Bool {
        let auth = node.clientAuth
        guard auth.tokenRequired else { return false }
        if command == .hello && !(2..<max(args.count, 2)).contains(where: { args.matches($0, "AUTH") }) { return false }
        switch auth.answerTiming(for: connection.address, nowMs: monotonicMs) {
        case .now:
            return false
        case .refuse:
            withCountedReply(connection, id) { RESPWriter.error(string: "ERR " + Self.authBacklogMessage, into: $0) }
            connection.closeAfterFlush = true
            return true
        case .holdUntil(let dueMs):
            let reply = WireBuffer()
            executeConnectionCommand(command, args, connection, into: reply)
            countErrorReply(reply, wire: connection.wire ?? .resp2, id: id)
            holdAuthAnswer(reply, for: connection, until: dueMs)
            return true
        }
    }

    /// Binary AUTH (wire-protocol.md): the same checks and timing as RESP's.
    func answerBinaryAuth(_ connection: Connection, _ frame: BinaryRequest, token given: UnsafeRawBufferPointer, id: Int) {
        let auth = node.clientAuth
        guard auth.tokenRequired else {
            connection.authenticated = true
            withReply(connection) { BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, into: $0) }
            return
        }
        let timing = auth.answerTiming(for: connection.address, nowMs: monotonicMs)
        if timing == .refuse {
            withCountedReply(connection, id) { BinaryResponseWriter.write(status: .error, requestID: frame.requestID, errorText: Self.authBacklogMessage, into: $0) }
            connection.closeAfterFlush = true
            return
        }
        let reply = WireBuffer()
        if auth.matches(given) {
            connection.authenticated = true
            BinaryResponseWriter.write(status: .ok, requestID: frame.requestID, into: reply)
        } else {
            auth.noteFailure(from: connection.address, nowMs: monotonicMs)
            BinaryResponseWriter.write(status: .error, requestID: frame.requestID, error: "invalid auth token", into: reply)
        }
        countErrorReply(reply, wire: .binary, id: id)
        if case .holdUntil(let dueMs) = timing {
            holdAuthAnswer(reply, for: connection, until: dueMs)
        } else {
            withReply(connection) { $0.append(reply.readableView) }
        }
    }

    /// Puts `reply` in a slot of its own, filled at `dueMs`; the
    /// connection's later requests wait behind it (`moveSlot`).
    private func holdAuthAnswer(_ reply: WireBuffer, for connection: Connection, until dueMs: Int64) {
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        connection.moveSlot = sequence
        heldAuthAnswers.append(HeldAuthAnswer(connectionIndex: connection.index, generation: connection.generation,
                                              sequence: sequence, dueMs: dueMs, reply: Array(reply.readableView)))
    }

    /// Releases the held AUTH answers whose time has come (maintenance tick).
    func answerDueAuth() {
        guard !heldAuthAnswers.isEmpty else { return }
        var still: [HeldAuthAnswer] = []
        for held in heldAuthAnswers {
            guard let connection = table.connection(slot: Int(held.connectionIndex), generation: held.generation),
                  !connection.isClosed else { continue }
            if held.dueMs > monotonicMs {
                still.append(held)
                continue
            }
            held.reply.withUnsafeBytes { connection.replies.fill(sequence: held.sequence, with: $0) }
            markDirty(connection)
        }
        heldAuthAnswers = still
    }

    /// True (and the connection on its way out) when a token is set and
    /// the connection has not logged in within auth_timeout.
    func closeIfAuthTimedOut(_ connection: Connection, authTimeoutMs: Int64, now: Int64) -> Bool {
        guard authTimeoutMs > 0, !connection.authenticated, connection.refusal == nil,
              !connection.closeAfterFlush, now - connection.connectedMs > authTimeoutMs else { return false }
        node.clientAuth.authTimeouts.add(1, ordering: .relaxed)
        logger.debug("closing connection: no AUTH within auth_timeout", metadata: [
            "client": "\(connection.clientID)", "address": "\(connection.address)",
        ])
        let message = "no AUTH within auth_timeout (\(authTimeoutMs) ms): closing the connection"
        switch connection.wire {
        case nil:
            close(connection)
            return true
        case .binary:
            withReply(connection) { BinaryResponseWriter.write(status: .error, requestID: 0, errorText: message, into: $0) }
        case .resp2, .resp3:
            withReply(connection) { RESPWriter.error(string: "ERR " + message, into: $0) }
        }
        connection.closeAfterFlush = true
        markDirty(connection)
        updateInterest(connection)
        return true
    }
}
