"""The loader: the job's Kafka topics (and the raw clicks) into ClickHouse, exactly once.

Why a loader and not ClickHouse's Kafka engine: the embedded engine (chdb) cannot run the
Kafka table engine ("Shutdown was called"), and a server's Kafka engine is at-least-once anyway.

Exactly once in two halves. Kafka side: the Flink job commits its outputs in transactions and
this consumer reads with isolation_level=read_committed, so it never sees aborted output.
ClickHouse side: offsets are committed to Kafka only after the insert succeeded, so a crash
replays at most the last batch; every table is a ReplacingMergeTree whose key contains the
record's (partition, offset) or a natural id, so a replayed row collapses into its twin and
queries that read FINAL count it once.
"""

import json
import logging
import threading
import time
from datetime import datetime
from datetime import timezone

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from adclick import config
from adclick import contract

log = logging.getLogger("adclick.ingest")
LAG_INTERVAL_S = 1  # how often the loader asks the broker how far behind it is
LAG_TIMEOUT_MS = 1000  # and how long it waits for the answer (a stuck ask must not stop loading)

COLUMNS = {
    "ad_click_counts": ["minute", "ad_id", "country", "device", "clicks", "impressions", "late",
                        "click_id", "src_partition", "src_offset"],
    "top_ads_minute": ["minute", "rank", "ad_id", "clicks", "src_offset"],
    "late_clicks": ["minute", "click_id", "ad_id", "country", "device", "user_id", "ip",
                    "click_ts", "watermark"],
    "late_impressions": ["minute", "impression_id", "ad_id", "country", "device", "user_id",
                         "ip", "impression_ts", "watermark"],
    "dead_letters": ["event", "received_at", "reason", "payload_base64", "source_partition",
                     "source_offset"],
    # Each raw event's own fields (the contract's), with its minute and Kafka coordinates.
    "raw_clicks": ["minute", *contract.CLICK.names, "src_partition", "src_offset"],
    "raw_impressions": ["minute", *contract.IMPRESSION.names, "src_partition", "src_offset"],
    "raw_conversions": ["minute", *contract.CONVERSION.names, "src_partition", "src_offset"],
    "conversions": ["minute", "conversion_id", "click_id", "type", "value_micros",
                    "conversion_ts"],
    "conversion_attributions": ["minute", "ad_id", "country", "device", "conversion_id",
                                "click_id", "type", "value_micros", "conversion_ts", "click_ts",
                                "outcome"],
}


def parse_time(text):
    """An ISO 8601 timestamp written by the job's JSON format, as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def from_millis(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# Each converter yields (table, row) for one record of its topic.

def count_rows(record):
    event = json.loads(record.value)
    yield "ad_click_counts", [
        parse_time(event["minute"]), event["ad_id"], event["country"], event["device"],
        int(event["clicks"]), int(event["impressions"]), 1 if event["late"] else 0,
        event.get("event_id") or "", record.partition, record.offset]


def top_rows(record):
    event = json.loads(record.value)
    minute = parse_time(event["minute"])
    for rank, entry in enumerate(event["top"], start=1):
        yield "top_ads_minute", [minute, rank, entry["ad_id"], int(entry["clicks"]),
                                 record.offset]


def late_rows(record):
    """A too-late click into late_clicks, a too-late impression into late_impressions."""
    event = json.loads(record.value)
    table = {"click": "late_clicks", "impression": "late_impressions"}[event["event"]]
    yield table, [parse_time(event["minute"]), event["event_id"], event["ad_id"],
                  event["country"], event["device"], event["user_id"], event["ip"],
                  from_millis(event["event_ts"]), parse_time(event["watermark"])]


def dead_letter_rows(record):
    event = json.loads(record.value)
    yield "dead_letters", [event["event"], parse_time(event["source_timestamp"]), event["reason"],
                           event["payload_base64"], int(event["source_partition"]),
                           int(event["source_offset"])]


def conversion_rows(record):
    event = json.loads(record.value)
    yield "conversions", [parse_time(event["minute"]), event["conversion_id"], event["click_id"],
                          event["type"], event["value_micros"],
                          from_millis(event["conversion_ts"])]


def attribution_rows(record):
    event = json.loads(record.value)
    yield "conversion_attributions", [
        parse_time(event["minute"]), event["ad_id"], event["country"], event["device"],
        event["conversion_id"], event["click_id"], event["type"], event["value_micros"],
        from_millis(event["conversion_ts"]), from_millis(event["click_ts"]), event["outcome"]]


def raw_rows(event_contract, table):
    """The converter of an input topic: its valid events, checked in Python independently of
    the job (for reconciliation), as rows of table."""
    time_field = event_contract.time_field

    def convert(record):
        event, _reason = event_contract.validate(record.value, now_ms=record.timestamp)
        if event is None:
            return
        ts = from_millis(getattr(event, time_field))
        yield table, [ts.replace(second=0, microsecond=0), *event._replace(**{time_field: ts}),
                      record.partition, record.offset]

    return convert


raw_click_rows = raw_rows(contract.CLICK, "raw_clicks")


def table_routes(topics, raw=True):
    """topic name -> (the tables it fills, its converter)."""
    routes = {
        topics["counts"]: (("ad_click_counts",), count_rows),
        topics["top"]: (("top_ads_minute",), top_rows),
        topics["late"]: (("late_clicks", "late_impressions"), late_rows),
        topics["dlq"]: (("dead_letters",), dead_letter_rows),
        topics["conversions_unique"]: (("conversions",), conversion_rows),
        topics["attributions"]: (("conversion_attributions",), attribution_rows),
    }
    if raw:
        for name, event in config.Topics.INPUTS.items():
            table = f"raw_{name}"
            routes[topics[name]] = ((table,), raw_rows(contract.CONTRACTS[event], table))
    return routes


class Loader:
    """Consumes the topics, inserts batches, then commits offsets; one thread, one consumer."""

    def __init__(self, client, database=config.DATABASE, bootstrap=config.KAFKA_BOOTSTRAP,
                 topic_prefix="", group_id="adclick-loader", raw=True, max_batch=20000,
                 unassigned_s=60):
        self.client = client
        self.database = database
        self.routes = table_routes(config.Topics.with_prefix(topic_prefix), raw=raw)
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.max_batch = max_batch
        self.unassigned_s = unassigned_s
        self.reconnects = 0
        self.stopping = threading.Event()
        self.rows_loaded = {table: 0 for tables, _ in self.routes.values() for table in tables}
        self.last_batch_at = None
        # Records each topic still holds for this loader (end offset minus position over its
        # assigned partitions), measured every LAG_INTERVAL_S; None while not known.
        self.lag = {topic: None for topic in self.routes}
        self._thread = None

    def _consumer(self):
        return KafkaConsumer(
            *self.routes,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            fetch_max_bytes=64 * 1024 * 1024,
            # Partitions of topics created after start (e.g. by the job) are picked up.
            metadata_max_age_ms=5000,
        )

    def load(self, records_by_partition):
        """Convert and insert one poll's records; returns rows inserted per table."""
        batches = {}
        for topic_partition, records in records_by_partition.items():
            _tables, convert = self.routes[topic_partition.topic]
            for record in records:
                try:
                    for table, row in convert(record):
                        batches.setdefault(table, []).append(row)
                except (ValueError, KeyError, TypeError) as error:
                    # The job writes these topics; a bad record here is a bug, not input.
                    log.error("skipping unreadable record %s@%d: %s",
                              topic_partition, record.offset, error)
        for table, rows in batches.items():
            if rows:
                self.client.insert(table, rows, column_names=COLUMNS[table],
                                   database=self.database)
                self.rows_loaded[table] += len(rows)
        return {table: len(rows) for table, rows in batches.items()}

    def run(self):
        """Poll, insert, commit, until stop(); reconnects after Kafka or ClickHouse errors, and
        when the consumer has had no partition for unassigned_s."""
        while not self.stopping.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                assigned_at = measured_at = time.monotonic()
                while not self.stopping.is_set():
                    polled = consumer.poll(timeout_ms=500)
                    if polled:
                        self.load(polled)
                        consumer.commit()
                        self.last_batch_at = time.time()
                    if time.monotonic() - measured_at >= LAG_INTERVAL_S:
                        self._measure_lag(consumer)
                        measured_at = time.monotonic()
                    if consumer.assignment():
                        assigned_at = time.monotonic()
                    elif time.monotonic() - assigned_at > self.unassigned_s:
                        # kafka-python 3.0.12 once stayed in a group rebalance for minutes after
                        # the topics appeared, loading nothing; a new consumer joins afresh.
                        # (A member that rightly has no partition pays a rejoin a minute.)
                        log.warning("no partition assigned for %d s; reconnecting",
                                    self.unassigned_s)
                        self.reconnects += 1
                        break
            except Exception:  # noqa: BLE001 - keep loading through broker/store restarts
                log.exception("loader error; retrying in 2 s (uncommitted batch will replay)")
                self.lag = {topic: None for topic in self.routes}  # unknown until it reconnects
                self.stopping.wait(2)
            finally:
                if consumer is not None:
                    consumer.close(autocommit=False)

    def _measure_lag(self, consumer):
        # The topics' end offsets now (one ListOffsets request), not the high watermark of the
        # last fetch: the records that arrived while a batch was being stored count as well.
        lag = {topic: None for topic in self.routes}
        try:
            partitions = list(consumer.assignment())
            ends = consumer.end_offsets(partitions, timeout_ms=LAG_TIMEOUT_MS) if partitions else {}
            for partition in partitions:
                position = consumer.position(partition, timeout_ms=LAG_TIMEOUT_MS)
                if position is None:  # not known within the timeout
                    raise KafkaError(f"no position for {partition}")
                behind = max(0, ends[partition] - position)
                lag[partition.topic] = (lag[partition.topic] or 0) + behind
        except KafkaError as error:  # a broker away: lag unknown, loading goes on when it is back
            log.debug("no end offsets: %s", error)
            lag = {topic: None for topic in self.routes}
        self.lag = lag

    def start(self):
        self._thread = threading.Thread(target=self.run, name="adclick-loader", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10):
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
