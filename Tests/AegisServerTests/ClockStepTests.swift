import Foundation
import Glibc
import Testing

/// A real node whose wall clock is stepped while it runs, as NTP or an
/// operator's `date -s` does: libfaketime (Debian package `faketime`) is
/// preloaded and reads its offset from a file the test rewrites. The
/// monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as the
/// kernel leaves it alone on a real step.
///
/// Connection timeouts must follow the monotonic clock (a step closes
/// nothing, and a step back does not switch them off), while TTLs follow
/// the wall clock (a key's expiry is an absolute unix time).
@Suite(.serialized)
struct ClockStepTests {
    static let library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

    /// A node under libfaketime and the file that sets its wall-clock offset.
    struct SteppedNode {
        let server: SpawnedNode
        let offsetFile: String

        init(arguments: [String]) throws {
            guard FileManager.default.fileExists(atPath: ClockStepTests.library) else {
                throw HarnessError("libfaketime is missing: run scripts/ensure-deps --test (Debian package faketime)")
            }
            offsetFile = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-clock-\(UUID().uuidString)").path
            try "+0\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
            // Under timeout(1), which forwards SIGTERM to the node and exits
            // with its status: exec'd straight with libfaketime preloaded,
            // the node saw no command-line arguments at all (seen here with
            // libfaketime 0.9.10), while a child of timeout sees them all.
            // It also bounds the node's life if the test dies.
            server = try SpawnedNode(arguments: ["--reactors", "2"] + arguments, launcher: [
                "/usr/bin/env",
                "LD_PRELOAD=" + ClockStepTests.library,
                "FAKETIME_TIMESTAMP_FILE=" + offsetFile,
                // Re-read the offset file at most once a second, not on every clock read.
                "FAKETIME_CACHE_DURATION=1",
                "FAKETIME_DONT_FAKE_MONOTONIC=1",
                "timeout", "300",
            ])
        }

        func step(_ offset: String) throws {
            try (offset + "\n").write(toFile: offsetFile, atomically: true, encoding: .utf8)
        }
    }

    static func integer(_ reply: [UInt8]) -> Int? {
        guard reply.first == UInt8(ascii: ":"), let end = reply.firstIndex(of: 13) else { return nil }
        return Int(String(decoding: reply[1..<end], as: UTF8.self))
    }

    static func command(_ socket: TestSocket, _ text: String) throws -> [UInt8] {
        try socket.send(text)
        return try socket.receive { $0.count >= 2 && $0.suffix(2) == [13, 10] }
    }

    static func ttl(_ socket: TestSocket, _ key: String) throws -> Int? {
        integer(try command(socket, "TTL \(key)\r\n"))
    }

    /// Polls TTL of `key` until `condition` holds (the node has seen the
    /// step); false after a 15 s deadline.
    static func waitForTTL(_ socket: TestSocket, _ key: String, _ condition: (Int) -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let ttl = try ttl(socket, key), condition(ttl) { return true }
            usleep(100_000)
        }
        return false
    }

    @Test func aWallClockStepForwardClosesNoConnectionAndTTLsFollowTheWallClock() throws {
        let node = try SteppedNode(arguments: ["--idle-timeout", "60s", "--read-timeout", "30s", "--write-timeout", "30s"])
        defer { #expect(node.server.stop() == 0) }
        let control = try TestSocket(port: node.server.port)
        let idle = try TestSocket(port: node.server.port)
        #expect(try Self.command(idle, "PING\r\n") == Array("+PONG\r\n".utf8))
        let partial = try TestSocket(port: node.server.port)
        try partial.send("*2\r\n$3\r\nGET\r\n")  // the key's part never comes until the end
        #expect(try Self.command(control, "SET two-hours v EX 7200\r\n") == Array("+OK\r\n".utf8))
        #expect(try Self.command(control, "SET half-hour v EX 1800\r\n") == Array("+OK\r\n".utf8))

        try node.step("+1h")
        // The node has seen the step once a TTL it reports lost an hour.
        #expect(try Self.waitForTTL(control, "two-hours") { $0 <= 3600 })
        // Timeouts are checked once a second: give them two checks after the step.
        usleep(2_500_000)

        #expect(try Self.command(idle, "PING\r\n") == Array("+PONG\r\n".utf8), "the idle connection was closed by the step")
        try partial.send("$3\r\nkey\r\n")
        #expect(try partial.receive { $0.count >= 5 } == Array("$-1\r\n".utf8), "the connection with a partial request was closed by the step")
        // TTLs are absolute wall-clock times: an hour later by the wall clock, a
        // two-hour key has about an hour left and a half-hour key is gone.
        let left = try Self.ttl(control, "two-hours") ?? -99
        #expect(left > 3500 && left <= 3600)
        #expect(try Self.command(control, "GET half-hour\r\n") == Array("$-1\r\n".utf8))
    }

    @Test func aWallClockStepBackwardDoesNotSwitchTimeoutsOff() throws {
        let node = try SteppedNode(arguments: ["--read-timeout", "2s"])
        defer { #expect(node.server.stop() == 0) }
        let control = try TestSocket(port: node.server.port)
        #expect(try Self.command(control, "SET ten-minutes v EX 600\r\n") == Array("+OK\r\n".utf8))
        try node.step("-1h")
        #expect(try Self.waitForTTL(control, "ten-minutes") { $0 > 3600 })
        // Opened after the step: its read timeout is due 2 s later by any clock
        // that does not jump, long before the 15 s this socket waits.
        let partial = try TestSocket(port: node.server.port, timeoutSeconds: 15)
        try partial.send("*2\r\n$3\r\nGET\r\n")
        #expect(partial.waitForClose(), "a read timeout did not fire after the wall clock went back an hour")
    }
}
