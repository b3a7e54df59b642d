import AegisProtocol
import AegisStore

/// Stage 1 for RESP connections: parse one command, check it, and send it
/// where it runs: this reactor, the reactor owning its shard, or all of them.
extension Reactor {
    static let maxKeyLength = 64 * 1024
    static let maxValueLength = 64 * 1024 * 1024

    /// Returns the bytes consumed (0 when the command is incomplete).
    func intakeRESP(_ connection: Connection, _ view: UnsafeRawBufferPointer) -> Int {
        // Before AUTH only small requests are read, so a client without the
        // token cannot make the node buffer much.
        let limits = connection.authenticated ? scratch.respLimits : RESPLimits.unauthenticated
        switch RESPRequestParser.parse(view, into: scratch.arguments, limits: limits, resumingAt: connection.respResume) {
        case .incomplete:
            connection.respResume = scratch.arguments.resumePoint
            return 0
        case .protocolError(let message):
            counters.protocolErrors &+= 1
            connection.respResume = .start
            withReply(connection) { RESPWriter.error(string: "ERR " + message, into: $0) }
            connection.closeAfterFlush = true
            return view.count
        case .complete(let consumed):
            if connection.respResume.position != 0 { connection.respResume = .start }
            if scratch.arguments.count > 0 {
                counters.commands &+= 1
                let args = ArgumentsView(base: view.baseAddress!, arguments: scratch.arguments)
                if connection.replyMode == .on {
                    dispatch(connection, args, raw: UnsafeRawBufferPointer(rebasing: view[0..<consumed]))
                } else {
                    dispatchWithoutReply(connection, args, raw: UnsafeRawBufferPointer(rebasing: view[0..<consumed]))
                }
            }
            return consumed
        }
    }

    /// Writes one complete reply in request order: straight into the output
    /// buffer, or into the reply queue when an earlier reply is outstanding.
    @inline(__always) func withReply(_ connection: Connection, _ body: (WireBuffer) -> Void) {
        let replies = connection.replies
        if replies.isEmpty && !replies.discarding {
            body(connection.output)
        } else {
            let start = replies.beginReady()
            body(replies.staging)
            replies.commitReady(from: start)
        }
    }

    /// CLIENT REPLY OFF, or the command after CLIENT REPLY SKIP: runs as
    /// usual, its reply dropped (CLIENT REPLY ON turns `discarding` off
    /// before it answers, so its own "+OK" is sent).
    private func dispatchWithoutReply(_ connection: Connection, _ args: ArgumentsView, raw: UnsafeRawBufferPointer) {
        if connection.replyMode == .skipNext { connection.replyMode = .on }
        connection.replies.discarding = true
        dispatch(connection, args, raw: raw)
        connection.replies.discarding = false
    }

    private func dispatch(_ connection: Connection, _ args: ArgumentsView, raw: UnsafeRawBufferPointer) {
        timed(connection, args) { dispatchCommand(connection, args, raw: raw) }
    }

    private func dispatchCommand(_ connection: Connection, _ args: ArgumentsView, raw: UnsafeRawBufferPointer) {
        let command = RESPCommand.lookup(args.bytes(0))
        connection.lastCommand = command
        let id = Int(command.rawValue)
        commandMetrics.count(id)
        if command == .unknown {
            withRejectedReply(connection, id) { writeUnknownCommand(args, into: $0) }
            return
        }
        if !command.arityAccepts(args.count) || (command == .mset && args.count % 2 == 0) {
            withRejectedReply(connection, id) { RESPWriter.error(string: "ERR wrong number of arguments for '\(command.name)' command", into: $0) }
            return
        }
        if !connection.authenticated && !command.allowedBeforeAuth {
            guard !node.clientAuth.tokenRequired else {
                withRejectedReply(connection, id) { RESPWriter.error("NOAUTH Authentication required.", into: $0) }
                return
            }
            // The token was removed by a reload since this client connected.
            connection.authenticated = true
        }
        if (command == .auth || command == .hello) && guardAuth(command, args, connection, id: id) { return }
        // AUTH, HELLO and QUIT stay open so a client can still log in and leave.
        if !command.allowedBeforeAuth && !admitRequest() {
            withRejectedReply(connection, id) { RESPWriter.error(string: rateLimitMessage, into: $0) }
            return
        }
        switch command.routing {
        case .connection:
            if (command == .client || command == .config) && dispatchAcrossReactors(command, args, connection) { return }
            withCountedReply(connection, id) { executeConnectionCommand(command, args, connection, into: $0) }
        case .keyed:
            if let problem = sizeProblem(command, args) {
                withRejectedReply(connection, id) { RESPWriter.error(problem, into: $0) }
                return
            }
            routeKeyed(command, args, connection, raw: raw)
        case .multiKey:
            if let problem = sizeProblem(command, args) {
                withRejectedReply(connection, id) { RESPWriter.error(problem, into: $0) }
                return
            }
            if command.actsOnOneKey(argumentCount: args.count) {
                routeKeyed(command, args, connection, raw: raw) // one key: no need to split
            } else {
                fanOut(command, args, connection)
            }
        case .everyReactor:
            let aggregate: ReplyQueue.Aggregate = command == .dbsize ? .countSum : .allOK
            runOnEveryReactor(command, args, connection, raw: raw,
                              sequence: connection.replies.openPending(parts: node.reactorCount, aggregate: aggregate))
        case .subcommandKeyed:
            routeKeyIntrospection(command, args, connection, raw: raw)
        case .twoKeys, .special:
            dispatchKeyspace(command, args, connection, raw: raw)
        case .cursor:
            guard let cursor = parseScanCursor(args.bytes(1)) else {
                withReply(connection) { RESPWriter.error("ERR invalid cursor", into: $0) }
                return
            }
            let shard = Int(cursor >> 40)
            if shard >= shards.count {
                withReply(connection) { writeScanReply(cursor: 0, keys: nil, into: $0) }
                return
            }
            if node.reactorCount == 1 {
                withReply(connection) { executeOwned(command, args, version: connection.respVersion, into: $0) }
                return
            }
            // Every reactor scans its own shards from the cursor; the reply
            // queue merges the parts into one page (ScanPage).
            runOnEveryReactor(command, args, connection, raw: raw,
                              sequence: connection.replies.openScanPage(parts: node.reactorCount, shardCount: shards.count))
        }
    }

    /// Runs `command` on every reactor, this one included; each answers one
    /// part of the reply slot `sequence`, whose aggregate joins the parts.
    func runOnEveryReactor(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection,
                           raw: UnsafeRawBufferPointer, sequence: UInt64) {
        for target in 0..<node.reactorCount where target != index {
            forwardRequest(to: target, connection: connection, sequence: sequence, bytes: raw)
        }
        scratch.reply.clear()
        executeOwned(command, args, version: connection.respVersion, into: scratch.reply)
        fillLocal(connection, sequence: sequence, scratch.reply.readableView)
    }

    /// Runs a one-key command here when this reactor owns the key's shard,
    /// otherwise forwards its raw bytes to the owner.
    @inline(__always) private func routeKeyed(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, raw: UnsafeRawBufferPointer) {
        let hash = KeyHash.hash(args.bytes(1))
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        let target = route(shard: shard)
        if leases.enforced && parkOrRefuse(connection, shard: shard, isWrite: command.isWrite, bytes: raw, commandID: Int(command.rawValue)) {
            return
        }
        if target == index {
            let store = shards[shard]!
            // Only a write may have to wait for the log or its quorum, and a
            // read of one key for its read quorum; everything else writes
            // its reply in place, with no copy through the scratch.
            if (!repliesMayBeHeld || !command.isWrite) && !(readAwaitsQuorum(shard) && command.readsOneKey) {
                withCountedReply(connection, Int(command.rawValue)) { executeKeyed(command, args, store: store, hash: hash, version: connection.respVersion, into: $0) }
                if replica.justWroteShard >= 0 { noteLastWrite(connection) }
            } else {
                scratch.reply.clear()
                executeKeyed(command, args, store: store, hash: hash, version: connection.respVersion, into: scratch.reply)
                countErrorReply(scratch.reply, wire: connection.wire ?? .resp2, id: Int(command.rawValue))
                deliverLocal(connection, scratch.reply)
            }
        } else {
            forward(to: target, connection: connection, bytes: raw, shard: shard, readOnly: !command.isWrite)
        }
    }

    /// Keys and values over the limits never reach the store.
    private func sizeProblem(_ command: RESPCommand, _ args: ArgumentsView) -> StaticString? {
        switch command {
        case .mset:
            var i = 1
            while i < args.count {
                if args.bytes(i).count > Self.maxKeyLength { return "ERR key is larger than 65536 bytes" }
                if args.bytes(i + 1).count > Self.maxValueLength { return "ERR value is larger than 67108864 bytes" }
                i += 2
            }
        case .mget, .del, .unlink, .exists:
            for i in 1..<args.count where args.bytes(i).count > Self.maxKeyLength { return "ERR key is larger than 65536 bytes" }
        default:
            if args.bytes(1).count > Self.maxKeyLength { return "ERR key is larger than 65536 bytes" }
            let valueIndex = command == .setex || command == .psetex ? 3 : 2
            if (command == .set || command == .setnx || command == .setex || command == .psetex || command == .append || command == .getset),
               args.bytes(valueIndex).count > Self.maxValueLength {
                return "ERR value is larger than 67108864 bytes"
            }
        }
        return nil
    }

    /// A command over several keys becomes one sub-command per key, each run
    /// by its shard's owner; the reply queue puts the answers back together.
    private func fanOut(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection) {
        switch command {
        case .mget:
            withReply(connection) { RESPWriter.arrayHeader(args.count - 1, into: $0) }
            for i in 1..<args.count {
                let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
                routePart(connection, sequence: sequence, key: args.bytes(i), name: "GET", value: nil, isWrite: false)
            }
        case .mset:
            let sequence = connection.replies.openPending(parts: (args.count - 1) / 2, aggregate: .allOK)
            var i = 1
            while i < args.count {
                routePart(connection, sequence: sequence, key: args.bytes(i), name: "SET", value: args.bytes(i + 1), isWrite: true)
                i += 2
            }
        case .del, .unlink, .exists:
            let sequence = connection.replies.openPending(parts: args.count - 1,
                                                          aggregate: command == .exists ? .countSum : .integerSum)
            let name: StaticString = command == .exists ? "EXISTS" : "DEL"
            for i in 1..<args.count {
                routePart(connection, sequence: sequence, key: args.bytes(i), name: name, value: nil, isWrite: command != .exists)
            }
        default:
            preconditionFailure("\(command) is not a multi-key command")
        }
    }

    /// Encodes `NAME key [value]` and runs it here or on the key's owner.
    private func routePart(_ connection: Connection, sequence: UInt64, key: UnsafeRawBufferPointer, name: StaticString,
                           value: UnsafeRawBufferPointer?, isWrite: Bool) {
        scratch.part.clear()
        scratch.part.append(value == nil ? "*2\r\n$" : "*3\r\n$")
        scratch.part.appendDecimal(name.utf8CodeUnitCount)
        scratch.part.append("\r\n")
        scratch.part.append(name)
        scratch.part.append("\r\n$")
        scratch.part.appendDecimal(key.count)
        scratch.part.append("\r\n")
        scratch.part.append(key)
        scratch.part.append("\r\n")
        if let value {
            scratch.part.append("$")
            scratch.part.appendDecimal(value.count)
            scratch.part.append("\r\n")
            scratch.part.append(value)
            scratch.part.append("\r\n")
        }
        let hash = KeyHash.hash(key)
        let shard = KeyHash.shard(of: hash, shardCount: shards.count)
        let target = route(shard: shard)
        if leases.enforced && parkOrRefuse(connection, shard: shard, isWrite: isWrite, bytes: scratch.part.readableView,
                                           commandID: 0, sequence: sequence) {
            return
        }
        if target != index {
            forwardRequest(to: target, connection: connection, sequence: sequence, bytes: scratch.part.readableView, shard: shard,
                           readOnly: !isWrite)
            return
        }
        let request = scratch.part.readableView
        guard case .complete = RESPRequestParser.parse(request, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
            preconditionFailure("a sub-command this reactor encoded must parse")
        }
        let partArgs = ArgumentsView(base: request.baseAddress!, arguments: scratch.forwardedArguments)
        scratch.reply.clear()
        executeKeyed(RESPCommand.lookup(partArgs.bytes(0)), partArgs, store: shards[shard]!, hash: hash, version: connection.respVersion, into: scratch.reply)
        fillLocal(connection, sequence: sequence, scratch.reply.readableView)
    }

    /// redis-server's text, byte for byte (server.c, processCommand): the
    /// name up to 128 bytes, then quoted arguments while the list is under
    /// 128 bytes, each cut to what is left of those 128; C strings, so a NUL
    /// ends an argument; CR and LF become spaces. Other bytes go out as they
    /// came, as redis-server sends them.
    private func writeUnknownCommand(_ args: ArgumentsView, into out: WireBuffer) {
        func cString(_ bytes: UnsafeRawBufferPointer, max: Int) -> UnsafeRawBufferPointer.SubSequence {
            let clipped = bytes.prefix(max)
            return clipped.prefix(while: { $0 != 0 })
        }
        var message: [UInt8] = Array("ERR unknown command '".utf8)
        message += cString(args.bytes(0), max: 128)
        message += Array("', with args beginning with: ".utf8)
        var listed: [UInt8] = []
        var i = 1
        while i < args.count && listed.count < 128 {
            listed.append(UInt8(ascii: "'"))
            listed += cString(args.bytes(i), max: 128 - (listed.count - 1))
            listed += Array("' ".utf8)
            i += 1
        }
        message += listed
        out.append(byte: UInt8(ascii: "-"))
        out.append(message.map { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") ? UInt8(ascii: " ") : $0 })
        out.append("\r\n")
    }
}
