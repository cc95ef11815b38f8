"""adclick's applications and stack as child processes, started by argv the way users start them.

Each test or benchmark run gets its own ports, topic prefix and folders, so it can run beside a
developer's stack (default ports) or another run. Everything started here is stopped by the
object that started it, by its pid or process group, never by name.
"""

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from adclick import config
from adclick.testing.api import Api

REPO = config.ROOT
PYTHON = sys.executable
SCRIPTS = REPO / "scripts"
_PYFLINK = importlib.util.find_spec("pyflink")
FLINK = (Path(_PYFLINK.origin).parent / "bin" / "flink") if _PYFLINK and _PYFLINK.origin \
    else None


def free_port():
    """A TCP port nobody listens on right now (the OS picks it; it stays free in practice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what, processes=(), interval=1.0):
    """Poll predicate() until it returns something truthy and return that; fail after timeout
    (or as soon as one of processes has exited) with the processes' log tails."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            process.assert_running()
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    logs = "".join(f"\n--- {p.name}:\n{p.tail()}" for p in processes)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")


class Process:
    """A child process in a process group of its own, its output in <log_dir>/<name>.log.

    popen is the subprocess.Popen: a test that signals the main process alone (a SIGKILL of the
    job, say) uses it; stop() ends the whole group.
    """

    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen([str(arg) for arg in argv], cwd=REPO, stdout=self._log,
                                      stderr=subprocess.STDOUT,
                                      env=dict(os.environ, **(env or {})),
                                      start_new_session=True)
        self.pid = self.popen.pid

    def tail(self, lines=60):
        """The last lines of its output."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def alive(self):
        return self.popen.poll() is None

    def assert_running(self):
        """Raise AssertionError, with the end of its output, if it has exited."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n"
                                 f"{self.tail()}")

    def _signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout=60):
        """SIGTERM to its process group (a job's JVM and Python workers too), SIGKILL after
        timeout s; then SIGKILL to what is left of the group. Returns the exit code."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
        self._signal_group(signal.SIGKILL)  # stragglers that outlived the main process
        self._log.close()
        return self.popen.returncode


def run_script(name, *args, env=None, timeout=300):
    """Run scripts/<name> with args; return its stdout, failing with its output on error."""
    return run_script_for_both(name, *args, env=env, timeout=timeout)[0]


def run_script_for_both(name, *args, env=None, timeout=300, check=True):
    """Like run_script, but return (stdout, stderr): what a script prints for people is on
    stderr, its result (a job id) alone on stdout. check=False: no error on a non-zero exit."""
    done = subprocess.run([str(SCRIPTS / name), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"scripts/{name} {' '.join(map(str, args))} exited with "
                             f"{done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout, done.stderr


def kafka_env(data_dir, brokers=1):
    """Environment for scripts/kafka.sh: one broker (or a cluster of 3) on free ports, with its
    data in data_dir."""
    env = dict(os.environ, KAFKA_DATA_DIR=str(data_dir), KAFKA_BROKERS=str(brokers))
    if brokers == 1:
        env.update(KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()))
    else:
        env.update(KAFKA_PORTS=",".join(str(free_port()) for _ in range(brokers)),
                   KAFKA_CONTROLLER_PORTS=",".join(str(free_port()) for _ in range(brokers)))
    return env


def free_port_pair():
    """p such that ports p and p + 1 are both free (for a range like Flink's 'p-(p+1)')."""
    for _ in range(50):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two consecutive free ports found")


def flink_env(state_dir):
    """Environment for scripts/flink-cluster.sh and submit-job.sh: a cluster on free ports (its
    JobManager's Prometheus metrics on FLINK_PROMETHEUS_PORTS's first, the TaskManager's next)."""
    prometheus = free_port_pair()
    return dict(os.environ, FLINK_REST_PORT=str(free_port()), FLINK_RPC_PORT=str(free_port()),
                FLINK_PROMETHEUS_PORTS=f"{prometheus}-{prometheus + 1}",
                FLINK_STACK_DIR=str(state_dir))


def flink_cli(env, *args, timeout=120):
    """Run the `flink` command line client against the cluster of env (e.g. cancel <job id>)."""
    conf_dir = run_script("flink-cluster.sh", "conf", env=env).strip().splitlines()[-1]
    cli_env = dict(env, FLINK_CONF_DIR=conf_dir)
    done = subprocess.run([str(FLINK), *args], cwd=REPO, env=cli_env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"flink {' '.join(args)} failed\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Broker:
    """Kafka run by scripts/kafka.sh on free ports with its data in data_dir (one broker, or a
    cluster of three), or an existing one named by `existing` (bootstrap servers), left alone."""

    def __init__(self, data_dir, existing=None, brokers=1):
        self.existing = existing
        self.env = None
        self.startup_s = None
        if existing:
            self.bootstrap = existing
            return
        self.data_dir = Path(data_dir)
        self.env = kafka_env(self.data_dir, brokers)
        ports = self.env.get("KAFKA_PORTS") or self.env["KAFKA_PORT"]
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in ports.split(","))

    def control(self, *command, check=True, timeout=180):
        """Run scripts/kafka.sh <command> (start, stop, restart, kill, kill-node N, ...)."""
        if self.env is None:
            raise RuntimeError(f"the broker at {self.existing} is not ours to control")
        return run_script_for_both("kafka.sh", *command, env=self.env, timeout=timeout,
                                   check=check)[0]

    def start(self):
        if self.env is not None:
            started = time.monotonic()
            self.control("start")
            self.startup_s = time.monotonic() - started
        return self

    def stop(self):
        if self.env is not None:
            self.control("stop", check=False, timeout=120)

    def pid(self):
        """The pid of our single broker, or None."""
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (AttributeError, OSError, ValueError):
            return None

    def admin(self, client_id="adclick-testing"):
        """A KafkaAdminClient of the broker (close it)."""
        from kafka import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=client_id)


def start_job(log_dir, bootstrap, prefix, checkpoint_dir, *extra, name="job", env=None,
              fast=True):
    """`python -m jobs.ad_click_aggregation` on a local MiniCluster, its consumer group and
    transactional ids beginning with prefix + "job".

    fast: checkpoints every 2 s and a source idle timeout of 3 s, as tests want; otherwise the
    job's defaults, as the benchmark measures them. extra: more arguments of the job.
    """
    argv = [PYTHON, "-m", "jobs.ad_click_aggregation", "--bootstrap-servers", bootstrap,
            "--topic-prefix", prefix, "--group-id", prefix + "job",
            "--checkpoint-dir", Path(checkpoint_dir).as_uri()]
    if fast:
        argv += ["--checkpoint-interval-ms", "2000", "--idle-timeout-ms", "3000"]
    return Process(name, [*argv, *extra], log_dir, env=env)


def start_server(log_dir, bootstrap, prefix, store_dir, port=None, raw=True,
                 group_suffix="loader", name="server", timeout=120, flink_rest_url=None):
    """`python -m apps.cli serve` (loader + API) on an embedded store in store_dir, its loader
    group prefix + group_suffix; raw=False loads no raw clicks; flink_rest_url: the job's REST
    API, for /v1/status. Returns (process, Api) once it answers."""
    port = port or free_port()
    key_file = Path(log_dir) / f"{name}.api-key"
    key_file.unlink(missing_ok=True)
    argv = [PYTHON, "-m", "apps.cli", "serve", "--clickhouse-url", f"chdb://{store_dir}",
            "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
            "--loader-group-id", prefix + group_suffix, "--port", str(port),
            "--api-key-file", str(key_file)]
    if not raw:
        argv.append("--no-raw")
    if flink_rest_url:
        argv += ["--flink-rest-url", flink_rest_url]
    process = Process(name, argv, log_dir)
    base = f"http://127.0.0.1:{port}"

    def up():
        key = key_file.read_text().strip() if key_file.exists() else ""
        if not key:
            return None
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5).close()
        except OSError:  # not listening yet (URLError, ConnectionError, a timeout)
            return None
        return key

    try:
        key = wait_for(up, timeout, f"{name} to answer on port {port}", [process], interval=0.5)
    except AssertionError:
        process.stop()
        raise
    return process, Api(base, key)
