"""Bursts after the whole input has been silent: every click still counted exactly once.

Regression test for on-time clicks that were lost when the job read bursts after every input
partition had been silent for longer than the source idle timeout (3 s in tests, 10 s by
default). The dedup subtasks, seeing only idle inputs, went idle themselves and woke up at
different moments; the global window aggregate advanced on one subtask's watermark and dropped
as late the partial counts of clicks the other had classified on time (numLateRecordsDropped >
0, about half of a minute lost; docs/ARCHITECTURE.md, idle partitions). The job's clock source
keeps every operator after the dedup active. Each cycle below is such a burst. Reads the output
topics directly (read_committed), no store.
"""

import collections
import json
import random
import threading
import time
from datetime import datetime
from datetime import timezone

import pytest
from kafka import KafkaConsumer
from kafka import KafkaProducer
from kafka import TopicPartition

from adclick import config
from adclick.testing.processes import start_job
from adclick.testing.processes import wait_for

pytestmark = pytest.mark.integration

MINUTE_MS = config.WINDOW_MS
PARTITIONS = config.PARTITIONS
ADS = [f"ad-{i:02d}" for i in range(12)]
SILENCE_S = 6  # longer than any idle timeout the tests used (3 s)


def minute_of(iso):
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=timezone.utc).timestamp() * 1000)


def read_committed(bootstrap, topic):
    """Every committed record of topic, decoded from JSON."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        rows = []
        deadline = time.time() + 30
        while time.time() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                rows.extend(json.loads(record.value) for record in records)
            if not batch and all(consumer.position(tp) >= end[tp] for tp in parts):
                break
        return rows
    finally:
        consumer.close()


@pytest.fixture
def job(tmp_path, kafka_bootstrap, topic_prefix):
    process = start_job(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "checkpoints",
                        "--watermark-delay-ms", "2000", "--allowed-lateness-s", "300")
    try:
        yield process
    finally:
        process.stop()


def test_bursts_after_silence_count_every_click_once(job, kafka_bootstrap, topic_prefix):
    rng = random.Random(11)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    topics = config.Topics.with_prefix(topic_prefix)
    topic = topics["clicks"]
    truth = collections.Counter()
    serial = 0

    def send(click_ts, partition):
        nonlocal serial
        serial += 1
        click = {"click_id": f"c-{serial}", "ad_id": rng.choice(ADS), "click_ts": click_ts,
                 "user_id": f"u{rng.randrange(100)}", "ip": "10.0.0.1",
                 "country": rng.choice(["KR", "US"]), "device": rng.choice(["mobile", "tablet"])}
        producer.send(topic, json.dumps(click).encode(), partition=partition)
        truth[(click_ts - click_ts % MINUTE_MS, click["ad_id"], click["country"],
               click["device"])] += 1

    def stored():
        counts = collections.Counter()
        for row in read_committed(kafka_bootstrap, topics["counts"]):
            counts[(minute_of(row["minute"]), row["ad_id"], row["country"], row["device"])] += \
                row["clicks"]
        return counts

    # Each cycle, after a silence that left every partition idle: a few stragglers from two
    # minutes ago and a burst of clicks from the last minute and from this one (up to now), on
    # every partition. The watermark follows the clock (minus the 2 s delay) while the input is
    # silent, so the older clicks arrive as late corrections and this minute's on time; either
    # way each must be counted once.
    for _ in range(4):
        time.sleep(SILENCE_S)
        now = int(time.time() * 1000)
        minute = now - now % MINUTE_MS
        for i in range(2 * PARTITIONS):
            send(minute - 2 * MINUTE_MS + rng.randrange(MINUTE_MS), i % PARTITIONS)
        for i in range(400):
            send(rng.randrange(minute - MINUTE_MS, now), i % PARTITIONS)
        producer.flush()
    producer.close()
    # No closing clicks: once the input is silent, the job's clock closes the minutes. Wait
    # until as many clicks are counted as were sent (or the timeout), then compare every cell.
    expected_total = sum(truth.values())
    try:
        wait_for(lambda: sum(stored().values()) >= expected_total, 150,
                 f"{expected_total} clicks counted", [job])
    except AssertionError:
        pass  # the per-minute comparison below says what is missing
    counted = stored()
    for minute in sorted({key[0] for key in truth} | {key[0] for key in counted}):
        want = {k: n for k, n in truth.items() if k[0] == minute}
        got = {k: n for k, n in counted.items() if k[0] == minute}
        assert got == want, f"minute {minute}: counted {sum(got.values())} of {sum(want.values())}"


def test_a_partition_of_only_junk_does_not_hold_minutes_open(job, kafka_bootstrap, topic_prefix):
    """A partition that receives nothing but malformed records is never idle; its watermark
    follows the records' Kafka timestamps, so the minutes the other partitions fill still
    close (with event time 0 for rejects, the whole job's watermark stayed at 1970)."""
    rng = random.Random(12)
    topics = config.Topics.with_prefix(topic_prefix)
    truth = collections.Counter()
    stop = threading.Event()

    def send():
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        serial = 0
        while not stop.is_set():
            now = int(time.time() * 1000)
            for partition in range(PARTITIONS - 1):
                serial += 1
                click = {"click_id": f"j-{serial}", "ad_id": rng.choice(ADS), "click_ts": now,
                         "user_id": "u1", "ip": "10.0.0.1", "country": "KR",
                         "device": "mobile"}
                producer.send(topics["clicks"], json.dumps(click).encode(),
                              partition=partition)
                truth[now - now % MINUTE_MS] += 1
            producer.send(topics["clicks"], b"not json at all", partition=PARTITIONS - 1)
            time.sleep(0.1)
        producer.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        now = int(time.time() * 1000)
        minute = now - now % MINUTE_MS + MINUTE_MS  # the first whole minute sent
        time.sleep(max(0.0, (minute + MINUTE_MS - now) / 1000))

        def counted():
            return sum(row["clicks"] for row in read_committed(kafka_bootstrap, topics["counts"])
                       if minute_of(row["minute"]) == minute)
        wait_for(lambda: truth[minute] and counted() == truth[minute], 90,
                 "the minute the valid partitions filled to close", [job])
        dead = read_committed(kafka_bootstrap, topics["dlq"])
        assert dead and all(row["source_partition"] == PARTITIONS - 1 for row in dead)
    finally:
        stop.set()
        sender.join(30)
