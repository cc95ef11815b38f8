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

from tests.processes import REPO
from tests.processes import free_port

sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    existing = os.environ.get("ADCLICK_TEST_KAFKA")
    if existing:
        yield existing
        return
    port, controller_port = free_port(), free_port()
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(controller_port),
               KAFKA_DATA_DIR=str(tmp_path_factory.mktemp("kafka")))
    script = str(REPO / "scripts" / "kafka.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([script, "stop"], env=env, timeout=120)


@pytest.fixture
def topic_prefix(kafka_bootstrap):
    """A fresh set of the five topics for one test."""
    from adclick.topics import create_topics

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    create_topics(kafka_bootstrap, prefix=prefix, partitions=4)
    return prefix
