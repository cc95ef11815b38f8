"""Recalculation: count closed minutes again from the raw store, with the job's own pipeline.

A request names a range of closed minutes [start, end), maybe some ads, and a reason. The raw
events that can matter to those minutes are exported from the store as JSON lines: the
clicks and impressions of the range and of the invalid-traffic rules' look-back before it, the
conversions of the range, and the clicks those conversions name, with the look-back before
each. `jobs/recalculation.py` runs the streaming job's statements over them in Flink's batch
mode, and what it computes for the range is set against what the store holds, per (minute,
ad, metric): old, new and the difference, and the totals.

A dry run stops there. A publish, once the live job can no longer change those minutes
(PUBLISH_AFTER), records that it began, writes what turns the stored numbers into the batch's
and then records itself (when, who, why, the range, the settings, code and rule versions, old
and new totals), which puts those rows in force (adclick.published): per (minute, ad, country,
device, label) the difference as a row of ad_click_counts, and each changed conversion's rows
taken back and put in their place. A reader sees all of it or none, in every table at once. A
request run again finds nothing to change and writes no numbers. rollback() takes a publish
out of force with one record. The job's per-minute top lists (top_ads_minute) are published
the same way, a changed minute's whole list (published_top_ads_minute), unless the request
named ads.

The batch counts every unique event the raw store holds for a minute, on time or not: the live
job's counts equal it for minutes that had no event too late to count; `jobs/recalculation.py`
says what else differs.
"""

import collections
import json
import math
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
from adclick import ingest
from adclick import invalid_traffic
from adclick import published
from adclick import rollup
from adclick import store
from adclick.contract import AD_ID

ROOT = Path(__file__).resolve().parent.parent
# What is compared per (minute, ad): valid clicks, impressions and attributed conversions,
# the invalid ones (of any reason), and the ad's rank in the minute's top list.
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
            or any(AD_ID.check(ad, None) for ad in ads)):
        raise Refused(f"'ads' must be a list of at most {MAX_ADS} ad ids, each"
                      f" {AD_ID.describe()}")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise Refused("'reason' must be a text of at most 500 characters")
    dry_run = body.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise Refused("'dry_run' must be true or false")
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
    if not request.dry_run and _utc(closed) + timedelta(minutes=1) - PUBLISH_AFTER < request.end:
        raise Refused(f"the live job may still change minutes after"
                      f" {iso(_utc(closed) + timedelta(minutes=1) - PUBLISH_AFTER)} (late"
                      f" corrections for {config.ALLOWED_LATENESS_SECONDS} s, attributions for"
                      f" {config.CONVERSION_WAIT_SECONDS} s after a minute closes): publish"
                      " only older ones, or make a dry run")
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
    return {"clicks": clicks.count, "impressions": impressions.count,
            "conversions": conversions.count}


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


# The columns the loader writes (adclick.ingest), which a publish writes too.
ATTRIBUTION_COLUMNS = ingest.COLUMNS["conversion_attributions"]
COUNT_COLUMNS = ingest.COLUMNS["ad_click_counts"]
# A minute may be published once nothing live can still change it: the job's allowed lateness
# (corrections) and conversion wait (attributions) have passed since it closed.
PUBLISH_AFTER = timedelta(seconds=config.ALLOWED_LATENESS_SECONDS
                          + config.CONVERSION_WAIT_SECONDS + 60)
# An attribution row a recalculation recorded before sql/clickhouse/010_*.sql took back, in
# place: it is not an attribution.
AWAY = "recalculated_away"


@dataclass
class Numbers:
    """A range's numbers, as fine as the store keeps them."""

    # (minute, ad, country, device, label) -> [clicks, impressions]
    counts: dict
    # conversion_id -> its attribution rows (dicts of ATTRIBUTION_COLUMNS)
    attributions: dict
    # (minute, ad) -> (rank, clicks) in the minute's top list; None when the request names ads
    ranks: dict

    def cells(self):
        """{(minute ISO, ad, metric): value} of the numbers, per METRICS."""
        cells = collections.Counter()
        for (minute, ad, _country, _device, label), (clicks, impressions) in self.counts.items():
            invalid = "" if label == "valid" else "invalid_"
            cells[(iso(minute), ad, invalid + "clicks")] += clicks
            cells[(iso(minute), ad, invalid + "impressions")] += impressions
        for rows in self.attributions.values():
            for row in rows:
                if row["outcome"] == "attributed":
                    invalid = "" if row["traffic"] == "valid" else "invalid_"
                    cells[(iso(row["minute"]), row["ad_id"], invalid + "conversions")] += 1
        for (minute, ad), (rank, _clicks) in (self.ranks or {}).items():
            cells[(iso(minute), ad, "rank")] = rank
        return {key: value for key, value in cells.items() if value}


def batch_numbers(out, request):
    """The batch's numbers for the range (and ads)."""
    def wanted(minute, ad):
        return request.start <= minute < request.end and (not request.ads or ad in request.ads)

    counts = collections.defaultdict(lambda: [0, 0])
    for row in _read_lines(out / "counts"):
        minute = ingest.parse_time(row["minute"])
        if wanted(minute, row["ad_id"]):
            key = (minute, row["ad_id"], row["country"], row["device"], row["traffic"])
            counts[key][0] += row["clicks"]
            counts[key][1] += row["impressions"]
    attributions = collections.defaultdict(list)
    for row in _read_lines(out / "attributions"):
        row["minute"] = ingest.parse_time(row["minute"])
        if wanted(row["minute"], row["ad_id"]):
            for name in ("conversion_ts", "click_ts"):
                row[name] = ingest.from_millis(row[name])
            attributions[row["conversion_id"]].append(
                {name: row[name] for name in ATTRIBUTION_COLUMNS})
    ranks = None
    if not request.ads:  # a top list ranks every ad of the minute
        ranks = {(ingest.parse_time(row["minute"]), row["ad_id"]): (row["rank"], row["clicks"])
                 for row in _read_lines(out / "top")
                 if wanted(ingest.parse_time(row["minute"]), row["ad_id"])}
    return Numbers({key: value for key, value in counts.items() if any(value)},
                   dict(attributions), ranks)


STORED_COUNTS = """
SELECT minute, ad_id, country, device, traffic, sum(clicks), sum(impressions)
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= {start:DateTime} AND minute < {end:DateTime}""" + ADS_FILTER \
    + published.COUNTS + """
GROUP BY minute, ad_id, country, device, traffic
"""
STORED_ATTRIBUTIONS = """
SELECT minute, ad_id, country, device, traffic, conversion_id, click_id, toString(type),
       value_micros, conversion_ts, click_ts, toString(outcome)
FROM {db:Identifier}.published_attributions
WHERE minute >= {start:DateTime} AND minute < {end:DateTime}""" + ADS_FILTER
STORED_TOP = """
SELECT minute, ad_id, rank, clicks FROM {db:Identifier}.published_top_ads_minute
WHERE minute >= {start:DateTime} AND minute < {end:DateTime}
"""


def stored_numbers(client, db, request):
    """What the store holds for the range (and ads)."""
    parameters = {"db": store.check_identifier(db), "start": request.start,
                  "end": request.end, "ads": list(request.ads)}
    counts = {(_utc(minute), ad, country, device, label): [int(clicks), int(impressions)]
              for minute, ad, country, device, label, clicks, impressions
              in client.query(STORED_COUNTS, parameters=parameters).result_rows
              if clicks or impressions}
    attributions = collections.defaultdict(list)
    for row in client.query(STORED_ATTRIBUTIONS, parameters=parameters).result_rows:
        row = dict(zip(ATTRIBUTION_COLUMNS, row))
        for name in ("minute", "conversion_ts", "click_ts"):
            row[name] = _utc(row[name])
        if row["outcome"] != AWAY:
            attributions[row["conversion_id"]].append(row)
    ranks = None
    if not request.ads:
        ranks = {(_utc(minute), ad): (int(rank), int(clicks)) for minute, ad, rank, clicks
                 in client.query(STORED_TOP, parameters=parameters).result_rows}
    return Numbers(counts, dict(attributions), ranks)


def diff(old, new):
    """The cells whose value changed (a missing cell is 0: for rank, not in the top list),
    and every metric's totals (rank has none)."""
    old, new = old.cells(), new.cells()
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


def recalculate(client, db, request, who="", timeout_s=1800, work_dir=None):
    """Run the request: its diff, totals and what was read, as a JSON-able dict; a publish
    also writes the differences and its record (publish())."""
    check_range(client, db, request)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="adclick-recalculation-", dir=work_dir) as tmp:
        folder = Path(tmp)
        exported = export(client, db, request, folder)
        exported_s = time.monotonic() - began
        run_batch(folder, request, timeout_s)
        new = batch_numbers(folder / "out", request)
    old = stored_numbers(client, db, request)
    changed, totals = diff(old, new)
    result = {
        "from": iso(request.start), "to": iso(request.end), "ads": list(request.ads),
        "reason": request.reason, "dry_run": request.dry_run,
        "settings": request.settings_or_defaults(), "exported": exported,
        "changed": changed, "totals": totals,
        "seconds": {"export": round(exported_s, 1)},
    }
    if not request.dry_run:
        result["published"] = publish(client, db, request, old, new, who, result)
    result["seconds"]["total"] = round(time.monotonic() - began, 1)
    return result


def count_differences(old, new):
    """{(minute, ad, country, device, label): [clicks, impressions]} that turn old into new."""
    differences = {}
    for key in set(old) | set(new):
        before, after = old.get(key, [0, 0]), new.get(key, [0, 0])
        delta = [after[0] - before[0], after[1] - before[1]]
        if any(delta):
            differences[key] = delta
    return differences


def attribution_changes(old, new):
    """(rows taken back, rows put in their place) that turn old attributions into new: all
    the rows of each conversion whose rows differ."""
    before, after = [], []
    for conversion_id in set(old) | set(new):
        old_rows, new_rows = old.get(conversion_id, []), new.get(conversion_id, [])
        if old_rows != new_rows:
            before += old_rows
            after += new_rows
    return before, after


# A recalculation's id: one more than any recorded, a publish recording that it began before
# it writes a row, so that the rows of one that failed are never another's.
NEXT_ID = "SELECT max(id) + 1 FROM {db:Identifier}.recalculations"


def publish(client, db, request, old, new, who, result):
    """Write what turns the stored numbers of the range into the batch's, then the record
    that puts them in force (adclick.published): readers see none of it before the record and
    all of it after. One at a time (the server runs one recalculation at a time)."""
    db = store.check_identifier(db)
    rid = int(client.query(NEXT_ID, parameters={"db": db}).result_rows[0][0] or 1)
    settings = request.settings_or_defaults()
    _record(client, db, rid, "begun", 0, request, who, settings, {}, 0, 0)
    differences = count_differences(old.counts, new.counts)
    before, after = attribution_changes(old.attributions, new.attributions)
    hours = _hours(differences)
    rollup.mark_changed(client, db, hours)
    _write_counts(client, db, rid, differences)
    _write_attributions(client, db, rid, before, after)
    top_minutes = _write_top_lists(client, db, rid, old.ranks, new.ranks)
    _record(client, db, rid, "publish", 0, request, who, settings, result["totals"],
            len(result["changed"]), len(differences))
    # Again: an hour's rollup computed between the first mark and the record left the rows out.
    rollup.mark_changed(client, db, hours)
    return {"id": rid, "count_rows": len(differences),
            "attribution_rows": len(before) + len(after), "top_lists": top_minutes}


def _hours(differences):
    """The hours (Unix seconds) of the count rows' minutes: their hourly rollup changes."""
    return {rollup.hour_of(int(key[0].timestamp())) for key in differences}


def _write_counts(client, db, rid, differences):
    if differences:
        client.insert("ad_click_counts", [
            [*key, clicks, impressions, 0, "", published.partition_of(rid), i]
            for i, (key, (clicks, impressions)) in enumerate(sorted(differences.items()))],
            column_names=COUNT_COLUMNS, database=db)


def _write_attributions(client, db, rid, before, after):
    rows = [[rid, side] + [row[name] for name in ATTRIBUTION_COLUMNS]
            for side, part in (("before", before), ("after", after)) for row in part]
    if rows:
        client.insert("recalculated_attributions", rows, database=db,
                      column_names=["recalculation", "side", *ATTRIBUTION_COLUMNS])


def _write_top_lists(client, db, rid, old, new):
    """The new top list of each minute whose list changed (none when the request named ads:
    a list ranks every ad); a minute left with no list gets a rank 0 row, which says so.
    Returns how many minutes."""
    if old is None or new is None:
        return 0
    lists = {}
    for ranks, side in ((old, 0), (new, 1)):
        for (minute, ad), (rank, clicks) in ranks.items():
            lists.setdefault(minute, ({}, {}))[side][rank] = (ad, clicks)
    rows = []
    for minute, (before, after) in sorted(lists.items()):
        if before != after:
            rows += [[rid, minute, rank, ad, clicks]
                     for rank, (ad, clicks) in sorted(after.items())] or [[rid, minute, 0, "", 0]]
    if rows:
        client.insert("recalculated_top_ads", rows, database=db,
                      column_names=["recalculation", "minute", "rank", "ad_id", "clicks"])
    return len({row[1] for row in rows})


def _record(client, db, rid, kind, rolls_back, request, who, settings, totals, changed, rows):
    client.insert("recalculations", [[
        rid, kind, rolls_back, datetime.now(timezone.utc), who, request.reason, request.start,
        request.end, list(request.ads), json.dumps(settings, sort_keys=True), code_version(),
        invalid_traffic.rules_version(settings["repeat_click_window_s"] * 1000,
                                      settings["ip_frequency_window_s"] * 1000,
                                      settings["ip_frequency_threshold"]),
        json.dumps(totals, sort_keys=True), changed, rows, 0]], database=db, column_names=[
        "id", "kind", "rolls_back", "published_at", "requested_by", "reason", "range_from",
        "range_to", "ads", "settings", "code_version", "traffic_rules", "totals",
        "changed_cells", "count_rows", "in_place"])


RECORDS = """
SELECT id, kind, rolls_back, range_from, range_to, ads, reason, settings, totals, in_place
FROM {db:Identifier}.recalculations WHERE kind IN ('publish', 'rollback')
"""
# A publish's rows: the minutes of its count rows, how many, and how many attribution rows.
PUBLISHED_ROWS = """
SELECT groupUniqArray(toUnixTimestamp(minute)), count(),
       (SELECT count() FROM {db:Identifier}.recalculated_attributions
        WHERE recalculation = {id:UInt32})
FROM {db:Identifier}.ad_click_counts WHERE src_partition = {partition:UInt32}
"""


def rollback(client, db, rid, who="", reason=""):
    """Take publish rid out of force: one record (adclick.published), its rows stay for the
    audit. Refused while a later publish in force changed the same minutes and ads: its
    differences were taken from rid's numbers, so that one is rolled back first."""
    db = store.check_identifier(db)
    records = client.query(RECORDS, parameters={"db": db}).result_rows
    rolled_back = {row[2] for row in records if row[1] == "rollback"}
    publishes = {row[0]: row for row in records if row[1] == "publish"}
    if rid not in publishes:
        raise Refused(f"no published recalculation {rid}")
    if rid in rolled_back:
        raise Refused(f"recalculation {rid} is rolled back already")
    _id, _kind, _, start, end, ads, published_reason, settings, totals, in_place = publishes[rid]
    if in_place:
        raise Refused(f"recalculation {rid} was written in place, before this release: it"
                      " cannot be rolled back by it")

    def rows_of(some_id):
        minutes, counts, attributions = client.query(PUBLISHED_ROWS, parameters={
            "db": db, "partition": published.partition_of(some_id), "id": some_id}).result_rows[0]
        return minutes, int(counts), int(attributions)

    for later, row in sorted(publishes.items()):
        overlaps = row[3] < end and start < row[4] and (not ads or not row[5]
                                                        or set(ads) & set(row[5]))
        if later > rid and later not in rolled_back and overlaps and any(rows_of(later)[1:]):
            raise Refused(f"recalculation {later} changed the same minutes and ads after"
                          f" {rid}: roll it back first")
    minutes, count_rows, attribution_rows = rows_of(rid)
    new_id = int(client.query(NEXT_ID, parameters={"db": db}).result_rows[0][0] or 1)
    undone = {metric: {"old": value["new"], "new": value["old"], "delta": -value["delta"]}
              for metric, value in json.loads(totals).items()}
    request = Request(_utc(start), _utc(end), tuple(ads),
                      reason or f"rollback of {rid} ({published_reason})", False,
                      json.loads(settings))
    hours = {rollup.hour_of(minute) for minute in minutes}
    rollup.mark_changed(client, db, hours)
    _record(client, db, new_id, "rollback", rid, request, who, json.loads(settings), undone, 0,
            count_rows)
    rollup.mark_changed(client, db, hours)
    return {"id": new_id, "rolls_back": rid, "count_rows": count_rows,
            "attribution_rows": attribution_rows}


def code_version():
    """The commit the code runs from, if it is a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _minutes(start, end):
    minute = start
    while minute < end:
        yield minute
        minute += timedelta(minutes=1)


def _utc(moment):
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def iso(moment):
    return _utc(moment).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

