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
///
/// Under `stream_rate_limit_mb` a stream slice of B bytes also holds the
/// next stream slice until B at this reactor's share of the limit has
/// passed since it began (`streamed`); slices of a dropped copy
/// (Reactor+Routing.swift), which send nothing, are not held.
struct StreamSlicePacer {
    static let busyGapNs: Int64 = 200_000
    static let restNs: Int64 = 50_000

    private(set) var lastSliceNs: Int64?
    /// No stream slice before this (0: none held).
    private(set) var streamsHeldUntilNs: Int64 = 0

    func sliceDue(nowNs: Int64, clientEventsReady: Bool) -> Bool {
        guard let lastSliceNs else { return true }
        return nowNs - lastSliceNs >= (clientEventsReady ? Self.busyGapNs : Self.restNs)
    }

    /// Whether the rate limit lets a stream slice start now.
    func streamSliceAllowed(nowNs: Int64) -> Bool {
        nowNs >= streamsHeldUntilNs
    }

    /// How long the loop may sleep before the next slice is due (0: now);
    /// with `streamsOnly` (no other slices waiting), until the rate limit
    /// lets a stream slice go too.
    func restRemainingNs(nowNs: Int64, streamsOnly: Bool = false) -> Int64 {
        guard let lastSliceNs else { return 0 }
        let rest = max(0, lastSliceNs + Self.restNs - nowNs)
        return streamsOnly ? max(rest, streamsHeldUntilNs - nowNs) : rest
    }

    mutating func walked(nowNs: Int64) {
        lastSliceNs = nowNs
    }

    /// A stream slice of `bytes` that began at `startedNs` was sent; at
    /// `bytesPerSecond` (0: no limit) the next may begin once those bytes'
    /// time has passed.
    mutating func streamed(bytes: Int, startedNs: Int64, bytesPerSecond: Int) {
        guard bytesPerSecond > 0 else {
            streamsHeldUntilNs = 0
            return
        }
        streamsHeldUntilNs = startedNs + Int64(bytes) * 1_000_000_000 / Int64(bytesPerSecond)
    }
}
