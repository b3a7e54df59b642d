"""FLUSHALL ASYNC against a running node, with the Python redis package.

usage: flushall_async_check.py PORT KEYS

Loads KEYS keys, flushes them with FLUSHALL ASYNC and checks that the node
answers at once with an empty keyspace that takes writes, that the freed
entries are reported (INFO lazyfree_pending_objects) and that used_memory
returns to where it was before the load, all before a deadline.
"""
import sys
import time

import redis


def memory(r):
    info = r.info("memory")
    if "lazyfree_pending_objects" not in info:
        raise SystemExit("INFO memory has no lazyfree_pending_objects")
    return info["used_memory"], info["lazyfree_pending_objects"]


def main():
    port, keys = int(sys.argv[1]), int(sys.argv[2])
    r = redis.Redis(port=port)
    other = redis.Redis(port=port)
    baseline, pending = memory(r)
    assert pending == 0, pending
    value = b"v" * 100
    pipe = r.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(b"key:%d" % i, value)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    assert r.dbsize() == keys, r.dbsize()
    deadline = time.monotonic() + 5
    while memory(r)[0] < baseline + keys * 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    loaded, _ = memory(r)
    assert loaded >= baseline + keys * 100, (baseline, loaded)

    assert r.execute_command("FLUSHALL", "ASYNC") in (True, b"OK"), "FLUSHALL ASYNC"
    assert r.dbsize() == 0, "keys left after FLUSHALL ASYNC"
    assert r.get(b"key:1") is None
    assert r.set(b"after", b"1") and other.get(b"after") == b"1", "writes after the flush"
    assert other.ping()

    deadline = time.monotonic() + 10
    used, pending = memory(r)
    while (pending > 0 or used > baseline + 1_000_000) and time.monotonic() < deadline:
        time.sleep(0.05)
        used, pending = memory(r)
    assert pending == 0, f"{pending} entries still pending after 10 s"
    assert used <= baseline + 1_000_000, f"used_memory {used} vs {baseline} before the load"

    # The synchronous forms and a bad argument still behave.
    r.set(b"x", b"1")
    assert r.execute_command("FLUSHALL", "SYNC") in (True, b"OK") and r.dbsize() == 0
    r.set(b"x", b"1")
    assert r.execute_command("FLUSHALL") in (True, b"OK") and r.dbsize() == 0
    try:
        r.execute_command("FLUSHALL", "LATER")
        raise SystemExit("FLUSHALL LATER was accepted")
    except redis.ResponseError as error:
        assert "syntax" in str(error), str(error)
    print(f"loaded {keys} keys: used_memory {baseline} -> {loaded} -> {used} after FLUSHALL ASYNC")
    print("all checks passed")


if __name__ == "__main__":
    main()
