"""API keys on requests: who is asking, with which role, and what that role may call.

Keys, roles and expiry are adclick.access's. Each data blueprint states who may call it
(`require("reader")`: a reader, an advertiser or an admin; `require("admin")`: an admin only),
and the before-request hook sets `g.principal` for the views: the key's id, name, role and,
for an advertiser's key, its advertiser id, which the views turn into a filter on every query
(api.params.Filters.advertiser).

Each worker caches the live keys for AUTH_CACHE_S seconds (default 10), so checking a key
costs no query. A key created, revoked or expired elsewhere takes effect within that time; one
changed in this process (through /v1/admin/keys) at once. An unknown key may refresh the cache
early, but at most once per AUTH_MISS_REFRESH_S, so a client hammering bad keys cannot turn
into a query per request. Expiry is checked at every request against the clock: it is a
key's lifetime, not an event's time.

The time a key was last used is stored at most once per USAGE_EVERY_S per key.
"""

import itertools
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from flask import current_app
from flask import g
from flask import request

from adclick import access
from api import db
from api import limits
from api.errors import ApiError

EXTENSION = "adclick.auth"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="adclick"'}
INVALID = {"WWW-Authenticate": 'Bearer realm="adclick", error="invalid_token"'}
USAGE_EVERY_S = 60
_generation = itertools.count(1)
_current_generation = [0]


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a key's id, name and role (ANONYMOUS when keys are off)."""

    key_id: str
    name: str
    role: str

    @property
    def advertiser(self):
        return access.advertiser_of(self.role)

    @property
    def is_admin(self):
        return self.role == "admin"


ANONYMOUS = Principal("", "anonymous", "admin")  # AUTH_REQUIRED=false: a trusted network


def changed_here():
    """Caches in this process reload on their next check (a key was created or changed)."""
    _current_generation[0] = next(_generation)


class KeyCache:
    """The live keys of one app by hash, reloaded when older than ttl_s."""

    def __init__(self, ttl_s, miss_refresh_s):
        self.ttl_s = ttl_s
        self.miss_refresh_s = miss_refresh_s
        self._lock = threading.Lock()
        self._keys = {}
        self._loaded_at = None
        self._generation = None
        self._used = {}  # key hash -> monotonic time its use was last stored

    def _stale(self, now, max_age):
        return (self._loaded_at is None or now - self._loaded_at >= max_age
                or self._generation != _current_generation[0])

    def _reload(self):
        generation = _current_generation[0]
        found = access.keys(db.client(), db.database(), settings=db.read_settings())
        self._keys = {key.key_hash: key for key in found}
        self._loaded_at, self._generation = time.monotonic(), generation

    def find(self, key_hash):
        """The live Key with this hash, or None."""
        with self._lock:
            if self._stale(time.monotonic(), self.ttl_s):
                self._reload()
            if key_hash not in self._keys and self._stale(time.monotonic(),
                                                          self.miss_refresh_s):
                self._reload()
            return self._keys.get(key_hash)

    def use_is_due(self, key_hash):
        """True once per USAGE_EVERY_S per key: time to store when it was last used."""
        now = time.monotonic()
        with self._lock:
            if now - self._used.get(key_hash, -USAGE_EVERY_S) < USAGE_EVERY_S:
                return False
            self._used[key_hash] = now
            return True


def _bearer_key():
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError("missing API key: send 'Authorization: Bearer <key>'", 401, CHALLENGE)
    return key.strip()


def authenticate():
    """The Principal of the current request; 401 for a missing, unknown, revoked or expired
    key. Also sets g.principal."""
    if not current_app.config["AUTH_REQUIRED"]:
        g.principal = ANONYMOUS
        return ANONYMOUS
    digest = access.hash_key(_bearer_key())
    cache = current_app.extensions[EXTENSION]
    key = cache.find(digest)
    now = datetime.now(timezone.utc)
    if key is None:
        raise ApiError("invalid or revoked API key", 401, INVALID)
    if key.expired(now):
        raise ApiError("this API key has expired", 401, INVALID)
    if cache.use_is_due(digest):
        access.record_use(db.client(), db.database(), digest, now)
    g.principal = Principal(key.key_id, key.name, key.role)
    return g.principal


def require(role, sql=False):
    """A before-request hook: 401 without a valid key; 403 unless its role may call the
    blueprint (`reader`: any role, an advertiser scoped to its ads; `admin`: admins only;
    `operator`: readers and admins, not advertisers); 429 past the key's fair use
    (api.limits; sql: the blueprint runs users' SQL)."""
    def hook():
        principal = authenticate()
        if role == "admin" and not principal.is_admin:
            raise ApiError("this endpoint needs an admin key", 403)
        if role == "operator" and principal.advertiser is not None:
            raise ApiError("an advertiser's key reads its ads' numbers only; the pipeline's"
                           " status needs a reader or admin key", 403)
        key = principal.key_id or f"address:{request.remote_addr}"
        current_app.extensions[limits.EXTENSION].admit(key, sql)
    return hook


def current():
    """The Principal of the current request (set by the blueprint's hook)."""
    return g.principal


def init_app(app):
    """Give app its key cache, and the bootstrap key (config API_KEY, an admin's) once the
    store is up."""
    app.extensions[EXTENSION] = KeyCache(float(app.config["AUTH_CACHE_S"]),
                                         float(app.config["AUTH_MISS_REFRESH_S"]))
    bootstrap = app.config.get("API_KEY")
    if bootstrap:
        def ensure(client, db_name):
            if access.ensure_key(client, db_name, str(bootstrap), "bootstrap", "admin"):
                changed_here()
        app.extensions[db.EXTENSION].on_ready.append(ensure)
