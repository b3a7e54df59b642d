/// Percentiles of a sample, for the simulator's summaries.
public struct Distribution: Sendable {
    public let sorted: [Int64]

    public init(_ values: [Int64]) {
        sorted = values.sorted()
    }

    /// Nearest-rank percentile; nil for an empty sample.
    public func percentile(_ fraction: Double) -> Int64? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count - 1, max(0, rank - 1))]
    }

    public var summary: String {
        guard let median = percentile(0.5), let p99 = percentile(0.99), let maximum = sorted.last,
              let minimum = sorted.first else { return "no samples" }
        return "n=\(sorted.count) min \(minimum) ms, median \(median) ms, p99 \(p99) ms, max \(maximum) ms"
    }
}
