"""The ClickHouse store: one way to open a client and to apply the schema.

The store is any ClickHouse server by http(s):// URL, or the embedded engine (chdb://path, the
default). An embedded path can be opened by one process at a time (a file lock), so in the
embedded setup the `adclick serve` process owns it and runs both the loader and the API;
anything else (the SQL CLI, tests) goes through that process's HTTP API.

Within that process the engine runs statements of different handles at once, but one handle
runs one statement at a time. So the loader keeps the handle of `connect`, and the API takes
its statements to a HandlePool of handles of its own: no query of the API can hold up the
loader's inserts, or another request's query.
"""

import contextlib
import re
import threading

import clickhouse_connect

from adclick import clickhouse_rules
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


class HandlePool:
    """Handles on one embedded engine; each call runs on a handle no other thread is using.

    Handles are opened when all are busy, up to size; past that a call waits for one. It has
    the calls of a clickhouse-connect client that adclick uses (query, command, insert).
    """

    def __init__(self, url, size, **kwargs):
        self.url, self.size, self._kwargs = url, size, kwargs
        self._free, self._opened = [], 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def handle(self):
        with self._cond:
            while not self._free and self._opened >= self.size:
                self._cond.wait()
            handle = self._free.pop() if self._free else None
            if handle is None:
                self._opened += 1
        if handle is None:
            try:
                handle = clickhouse_connect.get_client(dsn=self.url, **self._kwargs)
            except BaseException:
                with self._cond:
                    self._opened -= 1
                    self._cond.notify()
                raise
        try:
            yield handle
        finally:
            with self._cond:
                self._free.append(handle)
                self._cond.notify()

    def query(self, *args, **kwargs):
        with self.handle() as handle:
            return handle.query(*args, **kwargs)

    def command(self, *args, **kwargs):
        with self.handle() as handle:
            return handle.command(*args, **kwargs)

    def insert(self, *args, **kwargs):
        with self.handle() as handle:
            return handle.insert(*args, **kwargs)


def check_identifier(name):
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid ClickHouse identifier: {name!r}")
    return name


def schema_statements(database=None):
    """The DDL statements of sql/clickhouse/*.sql, in order, then the raw tables' rules
    (adclick.clickhouse_rules, written from the contract), for database."""
    db = check_identifier(database or config.DATABASE)
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        lines = [line for line in path.read_text().splitlines()
                 if not line.lstrip().startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                yield statement.strip().replace("{db}", db)
    yield from clickhouse_rules.statements(db)


# Tables whose sorting key changed since an earlier release, which ALTER cannot do: (table,
# the column whose absence marks the old layout, that column's value for the old rows). An old
# table is set aside, created anew by the schema, filled from the old one, then dropped.
RELAYOUTS = [
    # Dead letters of impressions and conversions: the event type joined the key, since their
    # topics' (partition, offset) repeat the clicks'. Every older dead letter was a click's.
    ("dead_letters", "event", "click"),
    # The hourly rollup: the traffic label joined the key. Every older row counted all unique
    # events, which is what was billed as valid then.
    ("ad_counts_hourly", "traffic", "valid"),
]


def apply_schema(client, database=None):
    """Create the database and tables if missing, and bring an older store's tables to this
    release's layout (idempotent, run at every start)."""
    db = check_identifier(database or config.DATABASE)
    set_aside = []
    for table, column, old_value in RELAYOUTS:
        columns = client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " ORDER BY position",
            parameters={"db": db, "t": table}).result_columns
        if columns and column not in columns[0]:
            client.command(f"RENAME TABLE {db}.{table} TO {db}.{table}_before_{column}")
            set_aside.append((table, column, old_value, columns[0]))
    for statement in schema_statements(db):
        client.command(statement)
    for table, column, old_value, old_columns in set_aside:
        old = f"{db}.{table}_before_{column}"
        names = ", ".join(check_identifier(name) for name in old_columns)
        client.command(f"INSERT INTO {db}.{table} ({column}, {names}) "
                       f"SELECT {{value:String}}, {names} FROM {old}",
                       parameters={"value": old_value})
        client.command(f"DROP TABLE {old}")
