"""The loader on the real broker and the embedded store: a consumer left without partitions
(what a stuck group rebalance of kafka-python looked like) is replaced, and the loader loads."""

import json
import time
import uuid

import pytest
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
