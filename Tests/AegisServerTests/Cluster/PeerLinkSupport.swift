@testable import AegisServer
import AegisCluster
import CSupport
import Foundation
import Glibc
import Logging
import Synchronization
import Testing

/// Stands in for the membership state machine under the loop: records what
/// arrives, and on its own timer sends bursts to the addresses a test names.
final class RecordingEngine: ClusterEngine, @unchecked Sendable {
    struct Arrival: Sendable {
        var nodeID: String
        var message: [UInt8]
    }

    let arrivals = Mutex<[Arrival]>([])
    /// (address, message) pairs sent every `burstIntervalMs` while non-empty.
    let bursts = Mutex<[(String, [UInt8])]>([])
    static let burstTimer: UInt64 = 1
    static let burstIntervalMs: Int64 = 5

    func start(nowMs: Int64) -> [ClusterLoopAction] { [.setTimer(id: Self.burstTimer, atMs: nowMs + Self.burstIntervalMs)] }

    func received(_ message: [UInt8], from peer: PeerHello, nowMs: Int64) -> [ClusterLoopAction] {
        arrivals.withLock { $0.append(Arrival(nodeID: peer.nodeID, message: message)) }
        return []
    }

    func timerFired(_ id: UInt64, nowMs: Int64, lateMs: Int64) -> [ClusterLoopAction] {
        var actions: [ClusterLoopAction] = bursts.withLock { $0 }.map { .send(to: $0.0, lane: .control, message: $0.1) }
        actions.append(.setTimer(id: Self.burstTimer, atMs: nowMs + Self.burstIntervalMs))
        return actions
    }

    func linkBroke(address: String, nowMs: Int64) -> [ClusterLoopAction] { [] }
    func seedsChanged(_ seeds: [String], nowMs: Int64) -> [ClusterLoopAction] { [] }
    /// The link tests reload nothing: a call here is a loop bug.
    func timingsChanged(_ timings: MembershipTimings, nowMs: Int64) -> [ClusterLoopAction] {
        Issue.record("the link tests post no timings, yet the loop passed \(timings)")
        return []
    }
    func leave(nowMs: Int64) -> [ClusterLoopAction] { [] }
    func messageType(_ message: [UInt8]) -> String { "test" }
    func contribute(to snapshot: inout ClusterSnapshot) {}

    var arrivalCount: Int { arrivals.withLock { $0.count } }
}

/// Keeps every log message, for "logged at most once" checks.
struct RecordingLogHandler: LogHandler {
    let sink: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        sink.lines.withLock { $0.append("\(event.level) \(event.message)") }
    }
}

final class LogLines: Sendable {
    let lines = Mutex<[String]>([])
    var logger: Logger { Logger(label: "cluster-test") { _ in RecordingLogHandler(sink: self) } }
    func matching(_ text: String) -> [String] { lines.withLock { $0.filter { $0.contains(text) } } }
}

/// A cluster loop on 127.0.0.1 with an ephemeral gossip port, driving a `RecordingEngine`.
final class LoopUnderTest: @unchecked Sendable {
    static let secret = "right-secret"
    let engine = RecordingEngine()
    let board = ClusterBoard()
    let log = LogLines()
    let loop: ClusterLoop<RecordingEngine>

    init(nodeID: String = "under-test", numShards: Int = 256, virtualNodes: Int = 128,
         peerQueueBudgetBytes: Int = ClusterLoopSettings.peerQueueBudgetBytesDefault) throws {
        let (fd, port) = try ClusterLoop<RecordingEngine>.bindGossip(host: "127.0.0.1", port: 0)
        var settings = ClusterLoopSettings(
            nodeID: nodeID, gossipAddress: "127.0.0.1:\(port)", clientAddress: "127.0.0.1:1",
            numShards: numShards, virtualNodes: virtualNodes, authenticator: GossipAuthenticator(secret: Self.secret),
            incarnation: 1)
        settings.peerQueueBudgetBytes = peerQueueBudgetBytes
        loop = try ClusterLoop(settings: settings, listenFD: fd, engine: engine, board: board, logger: log.logger)
        try loop.start()
    }

    var port: UInt16 { UInt16(loop.boundPort) }

    func stop() {
        board.post(.stop)
        loop.join()
    }

    /// Waits until the published snapshot satisfies `condition` (10 s at most).
    @discardableResult
    func waitForSnapshot(_ condition: (ClusterSnapshot) -> Bool) -> ClusterSnapshot {
        let deadline = Date().addingTimeInterval(10)
        var snapshot = board.snapshot
        while !condition(snapshot) && Date() < deadline {
            usleep(5_000)
            snapshot = board.snapshot
        }
        return snapshot
    }
}

/// A blocking TCP client speaking (or abusing) the peer protocol.
final class RawPeer {
    let fd: Int32

    init(port: UInt16, host: String = "127.0.0.1") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = port.bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw HarnessError("connect to \(host):\(port) failed: errno \(errno)") }
    }

    deinit { Glibc.close(fd) }

    /// False once the other side closed or reset the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return false }
            offset += sent
        }
        return true
    }

    func sendFrame(_ payload: [UInt8]) {
        var frame: [UInt8] = []
        appendUInt32(UInt32(payload.count), to: &frame)
        send(frame + payload)
    }

    func hello(secret: String = LoopUnderTest.secret, nodeID: String, numShards: UInt32 = 256) {
        let hello = PeerHello(lane: .control, numShards: numShards, virtualNodes: 128, nodeID: nodeID,
                              gossipAddress: "127.0.0.1:9", clientAddress: "127.0.0.1:10")
        send(hello.frame(GossipAuthenticator(secret: secret)))
    }

    /// True when the other side closes the connection within `seconds`.
    func closedByPeer(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 50) > 0 {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { return true }
            }
        }
        return false
    }
}

/// A listener that accepts one peer connection and then either reads every
/// frame (counting them) or never reads at all.
final class ListeningPeer: @unchecked Sendable {
    let listenFD: Int32
    let port: UInt16
    let framesRead = Atomic<Int>(0)
    let closed = Atomic<Bool>(false)
    private let reads: Bool
    private var thread: pthread_t?

    init(reads: Bool) throws {
        self.reads = reads
        listenFD = aegis_tcp_listen("127.0.0.1", 0, 16, 0)
        guard listenFD >= 0 else { throw HarnessError("listen failed") }
        port = UInt16(aegis_socket_local_port(listenFD))
        if reads {
            thread = try Node.startThread { [self] in readLoop() }
        }
    }

    var address: String { "127.0.0.1:\(port)" }

    private func readLoop() {
        var accepted: Int32 = -1
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while !closed.load(ordering: .relaxed) {
            if accepted < 0 {
                accepted = aegis_tcp_accept(listenFD)
                if accepted < 0 { usleep(1_000); continue }
            }
            let count = aegis_socket_receive(accepted, &buffer, buffer.count)
            if count == 0 { _ = aegis_close(accepted); accepted = -1; pending = []; continue }
            if count < 0 { usleep(500); continue }
            pending += buffer[0..<count]
            var start = 0
            while pending.count - start >= 4 {
                let length = pending[start..<start + 4].reduce(0) { $0 << 8 | Int($1) }
                guard pending.count - start >= 4 + length else { break }
                start += 4 + length
                framesRead.wrappingAdd(1, ordering: .relaxed)
            }
            pending.removeFirst(start)
        }
        if accepted >= 0 { _ = aegis_close(accepted) }
    }

    func stop() {
        closed.store(true, ordering: .relaxed)
        if let thread { pthread_join(thread, nil) }
        _ = aegis_close(listenFD)
    }
}

func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}
