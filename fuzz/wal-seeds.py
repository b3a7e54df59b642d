#!/usr/bin/env python3
"""Writes the seed corpus of the wal-record fuzz target (fuzz/corpus/wal-record).

The seeds follow the record layout of Sources/AegisServer/WAL/WALRecord.swift
(32-byte header: length, CRC32C of bytes 8.., operation, reserved, shard, key
length, version, expiry; then key and value). The fuzz target itself only
calls WALRecord.decode, so when the layout changes, update `record` below and
run this script again: old seeds still run, they just reach less code.
"""
import os
import struct

TABLE = []
for i in range(256):
    crc = i
    for _ in range(8):
        crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    TABLE.append(crc)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def record(operation: int, shard: int, version: int, expiry_ms: int, key: bytes, value: bytes) -> bytes:
    total = 32 + len(key) + len(value)
    body = struct.pack("<BBHIQq", operation, 0, shard, len(key), version, expiry_ms) + key + value
    return struct.pack("<II", total, crc32c(body)) + body


SET, DELETE, FLUSH_SHARD, SNAPSHOT_END = 1, 2, 3, 4
seeds = {
    "set": record(SET, 7, (1 << 48) | 42, 1_900_000_000_000, b"user:1", b"hello"),
    "set-empty-value": record(SET, 255, 1, 0, b"k", b""),
    "delete": record(DELETE, 3, 0, 0, b"user:1", b""),
    "flush-shard": record(FLUSH_SHARD, 12, 0, 0, b"", b""),
    "segment-run": b"".join([
        record(SET, 1, 5, 0, b"a", b"1"),
        record(SET, 2, 6, 1_700_000_000_000, b"bb", b"22" * 40),
        record(DELETE, 1, 0, 0, b"a", b""),
        record(FLUSH_SHARD, 2, 0, 0, b"", b""),
    ]),
    "snapshot-run": record(SET, 0, 9, 0, b"x", b"y") + record(SNAPSHOT_END, 0, 1, 0, b"", b""),
    "torn-tail": record(SET, 4, 8, 0, b"key", b"value") + record(SET, 4, 9, 0, b"key", b"value2")[:20],
}
bad = bytearray(record(SET, 5, 3, 0, b"key", b"value"))
bad[-1] ^= 0x01
seeds["checksum-mismatch"] = bytes(bad)

directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "wal-record")
os.makedirs(directory, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(directory, name), "wb") as file:
        file.write(data)
