import AegisConfig
import CSupport
import Glibc

/// What `POST /admin/wal/truncate` reports.
public struct WALTruncateOutcome: Sendable {
    public var completed: Bool
    public var reactorsDone: Int
    public var reactors: Int
    public var message: String
}

extension NodeContext {
    /// Asks every reactor for a snapshot now (the covered segments are then
    /// deleted) and waits until each has finished one, or `timeoutMs` passed.
    /// Called from the operations thread; reactors pick the request up on
    /// their next maintenance tick.
    public func truncateWAL(timeoutMs: Int64 = 120_000) -> WALTruncateOutcome {
        guard config.walMode != .off else {
            return WALTruncateOutcome(completed: false, reactorsDone: 0, reactors: reactorCount,
                                      message: "wal_mode is off: there is no write-ahead log to truncate")
        }
        // Each reactor answers with a snapshot that started after this
        // request, so it covers every write acknowledged before it.
        let request = walTruncateRequests.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        for reactor in 0..<reactorCount { interconnect.wake(reactor) }
        let deadline = aegis_monotonic_ms_coarse() + timeoutMs
        var done = 0
        while true {
            done = stats.filter { $0.snapshot().walTruncateServed >= request }.count
            if done == reactorCount { break }
            if aegis_monotonic_ms_coarse() >= deadline { break }
            if stats.contains(where: { $0.snapshot().walRefusingWrites > 0 }) {
                return WALTruncateOutcome(completed: false, reactorsDone: done, reactors: reactorCount,
                                          message: "the write-ahead log refuses writes after a disk fault; no snapshot can be taken until it recovers")
            }
            usleep(5_000)
        }
        if done == reactorCount {
            return WALTruncateOutcome(completed: true, reactorsDone: done, reactors: reactorCount,
                                      message: "every reactor wrote a snapshot; the log segments it covers were deleted")
        }
        return WALTruncateOutcome(completed: false, reactorsDone: done, reactors: reactorCount,
                                  message: "timed out waiting for snapshots (\(done) of \(reactorCount) reactors done); they continue in the background")
    }
}
