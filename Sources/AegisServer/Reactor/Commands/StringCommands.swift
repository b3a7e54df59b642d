import AegisProtocol
import AegisStore
import Glibc

/// More commands on one string key, each answering as redis-server 7.0's
/// does (t_string.c, object.c), errors included. Run by the shard's owner
/// like every keyed command (`applyKeyed` hands them here).
extension Reactor {
    func applyStringKeyed(_ command: RESPCommand, _ args: ArgumentsView, store: ShardStore, hash: UInt64,
                          version: RESPVersion, into out: WireBuffer) {
        let key = args.bytes(1)
        switch command {
        case .getset:
            // Replies with the old value; the new one has no expiry.
            if let entry = store.get(key, hash: hash, nowMs: now) {
                RESPWriter.bulk(entry.value, into: out)
            } else {
                RESPWriter.null(version, into: out)
            }
            store.set(key, hash: hash, value: args.bytes(2), expiryMs: 0, nowMs: now)
        case .incrbyfloat:
            executeIncrByFloat(args, store: store, hash: hash, into: out)
        case .setrange:
            executeSetRange(args, store: store, hash: hash, into: out)
        default:
            preconditionFailure("\(command) is not a keyed command")
        }
    }

    /// GETRANGE's byte range after Redis's clamping of negative and
    /// too-large offsets (empty when nothing is left).
    static func redisRange(start: Int64, end: Int64, length: Int) -> Range<Int> {
        if start < 0 && end < 0 && start > end { return 0..<0 }
        let count = Int64(length)
        var first = start < 0 ? count + start : start
        var last = end < 0 ? count + end : end
        if first < 0 { first = 0 }
        if last < 0 { last = 0 }
        if last >= count { last = count - 1 }
        if first > last || count == 0 { return 0..<0 }
        return Int(first)..<Int(last + 1)
    }

    /// SETRANGE key offset value: zero-padded overwrite; the expiry stays.
    private func executeSetRange(_ args: ArgumentsView, store: ShardStore, hash: UInt64, into out: WireBuffer) {
        let key = args.bytes(1)
        guard let offset = args.integer(2) else {
            RESPWriter.error("ERR value is not an integer or out of range", into: out)
            return
        }
        guard offset >= 0 else {
            RESPWriter.error("ERR offset is out of range", into: out)
            return
        }
        let patch = args.bytes(3)
        let existing = store.get(key, hash: hash, nowMs: now)
        if patch.isEmpty {
            RESPWriter.integer(existing?.value.count ?? 0, into: out)
            return
        }
        guard offset <= Int64(Self.maxValueLength) - Int64(patch.count) else {
            RESPWriter.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)", into: out)
            return
        }
        let end = Int(offset) + patch.count
        scratch.value.clear()
        if let existing { scratch.value.append(existing.value) }
        if scratch.value.readableBytes < end {
            let padding = end - scratch.value.readableBytes
            let space = scratch.value.writableSpace(minimum: padding)
            space.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: padding)
            scratch.value.commitWrite(padding)
        }
        let combined = scratch.value.readableView
        UnsafeMutableRawPointer(mutating: combined.baseAddress! + Int(offset)).copyMemory(from: patch.baseAddress!, byteCount: patch.count)
        store.set(key, hash: hash, value: combined, expiryMs: existing?.expiryMs ?? 0, nowMs: now)
        RESPWriter.integer(combined.count, into: out)
        scratch.value.releaseIfIdle(keep: 1 << 20)
    }

    /// INCRBYFLOAT in long double, parsed and printed as Redis does
    /// (strtold, "%.17Lf" without trailing zeros), so 10.1 + 0.1 reads back
    /// "10.2" here too.
    private func executeIncrByFloat(_ args: ArgumentsView, store: ShardStore, hash: UInt64, into out: WireBuffer) {
        let key = args.bytes(1)
        let existing = store.get(key, hash: hash, nowMs: now)
        var current: Float80 = 0
        if let existing {
            guard let parsed = RedisLongDouble.parse(existing.value) else {
                RESPWriter.error("ERR value is not a valid float", into: out)
                return
            }
            current = parsed
        }
        guard let increment = RedisLongDouble.parse(args.bytes(2)) else {
            RESPWriter.error("ERR value is not a valid float", into: out)
            return
        }
        let result = current + increment
        guard result.isFinite else {
            RESPWriter.error("ERR increment would produce NaN or Infinity", into: out)
            return
        }
        let text = RedisLongDouble.format(result)
        text.utf8CString.withUnsafeBytes { bytes in
            let digits = UnsafeRawBufferPointer(rebasing: bytes.dropLast())
            store.set(key, hash: hash, value: digits, expiryMs: existing?.expiryMs ?? 0, nowMs: now)
            RESPWriter.bulk(digits, into: out)
        }
    }

    /// OBJECT ENCODING|FREQ|IDLETIME key and MEMORY USAGE key [SAMPLES n],
    /// run by the owner of the key (argument 2). Neither counts as an access.
    func executeKeyIntrospection(_ command: RESPCommand, _ args: ArgumentsView, version: RESPVersion, into out: WireBuffer) {
        let key = args.bytes(2)
        let hash = KeyHash.hash(key)
        guard let store = shards[KeyHash.shard(of: hash, shardCount: shards.count)] else {
            preconditionFailure("a key routed to reactor \(index), which does not own its shard")
        }
        if command == .memory {
            var i = 3
            while i < args.count {
                guard args.matches(i, "SAMPLES"), i + 1 < args.count else {
                    RESPWriter.error("ERR syntax error", into: out)
                    return
                }
                guard let samples = args.integer(i + 1) else {
                    RESPWriter.error("ERR value is not an integer or out of range", into: out)
                    return
                }
                if samples < 0 {
                    RESPWriter.error("ERR syntax error", into: out)
                    return
                }
                i += 2
            }
        }
        guard let facts = store.facts(key, hash: hash, nowMs: now) else {
            RESPWriter.null(version, into: out)
            return
        }
        if command == .memory {
            RESPWriter.integer(facts.bytes, into: out)
        } else if args.matches(1, "ENCODING") {
            RESPWriter.bulk(string: Self.redisEncoding(of: facts.value), into: out)
        } else if args.matches(1, "REFCOUNT") {
            RESPWriter.integer(1, into: out)
        } else if args.matches(1, "FREQ") {
            RESPWriter.integer(facts.frequency, into: out)
        } else {
            RESPWriter.error("ERR An S3-FIFO maxmemory policy is in use, idle time not tracked: OBJECT FREQ gives the access counter (0-3) eviction uses.", into: out)
        }
    }

    /// The encoding redis-server would report for a string it had just
    /// stored with SET: "int" for a canonical 64-bit integer, "embstr" up
    /// to 44 bytes, "raw" beyond. (Redis also reports "raw" for short
    /// strings built by APPEND or SETRANGE; this store keeps no such history.)
    static func redisEncoding(of value: UnsafeRawBufferPointer) -> String {
        if value.count <= 20, parseStrictInteger(value) != nil { return "int" }
        return value.count <= 44 ? "embstr" : "raw"
    }
}

/// Redis's long double text conversions (util.c string2ld / ld2string in
/// human mode), on Float80, which is the C `long double` here.
enum RedisLongDouble {
    /// Redis's MAX_LONG_DOUBLE_CHARS.
    static let maxCharacters = 5 * 1024

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Float80? {
        guard bytes.count > 0 && bytes.count < maxCharacters else { return nil }
        if isspace(Int32(bytes[0])) != 0 { return nil }
        var text = [CChar](repeating: 0, count: bytes.count + 1)
        for i in 0..<bytes.count { text[i] = CChar(bitPattern: bytes[i]) }
        return text.withUnsafeBufferPointer { buffer -> Float80? in
            var end: UnsafeMutablePointer<CChar>? = nil
            errno = 0
            let value = strtold(buffer.baseAddress!, &end)
            guard let end, end.pointee == 0, end - UnsafeMutablePointer(mutating: buffer.baseAddress!) == bytes.count else { return nil }
            if errno == ERANGE && (value.isInfinite || value == 0) { return nil }
            if errno == EINVAL || value.isNaN { return nil }
            return value
        }
    }

    static func format(_ value: Float80) -> String {
        var buffer = [CChar](repeating: 0, count: maxCharacters)
        let capacity = buffer.count
        let length = withVaList([value]) { vsnprintf(&buffer, capacity, "%.17Lf", $0) }
        guard length > 0 && Int(length) < buffer.count else { return "0" }
        var text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }
}
