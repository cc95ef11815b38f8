"""Start adclick's own processes for integration tests, the way the README starts them."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process with its output in a log file, shown when a test fails."""

    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, **(env or {})))

    def tail(self, lines=60):
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_running(self):
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.tail()}"

    def stop(self, timeout=60):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def start_job(log_dir, bootstrap, prefix, checkpoint_dir, *extra, name="job"):
    """The Flink job on a local MiniCluster, with fast checkpoints for tests."""
    argv = [PYTHON, "-m", "jobs.ad_click_aggregation",
            "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
            "--group-id", prefix + "job", "--checkpoint-interval-ms", "2000",
            "--checkpoint-dir", Path(checkpoint_dir).as_uri(), "--parallelism", "2",
            "--idle-timeout-ms", "3000", *extra]
    return Process(name, argv, log_dir)


def start_server(log_dir, bootstrap, prefix, store_dir, port):
    """`adclick serve` on the embedded store; returns (process, api key)."""
    key_file = Path(log_dir) / "api-key"
    argv = [PYTHON, "-m", "adclick.cli", "serve", "--clickhouse-url", f"chdb://{store_dir}",
            "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
            "--loader-group-id", prefix + "loader", "--port", str(port),
            "--api-key-file", str(key_file)]
    process = Process("server", argv, log_dir)
    deadline = time.time() + 90
    while time.time() < deadline:
        process.assert_running()
        if key_file.exists() and key_file.read_text().strip():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                return process, key_file.read_text().strip()
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.5)
    raise AssertionError(f"server did not come up:\n{process.tail()}")


class Api:
    """A small client of the HTTP API."""

    def __init__(self, port, key):
        self.base = f"http://127.0.0.1:{port}"
        self.key = key

    def get(self, path, **params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        request = urllib.request.Request(f"{self.base}{path}?{query}",
                                         headers={"Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def sql(self, query):
        request = urllib.request.Request(
            f"{self.base}/v1/sql", data=json.dumps({"query": query}).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["rows"]


def wait_for(predicate, timeout, what, processes=()):
    """Poll predicate() until it returns a truthy value; fail with the processes' logs."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for process in processes:
            process.assert_running()
        last = predicate()
        if last:
            return last
        time.sleep(1)
    logs = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in processes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
