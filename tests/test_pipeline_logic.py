"""The job's transformation, without Kafka: rows in memory in, files out, against a truth.

The pipeline (jobs/ad_click_aggregation.py build_pipeline over sql/flink/, attached as the job
attaches it: with its compact dedup) runs at parallelism 2 on a local MiniCluster over parse
results held in memory (valid clicks and impressions, duplicates, rejected records, events late
and too late, and conversions: attributed, before their click, outside the attribution window,
of unknown or too-late clicks, repeated), its seven sinks bound to JSON files, the job's clock
stage left out. A small model of the job's semantics (dedup first wins; each unique event
classed against the watermark the classifier saw; the invalid-traffic label of each counted
event; windows; top-N by valid clicks; each unique conversion joined to its counted
click, with its label) computes what each sink must hold, and the test requires the same
rows.

Late clicks may change the labels of clicks decided before them (a revision: -1 under the old
label, +1 under the new), and which clicks a late one finds decided depends on when the
labelling's minute closed against its arrival, which two parallel inputs do not fix. So the
late rows are compared by what they add up to, per key and label, and by the ids they carry;
and the clicks that come late use users and ips of their own, so that no on-time click's label
(what the windows and the top-N count) ever depends on them.

The watermark is exact here because the clicks and impressions come from one ordered,
non-parallel source whose watermark follows each row that advances it by more than the emit
interval (the rows are built so), and without the clock the dedup reads that source alone, so
each event is classed against the watermark of the rows before it.
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
from adclick import invalid_traffic
from adclick.contract import CLICK
from adclick.contract import CONVERSION
from jobs import ad_click_aggregation as job
from udfs.top_n import rank_key

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WATERMARK_DELAY_MS = 5_000
ALLOWED_LATENESS_S = 120
ATTRIBUTION_WINDOW_S = 180
TOP_N = 3
EMIT_INTERVAL_MS = 200  # pipeline.auto-watermark-interval: a larger advance is emitted at once
ADS = ["a1", "a2", "a3", "a4", "a5", "a6"]

# One in-memory source for clicks and impressions (same shape: kind tells them apart), so
# their watermark is one: an event's id and time under generic names, the format's own
# columns, and the Kafka record's coordinates.
EVENT_COLUMNS = [("kind", "STRING"), ("id", "STRING"), ("ad_id", "STRING"), ("ts", "BIGINT"),
                 ("user_id", "STRING"), ("ip", "STRING"), ("country", "STRING"),
                 ("device", "STRING"), ("user_agent", "STRING")]
FORMAT_COLUMNS = [("reject_reason", "STRING"), ("payload", "BYTES"), ("key_hi", "BIGINT"),
                  ("key_lo", "BIGINT"), ("traffic", "STRING")]
REPEAT_MS = config.REPEAT_CLICK_WINDOW_SECONDS * 1000
IP_WINDOW_MS = config.IP_FREQUENCY_WINDOW_SECONDS * 1000
RECORD_COLUMNS = [("kafka_partition", "INT"), ("kafka_offset", "BIGINT"), ("kafka_ms", "BIGINT")]
CONVERSION_COLUMNS = job.source_columns(CONVERSION) + RECORD_COLUMNS
TYPE_INFO = {"STRING": Types.STRING(), "BIGINT": Types.LONG(), "INT": Types.INT(),
             "BYTES": Types.PRIMITIVE_ARRAY(Types.BYTE())}


def fingerprint(event_id):
    """The dedup key, as udfs/java/.../EventKey.java computes it."""
    digest = hashlib.md5(event_id.encode("ascii")).digest()
    return (int.from_bytes(digest[:8], "big", signed=True),
            int.from_bytes(digest[8:], "big", signed=True))


def event_row(offset, kind, event, traffic=None):
    """traffic: the format's label (a crawler's user agent, a data-center ip), or None."""
    hi, lo = fingerprint(event[0])
    return (kind, *event, None, None, hi, lo, traffic, offset % config.PARTITIONS, offset,
            T0 + offset)


def rejected_row(offset, kind, reason, payload):
    return (kind, *([None] * (len(EVENT_COLUMNS) - 1)), reason, payload, None, None, None,
            offset % config.PARTITIONS, offset, T0 + offset)


def ip_key(ip):
    """The ip_frequency rule's key (IpAddress.java): the IPv4 address, or the IPv6 /64."""
    if ":" not in ip:
        return ip
    return ":".join(ip.split(":")[:4])  # the test's IPv6 addresses are written in full


def click_labels(clicks):
    """{click_id: label} of counted clicks [(ad, ts, id, user, ip, traffic)], from all of them
    (sql/flink/25_traffic_labels.sql): the format's label, else repeat_click, ip_frequency or
    valid against the ad's earlier clicks in (ts, id) order."""
    labels = {}
    by_ad = collections.defaultdict(list)
    for click in clicks:
        by_ad[click[0]].append(click)
    for ad_clicks in by_ad.values():
        ad_clicks.sort(key=lambda click: (click[1], click[2]))
        for i, (_ad, ts, click_id, user, ip, traffic) in enumerate(ad_clicks):
            earlier = ad_clicks[:i]
            if traffic:
                labels[click_id] = traffic
            elif any(e[3] == user and ts - e[1] < REPEAT_MS for e in earlier):
                labels[click_id] = "repeat_click"
            elif sum(ip_key(e[4]) == ip_key(ip) and ts - e[1] < IP_WINDOW_MS
                     for e in earlier) >= config.IP_FREQUENCY_THRESHOLD:
                labels[click_id] = "ip_frequency"
            else:
                labels[click_id] = "valid"
    return labels


def make_rows(seed=5):
    """Parse results in arrival order: clicks and impressions moving forward in time, with
    duplicates, out-of-order, late and too-late events and rejected records among them."""
    rng = random.Random(seed)
    rows, sent = [], []
    newest = T0

    def event(ts, serial=None, behind=False):
        # Few users and ip keys, so that the rules fire; the late ones (behind) their own.
        ad = ADS[min(int(rng.paretovariate(1.2)) - 1, len(ADS) - 1)]
        if behind:
            user, ip = rng.choice(["late-u1", "late-u2"]), rng.choice(["198.51.100.7",
                                                                        "198.51.100.8"])
        else:
            user = rng.choice(["u1", "u2", "u3", "u4", "u5", "u6"])
            ip = rng.choice(["192.0.2.1", "192.0.2.2", "2001:db8:0:1:0:0:0:1",
                             "2001:db8:0:1:ffff:0:0:2", "2001:db8:0:2:0:0:0:1"])
        return CLICK.Event(f"c{len(sent) if serial is None else serial}", ad, ts, user, ip,
                           rng.choice(["KR", "US"]), rng.choice(["mobile", "desktop"]),
                           None)

    while newest < T0 + 9 * config.WINDOW_MS:
        # Every event that moves time forward moves it by more than the emit interval.
        newest += rng.randrange(EMIT_INTERVAL_MS + 100, 1500)
        # Impressions outnumber clicks; some share a click's id (another id space).
        kind = "impression" if rng.random() < 0.6 else "click"
        roll = rng.random()
        if roll < 0.07 and sent:  # a producer's retry: the same id, maybe other fields
            first_kind, first = rng.choice(sent)
            retry = first if rng.random() < 0.5 else event(first.click_ts, first.click_id[1:])
            rows.append(event_row(len(rows), first_kind, retry))
            continue
        if roll < 0.12:
            rows.append(rejected_row(len(rows), kind, "bad_ad_id", b'{"ad_id": "?"}'))
            continue
        behind = 0
        if roll < 0.2:  # behind the newest: out of order (on time), late or too late
            behind = rng.choice([2_000, 70_000, 70_000, 100_000, 100_000, 200_000, 330_000])
        serial = len(sent) - 1 if kind == "impression" and sent and rng.random() < 0.1 else None
        sent.append((kind, event(newest - behind, serial, behind > 60_000)))
        traffic = rng.choice(["bot_user_agent", "datacenter_ip"]) if rng.random() < 0.1 else None
        rows.append(event_row(len(rows), kind, sent[-1][1], traffic))
        if kind == "click" and behind > 60_000 and rng.random() < 0.6:
            # The same user's earlier clicks on that ad, arriving after it: each makes the one
            # before it a repeat_click, and if that one was decided already, a revision.
            for step in (1, 2):
                first = sent[-step][1]
                sent.append((kind, first._replace(click_id=f"c{len(sent)}",
                                                  click_ts=first.click_ts - 3_000)))
                rows.append(event_row(len(rows), kind, sent[-1][1]))
    return rows


def make_conversions(rows, seed=6):
    """Conversion parse results: of clicks sent (within the attribution window, before the
    click, after the window), of unknown click ids, repeated, and rejected. Not of clicks
    counted late: a revision may change such a click's label after its conversions met it."""
    rng = random.Random(seed)
    click_ids = sorted(r["id"] for r, timeliness, _ in classify(rows)
                       if r["kind"] == "click" and timeliness != "late")
    click_ts = {row[1]: row[3] for row in reversed(rows) if row[0] == "click" and row[1]}
    out = []

    def conversion(click_id, ts):
        kind = rng.choice(["purchase", "signup", "inquiry"])
        value = rng.randrange(1, 10**9) if kind == "purchase" else None
        return CONVERSION.Event(f"v{len(out)}", click_id, ts, kind, value)

    def add(event):
        hi, lo = fingerprint(event.conversion_id)
        offset = len(out)
        out.append((*event, None, None, hi, lo, None, offset % config.PARTITIONS, offset,
                    T0 + offset))

    for click_id in rng.sample(click_ids, len(click_ids) // 3):
        ts = click_ts[click_id]
        roll = rng.random()
        if roll < 0.15:
            ts -= rng.randint(1, 60_000)  # before its click
        elif roll < 0.3:
            ts += ATTRIBUTION_WINDOW_S * 1000 + rng.randint(0, 60_000)  # after the window
        else:
            ts += rng.randint(0, ATTRIBUTION_WINDOW_S * 1000 - 1)
        add(conversion(click_id, ts))
        if rng.random() < 0.1:  # the advertiser's retry: the same conversion_id
            first = out[-1]
            add(CONVERSION.Event(first[0], first[1], first[2] + 1, "signup", None))
    for _ in range(20):
        add(conversion(f"unknown-{rng.randrange(10**6)}", T0 + rng.randrange(600_000)))
    for _ in range(5):
        offset = len(out)
        out.append((*([None] * len(CONVERSION.fields)), "bad_type", b'{"type": "?"}', None, None,
                    None, offset % config.PARTITIONS, offset, T0 + offset))
    rng.shuffle(out)  # conversions arrive in any order against the clicks
    return out


def classify(rows):
    """Each unique event's first row and its timeliness against the watermark the classifier
    saw: [(row as a dict, on_time | late | too_late, that watermark)], in arrival order."""
    columns = [name for name, _ in EVENT_COLUMNS + FORMAT_COLUMNS + RECORD_COLUMNS]
    seen, watermark, newest, out = set(), None, None, []
    for row in rows:
        r = dict(zip(columns, row))
        event_ms = r["ts"] or 0  # a rejected record's event time is 0
        if not r["reject_reason"] and (r["kind"], r["id"]) not in seen:
            seen.add((r["kind"], r["id"]))
            closes = event_ms - event_ms % config.WINDOW_MS + config.WINDOW_MS - 1
            if watermark is None or watermark < closes:
                out.append((r, "on_time", watermark))
            elif watermark < closes + ALLOWED_LATENESS_S * 1000:
                out.append((r, "late", watermark))
            else:
                out.append((r, "too_late", watermark))
        # The row's own watermark follows it.
        newest = event_ms if newest is None else max(newest, event_ms)
        watermark = max(watermark or 0, newest - WATERMARK_DELAY_MS)
    return out


def expected_outputs(rows, conversions):
    """What each sink must hold, from the job's semantics (sql/flink/*.sql). The late rows of
    counts (corrections and revisions) as late_net: their sums per key and label, and as
    late_ids: the ids they add, less those they take back (each late event's once)."""
    columns = [name for name, _ in EVENT_COLUMNS + FORMAT_COLUMNS + RECORD_COLUMNS]
    windows = collections.defaultdict(collections.Counter)
    late_net = collections.defaultdict(collections.Counter)
    out = {"counts": [], "late_net": [], "late_ids": [], "late": [], "dlq": [], "top": [],
           "conversions_unique": [], "attributions": [], "minutes": []}
    for row in rows:
        r = dict(zip(columns, row))
        if r["reject_reason"]:
            out["dlq"].append((r["kind"], r["reject_reason"],
                               base64.b64encode(r["payload"]).decode(), r["kafka_partition"],
                               r["kafka_offset"], r["kafka_ms"]))
    timed = classify(rows)
    counted = [(r, timeliness) for r, timeliness, _ in timed if timeliness != "too_late"]
    labels = click_labels([(r["ad_id"], r["ts"], r["id"], r["user_id"], r["ip"], r["traffic"])
                           for r, _ in counted if r["kind"] == "click"])
    counted_clicks = {}
    for r, timeliness, watermark in timed:
        minute = r["ts"] - r["ts"] % config.WINDOW_MS
        if timeliness == "too_late":
            out["late"].append((minute, r["kind"], r["id"], r["ad_id"], watermark))
            continue
        label = labels[r["id"]] if r["kind"] == "click" else r["traffic"] or "valid"
        key = (minute, r["ad_id"], r["country"], r["device"], label)
        if timeliness == "on_time":
            windows[key][r["kind"]] += 1
        else:
            late_net[key][r["kind"]] += 1
            out["late_ids"].append((r["kind"], r["id"], 1))
        if r["kind"] == "click":
            counted_clicks[r["id"]] = dict(r, label=label)
    out["counts"] = [(*key, kinds["click"], kinds["impression"], False, None, None, None)
                     for key, kinds in windows.items()]
    out["late_net"] = [(*key, kinds["click"], kinds["impression"])
                       for key, kinds in late_net.items()]
    per_ad = collections.defaultdict(collections.Counter)
    for (minute, ad, _country, _device, label), kinds in windows.items():
        if kinds["click"] and label == "valid":
            per_ad[minute][ad] += kinds["click"]
    for minute, ads in per_ad.items():
        out["top"].append((minute, tuple(sorted(ads.items(), key=rank_key)[:TOP_N])))
        # Without the clock, the minutes with a top list; each with the rules it was labelled
        # under, as the jar says them (the lists it carries) and as Python reads the same lists.
        out["minutes"].append((minute, invalid_traffic.rules_version()))
    names = [name for name, _ in CONVERSION_COLUMNS]
    first = {}
    for row in conversions:  # in arrival order
        c = dict(zip(names, row))
        if c["reject_reason"]:
            out["dlq"].append(("conversion", c["reject_reason"],
                               base64.b64encode(c["payload"]).decode(), c["kafka_partition"],
                               c["kafka_offset"], c["kafka_ms"]))
        else:
            first.setdefault(c["conversion_id"], c)
    for c in first.values():
        minute = c["conversion_ts"] - c["conversion_ts"] % config.WINDOW_MS
        out["conversions_unique"].append((minute, c["conversion_id"], c["click_id"], c["type"],
                                          c["value_micros"], c["conversion_ts"]))
        click = counted_clicks.get(c["click_id"])
        if click is None:
            continue
        if c["conversion_ts"] < click["ts"]:
            outcome = "before_click"
        elif c["conversion_ts"] >= click["ts"] + ATTRIBUTION_WINDOW_S * 1000:
            outcome = "outside_window"
        else:
            outcome = "attributed"
        out["attributions"].append((minute, click["ad_id"], click["country"], click["device"],
                                    click["label"], c["conversion_id"], c["click_id"], c["type"],
                                    c["value_micros"], c["conversion_ts"], click["ts"], outcome))
    return {name: sorted(values, key=repr) for name, values in out.items()}


def millis(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00"))
               .astimezone(timezone.utc).timestamp() * 1000)


def read_sink(directory):
    return [json.loads(line) for path in sorted(directory.rglob("part-*"))
            for line in path.read_text().splitlines() if line.strip()]


def actual_outputs(out_dir):
    rows = read_sink(out_dir / "counts")
    counts = [(millis(r["minute"]), r["ad_id"], r["country"], r["device"], r["traffic"],
               r["clicks"], r["impressions"], r["late"], r["event"], r["event_id"],
               millis(r["watermark"]) if r["watermark"] else None)
              for r in rows if not r["late"]]
    late_net = collections.defaultdict(collections.Counter)
    late_ids = collections.Counter()
    for r in rows:
        if r["late"]:
            key = (millis(r["minute"]), r["ad_id"], r["country"], r["device"], r["traffic"])
            late_net[key]["click"] += r["clicks"]
            late_net[key]["impression"] += r["impressions"]
            late_ids[(r["event"], r["event_id"])] += r["clicks"] + r["impressions"]
    late = [(millis(r["minute"]), r["event"], r["event_id"], r["ad_id"], millis(r["watermark"]))
            for r in read_sink(out_dir / "late")]
    dlq = [(r["event"], r["reason"], r["payload_base64"], r["source_partition"],
            r["source_offset"], millis(r["source_timestamp"])) for r in read_sink(out_dir / "dlq")]
    top = [(millis(r["minute"]), tuple((e["ad_id"], e["clicks"]) for e in r["top"]))
           for r in read_sink(out_dir / "top")]
    conversions = [(millis(r["minute"]), r["conversion_id"], r["click_id"], r["type"],
                    r["value_micros"], r["conversion_ts"])
                   for r in read_sink(out_dir / "conversions_unique")]
    attributions = [(millis(r["minute"]), r["ad_id"], r["country"], r["device"], r["traffic"],
                     r["conversion_id"], r["click_id"], r["type"], r["value_micros"],
                     r["conversion_ts"], r["click_ts"], r["outcome"])
                    for r in read_sink(out_dir / "attributions")]
    minutes = [(millis(r["minute"]), r["traffic_rules"]) for r in read_sink(out_dir / "minutes")]
    out = {"counts": counts, "late": late, "dlq": dlq, "top": top,
           "conversions_unique": conversions, "attributions": attributions,
           "minutes": minutes,
           "late_net": [(*key, n["click"], n["impression"]) for key, n in late_net.items()
                        if n["click"] or n["impression"]],
           "late_ids": [(*key, n) for key, n in late_ids.items() if n]}
    return {name: sorted(values, key=repr) for name, values in out.items()}


# The job's clock stage left out: time is the events' own watermark, and the dedup has one
# input, whose records and watermarks arrive in the order the source emitted them. It reads
# the valid events straight from the one source: through events_valid's union of the clicks'
# and the impressions' branches, a record of one branch may overtake a watermark still
# travelling in the other, and meet an older watermark than the model's (the rejected records
# still go through the job's own events_rejected).
WITHOUT_CLOCK = ("SELECT kind AS event, id AS event_id, ad_id, ts AS event_ts_ms, user_id, ip,"
                 " country, device, proc_time, event_time, key_hi, key_lo, traffic FROM events_mem"
                 " WHERE reject_reason IS NULL")


def in_memory_table(env, t_env, rows, columns, event_time=True):
    stream = env.from_collection(rows, type_info=Types.ROW_NAMED(
        [name for name, _ in columns], [TYPE_INFO[sql_type] for _, sql_type in columns]))
    schema = Schema.new_builder()
    for name, sql_type in columns:
        schema = schema.column(name, sql_type)
    schema = (schema
              .column_by_expression("kafka_timestamp", "TO_TIMESTAMP_LTZ(kafka_ms, 3)")
              .column_by_expression("proc_time", "PROCTIME()"))
    if event_time:
        schema = (schema
                  .column_by_expression("event_time", "TO_TIMESTAMP_LTZ(COALESCE(ts, 0), 3)")
                  .watermark("event_time", f"event_time - INTERVAL '{WATERMARK_DELAY_MS // 1000}'"
                                           " SECOND"))
    return t_env.from_data_stream(stream, schema.build())


def bind_in_memory(env, t_env, rows, conversions, out_dir):
    """The pipeline's logical tables: clicks_raw and impressions_raw from rows (one ordered
    source), conversions_raw from conversions, sinks into JSON files (no job_clock: the test
    leaves out the stages that read it)."""
    t_env.create_temporary_view("events_mem", in_memory_table(
        env, t_env, rows, EVENT_COLUMNS + FORMAT_COLUMNS + RECORD_COLUMNS))
    own = ", ".join(name for name, _ in FORMAT_COLUMNS + RECORD_COLUMNS)
    for kind in ("click", "impression"):
        t_env.create_temporary_view(f"{kind}s_raw", t_env.sql_query(
            f"SELECT id AS {kind}_id, ad_id, ts AS {kind}_ts, user_id, ip, country, device,"
            " user_agent,"
            f" {own}, kafka_timestamp, proc_time, event_time FROM events_mem"
            f" WHERE kind = '{kind}'"))
    t_env.create_temporary_view("conversions_raw", in_memory_table(
        env, t_env, conversions, CONVERSION_COLUMNS, event_time=False))
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
    conversions = make_conversions(rows)
    args = job.parse_args([
        "--parallelism", "2", "--checkpoint-interval-ms", "1000",
        "--checkpoint-dir", (work / "checkpoints").as_uri(),
        "--watermark-delay-ms", str(WATERMARK_DELAY_MS),
        "--allowed-lateness-s", str(ALLOWED_LATENESS_S), "--top-n", str(TOP_N),
        "--top-n-buckets", "2", "--attribution-window-s", str(ATTRIBUTION_WINDOW_S)])
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    t_env.get_config().set("pipeline.auto-watermark-interval", f"{EMIT_INTERVAL_MS} ms")
    bind_in_memory(env, t_env, rows, conversions, work / "out")
    statements = job.build_pipeline(t_env, args, replace={
        "events_and_clock": WITHOUT_CLOCK,
        # No clock ticks: the minutes closed are those of the local top lists.
        "minute_beats": "SELECT minute_time FROM local_top_ads"})
    plan = statements.explain()
    # As the job runs: the compact dedup in place of the planner's (attach_job).
    job.attach_job(env, statements, args)
    env.execute("pipeline-logic")
    return rows, conversions, plan, work / "out"


def test_the_in_memory_source_feeds_the_dedup_alone(run):
    _rows, _conversions, plan, _out = run
    lines = plan[plan.index("== Optimized Execution Plan =="):].splitlines()
    dedup = next(i for i, line in enumerate(lines)
                 if "Deduplicate(keep=[FirstRow], key=[kind, key_hi, key_lo]" in line)
    # Under the dedup's shuffle: the valid events from the one source, no union with a clock.
    exchange, below = lines[dedup + 1], lines[dedup + 2]
    assert "Exchange(" in exchange and "Union(" not in below and "reject_reason IS NULL" in below


def test_the_data_exercises_every_path(run):
    rows, conversions, _plan, _out = run
    expected = expected_outputs(rows, conversions)
    assert {kind for kind, _id, _n in expected["late_ids"]} == {"click", "impression"}
    # Every label, for on-time and for late clicks; impressions only get the format's.
    click_labels_seen = {key[4] for key in expected["counts"] if key[5]}
    assert click_labels_seen == {"valid", *config.TRAFFIC_REASONS}
    assert {key[4] for key in expected["late_net"] if key[5]} >= {"valid", "repeat_click"}
    assert {key[4] for key in expected["counts"] if key[6]} == {"valid", "bot_user_agent",
                                                                 "datacenter_ip"}
    # Late clicks that a later late click precedes in event time: revisions to make.
    late = [r for r, timeliness, _ in classify(rows)
            if r["kind"] == "click" and timeliness == "late"]
    assert any(a["ad_id"] == b["ad_id"] and a["user_id"] == b["user_id"]
               and 0 <= a["ts"] - b["ts"] < REPEAT_MS
               for i, a in enumerate(late) for b in late[i + 1:])
    assert {kind for _m, kind, *_ in expected["late"]} == {"click", "impression"}
    assert {kind for kind, *_ in expected["dlq"]} == {"click", "impression", "conversion"}
    assert expected["top"] and any(len(top) == TOP_N for _minute, top in expected["top"])
    ids = [(row[0], row[1]) for row in rows if row[1] is not None]
    assert len(ids) > len(set(ids))  # duplicates
    shared = {row[1] for row in rows if row[0] == "click"} & \
        {row[1] for row in rows if row[0] == "impression"}
    assert shared - {None}  # a click and an impression with one id: both count
    outcomes = collections.Counter(row[-1] for row in expected["attributions"])
    assert set(outcomes) == {"attributed", "before_click", "outside_window"}
    # Conversions of valid and of invalid clicks, each under its click's label.
    assert len({row[4] for row in expected["attributions"]}) > 2
    conversion_ids = [row[0] for row in conversions if row[0] is not None]
    assert len(conversion_ids) > len(set(conversion_ids))  # repeated conversions
    attributed = {row[4] for row in expected["attributions"]}
    unmatched = [row for row in expected["conversions_unique"] if row[1] not in attributed]
    assert any(row[2].startswith("unknown-") for row in unmatched)
    # A conversion of a click that was too late to count: never attributed.
    too_late = {row[2] for row in expected["late"] if row[1] == "click"}
    assert any(row[2] in too_late for row in unmatched)


@pytest.mark.parametrize("sink", [*job.SINK_COLUMNS, "late_net", "late_ids"])
def test_each_sink_holds_what_the_semantics_say(run, sink):
    rows, conversions, _plan, out_dir = run
    assert actual_outputs(out_dir)[sink] == expected_outputs(rows, conversions)[sink]
