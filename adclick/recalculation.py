"""Recalculation: count closed minutes again from the raw store, with the job's own pipeline.

A request names a range of closed minutes [start, end), maybe some ads, and a reason. The raw
events that can matter to those minutes are exported from the store as JSON lines: the
clicks and impressions of the range and of the invalid-traffic rules' look-back before it, the
conversions of the range, and the clicks those conversions name, with the look-back before
each. `jobs/recalculation.py` runs the streaming job's statements over them in Flink's batch
mode, and what it computes for the range is set against what the store holds, per (minute,
ad, metric): old, new and the difference, and the totals.

This is the dry run: nothing is written. (Publishing the new numbers is not built yet.)

The batch counts every unique event the raw store holds for a minute, on time or not: the live
job's counts equal it for minutes that had no event too late to count; `jobs/recalculation.py`
says what else differs.
"""

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

from adclick import config
from adclick import store

ROOT = Path(__file__).resolve().parent.parent
# (stream, label) -> metric; invalid ones are those of any reason.
METRICS = ("clicks", "invalid_clicks", "impressions", "invalid_impressions", "conversions",
           "invalid_conversions", "rank")
MAX_ADS = 10_000
MAX_RANGE = timedelta(days=31)
# The job's settings a request may set for its batch (the rules' thresholds and the top-N),
# with the largest value each may take.
SETTINGS = {
    "top_n": 10_000,
    "repeat_click_window_s": 999,
    "ip_frequency_window_s": 999,
    "ip_frequency_threshold": 1_000_000,
    "attribution_window_s": 30 * 86400,
}
_AD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Refused(Exception):
    """The request cannot be run; the message says why."""


@dataclass(frozen=True)
class Request:
    start: datetime
    end: datetime
    ads: tuple = ()
    reason: str = ""
    dry_run: bool = True
    settings: dict = field(default_factory=dict)

    def settings_or_defaults(self):
        values = {"top_n": config.TOP_N,
                  "repeat_click_window_s": config.REPEAT_CLICK_WINDOW_SECONDS,
                  "ip_frequency_window_s": config.IP_FREQUENCY_WINDOW_SECONDS,
                  "ip_frequency_threshold": config.IP_FREQUENCY_THRESHOLD,
                  "attribution_window_s": config.ATTRIBUTION_WINDOW_SECONDS}
        values.update(self.settings)
        return values


def parse_time(value, name):
    """An ISO 8601 instant on a whole minute (naive means UTC)."""
    if not isinstance(value, str):
        raise Refused(f"'{name}' must be an ISO 8601 time, e.g. 2026-12-07T10:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f"'{name}' is not an ISO 8601 time: {value[:40]!r}") from None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    moment = moment.astimezone(timezone.utc)
    if moment.second or moment.microsecond:
        raise Refused(f"'{name}' must be on a whole minute: {value[:40]}")
    return moment


def parse_request(body):
    """A Request from a JSON object {from, to, ads?, reason?, dry_run?, settings?}."""
    if not isinstance(body, dict):
        raise Refused("the request must be a JSON object")
    unknown = set(body) - {"from", "to", "ads", "reason", "dry_run", "settings"}
    if unknown:
        raise Refused(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("from", "to"):
        if name not in body:
            raise Refused(f"'{name}' is required")
    start, end = parse_time(body["from"], "from"), parse_time(body["to"], "to")
    if end <= start:
        raise Refused("'to' must be after 'from'")
    if end - start > MAX_RANGE:
        raise Refused(f"a range of at most {MAX_RANGE.days} days")
    ads = body.get("ads") or []
    if (not isinstance(ads, list) or len(ads) > MAX_ADS
            or not all(isinstance(ad, str) and _AD_ID.match(ad) for ad in ads)):
        raise Refused(f"'ads' must be a list of at most {MAX_ADS} ad ids")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise Refused("'reason' must be a text of at most 500 characters")
    dry_run = body.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise Refused("'dry_run' must be true or false")
    if not dry_run:
        raise Refused("publishing a recalculation is not built yet: only dry runs")
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise Refused("'settings' must be an object")
    for name, value in settings.items():
        if name not in SETTINGS:
            raise Refused(f"unknown setting {name!r} (known: {', '.join(SETTINGS)})")
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not 1 <= value <= SETTINGS[name]:
            raise Refused(f"setting {name!r} must be a whole number from 1 to {SETTINGS[name]}")
    request = Request(start, end, tuple(sorted(set(ads))), reason, dry_run, dict(settings))
    chosen = request.settings_or_defaults()
    if chosen["repeat_click_window_s"] > chosen["ip_frequency_window_s"]:
        raise Refused("the repeat_click window must be at most the ip_frequency window")
    return request


# The latest closed minute, and the raw store's first: the range must lie between them.
BOUNDS = """
SELECT (SELECT max(minute) FROM {db:Identifier}.minutes_closed),
       (SELECT min(minute) FROM {db:Identifier}.raw_clicks)
"""


def check_range(client, db, request):
    """Refused unless every minute of the range is closed and the raw store holds it."""
    closed, first_raw = client.query(BOUNDS, parameters={"db": store.check_identifier(db)}
                                     ).result_rows[0]
    if closed is None or _utc(closed) + timedelta(minutes=1) < request.end:
        raise Refused(f"minutes after {iso(closed) if closed else 'none'} are not closed yet:"
                      " only closed minutes can be recalculated")
    if first_raw is None or _utc(first_raw) > request.start:
        held = f"from {iso(first_raw)} on" if first_raw else "no clicks"
        raise Refused(f"the raw store holds {held}: it no longer holds (or never held) the"
                      f" events of {iso(request.start)}")


# The exports: each contract's fields (times in epoch ms) and the Kafka record's coordinates.
CLICK_FIELDS = """click_id, ad_id, toUnixTimestamp64Milli(click_ts) AS click_ts, user_id, ip,
    country, device, user_agent, src_partition, src_offset"""
IMPRESSION_FIELDS = """impression_id, ad_id, toUnixTimestamp64Milli(impression_ts) AS
    impression_ts, user_id, ip, country, device, user_agent, src_partition, src_offset"""
CONVERSION_FIELDS = """conversion_id, click_id, toUnixTimestamp64Milli(conversion_ts) AS
    conversion_ts, toString(type) AS type, value_micros, src_partition, src_offset"""
ADS_FILTER = " AND (empty({ads:Array(String)}) OR has({ads:Array(String)}, ad_id))"
EVENTS_OF_MINUTE = """
SELECT {fields} FROM {db:Identifier}.{table:Identifier} FINAL
WHERE minute = {minute:DateTime}""" + ADS_FILTER
CONVERSIONS_OF_MINUTE = """
SELECT {fields} FROM {db:Identifier}.raw_conversions FINAL WHERE minute = {minute:DateTime}"""
# The clicks the range's conversions name, from before the exported minutes, with each one's
# look-back (the rules that label it read the ad's clicks before it).
NAMED_CLICKS = """
WITH named AS (
    SELECT DISTINCT ad_id, minute FROM {db:Identifier}.raw_clicks FINAL
    WHERE click_id IN (SELECT click_id FROM {db:Identifier}.raw_conversions FINAL
                       WHERE minute >= {start:DateTime} AND minute < {end:DateTime})
      AND minute >= {oldest:DateTime} AND minute < {first:DateTime}
)
SELECT {fields} FROM {db:Identifier}.raw_clicks FINAL
WHERE minute < {first:DateTime}
  AND (ad_id, minute) IN (SELECT ad_id, minute + toIntervalMinute(k) FROM named
                          ARRAY JOIN range(0, {lookback:UInt32} + 1) AS k)
"""


def lookback_minutes(settings):
    """Minutes before a click the rules read: the longer of their two windows, whole."""
    longest_s = max(settings["ip_frequency_window_s"], settings["repeat_click_window_s"])
    return math.ceil(longest_s / 60)


def export(client, db, request, folder):
    """Write the raw events the range's numbers depend on into folder/<input>/, JSON lines;
    returns how many of each."""
    settings = request.settings_or_defaults()
    lookback = lookback_minutes(settings)
    first = request.start - timedelta(minutes=lookback)
    base = {"db": store.check_identifier(db), "ads": list(request.ads)}
    counts = {}
    with _Lines(folder / "clicks") as clicks, _Lines(folder / "impressions") as impressions, \
            _Lines(folder / "conversions") as conversions:
        for minute in _minutes(first, request.end):
            for lines, table, fields in ((clicks, "raw_clicks", CLICK_FIELDS),
                                         (impressions, "raw_impressions", IMPRESSION_FIELDS)):
                lines.write(client.query(EVENTS_OF_MINUTE.replace("{fields}", fields),
                                         parameters={**base, "table": table, "minute": minute}))
            if minute >= request.start:
                conversions.write(client.query(
                    CONVERSIONS_OF_MINUTE.replace("{fields}", CONVERSION_FIELDS),
                    parameters={**base, "minute": minute}))
        oldest = request.start - timedelta(seconds=settings["attribution_window_s"],
                                           minutes=lookback + 1)
        clicks.write(client.query(NAMED_CLICKS.replace("{fields}", CLICK_FIELDS), parameters={
            "db": base["db"], "start": request.start, "end": request.end, "oldest": oldest,
            "first": first, "lookback": lookback}))
        counts = {"clicks": clicks.count, "impressions": impressions.count,
                  "conversions": conversions.count}
    return counts


class _Lines:
    """A JSON-lines file of query results (one file per input folder)."""

    def __init__(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.count, self.file = folder / "part-0.json", 0, None

    def __enter__(self):
        self.file = self.path.open("w")
        return self

    def write(self, result):
        names = result.column_names
        for row in result.result_rows:
            self.file.write(json.dumps(dict(zip(names, row)), separators=(",", ":")) + "\n")
            self.count += 1

    def __exit__(self, *exc):
        self.file.close()


def run_batch(folder, request, timeout_s):
    """jobs/recalculation.py over folder/ (its output in folder/out); the job's log if it
    fails."""
    settings = request.settings_or_defaults()
    argv = [sys.executable, "-m", "jobs.recalculation", "--input", str(folder),
            "--output", str(folder / "out"), "--parallelism", "1"]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(int(value))]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise Refused(f"the batch did not finish in {timeout_s} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"the batch failed (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")


def _read_lines(folder):
    for path in sorted(folder.glob("**/part-*")):
        with path.open() as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


def new_cells(out, request):
    """The batch's numbers for the range: {(minute ISO, ad, metric): value}."""
    cells = {}

    def add(minute, ad, metric, value):
        if _in_range(minute, request) and (not request.ads or ad in request.ads):
            key = (iso(_parse_sink_time(minute)), ad, metric)
            cells[key] = cells.get(key, 0) + value

    for row in _read_lines(out / "counts"):
        invalid = "" if row["traffic"] == "valid" else "invalid_"
        add(row["minute"], row["ad_id"], invalid + "clicks", row["clicks"])
        add(row["minute"], row["ad_id"], invalid + "impressions", row["impressions"])
    for row in _read_lines(out / "attributions"):
        if row["outcome"] == "attributed":
            invalid = "" if row["traffic"] == "valid" else "invalid_"
            add(row["minute"], row["ad_id"], invalid + "conversions", 1)
    if not request.ads:  # a top list ranks every ad of the minute
        for row in _read_lines(out / "top"):
            add(row["minute"], row["ad_id"], "rank", row["rank"])
    return cells


STORED_COUNTS = """
SELECT minute, ad_id, sumIf(clicks, traffic = 'valid'), sumIf(clicks, traffic != 'valid'),
       sumIf(impressions, traffic = 'valid'), sumIf(impressions, traffic != 'valid')
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= {start:DateTime} AND minute < {end:DateTime}""" + ADS_FILTER + """
GROUP BY minute, ad_id
"""
STORED_CONVERSIONS = """
SELECT minute, ad_id, countIf(traffic = 'valid'), countIf(traffic != 'valid')
FROM {db:Identifier}.conversion_attributions FINAL
WHERE outcome = 'attributed' AND minute >= {start:DateTime} AND minute < {end:DateTime}
""" + ADS_FILTER + """
GROUP BY minute, ad_id
"""
STORED_TOP = """
SELECT minute, ad_id, rank FROM {db:Identifier}.top_ads_minute FINAL
WHERE minute >= {start:DateTime} AND minute < {end:DateTime}
"""


def stored_cells(client, db, request):
    """What the store holds for the range, in new_cells' shape."""
    parameters = {"db": store.check_identifier(db), "start": request.start,
                  "end": request.end, "ads": list(request.ads)}
    cells = {}
    for minute, ad, *values in client.query(STORED_COUNTS, parameters=parameters).result_rows:
        for metric, value in zip(METRICS[:4], values):
            cells[(iso(minute), ad, metric)] = int(value)
    for minute, ad, *values in client.query(STORED_CONVERSIONS,
                                            parameters=parameters).result_rows:
        for metric, value in zip(METRICS[4:6], values):
            cells[(iso(minute), ad, metric)] = int(value)
    if not request.ads:
        for minute, ad, rank in client.query(STORED_TOP, parameters=parameters).result_rows:
            cells[(iso(minute), ad, "rank")] = int(rank)
    return {key: value for key, value in cells.items() if value}


def diff(old, new):
    """The cells whose value changed (a missing cell is 0: for rank, not in the top list),
    and every metric's totals (rank has none)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, 0), new.get(key, 0)
        if before != after:
            minute, ad, metric = key
            changed.append({"minute": minute, "ad_id": ad, "metric": metric, "old": before,
                            "new": after, "delta": after - before})
    totals = {}
    for metric in METRICS[:-1]:
        before = sum(v for (_m, _a, name), v in old.items() if name == metric)
        after = sum(v for (_m, _a, name), v in new.items() if name == metric)
        totals[metric] = {"old": before, "new": after, "delta": after - before}
    return changed, totals


def recalculate(client, db, request, timeout_s=1800, work_dir=None):
    """Run the request (a dry run): its diff, totals and what was read, as a JSON-able dict."""
    check_range(client, db, request)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="adclick-recalculation-", dir=work_dir) as tmp:
        folder = Path(tmp)
        exported = export(client, db, request, folder)
        exported_s = time.monotonic() - began
        run_batch(folder, request, timeout_s)
        new = new_cells(folder / "out", request)
    old = stored_cells(client, db, request)
    changed, totals = diff(old, new)
    return {
        "from": iso(request.start), "to": iso(request.end), "ads": list(request.ads),
        "reason": request.reason, "dry_run": request.dry_run,
        "settings": request.settings_or_defaults(), "exported": exported,
        "changed": changed, "totals": totals,
        "seconds": {"export": round(exported_s, 1),
                    "total": round(time.monotonic() - began, 1)},
    }


def _minutes(start, end):
    minute = start
    while minute < end:
        yield minute
        minute += timedelta(minutes=1)


def _utc(moment):
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def iso(moment):
    return _utc(moment).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_sink_time(text):
    """A sink's TIMESTAMP_LTZ as Flink's JSON writes it ("2026-01-01 00:01:00Z")."""
    return datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))


def _in_range(text, request):
    return request.start <= _parse_sink_time(text) < request.end
