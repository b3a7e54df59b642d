"""Start and stop the servers a benchmark compares, on loopback, by PID."""
import atexit
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import typing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


_handed_out = set()


def free_port():
    """A port the kernel picks, never one this process handed out before:
    a port closed after its pick can come back on the next bind, and a
    server then got the same port twice (client and health listeners)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port, process, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


# CPU placement for a run (taskset lists such as "1" or "0-3"; None = anywhere).
# Giving the servers and the load generator their own cores compares the
# servers on equal CPUs instead of on how well they share with the generator.
SERVER_CPUS = None
CLIENT_CPUS = None


def placed(argv, cpus):
    """argv run under `taskset -c cpus` (which execs, so the PID is the program's)."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


class Server:
    def __init__(self, name, argv, port):
        self.name = name
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(placed(argv, SERVER_CPUS), stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        wait_for_port(port, self.process)

    @property
    def pid(self):
        return self.process.pid

    def cpu_seconds(self):
        """utime + stime of the server process (all threads), from /proc/PID/stat."""
        user, system = self.user_and_system_seconds()
        return user + system

    def user_and_system_seconds(self):
        """(utime, stime) of the server process (all threads): its own code vs the kernel working for it."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS

    def context_switches(self):
        """Voluntary + involuntary context switches of every thread of the server so far."""
        total = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass  # a thread that ended between listing and reading
        return total

    def rss_bytes(self):
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def aegiskv_binary():
    binary = os.environ.get("AEGISKV_BIN", os.path.join(ROOT, ".build", "release", "aegiskv"))
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} not found: build it first with `swift build -c release`")
    return binary


def bench_binary():
    binary = os.environ.get("AEGISKV_BENCH", os.path.join(ROOT, ".build", "release", "aegiskv-bench"))
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} not found: build it first with `swift build -c release --product aegiskv-bench`")
    return binary


def add_placement_options(parser):
    parser.add_argument("--server-cpus", help="run the servers under taskset -c LIST (aegiskv's default "
                                               "reactors then follow: one per CPU in LIST)")
    parser.add_argument("--client-cpus", help="run redis-benchmark under taskset -c LIST")


def apply_placement(args):
    global SERVER_CPUS, CLIENT_CPUS
    SERVER_CPUS, CLIENT_CPUS = args.server_cpus, args.client_cpus
    if (SERVER_CPUS or CLIENT_CPUS) and not shutil.which("taskset"):
        raise SystemExit("taskset not found (util-linux)")


def own_data_dir(prefix, extra):
    """A throwaway data_dir unless `extra` names one: the default, /var/lib/aegiskv, is the
    host's own path, which every node run with defaults (and the runbook run) would share."""
    if "--data-dir" in extra or "--config" in extra:
        return []
    path = tempfile.mkdtemp(prefix=f"{prefix}-data-")
    atexit.register(shutil.rmtree, path, True)
    return ["--data-dir", path]


def start_aegiskv(extra=(), binary=None):
    port = free_port()
    argv = [binary or aegiskv_binary(), "--bind-addr", f"127.0.0.1:{port}", "--gossip-bind-addr", "127.0.0.1:0",
            "--max-memory-mb", "4096", *own_data_dir("aegiskv", extra), *extra]
    return Server("aegiskv", argv, port)


class BenchmarkRun(typing.NamedTuple):
    """One redis-benchmark run; CPU figures are the server's, per operation, except
    `client_us`: redis-benchmark's own, which sets the rate wherever the client is the limit."""
    rate: float
    user_us: float
    system_us: float
    switches: float
    client_us: float

    @property
    def cpu_us(self):
        return self.user_us + self.system_us


def median(runs, figure):
    """The median of one BenchmarkRun figure ("rate", "cpu_us", "switches", ...) over `runs`."""
    return statistics.median(getattr(run, figure) for run in runs)


def redis_benchmark(server, test, requests, pipeline=1):
    """redis-benchmark -c 50 -d 32 -r 100000 against `server`: (ops/s, server CPU µs per operation)."""
    run = redis_benchmark_run(server, test, requests, pipeline)
    return run.rate, run.cpu_us


def children_cpu_seconds():
    """utime + stime of every child this process has waited for (redis-benchmark's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_benchmark_run(server, test, requests, pipeline=1, extra=()):
    """The same run, with the server's CPU split into user and kernel time and its context
    switches (all threads), each per operation; `extra` goes to redis-benchmark (--tls, -k 0)."""
    (user_before, system_before), switches_before = server.user_and_system_seconds(), server.context_switches()
    client_before = children_cpu_seconds()
    out = subprocess.run(
        placed(["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-c", "50", "-d", "32", "-r", "100000",
                "-n", str(requests), "-t", test, "-P", str(pipeline), "--csv", *extra], CLIENT_CPUS),
        check=True, capture_output=True, text=True).stdout
    client_after = children_cpu_seconds()
    (user_after, system_after), switches_after = server.user_and_system_seconds(), server.context_switches()
    line = [l for l in out.splitlines() if l.startswith('"' + test.upper())][0]
    return BenchmarkRun(rate=float(line.split(",")[1].strip('"')),
                        user_us=(user_after - user_before) / requests * 1e6,
                        system_us=(system_after - system_before) / requests * 1e6,
                        switches=(switches_after - switches_before) / requests,
                        client_us=(client_after - client_before) / requests * 1e6)


def serving_field(server, name, timeout=20.0):
    """A field of aegiskv's "serving" log line (such as reactors), once it is written."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(server.log.name) as f:
            for line in f:
                if " serving " in line:
                    return dict(re.findall(r"(\w+)=(\S+)", line)).get(name)
        time.sleep(0.01)
    raise RuntimeError("aegiskv never logged its serving line")


def start_redis(extra=()):
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--daemonize", "no", *extra]
    return Server("redis", argv, port)


def start_memcached():
    if not shutil.which("memcached"):
        raise SystemExit("memcached not found: apt-get install memcached")
    port = free_port()
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "4096", "-u", "root"]
    return Server("memcached", argv, port)
