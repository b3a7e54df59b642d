/// When a reactor walks the next slice of a shard stream: a time budget, so
/// that the walk never becomes a burst of continuous CPU.
///
/// Why: with slices granted in advance (a window per stream, several streams)
/// a reactor that walked whenever it held credit never slept while a stream
/// ran. On cores shared with other busy threads such a reactor used up its
/// scheduler share and was preempted; a GET that arrived meanwhile waited
/// for its next turn, tens of milliseconds (perf/README.md, perf/shard-stream).
/// A reactor that sleeps between slices is instead woken at once when a
/// request arrives, and reads it after at most one slice.
///
/// The rule, one slice per loop pass at most:
///   - with client sockets ready in this pass, a slice only if `busyGapNs`
///     passed since the last: the clients' requests come first, and the
///     stream still gets about one slice per `busyGapNs`;
///   - otherwise a slice once `restNs` passed since the last; until then the
///     loop sleeps in epoll for what remains of the rest (`restRemainingNs`),
///     not a poll, so the core goes to whoever needs it and a request that
///     arrives during the rest is read at once.
/// The first slice of a reactor is due at once.
struct StreamSlicePacer {
    static let busyGapNs: Int64 = 200_000
    static let restNs: Int64 = 50_000

    private(set) var lastSliceNs: Int64?

    func sliceDue(nowNs: Int64, clientEventsReady: Bool) -> Bool {
        guard let lastSliceNs else { return true }
        return nowNs - lastSliceNs >= (clientEventsReady ? Self.busyGapNs : Self.restNs)
    }

    /// How long the loop may sleep before the next slice is due (0: now).
    func restRemainingNs(nowNs: Int64) -> Int64 {
        guard let lastSliceNs else { return 0 }
        return max(0, lastSliceNs + Self.restNs - nowNs)
    }

    mutating func walked(nowNs: Int64) {
        lastSliceNs = nowNs
    }
}
