import Testing
@testable import AegisStore

@Suite struct KeyHashTests {
    func xxh(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { KeyHash.hash($0) } }
    func xxh(_ s: String) -> UInt64 { xxh(Array(s.utf8)) }

    @Test func knownVectors() {
        #expect(xxh("") == 0xEF46_DB37_51D8_E999)
        #expect(xxh("a") == 0xD24E_C4F1_A98C_6E5B)
        #expect(xxh("abc") == 0x44BC_2CF5_AD77_0999)
        // 56 bytes: exercises the 32-byte stripe loop and every tail path. (python xxhash)
        #expect(xxh("The quick brown fox jumps over the lazy dog, twice over.") == 0xFB9F_56CE_D8AD_4FC4)
        // bytes(range(256)) * 4 + b"xyz", 1027 bytes.
        let long = Array((0..<4).flatMap { _ in (0...255).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(xxh(long) == 0xE146_CB31_B65B_C21A)
    }

    /// Every length class (tails of 0..7 bytes, 4-byte step, 32-byte stripes).
    /// Input: bytes (i*7+3) % 256; expected values from python's xxhash.xxh64.
    @Test(arguments: [
        (0, 0xEF46_DB37_51D8_E999 as UInt64), (1, 0x1F25_C8D0_BC1F_4BB6), (3, 0x31D2_363F_52E5_64C9),
        (4, 0x9BB6_4B7D_66EE_9FDA), (5, 0xC760_8EFD_DB70_51FE), (7, 0x9A7B_1499_59CE_60D8),
        (8, 0xDAB9_9D95_C6F9_0092), (9, 0x170B_B6BF_975B_4C02), (12, 0xD52E_4078_33AF_5133),
        (15, 0x1B47_CB82_43CC_8E32), (16, 0x4348_5023_2B78_7BE2), (17, 0x1EFA_7025_F1B9_7A7A),
        (31, 0xA2AA_5F33_CC4A_6119), (32, 0x23C3_C17E_F790_FD97), (33, 0x50A7_CFC7_BA58_8784),
        (35, 0xA5B3_4560_11D2_913B), (40, 0xB620_306B_253D_76B6), (63, 0x5E3E_54B4_31C7_493C),
        (64, 0x0EB6_4B3E_F6EE_B01F), (65, 0xA383_B724_B2BD_12F1), (100, 0xA61F_8D4C_170F_E531),
        (257, 0xB7B6_04F7_E4F8_22FA),
    ])
    func lengthClasses(length: Int, expected: UInt64) {
        let input = (0..<length).map { UInt8(($0 * 7 + 3) % 256) }
        #expect(xxh(input) == expected)
    }

    @Test func hashIgnoresAlignment() {
        let data = Array("xx-the key at an odd offset, long enough for stripes".utf8)
        let direct = xxh(Array(data[3...]))
        let viaSlice = data.withUnsafeBytes { KeyHash.hash(UnsafeRawBufferPointer(rebasing: $0[3...])) }
        #expect(direct == viaSlice)
    }

    @Test func shardIsHashModuloCount() {
        #expect(KeyHash.shard(of: 0xEF46_DB37_51D8_E999, shardCount: 256) == Int((0xEF46_DB37_51D8_E999 as UInt64) % 256))
        #expect(KeyHash.shard(of: 1000, shardCount: 7) == 1000 % 7)
        #expect(KeyHash.shard(of: UInt64.max, shardCount: 1) == 0)
    }

    @Test func versionsOrderByTermThenSeq() {
        #expect(EntryVersion(term: 1, seq: 9) < EntryVersion(term: 2, seq: 1))
        #expect(EntryVersion(term: 2, seq: 1) < EntryVersion(term: 2, seq: 2))
        #expect(EntryVersion.zero < EntryVersion(term: 1, seq: 0))
        #expect(EntryVersion(term: UInt32.max - 1, seq: UInt64.max) < EntryVersion(term: UInt32.max, seq: 0))
    }

    /// Log format 1 packed term (16 bits) and seq (48 bits) in one word.
    @Test func legacyPackedVersionsConvertWhole() {
        #expect(EntryVersion(legacyPacked: (3 << 48) | 77) == EntryVersion(term: 3, seq: 77))
        #expect(EntryVersion(legacyPacked: UInt64.max) == EntryVersion(term: 0xFFFF, seq: (1 << 48) - 1))
        #expect(EntryVersion(legacyPacked: 0) == .zero)
    }
}
