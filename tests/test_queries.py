"""adclick.queries against the real embedded engine, checked against answers computed in Python.

No HTTP here: these tests pin the SQL itself (FINAL collapsing replayed rows, late corrections
counted, filters, ranking and ties, parameters never spliced), so that an API test failure
points at the API layer.
"""

from datetime import datetime

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from adclick import access
from adclick import queries
from tests.api_fixtures import ADS
from tests.api_fixtures import COMPLETE_MINUTES
from tests.api_fixtures import DATA_MINUTES
from tests.api_fixtures import MINUTE
from tests.api_fixtures import T0
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import dedup
from tests.api_fixtures import fresh_database
from tests.api_fixtures import load_dataset
from tests.api_fixtures import truth_count
from tests.api_fixtures import truth_top

DB = "t_queries"
EMPTY_DB = "t_queries_empty"
END = T0 + DATA_MINUTES * MINUTE


@pytest.fixture(scope="module")
def loaded(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    rows = load_dataset(client, DB)
    return client, rows


def test_dataset_needs_final(loaded):
    """The replayed rows are really there: without FINAL the sum is too high."""
    client, rows = loaded
    raw = client.query(f"SELECT sum(clicks) FROM {DB}.ad_click_counts").result_rows[0][0]
    final = client.query(f"SELECT sum(clicks) FROM {DB}.ad_click_counts FINAL").result_rows[0][0]
    assert raw == sum(row["clicks"] for row in rows)
    assert final == sum(row["clicks"] for row in dedup(rows)) < raw
    assert any(row["late"] for row in dedup(rows))


@pytest.mark.parametrize("ad_id", ADS + ["unknown-ad"])
def test_ad_click_count_whole_range(loaded, ad_id):
    client, rows = loaded
    assert queries.ad_click_count(client, DB, ad_id, T0, END) == truth_count(rows, ad_id, T0, END)


@pytest.mark.parametrize("countries,devices", [
    (("KR",), ()), ((), ("mobile",)), (("KR", "JP"), ("desktop", "tablet")), (("FR",), ()),
])
@pytest.mark.parametrize("first,last", [(0, 1), (2, 7), (0, DATA_MINUTES)])
def test_ad_click_count_filters_and_ranges(loaded, countries, devices, first, last):
    client, rows = loaded
    start, end = T0 + first * MINUTE, T0 + last * MINUTE
    for ad_id in ADS[:6]:
        assert queries.ad_click_count(client, DB, ad_id, start, end, countries, devices) == \
            truth_count(rows, ad_id, start, end, countries, devices)


@pytest.mark.parametrize("limit", [1, 3, 100])
@pytest.mark.parametrize("countries,devices", [((), ()), (("US", "DE"), ()), ((), ("other",))])
def test_popular_ads(loaded, limit, countries, devices):
    client, rows = loaded
    for first, last in [(0, 1), (3, 9), (0, DATA_MINUTES)]:
        start, end = T0 + first * MINUTE, T0 + last * MINUTE
        assert queries.popular_ads(client, DB, start, end, limit, countries, devices) == \
            truth_top(rows, start, end, limit, countries, devices)


def test_popular_ads_ties_by_ad_id(loaded):
    client, rows = loaded
    top = queries.popular_ads(client, DB, T0, END, 1000, ("KR",), ("mobile",))
    names = [ad for ad, _ in top]
    assert dict(top)["tie-a"] == dict(top)["tie-b"] == \
        truth_count(rows, "tie-a", T0, END, ("KR",), ("mobile",))
    assert names.index("tie-b") == names.index("tie-a") + 1


def test_latest_complete_minute(loaded, chdb_url):  # noqa: F811
    client, _ = loaded
    assert queries.latest_complete_minute(client, DB) == T0 + (COMPLETE_MINUTES - 1) * MINUTE
    empty = fresh_database(chdb_url, EMPTY_DB)
    assert queries.latest_complete_minute(empty, EMPTY_DB) is None


def test_values_are_parameters_not_sql(loaded):
    """Hostile values are just values: no error, no match, nothing dropped."""
    client, rows = loaded
    hostile = "x' OR 1=1 --"
    assert queries.ad_click_count(client, DB, hostile, T0, END) == 0
    assert queries.ad_click_count(client, DB, "ad-01", T0, END, ("K'R",), ("')--",)) == 0
    assert queries.popular_ads(client, DB, T0, END, 5, (hostile,)) == []


def test_times_must_be_aware(loaded):
    client, _ = loaded
    with pytest.raises(ValueError):
        queries.ad_click_count(client, DB, "ad-01", datetime(2026, 1, 1), END)


def test_settings_reach_the_engine(loaded):
    """Per-request limits are applied: a tiny memory limit makes the query fail."""
    client, _ = loaded
    with pytest.raises(DatabaseError):
        queries.popular_ads(client, DB, T0, END, 10, settings={"max_memory_usage": 1})


def test_health_check(loaded):
    client, _ = loaded
    assert queries.health_check(client) is True


def test_api_statements_use_only_parameters():
    """Every statement names its database as {db:Identifier}: nothing is formatted in."""
    for module, name in ((queries, "LATEST_COMPLETE_MINUTE"), (queries, "AD_CLICK_COUNT"),
                         (queries, "POPULAR_ADS"), (access, "KEYS"), (access, "WRITE_KEY"),
                         (access, "RECORD_USE"), (access, "AD_OWNER")):
        statement = getattr(module, name)
        assert "{db:Identifier}." in statement
        assert "{db}" not in statement


def test_range_is_half_open(loaded):
    """A range is [from, to): the minute at `from` counts, the minute at `to` does not."""
    client, rows = loaded
    start = T0 + 3 * MINUTE
    first = truth_count(rows, "tie-a", start, start + MINUTE)
    second = truth_count(rows, "tie-a", start + MINUTE, start + 2 * MINUTE)
    assert first and second  # both minutes have clicks, so a boundary off by one shows
    assert queries.ad_click_count(client, DB, "tie-a", start, start + MINUTE) == first
    assert queries.ad_click_count(client, DB, "tie-a", start + MINUTE, start + 2 * MINUTE) == \
        second
    assert queries.ad_click_count(client, DB, "tie-a", start, start + 2 * MINUTE) == \
        first + second
