"""Fixtures and test data shared by the API's test modules (test_api, test_queries, ...).

chdb can open one engine path per process (a second path fails with "EmbeddedServer already
initialized with path ..."), so every module shares one session-wide path and isolates itself
in its own database instead (the DATABASE config key). If some other fixture already opened an
embedded store in this process, its path is reused for the same reason.

The data set is known rows of ad_click_counts (clicks and impressions, valid or of an
invalid-traffic reason, including late = 1 corrections, revisions that move a click from one
label to another, and rows replayed with identical Kafka coordinates, inserted in separate parts
so that only FINAL collapses them), of conversion_attributions (counted or not, some replayed) and
of top_ads_minute; `truth_*` recompute the API's answers from those rows in plain Python.
"""

import random
import threading
from collections import defaultdict
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import jsonschema
import pytest
from werkzeug.serving import make_server

from adclick import config
from adclick import store

MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
DATA_MINUTES = 12  # counts for T0 .. T0+11
COMPLETE_MINUTES = 10  # top_ads_minute has T0 .. T0+9: the latest complete minute is T0+9
ADS = [f"ad-{i:02d}" for i in range(12)] + ["tie-b", "tie-a"]
COUNTRIES = ["KR", "JP", "US", "DE"]
DEVICES = ["mobile", "desktop", "tablet", "other"]
COUNT_COLUMNS = ["minute", "ad_id", "country", "device", "traffic", "clicks", "impressions",
                 "late", "click_id", "src_partition", "src_offset"]
LABELS = ("valid",) + config.TRAFFIC_REASONS
ATTRIBUTION_COLUMNS = ["minute", "ad_id", "country", "device", "traffic", "conversion_id",
                       "click_id", "type", "outcome"]
OUTCOMES = ["attributed"] * 6 + ["before_click", "outside_window"]
KEY_COLUMNS = ("minute", "ad_id", "country", "device", "src_partition", "src_offset")


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory):
    """The one embedded store of this pytest process (chdb:///abs/path)."""
    already_open = [url for url in store._chdb_clients if store.is_embedded(url)]
    if already_open:
        return already_open[0]
    return f"chdb://{tmp_path_factory.mktemp('chdb')}/ch"


def fresh_database(url, name):
    """A client on url with database `name` dropped and created again from the schema."""
    client = store.connect(url)
    client.command(f"DROP DATABASE IF EXISTS {store.check_identifier(name)}")
    store.apply_schema(client, name)
    return client


def make_count_rows(seed=7):
    """Known ad_click_counts rows: (rows, replayed duplicates of some of them)."""
    rng = random.Random(seed)
    rows, offset = [], 0
    for m in range(DATA_MINUTES):
        minute = T0 + m * MINUTE
        for ad in ADS[:12]:
            for _ in range(rng.randint(0, 4)):
                offset += 1
                late = 1 if rng.random() < 0.15 else 0
                click_id = f"c{offset}" if late else ""
                # A late correction is one click's or one impression's.
                late_impression = late and rng.random() < 0.3
                rows.append({"minute": minute, "ad_id": ad, "country": rng.choice(COUNTRIES),
                             "device": rng.choice(DEVICES),
                             "clicks": (0 if late_impression else 1) if late else
                             rng.randint(1, 9),
                             "impressions": (1 if late_impression else 0) if late else
                             rng.randint(0, 60), "late": late, "click_id": click_id,
                             "src_partition": offset % 3, "src_offset": offset})
        # Two ads with equal totals in every minute: ties broken by ad_id ascending.
        for ad in ("tie-b", "tie-a"):
            offset += 1
            rows.append({"minute": minute, "ad_id": ad, "country": "KR", "device": "mobile",
                         "clicks": 7, "impressions": 100, "late": 0, "click_id": "",
                         "src_partition": 0, "src_offset": offset})
    # Traffic labels (a stream of their own: the rows above stay what they were), and
    # revisions: a late click that made a counted click invalid takes it from valid (-1) and
    # gives it to the reason (+1), in its minute.
    labels = random.Random(seed + 1)
    for row in rows:
        row["traffic"] = "valid" if row["ad_id"].startswith("tie") or labels.random() < 0.7 \
            else labels.choice(config.TRAFFIC_REASONS)
    for row in labels.sample([row for row in rows if row["clicks"] and row["traffic"] == "valid"
                              and not row["ad_id"].startswith("tie")], 25):
        reason = labels.choice(config.TRAFFIC_REASONS)
        for traffic, clicks in (("valid", -1), (reason, 1)):
            offset += 1
            rows.append(dict(row, traffic=traffic, clicks=clicks, impressions=0, late=1,
                             click_id=f"c{offset}", src_offset=offset))
    replayed = [dict(row) for row in rng.sample(rows, len(rows) // 4)]
    return rows, replayed


def make_attribution_rows(seed=8):
    """Known conversion_attributions rows: (rows, replayed duplicates of some of them)."""
    rng = random.Random(seed)
    rows = []
    for m in range(DATA_MINUTES):
        for ad in ADS[:6]:
            for _ in range(rng.randint(0, 3)):
                rows.append({"minute": T0 + m * MINUTE, "ad_id": ad,
                             "country": rng.choice(COUNTRIES), "device": rng.choice(DEVICES),
                             "conversion_id": f"v{len(rows)}", "click_id": f"k{len(rows)}",
                             "type": "signup", "outcome": rng.choice(OUTCOMES)})
    labels = random.Random(seed + 1)  # a stream of its own: the rows above stay what they were
    for row in rows:
        row["traffic"] = "valid" if labels.random() < 0.7 else labels.choice(config.TRAFFIC_REASONS)
    return rows, [dict(row) for row in rng.sample(rows, len(rows) // 4)]


def insert_counts(client, database, rows):
    """Insert rows (dicts) into ad_click_counts as one part."""
    # A row of clicks only, valid unless it says otherwise.
    rows = [{"impressions": 0, "traffic": "valid", **row} for row in rows]
    client.insert("ad_click_counts", [[row[c] for c in COUNT_COLUMNS] for row in rows],
                  column_names=COUNT_COLUMNS, database=database)


def insert_complete_minutes(client, database, minutes):
    """Mark minutes complete: one top_ads_minute row each (what the job pushes)."""
    client.insert("top_ads_minute", [[minute, 1, "ad-00", 1, i] for i, minute in
                                     enumerate(minutes)],
                  column_names=["minute", "rank", "ad_id", "clicks", "src_offset"],
                  database=database)


def load_dataset(client, database):
    """The standard data set in database; returns the rows as the truth sees them."""
    rows, replayed = make_count_rows()
    # No background merge may collapse the replayed rows: only FINAL is to do that.
    client.command(f"SYSTEM STOP MERGES {store.check_identifier(database)}.ad_click_counts")
    insert_counts(client, database, rows)
    insert_counts(client, database, replayed)  # a replay after a crash: a second part
    insert_complete_minutes(client, database, [T0 + m * MINUTE for m in range(COMPLETE_MINUTES)])
    return rows + replayed


def load_attributions(client, database):
    """The attributions of the data set in database (the replays in a second part); returns
    them as the truth sees them (FINAL: one row per conversion)."""
    rows, replayed = make_attribution_rows()
    client.command(
        f"SYSTEM STOP MERGES {store.check_identifier(database)}.conversion_attributions")
    for part in (rows, replayed):
        client.insert("conversion_attributions", [[row[c] for c in ATTRIBUTION_COLUMNS]
                                                  for row in part],
                      column_names=ATTRIBUTION_COLUMNS, database=database)
    return rows


def dedup(rows):
    """What FINAL shows: one row per sorting key."""
    return list({tuple(row[c] for c in KEY_COLUMNS): row for row in rows}.values())


def selection(query):
    """(countries, devices, traffic labels) a request's query selects, as the API reads it."""
    countries = tuple(query["country"].split(",")) if "country" in query else ()
    devices = tuple(query["device"].split(",")) if "device" in query else ()
    if "reason" in query:
        return countries, devices, tuple(query["reason"].split(","))
    traffic = {"all": LABELS, "invalid": config.TRAFFIC_REASONS}.get(query.get("traffic"),
                                                                     ("valid",))
    return countries, devices, traffic


def _selected(rows, start, end, countries, devices, traffic=("valid",)):
    yield from (row for row in _within(dedup(rows), start, end, countries, devices)
                if row.get("traffic", "valid") in traffic)


def _within(rows, start, end, countries, devices):
    for row in rows:
        if not start <= row["minute"] < end:
            continue
        if countries and row["country"] not in countries:
            continue
        if devices and row["device"] not in devices:
            continue
        yield row


def truth_count(rows, ad_id, start, end, countries=(), devices=(), traffic=("valid",)):
    """API 1 computed from the rows."""
    return sum(row["clicks"] for row in _selected(rows, start, end, countries, devices, traffic)
               if row["ad_id"] == ad_id)


def truth_top(rows, start, end, limit, countries=(), devices=(), traffic=("valid",)):
    """API 2 computed from the rows: [(ad_id, count)], count desc then ad_id asc."""
    totals = defaultdict(int)
    for row in _selected(rows, start, end, countries, devices, traffic):
        totals[row["ad_id"]] += row["clicks"]
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]


def truth_metrics(rows, attributions, ad_id, start, end, countries=(), devices=(),
                  traffic=("valid",)):
    """The metrics endpoint's counts and ratios, computed from the rows (ad_id None: all);
    a conversion counts under its click's label."""
    counts = [row for row in _selected(rows, start, end, countries, devices, traffic)
              if ad_id is None or row["ad_id"] == ad_id]
    impressions = sum(row["impressions"] for row in counts)
    clicks = sum(row["clicks"] for row in counts)
    conversions = sum(1 for row in _within(attributions, start, end, countries, devices)
                      if row["outcome"] == "attributed" and row["traffic"] in traffic
                      and (ad_id is None or row["ad_id"] == ad_id))
    return {"impressions": impressions, "clicks": clicks, "conversions": conversions,
            "ctr": clicks / impressions if impressions else None,
            "cvr": conversions / clicks if clicks else None}


def truth_invalid(rows, ad_id, start, end, countries=(), devices=()):
    """The metrics endpoint's invalid clicks, whatever traffic it counts."""
    by_reason = {reason: truth_count(rows, ad_id, start, end, countries, devices, (reason,))
                 for reason in config.TRAFFIC_REASONS}
    invalid = sum(by_reason.values())
    every = invalid + truth_count(rows, ad_id, start, end, countries, devices)
    return {"invalid_clicks": invalid, "invalid_click_rate": invalid / every if every else None,
            "invalid_clicks_by_reason": by_reason}


def truth_popular_by(rows, attributions, by, start, end, limit, min_impressions, countries=(),
                     devices=(), traffic=("valid",)):
    """popular_ads?by=... computed from the rows: [(ad_id, metrics)], best first."""
    ads = {row["ad_id"] for row in [*_selected(rows, start, end, countries, devices, traffic),
                                    *_within(attributions, start, end, countries, devices)]}
    ranked = [(ad, truth_metrics(rows, attributions, ad, start, end, countries, devices,
                                 traffic)) for ad in ads]
    if by in ("ctr", "cvr"):
        divisor = "impressions" if by == "ctr" else "clicks"
        ranked = [(ad, m) for ad, m in ranked
                  if m["impressions"] >= min_impressions and m[divisor] > 0]
    return sorted(ranked, key=lambda item: (-item[1][by], item[0]))[:limit]


def truth_recount(rows, raw_clicks, late_clicks, ad_id):
    """sql/analyses/04 computed from the rows: ad_id's minutes, each as a dict of counted (its
    ad_click_counts after FINAL), raw_unique (distinct click_ids among raw_clicks, duplicates
    included there) and too_late (distinct click_ids among late_clicks), and missing."""
    counted, raw, too_late = defaultdict(int), defaultdict(set), defaultdict(set)
    for row in dedup(rows):
        if row["ad_id"] == ad_id:
            counted[row["minute"]] += row["clicks"]
    for clicks, ids in ((raw_clicks, raw), (late_clicks, too_late)):
        for click in clicks:
            if click["ad_id"] == ad_id:
                ids[click["minute"]].add(click["click_id"])
    return [{"minute": minute, "counted": counted[minute], "raw_unique": len(raw[minute]),
             "too_late": len(too_late[minute]),
             "missing": len(raw[minute]) - counted[minute] - len(too_late[minute])}
            for minute in sorted(set(counted) | set(raw) | set(too_late))]


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class LiveServer:
    """A WSGI app served by werkzeug on a free local port, in a thread."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes "or null"."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {name: json_schema(value) for name, value in node.items() if name != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


class Api:
    """A test client that validates every response against the OpenAPI document."""

    def __init__(self, app, key, openapi):
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.openapi = openapi

    def get(self, path, template=None, headers=None, **query):
        response = self.client.get(path, query_string=query,
                                   headers=self.headers if headers is None else headers)
        self.check(response, template or path, "get")
        return response

    def sql(self, query, status=None, **body):
        response = self.client.post("/v1/sql", json={"query": query, **body},
                                    headers=self.headers)
        self.check(response, "/v1/sql", "post")
        if status is not None:
            assert response.status_code == status, response.get_json()
        return response.get_json()

    def check(self, response, template, method):
        assert response.content_type.startswith("application/json"), response.data[:200]
        operation = self.openapi["paths"].get(template, {}).get(method)
        if operation is None:  # an undocumented URL: must be a JSON 404/405
            assert response.status_code in (404, 405)
            assert set(response.get_json()) == {"error"}
            return
        documented = operation["responses"].get(str(response.status_code))
        assert documented, f"{method} {template}: undocumented status {response.status_code}"
        if "$ref" in documented:
            documented = self.openapi["components"]["responses"][
                documented["$ref"].rsplit("/", 1)[1]]
        schema = documented["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(json_schema(
            {"allOf": [schema], "components": self.openapi["components"]})
        ).validate(response.get_json())
