"""The ClickHouse tables hold the click as the contract declares it, and the loader's columns.

sql/clickhouse/001_tables.sql is written by hand (keys, partitions and engines are the schema's
own decisions); the click's fields in it are checked here against adclick.contract.CLICK, on
the real embedded engine.
"""

import pytest

from adclick import ingest
from adclick.contract import CLICK
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


def test_late_clicks_keep_the_whole_click(columns):
    late = columns["late_clicks"]
    assert {name: late.get(name) for name in CLICK.names} == CLICK.clickhouse_columns()


@pytest.mark.parametrize("table", sorted(ingest.COLUMNS))
def test_the_loader_writes_only_columns_the_table_has(columns, table):
    assert set(ingest.COLUMNS[table]) <= set(columns[table])
