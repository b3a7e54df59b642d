import AegisConfig
import AegisProtocol
import AegisStore
import CSupport
import Glibc

/// The introspection tools use: CLIENT LIST/INFO/KILL/NO-EVICT/REPLY,
/// CONFIG SET/RESETSTAT, COMMAND LIST/GETKEYS, SLOWLOG, LATENCY, WAIT,
/// OBJECT and MEMORY, answering as redis-server 7.0 does where this node
/// has the same thing to say.
extension Reactor {
    // MARK: - commands that need every reactor

    /// CLIENT LIST, CLIENT KILL and CONFIG RESETSTAT concern every
    /// reactor's connections or counters: one part per reactor, put together
    /// by the reply queue. Returns false for everything else.
    func dispatchAcrossReactors(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection) -> Bool {
        let aggregate: ReplyQueue.Aggregate
        let part: [[UInt8]]
        if command == .client && args.count >= 2 && args.matches(1, "LIST") {
            if let problem = clientListProblem(args) {
                withCountedReply(connection, Int(command.rawValue)) { RESPWriter.error(string: problem, into: $0) }
                return true
            }
            aggregate = connection.respVersion == .resp3 ? .verbatimConcat : .bulkConcat
            part = (0..<args.count).map { Array(args.bytes($0)) }
        } else if command == .client && args.count >= 3 && args.matches(1, "KILL") {
            switch parseKillFilter(args, caller: connection) {
            case .failure(let problem):
                withCountedReply(connection, Int(command.rawValue)) { RESPWriter.error(string: problem.message, into: $0) }
                return true
            case .success(let filter):
                aggregate = filter.oldForm ? .killedOne : .integerSum
                part = [Array("CLIENT".utf8), Array("KILL-PART".utf8)] + filter.encoded
            }
        } else if command == .config && args.count == 2 && args.matches(1, "RESETSTAT") {
            aggregate = .allOK
            part = [Array("CONFIG".utf8), Array("RESETSTAT".utf8)]
        } else {
            return false
        }
        scratch.part.clear()
        scratch.part.append("*")
        scratch.part.appendDecimal(part.count)
        scratch.part.append("\r\n")
        for argument in part { argument.withUnsafeBytes { RESPWriter.bulk($0, into: scratch.part) } }
        let request = Array(scratch.part.readableView)
        let sequence = connection.replies.openPending(parts: node.reactorCount, aggregate: aggregate)
        request.withUnsafeBytes { bytes in
            guard case .complete = RESPRequestParser.parse(bytes, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
                preconditionFailure("a request this reactor encoded must parse")
            }
            let partArgs = ArgumentsView(base: bytes.baseAddress!, arguments: scratch.forwardedArguments)
            runOnEveryReactor(command, partArgs, connection, raw: bytes, sequence: sequence)
        }
        return true
    }

    /// This reactor's part of CLIENT LIST / CLIENT KILL / CONFIG RESETSTAT.
    func executeReactorPart(_ command: RESPCommand, _ args: ArgumentsView, version: RESPVersion, into out: WireBuffer) {
        if command == .config {
            resetStatsHere()
            RESPWriter.simpleString("OK", into: out)
        } else if args.matches(1, "LIST") {
            var text = ""
            let wanted = clientListIDs(args)
            for connection in table.allConnections where !connection.isClosed {
                if let wanted, !wanted.contains(connection.clientID) { continue }
                text += clientLine(connection) + "\n"
            }
            RESPWriter.bulk(string: text, into: out)
        } else {
            RESPWriter.integer(killMatching(KillFilter(decoding: args)), into: out)
        }
    }

    // MARK: - CLIENT

    /// CLIENT subcommands beyond SETNAME/GETNAME/ID/SETINFO; false when not one of them.
    func executeClientIntrospection(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) -> Bool {
        if args.matches(1, "INFO") {
            guard args.count == 2 else { return wrongArity("client|info", into: out) }
            RESPWriter.verbatim(clientLine(connection) + "\n", connection.respVersion, into: out)
        } else if args.matches(1, "NO-EVICT") {
            guard args.count == 3 else { return wrongArity("client|no-evict", into: out) }
            if args.matches(2, "ON") { connection.noEvict = true }
            else if args.matches(2, "OFF") { connection.noEvict = false }
            else { RESPWriter.error("ERR syntax error", into: out); return true }
            RESPWriter.simpleString("OK", into: out)
        } else if args.matches(1, "REPLY") {
            guard args.count == 3 else { return wrongArity("client|reply", into: out) }
            if args.matches(2, "ON") {
                connection.replyMode = .on
                connection.replies.discarding = false
                RESPWriter.simpleString("OK", into: out)
            } else if args.matches(2, "OFF") {
                connection.replyMode = .off
            } else if args.matches(2, "SKIP") {
                if connection.replyMode == .on { connection.replyMode = .skipNext }
            } else {
                RESPWriter.error("ERR syntax error", into: out)
            }
        } else if args.matches(1, "KILL") {
            // Only reached with too few arguments: the filter form goes to every reactor.
            return wrongArity("client|kill", into: out)
        } else if args.matches(1, "LIST") {
            return false
        } else {
            return false
        }
        return true
    }

    /// One CLIENT LIST line, with redis-server 7.0's fields in its order.
    /// Fields this node has no counterpart for are 0 (sub, psub, ssub,
    /// argv-mem, multi-mem) or -1 (multi, redir), as for a Redis client
    /// that uses none of those features.
    func clientLine(_ connection: Connection) -> String {
        let age = max(monotonicMs - connection.connectedMs, 0) / 1000
        let idle = max(monotonicMs - connection.lastActivityMs, 0) / 1000
        var flags = ""
        if connection.closeAfterFlush { flags += "c" }
        if connection.noEvict { flags += "e" }
        if flags.isEmpty { flags = "N" }
        let input = connection.input
        let command = connection.lastCommand == .unknown ? "NULL" : connection.lastCommand.name
        let events = connection.output.isEmpty ? "r" : "rw"
        return "id=\(connection.clientID) addr=\(peerAddress(connection)) laddr=\(localAddress(connection.fd)) fd=\(connection.fd) "
            + "name=\(connection.name ?? "") age=\(age) idle=\(idle) flags=\(flags) db=0 sub=0 psub=0 ssub=0 multi=-1 "
            + "qbuf=\(input.readableBytes) qbuf-free=\(max(input.capacity - input.readableBytes, 0)) argv-mem=0 multi-mem=0 "
            + "rbs=\(input.capacity) rbp=\(input.readableBytes) obl=\(connection.output.readableBytes) oll=\(connection.replies.outstanding) "
            + "omem=\(connection.replies.staging.capacity) tot-mem=\(connection.chargedBufferBytes) events=\(events) cmd=\(command) "
            + "user=default redir=-1 resp=\(connection.respVersion == .resp3 ? 3 : 2)"
    }

    /// The client's address: asked of the kernel only here (CLIENT LIST,
    /// KILL, SLOWLOG), so accepting a connection costs no getpeername.
    func peerAddress(_ connection: Connection) -> String {
        connection.peer.isEmpty ? socketAddress(connection.fd, peer: true) : connection.peer
    }

    private func localAddress(_ fd: Int32) -> String { socketAddress(fd, peer: false) }

    private func socketAddress(_ fd: Int32, peer: Bool) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let got = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
        }
        guard got == 0 else { return "" }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard named == 0 else { return "" }
        func text(_ characters: [CChar]) -> String {
            String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return text(host) + ":" + text(service)
    }

    /// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]: nil when valid.
    private func clientListProblem(_ args: ArgumentsView) -> String? {
        if args.count == 2 { return nil }
        if args.matches(2, "TYPE") && args.count == 4 {
            if args.matches(3, "NORMAL") || args.matches(3, "MASTER") || args.matches(3, "REPLICA")
                || args.matches(3, "SLAVE") || args.matches(3, "PUBSUB") { return nil }
            return "ERR Unknown client type '\(args.string(3))'"
        }
        if args.matches(2, "ID") && args.count >= 4 {
            for i in 3..<args.count where (args.integer(i) ?? 0) <= 0 {
                return "ERR Invalid client ID"
            }
            return nil
        }
        return "ERR syntax error"
    }

    /// The ids CLIENT LIST ID asks for; nil = every client. TYPE other than
    /// normal matches nobody (this node has no replicas or subscribers).
    private func clientListIDs(_ args: ArgumentsView) -> Set<Int>? {
        if args.count >= 4 && args.matches(2, "ID") {
            return Set((3..<args.count).compactMap { args.integer($0).map(Int.init) })
        }
        if args.count == 4 && args.matches(2, "TYPE") && !args.matches(3, "NORMAL") { return [] }
        return nil
    }

    /// CLIENT KILL's filter, checked at the reactor that received it and
    /// sent to every reactor as CLIENT KILL-PART <encoded>.
    struct KillFilter {
        var oldForm = false
        var id: Int?
        var address: String?
        var localAddress: String?
        var typeMatchesNobody = false
        var skipID = 0  // the caller when SKIPME yes (the default)

        var encoded: [[UInt8]] {
            [Array((oldForm ? "1" : "0").utf8), Array(String(id ?? 0).utf8), Array((address ?? "").utf8),
             Array((localAddress ?? "").utf8), Array((typeMatchesNobody ? "1" : "0").utf8), Array(String(skipID).utf8)]
        }

        init() {}

        init(decoding args: ArgumentsView) {
            oldForm = args.matches(2, "1")
            let rawID = args.integer(3) ?? 0
            id = rawID == 0 ? nil : Int(rawID)
            address = args.bytes(4).isEmpty ? nil : args.string(4)
            localAddress = args.bytes(5).isEmpty ? nil : args.string(5)
            typeMatchesNobody = args.matches(6, "1")
            skipID = Int(args.integer(7) ?? 0)
        }
    }

    private func parseKillFilter(_ args: ArgumentsView, caller: Connection) -> Result<KillFilter, KillProblem> {
        var filter = KillFilter()
        filter.skipID = caller.clientID
        if args.count == 3 {
            filter.oldForm = true
            filter.address = args.string(2)
            filter.skipID = 0
            return .success(filter)
        }
        guard args.count % 2 == 0 else { return .failure(KillProblem("ERR syntax error")) }
        var i = 2
        while i < args.count {
            if args.matches(i, "ID") {
                guard let id = args.integer(i + 1), id > 0 else {
                    return .failure(KillProblem("ERR client-id should be greater than 0"))
                }
                filter.id = Int(id)
            } else if args.matches(i, "TYPE") {
                if args.matches(i + 1, "NORMAL") {
                    // every client here is a normal one
                } else if args.matches(i + 1, "MASTER") || args.matches(i + 1, "REPLICA") || args.matches(i + 1, "SLAVE")
                            || args.matches(i + 1, "PUBSUB") {
                    filter.typeMatchesNobody = true
                } else {
                    return .failure(KillProblem("ERR Unknown client type '\(args.string(i + 1))'"))
                }
            } else if args.matches(i, "USER") {
                guard args.string(i + 1) == "default" else {
                    return .failure(KillProblem("ERR No such user '\(args.string(i + 1))'"))
                }
            } else if args.matches(i, "ADDR") {
                filter.address = args.string(i + 1)
            } else if args.matches(i, "LADDR") {
                filter.localAddress = args.string(i + 1)
            } else if args.matches(i, "SKIPME") {
                if args.matches(i + 1, "YES") { filter.skipID = caller.clientID }
                else if args.matches(i + 1, "NO") { filter.skipID = 0 }
                else { return .failure(KillProblem("ERR syntax error")) }
            } else {
                return .failure(KillProblem("ERR syntax error"))
            }
            i += 2
        }
        return .success(filter)
    }

    struct KillProblem: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Closes this reactor's connections that match (after their pending
    /// replies are written); returns how many.
    private func killMatching(_ filter: KillFilter) -> Int {
        if filter.typeMatchesNobody { return 0 }
        var killed = 0
        for connection in table.allConnections where !connection.isClosed && connection.clientID != filter.skipID {
            if let id = filter.id, connection.clientID != id { continue }
            if let address = filter.address, peerAddress(connection) != address { continue }
            if let local = filter.localAddress, localAddress(connection.fd) != local { continue }
            connection.closeAfterFlush = true
            markDirty(connection)
            killed += 1
        }
        return killed
    }

    // MARK: - CONFIG

    /// Redis's names for the reloadable settings tools set, to this node's keys.
    static let redisConfigNames: [String: String] = [
        "slowlog-log-slower-than": "slowlog_log_slower_than", "slowlog-max-len": "slowlog_max_len",
        "latency-monitor-threshold": "latency_monitor_threshold", "maxclients": "max_conns",
        "timeout": "idle_timeout", "requirepass": "auth_token",
    ]

    /// CONFIG SET name value [name value ...]: the settings a SIGHUP reload
    /// applies, under their config-file names (snake_case or kebab-case) or
    /// the Redis names above. All or nothing, as in Redis 7. False when the
    /// subcommand is not SET.
    func executeConfigSet(_ args: ArgumentsView, into out: WireBuffer) -> Bool {
        guard args.matches(1, "SET") else { return false }
        guard args.count >= 4 && args.count % 2 == 0 else {
            RESPWriter.error("ERR wrong number of arguments for 'config|set' command", into: out)
            return true
        }
        var next = node.runtime.running
        var keys: Set<String> = []
        var i = 2
        while i < args.count {
            let given = args.string(i)
            let lowered = given.lowercased()
            let redisName = Self.redisConfigNames[lowered]
            let key = redisName ?? lowered.replacing("-", with: "_")
            guard AegisConfig.allKeys.contains(key) else {
                RESPWriter.error(string: "ERR Unknown option or number of arguments for CONFIG SET - '\(given)'", into: out)
                return true
            }
            guard AegisConfig.reloadableKeys.contains(key) else {
                RESPWriter.error(string: "ERR CONFIG SET failed (possibly related to argument '\(given)') - can't set immutable config", into: out)
                return true
            }
            guard keys.insert(key).inserted else {
                RESPWriter.error(string: "ERR CONFIG SET failed (possibly related to argument '\(given)') - duplicate parameter", into: out)
                return true
            }
            var text = args.string(i + 1)
            // Redis's "timeout" is whole seconds.
            if redisName == "idle_timeout", let seconds = Int(text) { text = "\(seconds)s" }
            switch ConfigLoader.setting(key, to: text, in: next) {
            case .failure(let problem):
                RESPWriter.error(string: "ERR CONFIG SET failed (possibly related to argument '\(given)') - \(problem.description)", into: out)
                return true
            case .success(let changed):
                next = changed
            }
            i += 2
        }
        node.applyReloadable(next, keys: keys)
        if keys.contains("slowlog_max_len") { node.timings.trimSlow(keep: next.slowlogMaxLen) }
        logger.notice("config: CONFIG SET applied \(keys.sorted().map { "\($0)=\(next.displayValue(forKey: $0) ?? "")" }.joined(separator: ", "))")
        RESPWriter.simpleString("OK", into: out)
        return true
    }

    /// CONFIG RESETSTAT on this reactor: the counters INFO's stats and
    /// commandstats show (and the matching /metrics counters, which then
    /// restart from zero as after a restart).
    private func resetStatsHere() {
        counters.commands = 0
        counters.keyspaceHits = 0
        counters.keyspaceMisses = 0
        counters.connectionsAccepted = 0
        counters.connectionsRejected = 0
        counters.expired = 0
        counters.bytesIn = 0
        counters.bytesOut = 0
        counters.forwardedRequests = 0
        counters.protocolErrors = 0
        counters.rateLimited = 0
        commandMetrics.reset()
        publishStats()
        publishCommandStats()
    }

    // MARK: - COMMAND

    /// COMMAND LIST [FILTERBY PATTERN p] and COMMAND GETKEYS; false for other subcommands.
    func executeCommandLists(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) -> Bool {
        let all = RESPCommand.allCases.filter { $0 != .unknown }
        if args.matches(1, "LIST") {
            var pattern: String? = nil
            if args.count == 5 && args.matches(2, "FILTERBY") {
                if args.matches(3, "PATTERN") {
                    pattern = args.string(4)
                } else if args.matches(3, "MODULE") {
                    RESPWriter.arrayHeader(0, into: out)
                    return true
                } else if args.matches(3, "ACLCAT") {
                    RESPWriter.error(string: "ERR Unknown ACL category '\(args.string(4))'", into: out)
                    return true
                } else {
                    RESPWriter.error("ERR syntax error", into: out)
                    return true
                }
            } else if args.count != 2 {
                RESPWriter.error("ERR syntax error", into: out)
                return true
            }
            let names = all.map(\.name).filter { pattern == nil || globMatch(pattern: pattern!, subject: $0) }
            RESPWriter.arrayHeader(names.count, into: out)
            for name in names { RESPWriter.bulk(string: name, into: out) }
            return true
        }
        guard args.matches(1, "GETKEYS") else { return false }
        guard args.count >= 4 else { return wrongArity("command|getkeys", into: out) }
        let command = RESPCommand.lookup(args.bytes(2))
        guard command != .unknown else {
            RESPWriter.error("ERR Invalid command specified", into: out)
            return true
        }
        let count = args.count - 2
        guard command.arityAccepts(count) else {
            RESPWriter.error("ERR Invalid number of arguments specified for command", into: out)
            return true
        }
        let positions = Self.keyPositions(command, argumentCount: count, subcommand: count > 1 ? args.string(3).uppercased() : "")
        guard !positions.isEmpty else {
            RESPWriter.error("ERR The command has no key arguments", into: out)
            return true
        }
        RESPWriter.arrayHeader(positions.count, into: out)
        for position in positions { RESPWriter.bulk(args.bytes(position + 2), into: out) }
        return true
    }

    /// Where the keys are among a command's arguments (0 = its name).
    static func keyPositions(_ command: RESPCommand, argumentCount count: Int, subcommand: String) -> [Int] {
        switch command.routing {
        case .keyed: return [1]
        case .multiKey, .special:
            switch command {
            case .mset, .msetnx: return Array(stride(from: 1, to: count, by: 2))
            case .keys, .randomkey: return []
            default: return Array(1..<count)
            }
        case .twoKeys: return [1, 2]
        case .subcommandKeyed:
            return count >= 3 && ["ENCODING", "FREQ", "IDLETIME", "REFCOUNT", "USAGE"].contains(subcommand) ? [2] : []
        default: return []
        }
    }

    // MARK: - OBJECT, MEMORY

    /// OBJECT and MEMORY: subcommands on a key go to the key's owner; the
    /// rest (HELP, errors) are answered here.
    func routeKeyIntrospection(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, raw: UnsafeRawBufferPointer) {
        let id = Int(command.rawValue)
        let name = command == .object ? "object" : "memory"
        let keyed: Set<String> = command == .object ? ["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"] : ["USAGE"]
        let subcommand = args.string(1).uppercased()
        if keyed.contains(subcommand) {
            let arityOK = command == .object ? args.count == 3 : args.count >= 3
            guard arityOK else {
                withCountedReply(connection, id) {
                    RESPWriter.error(string: "ERR wrong number of arguments for '\(name)|\(subcommand.lowercased())' command", into: $0)
                }
                return
            }
            routeKeyedAt2(command, args, connection, raw: raw)
            return
        }
        withCountedReply(connection, id) { out in
            if subcommand == "HELP" && args.count == 2 {
                if command == .object {
                    writeHelp("OBJECT", [
                        "ENCODING <key>", "    Return the kind of internal representation Redis would use for <key>: int, embstr or raw.",
                        "FREQ <key>", "    Return the access counter (0-3) the S3-FIFO eviction keeps for <key>.",
                        "IDLETIME <key>", "    Not tracked: S3-FIFO keeps an access counter, not an access time.",
                        "REFCOUNT <key>", "    Return the number of references of the value of <key> (always 1).",
                    ], into: out)
                } else {
                    writeHelp("MEMORY", [
                        "USAGE <key> [SAMPLES <count>]",
                        "    Return the bytes <key> and its value take: the entry's block as malloc charges it and its two slots.",
                    ], into: out)
                }
            } else {
                RESPWriter.error(string: "ERR unknown subcommand '\(args.string(1))'. Try \(name.uppercased()) HELP.", into: out)
            }
        }
    }

    private func routeKeyedAt2(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, raw: UnsafeRawBufferPointer) {
        let shard = KeyHash.shard(of: KeyHash.hash(args.bytes(2)), shardCount: shards.count)
        let target = route(shard: shard)
        if target == index {
            withCountedReply(connection, Int(command.rawValue)) { executeKeyIntrospection(command, args, version: connection.respVersion, into: $0) }
        } else {
            forward(to: target, connection: connection, bytes: raw, shard: shard)
        }
    }

    // MARK: - SLOWLOG, LATENCY, WAIT

    func executeServerCommand(_ command: RESPCommand, _ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        switch command {
        case .slowlog: executeSlowlog(args, connection, into: out)
        case .latency: executeLatency(args, into: out)
        case .wait: executeWait(args, connection, into: out)
        default: preconditionFailure("\(command) is not a server command")
        }
    }

    private func executeSlowlog(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        let timings = node.timings
        if args.matches(1, "GET") && args.count <= 3 {
            var count = 10
            if args.count == 3 {
                guard let given = args.integer(2), given >= -1 else {
                    RESPWriter.error("ERR count should be greater than or equal to -1", into: out)
                    return
                }
                count = Int(given)
            }
            let entries = timings.slowEntries(count: count)
            RESPWriter.arrayHeader(entries.count, into: out)
            for entry in entries {
                RESPWriter.arrayHeader(6, into: out)
                RESPWriter.integer(entry.id, into: out)
                RESPWriter.integer(entry.unixSeconds, into: out)
                RESPWriter.integer(entry.microseconds, into: out)
                RESPWriter.arrayHeader(entry.arguments.count, into: out)
                for argument in entry.arguments { argument.withUnsafeBytes { RESPWriter.bulk($0, into: out) } }
                RESPWriter.bulk(string: entry.client, into: out)
                RESPWriter.bulk(string: entry.name, into: out)
            }
        } else if args.matches(1, "LEN") && args.count == 2 {
            RESPWriter.integer(timings.slowCount, into: out)
        } else if args.matches(1, "RESET") && args.count == 2 {
            timings.resetSlow()
            RESPWriter.simpleString("OK", into: out)
        } else if args.matches(1, "HELP") && args.count == 2 {
            writeHelp("SLOWLOG", [
                "GET [<count>]", "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:", "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN", "    Return the length of the slowlog.",
                "RESET", "    Reset the slowlog.",
            ], into: out)
        } else {
            RESPWriter.error(string: subcommandProblem(args, command: "slowlog", arities: ["GET": -2, "LEN": 2, "RESET": 2, "HELP": 2]), into: out)
        }
    }

    private func executeLatency(_ args: ArgumentsView, into out: WireBuffer) {
        let timings = node.timings
        if args.matches(1, "LATEST") && args.count == 2 {
            let latest = timings.latencyLatest()
            RESPWriter.arrayHeader(latest.count, into: out)
            for event in latest {
                RESPWriter.arrayHeader(4, into: out)
                RESPWriter.bulk(string: event.event, into: out)
                RESPWriter.integer(event.unixSeconds, into: out)
                RESPWriter.integer(event.latestMs, into: out)
                RESPWriter.integer(event.maxMs, into: out)
            }
        } else if args.matches(1, "HISTORY") && args.count == 3 {
            let samples = timings.latencyHistory(event: args.string(2))
            RESPWriter.arrayHeader(samples.count, into: out)
            for sample in samples {
                RESPWriter.arrayHeader(2, into: out)
                RESPWriter.integer(sample.unixSeconds, into: out)
                RESPWriter.integer(sample.milliseconds, into: out)
            }
        } else if args.matches(1, "RESET") {
            RESPWriter.integer(timings.resetLatency(events: (2..<max(args.count, 2)).map { args.string($0) }), into: out)
        } else if args.matches(1, "HELP") && args.count == 2 {
            writeHelp("LATENCY", [
                "HISTORY <event>", "    Return time-latency samples for the <event> class.",
                "LATEST", "    Return the latest latency samples for all events.",
                "RESET [<event> ...]", "    Reset latency data of one or more <event> classes.",
                "    (default: reset all data for all event classes)",
                "Events recorded here: command (a command that took latency-monitor-threshold ms or more).",
            ], into: out)
        } else {
            RESPWriter.error(string: subcommandProblem(args, command: "latency", arities: ["LATEST": 2, "HISTORY": 3, "RESET": -2, "HELP": 2]), into: out)
        }
    }

    /// WAIT numreplicas timeout: the number of replicas other than this
    /// node (its followers) that hold the connection's last write, at once
    /// when that is at least numreplicas (or none is asked for), else when
    /// enough acknowledged it or the timeout ends (never, for timeout 0;
    /// checked on the maintenance tick). Counts the last write this
    /// connection's reactor ran; a write forwarded to another reactor or
    /// node is not tracked, and with none tracked WAIT answers 0 at its timeout.
    private func executeWait(_ args: ArgumentsView, _ connection: Connection, into out: WireBuffer) {
        guard let wanted = args.integer(1) else {
            RESPWriter.error("ERR value is not an integer or out of range", into: out)
            return
        }
        guard let timeout = args.integer(2) else {
            RESPWriter.error("ERR timeout is not an integer or out of range", into: out)
            return
        }
        guard timeout >= 0 else {
            RESPWriter.error("ERR timeout is negative", into: out)
            return
        }
        let acknowledged = followersHolding(shard: connection.lastWriteShard, version: connection.lastWriteVersion)
        if wanted <= Int64(acknowledged) {
            RESPWriter.integer(acknowledged, into: out)
            return
        }
        let sequence = connection.replies.openPending(parts: 1, aggregate: .none)
        let deadline = timeout == 0 ? Int64.max : monotonicMs &+ timeout
        waits.append(WaitingClient(connectionIndex: connection.index, generation: connection.generation,
                                   sequence: sequence, deadlineMs: deadline, shard: connection.lastWriteShard,
                                   version: connection.lastWriteVersion, wanted: Int(clamping: wanted)))
    }

    /// Followers known to hold `shard` through `version`; 0 for no write (shard -1).
    func followersHolding(shard: Int, version: EntryVersion) -> Int {
        shard >= 0 ? quorum.replicasHolding(shard: shard, version: version) - 1 : 0
    }

    /// Answers the WAITs whose writes reached the replicas they ask for.
    func answerReachedWaits() {
        answerWaits { followersHolding(shard: $0.shard, version: $0.version) >= $0.wanted }
    }

    /// Answers the WAITs whose timeout has passed (maintenance tick).
    func answerDueWaits() {
        answerWaits { $0.deadlineMs <= monotonicMs }
    }

    private func answerWaits(where due: (WaitingClient) -> Bool) {
        guard !waits.isEmpty else { return }
        var still: [WaitingClient] = []
        for wait in waits {
            guard let connection = table.connection(slot: Int(wait.connectionIndex), generation: wait.generation),
                  !connection.isClosed else { continue }
            if !due(wait) {
                still.append(wait)
                continue
            }
            let reply = quorum.replyScratch
            reply.clear()
            RESPWriter.integer(followersHolding(shard: wait.shard, version: wait.version), into: reply)
            connection.replies.fill(sequence: wait.sequence, with: reply.readableView)
            reply.clear()
            markDirty(connection)
        }
        waits = still
    }

    // MARK: - timing every command (SLOWLOG, LATENCY)

    /// Runs `body` (one command), adds its time to INFO commandstats' `usec`
    /// and records it when it took at least a threshold. The clock is read
    /// only while a threshold is set: two vDSO reads per command, the only
    /// cost on the request path.
    @inline(__always)
    func timed(_ connection: Connection, _ args: ArgumentsView, _ body: () -> Void) {
        let slowUs = node.runtime.slowlogThresholdUs.load(ordering: .relaxed)
        let latencyMs = node.runtime.latencyThresholdMs.load(ordering: .relaxed)
        if slowUs < 0 && latencyMs <= 0 {
            body()
            return
        }
        let start = aegis_monotonic_ns()
        body()
        let elapsedNs = aegis_monotonic_ns() - start
        commandMetrics.addTime(Int(connection.lastCommand.rawValue), ns: elapsedNs)
        let elapsedUs = Int(elapsedNs / 1000)
        if slowUs >= 0 && elapsedUs >= slowUs { recordSlow(connection, args, elapsedUs) }
        if latencyMs > 0 && elapsedUs / 1000 >= latencyMs {
            node.timings.recordLatency(event: "command", milliseconds: elapsedUs / 1000, unixSeconds: Int(now / 1000))
        }
    }

    private func recordSlow(_ connection: Connection, _ args: ArgumentsView, _ elapsedUs: Int) {
        // Never keep a secret: AUTH and HELLO (which may carry AUTH) are not logged, as in Redis.
        if args.matches(0, "AUTH") || args.matches(0, "HELLO") { return }
        node.timings.recordSlow(arguments: args, microseconds: elapsedUs, unixSeconds: Int(now / 1000),
                                client: peerAddress(connection), name: connection.name ?? "",
                                keep: node.runtime.slowlogMaxLen.load(ordering: .relaxed))
    }

    // MARK: - shared

    private func wrongArity(_ name: String, into out: WireBuffer) -> Bool {
        RESPWriter.error(string: "ERR wrong number of arguments for '\(name)' command", into: out)
        return true
    }

    private func subcommandProblem(_ args: ArgumentsView, command: String, arities: [String: Int]) -> String {
        let subcommand = args.string(1)
        if let arity = arities[subcommand.uppercased()], arity >= 0 ? args.count != arity : args.count < -arity {
            return "ERR wrong number of arguments for '\(command)|\(subcommand.lowercased())' command"
        }
        return "ERR unknown subcommand '\(subcommand)'. Try \(command.uppercased()) HELP."
    }

    func writeHelp(_ command: String, _ lines: [String], into out: WireBuffer) {
        IntrospectionHelp.write(command: command, lines, into: out)
    }
}

/// A WAIT that answers when its timeout passes (`Reactor.waits`).
struct WaitingClient {
    var connectionIndex: UInt32
    var generation: UInt32
    var sequence: UInt64
    var deadlineMs: Int64
    /// The connection's last write when it asked (shard -1: none).
    var shard: Int
    var version: EntryVersion
    var wanted: Int
}
