import AegisProtocol
import AegisStore

/// One SCAN page put together from every reactor's part.
///
/// A page fills across shards and reactors up to COUNT, as clients expect of
/// a small keyspace (redis-server answers 3 keys in one call, not four calls
/// of which three are empty). Every reactor scans its own shards from the
/// cursor in shard order, at the same time, and answers a SCAN reply whose
/// cursor is where it stopped (0: it has none left). The page's cursor is
/// the lowest such stop; a part's keys from shards at or past that stop's
/// shard are left out, because the next call starts there and would return
/// them again. So a key is returned once per full iteration, as before, and
/// a keyspace that fits in COUNT comes back whole with cursor 0.
struct ScanPage {
    let shardCount: Int
    private(set) var parts: [[UInt8]] = []

    init(shardCount: Int) {
        self.shardCount = shardCount
    }

    mutating func add(_ part: UnsafeRawBufferPointer) {
        parts.append(Array(part))
    }

    /// The merged reply, in SCAN's shape. A part that is not a SCAN reply
    /// (no reactor sends one) answers as an error rather than a wrong page.
    func merged(into out: WireBuffer) {
        var stops: [UInt64] = []
        var pages: [[[UInt8]]] = []
        for part in parts {
            guard let (stop, keys) = Self.parse(part) else {
                RESPWriter.error("ERR internal error: a SCAN part was not a SCAN reply", into: out)
                return
            }
            stops.append(stop)
            pages.append(keys)
        }
        let cursor = stops.filter { $0 != 0 }.min() ?? 0
        let stopShard = cursor == 0 ? shardCount : Int(cursor >> 40)
        // A stop inside a shard is its owner's (only the owner scans it), and
        // the owner returned only keys before it; a stop at a shard's start
        // means that shard is scanned again next call, whoever read it now.
        let stopIsInside = cursor & ((1 << 40) - 1) != 0
        var kept: [[UInt8]] = []
        for keys in pages {
            for key in keys {
                let shard = key.withUnsafeBytes { KeyHash.shard(of: KeyHash.hash($0), shardCount: shardCount) }
                if shard < stopShard || (shard == stopShard && stopIsInside) { kept.append(key) }
            }
        }
        RESPWriter.arrayHeader(2, into: out)
        RESPWriter.bulk(string: String(cursor), into: out)
        RESPWriter.arrayHeader(kept.count, into: out)
        for key in kept { key.withUnsafeBytes { RESPWriter.bulk($0, into: out) } }
    }

    /// (cursor, keys) of a SCAN reply.
    static func parse(_ part: [UInt8]) -> (UInt64, [[UInt8]])? {
        guard let parsed = part.withUnsafeBytes({ try? RESPReplyParser.parse($0) }),
              case .array(let fields) = parsed.0, fields.count == 2,
              case .bulk(let cursorText) = fields[0], let cursor = UInt64(String(decoding: cursorText, as: UTF8.self)),
              case .array(let keys) = fields[1] else { return nil }
        var result: [[UInt8]] = []
        for key in keys {
            guard case .bulk(let bytes) = key else { return nil }
            result.append(bytes)
        }
        return (cursor, result)
    }
}
