"""The job deployed as in production: on a standalone Flink cluster, submitted with `flink run`.

Starts its own Kafka broker (scripts/kafka.sh) and Flink cluster (scripts/flink-cluster.sh) on
free ports, submits jobs/ad_click_aggregation.py with scripts/submit-job.sh, sends two minutes of
known clicks, closes those minutes with one later click on every partition, and checks that the
committed per-minute counts equal what was sent.
"""

import collections
import contextlib
import json
import time
import urllib.request
import uuid
from datetime import datetime

import pytest
from kafka import KafkaConsumer
from kafka import KafkaProducer

from adclick import config
from adclick import contract
from adclick.testing.api import prometheus_samples
from adclick.testing.processes import Broker
from adclick.testing.processes import flink_cli
from adclick.testing.processes import run_script
from adclick.testing.processes import wait_for
from adclick.topics import create_topics

pytestmark = pytest.mark.integration

MINUTE_MS = config.WINDOW_MS
ADS = ("ad-1", "ad-2", "ad-3")
COUNTRIES = ("KR", "US", "DE")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    """Bootstrap address of a broker of this module's own."""
    broker = Broker(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def clicks(first_minute_ms):
    """Valid clicks spread over two minutes, with varied ads and attributes, no duplicates."""
    events = []
    for i in range(90):  # one click every 1.333 s over 120 s of event time
        events.append({
            "click_id": f"click-{i}",
            "ad_id": ADS[(i * i) % len(ADS)],  # uneven counts per ad
            "click_ts": first_minute_ms + i * 4000 // 3,
            "user_id": f"user-{i % 7}",
            "ip": f"198.51.100.{i % 250}",
            "country": COUNTRIES[i % len(COUNTRIES)],
            "device": contract.DEVICES[i % len(contract.DEVICES)],
        })
    return events


def minute_of(iso_timestamp):
    return int(datetime.fromisoformat(iso_timestamp).timestamp() * 1000)


def scrape_flink(flink):
    """{metric name: [values]} from both daemons' Prometheus reporters (flink-conf/)."""
    first, last = map(int, flink["FLINK_PROMETHEUS_PORTS"].split("-"))
    samples = collections.defaultdict(list)
    for port in range(first, last + 1):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            for (name, _labels), value in prometheus_samples(response.read().decode()).items():
                samples[name].append(value)
    return samples


def check_prometheus_metrics(flink):
    """The running job, seen the way Prometheus sees it: its checkpoints, its Kafka source's
    backlog, the TaskManager's JVM."""
    def checkpointed():
        samples = scrape_flink(flink)
        return samples if samples["flink_jobmanager_job_numberOfCompletedCheckpoints"] else None
    samples = wait_for(checkpointed, 60, "the job's metrics")
    assert samples["flink_jobmanager_numRegisteredTaskManagers"] == [1.0]
    assert max(samples["flink_jobmanager_job_numberOfCompletedCheckpoints"]) > 0
    # Every metric docs/OPERATIONS.md tells to alert on is there under that name.
    for name in ("flink_jobmanager_job_lastCheckpointDuration",
                 "flink_jobmanager_job_numberOfFailedCheckpoints",
                 "flink_jobmanager_job_numRestarts",
                 "flink_taskmanager_job_task_busyTimeMsPerSecond",
                 "flink_taskmanager_Status_JVM_Memory_Heap_Used",
                 "flink_taskmanager_Status_JVM_Memory_Heap_Max",
                 "flink_taskmanager_Status_JVM_CPU_Load"):
        assert samples[name], (name, sorted(samples)[:80])
    pending = [name for name in samples if name.endswith("_pendingRecords")]
    assert pending, sorted(samples)[:50]


def test_job_on_standalone_cluster_counts_every_click(kafka, flink, tmp_path):
    prefix = f"fc{uuid.uuid4().hex[:8]}-"
    topics = create_topics(kafka, prefix=prefix)
    submitted = time.monotonic()
    job_id = run_script(
        "submit-job.sh", "--bootstrap-servers", kafka, "--topic-prefix", prefix,
        "--group-id", prefix + "job", "--checkpoint-interval-ms", "2000",
        "--watermark-delay-ms", "1000", "--top-n", "3",
        "--checkpoint-dir", (tmp_path / "checkpoints").as_uri(),
        env=flink, timeout=360).strip().splitlines()[-1]
    assert len(job_id) == 32, job_id

    def cancel():
        flink_cli(flink, "cancel", "-m", f"127.0.0.1:{flink['FLINK_REST_PORT']}", job_id)

    try:
        # Recent event time: the job rejects clicks more than an hour in the future, and the
        # minutes must be whole, so start at a minute boundary ten minutes ago.
        first_minute = (int(time.time() * 1000) // MINUTE_MS - 10) * MINUTE_MS
        events = clicks(first_minute)
        expected = collections.Counter(
            (e["click_ts"] // MINUTE_MS * MINUTE_MS, e["ad_id"]) for e in events)
        assert {minute for minute, _ in expected} == {first_minute, first_minute + MINUTE_MS}

        producer = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
        try:
            for event in events:
                producer.send(topics["clicks"], key=event["click_id"].encode(),
                              value=json.dumps(event).encode())
            producer.flush()
            # The watermark is the minimum over all partitions: one click three minutes later
            # on every partition moves it past both minutes, so both windows fire.
            for partition in sorted(producer.partitions_for(topics["clicks"])):
                closing = dict(events[0], click_id=f"closing-{partition}",
                               click_ts=first_minute + 5 * MINUTE_MS)
                producer.send(topics["clicks"], value=json.dumps(closing).encode(),
                              partition=partition)
            producer.flush()
        finally:
            producer.close()

        consumer = KafkaConsumer(
            topics["counts"], bootstrap_servers=kafka, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False,
            group_id=f"{prefix}check", value_deserializer=json.loads)
        counted = collections.Counter()
        first_result = []
        try:
            def all_counted():
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        if not first_result:
                            first_result.append(time.monotonic() - submitted)
                        row = record.value
                        counted[(minute_of(row["minute"]), row["ad_id"])] += row["clicks"]
                return all(counted[key] >= n for key, n in expected.items())

            wait_for(all_counted, 300, "the counts of both minutes", interval=0)
            time.sleep(5)  # anything counted twice would show up now
            all_counted()
        finally:
            consumer.close()
        print(f"\njob {job_id}: first committed count {first_result[0]:.1f} s after submit")
        got = {key: n for key, n in counted.items() if key[0] in {m for m, _ in expected}}
        assert got == dict(expected)
        check_prometheus_metrics(flink)
    except BaseException:
        with contextlib.suppress(Exception):  # keep the original failure; stopping ends the job
            cancel()
        raise
    cancel()
