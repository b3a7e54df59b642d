"""Rate limiting as a redis-py client sees it.

Usage: rate_limit_check.py CLIENT_PORT HEALTH_URL

Sets a small node-wide limit through the admin endpoint, sends a burst
over it on ONE connection, and checks that the excess gets a clear
"rate limit exceeded" error while the connection stays usable; then lifts
the limit (ops_per_sec=0) and checks that the same connection is served
again. Prints one line per step; exits non-zero on the first failure.
"""
import json
import sys
import time
import urllib.request

import redis

port = int(sys.argv[1])
health = sys.argv[2]


def admin(path):
    request = urllib.request.Request(health + path, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


client = redis.Redis(port=port, single_connection_client=True, socket_timeout=10)
client.set("rl:key", "v")

answer = admin("/admin/rate-limit?ops_per_sec=5&burst=5")
if answer["ops_per_sec"] != 5 or answer["burst"] != 5 or not answer["enabled"]:
    fail("unexpected admin answer %r" % answer)
print("limit set: %r" % answer)

# The reactors pick the new limit up on their next maintenance tick; keep
# sending until the limit shows, within a bound.
limited = []
served = 0
deadline = time.monotonic() + 10
while not limited and time.monotonic() < deadline:
    for _ in range(50):
        try:
            client.get("rl:key")
            served += 1
        except redis.exceptions.ResponseError as error:
            limited.append(str(error))
if not limited:
    fail("no request was refused under a 5 ops/s limit (served %d)" % served)
if not all("rate limit exceeded" in message for message in limited):
    fail("unexpected errors: %r" % sorted(set(limited)))
print("refused %d requests with: %s" % (len(limited), limited[0]))

# Same connection, still open: the next reply is an answer (served or refused), not a reset.
try:
    client.get("rl:key")
except redis.exceptions.ResponseError as error:
    if "rate limit exceeded" not in str(error):
        fail("unexpected error after the burst: %s" % error)
except redis.exceptions.ConnectionError as error:
    fail("connection dropped after being rate limited: %s" % error)

answer = admin("/admin/rate-limit?ops_per_sec=0")
if answer["enabled"]:
    fail("limit still enabled after ops_per_sec=0: %r" % answer)

deadline = time.monotonic() + 10
while True:
    try:
        if all(client.get("rl:key") == b"v" for _ in range(200)):
            break
    except redis.exceptions.ResponseError as error:
        if time.monotonic() > deadline:
            fail("still refused after the limit was lifted: %s" % error)
        time.sleep(0.05)
print("limit lifted: 200 requests served on the same connection")
print("OK")
