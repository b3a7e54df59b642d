#include "CSupport.h"

// CRC32C (Castagnoli), the checksum of every WAL record and snapshot entry.
// In C because the SSE4.2 crc32 instruction is an intrinsic Swift cannot
// reach; the table path covers CPUs without it and is the reference the
// instruction path is tested against.

static uint32_t table[256];
static int table_ready;

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        table[i] = crc;
    }
    table_ready = 1;
}

uint32_t aegis_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    if (!table_ready) build_table();
    const uint8_t *bytes = data;
    crc = ~crc;
    while (length--) crc = table[(crc ^ *bytes++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *bytes, size_t length) {
    uint64_t value = ~crc & 0xFFFFFFFFu;
    while (length >= 8) {
        uint64_t word;
        __builtin_memcpy(&word, bytes, 8);
        value = __builtin_ia32_crc32di(value, word);
        bytes += 8;
        length -= 8;
    }
    uint32_t narrow = (uint32_t)value;
    while (length--) narrow = __builtin_ia32_crc32qi(narrow, *bytes++);
    return ~narrow;
}
#endif

uint32_t aegis_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    static int has_sse42 = -1;
    if (has_sse42 < 0) has_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (has_sse42) return crc32c_sse42(crc, data, length);
#endif
    return aegis_crc32c_portable(crc, data, length);
}
