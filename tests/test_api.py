"""The HTTP API end to end on the real embedded engine: answers, errors, auth, SQL, contract.

Each answer of API 1 and API 2 is compared with the same answer computed in Python from the
inserted rows (tests/api_fixtures.py), and every response is validated against the schema that
api/openapi.yaml documents for its path, method and status.
"""

import collections
import re
import threading
import time
from datetime import datetime
from datetime import timezone
from pathlib import Path

import pytest
import yaml
from clickhouse_connect.driver.exceptions import DatabaseError

from adclick import access
from adclick import config
from adclick import contract
from api import create_app
from api import db
from api import errors
from api import params
from adclick.testing.api import prometheus_samples
from api.errors import ApiError
from tests.api_fixtures import ADS
from tests.api_fixtures import Api
from tests.api_fixtures import COMPLETE_MINUTES
from tests.api_fixtures import DATA_MINUTES
from tests.api_fixtures import MINUTE
from tests.api_fixtures import T0
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import dedup
from tests.api_fixtures import fresh_database
from tests.api_fixtures import insert_complete_minutes
from tests.api_fixtures import insert_counts
from tests.api_fixtures import iso
from tests.api_fixtures import load_attributions
from tests.api_fixtures import load_dataset
from tests.api_fixtures import truth_count
from tests.api_fixtures import LABELS
from tests.api_fixtures import selection
from tests.api_fixtures import truth_invalid
from tests.api_fixtures import truth_metrics
from tests.api_fixtures import truth_popular_by
from tests.api_fixtures import truth_recount
from tests.api_fixtures import truth_top

DB = "t_api"
ROOT = Path(__file__).resolve().parent.parent
ANALYSES = sorted((ROOT / "sql" / "analyses").glob("*.sql"))
LATEST_END = T0 + COMPLETE_MINUTES * MINUTE  # the end of "the most recent complete minutes"
COUNT_PATH = "/v1/ads/{ad_id}/aggregated_count"
POPULAR_PATH = "/v1/ads/popular_ads"
METRICS_PATH = "/v1/ads/{ad_id}/metrics"
DOWN_URL = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture(scope="module")
def dataset(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    rows = load_dataset(client, DB)
    _load_side_tables(client, *side_rows(rows))
    return client, rows


@pytest.fixture(scope="module")
def attributions(dataset):
    return load_attributions(dataset[0], DB)


RAW_COLUMNS = ["minute", "click_ts", "click_id", "ad_id", "user_id", "ip", "country", "device",
               "src_partition", "src_offset"]
LATE_COLUMNS = ["minute", "click_id", "ad_id", "country", "device", "user_id", "ip", "click_ts",
                "watermark"]


def side_rows(rows):
    """A few raw clicks and too-late clicks, for the analyses: (raw_clicks, late_clicks).

    Most are for the most clicked ad, the one analysis 04 picks, in two minutes (one with a
    raw click resent, as a duplicate); one of each is for another ad, which 04 must leave out.
    """
    (target, _), (other, _) = truth_top(rows, T0, T0 + DATA_MINUTES * MINUTE, 2)

    def raw(minute, click_id, ad_id, partition, offset):
        return dict(zip(RAW_COLUMNS, [minute, minute, click_id, ad_id, "u1", "10.0.0.1", "KR",
                                      "mobile", partition, offset]))

    def late(minute, click_id, ad_id):
        return dict(zip(LATE_COLUMNS, [minute, click_id, ad_id, "JP", "tablet", "u2", "::1",
                                       minute, minute + 10 * MINUTE]))

    raw_clicks = [raw(T0, f"r{i}", target, 0, i) for i in range(5)] + [
        raw(T0, "r0", target, 1, 99),  # r0 again: one click
        raw(T0 + 3 * MINUTE, "r5", target, 0, 5),
        raw(T0, "r6", other, 0, 6)]
    late_clicks = [late(T0, "z1", target), late(T0 + 3 * MINUTE, "z2", target),
                   late(T0 + 3 * MINUTE, "z3", target), late(T0, "z4", other)]
    return raw_clicks, late_clicks


def _load_side_tables(client, raw_clicks, late_clicks):
    """raw_clicks, late_clicks (see side_rows) and a few dead letters, for the analyses."""
    client.insert("raw_clicks", [[click[c] for c in RAW_COLUMNS] for click in raw_clicks],
                  column_names=RAW_COLUMNS, database=DB)
    client.insert("late_clicks", [[click[c] for c in LATE_COLUMNS] for click in late_clicks],
                  column_names=LATE_COLUMNS, database=DB)
    client.insert("dead_letters", [["click", T0 + i * MINUTE, reason, "e30=", 0, i]
                                   for i, reason in enumerate(["bad_ad_id", "not_json_object",
                                                               "bad_ad_id"])],
                  column_names=["event", "received_at", "reason", "payload_base64",
                                "source_partition", "source_offset"], database=DB)


def make_app(url, **overrides):
    # Fair use off unless a test turns it on: these tests send hundreds of requests a second.
    return create_app({"CLICKHOUSE_URL": url, "DATABASE": DB, "TESTING": True,
                       "RATE_LIMIT_PER_S": 0, **overrides})


@pytest.fixture(scope="module")
def app(dataset, chdb_url):  # noqa: F811
    return make_app(chdb_url)


@pytest.fixture(scope="module")
def key(app, dataset):
    return access.create_key(dataset[0], DB, "test_api", "admin")[0]


@pytest.fixture(scope="module")
def openapi():
    return yaml.safe_load((ROOT / "api" / "openapi.yaml").read_text())


@pytest.fixture(scope="module")
def api(app, key, openapi):
    return Api(app, key, openapi)


def count_of(api, ad_id, **query):
    response = api.get(f"/v1/ads/{ad_id}/aggregated_count", COUNT_PATH, **query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def popular(api, **query):
    response = api.get(POPULAR_PATH, **query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- API 1 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ad_id", ADS + ["never-clicked"])
@pytest.mark.parametrize("minutes", [1, 3, COMPLETE_MINUTES, 1440])
def test_count_over_recent_minutes(api, dataset, ad_id, minutes):
    _, rows = dataset
    body = count_of(api, ad_id, minutes=minutes)
    start = LATEST_END - minutes * MINUTE
    assert body == {"ad_id": ad_id, "count": truth_count(rows, ad_id, start, LATEST_END),
                    "from": iso(start), "to": iso(LATEST_END)}


def test_count_defaults_to_the_latest_complete_minute(api, dataset):
    _, rows = dataset
    body = count_of(api, "tie-a")
    assert (body["from"], body["to"]) == (iso(LATEST_END - MINUTE), iso(LATEST_END))
    assert body["count"] == truth_count(rows, "tie-a", LATEST_END - MINUTE, LATEST_END)


def test_incomplete_minutes_are_not_in_minutes_ranges(api, dataset):
    """Minutes after the latest complete one have counts, but minutes=M stops before them."""
    _, rows = dataset
    assert any(row["minute"] >= LATEST_END for row in rows)
    everything = truth_count(rows, "tie-b", T0, T0 + DATA_MINUTES * MINUTE)
    complete = truth_count(rows, "tie-b", LATEST_END - 1440 * MINUTE, LATEST_END)
    assert complete < everything  # the incomplete minutes have clicks of tie-b
    assert count_of(api, "tie-b", minutes=1440)["count"] == complete


FILTERS = [
    {}, {"country": "KR"}, {"country": "JP,US"}, {"device": "mobile"},
    {"device": "desktop,tablet,other"}, {"country": "KR,DE", "device": "mobile,desktop"},
    {"country": "FR"},
    {"traffic": "invalid"}, {"traffic": "all", "country": "KR"}, {"traffic": "valid"},
    {"reason": "repeat_click,ip_frequency"}, {"traffic": "invalid", "reason": "bot_user_agent"},
]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("first,last", [(0, 1), (2, 9), (0, DATA_MINUTES), (5, 6)])
def test_count_from_to_with_filters(api, dataset, filters, first, last):
    _, rows = dataset
    start, end = T0 + first * MINUTE, T0 + last * MINUTE
    countries, devices, traffic = selection(filters)
    for ad_id in ADS:
        body = count_of(api, ad_id, **{"from": iso(start), "to": iso(end)}, **filters)
        assert body["count"] == truth_count(rows, ad_id, start, end, countries, devices,
                                            traffic), ad_id
        assert (body["from"], body["to"]) == (iso(start), iso(end))


def test_count_with_minutes_and_filters(api, dataset):
    _, rows = dataset
    start = LATEST_END - 4 * MINUTE
    body = count_of(api, "ad-03", minutes=4, country="KR,JP", device="mobile")
    assert body["count"] == truth_count(rows, "ad-03", start, LATEST_END, ("KR", "JP"),
                                        ("mobile",))


def test_late_corrections_and_replays(api, dataset):
    """late = 1 rows are counted; replayed rows are counted once."""
    _, rows = dataset
    unique = dedup(rows)
    late = [row for row in unique if row["late"]]
    assert late and len(unique) < len(rows)
    row = late[0]
    start, end = row["minute"], row["minute"] + MINUTE
    body = count_of(api, row["ad_id"], **{"from": iso(start), "to": iso(end)})
    on_time = sum(r["clicks"] for r in unique if r["ad_id"] == row["ad_id"]
                  and r["minute"] == row["minute"] and not r["late"])
    late_sum = sum(r["clicks"] for r in late if r["ad_id"] == row["ad_id"]
                   and r["minute"] == row["minute"])
    assert body["count"] == on_time + late_sum


def test_timestamps_in_other_accepted_spellings(api, dataset):
    _, rows = dataset
    assert T0 == datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)  # the spellings below
    body = count_of(api, "tie-a", **{"from": "2026-11-24T10:02+00:00", "to": "2026-11-24T10:05Z"})
    assert body == {"ad_id": "tie-a",
                    "count": truth_count(rows, "tie-a", T0 + 2 * MINUTE, T0 + 5 * MINUTE),
                    "from": "2026-11-24T10:02:00Z", "to": "2026-11-24T10:05:00Z"}


# --- API 2 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("count", [None, 1, 5, 1000])
def test_popular_over_recent_minutes(api, dataset, filters, count):
    _, rows = dataset
    countries, devices, traffic = selection(filters)
    query = dict(filters, **({} if count is None else {"count": count}))
    for minutes in (1, 4, 1440):
        body = popular(api, minutes=minutes, **query)
        start = LATEST_END - minutes * MINUTE
        expected = truth_top(rows, start, LATEST_END, count or 100, countries, devices, traffic)
        assert body == {"from": iso(start), "to": iso(LATEST_END),
                        "ads": [{"ad_id": a, "count": c} for a, c in expected]}


@pytest.mark.parametrize("first,last", [(0, 1), (1, 11), (0, DATA_MINUTES), (11, 12)])
def test_popular_from_to(api, dataset, first, last):
    _, rows = dataset
    start, end = T0 + first * MINUTE, T0 + last * MINUTE
    for count in (2, 100):
        body = popular(api, count=count, **{"from": iso(start), "to": iso(end)})
        assert [(ad["ad_id"], ad["count"]) for ad in body["ads"]] == \
            truth_top(rows, start, end, count)


def test_popular_ties_by_ad_id(api, dataset):
    _, rows = dataset
    body = popular(api, minutes=1440, country="KR", device="mobile", count=1000)
    counts = {ad["ad_id"]: ad["count"] for ad in body["ads"]}
    tie = truth_count(rows, "tie-a", T0, LATEST_END, ("KR",), ("mobile",))
    assert counts["tie-a"] == counts["tie-b"] == tie  # a tie indeed
    names = [ad["ad_id"] for ad in body["ads"]]
    assert names.index("tie-b") == names.index("tie-a") + 1


def test_popular_empty_range(api):
    body = popular(api, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-01T01:00:00Z"})
    assert body["ads"] == []


def test_empty_store_ends_at_the_current_minute(chdb_url, openapi):  # noqa: F811
    fresh_database(chdb_url, "t_api_empty")
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": "t_api_empty",
                      "AUTH_REQUIRED": False})
    api = Api(app, None, openapi)
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    body = popular(api, minutes=5)
    after = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    assert body["ads"] == []
    assert body["to"] in (iso(before), iso(after))
    end = datetime.strptime(body["to"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert body["from"] == iso(end - 5 * MINUTE)
    assert count_of(api, "ad-01", minutes=2)["count"] == 0


# --- CTR and CVR ------------------------------------------------------------------------------

def metrics_of(api, ad_id, **query):
    response = api.get(f"/v1/ads/{ad_id}/metrics", METRICS_PATH, **query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("ad_id", ADS[:7] + ["never-shown"])
@pytest.mark.parametrize("filters", FILTERS)
def test_metrics_equal_the_truth(api, dataset, attributions, ad_id, filters):
    _, rows = dataset
    countries, devices, traffic = selection(filters)

    def truth(start, end):
        return {"ad_id": ad_id, "from": iso(start), "to": iso(end), "traffic": sorted(traffic),
                **truth_metrics(rows, attributions, ad_id, start, end, countries, devices,
                                traffic),
                **truth_invalid(rows, ad_id, start, end, countries, devices)}

    for minutes in (1, 4, 1440):
        start = LATEST_END - minutes * MINUTE
        assert metrics_of(api, ad_id, minutes=minutes, **filters) == truth(start, LATEST_END)
    end = T0 + DATA_MINUTES * MINUTE  # from/to may reach minutes that are not complete yet
    body = metrics_of(api, ad_id, **{"from": iso(T0), "to": iso(end)}, **filters)
    assert body == truth(T0, end)


def test_metrics_count_only_attributed_conversions_and_ratios_can_be_null(api, dataset,
                                                                          attributions):
    _, rows = dataset
    end = T0 + DATA_MINUTES * MINUTE
    outcomes = {row["outcome"] for row in attributions}
    assert outcomes == {"attributed", "before_click", "outside_window"}  # the data can tell
    every = sum(1 for row in attributions if row["ad_id"] == "ad-00")
    body = metrics_of(api, "ad-00", **{"from": iso(T0), "to": iso(end)})
    assert 0 < body["conversions"] < every
    assert body["cvr"] == body["conversions"] / body["clicks"]
    assert body["ctr"] == body["clicks"] / body["impressions"]
    # Never shown, never clicked: counts 0, ratios null (a rate of nothing), not 0.
    assert metrics_of(api, "never-shown", minutes=5) == {
        "ad_id": "never-shown", "from": iso(LATEST_END - 5 * MINUTE), "to": iso(LATEST_END),
        "traffic": ["valid"], "impressions": 0, "clicks": 0, "conversions": 0, "ctr": None,
        "cvr": None, "invalid_clicks": 0, "invalid_click_rate": None,
        "invalid_clicks_by_reason": dict.fromkeys(config.TRAFFIC_REASONS, 0)}


@pytest.mark.parametrize("by", ["impressions", "conversions", "ctr", "cvr"])
@pytest.mark.parametrize("min_impressions", [None, 0, 150])
@pytest.mark.parametrize("filters", FILTERS[:3] + FILTERS[-5:-3])
def test_popular_by_each_metric(api, dataset, attributions, by, min_impressions, filters):
    _, rows = dataset
    countries, devices, traffic = selection(filters)
    query = dict(filters, by=by, count=8, minutes=COMPLETE_MINUTES)
    if min_impressions is not None:
        query["min_impressions"] = min_impressions
    body = popular(api, **query)
    floor = params.MIN_IMPRESSIONS_DEFAULT if min_impressions is None else min_impressions
    expected = truth_popular_by(rows, attributions, by, T0, LATEST_END, 8, floor, countries,
                                devices, traffic)
    assert body["by"] == by
    assert body.get("min_impressions") == (floor if by in ("ctr", "cvr") else None)
    assert [(ad["ad_id"], {k: ad[k] for k in ("impressions", "clicks", "conversions", "ctr",
                                              "cvr")}) for ad in body["ads"]] == expected
    assert [ad["count"] for ad in body["ads"]] == [m[by] for _ad, m in expected]


def test_a_ratio_floor_can_leave_no_ad(api, dataset):
    body = popular(api, by="ctr", min_impressions=999_999_999, minutes=COMPLETE_MINUTES)
    assert body["ads"] == []


# --- 400: every validation rule ----------------------------------------------------------------

BAD_REQUESTS = [
    (POPULAR_PATH, {"minutes": "0"}, "minutes"),
    (POPULAR_PATH, {"minutes": "1441"}, "minutes"),
    (POPULAR_PATH, {"minutes": "-1"}, "minutes"),
    (POPULAR_PATH, {"minutes": "1.5"}, "minutes"),
    (POPULAR_PATH, {"minutes": "ten"}, "minutes"),
    (POPULAR_PATH, {"minutes": ""}, "minutes"),
    (POPULAR_PATH, {"minutes": " 5"}, "minutes"),
    (POPULAR_PATH, {"minutes": "5", "from": "2026-11-24T10:00:00Z",
                    "to": "2026-11-24T10:05:00Z"}, "minutes"),
    (POPULAR_PATH, {"minutes": "5", "to": "2026-11-24T10:05:00Z"}, "minutes"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00Z"}, "to"),
    (POPULAR_PATH, {"to": "2026-11-24T10:00:00Z"}, "from"),
    (POPULAR_PATH, {"from": "yesterday", "to": "2026-11-24T10:00:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00", "to": "2026-11-24T10:05:00"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00+01:00", "to": "2026-11-24T11:05:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:30Z", "to": "2026-11-24T10:05:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00.000Z", "to": "2026-11-24T10:05:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-02-30T10:00:00Z", "to": "2026-03-01T10:05:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00Z", "to": "2026-11-24T25:00:00Z"}, "to"),
    (POPULAR_PATH, {"from": "2026-11-24T10:05:00Z", "to": "2026-11-24T10:00:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00Z", "to": "2026-11-24T10:00:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2026-11-24T10:00:00Z", "to": "2026-11-25T10:01:00Z"}, "1440"),
    (POPULAR_PATH, {"from": "1969-12-31T23:00:00Z", "to": "1969-12-31T23:30:00Z"}, "from"),
    (POPULAR_PATH, {"from": "2999-01-01T00:00:00Z", "to": "2999-01-01T00:10:00Z"}, "from"),
    (POPULAR_PATH, {"country": "kr"}, "country"),
    (POPULAR_PATH, {"country": "KOR"}, "country"),
    (POPULAR_PATH, {"country": "KR,"}, "country"),
    (POPULAR_PATH, {"country": ""}, "country"),
    (POPULAR_PATH, {"country": "KR JP"}, "country"),
    (POPULAR_PATH, {"country": ",".join(["KR"] * 51)}, "country"),
    (POPULAR_PATH, {"device": "phone"}, "device"),
    (POPULAR_PATH, {"device": "Mobile"}, "device"),
    (POPULAR_PATH, {"device": "mobile,,desktop"}, "device"),
    (POPULAR_PATH, {"count": "0"}, "count"),
    (POPULAR_PATH, {"count": "1001"}, "count"),
    (POPULAR_PATH, {"count": "many"}, "count"),
    (POPULAR_PATH, {"limit": "5"}, "limit"),
    (POPULAR_PATH, {"minute": "5"}, "minute"),
    (POPULAR_PATH, {"by": "revenue"}, "by"),
    (POPULAR_PATH, {"by": "CTR"}, "by"),
    (POPULAR_PATH, {"by": ""}, "by"),
    (POPULAR_PATH, {"by": "ctr", "min_impressions": "-1"}, "min_impressions"),
    (POPULAR_PATH, {"by": "ctr", "min_impressions": "ten"}, "min_impressions"),
    ("/v1/ads/ad-01/metrics", {"by": "ctr"}, "by"),
    ("/v1/ads/ad-01/metrics", {"minutes": "0"}, "minutes"),
    ("/v1/ads/ad-01/metrics", {"country": "kr"}, "country"),
    ("/v1/ads/bad!id/metrics", {}, "ad_id"),
    ("/v1/ads/ad-01/aggregated_count", {"count": "5"}, "count"),
    ("/v1/ads/ad-01/aggregated_count", {"foo": "1", "bar": "2"}, "bar, foo"),
    ("/v1/ads/ad-01/aggregated_count", {"minutes": "abc"}, "minutes"),
    ("/v1/ads/bad!id/aggregated_count", {}, "ad_id"),
    ("/v1/ads/" + "x" * 65 + "/aggregated_count", {}, "ad_id"),
    ("/v1/ads/ad%20one/aggregated_count", {}, "ad_id"),
    (POPULAR_PATH, {"traffic": "billable"}, "traffic"),
    (POPULAR_PATH, {"traffic": "VALID"}, "traffic"),
    (POPULAR_PATH, {"reason": "fraud"}, "reason"),
    (POPULAR_PATH, {"reason": "repeat_click,"}, "reason"),
    (POPULAR_PATH, {"traffic": "valid", "reason": "repeat_click"}, "reason"),
    ("/v1/ads/ad-01/metrics", {"traffic": "all", "reason": "ip_frequency"}, "reason"),
    ("/v1/ads/ad-01/aggregated_count", {"reason": "bot"}, "reason"),
]


@pytest.mark.parametrize("path,query,named", BAD_REQUESTS)
def test_bad_requests(api, path, query, named):
    template = COUNT_PATH if path.endswith("aggregated_count") else \
        METRICS_PATH if path.endswith("/metrics") else path
    response = api.get(path, template, **query)
    assert response.status_code == 400
    assert named in response.get_json()["error"]


def test_repeated_parameter(api):
    response = api.client.get(f"{POPULAR_PATH}?minutes=1&minutes=2", headers=api.headers)
    api.check(response, POPULAR_PATH, "get")
    assert response.status_code == 400
    assert "minutes" in response.get_json()["error"]


def test_configured_max_range(chdb_url, dataset, openapi):  # noqa: F811
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False, MAX_RANGE_MINUTES=60), None, openapi)
    assert api.get(POPULAR_PATH, minutes=61).status_code == 400
    assert api.get(POPULAR_PATH, minutes=60).status_code == 200
    response = api.get(POPULAR_PATH, **{"from": iso(T0), "to": iso(T0 + 61 * MINUTE)})
    assert response.status_code == 400 and "60 minutes" in response.get_json()["error"]


@pytest.mark.parametrize("text,expected", [
    ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)),
    ("2026-11-24T10:00Z", datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)),
    ("2026-11-24T23:59:00+00:00", datetime(2026, 11, 24, 23, 59, tzinfo=timezone.utc)),
])
def test_timestamp_parsing(text, expected):
    assert params.timestamp({"t": text}, "t") == expected
    assert params.iso(expected).endswith("Z")


# --- 401, 404, 405, 503 -------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [
    None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer ak_not-a-real-key", "ak_raw",
])
@pytest.mark.parametrize("path", ["/v1/ads/ad-01/aggregated_count", POPULAR_PATH])
def test_unauthorized(api, authorization, path):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = api.get(path, COUNT_PATH if "aggregated" in path else path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "key" in response.get_json()["error"]


def test_unauthorized_sql(api):
    response = api.client.post("/v1/sql", json={"query": "SELECT 1"})
    api.check(response, "/v1/sql", "post")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_auth_scheme_is_case_insensitive(api, key):
    response = api.get(POPULAR_PATH, headers={"Authorization": f"bearer {key}"})
    assert response.status_code == 200


def test_revoked_key(api, dataset):
    created = api.client.post("/v1/admin/keys", json={"name": "to-revoke", "role": "reader"},
                              headers=api.headers).get_json()
    key = created["key"]
    assert api.get(POPULAR_PATH, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    response = api.client.post(f"/v1/admin/keys/{created['id']}/revoke", headers=api.headers)
    assert response.status_code == 200, response.get_json()
    response = api.get(POPULAR_PATH, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401 and "revoked" in response.get_json()["error"]


def test_key_cache(chdb_url, dataset, openapi):  # noqa: F811
    """Keys changed by another process show up when the cache expires, not per request."""
    client, _ = dataset
    app = make_app(chdb_url, AUTH_CACHE_S=0.6, AUTH_MISS_REFRESH_S=0.3)
    api = Api(app, None, openapi)
    key = "ak_created-elsewhere-" + str(time.time_ns())
    bearer = {"Authorization": f"Bearer {key}"}
    assert api.get(POPULAR_PATH, headers=bearer).status_code == 401
    access.create_key(client, DB, f"elsewhere-{time.time_ns()}", "reader", key=key)
    time.sleep(0.35)
    assert api.get(POPULAR_PATH, headers=bearer).status_code == 200
    access.revoke_key(client, DB, access.key_id(access.hash_key(key)))  # not via this app
    assert api.get(POPULAR_PATH, headers=bearer).status_code == 200  # still cached
    time.sleep(0.65)
    assert api.get(POPULAR_PATH, headers=bearer).status_code == 401


def test_bootstrap_key_from_config(chdb_url, dataset, openapi):  # noqa: F811
    key = "ak_bootstrap-" + str(time.time_ns())
    app = make_app(chdb_url, API_KEY=key)
    api = Api(app, key, openapi)
    assert api.get(POPULAR_PATH).status_code == 200
    stored = {k.key_hash: k for k in access.keys(dataset[0], DB)}
    assert stored[access.hash_key(key)].role == "admin"


def test_auth_can_be_turned_off(chdb_url, dataset, openapi):  # noqa: F811
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False), None, openapi)
    assert api.get(POPULAR_PATH).status_code == 200
    assert api.client.post("/v1/sql", json={"query": "SELECT 1"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/nope", "/v1/ads", "/v1/ads/ad-01",
                                  "/v1/ads/ad-01/aggregated", "/v1/ads/a/b/aggregated_count"])
def test_not_found_is_json(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]


@pytest.mark.parametrize("method,path", [("post", POPULAR_PATH), ("delete", "/healthz"),
                                         ("get", "/v1/sql"), ("put", COUNT_PATH)])
def test_method_not_allowed_is_json(api, method, path):
    response = getattr(api.client, method)(path.replace("{ad_id}", "ad-01"), headers=api.headers)
    assert response.status_code == 405
    assert response.get_json()["error"]
    assert "Allow" in response.headers


def test_store_down_is_503(openapi):
    api = Api(create_app({"CLICKHOUSE_URL": DOWN_URL, "DATABASE": DB, "AUTH_REQUIRED": False,
                          "QUERY_TIMEOUT_S": 2}), None, openapi)
    response = api.get("/healthz")
    assert response.status_code == 503 and response.get_json()["status"] == "unavailable"
    for path, template in [(POPULAR_PATH, None), ("/v1/ads/ad-01/aggregated_count", COUNT_PATH)]:
        response = api.get(path, template)
        assert response.status_code == 503 and "store" in response.get_json()["error"]
    response = api.client.post("/v1/sql", json={"query": "SELECT 1"})
    api.check(response, "/v1/sql", "post")
    assert response.status_code == 503


def test_store_down_with_auth_is_503_not_401(openapi):
    api = Api(create_app({"CLICKHOUSE_URL": DOWN_URL, "DATABASE": DB}), "ak_whatever", openapi)
    assert api.get(POPULAR_PATH).status_code == 503


def test_clickhouse_error_is_503(chdb_url, dataset, openapi):  # noqa: F811
    """A query ClickHouse fails (here: over a 1-byte memory limit) is a JSON 503."""
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False, MAX_MEMORY_USAGE=1), None, openapi)
    response = api.get(POPULAR_PATH, minutes=60)
    assert response.status_code == 503
    assert "MEMORY_LIMIT_EXCEEDED" in response.get_json()["error"]
    assert response.headers["Retry-After"]


def test_unexpected_error_is_json_500_without_trace(app):
    app_ = app.__class__("probe")
    errors.init_app(app_)

    @app_.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app_.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}


# --- the result cache ----------------------------------------------------------------------------

def test_answers_are_cached_briefly(chdb_url, openapi):  # noqa: F811
    client = fresh_database(chdb_url, "t_api_cache")
    insert_complete_minutes(client, "t_api_cache", [T0])
    row = {"minute": T0, "ad_id": "ad-c", "country": "KR", "device": "mobile", "clicks": 5,
           "late": 0, "click_id": "", "src_partition": 0, "src_offset": 1}
    insert_counts(client, "t_api_cache", [row])
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": "t_api_cache",
                      "AUTH_REQUIRED": False, "RESULT_CACHE_S": 0.3, "RESULT_STALE_S": 0.6})
    api = Api(app, None, openapi)
    old = truth_count([row], "ad-c", T0, T0 + MINUTE)
    assert count_of(api, "ad-c")["count"] == old
    correction = dict(row, late=1, click_id="x", src_offset=2, clicks=1)
    insert_counts(client, "t_api_cache", [correction])
    new = truth_count([row, correction], "ad-c", T0, T0 + MINUTE)
    assert new != old
    assert count_of(api, "ad-c")["count"] == old  # the same question within 0.3 s
    assert count_of(api, "ad-c", country="KR")["count"] == new  # another question
    time.sleep(0.35)
    assert count_of(api, "ad-c")["count"] in (old, new)  # stale, or refreshed already
    deadline = time.monotonic() + 5
    while count_of(api, "ad-c")["count"] != new:  # the background refresh lands
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert popular(api)["ads"] == [{"ad_id": "ad-c", "count": new}]


def test_result_cache_refreshes_in_the_background():
    cache = db.ResultCache(ttl_s=0.2, max_stale_s=10)
    calls, release = [], threading.Event()

    def compute(value, wait=False):
        if wait:
            release.wait(5)
        calls.append(value)
        return value

    assert cache.get("k", lambda: compute(1)) == 1
    assert cache.get("k", lambda: compute(2)) == 1 and calls == [1]
    time.sleep(0.25)
    assert cache.get("k", lambda: compute(3, wait=True)) == 1  # stale, at once
    assert cache.get("k", lambda: compute(4)) == 1  # one refresh at a time
    release.set()
    deadline = time.monotonic() + 5
    while cache.get("k", lambda: compute(5)) != 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert calls == [1, 3]


def test_result_cache_coalesces_concurrent_misses():
    cache = db.ResultCache(ttl_s=10, max_stale_s=10)
    calls, started, release = [], threading.Event(), threading.Event()

    def slow(value):
        calls.append(value)
        started.set()
        release.wait(5)
        if value == "fail":
            raise ValueError("no")
        return value

    for outcome in ("ok", "fail"):
        calls.clear()
        started.clear()
        release.clear()
        answers = []

        def ask(outcome=outcome):
            try:
                answers.append(cache.get(outcome, lambda: slow(outcome)))
            except ValueError as error:
                answers.append(str(error))

        first = threading.Thread(target=ask)
        first.start()
        started.wait(5)
        others = [threading.Thread(target=ask) for _ in range(3)]
        for thread in others:
            thread.start()
        time.sleep(0.05)
        release.set()
        for thread in [first, *others]:
            thread.join(5)
        assert calls == [outcome]  # one computation for the four callers
        assert answers == [outcome if outcome == "ok" else "no"] * 4


def test_result_cache_too_stale_is_recomputed_and_errors_are_not_cached():
    cache = db.ResultCache(ttl_s=0.05, max_stale_s=0.1)
    assert cache.get("k", lambda: 1) == 1
    time.sleep(0.15)
    assert cache.get("k", lambda: 2) == 2  # past max_stale_s: computed by the caller
    with pytest.raises(ZeroDivisionError):
        cache.get("other", lambda: 1 / 0)
    assert cache.get("other", lambda: 7) == 7
    off = db.ResultCache(ttl_s=0, max_stale_s=0)
    assert [off.get("k", lambda: n) for n in (1, 2)] == [1, 2]


# --- health and the OpenAPI document ---------------------------------------------------------

def test_healthz(api):
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_openapi_served(api, openapi):
    as_json = api.client.get("/openapi.json")
    assert as_json.status_code == 200 and as_json.get_json() == openapi
    as_yaml = api.client.get("/openapi.yaml")
    assert as_yaml.status_code == 200 and yaml.safe_load(as_yaml.data) == openapi


def _flask_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_openapi_documents_every_route_and_no_other(app, openapi):
    documented = {(path, method) for path, item in openapi["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert _flask_routes(app) == documented


def test_openapi_security(openapi):
    assert openapi["components"]["securitySchemes"]["bearerAuth"] == {
        **openapi["components"]["securitySchemes"]["bearerAuth"], "type": "http",
        "scheme": "bearer"}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            public = operation.get("security") == []
            assert public == (not path.startswith("/v1/")), (path, method)
            if not public:
                assert "401" in operation["responses"]


def test_openapi_ranges_match_the_code(openapi):
    parameters = openapi["components"]["parameters"]
    assert parameters["minutes"]["schema"]["maximum"] == 1440
    count = openapi["paths"][POPULAR_PATH]["get"]["parameters"][0]
    assert count["schema"]["maximum"] == params.POPULAR_MAX
    assert count["schema"]["default"] == params.POPULAR_DEFAULT
    assert set(parameters["device"]["schema"]["pattern"].split("(")[1].split(")")[0]
               .split("|")) == set(params.DEVICES)


# --- POST /v1/sql -------------------------------------------------------------------------------

def test_sql_reads(api, dataset):
    _, rows = dataset
    body = api.sql("SELECT ad_id, sum(clicks) AS clicks FROM ad_click_counts FINAL"
                   " GROUP BY ad_id ORDER BY ad_id", 200)
    assert body["columns"] == ["ad_id", "clicks"]
    assert body["types"][0] == "String"
    end = T0 + DATA_MINUTES * MINUTE
    # Ad-hoc SQL sees every row, whatever its traffic label.
    assert body["rows"] == [[ad, truth_count(rows, ad, T0, end, traffic=LABELS)]
                            for ad in sorted(ADS)]
    assert body["truncated"] is False and body["row_count"] == len(ADS)


@pytest.mark.parametrize("query", [
    "SELECT 1;", "SELECT 1 ;  -- done", "  SELECT 1  ", "-- a comment\nSELECT 1",
    "SELECT 1 /* ; */", "SELECT 1; /* trailing */ ;",
])
def test_sql_single_statement_spellings(api, query):
    assert api.sql(query, 200)["rows"] == [[1]]


def test_sql_semicolons_inside_literals(api):
    body = api.sql("SELECT 'a;b' AS \"x;y\", `c;d`.1 FROM (SELECT tuple(1) AS `c;d`) -- ;", 200)
    assert body["rows"] == [["a;b", 1]]


def test_sql_values_are_json(api):
    body = api.sql("SELECT toDateTime('2026-11-24 10:00:00', 'UTC') AS t, toDate('2026-11-24')"
                   " AS d, [1, 2] AS a, map('k', 1.5) AS m, (1, 'x') AS tu, nan AS n,"
                   " toDecimal64(1.25, 2) AS dec, unhex('ff') AS bad_utf8, NULL AS nothing,"
                   " toUUID('00000000-0000-0000-0000-000000000001') AS u, 18446744073709551615"
                   " AS big", 200)
    row = dict(zip(body["columns"], body["rows"][0]))
    assert row["t"].startswith("2026-11-24T10:00:00")
    assert row["d"] == "2026-11-24" and row["a"] == [1, 2] and row["m"] == {"k": 1.5}
    assert row["tu"] == [1, "x"] and row["n"] is None and row["dec"] == "1.25"
    assert row["bad_utf8"] == "\ufffd" and row["nothing"] is None
    assert row["u"] == "00000000-0000-0000-0000-000000000001"
    assert row["big"] == 18446744073709551615


def test_sql_empty_result_keeps_columns(api):
    body = api.sql("SELECT ad_id, clicks FROM ad_click_counts WHERE 0", 200)
    assert body["columns"] == ["ad_id", "clicks"] and body["rows"] == []


NOT_A_SELECT = "only one SELECT"
NO_CLAUSE = "no INTO OUTFILE, FORMAT or SETTINGS"


@pytest.mark.parametrize("statement,status,reason", [
    ("INSERT INTO ad_click_counts (ad_id) VALUES ('x')", 400, NOT_A_SELECT),
    ("INSERT INTO ad_click_counts SELECT * FROM ad_click_counts", 400, NOT_A_SELECT),
    ("DROP TABLE ad_click_counts", 400, NOT_A_SELECT),
    ("DROP DATABASE " + DB, 400, NOT_A_SELECT),
    ("TRUNCATE TABLE ad_click_counts", 400, NOT_A_SELECT),
    ("CREATE TABLE evil (a Int8) ENGINE = Memory", 400, NOT_A_SELECT),
    ("ALTER TABLE ad_click_counts DELETE WHERE 1", 400, NOT_A_SELECT),
    ("ALTER TABLE ad_click_counts ADD COLUMN evil UInt8", 400, NOT_A_SELECT),
    ("RENAME TABLE ad_click_counts TO evil", 400, NOT_A_SELECT),
    ("OPTIMIZE TABLE ad_click_counts FINAL", 400, NOT_A_SELECT),
    ("SET readonly = 0", 400, NOT_A_SELECT),
    ("SET max_execution_time = 1000", 400, NOT_A_SELECT),
    ("SELECT 1 SETTINGS readonly = 0", 400, "READONLY"),
    ("SELECT 1 SETTINGS max_execution_time = 1000", 400, "READONLY"),
    ("SELECT 1 FORMAT CSV", 403, NO_CLAUSE),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 403, "table function file"),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", 403, "table function url"),
    ("INSERT INTO FUNCTION file('/tmp/adclick-evil.csv', 'CSV', 'a UInt8') VALUES (1)", 400,
     NOT_A_SELECT),
    ("SYSTEM DROP DNS CACHE", 400, NOT_A_SELECT),
    ("EXPLAIN SELECT 1", 400, NOT_A_SELECT),
    ("SHOW TABLES", 400, NOT_A_SELECT),
])
def test_sql_writes_and_setting_changes_are_refused(api, dataset, statement, status, reason):
    client, _ = dataset
    before = client.query(f"SELECT count() FROM {DB}.ad_click_counts").result_rows
    assert reason in api.sql(statement, status)["error"]
    assert client.query(f"SELECT count() FROM {DB}.ad_click_counts").result_rows == before


@pytest.mark.parametrize("statement", [
    "INSERT INTO ad_click_counts (ad_id) VALUES ('x')",
    "DROP TABLE ad_click_counts",
    "SET readonly = 0",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
])
def test_sql_session_refuses_writes_by_itself(app, dataset, statement):
    """Behind api.sql_scope, the engine's readonly session refuses what the scope lets by."""
    client, _ = dataset
    before = client.query(f"SELECT count() FROM {DB}.ad_click_counts").result_rows
    with app.app_context():
        session = db.get_store().sql_client()
    with pytest.raises(DatabaseError, match="READONLY"):
        session.query(statement)
    assert client.query(f"SELECT count() FROM {DB}.ad_click_counts").result_rows == before


@pytest.mark.parametrize("statement,reason", [
    ("SELECT * FROM api_keys", "table api_keys"),
    ("SELECT key_hash FROM api_keys FINAL", "table api_keys"),
    (f"SELECT * FROM {DB}.api_keys", "table api_keys"),
    ("FROM api_keys SELECT name", "table api_keys"),
    ("SELECT count() FROM ad_click_counts WHERE ad_id IN (SELECT key_hash FROM api_keys)",
     "table api_keys"),
    ("WITH k AS (SELECT * FROM api_keys) SELECT * FROM k", "table api_keys"),
    ("SELECT 1 WHERE ('h', 'n', now(), now(), 0) IN api_keys", "table api_keys"),
    ("DESCRIBE (SELECT * FROM api_keys)", "table api_keys"),
    ("SELECT * FROM `api_keys`", "table api_keys"),
    (f"SELECT * FROM merge('{DB}', 'api')", "table function merge"),
    (f"SELECT * FROM mergeTreeIndex('{DB}', 'api_keys')", "table function mergeTreeIndex"),
    ("SELECT * FROM view(SELECT * FROM numbers(1))", "table function view"),
    ("SELECT file('/etc/hostname')", "function file"),
    ("SELECT query FROM system.processes", "only the tables of database"),
    ("SELECT name FROM system.tables", "only the tables of database"),
    ("SELECT * FROM t_other.ad_click_counts", "only the tables of database"),
])
def test_sql_cannot_read_the_api_keys(api, key, dataset, statement, reason):
    """Any key reads the data tables through /v1/sql, never the keys' hashes and names."""
    client, _ = dataset
    hashes = {row[0] for row in client.query(f"SELECT key_hash FROM {DB}.api_keys").result_rows}
    assert access.hash_key(key) in hashes
    body = api.sql(statement, 403)
    assert reason in body["error"]
    assert not any(digest in str(body) for digest in hashes)


@pytest.mark.parametrize("statement,rows", [
    ("SELECT a.ad_id FROM ad_click_counts AS a WHERE a.ad_id = 'ad-01' LIMIT 1", [["ad-01"]]),
    ("WITH k AS (SELECT 1 AS x) SELECT x FROM k", [[1]]),
    ("SELECT count() FROM numbers(3)", [[3]]),
    ("SELECT count() FROM raw_clicks WHERE ad_id = 'no-such-ad'", [[0]]),
    ("DESCRIBE TABLE late_clicks", None),
    ("SELECT sumIf(clicks, late = 0) > 0, uniqExact(ad_id) FROM ad_click_counts FINAL"
     " WHERE ad_id IN (SELECT ad_id FROM top_ads_minute)", [[1, 1]]),
])
def test_sql_still_reads_the_data(api, dataset, statement, rows):
    body = api.sql(statement, 200)
    assert body["rows"] == rows if rows is not None else body["rows"]


@pytest.mark.parametrize("statement", [
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP TABLE ad_click_counts",
    "SELECT 1;DROP TABLE ad_click_counts; -- x",
    "SELECT ';'; SELECT 2",
    "SELECT 1; /* c */ SELECT 2",
])
def test_sql_multiple_statements_refused(api, statement):
    assert "single statement" in api.sql(statement, 400)["error"]


@pytest.mark.parametrize("body,named", [
    ({}, "query"),
    ({"query": 1}, "query"),
    ({"query": None}, "query"),
    ({"query": ""}, "empty"),
    ({"query": "  -- nothing\n"}, "empty"),
    ({"query": ";"}, "empty"),
    ({"query": "SELECT 1", "database": "system"}, "database"),
    ([], "JSON object"),
    ("SELECT 1", "JSON object"),
])
def test_sql_bad_bodies(api, body, named):
    response = api.client.post("/v1/sql", json=body, headers=api.headers)
    api.check(response, "/v1/sql", "post")
    assert response.status_code == 400
    assert named in response.get_json()["error"]


def test_sql_body_not_json(api):
    response = api.client.post("/v1/sql", data="SELECT 1", headers=api.headers)
    api.check(response, "/v1/sql", "post")
    assert response.status_code == 400


def test_sql_body_too_large(api):
    response = api.client.post("/v1/sql", json={"query": "SELECT 1 -- " + "x" * 3_000_000},
                               headers=api.headers)
    api.check(response, "/v1/sql", "post")
    assert response.status_code == 413


def test_sql_query_too_long(chdb_url, dataset, openapi):  # noqa: F811
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False, SQL_MAX_QUERY_CHARS=20), None, openapi)
    assert "longer than 20" in api.sql("SELECT 1 + 1 + 1 + 1 + 1", 400)["error"]


@pytest.mark.parametrize("statement,code", [
    ("SELEC 1", "SYNTAX_ERROR"),
    ("SELECT * FROM no_such_table", "UNKNOWN_TABLE"),
    ("SELECT no_such_column FROM ad_click_counts", "UNKNOWN_IDENTIFIER"),
])
def test_sql_engine_errors_are_400_with_the_message(api, statement, code):
    assert code in api.sql(statement, 400)["error"]


def test_sql_row_cap(chdb_url, dataset, openapi):  # noqa: F811
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False, SQL_MAX_ROWS=10), None, openapi)
    body = api.sql("SELECT number FROM numbers(1000000)", 200)
    assert body["rows"] == [[n] for n in range(10)]
    assert body["truncated"] is True and body["row_count"] == 10 and "10 rows" in body["note"]
    body = api.sql("SELECT number FROM numbers(10)", 200)
    assert body["truncated"] is False and body["row_count"] == 10 and "note" not in body


def test_sql_timeout(chdb_url, dataset, openapi):  # noqa: F811
    api = Api(make_app(chdb_url, AUTH_REQUIRED=False, QUERY_TIMEOUT_S=1), None, openapi)
    started = time.monotonic()
    error = api.sql("SELECT count() FROM numbers(100000000000000)", 400)["error"]
    assert "TIMEOUT_EXCEEDED" in error and time.monotonic() - started < 10


@pytest.mark.parametrize("path", ANALYSES, ids=[path.name for path in ANALYSES])
def test_analyses_run(api, path):
    """Each worked analysis in sql/analyses runs through the API, read-only, with results."""
    text = path.read_text()
    assert text.startswith("--"), "each analysis starts with a comment header"
    body = api.sql(text, 200)
    assert body["columns"] and body["rows"], path.name


def _analysis(api, name):
    body = api.sql((ROOT / "sql" / "analyses" / name).read_text(), 200)
    return [dict(zip(body["columns"], row)) for row in body["rows"]]


def test_analysis_clicks_by_hour_and_country_is_right(api, dataset):
    _, rows = dataset
    result = _analysis(api, "01_clicks_by_hour_and_country.sql")
    end = T0 + DATA_MINUTES * MINUTE
    target = truth_top(rows, T0, end, 1)[0][0]
    assert {row["ad"] for row in result} == {target}
    assert {row["country"]: row["total_clicks"] for row in result} == {
        country: truth_count(rows, target, T0, end, (country,))
        for country in {r["country"] for r in dedup(rows) if r["ad_id"] == target}}


def test_analysis_top_ads_per_device_is_right(api, dataset):
    _, rows = dataset
    result = _analysis(api, "02_top_ads_per_device_over_a_day.sql")
    end = T0 + DATA_MINUTES * MINUTE
    for device in ("mobile", "desktop", "tablet", "other"):
        assert [(row["ad_id"], row["ad_clicks"]) for row in result
                if row["device"] == device] == truth_top(rows, T0, end, 10, (), (device,))


def test_analysis_recount_columns(api, dataset):
    """04 reports, per minute of the most clicked ad, the three numbers that must add up, and
    their difference: each equal to its recount in Python from the inserted rows."""
    _, rows = dataset
    result = _analysis(api, "04_counts_vs_raw_recount_for_one_ad.sql")
    # Every label: the recount of raw events knows no labels (valid + invalid = all).
    expected = truth_recount(rows, *side_rows(rows), truth_top(
        rows, T0, T0 + DATA_MINUTES * MINUTE, 1, traffic=LABELS)[0][0])
    assert result and expected
    assert any(row["raw_unique"] and row["too_late"] for row in expected)  # all columns used
    assert [dict(row, minute=row["minute"][:19]) for row in result] == \
        [dict(row, minute=row["minute"].strftime("%Y-%m-%dT%H:%M:%S")) for row in expected]


# --- request parsing units ----------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("SELECT 1", "SELECT 1"),
    ("SELECT 1;", "SELECT 1"),
    ("SELECT 1;;", "SELECT 1"),
    ("SELECT 'it''s;' ;", "SELECT 'it''s;'"),
    ("SELECT 'a\\';b'", "SELECT 'a\\';b'"),
    ("SELECT $$;$$", "SELECT $$;$$"),
    ("SELECT 1 # comment ; x", "SELECT 1 # comment ; x"),
    ("SELECT 1 -- ;\n", "SELECT 1 -- ;"),
])
def test_single_statement(text, expected):
    assert params.single_statement(text) == expected


@pytest.mark.parametrize("text", ["SELECT 1; SELECT 2", "SELECT 1 #x\n; SELECT 2",
                                  "SELECT $t$;$t$; SELECT 2", "; SELECT 1"])
def test_single_statement_refuses(text):
    with pytest.raises(ApiError):
        params.single_statement(text)


# --- GET /v1/ads/per_minute, /v1/status, /metrics --------------------------------------------

PER_MINUTE_PATH = "/v1/ads/per_minute"


def truth_per_minute(rows, start, end, ad_id=None, countries=(), devices=(),
                     traffic=("valid",)):
    """[(minute, clicks)] for every minute of [start, end), from the rows."""
    totals = collections.Counter()
    for row in dedup(rows):
        if not start <= row["minute"] < end or (ad_id and row["ad_id"] != ad_id):
            continue
        if (countries and row["country"] not in countries) or (
                devices and row["device"] not in devices) or row["traffic"] not in traffic:
            continue
        totals[row["minute"]] += row["clicks"]
    return [(iso(start + i * MINUTE), totals[start + i * MINUTE])
            for i in range((end - start) // MINUTE)]


@pytest.mark.parametrize("query", [
    {"minutes": 10},
    {"minutes": 10, "ad_id": "ad-00"},
    {"minutes": 3, "ad_id": "ad-03", "country": "KR,JP", "device": "mobile"},
    {"from": iso(T0 + 8 * MINUTE), "to": iso(T0 + 12 * MINUTE), "device": "tablet"},
    {"minutes": 2, "ad_id": "no-such-ad"},
    {"minutes": 10, "ad_id": "ad-00", "traffic": "all"},
    {"minutes": 10, "reason": "bot_user_agent,datacenter_ip"},
])
def test_per_minute_equals_the_truth(api, dataset, query):
    _, rows = dataset
    response = api.get(PER_MINUTE_PATH, **query)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    if "minutes" in query:
        start, end = LATEST_END - query["minutes"] * MINUTE, LATEST_END
    else:
        start, end = T0 + 8 * MINUTE, T0 + 12 * MINUTE
    countries, devices, traffic = selection(query)
    expected = truth_per_minute(rows, start, end, query.get("ad_id"), countries, devices,
                                traffic)
    assert [(m["minute"], m["clicks"]) for m in body["minutes"]] == expected
    assert body["ad_id"] == query.get("ad_id")
    assert (body["from"], body["to"]) == (iso(start), iso(end))
    assert any(clicks for _, clicks in expected) or query.get("ad_id") == "no-such-ad"


def test_status_counts_what_did_not_count_on_time(api, dataset):
    _, rows = dataset
    raw_clicks, late_clicks = side_rows(rows)
    body = api.get("/v1/status", minutes=10).get_json()
    assert body["newest_complete_minute"] == iso(LATEST_END - MINUTE)
    assert abs(body["freshness_s"] - (time.time() - LATEST_END.timestamp())) < 5
    assert body["loader"] is None and body["flink"] is None  # neither in this process
    corrections = collections.Counter()
    for row in dedup(rows):
        if row["late"]:
            corrections[row["minute"]] += row["clicks"]
    too_late = collections.Counter(click["minute"] for click in late_clicks)
    dead = {T0: 1, T0 + MINUTE: 1, T0 + 2 * MINUTE: 1}  # _load_side_tables
    expected = [{"minute": iso(T0 + i * MINUTE), "late_corrections": corrections[T0 + i * MINUTE],
                 "too_late": too_late[T0 + i * MINUTE], "dead_letters": dead.get(
                     T0 + i * MINUTE, 0)} for i in range(10)]
    assert body["minutes"] == expected
    assert sum(m["late_corrections"] for m in expected) > 0


def test_status_says_when_flink_does_not_answer(chdb_url, dataset, key, openapi):  # noqa: F811
    down = Api(make_app(chdb_url, FLINK_REST_URL=DOWN_URL), key, openapi)
    flink = down.get("/v1/status").get_json()["flink"]
    assert "did not answer" in flink["error"]


def _scrape(api):
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return prometheus_samples(response.get_data(as_text=True))


def test_metrics_count_requests_and_report_freshness(api, dataset):
    popular_200 = ("adclick_http_requests_total", (("endpoint", POPULAR_PATH),
                                                  ("method", "GET"), ("status", "200")))
    popular_400 = ("adclick_http_requests_total", (("endpoint", POPULAR_PATH),
                                                  ("method", "GET"), ("status", "400")))
    before = _scrape(api)
    popular(api, minutes=3)
    assert api.get(POPULAR_PATH, minutes="x").status_code == 400
    after = _scrape(api)
    assert after[popular_200] - before.get(popular_200, 0) == 1
    assert after[popular_400] - before.get(popular_400, 0) == 1
    for status in ("200", "400"):
        latency = ("adclick_http_request_duration_seconds_count",
                   (("endpoint", POPULAR_PATH), ("method", "GET"), ("status", status)))
        assert after[latency] - before.get(latency, 0) == 1
    assert after[("adclick_store_up", ())] == 1
    age = after[("adclick_newest_complete_minute_age_seconds", ())]
    assert abs(age - (time.time() - LATEST_END.timestamp())) < 5
    lookups = sum(value for (name, _), value in after.items()
                  if name == "adclick_result_cache_lookups_total")
    assert lookups > 0
    assert not any(name.startswith("adclick_loader") for name, _ in after)  # no loader here


def test_metrics_say_when_the_store_is_down(key, openapi):
    down = Api(make_app(DOWN_URL), key, openapi)
    samples = _scrape(down)
    assert samples[("adclick_store_up", ())] == 0
    assert ("adclick_newest_complete_minute_age_seconds", ()) not in samples


def test_dashboard_page_is_self_contained(api):
    response = api.client.get("/dashboard")
    assert response.status_code == 200 and response.content_type.startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert asset.startswith("/dashboard/static/"), asset  # no CDN: nothing from elsewhere
        assert api.client.get(asset).status_code == 200
    for device in contract.DEVICES:
        assert f'<option value="{device}">' in page
