import Foundation
import Glibc
import Testing

/// Authentication under attack against the real binary, on loopback:
/// failed AUTH counted per address and answered slower past the threshold
/// without stopping the reactor, the AUTH deadline, the token kept out of
/// every output, and a token rotation without a restart (security.md).
@Suite(.serialized)
struct AuthAttackTests {
    static let token = "tok-Sx81-qq5Zr0-never-printed"

    static func metric(_ server: ServerHarness, _ name: String) throws -> Int {
        let text = try runTool("curl", ["-s", "--max-time", "10", server.healthURL + "/metrics"]).output
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return Int(line?.split(separator: " ").last ?? "") ?? -1
    }

    static func line(_ socket: TestSocket) throws -> String {
        String(decoding: try socket.receive { $0.count >= 2 && $0.suffix(2) == [13, 10] }, as: UTF8.self)
    }

    /// True when bytes are waiting on the socket (without taking them).
    static func hasData(_ socket: TestSocket) -> Bool {
        var byte: UInt8 = 0
        return recv(socket.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
    }

    @Test func failuresPastTheThresholdAreHeldThenRefusedWhileOthersAreServed() throws {
        // One reactor: the held answers and the other client share its loop.
        let server = try ServerHarness(arguments: ["--auth-token", Self.token, "--auth-timeout", "60s"], reactors: 1)
        defer { server.stop() }
        let other = try TestSocket(port: server.port, timeoutSeconds: 30)
        try other.send("AUTH \(Self.token)\r\n")
        #expect(try Self.line(other) == "+OK\r\n")

        let attacker = try TestSocket(port: server.port, timeoutSeconds: 30)
        for _ in 0..<10 {
            try attacker.send("AUTH wrong-guess\r\n")
            #expect(try Self.line(attacker).hasPrefix("-WRONGPASS"))
        }
        #expect(try Self.metric(server, "aegis_auth_failures_total") == 10)
        #expect(try Self.metric(server, "aegis_auth_delayed_total") == 0)

        // Past 10 failures, answers to 127.0.0.1 go out one per second, at
        // most 10 s ahead; the rest are refused unchecked and closed.
        var guessers: [TestSocket] = [attacker]
        for _ in 0..<14 { guessers.append(try TestSocket(port: server.port, timeoutSeconds: 30)) }
        for socket in guessers { try socket.send("AUTH wrong-guess\r\nPING\r\n") }
        // The logged-in client is answered while those wait.
        try other.send("PING\r\n")
        #expect(try Self.line(other) == "+PONG\r\n")
        var delayed = 0, refused = 0
        let deadline = Date().addingTimeInterval(20)
        repeat {
            delayed = try Self.metric(server, "aegis_auth_delayed_total")
            refused = try Self.metric(server, "aegis_auth_refused_total")
        } while delayed + refused < 15 && Date() < deadline
        #expect(delayed >= 1 && refused >= 1 && delayed + refused == 15, "delayed \(delayed), refused \(refused)")
        #expect(guessers.contains { !Self.hasData($0) }, "some AUTH answers are still held")

        var heldAnswers = 0
        var refusals = 0
        for socket in guessers {
            // The answer and what follows it may come in one read.
            let first = String(decoding: try socket.receive { answer in
                let text = String(decoding: answer, as: UTF8.self)
                return text.hasSuffix("\r\n") && (!text.hasPrefix("-WRONGPASS") || text.contains("-NOAUTH"))
            }, as: UTF8.self)
            if first.hasPrefix("-WRONGPASS") {
                heldAnswers += 1
                // The PING pipelined behind the held AUTH waited for it.
                #expect(first.hasSuffix("\r\n-NOAUTH Authentication required.\r\n"), "\(first)")
            } else {
                refusals += 1
                #expect(first.contains("too many failed AUTH attempts from this address"), "\(first)")
                #expect(socket.waitForClose())
            }
        }
        #expect(heldAnswers == delayed && refusals == refused)
        #expect(try Self.metric(server, "aegis_auth_failures_total") == 10 + delayed)
    }

    @Test func binaryAuthIsCountedLikeRESP() throws {
        let server = try ServerHarness(arguments: ["--auth-token", Self.token], reactors: 1)
        defer { server.stop() }
        let script = """
            import socket, struct, sys
            def frame(command, request_id, value):
                body = bytes([0xAE, 1, command]) + struct.pack('>QIIqQ', request_id, 0, len(value), 0, 0) + value
                return struct.pack('>I', len(body)) + body
            s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
            s.sendall(frame(12, 1, b'wrong') + frame(12, 2, sys.argv[2].encode()) + frame(4, 3, b''))
            data = b''
            while data.count(bytes([0xAE])) < 3 and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            print('invalid auth token' in data.decode('latin-1'), data.count(b'\\xae\\x01'))
            """
        let result = try runTool("python3", ["-c", script, String(server.port), Self.token])
        #expect(result.output.hasPrefix("True"), "\(result.output)")
        #expect(try Self.metric(server, "aegis_auth_failures_total") == 1)
    }

    @Test func aConnectionThatDoesNotLogInIsClosedAfterAuthTimeout() throws {
        let server = try ServerHarness(arguments: ["--auth-token", Self.token, "--auth-timeout", "1s"], reactors: 1)
        defer { server.stop() }
        let loggedIn = try TestSocket(port: server.port, timeoutSeconds: 20)
        try loggedIn.send("AUTH \(Self.token)\r\n")
        #expect(try Self.line(loggedIn) == "+OK\r\n")
        let silent = try TestSocket(port: server.port, timeoutSeconds: 20)
        let talker = try TestSocket(port: server.port, timeoutSeconds: 20)
        try talker.send("PING\r\n")
        #expect(try Self.line(talker) == "-NOAUTH Authentication required.\r\n")
        #expect(try Self.line(talker).hasPrefix("-ERR no AUTH within auth_timeout"))
        #expect(talker.waitForClose())
        #expect(silent.waitForClose())
        #expect(try Self.metric(server, "aegis_auth_timeouts_total") == 2)
        try loggedIn.send("PING\r\n")
        #expect(try Self.line(loggedIn) == "+PONG\r\n")
        // Before AUTH only small requests are read (RESPLimits.unauthenticated).
        let big = try TestSocket(port: server.port, timeoutSeconds: 20)
        try big.send("*2\r\n$4\r\nAUTH\r\n$20000\r\n")
        #expect(try Self.line(big).contains("unauthenticated bulk length"))
        #expect(big.waitForClose())
    }

    @Test func theTokenNeverShows() throws {
        let next = "nxt-Y7u2-never-printed-either"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-auth-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/config.json"
        try #"{"auth_token": "\#(Self.token)", "auth_token_next": "\#(next)", "log_level": "trace"}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let server = try ServerHarness(arguments: ["--config", file])
        defer { server.stop() }
        var seen: [String] = []
        let cli = ["-p", String(server.port), "--no-auth-warning"]
        seen.append(try runTool("redis-cli", cli + ["-a", "wrong", "PING"]).output)
        for command in [["CONFIG", "GET", "*"], ["INFO", "everything"], ["CLIENT", "LIST"], ["CONFIG", "GET", "requirepass"]] {
            seen.append(try runTool("redis-cli", cli + ["-a", Self.token] + command).output)
        }
        let shown = seen.last ?? ""
        #expect(seen[1].contains("auth_token\n<redacted>"), "CONFIG GET says a token is set: \(seen[1])")
        #expect(!shown.contains(Self.token))
        #expect(try runTool("redis-cli", cli + ["-a", Self.token, "CONFIG", "SET", "auth_token_next", next + "2"]).output.contains("OK"))
        for path in ["/stats", "/cluster", "/metrics", "/debug/reactors", "/debug/memory", "/debug/pprof/goroutine?debug=1",
                     "/debug/pprof/heap", "/admin/circuit-breaker/status"] {
            let answer = try runTool("curl", ["-s", "--max-time", "10", "-H", "Authorization: Bearer \(Self.token)", server.healthURL + path])
            #expect(answer.status == 0 && !answer.output.isEmpty && !answer.output.contains("needs 'Authorization"), "\(path): \(answer.output)")
            seen.append(answer.output)
        }
        kill(server.pid, SIGHUP)
        let deadline = Date().addingTimeInterval(20)
        while !server.log().contains("reload:") && Date() < deadline { usleep(50_000) }
        #expect(server.log().contains("reload:"))
        seen.append(server.log())
        for text in seen {
            #expect(!text.contains(Self.token) && !text.contains(next), "a token was shown: \(text.prefix(2000))")
        }
    }

    @Test func rotationWithoutRestart() throws {
        let old = "old-Ra93-token", new = "new-Pz01-token"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-rotate-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/config.json"
        func writeConfig(_ text: String) throws { try text.write(toFile: file, atomically: true, encoding: .utf8) }
        try writeConfig(#"{"auth_token": "\#(old)"}"#)
        let server = try ServerHarness(arguments: ["--config", file])
        defer { server.stop() }
        func reload(_ count: Int) {
            kill(server.pid, SIGHUP)
            let deadline = Date().addingTimeInterval(20)
            while server.log().components(separatedBy: "reload:").count - 1 < count && Date() < deadline { usleep(50_000) }
        }
        func ping(_ token: String) throws -> String {
            try runTool("redis-cli", ["-p", String(server.port), "--no-auth-warning", "-a", token, "PING"]).output
        }
        func python(_ token: String) throws -> String {
            try runTool("python3", ["-c", "import redis,sys; r=redis.Redis(port=int(sys.argv[1]), password=sys.argv[2]); print(r.ping())",
                                    String(server.port), token]).output
        }
        func admin(_ token: String) throws -> String {
            try runTool("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer \(token)",
                                 server.healthURL + "/debug/reactors"]).output
        }
        let longLived = try TestSocket(port: server.port, timeoutSeconds: 20)
        try longLived.send("AUTH \(old)\r\n")
        #expect(try Self.line(longLived) == "+OK\r\n")
        #expect(try ping(new).contains("WRONGPASS") || ping(new).contains("AUTH failed"))

        // Step 1: both tokens accepted while clients move.
        try writeConfig(#"{"auth_token": "\#(old)", "auth_token_next": "\#(new)"}"#)
        reload(1)
        #expect(try ping(old).contains("PONG") && ping(new).contains("PONG"))
        #expect(try python(new).contains("True"))
        #expect(try admin(new) == "200" && admin(old) == "200")

        // Step 2: only the new one.
        try writeConfig(#"{"auth_token": "\#(new)"}"#)
        reload(2)
        #expect(try ping(new).contains("PONG"))
        #expect(try !ping(old).contains("PONG"))
        #expect(try python(old).contains("AuthenticationError") || python(old).contains("invalid username-password"))
        #expect(try admin(old) == "401" && admin(new) == "200")
        // A connection logged in before the change stays logged in.
        try longLived.send("PING\r\n")
        #expect(try Self.line(longLived) == "+PONG\r\n")
        // CONFIG SET works too, as Redis's requirepass.
        #expect(try runTool("redis-cli", ["-p", String(server.port), "--no-auth-warning", "-a", new,
                                          "CONFIG", "SET", "auth_token_next", "third-token"]).output.contains("OK"))
        #expect(try ping("third-token").contains("PONG"))
        // auth_token_next alone is refused by the next reload, which keeps what runs.
        try writeConfig(#"{"auth_token_next": "\#(new)"}"#)
        kill(server.pid, SIGHUP)
        let deadline = Date().addingTimeInterval(20)
        while !server.log().contains("auth_token_next is set but auth_token is empty") && Date() < deadline { usleep(50_000) }
        #expect(server.log().contains("auth_token_next is set but auth_token is empty"))
        #expect(try ping(new).contains("PONG"))
    }
}
