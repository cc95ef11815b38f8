"""Shared fixtures: the real Kafka broker, and the adclick processes started as users start them.

The broker is started once per session by scripts/kafka.sh on free ports in a temporary
folder, unless ADCLICK_TEST_KAFKA names one that is already running. Each test isolates itself
with its own topic prefix, consumer groups and embedded store path.
"""

import os
import sys
import uuid

import pytest

from adclick.testing.processes import REPO
from adclick.testing.processes import Broker
from adclick.testing.processes import flink_env
from adclick.testing.processes import run_script

sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """The session's broker (adclick.testing.processes.Broker)."""
    broker = Broker(tmp_path_factory.mktemp("kafka"), os.environ.get("ADCLICK_TEST_KAFKA"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker):
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_control(kafka_broker):
    """Run a scripts/kafka.sh subcommand (restart, kill, ...) on the session's broker."""
    if kafka_broker.existing:
        pytest.skip("the broker named by ADCLICK_TEST_KAFKA is not ours to restart")
    return kafka_broker.control


@pytest.fixture
def topic_prefix(kafka_bootstrap):
    """A fresh set of the five topics for one test."""
    from adclick.topics import create_topics

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    create_topics(kafka_bootstrap, prefix=prefix)
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
