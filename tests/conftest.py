"""Shared fixtures: the real Kafka broker, and the adclick processes started as users start them.

The broker is started once per session by scripts/kafka.sh on free ports in a temporary
folder, unless ADCLICK_TEST_KAFKA names one that is already running. Each test isolates itself
with its own topic prefix, consumer groups and embedded store path.
"""

import os
import subprocess
import sys
import uuid

import pytest

from tests.helpers_stack import flink_env
from tests.helpers_stack import run_script
from tests.processes import REPO
from tests.processes import free_port

sys.path.insert(0, str(REPO))


KAFKA_SCRIPT = str(REPO / "scripts" / "kafka.sh")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """(bootstrap address, environment for scripts/kafka.sh) of the session's broker."""
    existing = os.environ.get("ADCLICK_TEST_KAFKA")
    if existing:
        yield existing, None
        return
    port, controller_port = free_port(), free_port()
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(controller_port),
               KAFKA_DATA_DIR=str(tmp_path_factory.mktemp("kafka")))
    subprocess.run([KAFKA_SCRIPT, "start"], env=env, check=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([KAFKA_SCRIPT, "stop"], env=env, timeout=120)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker):
    return kafka_broker[0]


@pytest.fixture
def kafka_control(kafka_broker):
    """Run a scripts/kafka.sh subcommand (restart, kill, ...) on the session's broker."""
    _bootstrap, env = kafka_broker
    if env is None:
        pytest.skip("the broker named by ADCLICK_TEST_KAFKA is not ours to restart")

    def control(command):
        subprocess.run([KAFKA_SCRIPT, command], env=env, check=True, timeout=180)
    return control


@pytest.fixture
def topic_prefix(kafka_bootstrap):
    """A fresh set of the five topics for one test."""
    from adclick.topics import create_topics

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    create_topics(kafka_bootstrap, prefix=prefix, partitions=4)
    return prefix


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    """Environment (ports, state folder) of a standalone Flink cluster of the module's own, for
    scripts/flink-cluster.sh and submit-job.sh; its stop also stops its jobs with savepoints."""
    env = flink_env(tmp_path_factory.mktemp("flink"))
    run_script("flink-cluster.sh", "start", env=env, timeout=240)
    try:
        yield env
    finally:
        run_script("flink-cluster.sh", "stop", env=env, timeout=300)
