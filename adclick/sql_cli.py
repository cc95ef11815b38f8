"""`adclick sql`: run one read-only SQL statement against the store and print the result.

The embedded store can be open in one process only (the running `adclick serve`), so by
default the statement goes through that process's API (POST /v1/sql, with an API key), where
it runs read-only with time and row limits. With a ClickHouse server, --clickhouse-url queries
it directly, still with readonly=1.

    adclick sql "SELECT ad_id, sum(clicks) FROM ad_click_counts FINAL GROUP BY ad_id LIMIT 5"
    adclick sql -f sql/analyses/02_top_ads_per_device_over_a_day.sql --format json
    echo "SELECT 1" | adclick sql

Exit status: 0 on success, 1 if the statement is refused or fails (the reason on stderr),
2 on a usage error.
"""

import argparse
import json
import os
import sys
from datetime import date
from datetime import datetime
from decimal import Decimal

import requests

from adclick import config

DEFAULT_API_URL = f"http://{config.API_HOST}:{config.API_PORT}"
DIRECT_MAX_ROWS = 10_000
MAX_CELL_CHARS = 80


class Refused(Exception):
    """The statement could not be run; the message says why."""


def add_connection_arguments(parser):
    """Where statements go: the API (embedded store) or a ClickHouse server. Shared with
    `adclick reconcile`, which runs its SQL the same way."""
    parser.add_argument("--api-url", default=os.environ.get("ADCLICK_API_URL", DEFAULT_API_URL),
                        help="the API (default: ADCLICK_API_URL or %(default)s)")
    parser.add_argument("--api-key", default=config.default_api_key(),
                        help="API key (default: ADCLICK_API_KEY, else the demo's key)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for a result")
    parser.add_argument("--clickhouse-url",
                        help="query this ClickHouse server (http(s)://...) instead of the API")
    parser.add_argument("--database", default=config.DATABASE,
                        help="default database with --clickhouse-url (default: %(default)s)")


def check_connection_arguments(parser, args):
    if args.clickhouse_url and not args.clickhouse_url.startswith(("http://", "https://")):
        parser.error("--clickhouse-url must be http(s)://...: an embedded store is open in"
                     " `adclick serve` only; query it through the API (--api-url)")


def run(args, query):
    """Run one read-only statement where the arguments say; the API's result shape."""
    return run_direct(args, query) if args.clickhouse_url else run_api(args, query)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="adclick sql", description=__doc__.split("\n")[0])
    parser.add_argument("query", nargs="?",
                        help="the statement (default: --file, else standard input)")
    parser.add_argument("-f", "--file", help="read the statement from this file")
    add_connection_arguments(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.query is not None and args.file:
        parser.error("give the statement or --file, not both")
    check_connection_arguments(parser, args)
    return args


def read_query(args):
    """The statement from the argument, --file, or standard input."""
    if args.file:
        with open(args.file, encoding="utf-8") as source:
            return source.read()
    if args.query is not None and args.query != "-":
        return args.query
    if sys.stdin.isatty():
        raise Refused("no statement: give one as an argument, with --file, or on standard input")
    return sys.stdin.read()


def run_api(args, query):
    """POST the statement to the API; the result as the API returns it."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    url = args.api_url.rstrip("/") + "/v1/sql"
    try:
        response = requests.post(url, json={"query": query}, headers=headers,
                                 timeout=args.timeout)
    except requests.RequestException as error:
        raise Refused(f"cannot reach the API at {args.api_url}: {error}") from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if response.status_code != 200:
        message = body.get("error", "") if isinstance(body, dict) else str(body)
        hint = " (give --api-key or set ADCLICK_API_KEY)" if response.status_code == 401 else ""
        raise Refused(f"{message}{hint} [HTTP {response.status_code}]")
    return body


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(_plain(key)): _plain(item) for key, item in value.items()}
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_direct(args, query):
    """Run the statement on a ClickHouse server with readonly=1; the API's result shape."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    settings = {"max_execution_time": args.timeout, "max_result_rows": DIRECT_MAX_ROWS + 1,
                "result_overflow_mode": "break", "readonly": 1}
    try:
        client = clickhouse_connect.get_client(dsn=args.clickhouse_url, database=args.database,
                                               settings=settings)
        result = client.query(query.strip().rstrip(";"),
                              query_formats={"String": "bytes", "FixedString": "bytes"})
    except ClickHouseError as error:
        raise Refused(str(error).split(" (version ")[0]) from None
    rows = [_plain(list(row)) for row in result.result_rows]
    body = {"columns": list(result.column_names),
            "types": [column.name for column in result.column_types],
            "rows": rows[:DIRECT_MAX_ROWS], "row_count": min(len(rows), DIRECT_MAX_ROWS),
            "truncated": len(rows) > DIRECT_MAX_ROWS}
    if body["truncated"]:
        body["note"] = f"result truncated to the first {DIRECT_MAX_ROWS} rows"
    return body


def _cell(value):
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


def format_table(body):
    """The result as an aligned text table with a row count (numbers right-aligned)."""
    columns = body["columns"]
    cells = [[_cell(value) for value in row] for row in body["rows"]]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in
              enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in body["rows"] if row[i] is not None) and bool(body["rows"])
               for i in range(len(columns))]

    def line(values):
        return " | ".join(value.rjust(width) if is_number else value.ljust(width)
                          for value, width, is_number in zip(values, widths, numeric)).rstrip()

    out = []
    if columns:
        out.append(line(columns))
        out.append("-+-".join("-" * width for width in widths))
        out.extend(line(row) for row in cells)
    count = body.get("row_count", len(body["rows"]))
    footer = f"({count} row{'' if count == 1 else 's'}"
    if body.get("truncated"):
        footer += f"; {body.get('note', 'truncated')}"
    out.append(footer + ")")
    return "\n".join(out)


def main(argv=None):
    """Run `adclick sql`; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        query = read_query(args)
        body = run(args, query)
    except (Refused, OSError) as error:
        print(f"adclick sql: {error}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        print(format_table(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
