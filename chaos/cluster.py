"""Real aegiskv nodes for the chaos harness, and the faults done to them.

Each node is configured through AEGIS_* environment variables only, so the
same command line (none) works when libfaketime is preloaded: exec'd straight
under it, a node was seen to lose its command-line arguments (see
Tests/AegisServerTests/ClockStepTests.swift). `env` execs, so a node's PID is
the node's own and kill -9 / SIGSTOP reach it, never a wrapper.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

FAKETIME_LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
PARTITION_TABLE = "chaos_partition"
PR_SET_PDEATHSIG = 1


def _die_with_runner():
    """Child side of Popen: a runner killed by its caller (a test's time limit)
    takes its nodes with it instead of leaving them running."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_ports(host, count):
    """Ports the kernel picks, all held open until every one is picked: one
    closed before the next bind can be handed out again (a node once got
    the same port for its client and gossip listeners and refused to start)."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.socket())
            sockets[-1].bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class HarnessError(Exception):
    pass


class Node:
    def __init__(self, index, root, binary, private_network, settings):
        self.index = index
        self.name = f"node{index}"
        self.host = f"127.0.0.{10 + index}"
        if private_network:
            # The namespace is ours: the production ports, on the node's own address.
            self.client_port, self.gossip_port, self.health_port = 7700, 7701, 7702
        else:
            self.client_port, self.gossip_port, self.health_port = free_ports(self.host, 3)
        self.data_dir = os.path.join(root, self.name)
        self.log_path = os.path.join(root, f"{self.name}.log")
        self.clock_file = os.path.join(root, f"{self.name}.clock")
        self.binary = binary
        self.settings = settings
        self.seeds = []
        self.process = None
        self.skewed = False
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def gossip_address(self):
        return f"{self.host}:{self.gossip_port}"

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def environment(self, clock_offset):
        env = {key: value for key, value in os.environ.items() if not key.startswith("AEGIS_")}
        env.update({
            "AEGIS_NODE_ID": self.name,
            "AEGIS_BIND_ADDR": f"{self.host}:{self.client_port}",
            "AEGIS_GOSSIP_BIND_ADDR": self.gossip_address,
            "AEGIS_HEALTH_ADDR": f"{self.host}:{self.health_port}",
            "AEGIS_SEEDS": ",".join(self.seeds),
            "AEGIS_DATA_DIR": self.data_dir,
            **{f"AEGIS_{key.upper()}": str(value) for key, value in self.settings.items()},
        })
        if clock_offset is not None:
            with open(self.clock_file, "w") as f:
                f.write(clock_offset + "\n")
            env.update({
                "LD_PRELOAD": FAKETIME_LIBRARY,
                "FAKETIME_TIMESTAMP_FILE": self.clock_file,
                # Re-read the offset at most once a second, so healing is a clock step.
                "FAKETIME_CACHE_DURATION": "1",
                # A real clock step leaves CLOCK_MONOTONIC alone.
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            })
        return env

    def start(self, clock_offset=None):
        if self.running:
            raise HarnessError(f"{self.name} is already running")
        self.skewed = clock_offset is not None
        log = open(self.log_path, "a")
        log.write(f"==== chaos: start {self.name} clock_offset={clock_offset or 'none'}\n")
        log.flush()
        self.process = subprocess.Popen([self.binary], env=self.environment(clock_offset), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_runner)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"{self.name} exited at start with {self.process.returncode}:\n{self.log_tail()}")
            if self.view() is not None:
                return
            time.sleep(0.05)
        raise HarnessError(f"{self.name} never answered /cluster:\n{self.log_tail()}")

    def kill9(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            # A stopped process dies of SIGKILL too; no SIGCONT needed.
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def signal(self, number):
        if self.running:
            self.process.send_signal(number)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()

    def wipe(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir, exist_ok=True)

    def set_clock(self, offset):
        with open(self.clock_file, "w") as f:
            f.write(offset + "\n")

    def view(self):
        try:
            url = f"http://{self.host}:{self.health_port}/cluster"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return json.loads(reply.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """`nodes` run from the start and serve the clients; `spare` (with
    `spare=True`) is one more node, started only by the `join` fault."""

    def __init__(self, size, root, binary, private_network, settings, spare=False):
        self.private_network = private_network
        self.nodes = [Node(i, root, binary, private_network, settings) for i in range(1, size + 1)]
        for node in self.nodes:
            node.seeds = [other.gossip_address for other in self.nodes if other is not node]
        self.spare = Node(size + 1, root, binary, private_network, settings) if spare else None
        if self.spare:
            self.spare.seeds = [node.gossip_address for node in self.nodes]
        self.partitioned = False

    @property
    def every_node(self):
        return self.nodes + ([self.spare] if self.spare else [])

    def start_all(self):
        for node in self.nodes:
            node.start()

    def stop_all(self):
        for node in self.every_node:
            node.stop()

    def agreed(self):
        """True when every running node sees exactly the running nodes alive
        and all publish one placement digest."""
        expected = {node.name for node in self.every_node if node.running}
        digests = set()
        for node in self.every_node:
            if not node.running:
                continue
            view = node.view()
            if view is None or not view.get("placement_digest"):
                return False
            alive = {m["node_id"] for m in view.get("members", []) if m.get("status") == "alive"}
            if alive != expected:
                return False
            digests.add(view["placement_digest"])
        return len(digests) == 1

    def wait_agreed(self, timeout):
        """Waits (bounded) for agreement; returns the seconds it took, or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.agreed():
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def views(self):
        return {node.name: node.view() for node in self.every_node if node.running}

    # Partitions: nftables rules on the output hook of the private namespace,
    # matched on the nodes' own addresses (peer links leave from them; see
    # RealClusterPartitionTests). Clients connect from 127.0.0.1, which no
    # rule names, so they reach every node throughout.
    def drop(self, pairs):
        rules = "\n".join(f"    ip saddr {a.host} ip daddr {b.host} drop" for a, b in pairs)
        table = (f"table inet {PARTITION_TABLE} {{\n  chain output {{\n"
                 f"    type filter hook output priority 0; policy accept;\n{rules}\n  }}\n}}\n")
        result = subprocess.run(["nft", "-f", "-"], input=table, text=True, capture_output=True)
        if result.returncode != 0:
            raise HarnessError(f"nft refused the partition: {result.stderr}")
        self.partitioned = True

    def heal_network(self):
        if not self.partitioned:
            return
        result = subprocess.run(["nft", "delete", "table", "inet", PARTITION_TABLE], capture_output=True, text=True)
        if result.returncode != 0:
            raise HarnessError(f"nft delete table failed: {result.stderr}")
        self.partitioned = False
