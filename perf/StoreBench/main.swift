// aegiskv-store-bench: store-level benchmarks for AegisStore.
//
//   aegiskv-store-bench hit-ratio [--keys 1000000] [--requests 10000000] [--cache-percent 10] [--seed N]
//       Replays a seeded Zipf(0.99) trace through a real ShardStore whose
//       MemoryLedger limit holds about cache-percent of the keys (get; on miss
//       set) and through an exact LRU simulator of the same capacity, and
//       prints the hit ratio of each.
//
//   aegiskv-store-bench bytes-per-item [--items 1000000]
//       Inserts items with 16-byte keys and 32-byte values into 256 shards
//       sharing one ledger (like one node) and prints the RSS growth per item,
//       the ledger's bytes per item, and their ratio.
//
//   aegiskv-store-bench growth-stall [--keys 5000000] [--value-bytes 32] [--pin-mmap-threshold 1]
//       Inserts keys into ONE shard, timing every insert with the monotonic
//       clock: the slowest insert is the longest the owning reactor would be
//       blocked by the table's growth. Prints the slowest inserts, the
//       quantiles, and the same for deleting every key again (shrinking).

import AegisStore
import Foundation

struct Options {
    var values: [String: Int] = [:]

    init(_ args: ArraySlice<String>) {
        var i = args.startIndex
        while i < args.endIndex {
            let name = args[i]
            guard name.hasPrefix("--"), i + 1 < args.endIndex, let v = Int(args[i + 1]) else {
                fail("bad argument \(name)")
            }
            values[String(name.dropFirst(2))] = v
            i += 2
        }
    }

    func int(_ name: String, _ defaultValue: Int) -> Int { values[name] ?? defaultValue }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("aegiskv-store-bench: \(message)\n".utf8))
    exit(2)
}

/// SplitMix64: small, seeded, deterministic.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}

/// Writes the 16-byte key "key:" + 12 decimal digits of `id` into `buffer`.
@inline(__always)
func writeKey(_ id: Int, into buffer: UnsafeMutableRawBufferPointer) {
    let prefix: [UInt8] = [0x6B, 0x65, 0x79, 0x3A]  // "key:"
    for i in 0..<4 { buffer[i] = prefix[i] }
    var n = id
    for i in stride(from: 15, through: 4, by: -1) {
        buffer[i] = UInt8(0x30 + n % 10)
        n /= 10
    }
}

func rssBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (Int(fields[1]) ?? 0) * sysconf(Int32(_SC_PAGESIZE))
}

func seconds(_ start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}

// MARK: - hit-ratio

/// Exact LRU over object ids: a dictionary to node indices and a doubly linked list by index.
struct ExactLRU {
    let capacity: Int
    var index: [UInt32: Int32] = [:]
    var keyOf: [UInt32]
    var prev: [Int32]
    var next: [Int32]
    var head: Int32 = -1  // most recent
    var tail: Int32 = -1  // least recent
    var used = 0

    init(capacity: Int) {
        self.capacity = capacity
        keyOf = Array(repeating: 0, count: capacity)
        prev = Array(repeating: -1, count: capacity)
        next = Array(repeating: -1, count: capacity)
        index.reserveCapacity(capacity)
    }

    mutating func unlink(_ n: Int32) {
        let p = prev[Int(n)], x = next[Int(n)]
        if p >= 0 { next[Int(p)] = x } else { head = x }
        if x >= 0 { prev[Int(x)] = p } else { tail = p }
    }

    mutating func pushFront(_ n: Int32) {
        prev[Int(n)] = -1
        next[Int(n)] = head
        if head >= 0 { prev[Int(head)] = n }
        head = n
        if tail < 0 { tail = n }
    }

    /// Returns true on a hit; on a miss inserts the id (evicting the least recent).
    mutating func access(_ id: UInt32) -> Bool {
        if let n = index[id] {
            if n != head {
                unlink(n)
                pushFront(n)
            }
            return true
        }
        let n: Int32
        if used < capacity {
            n = Int32(used)
            used += 1
        } else {
            n = tail
            unlink(n)
            index[keyOf[Int(n)]] = nil
        }
        keyOf[Int(n)] = id
        index[id] = n
        pushFront(n)
        return false
    }
}

/// Zipf(alpha) over 0..<n by inverse CDF.
struct Zipf {
    var cdf: [Double]

    init(n: Int, alpha: Double) {
        cdf = Array(repeating: 0, count: n)
        var sum = 0.0
        for i in 0..<n {
            sum += 1.0 / pow(Double(i + 1), alpha)
            cdf[i] = sum
        }
        for i in 0..<n { cdf[i] /= sum }
    }

    func sample(_ u: Double) -> Int {
        var lo = 0, hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}

func hitRatio(_ options: Options) {
    let keys = options.int("keys", 1_000_000)
    let requests = options.int("requests", 10_000_000)
    let percent = options.int("cache-percent", 10)
    let seed = UInt64(options.int("seed", 20_240_601))
    guard keys > 0, requests > 0, percent > 0, percent <= 100 else { fail("bad options") }
    let capacityItems = max(1, keys * percent / 100)
    let valueBytes = [UInt8](repeating: 0x76, count: 32)
    print("hit-ratio: Zipf(0.99) over \(keys) keys, \(requests) requests, seed \(seed), cache \(percent)% = \(capacityItems) items")

    // The trace, shared by both policies.
    var start = DispatchTime.now()
    let zipf = Zipf(n: keys, alpha: 0.99)
    var rng = SplitMix64(state: seed)
    var trace = [UInt32](repeating: 0, count: requests)
    for i in 0..<requests { trace[i] = UInt32(zipf.sample(rng.unit())) }
    let distinct = Set(trace).count
    print(String(format: "trace generated in %.2f s (%d distinct keys requested)", seconds(start), distinct))

    // Byte limit that holds about capacityItems entries: measured, not guessed.
    let keyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
    defer { keyBuffer.deallocate() }
    let limit: Int
    do {
        let probeLedger = MemoryLedger(limitBytes: 0, evictionRatio: 1)
        let probe = ShardStore(ledger: probeLedger)
        let base = probeLedger.usedBytes
        valueBytes.withUnsafeBytes { v in
            for id in 0..<capacityItems {
                writeKey(id, into: keyBuffer)
                let k = UnsafeRawBufferPointer(keyBuffer)
                probe.set(k, hash: KeyHash.hash(k), value: v, expiryMs: 0, nowMs: 0)
            }
        }
        limit = probeLedger.usedBytes - base
    }
    print("store limit: \(limit) bytes (\(limit / capacityItems) bytes per item incl. table and queue)")

    // S3-FIFO: a real ShardStore.
    start = DispatchTime.now()
    let ledger = MemoryLedger(limitBytes: limit, evictionRatio: 1.0)
    let store = ShardStore(ledger: ledger)
    var s3Hits = 0
    var residentSum = 0
    valueBytes.withUnsafeBytes { v in
        for (i, id) in trace.enumerated() {
            writeKey(Int(id), into: keyBuffer)
            let k = UnsafeRawBufferPointer(keyBuffer)
            let h = KeyHash.hash(k)
            if store.get(k, hash: h, nowMs: 0) != nil {
                s3Hits += 1
            } else {
                store.set(k, hash: h, value: v, expiryMs: 0, nowMs: 0)
            }
            if i & 1023 == 0 { residentSum += store.count }
        }
    }
    let s3Time = seconds(start)
    let st = store.stats
    print(String(format: "S3-FIFO store at the end: %d small + %d main entries, %d ghost; bytes: entries %d, table %d (%d slots), queues %d, ghost %d",
                 st.smallEntries, st.mainEntries, st.ghostEntries, st.entryBytes, st.tableBytes, st.tableSlots, st.queueBytes, st.ghostBytes))
    let s3Resident = residentSum / ((requests + 1023) / 1024)

    // Exact LRU of the same capacity.
    start = DispatchTime.now()
    var lru = ExactLRU(capacity: capacityItems)
    var lruHits = 0
    for id in trace where lru.access(id) { lruHits += 1 }
    let lruTime = seconds(start)

    print("")
    print("policy      hit ratio   mean resident items   run time")
    print(String(format: "S3-FIFO     %8.4f   %19d   %6.2f s   (AegisStore ShardStore, %d evictions)",
                 Double(s3Hits) / Double(requests), s3Resident, s3Time, ledger.evictions))
    print(String(format: "exact LRU   %8.4f   %19d   %6.2f s   (simulator)",
                 Double(lruHits) / Double(requests), capacityItems, lruTime))
}

// MARK: - bytes-per-item

func bytesPerItem(_ options: Options) {
    let items = options.int("items", 1_000_000)
    guard items > 0 else { fail("bad --items") }
    let shardCount = 256
    let ledger = MemoryLedger(limitBytes: 0, evictionRatio: 1)
    let shards = (0..<shardCount).map { _ in ShardStore(ledger: ledger) }
    let keyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
    defer { keyBuffer.deallocate() }
    let value = UnsafeMutableRawBufferPointer.allocate(byteCount: 32, alignment: 8)
    defer { value.deallocate() }
    for i in 0..<32 { value[i] = UInt8(0x61 + i % 26) }

    let ledgerBefore = ledger.usedBytes
    let rssBefore = rssBytes()
    let start = DispatchTime.now()
    for id in 0..<items {
        writeKey(id, into: keyBuffer)
        let k = UnsafeRawBufferPointer(keyBuffer)
        let h = KeyHash.hash(k)
        shards[KeyHash.shard(of: h, shardCount: shardCount)]
            .set(k, hash: h, value: UnsafeRawBufferPointer(value), expiryMs: 0, nowMs: 0)
    }
    let elapsed = seconds(start)
    let rssAfter = rssBytes()
    let ledgerAfter = ledger.usedBytes
    let count = shards.reduce(0) { $0 + $1.count }
    guard count == items else { fail("stored \(count) of \(items) items") }

    let rssGrowth = Double(rssAfter - rssBefore)
    let ledgerGrowth = Double(ledgerAfter - ledgerBefore)
    print("bytes-per-item: \(items) items, 16-byte keys, 32-byte values, \(shardCount) shards on one ledger")
    print(String(format: "insert time            %.2f s (%.0f ns/item)", elapsed, elapsed * 1e9 / Double(items)))
    print(String(format: "RSS growth per item    %.1f B  (%d -> %d bytes)", rssGrowth / Double(items), rssBefore, rssAfter))
    print(String(format: "ledger bytes per item  %.1f B", ledgerGrowth / Double(items)))
    print(String(format: "ledger / RSS growth    %.3f", ledgerGrowth / rssGrowth))
    withExtendedLifetime(shards) {}
}

// MARK: - growth-stall

func nowNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Per-operation durations: the slowest few exactly, the rest in power-of-two buckets.
struct StallRecorder {
    var buckets = [Int](repeating: 0, count: 64)
    var slowest: [(ns: UInt64, op: Int)] = []
    var totalNs: UInt64 = 0
    var count = 0

    mutating func record(_ ns: UInt64, op: Int) {
        buckets[64 - ns.leadingZeroBitCount] += 1
        totalNs += ns
        count += 1
        if slowest.count < 5 || ns > slowest[slowest.count - 1].ns {
            slowest.append((ns, op))
            slowest.sort { $0.ns > $1.ns }
            if slowest.count > 5 { slowest.removeLast() }
        }
    }

    /// Upper bound of the bucket holding quantile q.
    func quantileNs(_ q: Double) -> UInt64 {
        let target = Int((Double(count) * q).rounded(.up))
        var seen = 0
        for (i, n) in buckets.enumerated() {
            seen += n
            if seen >= target { return i == 0 ? 0 : (1 << UInt64(i)) - 1 }
        }
        return 0
    }

    func report(_ name: String) {
        let us = { (ns: UInt64) in String(format: "%.1f", Double(ns) / 1000) }
        print("\(name): \(count) ops, mean \(us(totalNs / UInt64(max(count, 1)))) us")
        print("  quantiles (bucket upper bounds, us): p99 <= \(us(quantileNs(0.99))), p99.99 <= \(us(quantileNs(0.9999))), p99.9999 <= \(us(quantileNs(0.999999)))")
        print("  slowest: " + slowest.map { "\(us($0.ns)) us (op \($0.op))" }.joined(separator: ", "))
        var over = 0
        for i in 21..<64 { over += buckets[i] }  // bucket i holds [2^(i-1), 2^i) ns; 2^20 ns ~ 1 ms
        print("  ops over 1.05 ms: \(over)")
    }
}

/// glibc's mallopt, found at run time (`<malloc.h>` is not in the Glibc module).
func pinMmapThreshold(_ bytes: Int32) {
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "mallopt") else { fail("no mallopt") }
    let M_MMAP_THRESHOLD: Int32 = -3
    let M_MXFAST: Int32 = 1
    _ = unsafeBitCast(symbol, to: Mallopt.self)(M_MMAP_THRESHOLD, bytes)
    _ = unsafeBitCast(symbol, to: Mallopt.self)(M_MXFAST, 0)
}

func growthStall(_ options: Options) {
    let keys = options.int("keys", 5_000_000)
    let valueCount = options.int("value-bytes", 32)
    guard keys > 0, valueCount >= 0 else { fail("bad options") }
    // As the server does at start (StoreAllocator.pinLargeBlockThreshold):
    // large blocks are mappings of their own, and no fast bins.
    // --pin-mmap-threshold 0 keeps glibc's moving threshold.
    if options.int("pin-mmap-threshold", 1) != 0 { pinMmapThreshold(128 * 1024) }
    let ledger = MemoryLedger(limitBytes: 0, evictionRatio: 1)
    let store = ShardStore(ledger: ledger)
    let keyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
    defer { keyBuffer.deallocate() }
    let value = UnsafeMutableRawBufferPointer.allocate(byteCount: max(valueCount, 1), alignment: 8)
    defer { value.deallocate() }
    for i in 0..<value.count { value[i] = UInt8(0x61 + i % 26) }
    let v = UnsafeRawBufferPointer(rebasing: value[0..<valueCount])
    print("growth-stall: \(keys) keys of 16 bytes, \(valueCount)-byte values, one shard")

    var inserts = StallRecorder()
    var peakTableSlots = 0
    for id in 0..<keys {
        writeKey(id, into: keyBuffer)
        let k = UnsafeRawBufferPointer(keyBuffer)
        let h = KeyHash.hash(k)
        let t0 = nowNs()
        store.set(k, hash: h, value: v, expiryMs: 0, nowMs: 0)
        inserts.record(nowNs() - t0, op: id)
    }
    guard store.count == keys else { fail("stored \(store.count) of \(keys) keys") }
    peakTableSlots = store.stats.tableSlots
    inserts.report("insert")
    print("  table at the end: \(peakTableSlots) slots, \(store.stats.tableBytes) bytes")

    var deletes = StallRecorder()
    for id in 0..<keys {
        writeKey(id, into: keyBuffer)
        let k = UnsafeRawBufferPointer(keyBuffer)
        let h = KeyHash.hash(k)
        let t0 = nowNs()
        store.delete(k, hash: h, nowMs: 0)
        deletes.record(nowNs() - t0, op: id)
    }
    guard store.count == 0 else { fail("\(store.count) keys left after deleting all") }
    deletes.report("delete")
    print("  table at the end: \(store.stats.tableSlots) slots")
}

// MARK: - main

enum StoreBench {
    static func main(_ args: [String]) {
        guard args.count >= 2 else {
            fail("usage: aegiskv-store-bench hit-ratio|bytes-per-item|growth-stall [options]")
        }
        let options = Options(args.dropFirst(2))
        switch args[1] {
        case "hit-ratio": hitRatio(options)
        case "bytes-per-item": bytesPerItem(options)
        case "growth-stall": growthStall(options)
        default: fail("unknown subcommand \(args[1])")
        }
    }
}

StoreBench.main(CommandLine.arguments)
