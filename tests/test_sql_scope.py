"""POST /v1/sql against hostile statements, on the real embedded engine.

Every statement below is sent with a key that may use the endpoint; none may write a file (the
test looks at the disk: the target folder, the working directory), change a table, or return a
byte of what lies beyond the data tables (the keys' hashes, system tables, other databases,
files). The embedded engine writes INTO OUTFILE's file even in a readonly session, and EXPLAIN
AST of a crafted text did too, so each spelling is tried.
"""

import os
from pathlib import Path

import pytest
import yaml

from adclick import access
from api import create_app
from api import sql_scope
from tests.api_fixtures import Api
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database
from tests.api_fixtures import load_dataset

DB = "t_sql_scope"
OTHER_DB = "t_sql_scope_other"
ROOT = Path(__file__).resolve().parent.parent
RELATIVE_TARGET = "adclick-pwned-relative.txt"

# {out} is a file in the test's own empty folder; each statement is sent as written.
HOSTILE = [
    # INTO OUTFILE in every spelling
    "SELECT 'pwned-line' INTO OUTFILE '{out}'",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' TRUNCATE",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' APPEND",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' COMPRESSION 'gzip'",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' COMPRESSION 'gzip' LEVEL 3",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' FORMAT CSV",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' AND STDOUT",
    "SELECT 'pwned-line' INTO OUTFILE '{out}' FORMAT TSV SETTINGS max_threads = 1",
    "sElEcT 'pwned-line' iNtO oUtFiLe '{out}'",
    "SELECT 'pwned-line' INTO/* hidden */OUTFILE '{out}'",
    "-- a comment first\nSELECT 'pwned-line' INTO OUTFILE '{out}'",
    "/* SELECT 1 */ SELECT 'pwned-line' INTO -- split\n OUTFILE '{out}'",
    "SELECT 'pwned-line' INTO OUTFILE $${out}$$",
    "SELECT * FROM (SELECT 'pwned-line' INTO OUTFILE '{out}')",
    "SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{out}'",
    "SELECT 1 UNION ALL (SELECT 2 INTO OUTFILE '{out}')",
    "(SELECT 'pwned-line') INTO OUTFILE '{out}'",
    "WITH x AS (SELECT 'pwned-line') SELECT * FROM x INTO OUTFILE '{out}'",
    "SELECT 1 EXCEPT SELECT 2 INTO OUTFILE '{out}'",
    "SELECT ad_id FROM ad_click_counts INTO OUTFILE '{out}'",
    # clauses the checker's own parse would once have taken as EXPLAIN's
    "SELECT 'pwned-line' FORMAT CSV INTO OUTFILE '{out}'",
    "SET max_threads = 1 INTO OUTFILE '{out}'",
    "DESCRIBE TABLE ad_click_counts INTO OUTFILE '{out}'",
    "SHOW TABLES INTO OUTFILE '{out}'",
    "EXPLAIN SELECT 1 INTO OUTFILE '{out}'",
    "EXISTS TABLE ad_click_counts INTO OUTFILE '{out}'",
    f"SELECT 'pwned-line' INTO OUTFILE '{RELATIVE_TARGET}'",
    "INSERT INTO FUNCTION file('{out}', 'CSV', 'a String') VALUES ('pwned-line')",
    # files, URLs, other servers, programs
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:1/bucket/key.csv', 'CSV')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM input('a String')",
    "SELECT catboostEvaluate('/etc/passwd', 1)",
    # system tables, other databases, the keys
    "SELECT * FROM system.one",
    "SELECT query FROM system.processes",
    "SELECT name FROM system.tables",
    "SELECT 1 WHERE 1 IN system.one",
    f"SELECT * FROM {OTHER_DB}.secrets",
    "SELECT * FROM api_keys",
    f"SELECT key_hash FROM {DB}.api_keys FINAL",
    "SELECT * FROM `api_keys`",
    "SELECT count() FROM ad_click_counts WHERE ad_id IN (SELECT key_hash FROM api_keys)",
    "SELECT 1 WHERE 'x' IN api_keys",
    "WITH (SELECT any(key_hash) FROM api_keys) AS h SELECT h",
    f"SELECT * FROM merge('{DB}', 'api')",
    f"SELECT * FROM mergeTreeIndex('{DB}', 'api_keys')",
    "SELECT * FROM view(SELECT * FROM api_keys)",
    "DESCRIBE TABLE api_keys",
    "SELECT joinGet('api_keys', 'name', 'x')",
    "SELECT dictGet('some_dictionary', 'a', toUInt64(1))",
    f"SELECT hasColumnInTable('{DB}', 'api_keys', 'key_hash')",
    "SELECT getServerSetting('path')",
    # writes, settings, several statements, comments hiding keywords
    "INSERT INTO ad_click_counts (ad_id) VALUES ('x')",
    "ALTER TABLE ad_click_counts DELETE WHERE 1",
    "DROP TABLE ad_click_counts",
    "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    "SET readonly = 0",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 100000, max_result_rows = 0",
    "SELECT 1; DROP TABLE ad_click_counts",
    "SELECT 1 /* ; */ ; INSERT INTO ad_click_counts (ad_id) VALUES ('x')",
    "/* SELECT */ INSERT INTO ad_click_counts (ad_id) VALUES ('x') -- SELECT",
    "SYSTEM DROP DNS CACHE",
    "KILL QUERY WHERE 1",
]


@pytest.fixture(scope="module")
def dataset(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    load_dataset(client, DB)
    client.command(f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}")
    client.command(f"CREATE TABLE IF NOT EXISTS {OTHER_DB}.secrets (s String) ENGINE = Memory")
    client.command(f"INSERT INTO {OTHER_DB}.secrets VALUES ('other-database-secret')")
    return client


@pytest.fixture(scope="module")
def api(dataset, chdb_url):  # noqa: F811
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "TESTING": True})
    key = access.create_key(dataset, DB, "test_sql_scope", "admin")[0]
    openapi = yaml.safe_load((ROOT / "api" / "openapi.yaml").read_text())
    return Api(app, key, openapi)


def _table_sizes(client, bookkeeping=("api_key_usage",)):
    """Rows per table, but for the API's own record of when keys were used."""
    rows = client.query("SELECT name, total_rows FROM system.tables WHERE database = {db:String}"
                        " ORDER BY name", parameters={"db": DB}).result_rows
    return {name: count for name, count in rows if name not in bookkeeping}


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_statement_writes_and_reads_nothing(api, dataset, tmp_path, template):
    assert len(HOSTILE) >= 40
    out = tmp_path / "pwned.txt"
    statement = template.replace("{out}", str(out))
    secrets = {row[0] for row in dataset.query(f"SELECT key_hash FROM {DB}.api_keys")
               .result_rows}
    sizes = _table_sizes(dataset)
    body = api.sql(statement)
    response_text = str(body)
    assert set(body) == {"error"}, f"{statement!r} ran: {body}"
    assert list(tmp_path.iterdir()) == [], f"{statement!r} wrote {list(tmp_path.iterdir())}"
    assert not os.path.exists(RELATIVE_TARGET) and not (ROOT / RELATIVE_TARGET).exists()
    assert not any(secret in response_text for secret in secrets)
    assert "other-database-secret" not in response_text and "root:" not in response_text
    assert _table_sizes(dataset) == sizes


def test_every_refusal_is_a_client_error(api, tmp_path):
    """Each hostile statement is answered 400 or 403, never 200 or 5xx."""
    statuses = {}
    for template in HOSTILE:
        response = api.client.post("/v1/sql", headers=api.headers, json={
            "query": template.replace("{out}", str(tmp_path / "x"))})
        statuses[template] = response.status_code
    assert {status for status in statuses.values()} <= {400, 403}, statuses


def test_every_table_of_the_schema_is_classified(dataset):
    """A new table is neither readable nor refused by accident: the scope must name it."""
    tables = set(_table_sizes(dataset, bookkeeping=()))
    assert tables <= sql_scope.DATA_TABLES | sql_scope.PRIVATE_TABLES, (
        tables - sql_scope.DATA_TABLES - sql_scope.PRIVATE_TABLES)
    assert not sql_scope.DATA_TABLES & sql_scope.PRIVATE_TABLES


def test_the_canonical_text_is_what_runs(api):
    """Comments and spelling do not survive the check: what ran is what was checked."""
    body = api.sql("/* note */ select 1 AS one -- trailing\n", 200)
    assert body["rows"] == [[1]] and body["columns"] == ["one"]


def test_explain_of_a_crafted_text_would_write(dataset, tmp_path):
    """Why the checker never runs EXPLAIN on the user's text: the engine writes this file."""
    out = tmp_path / "explain-writes.txt"
    dataset.query(f"EXPLAIN AST\nSELECT 'pwned-line' FORMAT CSV INTO OUTFILE '{out}'")
    assert out.exists()
