"""`adclick sql` against a live API (werkzeug on a free port, in a thread of this process).

This is the path an operator uses while `adclick serve` owns the embedded store: the CLI posts
to /v1/sql and prints what comes back, or fails with the API's reason and a non-zero status.
"""

import argparse
import io
import json
from pathlib import Path

import pytest

from adclick import access
from adclick import sql_client
from apps import cli
from apps import sql
from api import create_app
from tests.api_fixtures import ADS
from tests.api_fixtures import DATA_MINUTES
from tests.api_fixtures import MINUTE
from tests.api_fixtures import T0
from tests.api_fixtures import LiveServer
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database
from tests.api_fixtures import load_dataset
from tests.api_fixtures import LABELS
from tests.api_fixtures import truth_count

DB = "t_sql_cli"
ROOT_ANALYSES = Path(__file__).resolve().parent.parent / "sql" / "analyses"
TOTALS = ("SELECT ad_id, sum(clicks) AS clicks FROM ad_click_counts FINAL"
          " GROUP BY ad_id ORDER BY ad_id")


@pytest.fixture(scope="module")
def live(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    rows = load_dataset(client, DB)
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "SQL_MAX_ROWS": 50})
    key = access.create_key(client, DB, "test_sql_cli", "admin")[0]
    with LiveServer(app) as server:
        yield server.url, key, rows


def run(capsys, *argv):
    status = sql.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_table(live, capsys):
    url, key, rows = live
    status, out, err = run(capsys, "--api-url", url, "--api-key", key, TOTALS)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ad_id", "|", "clicks"]
    assert set(lines[1]) <= {"-", "+"}
    end = T0 + DATA_MINUTES * MINUTE
    for ad_id, line in zip(sorted(ADS), lines[2:]):
        assert line.split() == [ad_id, "|", str(truth_count(rows, ad_id, T0, end, traffic=LABELS))]
    assert lines[-1] == f"({len(ADS)} rows)"


def test_json(live, capsys):
    url, key, rows = live
    status, out, _ = run(capsys, "--api-url", url, "--api-key", key, "--format", "json", TOTALS)
    body = json.loads(out)
    assert status == 0 and body["columns"] == ["ad_id", "clicks"]
    end = T0 + DATA_MINUTES * MINUTE
    assert body["rows"] == [[ad_id, truth_count(rows, ad_id, T0, end, traffic=LABELS)]
                            for ad_id in sorted(ADS)]
    assert body["row_count"] == len(ADS) and body["truncated"] is False


def test_key_from_environment(live, capsys, monkeypatch):
    url, key, _ = live
    monkeypatch.setenv("ADCLICK_API_KEY", key)
    monkeypatch.setenv("ADCLICK_API_URL", url)
    status, out, _ = run(capsys, "SELECT 42 AS answer")
    assert status == 0 and out.splitlines()[2].strip() == "42"


def test_file_and_stdin(live, capsys, monkeypatch, tmp_path):
    url, key, _ = live
    path = tmp_path / "q.sql"
    path.write_text("-- a header\nSELECT 1 AS one;\n")
    assert run(capsys, "--api-url", url, "--api-key", key, "-f", str(path))[0] == 0
    analysis = ROOT_ANALYSES / "02_top_ads_per_device_over_a_day.sql"
    status, out, _ = run(capsys, "--api-url", url, "--api-key", key, "-f", str(analysis))
    assert status == 0 and "pct_of_device" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 'from stdin' AS s"))
    status, out, _ = run(capsys, "--api-url", url, "--api-key", key)
    assert status == 0 and "from stdin" in out


def test_truncated_result_says_so(live, capsys):
    url, key, _ = live
    status, out, _ = run(capsys, "--api-url", url, "--api-key", key,
                         "SELECT number FROM numbers(1000)")
    assert status == 0
    assert out.splitlines()[-1] == "(50 rows; result truncated to the first 50 rows)"


@pytest.mark.parametrize("statement,reason", [
    ("INSERT INTO ad_click_counts (ad_id) VALUES ('x')", "only one SELECT"),
    ("DROP TABLE ad_click_counts", "only one SELECT"),
    ("SELECT 1; DROP TABLE ad_click_counts", "single statement"),
    ("SELEC 1", "SYNTAX_ERROR"),
])
def test_refused_statements_exit_non_zero(live, capsys, statement, reason):
    url, key, _ = live
    status, out, err = run(capsys, "--api-url", url, "--api-key", key, statement)
    assert status == 1 and out == ""
    assert reason in err and "[HTTP 400]" in err


def test_missing_or_wrong_key(live, capsys, monkeypatch):
    url, _, _ = live
    monkeypatch.delenv("ADCLICK_API_KEY", raising=False)
    status, _, err = run(capsys, "--api-url", url, "SELECT 1")
    assert status == 1 and "HTTP 401" in err and "ADCLICK_API_KEY" in err
    status, _, err = run(capsys, "--api-url", url, "--api-key", "ak_wrong", "SELECT 1")
    assert status == 1 and "invalid" in err


def test_unreachable_api(capsys):
    status, _, err = run(capsys, "--api-url", "http://127.0.0.1:1", "--api-key", "k",
                         "--timeout", "5", "SELECT 1")
    assert status == 1 and "cannot reach the API" in err


@pytest.mark.parametrize("argv", [
    ["--clickhouse-url", "chdb:///tmp/somewhere", "SELECT 1"],
    ["-f", "x.sql", "SELECT 1"],
    ["--format", "xml", "SELECT 1"],
])
def test_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        sql.main(argv)
    assert exit_info.value.code == 2


def test_through_the_adclick_command(live, capsys):
    url, key, _ = live
    assert cli.main(["sql", "--api-url", url, "--api-key", key, "SELECT 7 AS seven"]) == 0
    assert capsys.readouterr().out.splitlines()[2].strip() == "7"


def test_format_table():
    body = {"columns": ["name", "n", "tags"], "rows": [["a", 1, ["x"]], ["long\nname", None,
                                                                       {"k": 2}]],
            "row_count": 2, "truncated": False}
    assert sql.format_table(body).splitlines() == [
        "name       |    n | tags",
        "-----------+------+---------",
        'a          |    1 | ["x"]',
        'long\\nname | NULL | {"k": 2}',
        "(2 rows)",
    ]
    assert sql.format_table({"columns": [], "rows": [], "row_count": 0}) == "(0 rows)"


def test_connection_arguments_for_other_commands(live):
    """The pieces `adclick reconcile` builds on: the flags, run(), and Refused."""
    url, key, _ = live
    parser = argparse.ArgumentParser()
    sql_client.add_connection_arguments(parser)
    args = parser.parse_args(["--api-url", url, "--api-key", key])
    sql_client.check_connection_arguments(parser, args)
    assert sql_client.run(args, "SELECT 1 + 1")["rows"] == [[2]]
    with pytest.raises(sql_client.Refused, match="only one SELECT"):
        sql_client.run(args, "DROP TABLE ad_click_counts")
    with pytest.raises(SystemExit):
        sql_client.check_connection_arguments(parser, parser.parse_args(
            ["--clickhouse-url", "chdb:///x"]))
