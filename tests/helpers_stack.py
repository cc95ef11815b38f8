"""Helpers for tests that run the real stack through the scripts in scripts/.

Each such test gets its own broker ports, Flink ports and state folders, so it can run beside
a developer's stack (default ports) or another test's.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
FLINK = next(REPO.glob(".venv/lib/python3*/site-packages/pyflink/bin/flink"), None)


def free_port():
    """A TCP port nobody listens on right now (the OS picks it; it stays free in practice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what, interval=1.0):
    """Poll predicate() until it returns something truthy; return that, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_script(name, *args, env=None, timeout=300):
    """Run scripts/<name> with args; return its stdout, failing with its output on error."""
    return run_script_for_both(name, *args, env=env, timeout=timeout)[0]


def run_script_for_both(name, *args, env=None, timeout=300):
    """Like run_script, but return (stdout, stderr): what a script prints for people is on
    stderr, its result (a job id) alone on stdout."""
    done = subprocess.run([str(SCRIPTS / name), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"scripts/{name} {' '.join(map(str, args))} exited with "
                             f"{done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout, done.stderr


def kafka_env(data_dir):
    """Environment for scripts/kafka.sh: a broker on free ports with its data in data_dir."""
    return dict(os.environ, KAFKA_PORT=str(free_port()),
                KAFKA_CONTROLLER_PORT=str(free_port()), KAFKA_DATA_DIR=str(data_dir))


def flink_env(state_dir):
    """Environment for scripts/flink-cluster.sh and submit-job.sh: a cluster on free ports."""
    return dict(os.environ, FLINK_REST_PORT=str(free_port()), FLINK_RPC_PORT=str(free_port()),
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
