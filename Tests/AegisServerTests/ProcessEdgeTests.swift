import Foundation
import Glibc
import Testing

/// Issue 14, the edges of the process: file descriptors, the operations
/// port, start-up refusals and small error paths. Each test runs the real
/// binary; descriptor shortage is made real with prlimit, which sets the
/// limits and then execs the node, so the PID is the node's.
@Suite(.serialized)
struct ProcessEdgeTests {
    // MARK: - Settings of features built late

    @Test func quorumSettingsOnceRefusedNowValidate() throws {
        // Read quorums (issue 12) and TLS (issue 16) were refused at start
        // until they were built; a deployment's --validate must pass now.
        let accepted = try runTool(ServerHarness.binaryPath, ["--write-quorum", "2", "--read-quorum", "2", "--validate"])
        #expect(accepted.status == 0, "\(accepted.output)")
    }

    // MARK: - Small error paths

    @Test func rateLimitLogNamesTheBurstItAnswers() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let answer = try runTool("curl", ["-s", "-S", "--max-time", "10", "-X", "POST", server.healthURL + "/admin/rate-limit?ops_per_sec=7"])
        #expect(answer.output.contains(#""burst":7"#), "\(answer.output)")
        for _ in 0..<250 where !server.log().contains("admin: rate limit set") { usleep(20_000) }
        let line = server.log().split(separator: "\n").first { $0.contains("admin: rate limit set") }.map(String.init) ?? ""
        #expect(line.contains("burst=7") && line.contains("ops_per_sec=7"), "\(line)")
        _ = try runTool("curl", ["-s", "--max-time", "10", "-X", "POST", server.healthURL + "/admin/rate-limit?ops_per_sec=0"])
    }

    @Test func repliesDroppedAtTheDrainDeadlineAreLogged() throws {
        let server = try ServerHarness(arguments: ["--drain-timeout", "1s"], reactors: 1)
        let socket = try TestSocket(port: server.port)
        let value = String(repeating: "v", count: 1 << 20)
        #expect(try socket.set("big", value) == Array("+OK\r\n".utf8))
        // Far more reply bytes than the socket buffers hold; never read.
        try socket.send(String(repeating: "GET big\r\n", count: 64))
        usleep(500_000)
        #expect(server.stop(signal: SIGTERM) == 0)
        let line = server.log().split(separator: "\n").first { $0.contains("drain_timeout expired") }.map(String.init)
        #expect(line != nil, "\(server.log())")
        #expect(line?.contains("connections=1") == true, "\(line ?? "")")
        #expect(server.log().components(separatedBy: "drain_timeout expired").count == 2, "logged once")
    }

    @Test func binaryClientRefusedAtMaxConnsGetsABinaryError() throws {
        let server = try ServerHarness(arguments: ["--max-conns", "1"], reactors: 1)
        defer { #expect(server.stop() == 0) }
        // The harness's readiness probe may hold the one place for a moment.
        var kept: TestSocket?
        for _ in 0..<100 where kept == nil {
            let candidate = try TestSocket(port: server.port)
            try candidate.send("PING\r\n")
            if (try? candidate.receive { $0.last == 10 }) == Array("+PONG\r\n".utf8) { kept = candidate } else { usleep(50_000) }
        }
        #expect(kept != nil)

        let binary = try TestSocket(port: server.port)
        let requestID: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        // PING: length 35, magic, version, command 4, request id, then zeros.
        try binary.send([0, 0, 0, 35, 0xAE, 0x01, 4] + requestID + [UInt8](repeating: 0, count: 24))
        let reply = try binary.receive { $0.count >= 4 && $0.count >= 4 + Int(Self.bigEndian32($0, at: 0)) }
        let length = Int(Self.bigEndian32(reply, at: 0))
        #expect(length < 1024, "a frame length of \(length): the refusal was not a binary frame")
        #expect(reply[4] == 0xAE && reply[6] == 2, "magic and status ERROR: \(reply.prefix(16))")
        #expect(Array(reply[7..<15]) == requestID)
        #expect(String(decoding: reply.dropFirst(4 + 43), as: UTF8.self).contains("max number of clients reached"))
        #expect(binary.waitForClose())

        let resp = try TestSocket(port: server.port)
        try resp.send("PING\r\n")
        #expect(String(decoding: try resp.receive { $0.last == 10 }, as: UTF8.self) == "-ERR max number of clients reached\r\n")
        #expect(resp.waitForClose())

        // One that never speaks is closed without a word (within a
        // maintenance tick or two of refusalWaitMs), not held forever.
        let silent = try TestSocket(port: server.port)
        #expect(silent.waitForClose())
        try kept?.send("PING\r\n")
        #expect(try kept?.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
    }

    // MARK: - Open files

    @Test func defaultMaxConnsFollowsTheHardOpenFileLimit() throws {
        let node = try SpawnedNode(arguments: ["--reactors", "2"], launcher: ["/usr/bin/prlimit", "--nofile=100:600", "--"])
        defer { #expect(node.stop() == 0) }
        // The soft limit was raised to the hard one.
        let limits = try String(contentsOfFile: "/proc/\(node.pid)/limits", encoding: .utf8)
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        #expect(openFiles.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2) == ["600", "600"], "\(openFiles)")
        let expected = 600 - (64 + 64 + 16 * 2)
        let maxConns = try runTool("redis-cli", ["-p", String(node.port), "CONFIG", "GET", "max_conns"]).output
        #expect(maxConns.split(separator: "\n").last == "\(expected)"[...], "\(maxConns)")
        let line = node.logLines().first { $0.contains("max_conns follows the open file limit") } ?? ""
        #expect(line.contains("info") && line.contains("max_conns=\(expected)"), "\(node.log())")
        #expect(!node.log().contains("warning"), "defaults must not warn: \(node.log())")
    }

    // MARK: - Out of file descriptors

    @Test func outOfDescriptorsPausesAcceptingQuietlyAndRecovers() throws {
        let node = try SpawnedNode(arguments: ["--reactors", "2", "--max-conns", "1000"],
                                   launcher: ["/usr/bin/prlimit", "--nofile=256", "--"])
        defer { #expect(node.stop() == 0) }
        // A max_conns the operator chose that the limit cannot hold is a warning.
        #expect(node.log().contains("open file limit cannot hold max_conns"), "\(node.log())")
        let healthURL = try Self.healthURL(node)
        var clients: [TestSocket] = []
        defer { clients.forEach { $0.close() } }
        for _ in 0..<300 { clients.append(try TestSocket(port: node.port)) }
        // The operations port's listener gets a waiting connection too.
        let curl = try startProcess("curl", ["-s", "--max-time", "8", healthURL + "/health"])
        defer { stopProcess(curl) }
        usleep(1_000_000)
        #expect(node.log().contains("cannot accept client connections"), "\(node.log().suffix(2000))")

        let cpuBefore = try Self.cpuSeconds(node.pid)
        usleep(3_000_000)
        let cpuUsed = try Self.cpuSeconds(node.pid) - cpuBefore
        // Spinning on a readable listener took both cores; paused, the node
        // wakes a few times per maintenance tick. The bound is loose.
        #expect(cpuUsed < 0.6, "node used \(cpuUsed) s of CPU in 3 s while out of descriptors")
        let acceptLines = node.logLines().filter { $0.contains("accept") }
        #expect(acceptLines.count <= 12, "\(acceptLines.count) accept lines: \(acceptLines.suffix(5))")

        clients.forEach { $0.close() }
        clients.removeAll()
        var pong = ""
        for _ in 0..<50 where pong != "PONG" {
            pong = (try? runTool("redis-cli", ["-p", String(node.port), "PING"]).output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? ""
            if pong != "PONG" { usleep(200_000) }
        }
        #expect(pong == "PONG")
        let health = try runTool("curl", ["-s", "--max-time", "10", healthURL + "/health"])
        #expect(health.output.contains("ok"), "\(health.output)")
        #expect(node.waitForLog { $0.contains("accepting client connections again") })
    }

    // MARK: - The operations port

    @Test func operationsClientTricklingBytesIsClosedAtTheRequestDeadline() throws {
        let node = try SpawnedNode(arguments: ["--reactors", "1"])
        defer { #expect(node.stop() == 0) }
        let port = try Self.healthPort(node)
        let slow = try TestSocket(port: port)
        let request = Array("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: \(String(repeating: "a", count: 64))\r\n\r\n".utf8)
        // One byte a second (every byte restarted the old idle timer), paced and
        // bounded by the clock: the request deadline is 10 s, and the bound is
        // six times that, so a loaded machine only makes the node close later
        // within it. The request never completes within the bound.
        let start = Date()
        let bound = 60.0
        var sent = 0
        var closed = false
        while !closed && Date().timeIntervalSince(start) < bound && sent < request.count - 1 {
            closed = try Self.peerClosed(slow, afterSending: request[sent])
            sent += 1
            if !closed { closed = try Self.peerClosed(slow, within: start.addingTimeInterval(Double(sent)).timeIntervalSinceNow) }
        }
        #expect(closed, "a client sending one byte a second was still connected after \(sent) bytes and \(Int(Date().timeIntervalSince(start))) s")
    }

    /// Sends one byte; true when the node had closed or reset the connection.
    static func peerClosed(_ socket: TestSocket, afterSending byte: UInt8) throws -> Bool {
        var byte = byte
        if Glibc.send(socket.fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 { return false }
        if errno == EPIPE || errno == ECONNRESET { return true }
        throw HarnessError("send failed: errno \(errno)")
    }

    /// Waits up to `seconds` for the node to close or reset the connection
    /// (it sends nothing else); true when it did. A reset counts: a node that
    /// closes with a trickled byte unread sends one instead of a FIN.
    static func peerClosed(_ socket: TestSocket, within seconds: TimeInterval) throws -> Bool {
        let until = Date().addingTimeInterval(max(seconds, 0))
        repeat {
            var descriptor = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(max(until.timeIntervalSinceNow, 0) * 1000))
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { throw HarnessError("poll failed: errno \(errno)") }
            if ready == 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count == 0 { return true }
            if count < 0 {
                if errno == ECONNRESET || errno == EPIPE { return true }
                if errno == EAGAIN || errno == EINTR { continue }
                throw HarnessError("recv failed: errno \(errno)")
            }
            throw HarnessError("the node answered a request that was never complete: \(String(decoding: buffer[0..<count], as: UTF8.self))")
        } while Date() < until
        return false
    }

    @Test func healthAnswersWhileSlowClientsHogTheOperationsPort() throws {
        let node = try SpawnedNode(arguments: ["--reactors", "2"], launcher: ["/usr/bin/prlimit", "--nofile=256", "--"])
        defer { #expect(node.stop() == 0) }
        let port = try Self.healthPort(node)
        var hogs: [SlowClient] = []
        // More slow clients than the node has descriptors, each connect
        // bounded to 1 s: once a backlog is full, a blocking connect retries
        // for up to 30 s, and the old 30 s idle timer would then have freed
        // the first ones before /health is asked.
        for _ in 0..<300 {
            guard let client = SlowClient(port: port) else { continue }
            client.send("GET /health HTTP/1.1\r\nHo")
            hogs.append(client)
        }
        usleep(1_200_000)
        // Generous limits: under a loaded CI machine the node works through
        // a listen backlog of hogs before curl's connection, and a SYN that
        // finds the backlog full is retried by the kernel after 1, 3, 7 and
        // 15 s; what matters is that /health gets through, not how fast. A
        // probe's own retry is what an orchestrator does too. (One attempt
        // with --max-time 30 timed out once in a clean-clone CI run, cause
        // not found: docs/operations.md, "The operations port under a flood".)
        for _ in 0..<3 {
            let health = try runTool("curl", ["-s", "--connect-timeout", "20", "--max-time", "30", "--retry", "2", "--retry-delay", "1",
                                              "http://127.0.0.1:\(port)/health"])
            #expect(health.status == 0 && health.output.contains("ok"), "\(health.status): \(health.output)")
        }
        let pong = try runTool("redis-cli", ["-p", String(node.port), "PING"]).output
        #expect(pong.contains("PONG"), "\(pong)")
        // Those past the cap were told why (503), or, once they had waited
        // longest, closed to make room: none still holds the port.
        #expect(hogs.reversed().contains { $0.wasRefusedOrClosed() })
    }

    // MARK: - Helpers

    /// A client whose connect and reads give up after 1 s, closed on deinit.
    final class SlowClient {
        let fd: Int32

        init?(port: UInt16) {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            // On Linux, SO_SNDTIMEO bounds connect too.
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            // No close here: deinit runs for this fully initialized object and
            // closes it. A second close(2) could close a descriptor another
            // test's thread was given in between, and failed connects are
            // what a loaded machine makes many of.
            if connected != 0 { return nil }
        }

        func send(_ text: String) {
            _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        /// What arrives within 1 s ("" on timeout, close or reset).
        func receivedText() -> String {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
        }

        /// True when the node answered 503 or closed the connection within 1 s.
        func wasRefusedOrClosed() -> Bool {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return true }
            if count < 0 { return errno == ECONNRESET }
            return String(decoding: buffer[0..<count], as: UTF8.self).hasPrefix("HTTP/1.1 503")
        }

        deinit { Glibc.close(fd) }
    }

    static func bigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// utime + stime of the process, from /proc/PID/stat.
    static func cpuSeconds(_ pid: pid_t) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = stat.lastIndex(of: ")") else { throw HarnessError("bad /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields after the command: state is [0], utime [11], stime [12].
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The operations port the node bound (it was given port 0).
    static func healthPort(_ node: SpawnedNode) throws -> UInt16 {
        guard node.waitForLog({ $0.contains("serving") }) else { throw HarnessError("never served: \(node.log())") }
        let log = node.log()
        guard let range = log.range(of: #"health_addr=127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
              let port = UInt16(log[range].split(separator: ":").last ?? "") else {
            throw HarnessError("no health_addr in: \(log)")
        }
        return port
    }

    static func healthURL(_ node: SpawnedNode) throws -> String {
        "http://127.0.0.1:\(try healthPort(node))"
    }
}
