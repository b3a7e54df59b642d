import AegisConfig
import Glibc
import Histogram

/// Merged results of all workers and their presentation.
struct Report {
    let config: BenchConfig
    var perOp: [OpCounters]
    var total = OpCounters()
    let windowSeconds: Double
    let opsPerSecond: Double
    let connectionsLost: Int
    let firstError: String?
    /// The most frequent kinds of error reply, most frequent first.
    let errorKinds: [(kind: String, count: Int)]
    let clientCPUMicrosPerOp: Double

    init(config: BenchConfig, results: [WorkerResult], measureStartNs: Int64) {
        self.config = config
        var perOp = Op.allCases.map { _ in OpCounters() }
        var lastReply: Int64 = 0
        var lost = 0
        var error: String?
        var kinds: [String: Int] = [:]
        var allReplies = 0
        for r in results {
            for op in Op.allCases { perOp[op.rawValue].merge(r.perOp[op.rawValue]) }
            lastReply = max(lastReply, r.lastReplyNs)
            lost += r.connectionsLost
            allReplies += r.allReplies
            if error == nil { error = r.firstError }
            kinds.merge(r.errorKinds, uniquingKeysWith: +)
        }
        for c in perOp { total.merge(c) }
        self.perOp = perOp
        connectionsLost = lost
        firstError = error
        errorKinds = kinds.sorted { $0.value > $1.value }.prefix(8).map { (kind: $0.key, count: $0.value) }
        windowSeconds = lastReply > measureStartNs ? Double(lastReply - measureStartNs) / 1e9 : 0
        opsPerSecond = windowSeconds > 0 ? Double(total.ops) / windowSeconds : 0
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let cpuMicros = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
        clientCPUMicrosPerOp = allReplies > 0 ? cpuMicros / Double(allReplies) : 0
    }

    static let percentiles: [(String, String, Double)] = [
        ("p50", "p50", 50), ("p90", "p90", 90), ("p99", "p99", 99), ("p99.9", "p99_9", 99.9),
        ("p99.99", "p99_99", 99.99),
    ]

    private func value(_ h: LatencyHistogram, _ p: Double) -> UInt64 { h.totalCount > 0 ? h.valueAtPercentile(p) : 0 }

    func printTable(warmupSeconds: Double) {
        let mode = config.rate.map { "open loop at \(Int($0)) ops/s (latency from intended send time)" }
            ?? "closed loop, pipeline \(config.pipeline)"
        print("aegiskv-bench: \(config.protocolKind.rawValue), \(config.threads) threads, \(config.connections) connections, \(mode)")
        var header = pad("op", 6, left: true) + pad("ops", 11) + pad("errors", 8) + pad("misses", 10) + pad("timeouts", 9)
        for (label, _, _) in Self.percentiles { header += pad(label, 9) }
        header += pad("max", 10) + "   (latencies in us)"
        print(header)
        for (name, c) in zip(Op.allCases.map(\.name) + ["ALL"], perOp + [total]) {
            var line = pad(name, 6, left: true) + pad("\(c.ops)", 11) + pad("\(c.errors)", 8) + pad("\(c.misses)", 10)
                + pad("\(c.timeouts)", 9)
            for (_, _, p) in Self.percentiles { line += pad("\(value(c.histogram, p))", 9) }
            line += pad("\(c.histogram.totalCount > 0 ? c.histogram.max : 0)", 10)
            print(line)
        }
        print("throughput: \(fixed(opsPerSecond, 0)) ops/s over \(fixed(windowSeconds, 3)) s measured"
            + (warmupSeconds > 0 ? " (after \(fixed(warmupSeconds, 1)) s warm-up)" : ""))
        print("client CPU: \(fixed(clientCPUMicrosPerOp, 2)) us per request")
        if connectionsLost > 0 { print("connections lost: \(connectionsLost)") }
        if let firstError { print("first error: \(firstError)") }
    }

    private func opJSON(_ c: OpCounters) -> String {
        var fields = ["\"ops\": \(c.ops)", "\"errors\": \(c.errors)", "\"misses\": \(c.misses)", "\"timeouts\": \(c.timeouts)"]
        for (_, key, p) in Self.percentiles { fields.append("\"\(key)\": \(value(c.histogram, p))") }
        fields.append("\"max\": \(c.histogram.totalCount > 0 ? c.histogram.max : 0)")
        fields.append("\"mean\": \(fixed(c.histogram.totalCount > 0 ? c.histogram.mean : 0, 2))")
        return "{" + fields.joined(separator: ", ") + "}"
    }

    /// The percentile curve of all operations: [percentile, microseconds] pairs.
    private func distribution() -> [(Double, UInt64)] {
        guard total.histogram.totalCount > 0 else { return [] }
        var points: [(Double, UInt64)] = []
        for step in total.histogram.percentiles(ticksPerHalfDistance: 5) {
            points.append((step.percentileLevelIteratedTo, step.value))
            if step.percentileLevelIteratedTo >= 100 { break }
        }
        return points
    }

    func writeJSON(to path: String) throws {
        var text = "{\n"
        text += "  \"protocol\": \"\(config.protocolKind.rawValue)\",\n"
        text += "  \"threads\": \(config.threads),\n  \"connections\": \(config.connections),\n"
        text += "  \"pipeline\": \(config.pipeline),\n"
        text += "  \"rate\": \(config.rate.map { fixed($0, 1) } ?? "null"),\n"
        text += "  \"duration_s\": \(fixed(windowSeconds, 6)),\n"
        text += "  \"ops_per_sec\": \(fixed(opsPerSecond, 1)),\n"
        text += "  \"client_cpu_us_per_op\": \(fixed(clientCPUMicrosPerOp, 3)),\n"
        text += "  \"connections_lost\": \(connectionsLost),\n"
        text += "  \"first_error\": \(firstError.map(JSONString.quoted) ?? "null"),\n"
        text += "  \"error_kinds\": {" + errorKinds.map { "\(JSONString.quoted($0.kind)): \($0.count)" }.joined(separator: ", ") + "},\n"
        text += "  \"ops\": \(total.ops), \"errors\": \(total.errors), \"misses\": \(total.misses), \"timeouts\": \(total.timeouts),\n"
        text += "  \"operations\": {\n"
        text += "    \"get\": \(opJSON(perOp[Op.get.rawValue])),\n"
        text += "    \"set\": \(opJSON(perOp[Op.set.rawValue])),\n"
        text += "    \"all\": \(opJSON(total))\n  },\n"
        text += "  \"percentiles\": [" + distribution().map { "[\(fixed($0.0, 6)), \($0.1)]" }.joined(separator: ", ") + "]\n"
        text += "}\n"
        try writeFile(path, text)
    }

    func writeDistribution(to path: String) throws {
        var text = "# aegiskv-bench latency distribution of all operations, values in microseconds\n"
        total.histogram.outputPercentileDistribution(
            to: &text, outputValueUnitScalingRatio: 1, format: path.hasSuffix(".csv") ? .csv : .plainText)
        try writeFile(path, text)
    }
}

func writeFile(_ path: String, _ text: String) throws {
    guard let file = fopen(path, "w") else {
        throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))")
    }
    var copy = text
    let written = copy.withUTF8 { fwrite($0.baseAddress, 1, $0.count, file) }
    let closed = fclose(file)
    guard written == text.utf8.count && closed == 0 else { throw BenchError("cannot write \(path)") }
}

/// Fixed-point decimal text without Foundation.
func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    let fraction = Int(scaled - Double(whole) * scale)
    let sign = value < 0 && scaled > 0 ? "-" : ""
    if decimals == 0 { return sign + "\(whole)" }
    let digits = String(fraction)
    return sign + "\(whole)." + String(repeating: "0", count: decimals - digits.count) + digits
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return left ? s + fill : fill + s
}
