"""Run one read-only SQL statement against the store: through the API or on a ClickHouse server.

The embedded store can be open in one process only (the running `adclick serve`), so by
default a statement goes through that process's API (POST /v1/sql, with an API key), where it
runs read-only with time and row limits. With a ClickHouse server, --clickhouse-url queries it
directly, still with readonly=1. Either way the result has the API's shape: columns, types,
rows, row_count, truncated (and a note when truncated). Used by `adclick sql` and
`adclick reconcile` (apps.sql, apps.reconcile).
"""

import os
from datetime import date
from datetime import datetime
from decimal import Decimal

import requests

from adclick import config

DEFAULT_API_URL = f"http://{config.API_HOST}:{config.API_PORT}"
DIRECT_MAX_ROWS = 10_000


class Refused(Exception):
    """The statement could not be run; the message says why."""


def add_connection_arguments(parser):
    """Where statements go: the API (embedded store) or a ClickHouse server; the arguments run()
    reads. Shared by every command that runs SQL this way."""
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


def call_api(method, url, api_key, timeout, hints=None, **kwargs):
    """The JSON body of an API call; Refused with the API's error (and hints[status], a hint
    for the user) on an error status or when the API cannot be reached."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = requests.request(method, url, headers=headers, timeout=timeout, **kwargs)
    except requests.RequestException as error:
        raise Refused(f"cannot reach the API at {url}: {error}") from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if response.status_code >= 400:
        message = body.get("error", "") if isinstance(body, dict) else str(body)
        hint = (hints or {}).get(response.status_code, "")
        raise Refused(f"{message}{hint} [HTTP {response.status_code}]")
    return body


def run_api(args, query):
    """POST the statement to the API; the result as the API returns it."""
    return call_api("POST", args.api_url.rstrip("/") + "/v1/sql", args.api_key, args.timeout,
                    {401: " (give --api-key or set ADCLICK_API_KEY)",
                     403: " (SQL needs an admin key)"}, json={"query": query})


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
