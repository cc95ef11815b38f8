"""Fair use: each key's request rate and concurrency, and how many SQL statements run at once.

A key over its rate (a token bucket: RATE_LIMIT_PER_S requests a second, bursts of
RATE_LIMIT_BURST) or with MAX_CONCURRENT_PER_KEY requests already running gets a 429 with
Retry-After, at once: it never waits for a worker. POST /v1/sql runs at most SQL_MAX_CONCURRENT
statements in the whole process, and one per key: each can hold a worker thread for up to the
query time limit, so the others stay free for /healthz and the data APIs (waitress has
`--threads`, 8 by default). The engine's limits (time, memory, rows) end a slow statement; the
loader runs on a handle of its own (adclick.store), so no statement holds up its inserts.

The counts live in this process: with several workers or processes each applies them apart.
"""

import math
import threading
import time

from flask import g

from api.errors import ApiError

EXTENSION = "adclick.limits"


class TokenBucket:
    """rate_per_s tokens a second up to burst; take() returns 0 or the seconds to wait."""

    def __init__(self, rate_per_s, burst):
        self.rate_per_s, self.burst = rate_per_s, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self, now):
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class Limits:
    """The counters of one app."""

    def __init__(self, config):
        self.rate_per_s = float(config["RATE_LIMIT_PER_S"])
        self.burst = max(1, int(config["RATE_LIMIT_BURST"]))
        self.per_key = int(config["MAX_CONCURRENT_PER_KEY"])
        self.sql_total = int(config["SQL_MAX_CONCURRENT"])
        self.sql_retry_s = max(1, math.ceil(float(config["QUERY_TIMEOUT_S"])))
        self._lock = threading.Lock()
        self._buckets = {}
        self._running = {}  # (kind, key) -> requests running
        self.refused = {"rate": 0, "concurrency": 0, "sql": 0}  # /metrics reports them

    def _refuse(self, reason, message, retry_after_s):
        self.refused[reason] += 1
        raise ApiError(message, 429, {"Retry-After": str(max(1, math.ceil(retry_after_s)))})

    def admit(self, key, sql=False):
        """Count a request of key in, or raise a 429; release() counts it out."""
        with self._lock:
            if self.rate_per_s > 0:
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst)
                wait = bucket.take(time.monotonic())
                if wait:
                    self._refuse("rate", f"rate limit: at most {self.rate_per_s:g} requests a"
                                 f" second per key (bursts of {self.burst})", wait)
            held = [("key", key)]
            if self._running.get(("key", key), 0) >= self.per_key > 0:
                self._refuse("concurrency", f"at most {self.per_key} requests of one key at"
                             " once", 1)
            if sql:
                if self._running.get(("sql", key), 0) >= 1:
                    self._refuse("sql", "one SQL statement of a key at a time",
                                 self.sql_retry_s)
                if self._running.get(("sql", ""), 0) >= self.sql_total:
                    self._refuse("sql", f"the server runs at most {self.sql_total} SQL"
                                 " statements at once; try again shortly", self.sql_retry_s)
                held += [("sql", key), ("sql", "")]
            for slot in held:
                self._running[slot] = self._running.get(slot, 0) + 1
            g.adclick_limits_held = held

    def release(self, _exc=None):
        held = g.pop("adclick_limits_held", ())
        with self._lock:
            for slot in held:
                self._running[slot] -= 1
                if not self._running[slot]:
                    del self._running[slot]


def init_app(app):
    limits = app.extensions[EXTENSION] = Limits(app.config)
    app.teardown_request(limits.release)
