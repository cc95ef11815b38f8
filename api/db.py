"""The API's ClickHouse clients: opened lazily, the schema applied once, limits per request.

The app never holds a connection it has not needed yet, and a store that is down at start
does not keep the app from starting: the first request that needs the store (or /healthz)
connects, applies the schema (adclick.store.apply_schema, idempotent) and runs the hooks other
modules registered (auth's bootstrap key); until that succeeds every such request gets a 503.

Two clients per app:
- `client()` for the API's own fixed statements (adclick.queries), with per-request limits
  (`read_settings()`).
- `sql_client()` for POST /v1/sql: a separate session whose limits and readonly=1 are set when
  it opens. Once readonly=1 is in force the engine refuses to change any setting, so a user's
  query can neither write nor lift its own time, memory or row limits. With a ClickHouse
  server it may log in as another user (SQL_CLICKHOUSE_URL), one granted SELECT on the data
  tables only (docs/OPERATIONS.md).

Both are safe to share between the threads of a worker. With the embedded engine each is a
pool of handles of the API's own (adclick.store.HandlePool), never the loader's: a slow query
holds one handle, not the loader's inserts or the other requests. Under gunicorn each worker process
builds its own (the app keeps no other state but caches), which needs a ClickHouse server URL:
an embedded chdb path can be open in one process only.

`cached(key, compute)` keeps the API's answers for RESULT_CACHE_S (default 1 s). Dashboards
poll the same few questions (top 100 over the last hour) many times a second, and one of them
costs tens of milliseconds of ClickHouse CPU (grouping a million rows by ad), so each worker
computes it once per period. An expired answer is still served, for at most RESULT_STALE_S,
while a background thread recomputes it: no request waits for a recomputation, and in practice
an answer is at most RESULT_CACHE_S plus one query old. The data changes about once a minute.
"""

import logging
import threading
import time

import clickhouse_connect
from clickhouse_connect.driver.exceptions import OperationalError
from flask import current_app

from adclick import store

log = logging.getLogger(__name__)
EXTENSION = "adclick.db"
RETRY_AFTER_S = 1.0  # after a failed connection, requests fail fast for this long
CACHE_MAX_ENTRIES = 10_000


class _Computation:
    """One caller's computation of a missing answer, awaited by the others."""

    def __init__(self):
        self._done = threading.Event()
        self._value = None
        self._error = None

    def finish(self, value=None, error=None):
        self._value, self._error = value, error
        self._done.set()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class ResultCache:
    """Answers by key: fresh for ttl_s, then served stale while a background thread refreshes.

    Within max_stale_s of its computation an expired answer is returned at once and one thread
    recomputes it, so no request waits for a recomputation; older than that (idle key, or
    refreshes failing) the caller computes it and waits, as on a miss. Concurrent misses of one
    key share a single computation (and its failure), so a burst of identical questions on a
    cold cache costs one query, not one each.
    """

    def __init__(self, ttl_s, max_stale_s):
        self.ttl_s = ttl_s
        self.max_stale_s = max(max_stale_s, ttl_s)
        self._lock = threading.Lock()
        self._entries = {}  # key -> [value, computed_at, refreshing]
        self._pending = {}  # key -> _Computation, while a caller computes a missing answer
        # Answers by how they were found (fresh, stale, computed): /metrics reports them.
        self.lookups = {"fresh": 0, "stale": 0, "computed": 0}

    def get(self, key, compute):
        """The answer for key: fresh, stale while refreshed in the background, or computed."""
        if self.ttl_s <= 0:
            return compute()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                age = time.monotonic() - entry[1]
                if age < self.ttl_s:
                    self.lookups["fresh"] += 1
                    return entry[0]
                if age < self.max_stale_s:
                    self.lookups["stale"] += 1
                    if not entry[2]:
                        entry[2] = True
                        threading.Thread(target=self._refresh, args=(key, compute),
                                         daemon=True).start()
                    return entry[0]
            self.lookups["computed"] += 1
            computation = self._pending.get(key)
            owner = computation is None
            if owner:
                computation = self._pending[key] = _Computation()
        if not owner:
            return computation.result()
        try:
            value = compute()
        except BaseException as error:
            with self._lock:
                del self._pending[key]
            computation.finish(error=error)
            raise
        self._store(key, value)
        with self._lock:
            del self._pending[key]
        computation.finish(value=value)
        return value

    def _refresh(self, key, compute):
        try:
            self._store(key, compute())
        except Exception as error:  # noqa: BLE001 - the next caller past max_stale_s sees it
            log.warning("refreshing a cached answer failed: %s", error)
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry[2] = False

    def _store(self, key, value):
        with self._lock:
            if key not in self._entries and len(self._entries) >= CACHE_MAX_ENTRIES:
                self._evict(time.monotonic())
            self._entries[key] = [value, time.monotonic(), False]

    def _evict(self, now):
        for key in [k for k, e in self._entries.items() if now - e[1] >= self.max_stale_s]:
            del self._entries[key]
        if len(self._entries) >= CACHE_MAX_ENTRIES:
            self._entries.clear()


class Store:
    """The ClickHouse clients of one app and the settings they run with."""

    def __init__(self, config):
        self.url = config["CLICKHOUSE_URL"]
        self.sql_url = config.get("SQL_CLICKHOUSE_URL") or self.url
        self.handles = int(config["STORE_HANDLES"])
        self.database = store.check_identifier(config["DATABASE"])
        # A whole number is sent as one: a server compares the text with its profile's value.
        timeout_s = float(config["QUERY_TIMEOUT_S"])
        self.timeout_s = int(timeout_s) if timeout_s.is_integer() else timeout_s
        self.max_memory = int(config["MAX_MEMORY_USAGE"])
        self.sql_max_rows = int(config["SQL_MAX_ROWS"])
        self.on_ready = []
        self.cache = ResultCache(float(config["RESULT_CACHE_S"]), float(config["RESULT_STALE_S"]))
        self._lock = threading.Lock()
        self._client = None
        self._sql_client = None
        self._failed_at = None
        self._failure = None

    def _connect(self, url, **kwargs):
        if store.is_embedded(url):
            # Handles of the API's own on the engine of this process: same data, own sessions.
            return store.HandlePool(url, self.handles, **kwargs)
        # No session id: one HTTP client serves concurrent threads. The socket timeout backs up
        # max_execution_time when the server or the network hangs.
        return clickhouse_connect.get_client(
            dsn=url, autogenerate_session_id=False, connect_timeout=min(self.timeout_s, 10),
            send_receive_timeout=self.timeout_s + 5, **kwargs)

    def client(self):
        """The client for the API's statements, connecting and applying the schema if needed.

        While the store is down, one request per RETRY_AFTER_S tries to connect; the others
        fail at once instead of queueing behind the connect timeout.
        """
        with self._lock:
            if self._client is not None:
                return self._client
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_S:
                raise OperationalError(f"ClickHouse not reachable: {self._failure}")
            try:
                client = self._connect(self.url)
                store.apply_schema(client, self.database)
                for hook in self.on_ready:
                    hook(client, self.database)
            except Exception as error:
                self._failed_at, self._failure = time.monotonic(), str(error)[:300]
                raise
            self._client, self._failed_at = client, None
            return client

    def sql_client(self):
        """The readonly session for user SQL, with the database as its default."""
        self.client()  # the database must exist before a session can default to it
        with self._lock:
            if self._sql_client is None:
                # Limits first: after readonly=1 no setting can change (dicts keep order).
                settings = {
                    "max_execution_time": self.timeout_s,
                    "max_memory_usage": self.max_memory,
                    "max_result_rows": self.sql_max_rows + 1,
                    "max_result_bytes": 256 * 1024 * 1024,
                    "result_overflow_mode": "break",
                    "readonly": 1,
                }
                self._sql_client = self._connect(self.sql_url, database=self.database,
                                                 settings=settings)
            return self._sql_client

    def read_settings(self):
        """Limits for one of the API's own queries."""
        return {"max_execution_time": self.timeout_s, "max_memory_usage": self.max_memory}


def init_app(app):
    """Give app its Store (clients open on first use; see warm_up)."""
    app.extensions[EXTENSION] = Store(app.config)


def warm_up(app):
    """Connect and apply the schema now, so a healthy store is ready before traffic.

    A failure is logged, not raised: the app still starts, answers 503, and retries the
    connection on the next request that needs the store.
    """
    try:
        app.extensions[EXTENSION].client()
    except Exception as error:  # noqa: BLE001 - any failure here means "not ready yet"
        log.warning("ClickHouse not ready at start (%s); will retry on demand", error)


def get_store():
    """The current app's Store."""
    return current_app.extensions[EXTENSION]


def client():
    """The current app's client for the API's statements."""
    return get_store().client()


def database():
    """The current app's database name."""
    return get_store().database


def read_settings():
    """The per-request limits for the API's statements."""
    return get_store().read_settings()


def cached(key, compute):
    """compute() through the current app's result cache (see ResultCache).

    compute runs in an app context of its own, so that a background refresh can use client().
    """
    app = current_app._get_current_object()

    def in_app_context():
        with app.app_context():
            return compute()
    return get_store().cache.get(key, in_app_context)
