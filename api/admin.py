"""The admin resource (admin keys only): API keys, the ads dimension, the store's size.

With the embedded store the running `adclick serve` owns the engine, so `adclick keys` and
`adclick ads load` (apps.keys, apps.ads) come in through here; with a ClickHouse server they
can also work on the store directly. The key itself is in one answer only, the one that
creates it; everything else names keys by name or id (adclick.access).
"""

from flask import Blueprint
from flask import jsonify
from flask import request

from adclick import access
from api import auth
from api import db
from api import params
from api.errors import ApiError

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")
bp.before_request(auth.require("admin"))
MAX_ADS_PER_REQUEST = 100_000
# What the store holds, per table of the API's database (active parts only).
STORAGE = """
SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes)
FROM system.parts
WHERE active AND database = {db:String}
GROUP BY table
ORDER BY table
"""


def _body(allowed, required=()):
    return params.json_object(request.get_json(force=True, silent=True), allowed, required)


def _access(call, *args):
    try:
        return call(db.client(), db.database(), *args)
    except access.AccessError as error:
        status = 404 if str(error).startswith("no live key") else 400
        raise ApiError(str(error), status) from None


@bp.get("/keys")
def list_keys():
    """Every live key (revoked ones too with ?revoked=true): id, name, role, created, expiry,
    last used; never the key or its hash."""
    params.check_known(request.args, ("revoked",))
    with_revoked = params.choice(request.args, "revoked", "false", ("true", "false")) == "true"
    keys = access.keys(db.client(), db.database(), with_revoked)
    return jsonify({"keys": [key.public() for key in keys]})


@bp.post("/keys")
def create_key():
    """A new key {name, role, expires_at?}; the answer holds the key, shown this once."""
    body = _body(("name", "role", "expires_at"), ("name", "role"))
    if not isinstance(body["name"], str) or not isinstance(body["role"], str):
        raise ApiError("'name' and 'role' must be strings")
    key, record = _access(access.create_key, body["name"], body["role"],
                          params.moment(body, "expires_at"))
    auth.changed_here()
    return jsonify({"key": key, **record.public()}), 201


@bp.post("/keys/<name_or_id>/revoke")
def revoke_key(name_or_id):
    """Revoke the live key of this name or id; it is refused from now on."""
    key = _access(access.revoke_key, name_or_id)
    auth.changed_here()
    return jsonify({**key.public(), "revoked": True})


@bp.post("/keys/<name_or_id>/expire")
def expire_key(name_or_id):
    """Set when the key of this name or id stops working: {"at": ...}, default now."""
    body = _body(("at",)) if request.get_data() else {}
    key = _access(access.expire_key, name_or_id, params.moment(body, "at"))
    auth.changed_here()
    return jsonify(key.public())


@bp.post("/ads")
def load_ads():
    """Store ads {"ads": [{ad_id, advertiser_id, name}, ...]}: who owns each ad."""
    body = _body(("ads",), ("ads",))
    ads = body["ads"]
    if not isinstance(ads, list) or len(ads) > MAX_ADS_PER_REQUEST:
        raise ApiError(f"'ads' must be a list of at most {MAX_ADS_PER_REQUEST} objects")
    rows = []
    for number, ad in enumerate(ads, 1):
        if not isinstance(ad, dict) or set(ad) - set(access.AD_COLUMNS) or "ad_id" not in ad:
            raise ApiError(f"ad {number}: expected an object of {', '.join(access.AD_COLUMNS)}")
        rows.append(tuple(ad.get(column, "") for column in access.AD_COLUMNS))
    return jsonify({"stored": _access(access.load_ads, rows)})


@bp.get("/storage")
def storage():
    """Rows and bytes per table of the store (the benchmark's storage figures)."""
    params.check_known(request.args, ())
    rows = db.client().query(STORAGE, parameters={"db": db.database()}).result_rows
    return jsonify({"tables": [{"table": table, "rows": int(count), "compressed_bytes": int(c),
                                "uncompressed_bytes": int(u)} for table, count, c, u in rows]})
