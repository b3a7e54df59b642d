/// Key hashing for AegisKV.
///
/// The hash is XXH64 with seed 0 over the raw key bytes. It is stable: every
/// node, every build and every architecture computes the same value for the
/// same key, so it is the product's documented hash and may be used for shard
/// routing across a cluster. Do not change it without a data migration.
///
/// Bit usage of the 64-bit hash inside AegisKV (kept disjoint on purpose):
/// - `hash % shardCount` picks the shard (low bits when shardCount is a power of two);
/// - the top bits pick the home slot of the per-shard table (order-preserving,
///   see `ShardState`), and the top 40 bits are the scan cursor space;
/// - bits 16..31 are the 16-bit tag kept next to each entry pointer;
/// - bits 32..63 are the ghost-queue fingerprint of the S3-FIFO eviction.
public enum KeyHash {
    @usableFromInline static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    @usableFromInline static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    @usableFromInline static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    @usableFromInline static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    @usableFromInline static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    /// XXH64 of the key bytes, seed 0. Stable, every node computes the same:
    /// this is the product's documented hash.
    @inlinable
    public static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        guard let base = key.baseAddress, key.count > 0 else {
            return avalanche(p5)  // seed 0 + P5, length 0
        }
        return hash(base, key.count)
    }

    /// hash % UInt64(shardCount)
    @inlinable @inline(__always)
    public static func shard(of hash: UInt64, shardCount: Int) -> Int {
        precondition(shardCount > 0, "shardCount must be positive")
        return Int(truncatingIfNeeded: hash % UInt64(truncatingIfNeeded: shardCount))
    }

    @inlinable @inline(__always)
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 {
        (x << r) | (x >> (64 &- r))
    }

    @inlinable @inline(__always)
    static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inlinable @inline(__always)
    static func mergeRound(_ acc: UInt64, _ val: UInt64) -> UInt64 {
        (acc ^ round(0, val)) &* p1 &+ p4
    }

    @inlinable @inline(__always)
    static func avalanche(_ h0: UInt64) -> UInt64 {
        var h = h0
        h ^= h >> 33
        h = h &* p2
        h ^= h >> 29
        h = h &* p3
        h ^= h >> 32
        return h
    }

    @inlinable @inline(__always)
    static func read64(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inlinable @inline(__always)
    static func read32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    @inlinable
    static func hash(_ p: UnsafeRawPointer, _ length: Int) -> UInt64 {
        var offset = 0
        var h: UInt64
        if length >= 32 {
            var v1 = p1 &+ p2
            var v2 = p2
            var v3: UInt64 = 0
            var v4: UInt64 = 0 &- p1
            let limit = length - 32
            repeat {
                v1 = round(v1, read64(p, offset))
                v2 = round(v2, read64(p, offset + 8))
                v3 = round(v3, read64(p, offset + 16))
                v4 = round(v4, read64(p, offset + 24))
                offset += 32
            } while offset <= limit
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = mergeRound(h, v1)
            h = mergeRound(h, v2)
            h = mergeRound(h, v3)
            h = mergeRound(h, v4)
        } else {
            h = p5
        }
        h = h &+ UInt64(truncatingIfNeeded: length)
        while offset + 8 <= length {
            h ^= round(0, read64(p, offset))
            h = rotl(h, 27) &* p1 &+ p4
            offset += 8
        }
        if offset + 4 <= length {
            h ^= read32(p, offset) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            offset += 4
        }
        while offset < length {
            h ^= UInt64(p.load(fromByteOffset: offset, as: UInt8.self)) &* p5
            h = rotl(h, 11) &* p1
            offset += 1
        }
        return avalanche(h)
    }
}
