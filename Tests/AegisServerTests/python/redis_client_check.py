"""Drives a running aegiskv node with the Python `redis` package (a real
client nobody on this project wrote). Exits non-zero on the first mismatch.

usage: python3 redis_client_check.py PORT
"""
import sys
import time

import redis


def check(label, got, expected):
    if got != expected:
        print(f"FAIL {label}: got {got!r}, expected {expected!r}")
        sys.exit(1)


def main():
    port = int(sys.argv[1])
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    check("ping", r.ping(), True)
    r.flushall()
    check("dbsize empty", r.dbsize(), 0)

    check("set", r.set("k1", "v1"), True)
    check("get", r.get("k1"), b"v1")
    check("get missing", r.get("nope"), None)
    check("set nx existing", r.set("k1", "x", nx=True), None)
    check("set xx missing", r.set("k2", "x", xx=True), None)
    check("set get", r.set("k1", "v2", get=True), b"v1")
    check("set ex", r.set("ttl1", "v", ex=100), True)
    ttl = r.ttl("ttl1")
    check("ttl range", 98 <= ttl <= 100, True)
    check("pttl range", 97000 <= r.pttl("ttl1") <= 100000, True)
    check("set keepttl", r.set("ttl1", "w", keepttl=True), True)
    check("keepttl kept", r.ttl("ttl1") > 0, True)
    check("persist", r.persist("ttl1"), True)
    check("ttl none", r.ttl("ttl1"), -1)
    check("ttl missing", r.ttl("missing"), -2)
    check("set px", r.set("px", "v", px=150), True)
    time.sleep(0.4)
    check("expired", r.get("px"), None)
    check("exat", r.set("exat", "v", exat=int(time.time()) + 50), True)
    check("exat ttl", 48 <= r.ttl("exat") <= 50, True)

    check("getdel", r.getdel("k1"), b"v2")
    check("getdel gone", r.get("k1"), None)
    r.set("gx", "v")
    check("getex ex", r.getex("gx", ex=30), b"v")
    check("getex ttl", 28 <= r.ttl("gx") <= 30, True)
    check("getex persist", r.getex("gx", persist=True), b"v")
    check("getex persisted", r.ttl("gx"), -1)

    keys = [f"multi:{i}" for i in range(50)]
    check("mset", r.mset({k: f"value-{k}" for k in keys}), True)
    check("mget", r.mget(keys + ["absent"]), [f"value-{k}".encode() for k in keys] + [None])
    check("exists many", r.exists(*keys[:10], "absent"), 10)
    check("delete many", r.delete(*keys[:20], "absent"), 20)
    check("unlink many", r.unlink(*keys[20:30]), 10)
    check("exists after", r.exists(*keys), 20)

    check("expire", r.expire("multi:40", 100), True)
    check("expire nx fails", r.expire("multi:40", 200, nx=True), False)
    check("expire gt", r.expire("multi:40", 300, gt=True), True)
    check("pexpire", r.pexpire("multi:41", 100000), True)
    check("expireat", r.expireat("multi:42", int(time.time()) + 100), True)
    check("expire missing", r.expire("absent", 10), False)
    check("expire past deletes", r.expire("multi:43", -1), True)
    check("deleted", r.exists("multi:43"), 0)

    check("incr new", r.incr("counter"), 1)
    check("incrby", r.incrby("counter", 41), 42)
    check("decr", r.decr("counter"), 41)
    check("decrby", r.decrby("counter", 40), 1)
    r.set("notnum", "abc")
    try:
        r.incr("notnum")
        check("incr non-integer raises", False, True)
    except redis.ResponseError as error:
        check("incr error text", str(error), "value is not an integer or out of range")
    r.set("big", str(2**63 - 1))
    try:
        r.incr("big")
        check("overflow raises", False, True)
    except redis.ResponseError as error:
        check("overflow text", str(error), "increment or decrement would overflow")

    check("append new", r.append("ap", "hello"), 5)
    check("append", r.append("ap", " world"), 11)
    check("append value", r.get("ap"), b"hello world")
    check("strlen", r.strlen("ap"), 11)
    check("strlen missing", r.strlen("absent"), 0)
    check("type", r.type("ap"), b"string")
    check("type none", r.type("absent"), b"none")

    binary = bytes(range(256)) * 4
    r.set(b"bin\x00key", binary)
    check("binary safe", r.get(b"bin\x00key"), binary)

    r.flushall()
    for i in range(1000):
        r.set(f"scan:{i}", i)
    r.set("other", 1)
    seen = set(r.scan_iter(match="scan:*", count=100))
    check("scan all", len(seen), 1000)
    check("scan no others", b"other" in seen, False)
    check("dbsize", r.dbsize(), 1001)

    info = r.info()
    check("info has version", "redis_version" in info, True)
    check("info keyspace", info.get("db0", {}).get("keys"), 1001)
    check("info memory", r.info("memory")["used_memory"] > 0, True)
    check("config get maxmemory", int(r.config_get("maxmemory")["maxmemory"]) > 0, True)
    seconds, micros = r.time()
    check("time", abs(seconds - time.time()) < 5, True)
    check("echo", r.echo("hi"), b"hi")
    check("client setname", r.client_setname("tester"), True)
    check("client getname", r.client_getname(), "tester")
    check("client id", r.client_id() > 0, True)
    check("select 0", r.execute_command("SELECT", 0) in (True, b"OK", "OK"), True)

    try:
        r.execute_command("NOSUCHCMD", "a")
        check("unknown raises", False, True)
    except redis.ResponseError as error:
        check("unknown text", str(error).startswith("unknown command 'NOSUCHCMD'"), True)
    check("connection alive after error", r.ping(), True)
    try:
        r.execute_command("GET")
        check("arity raises", False, True)
    except redis.ResponseError as error:
        check("arity text", str(error), "wrong number of arguments for 'get' command")
    try:
        r.set("x", "y", ex=0)
        check("bad expire raises", False, True)
    except redis.ResponseError as error:
        check("bad expire text", str(error), "invalid expire time in 'set' command")

    # RESP3 through HELLO 3
    r3 = redis.Redis(host="127.0.0.1", port=port, protocol=3, socket_timeout=10)
    check("resp3 ping", r3.ping(), True)
    r3.set("r3", "v")
    check("resp3 get", r3.get("r3"), b"v")
    check("resp3 null", r3.get("absent"), None)
    check("resp3 config map", "maxmemory" in r3.config_get("maxmemory"), True)

    # Pipelines that cross reactors keep their order.
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"p:{i}", i)
        pipe.get(f"p:{i}")
    results = pipe.execute()
    for i in range(2000):
        check(f"pipeline set {i}", results[2 * i], True)
        check(f"pipeline get {i}", results[2 * i + 1], str(i).encode())

    r.flushall()
    check("flushall", r.dbsize(), 0)
    print("python redis client: all checks passed")


if __name__ == "__main__":
    main()
