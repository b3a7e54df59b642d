#!/usr/bin/env python3
"""A second implementation of docs/placement.md, written from the document,
checked against the golden vectors. XXH64 comes from the system's libxxhash
(Debian package libxxhash0), not from AegisKV, so the hash is checked too.

    python3 perf/Placement/check_vectors.py [Tests/AegisClusterTests/Resources/placement-vectors.json]

Prints one line per checked item and exits non-zero on the first mismatch.
"""
import ctypes
import ctypes.util
import json
import struct
import sys

_lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_lib.XXH64.restype = ctypes.c_uint64
_lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def xxh64(data: bytes) -> int:
    return _lib.XXH64(data, len(data), 0)


def node_point_bytes(name: str, vnode: int) -> bytes:
    return name.encode("utf-8") + b"#" + str(vnode).encode("ascii")


def shard_point(shard: int, num_shards: int) -> int:
    return (shard << 64) // num_shards


def owners(members, num_shards, vnodes, rf):
    members = sorted(set(members), key=lambda m: m.encode("utf-8"))
    ring = sorted(
        (xxh64(node_point_bytes(m, v)), m.encode("utf-8"), m)
        for m in members
        for v in range(vnodes)
    )
    wanted = min(rf, len(members))
    result = []
    for shard in range(num_shards):
        p = shard_point(shard, num_shards)
        start = next((i for i, e in enumerate(ring) if e[0] >= p), 0)
        found = []
        i = start
        while len(found) < wanted:
            name = ring[i][2]
            if name not in found:
                found.append(name)
            i = (i + 1) % len(ring)
        result.append(found)
    return result


def digest(owner_lists) -> int:
    out = bytearray()
    for shard, names in enumerate(owner_lists):
        out += struct.pack("<II", shard, len(names))
        for name in names:
            b = name.encode("utf-8")
            out += bytes([len(b)]) + b
    return xxh64(bytes(out))


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "Tests/AegisClusterTests/Resources/placement-vectors.json"
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    for v in vectors["nodePoints"]:
        b = node_point_bytes(v["node"], v["virtualNode"])
        assert b.hex() == v["bytesHex"], (v, b.hex())
        assert f"{xxh64(b):016x}" == v["xxh64"], (v, f"{xxh64(b):016x}")
        print(f"node point {v['node']}#{v['virtualNode']}: ok")
    for v in vectors["shardPoints"]:
        assert f"{shard_point(v['shard'], v['numShards']):016x}" == v["point"], v
        print(f"shard point {v['shard']}/{v['numShards']}: ok")
    for m in vectors["maps"]:
        got = owners(m["members"], m["numShards"], m["virtualNodes"], m["replicationFactor"])
        assert got == m["owners"], f"owners differ for {m['members']}"
        assert f"{digest(got):016x}" == m["digest"], f"digest differs for {m['members']}"
        print(f"map {len(m['members'])} members, {m['numShards']} shards: ok")


if __name__ == "__main__":
    main()
