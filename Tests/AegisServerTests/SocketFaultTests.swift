import Foundation
import Glibc
import Testing

/// Socket faults injected through the reactor's kernel door
/// (`AEGISKV_KERNEL_FAULTS`, Kernel/KernelFaultPlan.swift) into the real
/// binary: the one client a fault hits loses its connection and nothing
/// else; the others keep working.
///
/// Each reactor counts calls on its own, so the tests that name the n-th
/// call run one reactor. Its first client is the harness's port probe,
/// which connects and closes without sending anything.
@Suite(.serialized)
struct SocketFaultTests {
    static func startNode(faults: String, reactors: Int = 1) throws -> ServerHarness {
        try ServerHarness(environment: [KernelFaultVariable.name: faults], reactors: reactors)
    }

    /// Everything the server sends until it closes the connection (EOF or a reset).
    static func bytesUntilClose(_ socket: TestSocket) -> [UInt8]? {
        var received: [UInt8] = []
        while true {
            guard let chunk = try? socket.receiveSome() else { return errno == ECONNRESET ? received : nil }
            if chunk.isEmpty { return received }
            received += chunk
        }
    }

    static func connectedClients(_ client: RESPTestClient) throws -> Int? {
        guard let info = try client.command("INFO", "clients").text else { return nil }
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("connected_clients:") {
            return Int(line.dropFirst("connected_clients:".count))
        }
        return nil
    }

    /// INFO publishes each reactor's count about once a millisecond: waits for `expected`.
    static func waitForConnectedClients(_ client: RESPTestClient, _ expected: Int) throws -> Int? {
        let deadline = Date().addingTimeInterval(5)
        var seen = try connectedClients(client)
        while seen != expected && Date() < deadline {
            usleep(10_000)
            seen = try connectedClients(client)
        }
        return seen
    }

    /// The second reply send fails with ECONNRESET, as when the client's
    /// side reset: that connection is closed before any byte of its reply
    /// reaches it, and the client before it and a client after it are
    /// served, the count of connections staying right.
    @Test func aResetOnSendClosesThatClientOnly() throws {
        let server = try Self.startNode(faults: "send.client=ECONNRESET@2")
        defer { server.stop() }
        let first = try RESPTestClient(port: server.port)
        #expect(try first.command("PING") == .simple("PONG"))  // send 1

        let victim = try TestSocket(port: server.port)
        try victim.send("*1\r\n$4\r\nPING\r\n")  // its reply is send 2
        let before = Self.bytesUntilClose(victim)
        #expect(before == [], "the failed connection was not closed cleanly: \(before.map { String(decoding: $0, as: UTF8.self) } ?? "timed out")")

        #expect(try first.command("SET", "after-reset", "still-here") == .simple("OK"))
        #expect(try first.command("GET", "after-reset").text == "still-here")
        let later = try RESPTestClient(port: server.port)
        #expect(try later.command("GET", "after-reset").text == "still-here")
        #expect(try Self.waitForConnectedClients(later, 2) == 2)
        #expect(server.process.isRunning)
    }

    /// Short reads and short sends everywhere, and three sends refused with
    /// EAGAIN, on two reactors (so forwarded requests too): every reply of
    /// a pipelined load of 3 KiB values arrives whole and in order.
    @Test func shortTransfersAndEAGAINLoseNothing() throws {
        let server = try Self.startNode(faults: "send.client=EAGAIN@5x3; send.client=SHORT@1x0; read.client=SHORT@1x0", reactors: 2)
        defer { server.stop() }
        let clients = try (0..<2).map { _ in try RESPTestClient(port: server.port) }
        for (c, client) in clients.enumerated() {
            let value = { (i: Int) in "value-\(c)-\(i)-" + String(repeating: "s", count: 3072) }
            for start in stride(from: 0, to: 400, by: 100) {
                let sets = try client.pipeline((start..<start + 100).map { ["SET", "short-\(c)-\($0)", value($0)] })
                #expect(sets.allSatisfy { $0 == .simple("OK") })
                let gets = try client.pipeline((start..<start + 100).map { ["GET", "short-\(c)-\($0)"] })
                for (i, reply) in zip(start..<start + 100, gets) {
                    #expect(reply.text == value(i), "short-\(c)-\(i) came back as \(reply.text.map { String($0.prefix(24)) } ?? "nothing")")
                }
            }
        }
        #expect(server.log().contains("kernel fault injection armed"))
    }

    /// epoll_ctl refuses the first client's registration: that connection
    /// is closed, and the node's count of connections is not left one
    /// short (it used to be decremented without having been incremented,
    /// which would have kept a drain from ever finishing).
    @Test func aFailedRegistrationClosesThatConnectionOnly() throws {
        let server = try Self.startNode(faults: "epoll_ctl.client=EBADF@1")
        let client = try RESPTestClient(port: server.port)
        #expect(try client.command("PING") == .simple("PONG"))
        #expect(try Self.waitForConnectedClients(client, 1) == 1)
        #expect(server.log().contains("epoll_ctl(add) failed"))
        client.socket.close()
        #expect(server.stop() == 0, "the node did not stop cleanly: \(server.log().suffix(600))")
    }

    /// accept4 fails with EMFILE once: accepting pauses until the next
    /// maintenance tick (said once), and the waiting client is then served.
    @Test func anAcceptFailurePausesAndResumes() throws {
        let server = try Self.startNode(faults: "accept=EMFILE@2")
        defer { server.stop() }
        let client = try RESPTestClient(port: server.port)
        #expect(try client.command("PING") == .simple("PONG"))
        let log = server.log()
        #expect(log.contains("cannot accept client connections"))
        #expect(log.contains("accepting client connections again"))
    }
}

enum KernelFaultVariable {
    static let name = "AEGISKV_KERNEL_FAULTS"
}
