import AegisProtocol
import Foundation
import Testing

/// The real binary driven by real clients: redis-cli, the Python `redis`
/// package and the AegisKV binary protocol.
@Suite(.serialized)
struct RealClientTests {
    static let pythonScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("python/redis_client_check.py").path

    @Test func redisCLICommands() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let port = String(server.port)
        func cli(_ args: String...) throws -> String {
            let result = try runTool("redis-cli", ["-p", port] + args)
            #expect(result.status == 0)
            return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try cli("PING") == "PONG")
        #expect(try cli("SET", "greeting", "hello world") == "OK")
        #expect(try cli("GET", "greeting") == "hello world")
        #expect(try cli("STRLEN", "greeting") == "11")
        #expect(try cli("SET", "n", "10", "EX", "100") == "OK")
        #expect(try cli("INCRBY", "n", "5") == "15")
        #expect(try cli("TTL", "n") == "100" || (try cli("TTL", "n")) == "99")
        #expect(try cli("DEL", "greeting", "n", "missing") == "2")
        #expect(try cli("GET", "greeting") == "")
        #expect(try cli("DBSIZE") == "0")
        #expect(try cli("NOSUCHCOMMAND").hasPrefix("ERR unknown command 'NOSUCHCOMMAND'"))
        #expect(try cli("INFO", "server").contains("redis_version:"))
        #expect(try cli("COMMAND", "COUNT") != "0")
        // Piped input, as operators script it.
        let piped = try runTool("redis-cli", ["-p", port], input: "SET a 1\nINCR a\nGET a\n")
        #expect(piped.output.split(separator: "\n") == ["OK", "2", "2"])
        let scan = try runTool("redis-cli", ["-p", port, "--scan", "--pattern", "a*"])
        #expect(scan.output.trimmingCharacters(in: .whitespacesAndNewlines) == "a")
    }

    @Test func pythonRedisPackage() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let result = try runTool("python3", [Self.pythonScript, String(server.port)])
        #expect(result.status == 0, "\(result.output)\nserver log:\n\(server.log())")
        #expect(result.output.contains("all checks passed"))
    }

    @Test func binaryProtocolClient() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        let buffer = WireBuffer()
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 7, key: Array("user:1".utf8), value: [0, 1, 2, 255], ttlMs: 60_000, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: 8, key: Array("user:1".utf8), value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: 9, key: Array("missing".utf8), value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: 99, requestID: 10, key: [], value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.del.rawValue, requestID: 11, key: Array("user:1".utf8), value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.ping.rawValue, requestID: 12, key: [], value: [], ttlMs: 0, version: 0, into: buffer)
        BinaryRequestWriter.write(command: BinaryCommand.get.rawValue, requestID: 13, key: Array("user:1".utf8), value: [], ttlMs: 0, version: 0, into: buffer)
        try socket.send(buffer.readableArray())
        let responses = try readBinaryResponses(socket, count: 7)
        #expect(responses.map(\.requestID) == [7, 8, 9, 10, 11, 12, 13])
        #expect(responses[0].status == BinaryStatus.ok.rawValue)
        #expect(responses[0].version != 0)
        #expect(responses[1].status == BinaryStatus.ok.rawValue)
        #expect(responses[1].value == [0, 1, 2, 255])
        #expect(responses[1].ttlMs > 55_000 && responses[1].ttlMs <= 60_000)
        #expect(responses[1].version == responses[0].version)
        #expect(responses[2].status == BinaryStatus.notFound.rawValue)
        #expect(responses[3].status == BinaryStatus.error.rawValue)
        #expect(responses[3].error.contains("unknown command"))
        #expect(responses[4].status == BinaryStatus.ok.rawValue)
        #expect(responses[5].status == BinaryStatus.ok.rawValue)
        #expect(responses[6].status == BinaryStatus.notFound.rawValue)
    }

    /// 10,000 pipelined requests spread over every shard come back in order,
    /// although about half of them are answered by the other reactor.
    @Test func tenThousandPipelinedRequestsStayInOrder() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        let buffer = WireBuffer()
        for i in 0..<5000 {
            RESPRequestWriter.command([Array("SET".utf8), Array("order:\(i)".utf8), Array("value-\(i)".utf8)], into: buffer)
            RESPRequestWriter.command([Array("GET".utf8), Array("order:\(i)".utf8)], into: buffer)
        }
        try socket.send(buffer.readableArray())
        var received: [UInt8] = []
        var replies: [RESPValue] = []
        while replies.count < 10_000 {
            received += try socket.receiveSome()
            var offset = 0
            while true {
                let parsed = try received.withUnsafeBytes { try RESPReplyParser.parse(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
                guard let (value, consumed) = parsed else { break }
                replies.append(value)
                offset += consumed
            }
            received.removeFirst(offset)
        }
        for i in 0..<5000 {
            #expect(replies[2 * i] == .simple("OK"))
            #expect(replies[2 * i + 1] == .bulk(Array("value-\(i)".utf8)), "reply \(2 * i + 1)")
        }
        let info = try runTool("redis-cli", ["-p", String(server.port), "INFO", "stats"]).output
        #expect(info.contains("forwarded_requests:"))
        #expect(!info.contains("forwarded_requests:0\r"), "with two reactors some requests must cross")
    }

    /// Inline commands with quotes are unescaped in place; the bytes forwarded
    /// to the owning reactor must still say the same thing.
    @Test func quotedInlineCommandsAcrossReactors() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        var script = ""
        for i in 0..<64 { script += "SET \"key \(i)\" \"value \\\"\(i)\\\"\"\r\n" }
        for i in 0..<64 { script += "GET \"key \(i)\"\r\n" }
        try socket.send(script)
        var expected = String(repeating: "+OK\r\n", count: 64)
        for i in 0..<64 {
            let value = "value \"\(i)\""
            expected += "$\(value.utf8.count)\r\n\(value)\r\n"
        }
        let reply = try socket.receive { $0.count >= expected.utf8.count }
        #expect(String(decoding: reply, as: UTF8.self) == expected)
    }

    /// Values larger than a ring record travel between reactors by pointer,
    /// and a burst bigger than a ring waits in the overflow queue in order;
    /// both must deliver every byte intact.
    @Test func largeValuesAndRingOverflowKeepDataIntact() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port, timeoutSeconds: 30)
        func value(_ i: Int, size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) } }
        let sizes = [300 * 1024, 2 * 1024 * 1024]
        let requests = WireBuffer()
        for i in 0..<8 {
            RESPRequestWriter.command([Array("SET".utf8), Array("large:\(i)".utf8), value(i, size: sizes[i % 2])], into: requests)
        }
        for i in 0..<8 { RESPRequestWriter.command([Array("GET".utf8), Array("large:\(i)".utf8)], into: requests) }
        // 20,000 pipelined SETs of 512-byte values: about 10 MB through 1 MB rings.
        for i in 0..<20_000 {
            RESPRequestWriter.command([Array("SET".utf8), Array("burst:\(i)".utf8), value(i, size: 512)], into: requests)
        }
        RESPRequestWriter.command([Array("DBSIZE".utf8)], into: requests)
        let sender = Thread { [bytes = requests.readableArray()] in try? socket.send(bytes) }
        sender.start()
        var received: [UInt8] = []
        var replies: [RESPValue] = []
        while replies.count < 16 + 20_001 {
            received += try socket.receiveSome(max: 1 << 20)
            var offset = 0
            while let (reply, consumed) = try received.withUnsafeBytes({ try RESPReplyParser.parse(UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
                replies.append(reply)
                offset += consumed
            }
            received.removeFirst(offset)
        }
        for i in 0..<8 {
            #expect(replies[i] == .simple("OK"))
            #expect(replies[8 + i] == .bulk(value(i, size: sizes[i % 2])), "large value \(i)")
        }
        #expect(replies[16..<(16 + 20_000)].allSatisfy { $0 == .simple("OK") })
        #expect(replies.last == .integer(20_008))
    }

    @Test func quitClosesAfterReply() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let socket = try TestSocket(port: server.port)
        try socket.send("PING\r\nQUIT\r\nPING\r\n")
        let reply = try socket.receive { String(decoding: $0, as: UTF8.self).contains("+OK\r\n") }
        #expect(String(decoding: reply, as: UTF8.self) == "+PONG\r\n+OK\r\n")
        #expect(socket.waitForClose())
    }
}

func readBinaryResponses(_ socket: TestSocket, count: Int) throws -> [BinaryResponse] {
    var received: [UInt8] = []
    var responses: [BinaryResponse] = []
    while responses.count < count {
        let chunk = try socket.receiveSome()
        if chunk.isEmpty { throw HarnessError("closed after \(responses.count) responses") }
        received += chunk
        while let response = try received.withUnsafeBytes({ try BinaryResponseParser.parse($0) }) {
            responses.append(response)
            received.removeFirst(response.frameLength)
        }
    }
    return responses
}
