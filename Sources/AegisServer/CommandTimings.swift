import Synchronization

/// SLOWLOG entries and LATENCY events for the whole node.
///
/// Reactors add to it only when a command was slow (rare by definition),
/// so one lock shared by all of them costs nothing on the common path; the
/// common path only compares a duration with the thresholds.
final class CommandTimings: Sendable {
    struct SlowEntry: Sendable {
        var id: Int
        var unixSeconds: Int
        var microseconds: Int
        /// As Redis keeps them: at most 32 arguments (the last then says how
        /// many more there were), each at most 128 bytes (then how many more).
        var arguments: [[UInt8]]
        var client: String
        var name: String
    }

    struct LatencySample: Sendable {
        var unixSeconds: Int
        var milliseconds: Int
    }

    /// Redis keeps 160 samples per event, at most one per second.
    static let latencySamplesKept = 160
    static let maxArguments = 32
    static let maxArgumentBytes = 128

    private struct State {
        var slow: [SlowEntry] = []  // oldest first
        var nextID = 0
        var latency: [String: (samples: [LatencySample], maxMs: Int)] = [:]
    }

    private let state = Mutex(State())

    func recordSlow(arguments: ArgumentsView, microseconds: Int, unixSeconds: Int, client: String, name: String, keep: Int) {
        guard keep > 0 else { return }
        var kept: [[UInt8]] = []
        let shown = min(arguments.count, Self.maxArguments)
        for i in 0..<shown {
            if i == Self.maxArguments - 1 && arguments.count > Self.maxArguments {
                kept.append(Array("... (\(arguments.count - Self.maxArguments + 1) more arguments)".utf8))
                break
            }
            let bytes = arguments.bytes(i)
            if bytes.count > Self.maxArgumentBytes {
                kept.append(Array(bytes.prefix(Self.maxArgumentBytes)) + Array("... (\(bytes.count - Self.maxArgumentBytes) more bytes)".utf8))
            } else {
                kept.append(Array(bytes))
            }
        }
        state.withLock { state in
            state.slow.append(SlowEntry(id: state.nextID, unixSeconds: unixSeconds, microseconds: microseconds,
                                        arguments: kept, client: client, name: name))
            state.nextID += 1
            if state.slow.count > keep { state.slow.removeFirst(state.slow.count - keep) }
        }
    }

    /// Newest first; `count` < 0 means all.
    func slowEntries(count: Int) -> [SlowEntry] {
        state.withLock { state in
            let newest = state.slow.reversed()
            return count < 0 ? Array(newest) : Array(newest.prefix(count))
        }
    }

    var slowCount: Int { state.withLock { $0.slow.count } }

    func resetSlow() { state.withLock { $0.slow.removeAll() } }

    /// Keeps the slow log within `keep` entries after CONFIG SET slowlog-max-len.
    func trimSlow(keep: Int) {
        state.withLock { state in
            if state.slow.count > keep { state.slow.removeFirst(state.slow.count - keep) }
        }
    }

    func recordLatency(event: String, milliseconds: Int, unixSeconds: Int) {
        state.withLock { state in
            var series = state.latency[event] ?? ([], 0)
            if let last = series.samples.last, last.unixSeconds == unixSeconds {
                series.samples[series.samples.count - 1].milliseconds = max(last.milliseconds, milliseconds)
            } else {
                series.samples.append(LatencySample(unixSeconds: unixSeconds, milliseconds: milliseconds))
                if series.samples.count > Self.latencySamplesKept { series.samples.removeFirst() }
            }
            series.maxMs = max(series.maxMs, milliseconds)
            state.latency[event] = series
        }
    }

    /// (event, time of the latest, latest ms, all-time max ms) per event, by name.
    func latencyLatest() -> [(event: String, unixSeconds: Int, latestMs: Int, maxMs: Int)] {
        state.withLock { state in
            state.latency.keys.sorted().compactMap { event in
                guard let series = state.latency[event], let last = series.samples.last else { return nil }
                return (event, last.unixSeconds, last.milliseconds, series.maxMs)
            }
        }
    }

    func latencyHistory(event: String) -> [LatencySample] {
        state.withLock { $0.latency[event]?.samples ?? [] }
    }

    /// Forgets the named events (all when `events` is empty); returns how many it forgot.
    func resetLatency(events: [String]) -> Int {
        state.withLock { state in
            if events.isEmpty {
                let count = state.latency.count
                state.latency.removeAll()
                return count
            }
            var forgotten = 0
            for event in Set(events) where state.latency.removeValue(forKey: event) != nil { forgotten += 1 }
            return forgotten
        }
    }
}
