import Synchronization

/// How late one reactor's loop runs, for Lifeguard's local health: a node
/// whose reactors are starved (the cores are busy, the process is being
/// throttled or swapped) is likely to read its gossip late too, so the
/// cluster loop stretches the node's own timeouts rather than let it accuse
/// healthy peers.
///
/// Measured on the maintenance tick: how long after it was due the tick's
/// work ran. A reactor that sleeps is woken by its timerfd on time (lag near
/// 0); one stuck in a long iteration runs the tick only after it, and the
/// delay is that iteration's length.
///
/// One writer (the reactor), one taker (the cluster loop), any number of
/// readers of `latestMs`:
/// - `peakMs` only grows between takes: the reactor raises it with a
///   compare-and-exchange, the cluster loop swaps in 0. A stall that ends
///   between two takes is still seen by the next one.
/// - Relaxed ordering: the values are independent measurements; nothing
///   else is published through them.
final class ReactorLag: Sendable {
    private let peakMs = Atomic<Int64>(0)
    private let latest = Atomic<Int64>(0)

    /// Reactor thread only, once per maintenance tick.
    func record(lagMs: Int64) {
        assert(lagMs >= 0, "a lag is never negative")
        latest.store(lagMs, ordering: .relaxed)
        var seen = peakMs.load(ordering: .relaxed)
        while lagMs > seen {
            let (exchanged, current) = peakMs.compareExchange(expected: seen, desired: lagMs, ordering: .relaxed)
            if exchanged { break }
            seen = current
        }
    }

    /// Cluster loop only: the worst lag since its previous take.
    func takePeakMs() -> Int64 { peakMs.exchange(0, ordering: .relaxed) }

    /// The lag the last tick measured.
    var latestMs: Int64 { latest.load(ordering: .relaxed) }
}

extension Array where Element == ReactorLag {
    /// The worst lag of any reactor since the previous take (cluster loop only).
    func takeWorstPeakMs() -> Int64 { reduce(0) { Swift.max($0, $1.takePeakMs()) } }
}
