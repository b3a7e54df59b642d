import Glibc

/// One stored key/value: a single malloc'd block.
///
/// Layout (24-byte header, then the key bytes, then the value bytes):
///
///     offset 0   UInt64  version word: epoch index (top 16 bits) | seq low 48 bits
///                        (see `VersionEpochs`, which owns its meaning)
///     offset 8   UInt64  expiry ms (low 48 bits, 0 = none) | key length bits 0..15 (top 16 bits)
///     offset 16  UInt32  position of the entry in its FIFO ring (index into the ring buffer)
///     offset 20  UInt32  bits 0..26 value length, bit 27 key length bit 16,
///                        bit 28 queue (0 = small, 1 = main), bits 29..30 frequency (0...3),
///                        bit 31 far expiry
///     offset 24  key bytes, then value bytes, then (far expiry only) the
///                exact expiry as an unaligned Int64
///
/// Far expiry: 48 bits of unix ms reach the year 10889, but Redis takes
/// any expiry up to 2^63 - 1 ms and answers PEXPIRETIME with it exactly.
/// An expiry of 2^48 - 1 ms or later keeps `farExpiry` (2^48 - 1, still
/// "in the future" for every comparison) in the header, sets bit 31, and
/// keeps the exact value in 8 bytes after the value. Only such entries pay
/// those 8 bytes; every other entry keeps the 24-byte header.
///
/// Why the version takes 8 bytes and not 12: a version that cannot wrap
/// needs 96 bits (see `EntryVersion`), but the term and the top 16 bits of
/// seq are shared by nearly every entry of a shard, so the shard keeps them
/// once in its `VersionEpochs` table and the entry keeps an index to them.
/// With a 28-byte header a 16-byte key and a 32-byte value (76 bytes) took
/// a 96-byte glibc chunk; at 24 bytes they fit an 80-byte one again
/// (perf/memory-per-item measures it).
///
/// Invariants (checked by `ShardState.checkInvariants`):
/// - the block is at least `headerSize + keyCount + valueCount` usable bytes;
/// - the address is 16-byte aligned and below 2^48 (the table packs it into a slot);
/// - keyCount <= `maxKeyBytes`, valueCount <= `maxValueBytes`;
/// - expiry is 0 or in 1 ... 2^48 - 1 (absolute unix ms); it is 2^48 - 1
///   exactly when bit 31 is set, and then the block holds the exact expiry
///   (at least 2^48 - 1) after the value;
/// - the entry's ring (small or main) holds this block's address at `queuePosition`;
/// - the version word is one its shard's `VersionEpochs` handed out and counts.
@usableFromInline
struct Entry: Equatable {
    @usableFromInline let raw: UnsafeMutableRawPointer

    @inline(__always) @usableFromInline
    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    @usableFromInline static let headerSize = 24
    @usableFromInline static let maxKeyBytes = 1 << 16  // 64 KiB
    @usableFromInline static let maxValueBytes = 1 << 26  // 64 MiB
    @usableFromInline static let expiryMask: UInt64 = (1 << 48) - 1
    @usableFromInline static let valueMask: UInt32 = (1 << 27) - 1
    @usableFromInline static let keyHighBit: UInt32 = 1 << 27
    @usableFromInline static let mainBit: UInt32 = 1 << 28
    @usableFromInline static let freqShift: UInt32 = 29
    @usableFromInline static let freqMask: UInt32 = 3 << 29
    @usableFromInline static let farExpiryBit: UInt32 = 1 << 31
    /// The header's expiry for every far expiry (see the layout above).
    @usableFromInline static let farExpiry: UInt64 = expiryMask
    @usableFromInline static let farExpiryBytes = 8

    /// Expiry as the header keeps it: 0 = none, else 1 ... 2^48 - 1, where
    /// 2^48 - 1 stands for every far expiry (`isFar`).
    @inline(__always) @usableFromInline
    static func storedExpiry(_ expiryMs: Int64) -> UInt64 {
        if expiryMs == 0 { return 0 }
        if expiryMs < 0 { return 1 }  // long past: expired
        return Swift.min(UInt64(expiryMs), farExpiry)
    }

    /// True when `expiryMs` needs the 8 bytes after the value.
    @inline(__always) @usableFromInline
    static func isFar(_ expiryMs: Int64) -> Bool { expiryMs >= Int64(farExpiry) }

    /// Bytes of a block holding `keyCount` and `valueCount` bytes.
    @inline(__always) @usableFromInline
    static func blockBytes(keyCount: Int, valueCount: Int, far: Bool) -> Int {
        headerSize &+ keyCount &+ valueCount &+ (far ? farExpiryBytes : 0)
    }

    /// Meaningful only with the shard's `VersionEpochs` (`ShardState.version(of:)`).
    @inline(__always) @usableFromInline
    var versionWord: UInt64 {
        get { raw.load(as: UInt64.self) }
        nonmutating set { raw.storeBytes(of: newValue, as: UInt64.self) }
    }

    @inline(__always) @usableFromInline
    var word1: UInt64 {
        get { raw.load(fromByteOffset: 8, as: UInt64.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 8, as: UInt64.self) }
    }

    @inline(__always) @usableFromInline
    var meta: UInt32 {
        get { raw.load(fromByteOffset: 20, as: UInt32.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 20, as: UInt32.self) }
    }

    @inline(__always) @usableFromInline
    var queuePosition: Int {
        get { Int(raw.load(fromByteOffset: 16, as: UInt32.self)) }
        nonmutating set { raw.storeBytes(of: UInt32(truncatingIfNeeded: newValue), toByteOffset: 16, as: UInt32.self) }
    }

    /// Stored expiry (0 = none).
    @inline(__always) @usableFromInline
    var expiry: UInt64 {
        get { word1 & Entry.expiryMask }
        nonmutating set { word1 = (word1 & ~Entry.expiryMask) | newValue }
    }

    /// The exact expiry in unix ms (0 = none).
    @inline(__always) @usableFromInline
    var expiryMs: Int64 {
        if meta & Entry.farExpiryBit == 0 { return Int64(bitPattern: expiry) }
        return valueBase.loadUnaligned(fromByteOffset: valueCount, as: Int64.self)
    }

    @inline(__always) @usableFromInline
    var hasFarExpiry: Bool { meta & Entry.farExpiryBit != 0 }

    /// Writes `expiryMs` (header and, when far, the 8 bytes after the
    /// value); the block must have room for them (`blockBytes`).
    @inline(__always) @usableFromInline
    func storeExpiry(_ expiryMs: Int64) {
        expiry = Entry.storedExpiry(expiryMs)
        if Entry.isFar(expiryMs) {
            meta |= Entry.farExpiryBit
            valueBase.storeBytes(of: expiryMs, toByteOffset: valueCount, as: Int64.self)
        } else {
            meta &= ~Entry.farExpiryBit
        }
    }

    @inline(__always) @usableFromInline
    func isExpired(_ nowMs: Int64) -> Bool {
        let e = expiry
        return e != 0 && Int64(bitPattern: e) <= nowMs
    }

    @inline(__always) @usableFromInline
    var keyCount: Int {
        Int(truncatingIfNeeded: word1 >> 48) | Int((meta & Entry.keyHighBit) >> 11)
    }

    @inline(__always) @usableFromInline
    var valueCount: Int { Int(meta & Entry.valueMask) }

    @inline(__always) @usableFromInline
    var inMain: Bool {
        get { meta & Entry.mainBit != 0 }
        nonmutating set { meta = newValue ? (meta | Entry.mainBit) : (meta & ~Entry.mainBit) }
    }

    @inline(__always) @usableFromInline
    var frequency: UInt32 {
        get { (meta & Entry.freqMask) >> Entry.freqShift }
        nonmutating set { meta = (meta & ~Entry.freqMask) | (newValue << Entry.freqShift) }
    }

    /// Saturating frequency bump (2 bits).
    @inline(__always) @usableFromInline
    func touch() {
        let m = meta
        if m & Entry.freqMask != Entry.freqMask { meta = m &+ (1 << Entry.freqShift) }
    }

    @inline(__always) @usableFromInline
    var keyBase: UnsafeMutableRawPointer { raw + Entry.headerSize }

    @inline(__always) @usableFromInline
    var valueBase: UnsafeMutableRawPointer { raw + (Entry.headerSize + keyCount) }

    @inline(__always) @usableFromInline
    var key: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: keyBase, count: keyCount) }

    @inline(__always) @usableFromInline
    var value: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: valueBase, count: valueCount) }

    /// Writes the whole header (queue position and frequency start at 0, small queue).
    @inline(__always) @usableFromInline
    func initialize(versionWord: UInt64, expiry: UInt64, keyCount: Int, valueCount: Int) {
        self.versionWord = versionWord
        word1 = expiry | (UInt64(truncatingIfNeeded: keyCount) << 48)
        raw.storeBytes(of: 0, toByteOffset: 16, as: UInt32.self)
        meta = UInt32(truncatingIfNeeded: valueCount) | (UInt32(truncatingIfNeeded: keyCount >> 16) << 27)
    }

    /// Changes the recorded value length (the key length and flags stay).
    @inline(__always) @usableFromInline
    func setValueCount(_ n: Int) {
        meta = (meta & ~Entry.valueMask) | UInt32(truncatingIfNeeded: n)
    }

    /// True when the stored key equals `key`.
    @inline(__always) @usableFromInline
    func keyEquals(_ key: UnsafeRawBufferPointer) -> Bool {
        let n = key.count
        if keyCount != n { return false }
        if n == 0 { return true }
        return memcmp(keyBase, key.baseAddress!, n) == 0
    }

    /// Rehash of the stored key (used on table resize and rare slow paths).
    @inline(__always) @usableFromInline
    var hash: UInt64 { KeyHash.hash(key) }

    @inline(__always) @usableFromInline
    func ref(version: EntryVersion) -> EntryRef {
        EntryRef(key: key, value: value, expiryMs: expiryMs, version: version)
    }
}

/// Read-only view of a stored entry; valid only until the next mutation of
/// the same `ShardStore` (any set/delete/setExpiry/get-that-expires/sweep/
/// removeAll may move or free the block).
public struct EntryRef {
    public var key: UnsafeRawBufferPointer
    public var value: UnsafeRawBufferPointer
    /// Absolute unix ms, 0 = no expiry. An entry is expired when `expiryMs <= nowMs`.
    public var expiryMs: Int64
    public var version: EntryVersion

    @inlinable
    public init(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, expiryMs: Int64, version: EntryVersion) {
        self.key = key
        self.value = value
        self.expiryMs = expiryMs
        self.version = version
    }
}
