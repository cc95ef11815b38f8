"""The loader on the real broker and the embedded store: a consumer left without partitions
(what a stuck group rebalance of kafka-python looked like) is replaced, and the loader loads; a
record it cannot convert goes to loader_rejects, never nowhere."""

import json
import time
import uuid
from datetime import datetime
from datetime import timezone

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition
from kafka import KafkaConsumer
from kafka import KafkaProducer

from adclick.ingest import Loader
from adclick.testing.processes import wait_for
from adclick.topics import create_topics
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database

pytestmark = pytest.mark.integration


def test_a_consumer_without_partitions_is_replaced_and_then_loads(kafka_bootstrap,
                                                                   chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, "loader_test")
    prefix = f"l{uuid.uuid4().hex[:10]}-"
    topics = create_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    # Another member of the loader's group whose id sorts first: the range assignor gives it
    # each topic's one partition, and the loader none.
    holder = KafkaConsumer(*topics.values(), bootstrap_servers=kafka_bootstrap,
                           group_id=prefix + "loader", client_id="a-holder",
                           enable_auto_commit=False)
    wait_for(lambda: holder.poll(timeout_ms=500) is not None and holder.assignment(), 60,
             "the holder's partitions")
    loader = Loader(client, database="loader_test", bootstrap=kafka_bootstrap,
                    topic_prefix=prefix, group_id=prefix + "loader", unassigned_s=3).start()
    try:
        deadline = time.monotonic() + 90
        while loader.reconnects < 1 and time.monotonic() < deadline:
            holder.poll(timeout_ms=500)  # stay in the group
        assert loader.reconnects >= 1
        holder.close(autocommit=False)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topics["dlq"], json.dumps({
            "event": "click", "reason": "bad_ad_id", "payload_base64": "e30=",
            "source_partition": 1, "source_offset": 7,
            "source_timestamp": "2026-01-01T00:00:00Z"}).encode()).get(30)
        producer.close()
        wait_for(lambda: loader.rows_loaded["dead_letters"] == 1, 90, "the dead letter loaded")
        rows = client.query("SELECT reason, source_offset FROM loader_test.dead_letters FINAL")
        assert rows.result_rows == [("bad_ad_id", 7)]
    finally:
        loader.stop()


def test_a_restarted_loader_is_not_behind_on_a_quiet_transactional_topic(kafka_bootstrap,
                                                                         chdb_url):  # noqa: F811
    """The lag of a topic the loader has read to its end is 0 after a restart too, before any
    new record comes (no position yet: the committed offset stands for it), although commit
    markers of the job's transactions take offsets of their own."""
    client = fresh_database(chdb_url, "loader_restart")
    prefix = f"r{uuid.uuid4().hex[:10]}-"
    topics = create_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=prefix + "tx")
    producer.init_transactions()
    for serial in range(3):
        producer.begin_transaction()
        producer.send(topics["dlq"], json.dumps({
            "event": "click", "reason": "bad_ad_id", "payload_base64": "e30=",
            "source_partition": 0, "source_offset": serial,
            "source_timestamp": "2026-01-01T00:00:00Z"}).encode())
        producer.commit_transaction()
    producer.close()
    for run in range(2):
        loader = Loader(client, database="loader_restart", bootstrap=kafka_bootstrap,
                        topic_prefix=prefix, group_id=prefix + "loader").start()
        try:
            if run == 0:
                wait_for(lambda: loader.rows_loaded["dead_letters"] == 3, 90, "the dead letters")
            wait_for(lambda: loader.lag[topics["dlq"]] is not None, 60, "the lag")  # noqa: B023
            time.sleep(2)  # a few more measurements
            assert loader.lag[topics["dlq"]] == 0, (run, loader.lag)
        finally:
            loader.stop()
    rows = client.query("SELECT count() FROM loader_restart.dead_letters FINAL")
    assert rows.result_rows == [(3,)]


def test_a_record_the_loader_cannot_convert_goes_to_loader_rejects(kafka_bootstrap,
                                                                   chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, "loader_rejects")
    prefix = f"j{uuid.uuid4().hex[:10]}-"
    topics = create_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    count = {"minute": "2026-01-01T00:00:00Z", "ad_id": "ad-1", "country": "DE",
             "device": "mobile", "clicks": 3, "impressions": 9, "late": False, "event_id": None}
    missing = json.dumps({key: value for key, value in count.items() if key != "clicks"})
    records = [missing.encode(), b"not json \xff", json.dumps(count).encode()]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in records:  # offsets 0, 1, 2 of the one partition, the valid record last
        producer.send(topics["counts"], value).get(30)
    producer.close()
    sent_at = datetime.now(timezone.utc)
    loader = Loader(client, database="loader_rejects", bootstrap=kafka_bootstrap,
                    topic_prefix=prefix, group_id=prefix + "loader", raw=False).start()
    try:
        wait_for(lambda: loader.rows_loaded["ad_click_counts"] == 1, 90, "the valid count")
        assert loader.rows_loaded.get("loader_rejects") == 2, loader.rows_loaded
        committed = Consumer({"bootstrap.servers": kafka_bootstrap,
                              "group.id": prefix + "loader"})
        try:
            wait_for(lambda: committed.committed([TopicPartition(topics["counts"], 0)],
                                                 timeout=10)[0].offset == 3,
                     60, "the offsets committed past the rejects")
        finally:
            committed.close()
    finally:
        loader.stop()
    counts = client.query("SELECT ad_id, clicks, impressions, src_offset"
                          " FROM loader_rejects.ad_click_counts FINAL")
    assert counts.result_rows == [("ad-1", 3, 9, 2)]
    rejects = client.query(
        "SELECT topic, `partition`, `offset`, `table`, reason, payload, received_at"
        " FROM loader_rejects.loader_rejects FINAL ORDER BY `offset`").result_rows
    assert [row[:4] for row in rejects] == [(topics["counts"], 0, 0, "ad_click_counts"),
                                            (topics["counts"], 0, 1, "ad_click_counts")]
    assert rejects[0][4] == "KeyError: 'clicks'"
    assert rejects[1][4].startswith("UnicodeDecodeError: ")  # not JSON, not even UTF-8
    assert [row[5] for row in rejects] == [missing, "not json \ufffd"]
    for row in rejects:  # the records' own timestamps, so that a replay collapses
        assert abs((row[6].replace(tzinfo=timezone.utc) - sent_at).total_seconds()) < 60
