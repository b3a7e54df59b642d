import AegisProtocol
import CSupport
import Synchronization

/// The label space of the per-command metrics: every RESP command by its
/// lower-case name (id = `RESPCommand.rawValue`, 0 = "unknown"), then the
/// binary-only commands. A binary GET, SET, DEL, PING or AUTH counts under
/// the RESP command of the same name.
public enum CommandMetricsLayout {
    public static let names: [String] = RESPCommand.allCases.map(\.name) + ["stats"]
    static let binaryStatsID = RESPCommand.allCases.count
    /// Latency is kept per family: reads, writes, and everything else
    /// (connection and server commands).
    public static let familyNames = ["read", "write", "other"]
    static let families: [UInt8] = RESPCommand.allCases.map { command -> UInt8 in
        if command.isWrite { return 1 }
        switch command {
        case .get, .mget, .exists, .ttl, .pttl, .strlen, .type, .scan, .dbsize: return 0
        default: return 2
        }
    } + [2]
    /// Upper bounds of the latency buckets in nanoseconds (a last, +Inf
    /// bucket follows): fixed and few, so publishing them stays cheap.
    public static let bucketBoundsNs: [Int64] = [
        50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 50_000_000, 250_000_000,
    ]
    public static var bucketCount: Int { bucketBoundsNs.count + 1 }

    /// Metric id of a binary command code.
    static func binaryID(_ code: UInt8) -> Int {
        switch BinaryCommand(rawValue: code) {
        case .get: return Int(RESPCommand.get.rawValue)
        case .set: return Int(RESPCommand.set.rawValue)
        case .del: return Int(RESPCommand.del.rawValue)
        case .ping: return Int(RESPCommand.ping.rawValue)
        case .auth: return Int(RESPCommand.auth.rawValue)
        case .stats: return binaryStatsID
        default: return 0
        }
    }
}

/// One reactor's per-command counters and latency histograms, in plain
/// memory touched only by that reactor. Published to `PublishedCommandStats`
/// on the maintenance tick (every maintenance_interval), not per loop
/// iteration: there are about 150 of them and scrapes do not need them fresher.
///
/// Latency, and why it is measured per batch: reading the clock per request
/// would cost two vDSO calls per request. Instead the reactor reads the
/// monotonic clock once when a loop iteration has socket events
/// (`batchStartNs`) and once after that iteration has flushed its replies
/// (`closeBatch`), and counts every request dispatched in between with that
/// one duration. So a figure is "time from the start of the batch that read
/// the request to the end of the write that answered it" for requests
/// answered in the same iteration; a request forwarded to another reactor
/// whose reply comes back in a later iteration is counted with the batch
/// that read it, which understates its latency.
///
/// `calls` counts every request read, `errors` every error reply; of those,
/// `rejected` were refused before the command ran (arity, NOAUTH, rate
/// limit, size), which redis-server reports as `rejected_calls` and leaves
/// out of `calls` and `failed_calls`. `timeNs` is what `timed` measured
/// (only while SLOWLOG or LATENCY has a threshold set).
final class CommandMetrics {
    let calls: UnsafeMutablePointer<Int>
    let errors: UnsafeMutablePointer<Int>
    let rejected: UnsafeMutablePointer<Int>
    let timeNs: UnsafeMutablePointer<Int>
    /// INFO errorstats: error replies by their code.
    var errorCodes = ErrorCodeCounts()
    private let familyOf: UnsafeMutablePointer<UInt8>
    private let batchCounts: UnsafeMutablePointer<Int>
    /// families × bucketCount, not cumulative.
    let buckets: UnsafeMutablePointer<Int>
    let sumNs: UnsafeMutablePointer<Int>
    var batchStartNs: Int64 = 0
    var batchRequests = 0

    init() {
        let names = CommandMetricsLayout.names.count
        let families = CommandMetricsLayout.familyNames.count
        calls = .allocate(capacity: names)
        calls.initialize(repeating: 0, count: names)
        errors = .allocate(capacity: names)
        errors.initialize(repeating: 0, count: names)
        rejected = .allocate(capacity: names)
        rejected.initialize(repeating: 0, count: names)
        timeNs = .allocate(capacity: names)
        timeNs.initialize(repeating: 0, count: names)
        familyOf = .allocate(capacity: names)
        familyOf.initialize(from: CommandMetricsLayout.families, count: names)
        batchCounts = .allocate(capacity: families)
        batchCounts.initialize(repeating: 0, count: families)
        buckets = .allocate(capacity: families * CommandMetricsLayout.bucketCount)
        buckets.initialize(repeating: 0, count: families * CommandMetricsLayout.bucketCount)
        sumNs = .allocate(capacity: families)
        sumNs.initialize(repeating: 0, count: families)
    }

    deinit {
        calls.deallocate()
        errors.deallocate()
        rejected.deallocate()
        timeNs.deallocate()
        familyOf.deallocate()
        batchCounts.deallocate()
        buckets.deallocate()
        sumNs.deallocate()
    }

    @inline(__always) func count(_ id: Int) {
        calls[id] &+= 1
        batchCounts[Int(familyOf[id])] &+= 1
        batchRequests &+= 1
    }

    /// Counts `reply`, one whole error reply, against command `id` and
    /// under its error code.
    @inline(__always) func countError(_ id: Int, reply: UnsafeRawBufferPointer, wire: WireKind) {
        errors[id] &+= 1
        errorCodes.count(ErrorCodeCounts.code(ofErrorReply: reply, wire: wire))
    }

    @inline(__always) func addTime(_ id: Int, ns: Int64) {
        timeNs[id] &+= Int(max(ns, 0))
    }

    /// CONFIG RESETSTAT: every count back to zero.
    func reset() {
        let names = CommandMetricsLayout.names.count
        let families = CommandMetricsLayout.familyNames.count
        calls.update(repeating: 0, count: names)
        errors.update(repeating: 0, count: names)
        rejected.update(repeating: 0, count: names)
        timeNs.update(repeating: 0, count: names)
        errorCodes.reset()
        buckets.update(repeating: 0, count: families * CommandMetricsLayout.bucketCount)
        sumNs.update(repeating: 0, count: families)
    }

    /// Adds the batch's requests to the histogram of their family.
    func closeBatch(endNs: Int64) {
        let elapsed = max(endNs - batchStartNs, 0)
        var bucket = 0
        for bound in CommandMetricsLayout.bucketBoundsNs {
            if elapsed <= bound { break }
            bucket += 1
        }
        for family in 0..<CommandMetricsLayout.familyNames.count where batchCounts[family] > 0 {
            let requests = batchCounts[family]
            buckets[family * CommandMetricsLayout.bucketCount + bucket] &+= requests
            sumNs[family] &+= Int(elapsed) &* requests
            batchCounts[family] = 0
        }
        batchRequests = 0
    }
}

/// A reactor's per-command counters as other threads read them.
public final class PublishedCommandStats: Sendable {
    private final class Cell: Sendable {
        let value = Atomic<Int>(0)
    }
    private let calls: [Cell]
    private let errors: [Cell]
    private let rejected: [Cell]
    private let timeNs: [Cell]
    private let buckets: [Cell]
    private let sumNs: [Cell]
    /// Copied only when the reactor counted a new error since the last
    /// publish, so a tick without errors takes no lock.
    private let errorCodes = Mutex<[String: Int]>([:])
    private let errorCodesChange = Atomic<Int>(-1)

    init() {
        calls = CommandMetricsLayout.names.map { _ in Cell() }
        errors = CommandMetricsLayout.names.map { _ in Cell() }
        rejected = CommandMetricsLayout.names.map { _ in Cell() }
        timeNs = CommandMetricsLayout.names.map { _ in Cell() }
        buckets = (0..<(CommandMetricsLayout.familyNames.count * CommandMetricsLayout.bucketCount)).map { _ in Cell() }
        sumNs = CommandMetricsLayout.familyNames.map { _ in Cell() }
    }

    /// Called only by the reactor that owns `metrics`.
    func publish(_ metrics: CommandMetrics) {
        for i in calls.indices {
            calls[i].value.store(metrics.calls[i], ordering: .relaxed)
            errors[i].value.store(metrics.errors[i], ordering: .relaxed)
            rejected[i].value.store(metrics.rejected[i], ordering: .relaxed)
            timeNs[i].value.store(metrics.timeNs[i], ordering: .relaxed)
        }
        for i in buckets.indices { buckets[i].value.store(metrics.buckets[i], ordering: .relaxed) }
        for i in sumNs.indices { sumNs[i].value.store(metrics.sumNs[i], ordering: .relaxed) }
        if errorCodesChange.load(ordering: .relaxed) != metrics.errorCodes.changes {
            let counted = metrics.errorCodes.dictionary()
            errorCodes.withLock { $0 = counted }
            errorCodesChange.store(metrics.errorCodes.changes, ordering: .relaxed)
        }
    }

    public func snapshot() -> CommandStatsSnapshot {
        let bucketCount = CommandMetricsLayout.bucketCount
        return CommandStatsSnapshot(
            calls: calls.map { $0.value.load(ordering: .relaxed) },
            errors: errors.map { $0.value.load(ordering: .relaxed) },
            rejected: rejected.map { $0.value.load(ordering: .relaxed) },
            timeNs: timeNs.map { $0.value.load(ordering: .relaxed) },
            buckets: CommandMetricsLayout.familyNames.indices.map { family in
                (0..<bucketCount).map { buckets[family * bucketCount + $0].value.load(ordering: .relaxed) }
            },
            sumNs: sumNs.map { $0.value.load(ordering: .relaxed) },
            errorCodes: errorCodes.withLock { $0 })
    }
}

/// Per-command counters (indexed like `CommandMetricsLayout.names`),
/// per-family latency buckets (not cumulative; the last is +Inf), and error
/// replies by code.
public struct CommandStatsSnapshot: Sendable, Equatable {
    /// Every request read, rejected ones included.
    public var calls: [Int]
    /// Every error reply, rejected ones included.
    public var errors: [Int]
    /// Refused before the command ran (redis-server's `rejected_calls`).
    public var rejected: [Int]
    public var timeNs: [Int]
    public var buckets: [[Int]]
    public var sumNs: [Int]
    /// Error replies by their first word (`ERR`, `WRONGPASS`, ...).
    public var errorCodes: [String: Int]

    public static var zero: CommandStatsSnapshot {
        let perCommand = CommandMetricsLayout.names.map { _ in 0 }
        return CommandStatsSnapshot(
            calls: perCommand, errors: perCommand, rejected: perCommand, timeNs: perCommand,
            buckets: CommandMetricsLayout.familyNames.map { _ in Array(repeating: 0, count: CommandMetricsLayout.bucketCount) },
            sumNs: CommandMetricsLayout.familyNames.map { _ in 0 }, errorCodes: [:])
    }

    mutating func add(_ other: CommandStatsSnapshot) {
        for i in calls.indices {
            calls[i] += other.calls[i]
            errors[i] += other.errors[i]
            rejected[i] += other.rejected[i]
            timeNs[i] += other.timeNs[i]
        }
        for family in buckets.indices {
            for bucket in buckets[family].indices { buckets[family][bucket] += other.buckets[family][bucket] }
            sumNs[family] += other.sumNs[family]
        }
        errorCodes.merge(other.errorCodes, uniquingKeysWith: +)
    }
}

/// Error replies counted by code, as redis-server 7.0 counts them for INFO
/// errorstats: the code is the reply's first word when a space comes within
/// its first 32 bytes (the `-` included), otherwise `ERR`. A binary error
/// frame carries a status, not a code: it counts as `ERR`.
///
/// Plain memory of one reactor. Codes are kept as bytes so that counting
/// allocates only for a code not seen before; there are at most
/// `maxCodes` (this node's replies use a handful), and an error with a new
/// code past that bound is left out here (still counted in
/// total_error_replies), so a client cannot make the table grow.
struct ErrorCodeCounts {
    static let maxCodes = 128
    private static let searchedBytes = 32
    private static let fallback: [UInt8] = Array("ERR".utf8)
    private var codes: [[UInt8]] = []
    private var counts: [Int] = []
    /// Bumped on every count and reset, so a publisher can tell whether
    /// anything changed since it last looked.
    private(set) var changes = 0

    /// The code of one whole error reply; nil stands for `ERR`.
    static func code(ofErrorReply reply: UnsafeRawBufferPointer, wire: WireKind) -> UnsafeRawBufferPointer.SubSequence? {
        guard wire != .binary, reply.count > 1 else { return nil }
        guard let space = reply.prefix(searchedBytes).firstIndex(of: UInt8(ascii: " ")),
              space > reply.startIndex + 1 else { return nil }
        return reply[(reply.startIndex + 1)..<space]
    }

    mutating func count(_ code: UnsafeRawBufferPointer.SubSequence?) {
        changes &+= 1
        for i in codes.indices where code.map({ codes[i].elementsEqual($0) }) ?? (codes[i] == Self.fallback) {
            counts[i] &+= 1
            return
        }
        guard codes.count < Self.maxCodes else { return }
        codes.append(code.map { Array($0) } ?? Self.fallback)
        counts.append(1)
    }

    mutating func reset() {
        codes.removeAll()
        counts.removeAll()
        changes &+= 1
    }

    func dictionary() -> [String: Int] {
        var counted: [String: Int] = [:]
        for i in codes.indices { counted[String(decoding: codes[i], as: UTF8.self), default: 0] += counts[i] }
        return counted
    }
}

// MARK: - Request-path hooks (kept here so the intake files change by a line each)

extension Reactor {
    /// The rate-limit check for one request: plain memory unless this
    /// reactor's allowance is used up.
    @inline(__always) func admitRequest() -> Bool {
        if rate.admitFromAllowance() { return true }
        return takeRateAllowance()
    }

    @inline(never) private func takeRateAllowance() -> Bool {
        let limit = node.runtime.currentRateLimit
        let granted = node.rateLimiter.take(node.rateLimiter.chunkSize(rate: limit))
        if granted == 0 {
            counters.rateLimited &+= 1
            return false
        }
        rate.grant(granted)
        return true
    }

    /// Runs with publishStats (once per millisecond of the coarse clock while
    /// the loop turns, so at least on every maintenance tick): a new limit (admin endpoint, reload)
    /// applies within about a millisecond; a changed limit drops the
    /// allowance taken under the old one.
    func refreshRateLimit() {
        rate.refresh(rate: node.runtime.currentRateLimit)
    }

    var rateLimitMessage: String {
        "ERR rate limit exceeded (node-wide limit \(node.runtime.currentRateLimit) ops/s); retry later"
    }

    /// True when `reply` (one whole reply) reports an error: a RESP `-...`
    /// line or a binary response with status ERROR.
    @inline(__always) static func isErrorReply(_ reply: UnsafeRawBufferPointer, wire: WireKind) -> Bool {
        switch wire {
        case .binary: return reply.count > 6 && reply[6] == BinaryStatus.error.rawValue
        case .resp2, .resp3: return reply.count > 0 && reply[0] == UInt8(ascii: "-")
        }
    }

    /// `withReply`, counting an error reply against command `id`: the one
    /// place replies written on this reactor are counted as errors.
    @inline(__always) func withCountedReply(_ connection: Connection, _ id: Int, _ body: (WireBuffer) -> Void) {
        let wire = connection.wire ?? .resp2
        withReply(connection) { out in
            let start = out.writeIndex
            body(out)
            guard out.writeIndex > start else { return }
            let reply = UnsafeRawBufferPointer(start: out.storage! + start, count: out.writeIndex - start)
            if Self.isErrorReply(reply, wire: wire) { commandMetrics.countError(id, reply: reply, wire: wire) }
        }
    }

    /// An error written before command `id` ran (arity, NOAUTH, rate limit,
    /// size): redis-server's `rejected_calls`.
    @inline(__always) func withRejectedReply(_ connection: Connection, _ id: Int, _ body: (WireBuffer) -> Void) {
        commandMetrics.rejected[id] &+= 1
        withCountedReply(connection, id, body)
    }

    /// Counts an error in a reply built apart (`out` holds only that reply).
    @inline(__always) func countErrorReply(_ out: WireBuffer, wire: WireKind, id: Int) {
        let reply = out.readableView
        if Self.isErrorReply(reply, wire: wire) { commandMetrics.countError(id, reply: reply, wire: wire) }
    }

    func publishCommandStats() {
        node.commandStats[index].publish(commandMetrics)
    }
}
