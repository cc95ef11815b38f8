"""Filling the input topic fast, and the Kafka read limit of one kafka-python consumer.

The fill: click payloads are encoded in Python (templates drawn from adclick.generator's
ClickFactory, so ads are Zipf-distributed and countries/devices weighted like the generator,
with a unique click_id and a click_ts per message) and piped, one per line, to a small Java
producer (kafka-clients from .stack/jars/kafka, run from source by the JDK's launcher):
batch.size 1 MiB, linger.ms 20, compression none, acks=1, partitions round robin. kafka-python's
producer is measured too, on a sample, because that is what adclick's own generator uses.
"""

import json
import subprocess
import threading
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka import KafkaConsumer
from kafka import KafkaProducer
from kafka import TopicPartition

from adclick import config
from adclick.generator import ClickFactory

KAFKA_JARS = config.JARS_DIR / "kafka"

JAVA_PRODUCER = r"""
import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Reads newline-separated payloads on stdin and produces them round robin over partitions. */
public class BulkProducer {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    int partitions = Integer.parseInt(args[2]);
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("acks", "1");
    props.put("linger.ms", "20");
    props.put("batch.size", String.valueOf(1 << 20));
    props.put("buffer.memory", String.valueOf(256L << 20));
    props.put("max.request.size", String.valueOf(16 << 20));
    props.put("compression.type", "none");
    props.put("enable.idempotence", "false");
    props.put("key.serializer", ByteArraySerializer.class.getName());
    props.put("value.serializer", ByteArraySerializer.class.getName());
    AtomicLong errors = new AtomicLong();
    Callback callback = (metadata, error) -> { if (error != null) errors.incrementAndGet(); };
    long count = 0;
    long started = 0;
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
      InputStream in = new BufferedInputStream(System.in, 1 << 20);
      byte[] buffer = new byte[1 << 20];
      ByteArrayOutputStream line = new ByteArrayOutputStream(1024);
      int read;
      while ((read = in.read(buffer)) > 0) {
        if (started == 0) started = System.nanoTime();
        int from = 0;
        for (int i = 0; i < read; i++) {
          if (buffer[i] == '\n') {
            byte[] value;
            if (line.size() == 0) {
              value = Arrays.copyOfRange(buffer, from, i);
            } else {
              line.write(buffer, from, i - from);
              value = line.toByteArray();
              line.reset();
            }
            producer.send(new ProducerRecord<>(topic, (int) (count % partitions), null, value),
                          callback);
            count++;
            from = i + 1;
          }
        }
        line.write(buffer, from, read - from);
      }
      producer.flush();
    }
    double seconds = (System.nanoTime() - started) / 1e9;
    System.out.println("{\"records\": " + count + ", \"seconds\": " + seconds
        + ", \"errors\": " + errors.get() + "}");
  }
}
"""


# The last two bytes of a message's private address, by its number's low 16 bits.
_LOW = [f"{n >> 8}.{n & 255}" for n in range(65_536)]


class Payloads:
    """Valid click payloads, fast: per message only its number (the id, the user, the address)
    and click_ts are formatted, the rest comes from a pool of templates. Each message is a
    person of its own (user u<n>, address 10.x.y.z from n), as most traffic is: the rules of
    invalid traffic look at every click and label none. With event="impression", impressions
    (the same fields under impression_id and impression_ts)."""

    def __init__(self, run_id, seed, skew=0.0, pool=100_000, ads=10_000, event="click"):
        factory = ClickFactory(seed=seed, skew=skew, ads=ads, run_id=run_id)
        self.run_id = run_id
        self.event = event
        self.pool = []
        for _ in range(pool):
            c = factory.click(0)
            self.pool.append((
                f'","ad_id":"{c.ad_id}","{event}_ts":',
                f'","country":"{c.country}","device":"{c.device}"}}',
                c.ad_id,
            ))


    def chunks(self, count, start_ts, span_ms, chunk=20_000, base=0):
        """Newline-joined payloads; click_ts rises evenly from start_ts over span_ms. Their ids
        (and templates) are numbers base to base + count - 1."""
        pool, size, run, event = self.pool, len(self.pool), self.run_id, self.event
        for first in range(0, count, chunk):
            last = min(count, first + chunk)
            lines = []
            append = lines.append
            for i in range(first, last):
                n = base + i
                head, tail, _ad = pool[n % size]
                append(f'{{"{event}_id":"{run}-{n}{head}'
                       f'{start_ts + i * span_ms // count},"user_id":"u{n}",'
                       f'"ip":"10.{(n >> 16) & 255}.{_LOW[n & 65_535]}{tail}')
            yield ("\n".join(lines) + "\n").encode()

    def ad_of(self, i):
        return self.pool[i % len(self.pool)][2]

    def mix_chunks(self, count, start_ts, span_ms, chunk=20_000):
        """The clicks of chunks() as traffic has them, so each of the job's paths is timed:
        one in MIX_DUPLICATE sent twice in a row (a producer's retry: the copy lands on the
        next partition), one in MIX_LATE with its click_ts LATE_MS behind (a late correction),
        one in MIX_TOO_LATE TOO_LATE_MS behind (kept, not counted). Yields (lines, sent)."""
        pool, size, run = self.pool, len(self.pool), self.run_id
        for first in range(0, count, chunk):
            last = min(count, first + chunk)
            lines = []
            append = lines.append
            for i in range(first, last):
                head, tail, _ad = pool[i % size]
                ts = start_ts + i * span_ms // count
                if i % MIX_LATE == 7:
                    ts -= LATE_MS
                elif i % MIX_TOO_LATE == 13:
                    ts -= TOO_LATE_MS
                line = (f'{{"click_id":"{run}-{i}{head}{ts},"user_id":"u{i}",'
                        f'"ip":"10.{(i >> 16) & 255}.{_LOW[i & 65_535]}{tail}')
                append(line)
                if i % MIX_DUPLICATE == 3:
                    append(line)
            yield ("\n".join(lines) + "\n").encode(), len(lines)

    def conversion_chunks(self, count, start_ts, span_ms, chunk=20_000):
        """Conversions of one click in MIX_CONVERTING of mix_chunks()'s, CONVERSION_AFTER_MS
        after it. Yields (lines, sent)."""
        run = self.run_id
        for first in range(0, count, chunk):
            lines = [conversion_line(run, i, i,
                                     start_ts + i * span_ms // count + CONVERSION_AFTER_MS)
                     for i in range(first, min(count, first + chunk))
                     if i % MIX_CONVERTING == 5]
            yield ("\n".join(lines) + "\n").encode(), len(lines)


def conversion_line(run, n, click, ts):
    """Conversion n of a run, of the run's click number click, at ts (epoch ms)."""
    return (f'{{"conversion_id":"{run}-c{n}","click_id":"{run}-{click}","conversion_ts":{ts},'
            f'"type":"purchase","value_micros":1990000}}')


# The bounded mix's shares (one click in N) and delays (Payloads.mix_chunks).
MIX_DUPLICATE = 20
MIX_LATE = 100
MIX_TOO_LATE = 200
MIX_CONVERTING = 20
LATE_MS = 120_000
TOO_LATE_MS = 900_000
CONVERSION_AFTER_MS = 30_000


def java_producer_source(work_dir):
    path = Path(work_dir) / "BulkProducer.java"
    path.write_text(JAVA_PRODUCER)
    return path


def start_java_producer(bootstrap, topic, partitions, work_dir):
    """The Java producer, reading payloads on its stdin and printing its stats at the end."""
    source = java_producer_source(work_dir)
    return subprocess.Popen(["java", "-Xmx1g", "-cp", f"{KAFKA_JARS}/*", str(source),
                             bootstrap, topic, str(partitions)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def bulk_fill(bootstrap, topic, partitions, payloads, count, start_ts, span_ms, work_dir,
              chunks=None):
    """Produce count payloads through the Java producer; returns rates (records/s). chunks,
    (lines, how many) pairs such as Payloads.mix_chunks', replaces payloads.chunks: count is
    then the number they held."""
    if chunks is None:
        chunks = ((data, None) for data in payloads.chunks(count, start_ts, span_ms))
    else:
        count = 0
    started = time.monotonic()
    proc = start_java_producer(bootstrap, topic, partitions, work_dir)
    first_write = None
    for data, lines in chunks:
        if first_write is None:
            first_write = time.monotonic()
        proc.stdin.write(data)
        count += lines or 0
    proc.stdin.close()
    out = proc.stdout.read().decode()
    if proc.wait() != 0:
        raise RuntimeError(f"bulk producer failed: {out}")
    ended = time.monotonic()
    stats = json.loads(out.strip().splitlines()[-1])
    if stats["errors"] or stats["records"] != count:
        raise RuntimeError(f"bulk producer: {stats}, expected {count} records")
    return {
        "records": count,
        "seconds_total": round(ended - started, 2),
        "seconds_producing": round(ended - first_write, 2),
        "records_per_s": round(count / (ended - first_write)),
        "producer": "Java KafkaProducer (kafka-clients 4.1.1) fed by Python-encoded payloads; "
                    "batch.size=1MiB linger.ms=20 compression=none acks=1",
    }


class PacedProducer:
    """Events with real-time event times at a rate that may change each minute, through the
    Java producer: every TICK_S a thread writes the tick's share of rate_at(minute) events,
    timed within the tick. chunks(count, start_ts, span_ms, base) encodes them
    (Payloads.chunks, or conversion_chunks_paced). With hot (per template of the payloads,
    whether it is the hot ad's) it keeps the ground truth per minute: all events, and the hot
    ad's. encode_cpu_s is the thread's own CPU (the generator's share the Java process's CPU
    does not show)."""

    TICK_S = 0.1

    def __init__(self, bootstrap, topic, partitions, chunks, rate_at, work_dir, hot=None):
        self.chunks = chunks
        self.rate_at = rate_at
        self.hot = hot
        self.sent = 0
        self.truth = {}  # minute (epoch ms) -> [events, hot ad events]
        self.behind_ticks = 0  # ticks written late (the producer side falling behind)
        self.encode_cpu_s = 0.0
        self.proc = start_java_producer(bootstrap, topic, partitions, work_dir)
        self.pid = self.proc.pid
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        tick_ms = round(self.TICK_S * 1000)
        next_tick = (time.time() * 1000 // tick_ms + 1) * tick_ms
        size = len(self.hot) if self.hot else 0
        carry = 0.0
        while not self.stopping.is_set():
            wait = next_tick / 1000 - time.time()
            if wait > 0:
                time.sleep(wait)
            elif wait < -self.TICK_S:
                self.behind_ticks += 1
            cpu_before = time.thread_time()
            minute = int(next_tick // 60_000 * 60_000)
            share = self.rate_at(minute) * self.TICK_S + carry
            count = int(share)
            carry = share - count
            if count:
                for data in self.chunks(count, int(next_tick), tick_ms, base=self.sent):
                    self.proc.stdin.write(data)
                self.proc.stdin.flush()
                truth = self.truth.setdefault(minute, [0, 0])
                truth[0] += count
                if size:
                    truth[1] += sum(self.hot[(self.sent + i) % size] for i in range(count))
                self.sent += count
            self.encode_cpu_s += time.thread_time() - cpu_before
            next_tick += tick_ms

    def stop(self):
        """Stops sending, lets the producer flush, and returns its stats."""
        self.stopping.set()
        if self._thread.ident is not None:  # started (a curve may fail before it starts all)
            self._thread.join()
        self.proc.stdin.close()
        out = self.proc.stdout.read().decode()
        self.proc.wait()
        return json.loads(out.strip().splitlines()[-1])


def conversion_chunks_paced(run_id, per_click, click_lead):
    """chunks() for the conversions of a live mix: conversion n names click n / per_click -
    click_lead (so, at a steady mix, a click sent some seconds before it: attributed), dated
    when it is sent."""
    def chunks(count, start_ts, span_ms, base=0):
        lines = []
        for i in range(count):
            n = base + i
            click = max(0, int(n / per_click) - click_lead)
            lines.append(conversion_line(run_id, n, click, start_ts + i * span_ms // count))
        yield ("\n".join(lines) + "\n").encode()
    return chunks


def kafka_python_produce_rate(bootstrap, topic, payloads, count, start_ts):
    """adclick's producer library on a sample: pre-encoded payloads, big batches, no compression."""
    data = b"".join(payloads.chunks(count, start_ts, config.WINDOW_MS)).split(b"\n")[:count]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=1 << 20, compression_type=None, metrics_enabled=False,
                             max_request_size=16 << 20)
    try:
        send = producer.send
        started = time.monotonic()
        for i, value in enumerate(data):
            send(topic, value, partition=i % config.PARTITIONS)
        producer.flush()
        elapsed = time.monotonic() - started
    finally:
        producer.close()
    return {"records": count, "seconds": round(elapsed, 2), "records_per_s": round(count / elapsed)}


def end_offsets(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: off for tp, off in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def consume_rate(bootstrap, topic, limit, max_seconds=30.0):
    """Records/s one kafka-python consumer reads from the start of topic (values as bytes).

    The clock starts once the first record is in (connection, metadata and the first fetch
    excluded) and stops at the last of `limit` records, or after max_seconds.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, auto_offset_reset="earliest",
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20,
                             max_poll_records=50_000, metrics_enabled=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        warmup_deadline = time.monotonic() + 30
        while not consumer.poll(timeout_ms=1000, max_records=1):
            if time.monotonic() > warmup_deadline:
                raise RuntimeError(f"no records in {topic}")
        started = time.monotonic()
        deadline = started + max_seconds
        got, nbytes = 0, 0
        while got < limit - 1 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got += len(records)
                nbytes += sum(len(r.value) for r in records)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    return {"records": got, "seconds": round(elapsed, 2), "records_per_s": round(got / elapsed),
            "mb_per_s": round(nbytes / elapsed / 1e6, 1),
            "avg_payload_bytes": round(nbytes / max(got, 1), 1),
            "method": "one KafkaConsumer (kafka-python), assign + seek_to_beginning, "
                      "max_poll_records 50,000, fetch_max_bytes 64 MiB, values left as bytes"}


def librdkafka_consume_rate(bootstrap, topic, limit, max_seconds=30.0):
    """Records/s one confluent-kafka (librdkafka) consumer reads from the start of topic, in
    batches as the loader reads (values as bytes); clocked like consume_rate."""
    from confluent_kafka import Consumer
    from confluent_kafka import OFFSET_BEGINNING
    from confluent_kafka import TopicPartition as Partition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-librdkafka",
                         "enable.auto.commit": False, "fetch.max.bytes": 64 << 20})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([Partition(topic, p, OFFSET_BEGINNING) for p in partitions])
        warmup_deadline = time.monotonic() + 30
        got, nbytes = 0, 0
        while not got:
            for record in consumer.consume(num_messages=1, timeout=1.0):
                if record.error() is None:
                    got += 1
            if time.monotonic() > warmup_deadline:
                raise RuntimeError(f"no records in {topic}")
        started = time.monotonic()
        deadline = started + max_seconds
        got = 0
        while got < limit - 1 and time.monotonic() < deadline:
            records = consumer.consume(num_messages=50_000, timeout=1.0)
            values = [record.value() for record in records if record.error() is None]
            got += len(values)
            nbytes += sum(map(len, values))
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    return {"records": got, "seconds": round(elapsed, 2), "records_per_s": round(got / elapsed),
            "mb_per_s": round(nbytes / elapsed / 1e6, 1),
            "method": "one confluent_kafka.Consumer (librdkafka, the loader's client), assigned "
                      "from the beginning, consume(num_messages=50,000), each value taken as "
                      "bytes"}


def delete_topics(bootstrap, names):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(list(names))
    except Exception:  # noqa: BLE001 - best effort cleanup on a shared dev broker
        pass
    finally:
        admin.close()
