"""adclick's HTTP API: click counts and top ads from ClickHouse, as JSON.

create_app builds the Flask app (Flask's app-factory pattern): defaults below, then either the
ADCLICK_* environment (ADCLICK_CLICKHOUSE_URL, ADCLICK_AUTH_REQUIRED=false, ...; values are
parsed as JSON when they can be) or, in tests, test_config. The app keeps no state besides
caches, so a production server runs several workers against a ClickHouse server:

    ADCLICK_CLICKHOUSE_URL=http://user:pass@clickhouse:8123 gunicorn -w 4 'api:create_app()'

Endpoints and their contract: api/openapi.yaml (served at /openapi.yaml and /openapi.json).
"""

import logging

from flask import Flask

from adclick import config

log = logging.getLogger(__name__)


def create_app(test_config=None):
    """Create and configure the API app (test_config replaces the environment)."""
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(
        CLICKHOUSE_URL=config.CLICKHOUSE_URL,
        DATABASE=config.DATABASE,
        AUTH_REQUIRED=True,
        AUTH_CACHE_S=10,  # how long a worker trusts its set of valid key hashes
        AUTH_MISS_REFRESH_S=1,  # an unknown key reloads that set at most this often
        API_KEY=None,  # a key to create at start (ADCLICK_API_KEY, shared with `adclick sql`)
        STORE_HANDLES=8,  # embedded store: statements the API runs at once (adclick.store)
        SQL_CLICKHOUSE_URL=None,  # a server's user for POST /v1/sql (default: CLICKHOUSE_URL)
        QUERY_TIMEOUT_S=5,  # ClickHouse max_execution_time of every query
        MAX_MEMORY_USAGE=2 * 1024 ** 3,  # ClickHouse max_memory_usage (bytes) of every query
        MAX_RANGE_MINUTES=1440,
        RESULT_CACHE_S=1.0,  # how long an answer of API 1/2 is reused (0: never)
        RESULT_STALE_S=5.0,  # an expired answer is served while a thread recomputes it
        SQL_MAX_ROWS=10_000,
        SQL_MAX_QUERY_CHARS=100_000,
        # Request bodies (POST /v1/sql): room for SQL_MAX_QUERY_CHARS even if every character is
        # JSON-escaped (12 bytes for a surrogate pair); a larger body gets a 413.
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        FLINK_REST_URL=None,  # the job's Flink REST API, for its last checkpoint (api.status)
        # Fair use per key (api.limits): a 429 with Retry-After past these.
        RATE_LIMIT_PER_S=50,
        RATE_LIMIT_BURST=200,
        MAX_CONCURRENT_PER_KEY=4,
        SQL_MAX_CONCURRENT=2,  # POST /v1/sql statements at once in this process
    )
    if test_config is None:
        app.config.from_prefixed_env("ADCLICK")
    else:
        app.config.from_mapping(test_config)

    from api import admin
    from api import ads
    from api import auth
    from api import dashboard
    from api import db
    from api import errors
    from api import health
    from api import limits
    from api import metrics
    from api import recalculations
    from api import sql
    from api import status

    errors.init_app(app)
    db.init_app(app)
    auth.init_app(app)
    limits.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ads.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(sql.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(recalculations.bp)
    app.register_blueprint(dashboard.bp)
    db.warm_up(app)
    return app
