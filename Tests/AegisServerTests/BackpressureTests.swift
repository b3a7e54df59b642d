import Foundation
import Glibc
import Testing

@Suite(.serialized)
struct BackpressureTests {
    /// A client that pipelines far more reply bytes than it reads does not
    /// grow the server: its connection stops being read at the output bound,
    /// and every reply still arrives, in order, once it reads.
    @Test func unreadRepliesDoNotGrowTheServer() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let value = String(repeating: "x", count: 1 << 20)
        let loader = try TestSocket(port: server.port)
        #expect(try loader.set("big", value) == Array("+OK\r\n".utf8))
        let baseline = server.residentBytes()

        let requests = 400  // 400 MiB of replies
        let reader = try TestSocket(port: server.port, timeoutSeconds: 30)
        let sender = Thread {
            try? reader.send(String(repeating: "GET big\r\n", count: requests))
        }
        sender.start()
        // Wait until the server holds the connection at its bound (INFO
        // shows its buffers), not for a guessed time.
        var buffers = 0
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && buffers < 4 << 20 {
            buffers = try ClientBoundsTests.info(server, "memory", "mem_clients_normal") ?? 0
            if buffers < 4 << 20 { usleep(20_000) }
        }
        #expect(buffers >= 4 << 20, "the client's replies never filled the output bound")
        let growth = server.residentBytes() - baseline
        // Bounded by the output limit (4 MiB of unread replies, counting
        // those expected from other reactors) plus one reply and the
        // buffers' slack, far below the 400 MiB the client asked for.
        #expect(growth < 16 << 20, "server grew by \(growth >> 20) MiB while the client did not read")

        let expectedReply = "$\(value.utf8.count)\r\n".utf8.count + value.utf8.count + 2
        var received = 0
        while received < expectedReply * requests {
            let chunk = try reader.receiveSome(max: 1 << 20)
            if chunk.isEmpty { break }
            received += chunk.count
        }
        #expect(received == expectedReply * requests)

        // Another client was served all along.
        let other = try TestSocket(port: server.port)
        try other.send("PING\r\n")
        #expect(try other.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
    }

    @Test func writeTimeoutClosesAClientThatNeverReads() throws {
        let server = try ServerHarness(arguments: ["--write-timeout", "1s"])
        defer { #expect(server.stop() == 0) }
        let value = String(repeating: "y", count: 1 << 20)
        let loader = try TestSocket(port: server.port)
        _ = try loader.set("big", value)
        let stuck = try TestSocket(port: server.port)
        try stuck.send(String(repeating: "GET big\r\n", count: 20))
        // Wait, without reading from it, until the server has dropped the
        // stalled client. INFO's count is published once per clock tick, so
        // it may lag: first see all three clients (loader, stuck, this
        // observer) counted, then see the stuck one gone.
        let observer = try TestSocket(port: server.port)
        func connectedClients() throws -> Int {
            try observer.send("INFO clients\r\n")
            let info = String(decoding: try observer.receive { $0.count > 4 && $0.suffix(4) == Array("\r\n\r\n".utf8) }, as: UTF8.self)
            let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("connected_clients:") }
            return line.flatMap { Int($0.dropFirst("connected_clients:".count)) } ?? -1
        }
        var sawAll = false
        var clients = -1
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            clients = try connectedClients()
            if clients == 3 { sawAll = true }
            if sawAll && clients == 2 { break }
            usleep(50_000)
        }
        #expect(sawAll && clients == 2, "the stalled client was never closed (connected_clients \(clients))")
        // The server gave up on the stalled client: draining what it had
        // buffered ends in EOF or a reset instead of all 20 replies.
        var received = 0
        while let chunk = try? stuck.receiveSome(max: 1 << 20), !chunk.isEmpty { received += chunk.count }
        #expect(received < 20 * (1 << 20))
    }

    @Test func idleTimeoutClosesOnlyIdleConnections() throws {
        let server = try ServerHarness(arguments: ["--idle-timeout", "2s"])
        defer { #expect(server.stop() == 0) }
        let idle = try TestSocket(port: server.port)
        let busy = try TestSocket(port: server.port)
        for _ in 0..<8 {
            try busy.send("PING\r\n")
            #expect(try busy.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
            usleep(500_000)
        }
        #expect(idle.waitForClose())
        try busy.send("PING\r\n")
        #expect(try busy.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
    }

    @Test func readTimeoutClosesAHalfSentRequest() throws {
        let server = try ServerHarness(arguments: ["--read-timeout", "1s"])
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        try socket.send("*2\r\n$3\r\nGET\r\n$10\r\nabc")
        #expect(socket.waitForClose())
    }
}
