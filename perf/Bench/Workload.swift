import AegisTLS
import CSupport
import Glibc

/// The wire protocol a run speaks.
enum WireKind: String, Sendable, CaseIterable {
    case aegis, resp, memcache
}

/// How keys are drawn.
enum KeyPattern: Sendable, Equatable {
    case uniform
    case zipf(Double)
    case sequential

    init?(parsing text: String) {
        if text == "uniform" { self = .uniform; return }
        if text == "sequential" { self = .sequential; return }
        if text.hasPrefix("zipf:"), let theta = Double(text.dropFirst(5)), theta > 0, theta < 1 {
            self = .zipf(theta)
            return
        }
        return nil
    }
}

/// Operation types; indexes into per-op counters and histograms.
enum Op: Int, Sendable, CaseIterable {
    case get = 0, set = 1
    var name: String { self == .get ? "GET" : "SET" }
}

/// Everything a worker thread needs, fixed before the run starts.
struct BenchConfig: Sendable {
    var protocolKind: WireKind
    var addresses: [(host: String, port: String)]
    var threads: Int
    var connections: Int
    var pipeline: Int
    var getWeight: Int
    var setWeight: Int
    var keys: Int
    var keyPattern: KeyPattern
    var zipf: ZipfTable?
    var valueMin: Int
    var valueMax: Int
    var ttlSeconds: Int
    var durationNs: Int64?
    var requests: Int?
    var warmupNs: Int64
    /// Total ops/s across all connections (open loop), nil for closed loop.
    var rate: Double?
    var verify: Bool
    var timeoutNs: Int64
    /// Drawn key number k names key `keyIndices[k]` (--primary-on); nil: key k.
    var keyIndices: [Int]?
    /// Set with --tls: each connection's session is made from it.
    var tls: TLSContext?
}

/// xorshift64*: small, fast, good enough for choosing keys and ops.
struct FastRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    @inline(__always) mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }

    /// Uniform in 0..<bound (bound > 0); the modulo bias is irrelevant at 64 bits.
    @inline(__always) mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// Uniform in [0, 1).
    @inline(__always) mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// Zipf-distributed ranks in 0..<n by the constant-time method of Gray et al.
/// ("Quickly generating billion-record synthetic databases", SIGMOD 1994).
/// zeta(n) is summed once up front; each draw is one `pow`. Rank 0 is the hottest key.
struct ZipfTable: Sendable {
    let n: Int
    let theta: Double
    let zetaN: Double
    let alpha: Double
    let eta: Double
    let halfPowTheta: Double

    init(n: Int, theta: Double) {
        precondition(n >= 1 && theta > 0 && theta < 1)
        self.n = n
        self.theta = theta
        var sum = 0.0
        for i in 1...n { sum += 1.0 / pow(Double(i), theta) }
        zetaN = sum
        let zeta2 = 1.0 + 1.0 / pow(2.0, theta)
        alpha = 1.0 / (1.0 - theta)
        eta = (1.0 - pow(2.0 / Double(n), 1.0 - theta)) / (1.0 - zeta2 / sum)
        halfPowTheta = pow(0.5, theta)
    }

    @inline(__always) func draw(_ u: Double) -> Int {
        let uz = u * zetaN
        if uz < 1.0 { return 0 }
        if uz < 1.0 + halfPowTheta { return Swift.min(1, n - 1) }
        let rank = Int(Double(n) * pow(eta * u - eta + 1.0, alpha))
        return Swift.min(Swift.max(rank, 0), n - 1)
    }
}

/// Keys are `key:` followed by 12 zero-padded decimal digits (16 bytes), written
/// into a caller-owned scratch buffer so the hot loop allocates nothing.
enum KeyFormat {
    static let length = 16
    static let maxKeys = 1_000_000_000_000

    @inline(__always) static func write(_ index: Int, into p: UnsafeMutableRawPointer) {
        p.storeBytes(of: UInt8(ascii: "k"), toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: UInt8(ascii: "e"), toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: UInt8(ascii: "y"), toByteOffset: 2, as: UInt8.self)
        p.storeBytes(of: UInt8(ascii: ":"), toByteOffset: 3, as: UInt8.self)
        var v = index
        var i = length - 1
        while i >= 4 {
            p.storeBytes(of: UInt8(truncatingIfNeeded: 48 + v % 10), toByteOffset: i, as: UInt8.self)
            v /= 10
            i -= 1
        }
    }
}

/// `--verify` values: 16 hex digits of a version, 16 hex digits of a checksum
/// over key, version and length, then filler derived from the checksum. A GET
/// whose value does not check out (another key's value, a truncated or
/// corrupted one) is counted as an error, not as a hit.
enum CheckedValue {
    static let headerLength = 32

    @inline(__always) static func checksum(key: UnsafeRawBufferPointer, version: UInt64, length: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        var v = version
        for _ in 0..<8 { h = (h ^ (v & 0xff)) &* 0x0000_0100_0000_01b3; v >>= 8 }
        var l = UInt64(length)
        for _ in 0..<8 { h = (h ^ (l & 0xff)) &* 0x0000_0100_0000_01b3; l >>= 8 }
        return h
    }

    @inline(__always) static func hexDigit(_ v: UInt64) -> UInt8 {
        v < 10 ? UInt8(48 + v) : UInt8(87 + v)
    }

    @inline(__always) static func storeHex(_ value: UInt64, into p: UnsafeMutableRawPointer, at offset: Int) {
        for i in 0..<16 {
            let nibble = (value >> UInt64((15 - i) * 4)) & 0xf
            p.storeBytes(of: hexDigit(nibble), toByteOffset: offset + i, as: UInt8.self)
        }
    }

    @inline(__always) static func loadHex(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt64? {
        var value: UInt64 = 0
        for i in 0..<16 {
            let c = bytes[offset + i]
            let nibble: UInt64
            switch c {
            case 48...57: nibble = UInt64(c - 48)
            case 97...102: nibble = UInt64(c - 87)
            default: return nil
            }
            value = value << 4 | nibble
        }
        return value
    }

    @inline(__always) static func filler(_ sum: UInt64) -> UInt8 { UInt8(97 + sum % 26) }

    /// Writes a checked value of `length` (>= headerLength) bytes into `p`.
    static func fill(_ p: UnsafeMutableRawPointer, length: Int, key: UnsafeRawBufferPointer, version: UInt64) {
        let sum = checksum(key: key, version: version, length: length)
        storeHex(version, into: p, at: 0)
        storeHex(sum, into: p, at: 16)
        var c = Int(sum % 26)
        for i in headerLength..<length {
            p.storeBytes(of: UInt8(97 + c), toByteOffset: i, as: UInt8.self)
            c = c == 25 ? 0 : c + 1
        }
    }

    /// True when `value` is a checked value written for `key`.
    static func check(_ value: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer) -> Bool {
        guard value.count >= headerLength,
            let version = loadHex(value, at: 0), let stored = loadHex(value, at: 16),
            stored == checksum(key: key, version: version, length: value.count)
        else { return false }
        var c = Int(stored % 26)
        for i in headerLength..<value.count {
            if value[i] != UInt8(97 + c) { return false }
            c = c == 25 ? 0 : c + 1
        }
        return true
    }
}

@inline(__always) func monotonicNs() -> Int64 { aegis_monotonic_ns() }
