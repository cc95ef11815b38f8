"""Recalculation's dry run (adclick.recalculation): the job's pipeline in batch over the raw store.

A store holds raw clicks (some sent twice, some by a crawler, some from one address often
enough to be invalid), their impressions and conversions, and the numbers the live job would
have stored for them, worked out here from the events with the rules stated in Python
(adclick.invalid_traffic). A dry run over a range must find exactly the cells that differ
from what the batch computes: none but the ones a test corrupted, or the ones a changed rule
moves, with the right old and new values; a range that is not closed, or that the raw store
does not hold, is refused.
"""

import collections
import json
import random
import threading
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import clickhouse_connect
import pytest
import yaml

from adclick import access
from adclick import config
from adclick import invalid_traffic
from adclick import published
from adclick import queries
from adclick import recalculation
from adclick import store
from adclick.contract import CLICK
from adclick.testing.processes import REPO
from api import create_app
from tests.api_fixtures import Api
from tests.api_fixtures import chdb_url  # noqa: F401  (a fixture)
from tests.api_fixtures import fresh_database

MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
MINUTES = 6
ADS = ["ad-a", "ad-b", "ad-c", "ad-d"]
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
DATABASE = "recalculation_test"
ALL = {"from": T0.isoformat(), "to": (T0 + MINUTES * MINUTE).isoformat()}
# Minutes are closed up to here: far enough for the range to be published.
CLOSED_UNTIL = T0 + 3 * timedelta(hours=1)


def ms(moment):
    return int(moment.timestamp() * 1000)


class Events:
    """The raw events (each click with 2 impressions, a third of them with a conversion; some
    clicks by a crawler, some repeated by their person, some from one busy address) and what
    the live job counts of them under a threshold of the ip rule."""

    def __init__(self, seed=5):
        rng = random.Random(seed)
        self.clicks, self.impressions, self.conversions = [], [], []
        for serial in range(240):
            at = ms(T0) + rng.randrange(MINUTES * 60_000)
            ad = rng.choice(ADS)
            ip = f"10.1.{serial // 256}.{serial % 256}"
            if serial % 12 == 0:
                ip = "10.9.9.9"  # one address, many clicks: ip_frequency on its busy ads
            click = {"click_id": f"c{serial}", "ad_id": ad, "click_ts": at,
                     "user_id": f"u{serial}", "ip": ip, "country": rng.choice(["KR", "US"]),
                     "device": rng.choice(["mobile", "desktop"]),
                     "user_agent": BOT if serial % 17 == 0 else None}
            self.clicks.append(click)
            if serial % 25 == 1:  # the same person again 3 s later: repeat_click
                self.clicks.append(dict(click, click_id=f"c{serial}-again",
                                        click_ts=at + 3000, ip=f"10.2.0.{serial % 256}"))
            for i in range(2):
                self.impressions.append({
                    "impression_id": f"c{serial}-i{i}", "ad_id": ad,
                    "impression_ts": at - rng.randrange(20_000), "user_id": click["user_id"],
                    "ip": ip, "country": click["country"], "device": click["device"],
                    "user_agent": click["user_agent"]})
            if serial % 3 == 0:
                self.conversions.append({"conversion_id": f"v{serial}", "click_id": f"c{serial}",
                                         "conversion_ts": at + rng.randrange(90_000),
                                         "type": "signup", "value_micros": None})

    def labels(self, threshold):
        clicks = [CLICK.Event(**click) for click in self.clicks]
        return invalid_traffic.click_labels(clicks, ip_threshold=threshold)

    def counts(self, threshold):
        """{(minute, ad, country, device, label): [clicks, impressions]}"""
        labels = self.labels(threshold)
        counts = collections.defaultdict(lambda: [0, 0])
        for click in self.clicks:
            key = (minute_of(click["click_ts"]), click["ad_id"], click["country"],
                   click["device"], labels[click["click_id"]])
            counts[key][0] += 1
        for impression in self.impressions:
            label = invalid_traffic.event_label(impression["user_agent"], impression["ip"])
            key = (minute_of(impression["impression_ts"]), impression["ad_id"],
                   impression["country"], impression["device"], label or "valid")
            counts[key][1] += 1
        return counts

    def attributions(self, threshold):
        labels = self.labels(threshold)
        clicks = {click["click_id"]: click for click in self.clicks}
        rows = []
        for conversion in self.conversions:
            click = clicks[conversion["click_id"]]
            rows.append([minute_of(conversion["conversion_ts"]), click["ad_id"],
                         click["country"], click["device"], labels[click["click_id"]],
                         conversion["conversion_id"], click["click_id"], "signup",
                         datetime.fromtimestamp(conversion["conversion_ts"] / 1000,
                                                timezone.utc),
                         datetime.fromtimestamp(click["click_ts"] / 1000, timezone.utc),
                         "attributed"])
        return rows

    def cells(self, threshold, start=T0, end=T0 + MINUTES * MINUTE):
        """What a dry run reads for the range, per (minute, ad, metric), from the truth."""
        cells = collections.Counter()
        for (minute, ad, _country, _device, label), (clicks, impressions) in \
                self.counts(threshold).items():
            invalid = "" if label == "valid" else "invalid_"
            cells[(minute, ad, invalid + "clicks")] += clicks
            cells[(minute, ad, invalid + "impressions")] += impressions
        for row in self.attributions(threshold):
            cells[(row[0], row[1], ("" if row[4] == "valid" else "invalid_") + "conversions")] += 1
        return {(iso(m), ad, metric): n for (m, ad, metric), n in cells.items()
                if start <= m < end and n}


def minute_of(ts_ms):
    moment = datetime.fromtimestamp(ts_ms / 1000, timezone.utc)
    return moment.replace(second=0, microsecond=0)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(ts_ms):
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc)


@pytest.fixture(scope="module")
def events():
    return Events()


@pytest.fixture
def stored(chdb_url, events):  # noqa: F811  (the fixture imported above)
    """A store with the raw events (every tenth sent twice) and the live job's numbers for
    them at the default rules, every minute of them closed."""
    client = fresh_database(chdb_url, DATABASE)
    offset = iter(range(1, 1_000_000))

    def raw(table, rows, time_field, fields):
        records = []
        for i, row in enumerate(rows):
            for _copy in range(2 if i % 10 == 0 else 1):
                records.append([minute_of(row[time_field]), at(row[time_field])]
                               + [row[name] for name in fields] + [0, next(offset)])
        client.insert(table, records, database=DATABASE, column_names=[
            "minute", time_field, *fields, "src_partition", "src_offset"])

    person = ["ad_id", "user_id", "ip", "country", "device", "user_agent"]
    raw("raw_clicks", events.clicks, "click_ts", ["click_id", *person])
    raw("raw_impressions", events.impressions, "impression_ts", ["impression_id", *person])
    raw("raw_conversions", events.conversions, "conversion_ts",
        ["conversion_id", "click_id", "type", "value_micros"])
    threshold = config.IP_FREQUENCY_THRESHOLD
    client.insert("ad_click_counts", [
        [minute, ad, country, device, label, clicks, impressions, 0, "", 0, next(offset)]
        for (minute, ad, country, device, label), (clicks, impressions)
        in events.counts(threshold).items()], database=DATABASE, column_names=[
        "minute", "ad_id", "country", "device", "traffic", "clicks", "impressions", "late",
        "click_id", "src_partition", "src_offset"])
    client.insert("conversion_attributions", events.attributions(threshold), database=DATABASE,
                  column_names=["minute", "ad_id", "country", "device", "traffic",
                                "conversion_id", "click_id", "type", "conversion_ts",
                                "click_ts", "outcome"])
    top = []
    for m in range(MINUTES):
        minute = T0 + m * MINUTE
        valid = collections.Counter()
        for (at_minute, ad, _c, _d, label), (clicks, _i) in events.counts(threshold).items():
            if at_minute == minute and label == "valid":
                valid[ad] += clicks
        ranked = sorted((ad for ad in valid if valid[ad]), key=lambda ad: (-valid[ad], ad))
        top += [[minute, rank, ad, valid[ad], m] for rank, ad in enumerate(ranked, start=1)]
    client.insert("top_ads_minute", top, database=DATABASE,
                  column_names=["minute", "rank", "ad_id", "clicks", "src_offset"])
    client.insert("minutes_closed", [[CLOSED_UNTIL - MINUTE, "", 0, 0]],
                  database=DATABASE,
                  column_names=["minute", "traffic_rules", "src_partition", "src_offset"])
    return client


def store_url(client):
    """The embedded store's URL that client was opened on."""
    return next(url for url, opened in store._chdb_clients.items() if opened is client)


def dry_run(client, **fields):
    request = recalculation.parse_request({**ALL, **fields})
    return recalculation.recalculate(client, DATABASE, request)


COUNT_KEY_COLUMNS = ["minute", "ad_id", "country", "device", "traffic", "clicks",
                     "impressions", "late", "click_id", "src_partition", "src_offset"]
RANGE = {"from": iso(T0 + MINUTE), "to": iso(T0 + 5 * MINUTE)}  # minutes 1 to 4


def rows_outside(client, table):
    """Every row of table outside RANGE, as stored (not FINAL: byte for byte)."""
    return client.query(f"SELECT * FROM {DATABASE}.{table} WHERE minute < {{a:DateTime}} OR"
                        f" minute >= {{b:DateTime}} ORDER BY ALL",
                        parameters={"a": T0 + MINUTE, "b": T0 + 5 * MINUTE}).result_rows


def valid_clicks_in_range(client, as_published=True):
    """The range's valid clicks as published (published_click_counts), or every row's."""
    table = "published_click_counts" if as_published else "ad_click_counts FINAL"
    return client.query(f"SELECT sum(clicks) FROM {DATABASE}.{table} WHERE"
                        f" traffic = 'valid' AND minute >= {{a:DateTime}} AND"
                        f" minute < {{b:DateTime}}",
                        parameters={"a": T0 + MINUTE, "b": T0 + 5 * MINUTE}).result_rows[0][0]


def ad_metrics(client, ad):
    """ad's valid (impressions, clicks, conversions) over RANGE, as the metrics endpoint reads
    them: one statement over the counts and the attributions."""
    return queries.ad_metrics(client, DATABASE, ad, T0 + MINUTE, T0 + 5 * MINUTE)


def corrupt_clicks(client, minute, ad, clicks, offset):
    client.insert("ad_click_counts", [[minute, ad, "KR", "mobile", "valid", clicks, 0, 0, "", 9,
                                       offset]], database=DATABASE, column_names=COUNT_KEY_COLUMNS)


def publish(client, reason):
    return recalculation.recalculate(client, DATABASE, recalculation.parse_request(
        {**RANGE, "dry_run": False, "reason": reason}), who="tester")


@pytest.mark.integration
def test_a_publish_corrects_exactly_the_corrupted_cells_at_once_and_rolls_back(
        stored, events, chdb_url):  # noqa: F811
    """Cells corrupted in the range (5 clicks too many; an attribution lost, another labelled
    invalid; a minute's top list) and one outside it. The publish's diff is exactly those (so
    the batch equals the truth in every other cell, labels, impressions, conversions and
    ranks included); afterwards every cell of the range equals the truth, every row outside
    it is as it was (the corruption there too), and a reader of an ad's clicks and
    conversions, polling all the while, saw the old pair or the new, never a mix. The same
    request again changes nothing; a rollback brings the corruption back, at once too."""
    threshold = config.IP_FREQUENCY_THRESHOLD
    truth = events.cells(threshold, T0 + MINUTE, T0 + 5 * MINUTE)
    labels = set(events.labels(threshold).values())
    assert labels == {"valid", "bot_user_agent", "repeat_click", "ip_frequency"}  # all bite
    pristine = recalculation.stored_numbers(stored, DATABASE, recalculation.parse_request(RANGE))
    second, third, ad = T0 + 2 * MINUTE, T0 + 3 * MINUTE, "ad-b"
    corrupt_clicks(stored, second, ad, 5, 1)
    corrupt_clicks(stored, T0, ad, 7, 2)
    lost = next(row for row in events.attributions(threshold)
                if T0 + MINUTE <= row[0] < T0 + 5 * MINUTE and row[1] == ad and row[4] == "valid")
    stored.command(f"ALTER TABLE {DATABASE}.conversion_attributions DELETE WHERE"
                   f" conversion_id = '{lost[5]}'", settings={"mutations_sync": 2})
    relabelled = next(row for row in events.attributions(threshold)
                      if T0 + MINUTE <= row[0] < T0 + 5 * MINUTE and row[1] != ad
                      and row[4] == "valid")
    stored.command(f"ALTER TABLE {DATABASE}.conversion_attributions UPDATE traffic ="
                   f" 'bot_user_agent' WHERE conversion_id = '{relabelled[5]}'",
                   settings={"mutations_sync": 2})
    first_of_third = next(key[1] for key, (rank, _clicks) in pristine.ranks.items()
                          if key[0] == third and rank == 1)
    stored.insert("top_ads_minute", [[third, 1, "ad-zz", 999, 10**6]], database=DATABASE,
                  column_names=["minute", "rank", "ad_id", "clicks", "src_offset"])
    outside = {table: rows_outside(stored, table)
               for table in ("ad_click_counts", "conversion_attributions", "top_ads_minute")}
    corrupted = recalculation.stored_numbers(stored, DATABASE,
                                             recalculation.parse_request(RANGE)).cells()
    old = ad_metrics(stored, ad)
    seen, stop = collections.Counter(), threading.Event()
    reader = clickhouse_connect.get_client(dsn=chdb_url)  # a handle of its own

    def poll():
        while not stop.is_set():
            seen[ad_metrics(reader, ad)] += 1

    polling = threading.Thread(target=poll)
    polling.start()
    try:
        result = publish(stored, "a test corrupted four cells")
        after = recalculation.stored_numbers(stored, DATABASE, recalculation.parse_request(RANGE))
        after_outside = {table: rows_outside(stored, table) for table in outside}
        time.sleep(0.5)
        again = publish(stored, "the same again")
        undone = recalculation.rollback(stored, DATABASE, 1, "tester", "undo it")
        time.sleep(0.5)
    finally:
        stop.set()
        polling.join()

    key = (iso(second), ad, "clicks")
    lost_key = (iso(lost[0]), ad, "conversions")
    valid_key = (iso(relabelled[0]), relabelled[1], "conversions")
    invalid_key = (iso(relabelled[0]), relabelled[1], "invalid_conversions")
    assert result["changed"] == sorted([
        {"minute": key[0], "ad_id": ad, "metric": "clicks", "old": truth.get(key, 0) + 5,
         "new": truth.get(key, 0), "delta": -5},
        {"minute": lost_key[0], "ad_id": ad, "metric": "conversions",
         "old": truth[lost_key] - 1, "new": truth[lost_key], "delta": 1},
        {"minute": valid_key[0], "ad_id": valid_key[1], "metric": "conversions",
         "old": truth[valid_key] - 1, "new": truth[valid_key], "delta": 1},
        {"minute": invalid_key[0], "ad_id": invalid_key[1], "metric": "invalid_conversions",
         "old": truth.get(invalid_key, 0) + 1, "new": truth.get(invalid_key, 0), "delta": -1},
        {"minute": iso(third), "ad_id": "ad-zz", "metric": "rank", "old": 1, "new": 0,
         "delta": -1},
        {"minute": iso(third), "ad_id": first_of_third, "metric": "rank", "old": 0, "new": 1,
         "delta": 1},
    ], key=lambda cell: (cell["minute"], cell["ad_id"], cell["metric"]))
    assert result["totals"]["clicks"]["delta"] == -5
    assert result["exported"]["clicks"] >= len(events.clicks) // 2  # the copies too
    # Rows: the lost attribution's, and the relabelled one's taken back and put right.
    assert result["published"] == {"id": 1, "count_rows": 1, "attribution_rows": 3,
                                   "top_lists": 1}
    # Published, every cell is the truth's, top lists too, and nothing outside has changed.
    assert {k: v for k, v in after.cells().items() if k[2] != "rank"} == truth
    assert after.ranks == pristine.ranks
    assert after_outside == outside
    new = (old[0], old[1] - 5, old[2] + 1)
    # Old before the publish and after the rollback, new between: never a mix, never another.
    assert set(seen) == {old, new}, seen
    record = stored.query(f"SELECT id, kind, requested_by, reason, range_from, range_to,"
                          f" code_version, traffic_rules, totals FROM {DATABASE}.recalculations"
                          f" ORDER BY id, kind").result_rows
    assert [row[:6] for row in record[:2]] == [
        (1, kind, "tester", "a test corrupted four cells", T0.replace(tzinfo=None) + MINUTE,
         T0.replace(tzinfo=None) + 5 * MINUTE) for kind in ("begun", "publish")]
    assert record[1][6] and "ip_frequency >= 3" in record[1][7]
    assert json.loads(record[1][8])["clicks"]["delta"] == -5

    assert again["changed"] == [] and again["published"] == {
        "id": 2, "count_rows": 0, "attribution_rows": 0, "top_lists": 0}
    assert undone == {"id": 3, "rolls_back": 1, "count_rows": 1, "attribution_rows": 3}
    assert [row[:2] for row in record[2:]] == [(2, "begun"), (2, "publish"), (3, "rollback")]
    back = recalculation.stored_numbers(stored, DATABASE, recalculation.parse_request(RANGE))
    assert back.cells() == corrupted
    with pytest.raises(recalculation.Refused, match="rolled back already"):
        recalculation.rollback(stored, DATABASE, 1)
    with pytest.raises(recalculation.Refused, match="no published recalculation 3"):
        recalculation.rollback(stored, DATABASE, 3)  # a rollback is not undone this way


@pytest.mark.integration
def test_a_publish_that_fails_before_its_record_counts_nothing(stored, monkeypatch):
    """Its rows stay out of every read, and the next publish, with an id of its own, corrects
    the numbers exactly. An earlier publish is rolled back only after a later one over the
    same minutes and ads."""
    ad, minute = "ad-c", T0 + 2 * MINUTE
    old = ad_metrics(stored, ad)
    corrupt_clicks(stored, minute, ad, 3, 1)
    assert publish(stored, "three too many")["published"]["id"] == 1
    assert ad_metrics(stored, ad) == old
    corrupt_clicks(stored, minute, ad, 2, 2)
    corrupted = (old[0], old[1] + 2, old[2])
    record = recalculation._record

    def fail_at_publish(client, db, rid, kind, *args):
        if kind == "publish":
            raise RuntimeError("the store went away")
        record(client, db, rid, kind, *args)

    monkeypatch.setattr(recalculation, "_record", fail_at_publish)
    with pytest.raises(RuntimeError, match="went away"):
        publish(stored, "fails")
    monkeypatch.undo()
    written = stored.query(f"SELECT count() FROM {DATABASE}.ad_click_counts WHERE src_partition"
                           f" = {published.partition_of(2)}").result_rows[0][0]
    assert written == 1  # but not counted:
    assert ad_metrics(stored, ad) == corrupted
    assert valid_clicks_in_range(stored) == valid_clicks_in_range(stored, as_published=False) + 2
    result = publish(stored, "two too many")
    assert result["published"]["id"] == 3
    assert [(cell["ad_id"], cell["metric"], cell["delta"]) for cell in result["changed"]] == [
        (ad, "clicks", -2)]
    assert ad_metrics(stored, ad) == old
    with pytest.raises(recalculation.Refused, match="recalculation 3 changed the same minutes"):
        recalculation.rollback(stored, DATABASE, 1)
    assert recalculation.rollback(stored, DATABASE, 3)["rolls_back"] == 3
    assert ad_metrics(stored, ad) == corrupted
    recalculation.rollback(stored, DATABASE, 1)
    assert ad_metrics(stored, ad) == (old[0], old[1] + 5, old[2])


@pytest.mark.integration
def test_a_changed_rule_moves_exactly_the_cells_the_rule_says(stored, events):
    """A lower ip_frequency threshold: the clicks it makes invalid move from clicks to
    invalid_clicks (and their conversions with them), as the rules in Python say."""
    old, new = events.cells(config.IP_FREQUENCY_THRESHOLD), events.cells(2)
    assert old != new
    expected = sorted(
        ({"minute": m, "ad_id": ad, "metric": metric, "old": old.get((m, ad, metric), 0),
          "new": new.get((m, ad, metric), 0),
          "delta": new.get((m, ad, metric), 0) - old.get((m, ad, metric), 0)}
         for (m, ad, metric) in set(old) | set(new)
         if old.get((m, ad, metric), 0) != new.get((m, ad, metric), 0)),
        key=lambda cell: (cell["minute"], cell["ad_id"], cell["metric"]))

    before = rows_outside(stored, "ad_click_counts"), valid_clicks_in_range(stored)
    result = dry_run(stored, ads=ADS[:3] + ADS[3:], settings={"ip_frequency_threshold": 2})

    assert result["changed"] == expected
    assert result["settings"]["ip_frequency_threshold"] == 2
    # A dry run writes nothing.
    assert (rows_outside(stored, "ad_click_counts"), valid_clicks_in_range(stored)) == before
    assert "published" not in result and stored.query(
        f"SELECT count() FROM {DATABASE}.recalculations").result_rows[0][0] == 0


def test_requests_are_checked_before_anything_runs():
    def refused(body, words):
        with pytest.raises(recalculation.Refused, match=words):
            recalculation.parse_request(body)

    refused({**ALL, "from": "2026-11-30T09:00:30Z"}, "whole minute")
    refused({**ALL, "to": ALL["from"]}, "after 'from'")
    refused({"to": ALL["to"]}, "'from' is required")
    refused({**ALL, "ads": ["x" * 65]}, "ad ids")
    refused({**ALL, "settings": {"top_n": 0}}, "from 1 to")
    refused({**ALL, "settings": {"dedup": 1}}, "unknown setting")
    refused({**ALL, "settings": {"repeat_click_window_s": 700, "ip_frequency_window_s": 600}},
            "at most the ip")
    refused({**ALL, "dry_run": "no"}, "true or false")
    refused({**ALL, "when": 1}, "unknown field")
    request = recalculation.parse_request({**ALL, "ads": ["b", "a", "b"]})
    assert (request.start, request.end, request.ads) == (T0, T0 + MINUTES * MINUTE, ("a", "b"))


@pytest.mark.integration
def test_a_range_not_closed_or_not_in_the_raw_store_is_refused(stored):
    with pytest.raises(recalculation.Refused, match="not closed yet"):
        dry_run(stored, to=iso(CLOSED_UNTIL + MINUTE))
    with pytest.raises(recalculation.Refused, match="no longer holds"):
        dry_run(stored, **{"from": iso(T0 - MINUTE)})
    # Published only once the live job can no longer change the minutes.
    recent = CLOSED_UNTIL - recalculation.PUBLISH_AFTER + MINUTE
    with pytest.raises(recalculation.Refused, match="may still change"):
        dry_run(stored, **{"from": iso(recent - MINUTE), "to": iso(recent), "dry_run": False})


def test_the_admin_api_checks_a_request_then_runs_it_in_the_background(
        stored, monkeypatch):
    """POST checks the body and the range at once (400, naming the problem), answers 202 and
    runs it apart; one at a time (409); GET follows it; only admins (403). The batch itself is
    left out here (tests/test_restarts.py runs it through the API): a stand-in holds the run
    until the test lets it finish."""
    app = create_app({"CLICKHOUSE_URL": store_url(stored), "DATABASE": DATABASE,
                      "TESTING": True, "RATE_LIMIT_PER_S": 0})
    admin = access.create_key(stored, DATABASE, "recalculating-admin", "admin")[0]
    reader = access.create_key(stored, DATABASE, "recalculating-reader", "reader")[0]
    openapi = yaml.safe_load((REPO / "api" / "openapi.yaml").read_text())
    as_admin = Api(app, admin, openapi)
    release = threading.Event()

    def held(client, db, request, who):
        release.wait(30)
        return {"changed": [], "totals": {}, "exported": {}, "settings": {}, "seen": (db, who)}

    monkeypatch.setattr(recalculation, "recalculate", held)

    def post(body, key=admin):
        response = as_admin.client.post("/v1/admin/recalculations", json=body,
                                        headers={"Authorization": f"Bearer {key}"})
        as_admin.check(response, "/v1/admin/recalculations", "post")
        return response.status_code, response.get_json()

    assert post({**ALL, "to": "soon"}) == (400, {"error": "'to' is not an ISO 8601 time: 'soon'"})
    status, body = post({**ALL, "to": iso(CLOSED_UNTIL + MINUTE)})
    assert status == 400 and "not closed yet" in body["error"]
    assert post(ALL, key=reader)[0] == 403
    status, started = post({**ALL, "reason": "a test"})
    assert status == 202 and started["status"] == "running"
    assert started["requested_by"] == "recalculating-admin"
    assert post(ALL)[0] == 409
    release.set()
    path = f"/v1/admin/recalculations/{started['id']}"
    for _ in range(100):
        run = as_admin.get(path, template="/v1/admin/recalculations/{run_id}").get_json()
        if run["status"] != "running":
            break
        time.sleep(0.05)
    assert run["status"] == "done"
    assert run["result"]["seen"] == [DATABASE, "recalculating-admin"]
    listed = as_admin.get("/v1/admin/recalculations").get_json()["recalculations"]
    assert [entry["id"] for entry in listed] == [started["id"]] and "result" not in listed[0]
    for body, words in (({"id": "1"}, "the body must be"), ({"id": 99}, "no published")):
        response = as_admin.client.post("/v1/admin/recalculations/rollback", json=body,
                                        headers={"Authorization": f"Bearer {admin}"})
        as_admin.check(response, "/v1/admin/recalculations/rollback", "post")
        assert response.status_code == 400 and words in response.get_json()["error"]
    missing = as_admin.get("/v1/admin/recalculations/r999",
                           template="/v1/admin/recalculations/{run_id}")
    assert missing.status_code == 404
