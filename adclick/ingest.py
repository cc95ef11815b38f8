"""The loader: the job's Kafka topics (and the raw events) into ClickHouse, exactly once.

Why a loader and not ClickHouse's Kafka engine: the embedded engine (chdb) cannot run the
Kafka table engine ("Shutdown was called"), and a server's Kafka engine is at-least-once anyway.

Exactly once in two halves. Kafka side: the Flink job commits its outputs in transactions and
this consumer reads with isolation.level=read_committed, so it never sees aborted output.
ClickHouse side: offsets are committed to Kafka only after the insert succeeded, so a crash
replays at most the last batch; every table is a ReplacingMergeTree whose key contains the
record's (partition, offset) or a natural id, so a replayed row collapses into its twin and
queries that read FINAL count it once.

Per-record Python is what limits a loader (measured: ~50 us a raw click with kafka-python and
the contract checked in Python). So the consumer is librdkafka's (confluent-kafka), and an input
topic's records go to ClickHouse as they came, a column per attribute, where the contract's
rules run in bulk (adclick.clickhouse_rules). Only the job's outputs, a few rows a minute per
ad, are converted here. A record of those that cannot be converted is not skipped: it goes to
loader_rejects (topic, partition, offset, the table it was meant for, the reason, its bytes as
text) in the same batch, so it is stored, or replayed, like any other row.
"""

import json
import logging
import threading
import time
from datetime import datetime
from datetime import timezone

from confluent_kafka import Consumer
from confluent_kafka import KafkaError
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition

from adclick import clickhouse_rules
from adclick import config
from adclick import rollup

log = logging.getLogger("adclick.ingest")
LAG_INTERVAL_S = 1  # how often the loader measures how far behind it is
LAG_TIMEOUT_S = 1  # and how long it waits for committed offsets (must not stop loading)
POLL_TIMEOUT_S = 0.5
COMPACT_INTERVAL_S = 30  # how often the loader computes API 2's hourly rollup of quiet hours
REJECTS = "loader_rejects"  # the table of the records the loader could not convert
REJECT_REASON_CHARS = 1000
REJECT_PAYLOAD_BYTES = 64 * 1024

COLUMNS = {
    "ad_click_counts": ["minute", "ad_id", "country", "device", "traffic", "clicks",
                        "impressions", "late", "click_id", "src_partition", "src_offset"],
    "top_ads_minute": ["minute", "rank", "ad_id", "clicks", "src_offset"],
    "late_clicks": ["minute", "click_id", "ad_id", "country", "device", "user_id", "ip",
                    "click_ts", "watermark"],
    "late_impressions": ["minute", "impression_id", "ad_id", "country", "device", "user_id",
                         "ip", "impression_ts", "watermark"],
    "dead_letters": ["event", "received_at", "reason", "payload_base64", "source_partition",
                     "source_offset"],
    "conversions": ["minute", "conversion_id", "click_id", "type", "value_micros",
                    "conversion_ts"],
    "conversion_attributions": ["minute", "ad_id", "country", "device", "traffic",
                                "conversion_id", "click_id", "type", "value_micros",
                                "conversion_ts", "click_ts", "outcome"],
    "minutes_closed": ["minute", "traffic_rules", "src_partition", "src_offset"],
    REJECTS: ["topic", "partition", "offset", "table", "reason", "payload", "received_at"],
}


def parse_time(text):
    """An ISO 8601 timestamp written by the job's JSON format, as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def from_millis(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# Each converter yields (table, row) for one record (a confluent_kafka.Message) of its topic.

def count_rows(record):
    event = json.loads(record.value())
    yield "ad_click_counts", [
        parse_time(event["minute"]), event["ad_id"], event["country"], event["device"],
        # A count of a job from before the labels counted every unique event: all billed.
        event.get("traffic") or "valid",
        int(event["clicks"]), int(event["impressions"]), 1 if event["late"] else 0,
        event.get("event_id") or "", record.partition(), record.offset()]


def top_rows(record):
    event = json.loads(record.value())
    minute = parse_time(event["minute"])
    for rank, entry in enumerate(event["top"], start=1):
        yield "top_ads_minute", [minute, rank, entry["ad_id"], int(entry["clicks"]),
                                 record.offset()]


def minute_rows(record):
    event = json.loads(record.value())
    yield "minutes_closed", [parse_time(event["minute"]), event.get("traffic_rules") or "",
                             record.partition(), record.offset()]


def late_rows(record):
    """A too-late click into late_clicks, a too-late impression into late_impressions."""
    event = json.loads(record.value())
    table = {"click": "late_clicks", "impression": "late_impressions"}[event["event"]]
    yield table, [parse_time(event["minute"]), event["event_id"], event["ad_id"],
                  event["country"], event["device"], event["user_id"], event["ip"],
                  from_millis(event["event_ts"]), parse_time(event["watermark"])]


def dead_letter_rows(record):
    event = json.loads(record.value())
    yield "dead_letters", [event["event"], parse_time(event["source_timestamp"]), event["reason"],
                           event["payload_base64"], int(event["source_partition"]),
                           int(event["source_offset"])]


def conversion_rows(record):
    event = json.loads(record.value())
    yield "conversions", [parse_time(event["minute"]), event["conversion_id"], event["click_id"],
                          event["type"], event["value_micros"],
                          from_millis(event["conversion_ts"])]


def attribution_rows(record):
    event = json.loads(record.value())
    yield "conversion_attributions", [
        parse_time(event["minute"]), event["ad_id"], event["country"], event["device"],
        event.get("traffic") or "valid",  # a job from before the labels billed every click
        event["conversion_id"], event["click_id"], event["type"], event["value_micros"],
        from_millis(event["conversion_ts"]), from_millis(event["click_ts"]), event["outcome"]]


def reject_row(record, tables, error):
    """The loader_rejects row of a record that could not be converted for tables."""
    value = record.value() or b""  # a tombstone (None) is an empty payload
    kind, ms = record.timestamp()
    # The record's own time, so that a replay's row falls into the same partition as its twin;
    # a broker always sets one (CreateTime or LogAppendTime), the fallback is for completeness.
    received = from_millis(ms) if kind != TIMESTAMP_NOT_AVAILABLE else datetime.now(timezone.utc)
    return [record.topic(), record.partition(), record.offset(), ",".join(tables),
            f"{type(error).__name__}: {error}"[:REJECT_REASON_CHARS],
            value[:REJECT_PAYLOAD_BYTES].decode("utf-8", errors="replace"), received]


def table_routes(topics):
    """topic name -> (the tables it fills, its converter), for the job's output topics."""
    return {
        topics["counts"]: (("ad_click_counts",), count_rows),
        topics["top"]: (("top_ads_minute",), top_rows),
        topics["late"]: (("late_clicks", "late_impressions"), late_rows),
        topics["dlq"]: (("dead_letters",), dead_letter_rows),
        topics["conversions_unique"]: (("conversions",), conversion_rows),
        topics["attributions"]: (("conversion_attributions",), attribution_rows),
        topics["minutes"]: (("minutes_closed",), minute_rows),
    }


def raw_routes(topics):
    """input topic name -> the raw table its valid events go to (through its rules view)."""
    return {topics[name]: f"raw_{name}" for name in config.Topics.INPUTS}


class RawColumns:
    """An input topic's records of one batch, as the columns of its raw table's input."""

    def __init__(self):
        self.payloads, self.received_ms, self.partitions, self.offsets = [], [], [], []

    def add(self, record):
        # A tombstone (None) is an empty payload: not JSON, so the rules drop it.
        self.payloads.append(record.value() or b"")
        self.received_ms.append(record.timestamp()[1])
        self.partitions.append(record.partition())
        self.offsets.append(record.offset())

    def columns(self):
        return [self.payloads, self.received_ms, self.partitions, self.offsets]


class Loader:
    """Consumes the topics, inserts batches, then commits offsets; one thread, one consumer.

    rows_loaded counts, per table, the rows inserted; for a raw table, the records handed to
    its rules (the invalid ones included, which the rules drop); for loader_rejects, the
    records of the job's topics that could not be converted.
    """

    def __init__(self, client, database=config.DATABASE, bootstrap=config.KAFKA_BOOTSTRAP,
                 topic_prefix="", group_id="adclick-loader", raw=True, max_batch=50000,
                 unassigned_s=60):
        self.client = client
        self.database = database
        topics = config.Topics.with_prefix(topic_prefix)
        self.routes = table_routes(topics)
        self.raw_routes = raw_routes(topics) if raw else {}
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.max_batch = max_batch
        self.unassigned_s = unassigned_s
        self.reconnects = 0
        self.stopping = threading.Event()
        self.rows_loaded = {table: 0 for tables, _ in self.routes.values() for table in tables}
        self.rows_loaded.update({table: 0 for table in self.raw_routes.values()})
        self.rows_loaded[REJECTS] = 0
        self.last_batch_at = None
        # Records each topic still holds for this loader (end offset minus position over its
        # assigned partitions), measured every LAG_INTERVAL_S; None while not known.
        self.topics = [*self.routes, *self.raw_routes]
        self.lag = {topic: None for topic in self.topics}
        self._thread = None

    def _consumer(self):
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Topics created after start (e.g. by the job) are picked up.
            "topic.metadata.refresh.interval.ms": 5000,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }, logger=logging.getLogger("adclick.ingest.librdkafka"))
        consumer.subscribe(self.topics)
        return consumer

    def load(self, records):
        """Insert one poll's records (confluent_kafka.Message); returns rows inserted per
        table."""
        batches = {}
        raw = {}
        for record in records:
            topic = record.topic()
            table = self.raw_routes.get(topic)
            if table is not None:
                raw.setdefault(table, RawColumns()).add(record)
                continue
            tables, convert = self.routes[topic]
            try:
                rows = list(convert(record))  # all of a record's rows, or none of them
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                # The job writes these topics; a bad record here is a bug, not input. It is
                # kept, with the batch (a crash replays it too), not skipped.
                log.error("unreadable record %s[%d]@%d into %s: %s", topic, record.partition(),
                          record.offset(), REJECTS, error)
                rows = [(REJECTS, reject_row(record, tables, error))]
            for table, row in rows:
                batches.setdefault(table, []).append(row)
        counts = batches.get("ad_click_counts")
        if counts:
            # Before the rows: a crash in between leaves the hour marked, never unmarked.
            rollup.mark_changed(self.client, self.database,
                                {rollup.hour_of(int(row[0].timestamp())) for row in counts})
        for table, rows in batches.items():
            self.client.insert(table, rows, column_names=COLUMNS[table], database=self.database)
        for table, columns in raw.items():
            self.client.insert(clickhouse_rules.input_table(table), columns.columns(),
                               column_names=list(clickhouse_rules.INPUT_COLUMNS),
                               database=self.database, column_oriented=True)
        inserted = {table: len(rows) for table, rows in batches.items()}
        inserted.update({table: len(columns.offsets) for table, columns in raw.items()})
        for table, count in inserted.items():
            self.rows_loaded[table] += count
        return inserted

    def _poll(self, consumer):
        """The next batch of records; broker errors that librdkafka recovers from by itself
        (a broker away, a topic not created yet) are logged, not raised."""
        records = []
        for record in consumer.consume(num_messages=self.max_batch, timeout=POLL_TIMEOUT_S):
            error = record.error()
            if error is None:
                records.append(record)
            elif error.fatal() or (not error.retriable() and error.code() not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF,
                    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)):
                raise KafkaException(error)
            else:
                log.debug("consumer: %s", error)
        return records

    def run(self):
        """Poll, insert, commit, until stop(); reconnects after Kafka or ClickHouse errors, and
        when the consumer has had no partition for unassigned_s."""
        while not self.stopping.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                assigned_at = measured_at = compacted_at = time.monotonic()
                while not self.stopping.is_set():
                    records = self._poll(consumer)
                    if records:
                        self.load(records)
                        consumer.commit(asynchronous=False)
                        self.last_batch_at = time.time()
                    if time.monotonic() - compacted_at >= COMPACT_INTERVAL_S:
                        rollup.compact(self.client, self.database)
                        compacted_at = time.monotonic()
                    if time.monotonic() - measured_at >= LAG_INTERVAL_S:
                        self._measure_lag(consumer)
                        measured_at = time.monotonic()
                    if consumer.assignment():
                        assigned_at = time.monotonic()
                    elif time.monotonic() - assigned_at > self.unassigned_s:
                        # A group rebalance that never ends (kafka-python 3.0.12 once stayed in
                        # one for minutes, loading nothing): a new consumer joins afresh. (A
                        # member that rightly has no partition pays a rejoin a minute.)
                        log.warning("no partition assigned for %d s; reconnecting",
                                    self.unassigned_s)
                        self.reconnects += 1
                        break
            except Exception:  # noqa: BLE001 - keep loading through broker/store restarts
                log.exception("loader error; retrying in 2 s (uncommitted batch will replay)")
                self.lag = {topic: None for topic in self.topics}  # unknown until it reconnects
                self.stopping.wait(2)
            finally:
                if consumer is not None:
                    consumer.close()  # leaves the group; commits nothing (no auto-commit)

    def _measure_lag(self, consumer):
        # The partitions' high watermarks as librdkafka's fetchers last saw them (they fetch in
        # the background, also while a batch is being stored, so records that arrive meanwhile
        # count), against the consumer's positions. Asking the broker instead took ~0.1 s per
        # partition, a second of every loop with the 36 partitions of the nine topics.
        positions = consumer.position(consumer.assignment())
        # A partition with no record consumed since the assignment has no position yet: its
        # committed offset stands for it (one request for all of them), else its start.
        unplaced = [TopicPartition(p.topic, p.partition) for p in positions if p.offset < 0]
        committed = {}
        if unplaced:
            try:
                committed = {(p.topic, p.partition): p.offset
                             for p in consumer.committed(unplaced, timeout=LAG_TIMEOUT_S)}
            except KafkaException as error:  # a broker away: those topics' lag is unknown
                log.debug("no committed offsets: %s", error)
        behind, unknown = {}, set()
        for partition in positions:
            key = (partition.topic, partition.partition)
            low, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            position = partition.offset if partition.offset >= 0 else committed.get(key)
            if high < 0 or position is None:  # not fetched yet, or no answer
                unknown.add(partition.topic)
                continue
            behind[partition.topic] = (behind.get(partition.topic, 0)
                                       + max(0, high - max(position, low)))
        self.lag = {topic: None if topic in unknown else behind.get(topic)
                    for topic in self.topics}

    def start(self):
        self._thread = threading.Thread(target=self.run, name="adclick-loader", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10):
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
