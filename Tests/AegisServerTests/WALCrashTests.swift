import AegisProtocol
import Foundation
import Glibc
import Testing

/// A blocking RESP client for the durability tests: one command or a
/// pipelined window at a time, replies parsed with the project's codec.
final class RESPTestClient: @unchecked Sendable {
    let socket: TestSocket
    private var received: [UInt8] = []

    init(port: UInt16) throws { socket = try TestSocket(port: port) }

    func pipeline(_ commands: [[String]]) throws -> [RESPValue] {
        let buffer = WireBuffer()
        for command in commands { RESPRequestWriter.command(strings: command, into: buffer) }
        try socket.send(buffer.readableArray())
        var replies: [RESPValue] = []
        while replies.count < commands.count {
            var offset = 0
            while replies.count < commands.count,
                  let (value, consumed) = try received.withUnsafeBytes({ try RESPReplyParser.parse(UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
                replies.append(value)
                offset += consumed
            }
            received.removeFirst(offset)
            if replies.count < commands.count {
                let more = try socket.receiveSome()
                if more.isEmpty { throw HarnessError("connection closed") }
                received += more
            }
        }
        return replies
    }

    func command(_ arguments: String...) throws -> RESPValue { try pipeline([arguments])[0] }
}

/// What the writers were told, per key: the last acknowledged value (nil =
/// acknowledged delete or never written) and the values sent after it whose
/// reply never came (any of them may or may not have reached the log).
final class AcknowledgedState: @unchecked Sendable {
    private let lock = NSLock()
    private var acknowledged: [String: String?] = [:]
    private var unacknowledged: [String: [String?]] = [:]

    func sent(_ key: String, _ value: String?) {
        lock.withLock { unacknowledged[key, default: []].append(value) }
    }

    func acknowledged(_ key: String, _ value: String?) {
        lock.withLock {
            acknowledged[key] = value
            unacknowledged[key] = nil
        }
    }

    /// After a restart the unacknowledged writes either happened or not;
    /// whatever the node now holds becomes the new baseline.
    func settle(_ key: String, observed: String?) {
        lock.withLock {
            acknowledged[key] = observed
            unacknowledged[key] = nil
        }
    }

    var keys: [String] { lock.withLock { Array(Set(acknowledged.keys).union(unacknowledged.keys)).sorted() } }

    func allowed(_ key: String) -> [String?] {
        lock.withLock {
            var values: [String?] = []
            if let last = acknowledged[key] { values.append(last) } else { values.append(nil) }
            values += unacknowledged[key] ?? []
            return values
        }
    }

    func lastAcknowledged(_ key: String) -> String?? { lock.withLock { acknowledged[key] } }
}

@Suite(.serialized)
struct WALCrashTests {
    static func walArguments(_ directory: String, mode: String = "fsync", segmentMB: Int = 1) -> [String] {
        ["--wal-mode", mode, "--wal-dir", directory, "--wal-max-size-mb", String(segmentMB)]
    }

    static func temporaryDirectory(_ name: String) -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-\(name)-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func files(in walDirectory: String) -> [String] {
        var names: [String] = []
        for reactor in (try? FileManager.default.contentsOfDirectory(atPath: walDirectory)) ?? [] where reactor.hasPrefix("reactor-") {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: walDirectory + "/" + reactor)) ?? [] {
                names.append(reactor + "/" + name)
            }
        }
        return names.sorted()
    }

    /// Writers until the server dies: each sends windows of 8 distinct keys
    /// (SETs with 2 KiB values, some DELs), records what was acknowledged.
    static func startWriters(port: UInt16, count: Int, cycle: Int, state: AcknowledgedState) -> [Thread] {
        (0..<count).map { writer in
            let thread = Thread {
                guard let client = try? RESPTestClient(port: port) else { return }
                var generator = SystemRandomNumberGenerator()
                var round = 0
                while true {
                    round += 1
                    var keys = Set<Int>()
                    while keys.count < 8 { keys.insert(Int.random(in: 0..<150, using: &generator)) }
                    var commands: [[String]] = []
                    var intents: [(String, String?)] = []
                    for k in keys {
                        let key = "w\(writer):k\(k)"
                        if Int.random(in: 0..<10, using: &generator) == 0 {
                            commands.append(["DEL", key])
                            intents.append((key, nil))
                        } else {
                            let value = "c\(cycle)-r\(round)-" + String(repeating: "v", count: 2048)
                            commands.append(["SET", key, value])
                            intents.append((key, value))
                        }
                    }
                    for (key, value) in intents { state.sent(key, value) }
                    guard let replies = try? client.pipeline(commands) else { return }
                    for (reply, intent) in zip(replies, intents) {
                        if case .error = reply { return }
                        state.acknowledged(intent.0, intent.1)
                    }
                }
            }
            thread.start()
            return thread
        }
    }

    static func verify(port: UInt16, state: AcknowledgedState, context: String) throws -> Int {
        let client = try RESPTestClient(port: port)
        let keys = state.keys
        var checked = 0
        for chunk in stride(from: 0, to: keys.count, by: 200).map({ Array(keys[$0..<min($0 + 200, keys.count)]) }) {
            let replies = try client.pipeline(chunk.map { ["GET", $0] })
            for (key, reply) in zip(chunk, replies) {
                let observed: String? = reply.text
                let allowed = state.allowed(key)
                #expect(allowed.contains(where: { $0 == observed }),
                        "\(context): \(key) holds \(observed.map { String($0.prefix(20)) } ?? "nil"), acknowledged \(String(describing: state.lastAcknowledged(key)).prefix(40))")
                state.settle(key, observed: observed)
                checked += 1
            }
        }
        return checked
    }

    /// kill -9 at random moments, and right when a snapshot file or a new
    /// segment appears: every acknowledged write survives each restart.
    @Test func acknowledgedWritesSurviveKillNine() throws {
        let walDirectory = Self.temporaryDirectory("wal-crash")
        defer { try? FileManager.default.removeItem(atPath: walDirectory) }
        let state = AcknowledgedState()
        var killsDuringSnapshot = 0
        var killsAtRotation = 0
        var randomKills = 0
        var cycle = 0
        while randomKills < 20 || killsDuringSnapshot < 2 || killsAtRotation < 2 {
            cycle += 1
            #expect(cycle < 80, "did not observe kills during snapshots and rotations")
            if cycle >= 80 { break }
            let server = try ServerHarness(arguments: Self.walArguments(walDirectory))
            // Every key acknowledged so far is checked (the count is judged
            // once, at the end: an early cycle killed within 50 ms on a loaded
            // machine may not have had a write acknowledged yet).
            if cycle > 1 { _ = try Self.verify(port: server.port, state: state, context: "restart \(cycle)") }
            let before = Set(Self.files(in: walDirectory))
            let writers = Self.startWriters(port: server.port, count: 4, cycle: cycle, state: state)
            // Alternate: random moments, the instant a snapshot file shows
            // up, the instant a new segment file shows up.
            let mode = randomKills < 20 ? cycle % 3 : (killsDuringSnapshot < 2 ? 1 : 2)
            let deadline = Date().addingTimeInterval(mode == 0 ? Double.random(in: 0.05...0.4) : 3)
            var killedOnEvent = false
            while Date() < deadline {
                if mode != 0 {
                    let now = Self.files(in: walDirectory)
                    if mode == 1 && now.contains(where: { $0.hasSuffix(".tmp") }) { killedOnEvent = true; break }
                    if mode == 2 && now.contains(where: { $0.hasSuffix(".wal") && !before.contains($0) }) { killedOnEvent = true; break }
                    usleep(200)
                } else {
                    usleep(1000)
                }
            }
            kill(server.pid, SIGKILL)
            _ = server.stop(signal: SIGKILL)
            for writer in writers { while writer.isExecuting { usleep(1000) } }
            if mode == 0 { randomKills += 1 }
            if mode == 1 && killedOnEvent { killsDuringSnapshot += 1 }
            if mode == 2 && killedOnEvent { killsAtRotation += 1 }
        }
        let server = try ServerHarness(arguments: Self.walArguments(walDirectory))
        let checked = try Self.verify(port: server.port, state: state, context: "final restart")
        #expect(checked > 100)
        #expect(server.log().contains("write-ahead log replayed"))
        server.stop()
    }
}
