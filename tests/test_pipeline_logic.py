"""The job's transformation, without Kafka: rows in memory in, files out, against a truth.

The pipeline (jobs/ad_click_aggregation.py build_pipeline over sql/flink/) runs at parallelism
2 on a local MiniCluster over parse results held in memory (valid clicks, duplicates, rejected
records, clicks late and too late), its four sinks bound to JSON files, the job's clock stage
left out. A small model of the
job's semantics (dedup first wins; each unique click classed against the watermark the
classifier saw; windows; top-N) computes what each sink must hold, and the test requires the
same rows.

The watermark is exact here because the rows come from one ordered, non-parallel source whose
watermark follows each row that advances it by more than the emit interval (the rows are built
so), and without the clock the dedup reads that source alone, so each click is classed against
the watermark of the rows before it.
"""

import base64
import collections
import hashlib
import json
import os
import random
from datetime import datetime
from datetime import timezone

import pytest
from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings
from pyflink.table import Schema
from pyflink.table import StreamTableEnvironment
from pyflink.table import TableDescriptor

from adclick import config
from adclick.contract import CLICK
from jobs import ad_click_aggregation as job
from udfs.top_n import rank_key

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WATERMARK_DELAY_MS = 5_000
ALLOWED_LATENESS_S = 120
TOP_N = 3
EMIT_INTERVAL_MS = 200  # pipeline.auto-watermark-interval: a larger advance is emitted at once
ADS = ["a1", "a2", "a3", "a4", "a5", "a6"]

# The source's columns beyond the format's: the Kafka record's coordinates.
RECORD_COLUMNS = [("kafka_partition", "INT"), ("kafka_offset", "BIGINT"), ("kafka_ms", "BIGINT")]
TYPE_INFO = {"STRING": Types.STRING(), "BIGINT": Types.LONG(), "INT": Types.INT(),
             "BYTES": Types.PRIMITIVE_ARRAY(Types.BYTE())}


def fingerprint(click_id):
    """The dedup key, as udfs/java/.../ClickKey.java computes it."""
    digest = hashlib.md5(click_id.encode("ascii")).digest()
    return (int.from_bytes(digest[:8], "big", signed=True),
            int.from_bytes(digest[8:], "big", signed=True))


def click_row(offset, click):
    hi, lo = fingerprint(click.click_id)
    return (*click, None, None, hi, lo, offset % config.PARTITIONS, offset, T0 + offset)


def rejected_row(offset, reason, payload):
    return (*([None] * len(CLICK.fields)), reason, payload, None, None,
            offset % config.PARTITIONS, offset, T0 + offset)


def make_rows(seed=5):
    """Parse results in arrival order: clicks moving forward in time, with duplicates,
    out-of-order, late and too-late clicks and rejected records among them."""
    rng = random.Random(seed)
    rows, sent = [], []
    newest = T0

    def click(ts, serial=None):
        ad = ADS[min(int(rng.paretovariate(1.2)) - 1, len(ADS) - 1)]
        return CLICK.Event(f"c{len(sent) if serial is None else serial}", ad, ts, "u1",
                           "192.0.2.1", rng.choice(["KR", "US"]), rng.choice(["mobile", "desktop"]))

    while newest < T0 + 9 * config.WINDOW_MS:
        # Every click that moves time forward moves it by more than the emit interval.
        newest += rng.randrange(EMIT_INTERVAL_MS + 100, 1500)
        kind = rng.random()
        if kind < 0.07 and sent:  # a producer's retry: the same click_id, maybe other fields
            first = rng.choice(sent)
            event = first if rng.random() < 0.5 else click(first.click_ts, first.click_id[1:])
            rows.append(click_row(len(rows), event))
            continue
        if kind < 0.12:
            rows.append(rejected_row(len(rows), "bad_ad_id", b'{"ad_id": "?"}'))
            continue
        if kind < 0.2:  # behind the newest: out of order, late or too late
            ts = newest - rng.choice([2_000, 70_000, 100_000, 200_000, 330_000])
        else:
            ts = newest
        sent.append(click(ts))
        rows.append(click_row(len(rows), sent[-1]))
    return rows


def expected_outputs(rows):
    """What each sink must hold, from the job's semantics (sql/flink/*.sql)."""
    columns = [name for name, _ in job.CLICK_COLUMNS + RECORD_COLUMNS]
    seen, watermark, newest = set(), None, None
    windows = collections.Counter()
    out = {"counts": [], "late": [], "dlq": [], "top": []}
    for row in rows:
        r = dict(zip(columns, row))
        event_ms = r["click_ts"] or 0  # a rejected record's event time is 0
        if r["reject_reason"]:
            out["dlq"].append((r["reject_reason"], base64.b64encode(r["payload"]).decode(),
                               r["kafka_partition"], r["kafka_offset"], r["kafka_ms"]))
        elif r["click_id"] not in seen:
            seen.add(r["click_id"])
            minute = event_ms - event_ms % config.WINDOW_MS
            closes = minute + config.WINDOW_MS - 1
            key = (minute, r["ad_id"], r["country"], r["device"])
            if watermark is None or watermark < closes:
                windows[key] += 1
            elif watermark < closes + ALLOWED_LATENESS_S * 1000:
                out["counts"].append((*key, 1, True, r["click_id"], watermark))
            else:
                out["late"].append((minute, r["click_id"], r["ad_id"], watermark))
        # The row's own watermark follows it.
        newest = event_ms if newest is None else max(newest, event_ms)
        watermark = max(watermark or 0, newest - WATERMARK_DELAY_MS)
    out["counts"] += [(*key, clicks, False, None, None) for key, clicks in windows.items()]
    per_ad = collections.defaultdict(collections.Counter)
    for (minute, ad, _country, _device), clicks in windows.items():
        per_ad[minute][ad] += clicks
    for minute, ads in per_ad.items():
        out["top"].append((minute, tuple(sorted(ads.items(), key=rank_key)[:TOP_N])))
    return {name: sorted(values, key=repr) for name, values in out.items()}


def millis(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00"))
               .astimezone(timezone.utc).timestamp() * 1000)


def read_sink(directory):
    return [json.loads(line) for path in sorted(directory.rglob("part-*"))
            for line in path.read_text().splitlines() if line.strip()]


def actual_outputs(out_dir):
    counts = [(millis(r["minute"]), r["ad_id"], r["country"], r["device"], r["clicks"], r["late"],
               r["click_id"], millis(r["watermark"]) if r["watermark"] else None)
              for r in read_sink(out_dir / "counts")]
    late = [(millis(r["minute"]), r["click_id"], r["ad_id"], millis(r["watermark"]))
            for r in read_sink(out_dir / "late")]
    dlq = [(r["reason"], r["payload_base64"], r["source_partition"], r["source_offset"],
            millis(r["source_timestamp"])) for r in read_sink(out_dir / "dlq")]
    top = [(millis(r["minute"]), tuple((e["ad_id"], e["clicks"]) for e in r["top"]))
           for r in read_sink(out_dir / "top")]
    out = {"counts": counts, "late": late, "dlq": dlq, "top": top}
    return {name: sorted(values, key=repr) for name, values in out.items()}


# The job's clock stage left out: time is the clicks' own watermark, and the dedup has one
# input, whose records and watermarks arrive in the order the source emitted them.
WITHOUT_CLOCK = ("SELECT click_id, ad_id, click_ts_ms, user_id, ip, country, device, proc_time,"
                 " event_time, click_key_hi, click_key_lo FROM clicks_valid")


def bind_in_memory(env, t_env, rows, out_dir):
    """The pipeline's logical tables: clicks_raw from rows (one ordered source), sinks into
    JSON files (no job_clock: the test leaves out the stage that reads it)."""
    columns = job.CLICK_COLUMNS + RECORD_COLUMNS
    stream = env.from_collection(rows, type_info=Types.ROW_NAMED(
        [name for name, _ in columns], [TYPE_INFO[sql_type] for _, sql_type in columns]))
    schema = Schema.new_builder()
    for name, sql_type in columns:
        schema = schema.column(name, sql_type)
    schema = (schema
              .column_by_expression("kafka_timestamp", "TO_TIMESTAMP_LTZ(kafka_ms, 3)")
              .column_by_expression("proc_time", "PROCTIME()")
              .column_by_expression("event_time", "TO_TIMESTAMP_LTZ(COALESCE(click_ts, 0), 3)")
              .watermark("event_time", f"event_time - INTERVAL '{WATERMARK_DELAY_MS // 1000}'"
                                       " SECOND")
              .build())
    t_env.create_temporary_view("clicks_raw", t_env.from_data_stream(stream, schema))
    for name, sink_columns in job.SINK_COLUMNS.items():
        t_env.create_temporary_table(f"{name}_sink", TableDescriptor.for_connector("filesystem")
                                     .schema(job.sink_schema(sink_columns))
                                     .option("path", (out_dir / name).as_uri())
                                     .format("json")
                                     .option("json.timestamp-format.standard", "ISO-8601")
                                     .build())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # The Python top-N merge in a worker process of its own: in PyFlink's default local
    # "loopback" mode it runs inside this pytest process and leaves PYFLINK_GATEWAY_DISABLED
    # in its environment, which broke every job a later test started from here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("_python_worker_execution_mode", "process")
        yield run_pipeline(tmp_path_factory.mktemp("pipeline-logic"))
    assert "PYFLINK_GATEWAY_DISABLED" not in os.environ


def run_pipeline(work):
    rows = make_rows()
    args = job.parse_args([
        "--parallelism", "2", "--checkpoint-interval-ms", "1000",
        "--checkpoint-dir", (work / "checkpoints").as_uri(),
        "--watermark-delay-ms", str(WATERMARK_DELAY_MS),
        "--allowed-lateness-s", str(ALLOWED_LATENESS_S), "--top-n", str(TOP_N),
        "--top-n-buckets", "2"])
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    t_env.get_config().set("pipeline.auto-watermark-interval", f"{EMIT_INTERVAL_MS} ms")
    bind_in_memory(env, t_env, rows, work / "out")
    statements = job.build_pipeline(t_env, args, replace={"clicks_and_clock": WITHOUT_CLOCK})
    plan = statements.explain()
    statements.execute().wait(300_000)
    return rows, plan, work / "out"


def test_the_in_memory_source_feeds_the_dedup_alone(run):
    _rows, plan, _out = run
    lines = plan[plan.index("== Optimized Execution Plan =="):].splitlines()
    dedups = [i for i, line in enumerate(lines) if "Deduplicate(keep=[FirstRow]" in line]
    assert len(dedups) == 1
    # Under the dedup's shuffle: the valid clicks straight from the source, no union with a clock.
    exchange, below = lines[dedups[0] + 1], lines[dedups[0] + 2]
    assert "Exchange(" in exchange and "Union(" not in below and "reject_reason IS NULL" in below


def test_the_data_exercises_every_path(run):
    rows, _plan, _out = run
    expected = expected_outputs(rows)
    assert any(late for *_, late, _id, _wm in expected["counts"])
    assert expected["late"] and expected["dlq"] and expected["top"]
    ids = [row[0] for row in rows if row[0] is not None]
    assert len(ids) > len(set(ids))  # duplicates
    assert any(len(top) == TOP_N for _minute, top in expected["top"])


@pytest.mark.parametrize("sink", ["counts", "late", "dlq", "top"])
def test_each_sink_holds_what_the_semantics_say(run, sink):
    rows, _plan, out_dir = run
    assert actual_outputs(out_dir)[sink] == expected_outputs(rows)[sink]
