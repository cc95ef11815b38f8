"""API keys: bearer tokens for the data endpoints, stored hashed in ClickHouse.

A key is `ak_` plus 32 random URL-safe characters (192 bits), shown once when created. The
store keeps only its SHA-256 ({db}.api_keys, sql/clickhouse/002_api_keys.sql): a key that
random needs no salt or slow hash, and a leaked table grants nothing.

Each worker caches the set of valid hashes for AUTH_CACHE_S seconds (default 10), so checking
a key costs no query. A key created or revoked elsewhere takes effect within that time; one
created or revoked in this process (create_key, revoke_key) takes effect at once. An unknown
key may refresh the cache early, but at most once per AUTH_MISS_REFRESH_S, so a client
hammering bad keys cannot turn into a query per request.

`python -m api.auth create NAME` prints a new key (for a ClickHouse server; the embedded store
is owned by the running API, which instead creates the key given as ADCLICK_API_KEY at start).
"""

import argparse
import hashlib
import itertools
import secrets
import sys
import threading
import time

from flask import current_app
from flask import request

from adclick import config
from adclick import queries
from adclick import store
from api import db
from api.errors import ApiError

KEY_PREFIX = "ak_"
EXTENSION = "adclick.auth"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="adclick"'}
_generation = itertools.count(1)
_current_generation = [0]


def hash_key(key):
    """The hex SHA-256 of a key, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _changed_here():
    # Caches in this process compare generations and reload on the next check.
    _current_generation[0] = next(_generation)


def create_key(client, db_name, name):
    """Create, store (hashed) and return a new API key named name."""
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    queries.insert_key(client, db_name, hash_key(key), name)
    _changed_here()
    return key


def revoke_key(client, db_name, key):
    """Revoke key (no effect if it is unknown)."""
    queries.revoke_key(client, db_name, hash_key(key))
    _changed_here()


def ensure_key(client, db_name, key, name="bootstrap"):
    """Store key if it is not valid yet (the ADCLICK_API_KEY an operator chose)."""
    if hash_key(key) not in queries.valid_key_hashes(client, db_name):
        queries.insert_key(client, db_name, hash_key(key), name)
        _changed_here()


class KeyCache:
    """The valid key hashes of one app, reloaded when older than ttl_s."""

    def __init__(self, ttl_s, miss_refresh_s):
        self.ttl_s = ttl_s
        self.miss_refresh_s = miss_refresh_s
        self._lock = threading.Lock()
        self._hashes = frozenset()
        self._loaded_at = None
        self._generation = None

    def _stale(self, now, max_age):
        return (self._loaded_at is None or now - self._loaded_at >= max_age
                or self._generation != _current_generation[0])

    def _reload(self):
        generation = _current_generation[0]
        hashes = queries.valid_key_hashes(db.client(), db.database(), db.read_settings())
        self._hashes, self._loaded_at, self._generation = hashes, time.monotonic(), generation

    def is_valid(self, key_hash):
        with self._lock:
            if self._stale(time.monotonic(), self.ttl_s):
                self._reload()
            if key_hash in self._hashes:
                return True
            if self._stale(time.monotonic(), self.miss_refresh_s):
                self._reload()
            return key_hash in self._hashes


def _bearer_key():
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError("missing API key: send 'Authorization: Bearer <key>'", 401, CHALLENGE)
    return key.strip()


def require_key():
    """Before-request hook of the data blueprints: 401 unless a valid key is presented."""
    if not current_app.config["AUTH_REQUIRED"]:
        return
    key = _bearer_key()
    if not current_app.extensions[EXTENSION].is_valid(hash_key(key)):
        raise ApiError("invalid or revoked API key", 401,
                       {"WWW-Authenticate": 'Bearer realm="adclick", error="invalid_token"'})


def init_app(app):
    """Give app its key cache, and the bootstrap key (config API_KEY) once the store is up."""
    app.extensions[EXTENSION] = KeyCache(float(app.config["AUTH_CACHE_S"]),
                                         float(app.config["AUTH_MISS_REFRESH_S"]))
    bootstrap = app.config.get("API_KEY")
    if bootstrap:
        app.extensions[db.EXTENSION].on_ready.append(
            lambda client, db_name: ensure_key(client, db_name, str(bootstrap)))


def main(argv=None):
    """Create or revoke a key directly in a ClickHouse server."""
    parser = argparse.ArgumentParser(prog="python -m api.auth", description=main.__doc__)
    parser.add_argument("action", choices=("create", "revoke"))
    parser.add_argument("name_or_key", help="the new key's name, or the key to revoke")
    parser.add_argument("--clickhouse-url", default=config.CLICKHOUSE_URL)
    parser.add_argument("--database", default=config.DATABASE)
    args = parser.parse_args(argv)
    client = store.connect(args.clickhouse_url)
    store.apply_schema(client, args.database)
    if args.action == "create":
        print(create_key(client, args.database, args.name_or_key))
    else:
        revoke_key(client, args.database, args.name_or_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
