"""The ClickHouse store: one way to open a client and to apply the schema.

The store is any ClickHouse server by http(s):// URL, or the embedded engine (chdb://path, the
default). An embedded path can be opened by one process at a time (a file lock), so in the
embedded setup the `adclick serve` process owns it and runs both the loader and the API;
anything else (the SQL CLI, tests) goes through that process's HTTP API.
"""

import re
import threading

import clickhouse_connect

from adclick import config

SCHEMA_DIR = config.ROOT / "sql" / "clickhouse"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_chdb_lock = threading.Lock()
_chdb_clients = {}


def is_embedded(url):
    return url.startswith("chdb://")


def connect(url=None):
    """A clickhouse-connect client for url (default: ADCLICK_CLICKHOUSE_URL or embedded)."""
    url = url or config.CLICKHOUSE_URL
    if is_embedded(url):
        # One engine per process and path: every thread shares the same session.
        with _chdb_lock:
            if url not in _chdb_clients:
                _chdb_clients[url] = clickhouse_connect.get_client(dsn=url)
            return _chdb_clients[url]
    return clickhouse_connect.get_client(dsn=url)


def check_identifier(name):
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return name


def schema_statements(database=None):
    """The DDL statements of sql/clickhouse/*.sql, in order, for database."""
    db = check_identifier(database or config.DATABASE)
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        lines = [line for line in path.read_text().splitlines()
                 if not line.lstrip().startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                yield statement.strip().replace("{db}", db)


def apply_schema(client, database=None):
    """Create the database and tables if missing (idempotent, run at every start)."""
    for statement in schema_statements(database):
        client.command(statement)
