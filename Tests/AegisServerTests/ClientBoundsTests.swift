import AegisProtocol
import Foundation
import Glibc
import Testing

/// Issue 14, item 2: everything one client connection can make the node
/// hold is bounded (input, input before AUTH, output), and a client past a
/// bound gets an error and is closed while the others are served.
@Suite(.serialized)
struct ClientBoundsTests {
    /// A number from INFO, read with redis-cli; nil when the field is absent.
    static func info(_ server: ServerHarness, _ section: String, _ field: String) throws -> Int? {
        let text = try runTool("redis-cli", ["-p", String(server.port), "INFO", section]).output
        let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix(field + ":") }
        return line.flatMap { Int($0.dropFirst(field.count + 1)) }
    }

    /// Runs `body` on `count` threads at once and waits for all of them.
    static func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchSemaphore(value: 0)
        for index in 0..<count {
            Thread {
                body(index)
                done.signal()
            }.start()
        }
        for _ in 0..<count { done.wait() }
    }

    /// The probe, scaled down: clients announce a request of 1000
    /// bulk strings of 1 MiB and send 48 MiB of it each. Before the fix the
    /// node buffered all of it (RSS grew by the sum); now each is refused
    /// at client_input_max_mb and the node's growth stays bounded.
    @Test func hugeUnfinishedRequestsAreRefusedAndTheNodeStaysBounded() throws {
        let server = try ServerHarness(arguments: ["--max-memory-mb", "32", "--client-input-max-mb", "4"])
        defer { #expect(server.stop() == 0) }
        let witness = try TestSocket(port: server.port)
        try witness.send("SET witness:key precious\r\n")
        #expect(try witness.receive { $0.count >= 5 } == Array("+OK\r\n".utf8))
        let before = server.residentBytes()

        let attackers = 4
        let perAttacker = 48 << 20
        let chunk = Array("$1048576\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20) + Array("\r\n".utf8)
        let sent = Shared(Array(repeating: 0, count: attackers))
        let peakGrowth = Shared(0)
        let sampling = Shared(true)
        let sampler = Thread {
            while sampling.withLock({ $0 }) {
                let growth = server.residentBytes() - before
                peakGrowth.withLock { $0 = max($0, growth) }
                usleep(20_000)
            }
        }
        sampler.start()
        Self.concurrently(attackers) { index in
            guard let socket = try? TestSocket(port: server.port) else { return }
            var total = 0
            do {
                try socket.send("*1000\r\n")
                while total < perAttacker {
                    try socket.send(chunk)
                    total += chunk.count
                }
            } catch {}
            sent.withLock { $0[index] = total }
            socket.close()
        }
        let growth = server.residentBytes() - before
        sampling.withLock { $0 = false }
        while !sampler.isFinished { usleep(10_000) }

        // Each attacker's connection was closed long before it sent 48 MiB
        // (the kernel's socket buffers take a few MiB more than the cap).
        for total in sent.withLock({ $0 }) {
            #expect(total < perAttacker, "an attacker sent all \(total >> 20) MiB: nothing refused it")
        }
        let peak = max(peakGrowth.withLock { $0 }, growth)
        #expect(peak < 40 << 20, "the node grew by \(peak >> 20) MiB for \(attackers) unfinished requests")
        try witness.send("GET witness:key\r\n")
        #expect(String(decoding: try witness.receive { $0.count >= 14 }, as: UTF8.self) == "$8\r\nprecious\r\n")
    }

    /// Unfinished requests each under the cap but together over the node's
    /// input budget (a quarter of max_memory_mb): the largest are refused
    /// until the rest fit, and a client with a small request in progress is
    /// still served.
    @Test func inputBudgetRefusesTheLargestUnfinishedRequests() throws {
        let server = try ServerHarness(arguments: ["--max-memory-mb", "16", "--client-input-max-mb", "2"])
        defer { #expect(server.stop() == 0) }
        let witness = try TestSocket(port: server.port)
        try witness.send("SET witness:key precious\r\n")
        #expect(try witness.receive { $0.count >= 5 } == Array("+OK\r\n".utf8))

        let small = try TestSocket(port: server.port)
        try small.send("*3\r\n$3\r\nSET\r\n$5\r\nsmall\r\n$5\r\nhel")
        // 6 x 1.5 MiB unfinished, each under the 2 MiB cap; the budget is
        // 4 MiB over both reactors.
        let partial = Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n".utf8) + [UInt8](repeating: 7, count: 1_500_000)
        let big = try (0..<6).map { _ in try TestSocket(port: server.port, timeoutSeconds: 3) }
        for socket in big { try socket.send(partial) }
        var refused = 0
        for socket in big {
            // A connection still held answers nothing: its receive times out.
            guard let reply = try? socket.receive(until: { $0.last == 10 }) else { continue }
            #expect(String(decoding: reply, as: UTF8.self)
                == "-ERR node input buffers full: clients are sending more unfinished requests than this node holds; retry later\r\n")
            #expect(socket.waitForClose())
            refused += 1
        }
        #expect(refused >= 3, "only \(refused) of 6 unfinished 1.5 MiB requests were refused with a 4 MiB budget")
        #expect(refused < 6, "every unfinished request was refused, though some fit the budget")

        try small.send("lo\r\n")
        #expect(try small.receive { $0.count >= 5 } == Array("+OK\r\n".utf8))
        try witness.send("GET witness:key\r\n")
        #expect(String(decoding: try witness.receive { $0.count >= 14 }, as: UTF8.self) == "$8\r\nprecious\r\n")
    }

    /// A client whose partial request reaches the cap, or announces a
    /// size over it, gets an error that says why, then the connection
    /// closes; in RESP and in binary.
    @Test func partialRequestOverTheCapIsAnsweredThenClosed() throws {
        let server = try ServerHarness(arguments: ["--client-input-max-mb", "1"])
        defer { #expect(server.stop() == 0) }
        let refusal = "request larger than client_input_max_mb (1 MiB)"

        // Many small arguments: the size is only known by filling the cap.
        let filled = try TestSocket(port: server.port, timeoutSeconds: 10)
        var small = Array("*1000000\r\n".utf8)
        for _ in 0..<170_000 { small += Array("$1\r\na\r\n".utf8) }
        try filled.send(small)
        #expect(String(decoding: try filled.receive { $0.last == 10 }, as: UTF8.self) == "-ERR \(refusal)\r\n")
        #expect(filled.waitForClose())

        // A bulk length over the cap: refused as soon as it is read.
        let announced = try TestSocket(port: server.port, timeoutSeconds: 10)
        try announced.send(Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n".utf8) + [UInt8](repeating: 1, count: 1000))
        #expect(String(decoding: try announced.receive { $0.last == 10 }, as: UTF8.self) == "-ERR \(refusal)\r\n")
        #expect(announced.waitForClose())

        let frame = WireBuffer()
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 9, key: Array("k".utf8),
                                  value: [UInt8](repeating: 2, count: 2_000_000), ttlMs: 0, version: 0, into: frame)
        let binary = try TestSocket(port: server.port, timeoutSeconds: 10)
        try binary.send(Array(frame.readableArray().prefix(1000)))
        let answer = try binary.receive { $0.count >= 47 && $0.count >= 4 + Int(UInt32(bigEndian: $0.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })) }
        let parsed = try answer.withUnsafeBytes { try BinaryResponseParser.parse($0) }
        #expect(parsed?.status == BinaryStatus.error.rawValue)
        #expect(parsed?.error == refusal)
        #expect(binary.waitForClose())

        // A request under the cap is still served whole.
        let fits = try TestSocket(port: server.port)
        let value = String(repeating: "v", count: 900_000)
        try fits.send("*3\r\n$3\r\nSET\r\n$3\r\nfit\r\n$\(value.utf8.count)\r\n\(value)\r\n")
        #expect(try fits.receive { $0.count >= 5 } == Array("+OK\r\n".utf8))
    }

    /// With a token set, a client that has not sent AUTH may send only
    /// small requests (as Redis allows), so it cannot fill memory; after
    /// AUTH the usual limits apply.
    @Test func beforeAuthOnlySmallRequestsAreRead() throws {
        let server = try ServerHarness(arguments: ["--auth-token", "s3cret"])
        defer { #expect(server.stop() == 0) }

        let bigBulk = try TestSocket(port: server.port, timeoutSeconds: 10)
        try bigBulk.send("*2\r\n$4\r\nAUTH\r\n$100000\r\n")
        #expect(String(decoding: try bigBulk.receive { $0.last == 10 }, as: UTF8.self) == "-ERR Protocol error: unauthenticated bulk length\r\n")
        #expect(bigBulk.waitForClose())

        let manyArguments = try TestSocket(port: server.port, timeoutSeconds: 10)
        try manyArguments.send("*11\r\n")
        #expect(String(decoding: try manyArguments.receive { $0.last == 10 }, as: UTF8.self) == "-ERR Protocol error: unauthenticated multibulk length\r\n")
        #expect(manyArguments.waitForClose())

        let frame = WireBuffer()
        BinaryRequestWriter.write(command: BinaryCommand.set.rawValue, requestID: 5, key: Array("k".utf8),
                                  value: [UInt8](repeating: 3, count: 100_000), ttlMs: 0, version: 0, into: frame)
        let binary = try TestSocket(port: server.port, timeoutSeconds: 10)
        try binary.send(Array(frame.readableArray().prefix(64)))
        let answer = try binary.receive { $0.count >= 47 && $0.count >= 4 + Int(UInt32(bigEndian: $0.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })) }
        let parsed = try answer.withUnsafeBytes { try BinaryResponseParser.parse($0) }
        #expect(parsed?.status == BinaryStatus.error.rawValue)
        #expect(parsed?.error.contains("before AUTH") == true)
        #expect(binary.waitForClose())

        // After AUTH, on the same connection and pipelined with it, a large
        // request is read as usual.
        let client = try TestSocket(port: server.port)
        let value = String(repeating: "v", count: 100_000)
        try client.send("AUTH s3cret\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$\(value.utf8.count)\r\n\(value)\r\n")
        #expect(try client.receive { $0.count >= 10 } == Array("+OK\r\n+OK\r\n".utf8))
    }

    /// Clients that pipeline GETs of a 1 MiB value and never read: each
    /// holds about the documented 4 MiB of unread replies (before the fix,
    /// 16 to 21 MB each), and INFO shows the buffers.
    @Test func unreadRepliesStayNearTheDocumentedBound() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        let value = String(repeating: "x", count: 1 << 20)
        let loader = try TestSocket(port: server.port)
        #expect(try loader.set("big", value) == Array("+OK\r\n".utf8))
        let before = server.residentBytes()
        let buffersBefore = try Self.info(server, "memory", "mem_clients_normal") ?? 0

        let clients = 8
        // Connections are spread over both reactors: about half of them
        // reach the value through the other reactor (forwarded replies).
        let readers = try (0..<clients).map { _ in try TestSocket(port: server.port, timeoutSeconds: 30) }
        let pipeline = Array(String(repeating: "GET big\r\n", count: 64).utf8)
        for reader in readers { try reader.send(pipeline) }

        // Wait until every connection has reached its bound: the node's
        // client buffers stop growing once all are held back.
        var buffers = 0
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            buffers = try Self.info(server, "memory", "mem_clients_normal") ?? 0
            if buffers - buffersBefore >= clients * (4 << 20) { break }
            usleep(50_000)
        }
        #expect(buffers - buffersBefore >= clients * (4 << 20), "INFO mem_clients_normal shows \(buffers) bytes")
        let growth = server.residentBytes() - before
        #expect(growth < clients * (10 << 20), "\(clients) clients that do not read grew the node by \(growth >> 20) MiB")
        #expect(buffers - buffersBefore < clients * (10 << 20), "INFO mem_clients_normal shows \(buffers) bytes")

        // Another client is served all along, and the readers get every reply once they read.
        let other = try TestSocket(port: server.port)
        try other.send("PING\r\n")
        #expect(try other.receive { $0.count >= 7 } == Array("+PONG\r\n".utf8))
        let expected = 64 * ("$\(1 << 20)\r\n".utf8.count + (1 << 20) + 2)
        for reader in readers {
            var received = 0
            while received < expected {
                let chunk = try reader.receiveSome(max: 1 << 20)
                if chunk.isEmpty { break }
                received += chunk.count
            }
            #expect(received == expected)
        }
    }

    /// SCAN's COUNT and MATCH are bounded, with errors that say the bound.
    @Test func scanLimits() throws {
        let server = try ServerHarness()
        defer { #expect(server.stop() == 0) }
        func cli(_ arguments: String...) throws -> String {
            try runTool("redis-cli", ["-p", String(server.port)] + arguments).output
        }
        #expect(try cli("SCAN", "0", "COUNT", "100001").contains("COUNT must be at most 100000"))
        #expect(try cli("SCAN", "0", "MATCH", String(repeating: "a", count: 1025)).contains("MATCH pattern must be at most 1024 bytes"))
        #expect(!(try cli("SCAN", "0", "COUNT", "100000").contains("ERR")))
        #expect(!(try cli("SCAN", "0", "MATCH", String(repeating: "a", count: 1024)).contains("ERR")))

        // COUNT bounds the entries one call looks at, not the keys it
        // returns: a pattern that matches nothing still takes many calls.
        let keys = (0..<2000).flatMap { ["k\($0)", "v"] }
        _ = try runTool("redis-cli", ["-p", String(server.port), "MSET"] + keys)
        var cursor = "0"
        var calls = 0
        repeat {
            let lines = try cli("SCAN", cursor, "MATCH", "nomatch*", "COUNT", "10").split(whereSeparator: \.isNewline)
            cursor = String(lines.first ?? "0")
            calls += 1
        } while cursor != "0" && calls < 10_000
        #expect(cursor == "0")
        #expect(calls >= 2000 / 20, "a walk of 2000 keys with COUNT 10 took only \(calls) calls")

        // A long pattern is matched in small chunks under a budget of
        // matching work; the walk still finds every key it matches.
        let longPattern = "k1" + String(repeating: "*", count: 1022)
        var matched = Set<String>()
        cursor = "0"
        calls = 0
        repeat {
            let lines = try cli("SCAN", cursor, "MATCH", longPattern, "COUNT", "1000").split(whereSeparator: \.isNewline)
            cursor = String(lines.first ?? "0")
            matched.formUnion(lines.dropFirst().map(String.init))
            calls += 1
        } while cursor != "0" && calls < 10_000
        #expect(matched.count == 1111, "k1, k10-k19, k100-k199, k1000-k1999")
        #expect(matched.allSatisfy { $0.hasPrefix("k1") })
    }
}

/// A value several test threads read and write under a lock.
final class Shared<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<Result>(_ body: (inout Value) -> Result) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
