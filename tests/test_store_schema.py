"""The ClickHouse tables hold the events as the contracts declare them, and the loader's columns.

sql/clickhouse/*.sql is written by hand (keys, partitions and engines are the schema's own
decisions); the events' fields in it are checked here against adclick.contract, on the real
embedded engine. An older store's tables are brought to this release's layout.
"""

import pytest

from adclick import ingest
from adclick import store
from adclick.contract import CLICK
from adclick.contract import CONVERSION
from adclick.contract import IMPRESSION
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database


@pytest.fixture(scope="module")
def columns(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, "schema_check")
    rows = client.query("SELECT table, name, type FROM system.columns"
                        " WHERE database = 'schema_check'").result_rows
    tables = {}
    for table, name, column_type in rows:
        tables.setdefault(table, {})[name] = column_type
    return tables


def test_raw_clicks_has_every_field_of_the_contract_with_its_type(columns):
    raw = columns["raw_clicks"]
    assert {name: raw.get(name) for name in CLICK.names} == CLICK.clickhouse_columns()


def kept_by_the_job(event_contract):
    """The fields the job carries past its parser: all but the user agent, which it reads
    once there (the invalid-traffic label) and which would weigh on every exchange after."""
    return {name: clickhouse_type for name, clickhouse_type
            in event_contract.clickhouse_columns().items() if name != "user_agent"}


def test_late_clicks_keep_the_whole_click(columns):
    late = columns["late_clicks"]
    assert {name: late.get(name) for name in kept_by_the_job(CLICK)} == kept_by_the_job(CLICK)


@pytest.mark.parametrize("table", sorted(ingest.COLUMNS))
def test_the_loader_writes_only_columns_the_table_has(columns, table):
    assert set(ingest.COLUMNS[table]) <= set(columns[table])


def test_late_impressions_keep_the_whole_impression(columns):
    late = columns["late_impressions"]
    assert {name: late.get(name) for name in kept_by_the_job(IMPRESSION)} == \
        kept_by_the_job(IMPRESSION)


@pytest.mark.parametrize("table", ["conversions", "conversion_attributions"])
def test_conversions_keep_the_conversions_fields(columns, table):
    kept = columns[table]
    assert {name: kept.get(name) for name in CONVERSION.names} == CONVERSION.clickhouse_columns()


def test_an_older_store_is_brought_to_this_layout(chdb_url):  # noqa: F811
    # A store from before impressions: dead letters keyed by (partition, offset) alone, counts
    # without impressions. Its rows survive, as clicks', and its keys take the event type.
    client = store.connect(chdb_url)
    client.command("DROP DATABASE IF EXISTS schema_upgrade")
    client.command("CREATE DATABASE schema_upgrade")
    client.command("""CREATE TABLE schema_upgrade.dead_letters (received_at DateTime64(3, 'UTC'),
        reason LowCardinality(String), payload_base64 String, source_partition UInt32,
        source_offset UInt64) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMMDD(received_at)
        ORDER BY (source_partition, source_offset)""")
    client.command("""CREATE TABLE schema_upgrade.ad_click_counts (minute DateTime('UTC'),
        ad_id String, country LowCardinality(String), device LowCardinality(String),
        clicks UInt64, late UInt8, click_id String, src_partition UInt32, src_offset UInt64)
        ENGINE = ReplacingMergeTree PARTITION BY toYYYYMMDD(minute)
        ORDER BY (minute, ad_id, country, device, src_partition, src_offset)""")
    # And a store from before the invalid-traffic labels: an hourly rollup keyed by ad alone.
    client.command("""CREATE TABLE schema_upgrade.ad_counts_hourly (hour DateTime('UTC'),
        ad_id String, clicks UInt64, impressions UInt64, computed_at DateTime64(6, 'UTC'))
        ENGINE = ReplacingMergeTree(computed_at) PARTITION BY toYYYYMMDD(hour)
        ORDER BY (hour, ad_id)""")
    client.command("INSERT INTO schema_upgrade.ad_counts_hourly VALUES"
                   " ('2026-12-01 10:00:00', 'ad-1', 3, 40, '2026-12-01 11:05:00')")
    client.command("INSERT INTO schema_upgrade.dead_letters VALUES"
                   " ('2026-12-01 10:00:00', 'oversized', 'eA==', 1, 7)")
    client.command("INSERT INTO schema_upgrade.ad_click_counts VALUES"
                   " ('2026-12-01 10:00:00', 'ad-1', 'KR', 'mobile', 3, 0, '', 0, 1)")
    # And a store with a recalculation published and rolled back in place, before they were
    # put in force by their records: its count rows (+2, then -2) count as they did.
    client.command("""CREATE TABLE schema_upgrade.recalculations (id UInt32,
        kind LowCardinality(String), rolls_back UInt32) ENGINE = MergeTree ORDER BY id""")
    client.command("INSERT INTO schema_upgrade.recalculations VALUES (1, 'publish', 0),"
                   " (2, 'rollback', 1)")
    client.command("INSERT INTO schema_upgrade.ad_click_counts VALUES"
                   " ('2026-12-01 10:00:00', 'ad-1', 'KR', 'mobile', 2, 0, '', 4294967295,"
                   " 4294967296), ('2026-12-01 10:00:00', 'ad-1', 'KR', 'mobile', -2, 0, '',"
                   " 4294967295, 8589934592)")
    for _ in range(2):  # and again at the next start: nothing changes
        store.apply_schema(client, "schema_upgrade")
    client.command("INSERT INTO schema_upgrade.dead_letters VALUES"
                   " ('impression', '2026-12-01 10:01:00', 'bad_ad_id', 'eQ==', 1, 7)")
    assert sorted(client.query("SELECT event, reason, source_offset FROM"
                               " schema_upgrade.dead_letters FINAL").result_rows) == \
        [("click", "oversized", 7), ("impression", "bad_ad_id", 7)]
    # Counted before the labels, every click was billed: the old rows read as valid.
    assert client.query("SELECT traffic, sum(clicks), sum(impressions) FROM"
                        " schema_upgrade.ad_click_counts GROUP BY traffic"
                        ).result_rows == [("valid", 3, 0)]
    assert client.query("SELECT id, in_place FROM schema_upgrade.recalculations ORDER BY id"
                        ).result_rows == [(1, 1), (2, 1)]
    assert client.query("SELECT count(), sum(clicks) FROM schema_upgrade.published_click_counts"
                        ).result_rows == [(3, 3)]
    # Its attribution rows were written in place too: they are not applied again.
    client.command("INSERT INTO schema_upgrade.recalculated_attributions (recalculation, side,"
                   " minute, ad_id, conversion_id, outcome) VALUES"
                   " (1, 'after', '2026-12-01 10:00:00', 'ad-1', 'c-1', 'attributed')")
    assert client.query("SELECT count() FROM schema_upgrade.published_attributions"
                        ).result_rows == [(0,)]
    assert client.query("SELECT toString(hour), ad_id, traffic, clicks, impressions,"
                        " toString(computed_at) FROM schema_upgrade.ad_counts_hourly"
                        ).result_rows == \
        [("2026-12-01 10:00:00", "ad-1", "valid", 3, 40, "2026-12-01 11:05:00.000000")]
    tables = {row[0] for row in client.query("SHOW TABLES FROM schema_upgrade").result_rows}
    assert "dead_letters_before_event" not in tables
    assert "ad_counts_hourly_before_traffic" not in tables
