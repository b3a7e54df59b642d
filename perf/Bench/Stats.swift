import Histogram
import Synchronization

typealias LatencyHistogram = Histogram<UInt64>

/// 1 µs .. 60 s at 3 significant digits, recorded in microseconds.
@inline(__always) func makeHistogram() -> LatencyHistogram {
    LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
}

@inline(__always) func recordNs(_ ns: Int64, into h: inout LatencyHistogram) {
    let us = UInt64(Swift.max(ns / 1000, 1))
    _ = h.record(Swift.min(us, 60_000_000))
}

/// Counters of one operation type.
struct OpCounters: Sendable {
    /// Replies received in the measured window (hits, misses and errors alike).
    var ops = 0
    var errors = 0
    var misses = 0
    /// Requests that got no reply within `--timeout` (not in `ops`).
    var timeouts = 0
    var histogram = makeHistogram()

    mutating func merge(_ other: OpCounters) {
        ops += other.ops
        errors += other.errors
        misses += other.misses
        timeouts += other.timeouts
        histogram.add(other.histogram)
    }
}

/// What one worker thread hands back at the end.
struct WorkerResult: Sendable {
    var perOp: [OpCounters] = Op.allCases.map { _ in OpCounters() }
    /// Monotonic time of the last measured reply (0 when none).
    var lastReplyNs: Int64 = 0
    var firstError: String?
    /// Error replies by kind: the message with its numbers blanked (shard
    /// numbers, counts), cut at 120 characters.
    var errorKinds: [String: Int] = [:]
    var connectionsLost = 0
    /// Every reply, warm-up included (for client CPU per request).
    var allReplies = 0
}

/// Shared between workers and the progress printer. Workers publish every
/// ~200 ms (not per request), so the lock is never on the hot path.
final class Progress: Sendable {
    let completed = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let timeouts = Atomic<Int>(0)
    let finishedWorkers = Atomic<Int>(0)
    let connected = Atomic<Int>(0)
    /// 0 until every worker is connected; then the common start time, or -1 to abort.
    let startNs = Atomic<Int64>(0)
    let fatal = Mutex<String?>(nil)
    let latency = Mutex<LatencyHistogram>(makeHistogram())
    let results = Mutex<[WorkerResult]>([])

    func reportFatal(_ message: String) {
        fatal.withLock { if $0 == nil { $0 = message } }
    }

    func publish(completed c: Int, errors e: Int, timeouts t: Int, interval: inout LatencyHistogram) {
        if c != 0 { completed.add(c, ordering: .relaxed) }
        if e != 0 { errors.add(e, ordering: .relaxed) }
        if t != 0 { timeouts.add(t, ordering: .relaxed) }
        if interval.totalCount > 0 {
            let copy = interval
            latency.withLock { $0.add(copy) }
            interval.reset()
        }
    }
}
