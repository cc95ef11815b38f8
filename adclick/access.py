"""Who may read what: API keys with roles and expiry, and the ads dimension that scopes them.

A key is `ak_` plus 32 random URL-safe characters (192 bits), shown once when created. The
store keeps only its SHA-256 ({db}.api_keys): a key that random needs no salt or slow hash, and
a leaked table grants nothing. A key is named by its name (unique among live keys) or by its
id, `k_` and the first 10 hex digits of its hash: neither is the secret, so either can be
logged, listed and used to revoke it.

Roles (sql/clickhouse/005_access.sql):
- `admin`: everything, POST /v1/sql and /v1/admin/* included;
- `reader`: the count, metrics, top-N, per-minute and status APIs over every ad;
- `advertiser:<id>`: those APIs over the ads the `ads` table gives to advertiser <id>; any
  other ad is unknown to it (404), and its top-N ranks its own ads only.

Everything here works on any clickhouse-connect client: the API's, the loader's, or the CLI's
on a ClickHouse server (apps.keys).
"""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from adclick import store
from adclick.contract import CLICK

KEY_PREFIX = "ak_"
ID_PREFIX = "k_"
ROLES = ("admin", "reader")
ADVERTISER = "advertiser:"
_ADVERTISER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_KEY_ID = re.compile(r"^k_[0-9a-f]{10}$")


class AccessError(ValueError):
    """A key or ad operation that cannot be done as asked; the message says why."""


def hash_key(key):
    """The hex SHA-256 of a key, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key_hash):
    return ID_PREFIX + key_hash[:10]


def check_role(role):
    """role if it is one a key can have (admin, reader, advertiser:<id>)."""
    if role in ROLES:
        return role
    if role.startswith(ADVERTISER) and _ADVERTISER_ID.match(role[len(ADVERTISER):]):
        return role
    raise AccessError(f"role must be admin, reader or advertiser:<id> (id: letters, digits and"
                      f" _.:-, at most 64), got {role[:80]!r}")


def advertiser_of(role):
    """The advertiser id of an advertiser's role, else None."""
    return role[len(ADVERTISER):] if role.startswith(ADVERTISER) else None


@dataclass(frozen=True)
class Key:
    """What the store knows of a key (never the key itself)."""

    key_hash: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime = None
    revoked: bool = False
    last_used_at: datetime = None

    @property
    def key_id(self):
        return key_id(self.key_hash)

    @property
    def advertiser(self):
        return advertiser_of(self.role)

    def expired(self, now=None):
        now = now or datetime.now(timezone.utc)
        return self.expires_at is not None and self.expires_at <= now

    def public(self, now=None):
        """The key as `adclick keys list` and GET /v1/admin/keys show it: no hash, no secret."""
        return {"id": self.key_id, "name": self.name, "role": self.role,
                "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
                "expired": self.expired(now), "revoked": self.revoked,
                "last_used_at": _iso(self.last_used_at)}


def _iso(moment):
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _utc(moment):
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


KEYS = """
SELECT k.key_hash, k.name, k.role, k.created_at, k.expires_at, k.revoked, u.last_used_at
FROM {db:Identifier}.api_keys AS k FINAL
LEFT JOIN (SELECT key_hash, max(last_used_at) AS last_used_at
           FROM {db:Identifier}.api_key_usage GROUP BY key_hash) AS u USING (key_hash)
WHERE {with_revoked:UInt8} OR k.revoked = 0
ORDER BY k.created_at, k.key_hash
SETTINGS join_use_nulls = 1
"""

# A change of a key re-inserts its row with a later version (updated_at): the newest wins.
WRITE_KEY = """
INSERT INTO {db:Identifier}.api_keys
    (key_hash, name, role, created_at, updated_at, revoked, expires_at)
SELECT {key_hash:String}, {name:String}, {role:String},
       fromUnixTimestamp64Milli({created_ms:Int64}, 'UTC'), now64(3, 'UTC'), {revoked:UInt8},
       if({expires_ms:Int64} < 0, NULL, fromUnixTimestamp64Milli({expires_ms:Int64}, 'UTC'))
"""

RECORD_USE = """
INSERT INTO {db:Identifier}.api_key_usage (key_hash, last_used_at)
SELECT {key_hash:String}, fromUnixTimestamp64Milli({at_ms:Int64}, 'UTC')
"""


def keys(client, db, with_revoked=False, settings=None):
    """Every key the store knows (the revoked ones only if with_revoked), oldest first."""
    rows = client.query(KEYS, parameters={"db": store.check_identifier(db),
                                          "with_revoked": int(with_revoked)},
                        settings=settings).result_rows
    return [Key(key_hash, name, role, _utc(created), _utc(expires), bool(revoked), _utc(used))
            for key_hash, name, role, created, expires, revoked, used in rows]


def _millis(moment):
    return -1 if moment is None else int(moment.timestamp() * 1000)


def _write(client, db, key):
    client.command(WRITE_KEY, parameters={
        "db": store.check_identifier(db), "key_hash": key.key_hash, "name": key.name,
        "role": key.role, "created_ms": _millis(key.created_at), "revoked": int(key.revoked),
        "expires_ms": _millis(key.expires_at)})


def check_name(name):
    if not _NAME.match(name or ""):
        raise AccessError(f"a key's name is 1-64 letters, digits and _.:@-, got {name!r}")
    if _KEY_ID.match(name):
        raise AccessError(f"a key's name cannot look like a key id ({name!r})")
    return name


def new_key():
    """A new random key (192 bits), as only its holder ever sees it."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def create_key(client, db, name, role, expires_at=None, key=None):
    """Store a new key (a random one, or `key` given by an operator) and return
    (the key, its Key). A live key of the same name is an error: names identify keys."""
    check_name(name)
    check_role(role)
    if expires_at is not None and expires_at <= datetime.now(timezone.utc):
        raise AccessError("expires_at must be in the future")
    if any(existing.name == name for existing in keys(client, db)):
        raise AccessError(f"a live key is already named {name!r}; revoke it or pick another"
                          " name")
    key = key or new_key()
    record = Key(hash_key(key), name, role, datetime.now(timezone.utc), expires_at)
    _write(client, db, record)
    return key, record


def find_key(client, db, name_or_id):
    """The live key with this name or id; AccessError if there is none."""
    for key in keys(client, db):
        if name_or_id in (key.name, key.key_id):
            return key
    raise AccessError(f"no live key is named or has the id {name_or_id!r}")


def revoke_key(client, db, name_or_id):
    """Revoke the live key with this name or id; return it as it was."""
    key = find_key(client, db, name_or_id)
    _write(client, db, Key(key.key_hash, key.name, key.role, key.created_at, key.expires_at,
                           revoked=True))
    return key


def expire_key(client, db, name_or_id, at=None):
    """Set when the key with this name or id stops working (default: now); return it anew."""
    key = find_key(client, db, name_or_id)
    record = Key(key.key_hash, key.name, key.role, key.created_at,
                 at or datetime.now(timezone.utc))
    _write(client, db, record)
    return record


def ensure_key(client, db, key, name, role):
    """Store key if no live key has its hash (an operator's ADCLICK_API_KEY, the demo's key
    kept across restarts); a live one keeps its name and role."""
    digest = hash_key(key)
    live = keys(client, db)
    if any(existing.key_hash == digest for existing in live):
        return False
    if any(existing.name == name for existing in live):
        name = f"{name}-{key_id(digest)}"
    create_key(client, db, name, role, key=key)
    return True


def record_use(client, db, key_hash, at):
    client.command(RECORD_USE, parameters={"db": store.check_identifier(db),
                                           "key_hash": key_hash, "at_ms": _millis(at)})


# --- the ads dimension ---------------------------------------------------------------------

AD_COLUMNS = ("ad_id", "advertiser_id", "name")

AD_OWNER = """
SELECT advertiser_id FROM {db:Identifier}.ads FINAL WHERE ad_id = {ad_id:String}
"""


def _checked_ads(rows):
    """rows ((ad_id, advertiser_id, name) each) as a list, or AccessError naming the first bad
    row. An ad_id is what the event contract accepts (an ad the job can count)."""
    ad_id_rule = CLICK.field("ad_id")
    checked = []
    for number, row in enumerate(rows, 1):
        if len(row) != 3:
            raise AccessError(f"ad {number}: expected ad_id, advertiser_id, name; got {row!r}")
        ad_id, advertiser, name = (str(value) if value is not None else "" for value in row)
        if ad_id_rule.check(ad_id, None):
            raise AccessError(f"ad {number}: ad_id must be {ad_id_rule.describe()}, got"
                              f" {ad_id[:80]!r}")
        if not _ADVERTISER_ID.match(advertiser):
            raise AccessError(f"ad {number}: advertiser_id must be 1-64 letters, digits and"
                              f" _.:-, got {advertiser[:80]!r}")
        if len(name) > 256:
            raise AccessError(f"ad {number}: name is longer than 256 characters")
        checked.append((ad_id, advertiser, name))
    return checked


def load_ads(client, db, rows):
    """Store ads ((ad_id, advertiser_id, name) rows); an ad stored before is replaced. Returns
    how many were stored; AccessError, and nothing stored, if any row is not a valid ad."""
    rows = _checked_ads(rows)
    if not rows:
        return 0
    now = datetime.now(timezone.utc)
    client.insert("ads", [[*row, now] for row in rows],
                  column_names=[*AD_COLUMNS, "updated_at"], database=store.check_identifier(db))
    return len(rows)


def ad_owner(client, db, ad_id, settings=None):
    """The advertiser the ads table gives ad_id to, or None."""
    rows = client.query(AD_OWNER, parameters={"db": store.check_identifier(db), "ad_id": ad_id},
                        settings=settings).result_rows
    return rows[0][0] if rows else None
