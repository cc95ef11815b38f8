"""The service resource: GET /healthz and the OpenAPI document, both without a key.

A load balancer or supervisor needs a liveness answer that also covers the store (the API is
useless without ClickHouse), and clients need the contract; neither should need credentials.
The OpenAPI document is api/openapi.yaml, served as written (YAML) or as JSON.
"""

import functools
from pathlib import Path

import yaml
from clickhouse_connect.driver.exceptions import ClickHouseError
from flask import Blueprint
from flask import Response
from flask import jsonify

from adclick import queries
from api import db
from api.errors import clickhouse_error_name

bp = Blueprint("health", __name__)
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


@functools.cache
def openapi_text():
    """The OpenAPI document as written."""
    return OPENAPI_PATH.read_text(encoding="utf-8")


@functools.cache
def openapi_document():
    """The OpenAPI document parsed (a dict)."""
    return yaml.safe_load(openapi_text())


@bp.get("/healthz")
def healthz():
    """200 {"status": "ok"} if the store answers SELECT 1, else 503 with the reason."""
    try:
        healthy = queries.health_check(db.client(), db.read_settings())
    except ClickHouseError as error:
        return jsonify(status="unavailable", error=clickhouse_error_name(error)), 503
    if not healthy:
        return jsonify(status="unavailable", error="unexpected answer to SELECT 1"), 503
    return jsonify(status="ok")


@bp.get("/openapi.yaml")
def openapi_yaml():
    """The OpenAPI 3 document of this API, in YAML."""
    return Response(openapi_text(), mimetype="application/yaml")


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3 document of this API, in JSON."""
    return jsonify(openapi_document())
