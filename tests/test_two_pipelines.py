"""Two pipelines on one broker with the same consumer group id but their own topics (prefixes):
each commits its own results. The sinks' transactional ids are named by the whole pipeline;
named by the group alone, the two jobs' producers fenced each other's transactions."""

import collections
import json
import random
import time
import uuid

import pytest
import requests
from kafka import KafkaProducer

from adclick import config
from adclick import flink_rest
from adclick.testing.processes import free_port
from adclick.testing.processes import start_job
from adclick.testing.processes import wait_for
from adclick.topics import create_topics
from tests.test_idle_bursts import minute_of
from tests.test_idle_bursts import read_committed

pytestmark = pytest.mark.integration
GROUP = "shared-group"


def test_two_prefixes_with_one_group_id_both_commit(tmp_path, kafka_bootstrap, topic_prefix):
    other_prefix = f"u{uuid.uuid4().hex[:10]}-"
    create_topics(kafka_bootstrap, prefix=other_prefix)
    prefixes = [topic_prefix, other_prefix]
    rest = [f"http://127.0.0.1:{free_port()}" for _ in prefixes]
    jobs = [start_job(tmp_path, kafka_bootstrap, prefix, tmp_path / "checkpoints",
                      "--group-id", GROUP, "--rest-port", rest[n].rsplit(":", 1)[1],
                      name=f"job-{n}")
            for n, prefix in enumerate(prefixes)]
    try:
        for job in jobs:
            wait_for(lambda job=job: "adclick: running" in job.tail(200), 180, "a job to run",
                     jobs)
        rng = random.Random(5)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        truth = {prefix: collections.Counter() for prefix in prefixes}
        # A minute of clicks for each pipeline, then clicks 3 minutes ahead to close it.
        now = int(time.time() * 1000)
        minute = now - now % config.WINDOW_MS
        for prefix in prefixes:
            topic = config.Topics.with_prefix(prefix)["clicks"]
            for serial in range(300):
                click = {"click_id": f"{prefix}{serial}", "ad_id": rng.choice(["a", "b"]),
                         "click_ts": minute + rng.randrange(config.WINDOW_MS),
                         "user_id": "u1", "ip": "10.0.0.1", "country": "KR",
                         "device": "mobile"}
                producer.send(topic, json.dumps(click).encode())
                truth[prefix][minute] += 1
            for partition in range(config.PARTITIONS):
                closer = dict(click, click_id=f"{prefix}closer-{partition}",
                              click_ts=minute + 3 * config.WINDOW_MS)
                producer.send(topic, json.dumps(closer).encode(), partition=partition)
        producer.flush()
        producer.close()

        def counted(prefix):
            rows = read_committed(kafka_bootstrap, config.Topics.with_prefix(prefix)["counts"])
            return sum(row["clicks"] for row in rows if minute_of(row["minute"]) == minute)

        for prefix in prefixes:
            wait_for(lambda prefix=prefix: counted(prefix) == truth[prefix][minute], 180,
                     f"the minute of pipeline {prefix} to be committed", jobs)
        # Neither job failed on the way: a fenced producer fails its job, which then restarts
        # from its checkpoint and commits in the end (exactly once, but not in running order).
        for job, url in zip(jobs, rest):
            job.assert_running()
            (running,) = flink_rest.live_jobs(url, 10)
            failures = requests.get(f"{url}/jobs/{running['jid']}/exceptions",
                                    timeout=10).json()["exceptionHistory"]["entries"]
            assert failures == [], (job.name, [f["stacktrace"][:400] for f in failures])
    finally:
        for job in jobs:
            job.stop()
