import AegisProtocol
import Foundation
import Glibc
import Testing

/// The same requests sent to aegiskv and to a real redis-server started by
/// the same test: replies and error texts must match, byte for byte, except
/// where this product differs on purpose (`documentedDifferences`).
@Suite(.serialized)
struct RedisDifferentialTests {
    /// What this product does differently from redis-server on purpose,
    /// listed once; the fuzzer never sends these and the scripts leave them
    /// out. Everything else that AegisKV claims must answer as redis-server
    /// does.
    static let documentedDifferences: [String: String] = [
        "SELECT": "one database: any index but 0 is refused",
        "HELLO": "the reply names this server (server, version, id), not Redis",
        "CONFIG": "this node's own settings and names",
        "INFO": "this node's own sections and fields (the names tools read are Redis's)",
        "COMMAND": "the table of this node's commands, not Redis's",
        "CLIENT ID": "connection ids are numbered per server",
        "TIME": "the time at which each server answered",
        "QUIT": "closes the connection the fuzzer compares on",
        "DBSIZE": "redis-server still counts a key whose expiry has passed until its expiry cycle removes it; here it is gone at once",
        "non-string types": "strings only: list, hash, set and other types' commands are unknown here",
    ]

    static let script: [[String]] = [
        ["SET", "a", "1"], ["SET", "a", "2", "NX"], ["SET", "a", "3", "XX", "GET"], ["SET", "b", "1", "EX", "0"],
        ["SET", "b", "1", "EX", "abc"], ["SET", "b", "1", "PX", "100", "EX", "10"], ["SET", "b", "1", "KEEPTTL", "EX", "10"],
        ["SET", "b", "1", "NX", "XX"], ["SET", "b"], ["GETEX", "a", "EX", "100"], ["GETEX", "a", "PERSIST"], ["GETEX", "a", "FOO"],
        ["GETDEL", "a"], ["GETDEL", "a"], ["INCR", "x"], ["INCRBY", "x", "abc"], ["INCRBY", "x", "9223372036854775807"],
        ["DECRBY", "x", "-9223372036854775808"], ["APPEND", "x", "5"], ["STRLEN", "x"], ["TYPE", "x"], ["TYPE", "nope"],
        ["EXPIRE", "x", "10", "NX"], ["EXPIRE", "x", "20", "NX"], ["EXPIRE", "x", "5", "GT"], ["EXPIRE", "x", "50", "LT"],
        ["EXPIRE", "x", "10", "NX", "XX"], ["EXPIRE", "x", "abc"], ["TTL", "x"], ["PERSIST", "x"], ["PERSIST", "x"],
        ["TTL", "nope"], ["PTTL", "nope"], ["EXISTS", "x", "x", "nope"], ["DEL", "x", "nope", "x"], ["MSET", "k1", "v1", "k2"],
        ["MSET", "k1", "v1", "k2", "v2"], ["MGET", "k1", "k2", "k3"], ["UNLINK", "k1", "k2", "k3"], ["SELECT", "abc"],
        ["ECHO"], ["ECHO", "hi"], ["PING"], ["PING", "a"], ["PING", "a", "b"], ["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "a b"],
        ["CLIENT", "SETNAME"], ["CLIENT", "FOO"], ["CONFIG", "FOO"], ["CONFIG", "GET"], ["COMMAND", "FOO"], ["SCAN", "abc"],
        ["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "FOO", "bar"], ["DBSIZE"], ["FLUSHALL", "FOO"], ["SETEX", "s", "0", "v"],
        ["SETEX", "s", "abc", "v"], ["SETNX", "s", "v"], ["SETNX", "s", "w"], ["PSETEX", "p", "-5", "v"], ["HELLO", "4"],
        ["HELLO", "abc"], ["AUTH", "secret"], ["NOSUCHCOMMAND", "x", "y"], ["get"], ["GeT", "s"], ["EXPIREAT", "s", "1"],
        ["GET", "s"], ["INCR", "k"], ["INCRBY", "k", "-5"], ["GET", "k"],
        // Issue 15, difference 7: options are read before numbers, a
        // repeated expiry of one kind is accepted (the last wins), and GETEX
        // of a missing key is nil whatever its expiry says.
        ["SET", "g", "v"], ["GETEX", "g", "FOO", "bar"], ["GETEX", "g", "PERSIST", "x"], ["GETEX", "nokey", "EX", "abc"],
        ["GETEX", "nokey", "EX", "0"], ["GETEX", "g", "EX", "abc"], ["GETEX", "g", "EX", "0"], ["GETEX", "g", "PX", "100", "PERSIST"],
        ["SET", "g", "v", "EX", "10", "EX", "20"], ["TTL", "g"], ["GETEX", "g", "EX", "10", "EX", "30"], ["TTL", "g"],
        ["SET", "g", "v", "EX", "abc", "EX", "40"], ["TTL", "g"], ["SET", "g", "v", "EX", "10", "PX", "20"],
        ["SET", "g", "v", "KEEPTTL", "KEEPTTL"], ["TTL", "g"], ["SET", "g", "v", "GET", "GET"], ["SET", "g", "v", "NX", "NX"],
        ["EXPIRE", "g", "abc", "FOO"], ["EXPIRE", "g", "10", "FOO"], ["EXPIRE", "g", "abc", "NX", "XX"],
        ["SETEX", "g", "9223372036854775807", "v"], ["EXPIRE", "g", "-9223372036854775808"], ["GET", "g"],
        // Difference 4: the default user has no password.
        ["AUTH", "default", "anything"], ["AUTH", "someuser", "pw"], ["HELLO", "3", "AUTH", "someuser", "pw"],
        ["AUTH", "a", "b", "c"],
        // Difference 3: cursors are read as strtoul reads them.
        ["FLUSHALL"], ["DBSIZE"], ["SCAN", "18446744073709551615"], ["SCAN", "-1"], ["SCAN", "18446744073709551616"],
        ["SCAN", ""], ["SCAN", "+0"], ["SCAN", " 0"], ["SCAN", "0x10"], ["SCAN", "-"],
    ]

    @Test func repliesMatchRedisServer() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        for command in Self.script {
            let mine = try ours.call(command)
            let reference = try theirs.call(command)
            #expect(mine == reference, "\(command.joined(separator: " ")): \(escaped(mine)) vs redis-server \(escaped(reference))")
        }
    }

    /// Issue 15, difference 1: expiry to the millisecond. With the coarse
    /// clock (4 ms steps, read once per loop) PTTL answered up to 10003 for
    /// a PXAT 10000 ms ahead (156 of 200 tries) and a PX 1 key could be
    /// read 2 ms later (91 of 200); redis-server never does either.
    @Test func expiryIsExactToTheMillisecond() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        let tries = 200
        for (name, link) in [("aegiskv", ours), ("redis-server", theirs)] {
            var pttlAboveSet = 0
            var readAfterExpiry = 0
            for attempt in 0..<tries {
                let key = "exact:\(attempt)"
                let target = unixTimeMs() + 10_000
                _ = try link.call(["SET", key, "v", "PXAT", String(target)])
                let pttl = try link.call(["PTTL", key])
                if let remaining = integerReply(pttl), remaining > 10_000 { pttlAboveSet += 1 }
                _ = try link.call(["SET", key, "v", "PX", "1"])
                // 2 ms of wall clock after the reply: the key expired at
                // most 1 ms after the server read the clock for it.
                let replied = unixTimeMs()
                while unixTimeMs() < replied + 2 { usleep(200) }
                if try link.call(["GET", key]) != Array("$-1\r\n".utf8) { readAfterExpiry += 1 }
            }
            #expect(pttlAboveSet == 0, "\(name): PTTL answered more than the 10000 ms set in \(pttlAboveSet) of \(tries) tries")
            #expect(readAfterExpiry == 0, "\(name): a PX 1 key was read 2 ms later in \(readAfterExpiry) of \(tries) tries")
        }
    }

    /// Issue 15, difference 2: only 0x00-0x04 start a binary frame; every
    /// other first byte is RESP, read as redis-server reads it.
    @Test func firstBytesAreReadAsRedisServerReadsThem() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let openings = [
            "\r\nPING\r\n", "\nPING\r\n", "\r\n\r\n*1\r\n$4\r\nPING\r\n", " PING\r\n", "\"PING\"\r\n", "'PING' \"x\"\r\n",
            "\tECHO hi\r\n", "1\r\n", "$4\r\nPING\r\n", "\"unbalanced\r\nPING\r\n", "+PING\r\n", "#\r\n", "\u{7F}\r\n",
        ]
        for opening in openings {
            let ours = try transcript(port: servers.aegis.port, sending: Array(opening.utf8))
            let theirs = try transcript(port: servers.redisPort, sending: Array(opening.utf8))
            #expect(ours == theirs, "\(escaped(Array(opening.utf8))): \(escaped(ours)) vs redis-server \(escaped(theirs))")
        }
        // A byte that is neither text nor a frame length is RESP too.
        let ours = try transcript(port: servers.aegis.port, sending: [0x80, 0x41, 0x0D, 0x0A])
        let theirs = try transcript(port: servers.redisPort, sending: [0x80, 0x41, 0x0D, 0x0A])
        #expect(ours == theirs, "\(escaped(ours)) vs redis-server \(escaped(theirs))")
    }

    /// Issue 15, difference 3: a page fills across shards and reactors up to
    /// COUNT, so a small keyspace comes back in one call with cursor 0; a full
    /// iteration in small pages still returns every key exactly once.
    @Test func scanFillsAPageAcrossShardsAndReactors() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        func page(_ link: RESPLink, _ command: [String]) throws -> (cursor: String, keys: [String]) {
            guard case .array(let fields)? = try RESPValueReply(link.call(command)).value, fields.count == 2,
                  let cursor = fields[0].text, case .array(let keys) = fields[1] else {
                throw HarnessError("\(command) did not answer a SCAN page")
            }
            return (cursor, keys.compactMap(\.text).sorted())
        }
        for link in [ours, theirs] { _ = try link.call(["MSET", "a", "1", "b", "2", "c", "3"]) }
        for command in [["SCAN", "0"], ["SCAN", "0", "COUNT", "1000"], ["SCAN", "0", "MATCH", "[ab]"], ["SCAN", "0", "TYPE", "string"]] {
            let mine = try page(ours, command)
            let reference = try page(theirs, command)
            #expect(mine.cursor == "0" && mine.keys == reference.keys && reference.cursor == "0",
                    "\(command): \(mine) vs redis-server \(reference)")
        }
        let many = (0..<1000).map { "key:\($0)" }
        for link in [ours, theirs] {
            for batch in stride(from: 0, to: many.count, by: 100) {
                _ = try link.call(["MSET"] + many[batch..<(batch + 100)].flatMap { [$0, "v"] })
            }
        }
        let all = (many + ["a", "b", "c"]).sorted()
        let mine = try page(ours, ["SCAN", "0", "COUNT", "5000"])
        let reference = try page(theirs, ["SCAN", "0", "COUNT", "5000"])
        #expect(mine.cursor == "0" && mine.keys == all, "one page of COUNT 5000 held \(mine.keys.count) of \(all.count) keys, cursor \(mine.cursor)")
        #expect(reference.cursor == "0" && reference.keys == all)
        var seen: [String] = []
        var cursor = "0"
        var calls = 0
        repeat {
            let next = try page(ours, ["SCAN", cursor, "COUNT", "7"])
            seen += next.keys
            cursor = next.cursor
            calls += 1
        } while cursor != "0" && calls < 10_000
        #expect(cursor == "0", "the iteration did not end in \(calls) calls")
        #expect(seen.sorted() == all, "a full iteration returned \(seen.count) keys, \(Set(seen).count) distinct, of \(all.count)")
    }

    /// Issue 15, difference 5: CLIENT SETINFO as redis-server 7.2 answers it
    /// (the installed redis-server is 7.0, which has no SETINFO, so these
    /// are 7.2's texts from its client.c rather than a live comparison).
    @Test func clientSetInfoRefusesWhatRedis72Refuses() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, _) = try servers.links()
        let cases: [([String], String)] = [
            (["CLIENT", "SETINFO", "badger", "x"], "-ERR Unrecognized option 'badger'\r\n"),
            (["CLIENT", "SETINFO", "lib-name", "redis py"], "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"),
            (["CLIENT", "SETINFO", "LIB-VER", "1\n2"], "-ERR LIB-VER cannot contain spaces, newlines or special characters.\r\n"),
            (["CLIENT", "SETINFO", "lib-name", "redis-py"], "+OK\r\n"),
            (["CLIENT", "SETINFO", "lib-ver", "5.0.1"], "+OK\r\n"),
            (["CLIENT", "SETINFO", "lib-ver", ""], "+OK\r\n"),
            (["CLIENT", "SETINFO", "lib-ver"], "-ERR wrong number of arguments for 'client|setinfo' command\r\n"),
        ]
        for (command, expected) in cases {
            let reply = try ours.call(command)
            #expect(reply == Array(expected.utf8), "\(command): \(escaped(reply))")
        }
    }

    /// Issue 15, difference 6: the INFO sections and fields tools read, named
    /// and placed as redis-server places them; cluster_enabled is Redis
    /// Cluster's flag and must say 0 here, as on a plain redis-server.
    @Test func infoHasTheSectionsAndFieldsToolsRead() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        _ = try ours.call(["GET", "info:probe"])
        _ = try theirs.call(["GET", "info:probe"])
        let mine = infoFields(try ours.call(["INFO", "everything"]))
        let reference = infoFields(try theirs.call(["INFO", "everything"]))
        let sections = ["Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "CPU", "Commandstats", "Cluster", "Keyspace"]
        for section in sections {
            #expect(mine[section] != nil, "aegiskv INFO has no # \(section) section; it has \(mine.keys.sorted())")
            #expect(reference[section] != nil, "redis-server INFO has no # \(section) section")
        }
        let read: [(String, String)] = [
            ("Server", "redis_version"), ("Server", "process_id"), ("Server", "tcp_port"), ("Server", "uptime_in_seconds"),
            ("Clients", "connected_clients"), ("Clients", "maxclients"),
            ("Memory", "used_memory"), ("Memory", "used_memory_rss"), ("Memory", "maxmemory"), ("Memory", "maxmemory_policy"),
            ("Stats", "total_connections_received"), ("Stats", "total_commands_processed"), ("Stats", "expired_keys"),
            ("Stats", "evicted_keys"), ("Stats", "keyspace_hits"), ("Stats", "keyspace_misses"), ("Stats", "rejected_connections"),
            ("Stats", "total_net_input_bytes"), ("Stats", "total_net_output_bytes"), ("Stats", "total_error_replies"),
            ("Replication", "role"), ("Replication", "connected_slaves"),
            ("CPU", "used_cpu_sys"), ("CPU", "used_cpu_user"), ("CPU", "used_cpu_sys_children"), ("CPU", "used_cpu_user_children"),
            ("Cluster", "cluster_enabled"),
        ]
        for (section, field) in read {
            #expect(mine[section]?[field] != nil, "aegiskv INFO has no \(field) in # \(section)")
            #expect(reference[section]?[field] != nil, "redis-server INFO has no \(field) in # \(section)")
        }
        for (section, field) in [("Cluster", "cluster_enabled"), ("Replication", "role"), ("Replication", "connected_slaves")] {
            #expect(mine[section]?[field] == reference[section]?[field], "\(field): \(mine[section]?[field] ?? "-") vs \(reference[section]?[field] ?? "-")")
        }
        // Both counted the one GET, in the same words (aegiskv publishes its
        // counters on the maintenance tick: wait for one).
        var counted = mine["Commandstats"]?["cmdstat_get"]
        let deadline = Date().addingTimeInterval(10)
        while counted == nil && Date() < deadline {
            usleep(50_000)
            counted = infoFields(try ours.call(["INFO", "commandstats"]))["Commandstats"]?["cmdstat_get"]
        }
        #expect(counted?.hasPrefix("calls=1,") == true, "\(counted ?? "no cmdstat_get")")
        #expect(reference["Commandstats"]?["cmdstat_get"]?.hasPrefix("calls=1,") == true)
        // Without an argument, commandstats is left out, as redis-server does.
        #expect(infoFields(try ours.call(["INFO"]))["Commandstats"] == nil)
        #expect(infoFields(try theirs.call(["INFO"]))["Commandstats"] == nil)
    }

    /// Issue 15, difference 7: the errors say "Try CLIENT HELP." and the
    /// like, so those helps exist, in redis-server's shape.
    @Test func helpSubcommandsAnswerAsRedisServerShapesThem() throws {
        let servers = try SideBySide()
        defer { servers.stop() }
        let (ours, theirs) = try servers.links()
        for command in ["CLIENT", "COMMAND", "CONFIG"] {
            let mine = try RESPValueReply(ours.call([command, "HELP"]))
            let reference = try RESPValueReply(theirs.call([command, "HELP"]))
            guard case .array(let lines)? = mine.value, case .array(let redisLines)? = reference.value else {
                Issue.record("\(command) HELP: \(mine) vs \(reference)")
                continue
            }
            #expect(lines.first == redisLines.first, "\(command) HELP header")
            #expect(Array(lines.suffix(2)) == Array(redisLines.suffix(2)), "\(command) HELP ends with HELP")
            // Every subcommand named is one redis-server names too (SETINFO
            // is 7.2's; the redis-server here is 7.0).
            let names = Set(redisLines.compactMap { $0.text?.split(separator: " ").first.map(String.init) })
            for line in lines.dropFirst() {
                guard let text = line.text, !text.hasPrefix(" ") else { continue }
                let name = String(text.split(separator: " ").first ?? "")
                #expect(names.contains(name) || text == "(no subcommand)" || name == "SETINFO", "\(command) HELP lists \(text)")
            }
        }
        // COMMAND INFO routes clients by key specs and ACL categories: for
        // the commands that mean the same here, the same bytes, both RESP versions.
        for command in ["get", "mget", "mset", "del", "unlink", "exists", "ttl", "incr", "append", "expire", "persist", "dbsize", "ping", "nosuch"] {
            let mine = try ours.call(["COMMAND", "INFO", command])
            let reference = try theirs.call(["COMMAND", "INFO", command])
            #expect(mine == reference, "COMMAND INFO \(command): \(escaped(mine)) vs redis-server \(escaped(reference))")
        }
        let (ours3, theirs3) = try servers.links()
        _ = try ours3.call(["HELLO", "3"])
        _ = try theirs3.call(["HELLO", "3"])
        #expect(try ours3.call(["COMMAND", "INFO", "mset", "get"]) == (try theirs3.call(["COMMAND", "INFO", "mset", "get"])), "COMMAND INFO in RESP3")
        let docs = try RESPValueReply(ours3.call(["COMMAND", "DOCS", "get", "nosuch"]))
        guard case .map(let entries)? = docs.value, entries.count == 1, entries[0].key.text == "get", case .map(let fields) = entries[0].value else {
            Issue.record("COMMAND DOCS get: \(docs)")
            return
        }
        #expect(fields.compactMap(\.key.text) == ["summary", "since", "group", "complexity"])
        // The error that points at a help, and the help it points at.
        let unknown = try ours.call(["CLIENT", "NOSUCH"])
        #expect(unknown == (try theirs.call(["CLIENT", "NOSUCH"])))
    }
}

// MARK: - Two servers side by side

/// aegiskv (two reactors, so requests cross reactors) and a redis-server,
/// both on ephemeral loopback ports, both stopped by PID.
final class SideBySide {
    let aegis: ServerHarness
    let redis: pid_t
    let redisPort: UInt16

    init(reactors: Int = 2) throws {
        aegis = try ServerHarness(reactors: reactors)
        var started: (pid_t, UInt16)? = nil
        for _ in 0..<5 where started == nil {
            let port = try freePort()
            let pid = try startProcess("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            for _ in 0..<250 {
                if (try? TestSocket(port: port)) != nil { started = (pid, port); break }
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { break } // the port was taken: try another
                usleep(20_000)
            }
            if started == nil { stopProcess(pid) }
        }
        guard let started else {
            _ = aegis.stop()
            throw HarnessError("redis-server did not start")
        }
        (redis, redisPort) = started
    }

    func links() throws -> (ours: RESPLink, theirs: RESPLink) {
        (try RESPLink(port: aegis.port), try RESPLink(port: redisPort))
    }

    func stop() {
        stopProcess(redis)
        #expect(aegis.stop() == 0)
    }
}

/// One RESP connection: sends a command as a multibulk and returns the
/// exact bytes of its one reply.
final class RESPLink {
    let socket: TestSocket
    private var pending: [UInt8] = []

    init(port: UInt16) throws {
        socket = try TestSocket(port: port, timeoutSeconds: 10)
    }

    func call(_ arguments: [String]) throws -> [UInt8] {
        var request = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            request += Array("$\(argument.utf8.count)\r\n".utf8) + Array(argument.utf8) + [13, 10]
        }
        try socket.send(request)
        return try reply()
    }

    func reply() throws -> [UInt8] {
        while true {
            if let consumed = try pending.withUnsafeBytes({ try RESPReplyParser.parse($0)?.consumed }) {
                let reply = Array(pending[0..<consumed])
                pending.removeFirst(consumed)
                return reply
            }
            let chunk = try socket.receiveSome()
            if chunk.isEmpty { throw HarnessError("connection closed after \(pending.count) bytes: \(escaped(pending))") }
            pending += chunk
        }
    }
}

/// A parsed reply, for the tests that compare structure rather than bytes.
struct RESPValueReply: CustomStringConvertible {
    let value: RESPValue?
    init(_ bytes: [UInt8]) throws {
        value = try bytes.withUnsafeBytes { try RESPReplyParser.parse($0)?.0 }
    }
    var description: String { value.map { "\($0)" } ?? "nothing" }
}

/// Everything a server sends on a new connection that sent `bytes` and then
/// said it was done, until the server closed it.
func transcript(port: UInt16, sending bytes: [UInt8]) throws -> [UInt8] {
    let socket = try TestSocket(port: port, timeoutSeconds: 5)
    defer { socket.close() }
    try socket.send(bytes)
    socket.shutdownWrite()
    var all: [UInt8] = []
    while let chunk = try? socket.receiveSome(), !chunk.isEmpty { all += chunk }
    return all
}

func unixTimeMs() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

func integerReply(_ bytes: [UInt8]) -> Int64? {
    guard bytes.first == UInt8(ascii: ":"), bytes.count >= 3 else { return nil }
    return Int64(String(decoding: bytes[1..<(bytes.count - 2)], as: UTF8.self))
}

/// INFO's text as section -> field -> value.
func infoFields(_ reply: [UInt8]) -> [String: [String: String]] {
    guard let text = (try? RESPValueReply(reply))?.value?.text else { return [:] }
    var sections: [String: [String: String]] = [:]
    var current = ""
    for line in text.split(whereSeparator: \.isNewline) {
        if line.hasPrefix("# ") {
            current = String(line.dropFirst(2))
            sections[current] = sections[current] ?? [:]
        } else if let colon = line.firstIndex(of: ":") {
            sections[current, default: [:]][String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
    }
    return sections
}

/// Bytes as readable text: printable ASCII as is, the rest escaped.
func escaped(_ bytes: [UInt8]) -> String {
    bytes.map { byte -> String in
        switch byte {
        case 13: return "\\r"
        case 10: return "\\n"
        case 92: return "\\\\"
        case 32...126: return String(UnicodeScalar(byte))
        default: return String(format: "\\x%02x", byte)
        }
    }.joined()
}
