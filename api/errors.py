"""Every error the API returns, as JSON, decided in one place.

Clients of a JSON API should never have to parse an HTML error page, and a stack trace must
never leave the server. Views raise ApiError (or let werkzeug's HTTP errors and
clickhouse-connect's errors propagate); the handlers registered here turn each into
{"error": "..."} with the right status: 400 for bad input, 401 for a missing key, 404/405
from routing, 503 when ClickHouse fails or times out, and a bare 500 for anything else.
"""

import logging

from clickhouse_connect.driver.exceptions import ClickHouseError
from flask import jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused (or must act on), with its HTTP status and message."""

    def __init__(self, message, status=400, headers=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}


def json_error(message, status, headers=None):
    """A JSON error response {"error": message}."""
    response = jsonify(error=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def clickhouse_error_name(error):
    """ClickHouse's symbolic name for an error (TIMEOUT_EXCEEDED, ...) or its class name."""
    return getattr(error, "name", None) or type(error).__name__


def refused_by_engine(error, max_chars=2000):
    """The 400 for a statement ClickHouse refused: its error name and message, without the
    engine's version trailer."""
    message = str(error).split(" (version ")[0].strip()[:max_chars]
    return ApiError(f"ClickHouse refused the query ({clickhouse_error_name(error)}): {message}")


def _api_error(error):
    return json_error(error.message, error.status, error.headers)


def _http_error(error):
    # Keep the headers werkzeug computed (Allow on a 405), but not its HTML content type.
    headers = {name: value for name, value in error.get_headers()
               if name.lower() != "content-type"}
    return json_error(error.description or error.name, error.code or 500, headers)


def _clickhouse_error(error):
    log.warning("ClickHouse error: %s", error)
    return json_error(f"the store is unavailable or timed out ({clickhouse_error_name(error)});"
                      " try again later", 503, {"Retry-After": "1"})


def _unexpected_error(error):
    log.exception("unhandled error", exc_info=error)
    return json_error("internal error", 500)


def init_app(app):
    """Register the JSON error handlers on app."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ClickHouseError, _clickhouse_error)
    app.register_error_handler(Exception, _unexpected_error)
