"""Start and stop the servers a benchmark compares, on loopback, by PID."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class Server:
    def __init__(self, name, argv, port):
        self.name = name
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(port, self.process)

    @property
    def pid(self):
        return self.process.pid

    def cpu_seconds(self):
        """utime + stime of the server process (all threads), from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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


def start_aegiskv(extra=(), binary=None):
    port = free_port()
    argv = [binary or aegiskv_binary(), "--bind-addr", f"127.0.0.1:{port}", "--max-memory-mb", "4096", *extra]
    return Server("aegiskv", argv, port)


def redis_benchmark(server, test, requests, pipeline=1):
    """redis-benchmark -c 50 -d 32 -r 100000 against `server`: (ops/s, server CPU µs per operation)."""
    rate, cpu_us, _ = redis_benchmark_with_switches(server, test, requests, pipeline)
    return rate, cpu_us


def redis_benchmark_with_switches(server, test, requests, pipeline=1):
    """The same, plus the server's context switches per operation (all threads)."""
    cpu_before, switches_before = server.cpu_seconds(), server.context_switches()
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-c", "50", "-d", "32", "-r", "100000",
         "-n", str(requests), "-t", test, "-P", str(pipeline), "--csv"],
        check=True, capture_output=True, text=True).stdout
    cpu_after, switches_after = server.cpu_seconds(), server.context_switches()
    line = [l for l in out.splitlines() if l.startswith('"' + test.upper())][0]
    return (float(line.split(",")[1].strip('"')), (cpu_after - cpu_before) / requests * 1e6,
            (switches_after - switches_before) / requests)


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
