"""The sql resource: POST /v1/sql runs one SELECT for ad-hoc analysis.

The embedded store can be open in one process only, the one running the pipeline and this API,
so ad-hoc SQL (adclick sql, sql/analyses/*.sql) comes in through here. What may run is decided
by api.sql_scope on the engine's own parse (one SELECT or DESCRIBE over the data tables, no
output clause, allowed functions only), and what runs is the canonical text it checked. The
session behind it is readonly=1 with fixed time, memory and row limits (api.db.Store.sql_client):
the engine refuses writes and setting changes by itself, but the embedded engine still writes
INTO OUTFILE's file under readonly, which is why the scope is an allow-list and not a courtesy.
The API adds one statement per request, a cap on returned rows (reported when hit) and
JSON-safe values.
"""

import math
from datetime import date
from datetime import datetime
from datetime import timezone
from decimal import Decimal

from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.exceptions import OperationalError
from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request

from api import auth
from api import db
from api import params
from api import sql_scope
from api.errors import refused_by_engine

bp = Blueprint("sql", __name__, url_prefix="/v1")
bp.before_request(auth.require("admin", sql=True))

# Strings come back as bytes and are decoded leniently: a column may hold any bytes.
BYTES_FORMATS = {"String": "bytes", "FixedString": "bytes"}


def jsonable(value):
    """value as something JSON can carry, without losing what a reader needs."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
            return value.isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(jsonable(key)): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    return str(value)  # UUID, IP addresses, and anything else with a canonical text form


def _columns_of(client, statement):
    # An empty result may carry no column names (the embedded engine sends no block).
    try:
        rows = client.query(f"DESCRIBE TABLE (\n{statement}\n)").result_rows
    except DatabaseError:
        return [], []
    return [row[0] for row in rows], [row[1] for row in rows]


@bp.post("/sql")
def run_sql():
    """Run one read-only statement; return its columns and up to SQL_MAX_ROWS rows."""
    statement = params.sql_query(request.get_json(force=True, silent=True),
                                 current_app.config["SQL_MAX_QUERY_CHARS"])
    max_rows = current_app.config["SQL_MAX_ROWS"]
    client = db.get_store().sql_client()  # a store that is down is a 503, not a refusal
    statement = sql_scope.check(client, statement, db.database())  # its canonical text
    try:
        result = client.query(statement, query_formats=BYTES_FORMATS)
        columns = list(result.column_names)
        types = [column_type.name for column_type in result.column_types]
        rows = result.result_rows
        if not columns:
            columns, types = _columns_of(client, statement)
    except OperationalError:
        raise
    except DatabaseError as error:
        raise refused_by_engine(error) from None
    truncated = len(rows) > max_rows
    body = {
        "columns": columns,
        "types": types,
        "rows": [jsonable(list(row)) for row in rows[:max_rows]],
        "row_count": min(len(rows), max_rows),
        "truncated": truncated,
    }
    if truncated:
        body["note"] = f"result truncated to the first {max_rows} rows"
    return jsonify(body)
