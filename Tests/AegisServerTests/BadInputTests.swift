import AegisProtocol
import Foundation
import Glibc
import Testing

/// One bad client never hurts the others: each abuse below gets an error or
/// a closed connection while a well-behaved client keeps its data and service.
@Suite(.serialized)
struct BadInputTests {
    /// A client that stored something before the abuse and checks it after.
    struct Witness {
        let socket: TestSocket
        init(port: UInt16) throws {
            socket = try TestSocket(port: port)
            try socket.send("SET witness:key precious\r\n")
            let reply = try socket.receive { $0.count >= 5 }
            #expect(reply == Array("+OK\r\n".utf8))
        }
        func stillServed() throws {
            try socket.send("GET witness:key\r\n")
            let reply = try socket.receive { $0.count >= 14 }
            #expect(String(decoding: reply, as: UTF8.self) == "$8\r\nprecious\r\n")
        }
    }

    @Test func randomBytesCloseOnlyThatConnection() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let witness = try Witness(port: server.port)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20 {
            let socket = try TestSocket(port: server.port, timeoutSeconds: 5)
            var junk = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Start with each kind of first byte: non-text, binary length, RESP.
            junk[0] = [UInt8(0xFF), 0x00, UInt8(ascii: "*"), UInt8(ascii: "G")][round % 4]
            try? socket.send(junk)
            // Closed for the junk, or (junk that parses as unknown inline
            // commands) answered with errors until it ran out and closed at
            // the end of input: either way the server lets go of it.
            socket.shutdownWrite()
            #expect(socket.waitForClose(), "round \(round): the server kept a connection that sent junk and then EOF")
            socket.close()
        }
        try witness.stillServed()
    }

    @Test func hugeLengthsAreRefusedWithoutAllocating() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let witness = try Witness(port: server.port)
        let before = server.residentBytes()

        // Binary frame claiming about 80 MiB, beyond the largest legal frame
        // (a first byte above 0x04 would be RESP, as redis-server reads it).
        let binary = try TestSocket(port: server.port)
        try binary.send([0x04, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0xAE, count: 64))
        let binaryReply = try binary.receive { $0.count >= 47 }
        let parsed = try binaryReply.withUnsafeBytes { try BinaryResponseParser.parse($0) }
        #expect(parsed?.status == BinaryStatus.error.rawValue)
        #expect(binary.waitForClose())

        // RESP bulk length of 10^12.
        let resp = try TestSocket(port: server.port)
        try resp.send("*2\r\n$3\r\nGET\r\n$1000000000000\r\n")
        let respReply = String(decoding: try resp.receive { $0.last == 10 }, as: UTF8.self)
        #expect(respReply.hasPrefix("-ERR Protocol error"))
        #expect(resp.waitForClose())

        // Multibulk count of 2^31.
        let many = try TestSocket(port: server.port)
        try many.send("*2147483648\r\n")
        #expect(String(decoding: try many.receive { $0.last == 10 }, as: UTF8.self).hasPrefix("-ERR Protocol error"))

        #expect(server.residentBytes() - before < 64 * 1024 * 1024)
        try witness.stillServed()
    }

    @Test func halfFramesThenDisconnect() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let witness = try Witness(port: server.port)
        let frame = WireBuffer()
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 1, key: Array("half".utf8), value: Array(repeating: 7, count: 1000), ttlMs: 0, version: 0, into: frame)
        let bytes = frame.readableArray()
        for cut in stride(from: 1, to: bytes.count, by: 97) {
            let socket = try TestSocket(port: server.port)
            try socket.send(Array(bytes[0..<cut]))
            socket.close()
        }
        for cut in [1, 5, 13, 20] {
            let socket = try TestSocket(port: server.port)
            try socket.send(Array("*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\n01234".utf8.prefix(cut + 10)))
            socket.close()
        }
        try witness.stillServed()
        // The half-sent SET never happened.
        let check = try TestSocket(port: server.port)
        try check.send("EXISTS half\r\n")
        #expect(try check.receive { $0.count >= 4 } == Array(":0\r\n".utf8))
    }

    @Test func tenThousandIdleConnections() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let needed: rlim_t = 10_300
        try #require(limit.rlim_cur >= needed, "this test needs RLIMIT_NOFILE >= \(needed)")

        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let witness = try Witness(port: server.port)
        let before = server.residentBytes()
        var idle: [TestSocket] = []
        for _ in 0..<10_000 { idle.append(try TestSocket(port: server.port)) }
        try witness.stillServed()
        // connect() returns once the kernel completed the handshake; the
        // reactors accept from the backlog a moment later.
        var connected = 0
        for _ in 0..<100 where connected < 10_000 {
            let info = try runTool("redis-cli", ["-p", String(server.port), "INFO", "clients"]).output
            let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("connected_clients:") }
            connected = line.flatMap { Int($0.dropFirst("connected_clients:".count)) } ?? 0
            if connected < 10_000 { usleep(100_000) }
        }
        #expect(connected >= 10_000)
        let perConnection = (server.residentBytes() - before) / 10_000
        #expect(perConnection < 16 * 1024, "idle connections cost \(perConnection) bytes each")
        for socket in idle { socket.close() }
        try witness.stillServed()
    }

    @Test func maxConnsRefusesWithAnError() throws {
        let server = try ServerHarness(arguments: ["--max-conns", "3"])
        defer { #expect(server.stop() == 0) }
        // The harness's readiness probe may still be counted for a moment:
        // wait until the first client is alone.
        let first = try TestSocket(port: server.port)
        for _ in 0..<100 {
            try first.send("INFO clients\r\n")
            let info = String(decoding: try first.receive { $0.count > 4 && $0.suffix(4) == Array("\r\n\r\n".utf8) }, as: UTF8.self)
            if info.contains("connected_clients:1\r\n") { break }
            usleep(50_000)
        }
        // INFO's count is published once per clock tick and a busy machine
        // may close the probe late: if one of the three is still refused,
        // start over with fresh connections.
        var kept: [TestSocket] = []
        for attempt in 0..<20 {
            kept = [first] + (try (0..<2).map { _ in try TestSocket(port: server.port) })
            var replies: [String] = []
            for socket in kept {
                try socket.send("PING\r\n")
                replies.append(String(decoding: try socket.receive { $0.last == 10 }, as: UTF8.self))
            }
            if replies.allSatisfy({ $0 == "+PONG\r\n" }) { break }
            #expect(attempt < 19, "three clients never fit under max_conns 3: \(replies)")
            for socket in kept.dropFirst() { socket.close() }
            usleep(200_000)
        }
        let refused = try TestSocket(port: server.port)
        // The refusal waits for the first request, to answer in its protocol.
        try refused.send("PING\r\n")
        let reply = String(decoding: try refused.receive { $0.last == 10 }, as: UTF8.self)
        #expect(reply == "-ERR max number of clients reached\r\n")
        #expect(refused.waitForClose())
        try kept[0].send("PING\r\n")
        #expect(try kept[0].receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
    }

    @Test func oversizedKeyIsAnErrorNotACrash() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        let key = String(repeating: "k", count: 70_000)
        try socket.send("*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$1\r\nv\r\n")
        let reply = String(decoding: try socket.receive { $0.last == 10 }, as: UTF8.self)
        #expect(reply.hasPrefix("-ERR key is larger than"))
        try socket.send("PING\r\n")
        #expect(try socket.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
    }
}
