import AegisCluster
import AegisStore
import AegisTLS
import ArgumentParser
import CSupport
import Glibc

extension WireKind: ExpressibleByArgument {}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegiskv-bench",
        abstract: "Load generator for AegisKV, redis-server and memcached (AegisKV binary, RESP, memcached text).",
        discussion: """
            Closed loop by default: every connection keeps --pipeline requests outstanding and latency is \
            reply time minus send time. With --rate the load is open loop: requests are scheduled at fixed \
            intervals per connection and latency is measured from the intended send time, so a stalled \
            server shows in the tail (no coordinated omission). Exit status: 0 on success, 1 on a usage or \
            connection error, 2 when --verify saw errors or timeouts.
            """)

    @Option(name: .customLong("addr"), help: "Server HOST:PORT; repeat to spread connections round-robin.")
    var addresses: [String] = ["127.0.0.1:7700"]

    @Option(name: .customLong("protocol"), help: "aegis | resp | memcache")
    var protocolKind: WireKind = .resp

    @Option(help: "Threads, each with its own epoll loop.")
    var threads: Int = 2

    @Option(help: "TCP connections in total (spread over the threads).")
    var connections: Int = 50

    @Option(help: "Requests outstanding per connection (closed loop).")
    var pipeline: Int = 1

    @Option(help: "GET:SET mix, e.g. 9:1.")
    var ratio: String = "9:1"

    @Option(help: "Number of distinct keys.")
    var keys: Int = 100_000

    @Option(name: .customLong("key-pattern"), help: "uniform | zipf:THETA (0<THETA<1) | sequential")
    var keyPattern: String = "uniform"

    @Option(name: .customLong("value-size"), help: "Value bytes, BYTES or MIN-MAX.")
    var valueSize: String = "32"

    @Option(help: "TTL in seconds for SETs (0: none).")
    var ttl: Int = 0

    @Option(help: "Measured seconds (default 10 unless --requests is given).")
    var duration: Double?

    @Option(help: "Measured requests in total, instead of --duration.")
    var requests: Int?

    @Option(help: "Seconds of load before measuring starts.")
    var warmup: Double = 0

    @Option(help: "Open loop: total requests per second over all connections.")
    var rate: Double?

    @Option(help: "Seconds without a reply after which a request counts as a timeout.")
    var timeout: Double = 5

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(name: .customLong("histogram-file"), help: "Write the latency percentile distribution (µs) to this file (.csv: CSV).")
    var histogramFile: String?

    @Flag(help: "Values carry a checksum of key and version; a GET with a bad value counts as an error.")
    var verify = false

    @Flag(help: "No progress lines on stderr.")
    var quiet = false

    @Option(name: .customLong("primary-on"), help: ArgumentHelp(
        "Only keys whose shard's primary is this node id in the map of --members (forwarding cost: at the owner or not).",
        valueName: "NODE_ID"))
    var primaryOn: String?

    @Option(help: "Comma-separated node ids of the cluster, for --primary-on (num_shards 256, virtual_nodes 128: the defaults).")
    var members: String?

    @Flag(help: "Connect with TLS (a node with tls_enabled, or redis-server's tls-port).")
    var tls = false

    @Option(help: ArgumentHelp("CA certificates (PEM) the server's certificate must be signed by (default: the system's store). Implies --tls.", valueName: "FILE"))
    var cacert: String?

    @Option(help: ArgumentHelp("Client certificate (PEM), for a server that requires one (mTLS). Implies --tls.", valueName: "FILE"))
    var cert: String?

    @Option(name: .customLong("key"), help: ArgumentHelp("Private key (PEM) of --cert (default: the --cert file).", valueName: "FILE"))
    var privateKey: String?

    /// One client context for every connection (made once: loading PEM files per connection would be measured).
    func tlsContext() throws -> TLSContext? {
        guard tls || cacert != nil || cert != nil || privateKey != nil else { return nil }
        if privateKey != nil && cert == nil { throw ValidationError("--key needs --cert") }
        do {
            return try TLSContext(clientTrusting: cacert ?? "", certificate: cert ?? "", key: privateKey ?? cert ?? "")
        } catch {
            throw ValidationError("TLS: \(error.message)")
        }
    }

    func parsedAddresses() throws -> [(host: String, port: String)] {
        try addresses.map { text in
            guard let colon = text.lastIndex(of: ":") else { throw ValidationError("--addr \(text): expected HOST:PORT") }
            var host = String(text[..<colon])
            let port = String(text[text.index(after: colon)...])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, let number = Int(port), (1...65535).contains(number) else {
                throw ValidationError("--addr \(text): expected HOST:PORT with a port in 1...65535")
            }
            return (host, port)
        }
    }

    func parsedRatio() throws -> (Int, Int) {
        let parts = ratio.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let g = Int(parts[0]), let s = Int(parts[1]), g >= 0, s >= 0, g + s > 0,
            g + s <= 1_000_000
        else { throw ValidationError("--ratio \(ratio): expected GET:SET, e.g. 9:1") }
        return (g, s)
    }

    func parsedValueSize() throws -> (Int, Int) {
        let parts = valueSize.split(separator: "-", omittingEmptySubsequences: false)
        let limit = 64 * 1024 * 1024
        if parts.count == 1, let n = Int(parts[0]), n >= 0, n <= limit { return (n, n) }
        if parts.count == 2, let lo = Int(parts[0]), let hi = Int(parts[1]), lo >= 0, lo <= hi, hi <= limit {
            return (lo, hi)
        }
        throw ValidationError("--value-size \(valueSize): expected BYTES or MIN-MAX (at most \(limit))")
    }

    func validate() throws {
        _ = try parsedAddresses()
        _ = try parsedRatio()
        let (minValue, _) = try parsedValueSize()
        guard threads >= 1 && threads <= 1024 else { throw ValidationError("--threads must be in 1...1024") }
        guard connections >= threads else { throw ValidationError("--connections must be at least --threads") }
        guard pipeline >= 1 && pipeline <= 100_000 else { throw ValidationError("--pipeline must be in 1...100000") }
        guard keys >= 1 && keys <= KeyFormat.maxKeys else { throw ValidationError("--keys must be in 1...\(KeyFormat.maxKeys)") }
        guard let pattern = KeyPattern(parsing: keyPattern) else {
            throw ValidationError("--key-pattern \(keyPattern): expected uniform, zipf:THETA with 0<THETA<1, or sequential")
        }
        if case .zipf = pattern, keys > 100_000_000 { throw ValidationError("--key-pattern zipf needs --keys <= 100000000") }
        guard ttl >= 0 else { throw ValidationError("--ttl must not be negative") }
        if duration != nil && requests != nil { throw ValidationError("give --duration or --requests, not both") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        if let requests, requests < 1 { throw ValidationError("--requests must be positive") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        if let rate, !(rate > 0 && rate <= 1e9) { throw ValidationError("--rate must be in (0, 1e9]") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        if verify && minValue < CheckedValue.headerLength {
            throw ValidationError("--verify needs values of at least \(CheckedValue.headerLength) bytes (--value-size)")
        }
    }

    func makeConfig() throws -> BenchConfig {
        let (g, s) = try parsedRatio()
        let (lo, hi) = try parsedValueSize()
        let pattern = KeyPattern(parsing: keyPattern)!
        var zipf: ZipfTable?
        if case .zipf(let theta) = pattern { zipf = ZipfTable(n: keys, theta: theta) }
        let seconds = requests == nil ? (duration ?? 10) : nil
        return BenchConfig(
            protocolKind: protocolKind, addresses: try parsedAddresses(), threads: threads, connections: connections,
            pipeline: pipeline, getWeight: g, setWeight: s, keys: keys, keyPattern: pattern, zipf: zipf,
            valueMin: lo, valueMax: hi, ttlSeconds: ttl, durationNs: seconds.map { Int64($0 * 1e9) },
            requests: requests, warmupNs: Int64(warmup * 1e9), rate: rate, verify: verify,
            timeoutNs: Int64(timeout * 1e9), keyIndices: try ownedKeyIndices(), tls: try tlsContext())
    }

    /// The first --keys key indices whose primary is --primary-on, or nil.
    func ownedKeyIndices() throws -> [Int]? {
        guard let primaryOn else { return nil }
        let ids = (members ?? "").split(separator: ",").compactMap { NodeID(String($0)) }
        guard let owner = NodeID(primaryOn), ids.contains(owner) else {
            throw ValidationError("--primary-on \(primaryOn) must be one of --members \(members ?? "(none)")")
        }
        let map = try ShardMap(members: ids, numShards: 256, virtualNodes: 128, replicationFactor: 1)
        var indices: [Int] = []
        indices.reserveCapacity(keys)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: KeyFormat.length, alignment: 8)
        defer { scratch.deallocate() }
        var index = 0
        while indices.count < keys && index < KeyFormat.maxKeys {
            KeyFormat.write(index, into: scratch)
            let hash = KeyHash.hash(UnsafeRawBufferPointer(start: scratch, count: KeyFormat.length))
            if map.primary(ofShard: KeyHash.shard(of: hash, shardCount: 256)) == owner { indices.append(index) }
            index += 1
        }
        return indices
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        _ = aegis_raise_nofile_limit()
        let config = try makeConfig()
        let progress = Progress()
        var threadsStarted: [pthread_t] = []
        for i in 0..<config.threads {
            threadsStarted.append(try startThread {
                let worker = Worker(index: i, config: config, progress: progress)
                worker.run()
            })
        }
        // Start together once everyone is connected (or give up on the first failure).
        while progress.connected.load(ordering: .acquiring) < config.threads
            && progress.finishedWorkers.load(ordering: .acquiring) == 0
        {
            usleep(1000)
        }
        let failed = progress.fatal.withLock { $0 }
        let startNs = monotonicNs()
        progress.startNs.store(failed == nil ? startNs : -1, ordering: .releasing)
        if failed == nil && !quiet { printProgress(progress, config: config, startNs: startNs) }
        for t in threadsStarted { pthread_join(t, nil) }
        if let message = progress.fatal.withLock({ $0 }) { throw BenchError(message) }
        let results = progress.results.withLock { $0 }
        let report = Report(config: config, results: results, measureStartNs: startNs + config.warmupNs)
        report.printTable(warmupSeconds: warmup)
        if let json { try report.writeJSON(to: json) }
        if let histogramFile { try report.writeDistribution(to: histogramFile) }
        if verify && (report.total.errors > 0 || report.total.timeouts > 0) {
            throw ExitCode(2)
        }
    }

    /// One line a second on stderr until every worker has finished: that
    /// second's throughput, p99 and slowest reply, and the failures so far.
    private func printProgress(_ progress: Progress, config: BenchConfig, startNs: Int64) {
        var lastCompleted = 0
        var lastNs = startNs
        var second = 0
        while progress.finishedWorkers.load(ordering: .acquiring) < config.threads {
            for _ in 0..<20 {
                usleep(50_000)
                if progress.finishedWorkers.load(ordering: .acquiring) == config.threads { return }
            }
            second += 1
            let now = monotonicNs()
            let completed = progress.completed.load(ordering: .relaxed)
            // This second's replies alone, so that a stall shows in the second it happened.
            let (p99, slowest) = progress.latency.withLock { histogram in
                defer { histogram.reset() }
                return histogram.totalCount > 0 ? (histogram.valueAtPercentile(99), histogram.max) : (0, 0)
            }
            let rate = Double(completed - lastCompleted) * 1e9 / Double(max(now - lastNs, 1))
            let phase = now < startNs + config.warmupNs ? " (warm-up)" : ""
            writeStderr(
                "[\(second)s] \(Int(rate)) ops/s  p99 \(p99) us  max \(slowest) us  errors \(progress.errors.load(ordering: .relaxed))"
                    + "  timeouts \(progress.timeouts.load(ordering: .relaxed))\(phase)\n")
            lastCompleted = completed
            lastNs = now
        }
    }
}

func writeStderr(_ text: String) {
    var copy = text
    copy.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

/// Runs `body` on a new pthread (Foundation's Thread would pull in all of Foundation).
private final class ThreadBody: @unchecked Sendable {
    // Immutable after init; handed to exactly one thread.
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

func startThread(_ body: @escaping @Sendable () -> Void) throws -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { argument in
        let body = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
        body.body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(box).release()
        throw BenchError("pthread_create failed: \(rc)")
    }
    return thread
}
