"""Concurrent clients and the history they write.

Each client is a thread with one connection (redis-py, no retries: a retried
INCR could count twice and a retried SET would blur its invoke time). Every
operation is recorded when it completes, with its invoke and complete times on
the runner's monotonic clock. A client whose connection fails or times out
records the operation as indeterminate and moves to another node.
"""
import json
import random
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REGISTER_KEYS = 64
COUNTER_KEYS = 8
# Longer than a forwarded request's own 5 s timeout, so a forwarding node's
# error reply is seen as such rather than as our timeout.
CLIENT_TIMEOUT = 6.0


def register_key(i):
    return f"chaos:r:{i}"


def counter_key(i):
    return f"chaos:c:{i}"


def once_key(client, sequence):
    """A key written once and never again: what was lost stays visible to the
    final read instead of being overwritten by later traffic."""
    return f"chaos:once:{client}.{sequence}"


def all_keys():
    return [register_key(i) for i in range(REGISTER_KEYS)] + [counter_key(i) for i in range(COUNTER_KEYS)]


class History:
    """A JSON-lines file shared by the clients and the fault thread."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w")
        self.lock = threading.Lock()
        self.origin = time.monotonic()

    def now(self):
        return round(time.monotonic() - self.origin, 6)

    def write(self, event):
        line = json.dumps(event, sort_keys=True)
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self):
        with self.lock:
            self.file.close()


# Error replies after which the request was never run anywhere: the
# forwarding node did not send it (its breaker for the owner is open, it has
# no link to it, it is stopping), the node it reached does not own the
# shard in its own view and refused it (docs/operations.md,
# aegis_forward_not_owner_total), or that node holds no lease for the shard
# and refused the write before running it (Reactor+Leases).
NOT_APPLIED = ("the request was not sent; retry", "this node is stopping and forwards no more requests",
               "in the view of the node that got it; retry", "has no lease holder here",
               "is being handed to another node, which will take its writes")


def definitely_not_applied(text):
    return any(marker in text for marker in NOT_APPLIED)


def connect(node):
    return redis.Redis(host=node.host, port=node.client_port, socket_timeout=CLIENT_TIMEOUT,
                       socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0), single_connection_client=True,
                       decode_responses=True)


class Client(threading.Thread):
    def __init__(self, number, nodes, history, seed, stop, pause_seconds):
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self.number = number
        self.nodes = nodes
        self.history = history
        self.random = random.Random(seed)
        self.stop = stop
        self.pause_seconds = pause_seconds
        self.sequence = 0
        self.node = nodes[number % len(nodes)]
        self.connection = None

    def pick_operation(self):
        roll = self.random.random()
        if roll < 0.2:
            return "incr", counter_key(self.random.randrange(COUNTER_KEYS))
        if roll < 0.3:
            return "set", once_key(self.number, self.sequence + 1)
        key = register_key(self.random.randrange(REGISTER_KEYS))
        if roll < 0.55:
            return "set", key
        if roll < 0.9:
            return "get", key
        return "del", key

    def run(self):
        while not self.stop.is_set():
            self.one()
            self.stop.wait(self.pause_seconds)
        if self.connection is not None:
            self.connection.close()

    def one(self):
        if self.connection is None:
            try:
                self.connection = connect(self.node)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                # redis-py (8.x) opens a single-connection client's socket in
                # its constructor: a node that is down refuses it here, where
                # the exception ended this client's thread. Nothing was sent.
                self.move()
                return
        kind, key = self.pick_operation()
        event = {"type": "op", "op": kind, "key": key, "client": self.number, "node": self.node.name}
        if kind == "set":
            self.sequence += 1
            event["value"] = f"{self.number}.{self.sequence}"
        event["invoke"] = self.history.now()
        try:
            if kind == "set":
                reply = self.connection.set(key, event["value"])
                if reply is not True:
                    raise redis.ResponseError(f"SET answered {reply!r}")
            elif kind == "get":
                event["read"] = self.connection.get(key)
            elif kind == "del":
                event["read"] = self.connection.delete(key)
            else:
                event["read"] = self.connection.incr(key)
            event["result"] = "ok"
        except redis.ResponseError as error:
            # Most error replies leave open whether the write was applied (a
            # link that broke after the request left, a forward timeout); a
            # few say it was not, and the checker holds the server to that.
            event["result"] = "fail" if definitely_not_applied(str(error)) else "error"
            event["error"] = str(error)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            event["result"] = "timeout"
            event["error"] = f"{type(error).__name__}: {error}"
            self.move()
        event["complete"] = self.history.now()
        self.history.write(event)

    def move(self):
        """After a broken or silent connection: another node, a new connection."""
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail any way
                pass
        self.connection = None
        others = [n for n in self.nodes if n is not self.node]
        if others:
            self.node = self.random.choice(others)


def final_reads(nodes, keys):
    """GET of every key through every running node: {node name: {key: value}} or an error text per node."""
    answers = {}
    for node in nodes:
        if not node.running:
            continue
        try:
            connection = connect(node)
            pipe = connection.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            answers[node.name] = dict(zip(keys, pipe.execute(raise_on_error=False)))
            connection.close()
        except (redis.RedisError, OSError) as error:
            answers[node.name] = f"{type(error).__name__}: {error}"
    return answers
