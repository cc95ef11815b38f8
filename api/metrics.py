"""GET /metrics: the API process's metrics in Prometheus's text format, for machines to scrape.

- adclick_http_requests_total{endpoint,method,status} and
  adclick_http_request_duration_seconds{endpoint,method,status}: every request, by its route
  (the URL rule, not the URL, so that ad ids do not become label values);
- adclick_newest_complete_minute_age_seconds: freshness (api.status);
- adclick_loader_lag_records{topic}, adclick_loader_rows_total{table},
  adclick_loader_last_batch_timestamp_seconds, adclick_loader_reconnects_total: the loader of
  this process, if it has one; adclick_loader_rows_total{table="loader_rejects"} counts the
  records of the job's topics it could not convert and stored there (0 until one comes);
- adclick_result_cache_lookups_total{outcome}: answers served fresh, stale (while a refresh
  runs) or computed (api.db.ResultCache);
- adclick_store_up: 1 if the store answered the freshness query;
- adclick_fair_use_refused_total{reason}: requests answered 429 (rate, concurrency, sql).

Each app has a registry of its own (tests build many apps in one process). Like /healthz it
needs no key: it says how the service runs, not what any ad did.
"""

import time

from clickhouse_connect.driver.exceptions import ClickHouseError
from flask import Blueprint
from flask import Response
from flask import current_app
from flask import g
from flask import request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily

from api import ads
from api import db
from api import limits
from api import status

bp = Blueprint("metrics", __name__)
EXTENSION = "adclick.metrics"
# From a cached answer (well under 1 ms) to the query time limit (5 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AppMetrics:
    """The registry of one app and its request metrics."""

    def __init__(self, app):
        self.registry = CollectorRegistry()
        self.requests = Counter("adclick_http_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("adclick_http_request_duration_seconds",
                                 "Time to answer an HTTP request",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.registry.register(StateCollector(app))


class StateCollector:
    """Values read when scraped: freshness, the loader, the result cache."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        yield from self._freshness()
        loader = status.loader_of(self.app)
        if loader is not None:
            yield from self._loader(loader)
        lookups = CounterMetricFamily("adclick_result_cache_lookups",
                                      "API answers by how the result cache found them",
                                      labels=["outcome"])
        for outcome, count in self.app.extensions[db.EXTENSION].cache.lookups.items():
            lookups.add_metric([outcome], count)
        yield lookups
        refused = CounterMetricFamily("adclick_fair_use_refused",
                                      "Requests answered 429, by the limit they were past",
                                      labels=["reason"])
        for reason, count in self.app.extensions[limits.EXTENSION].refused.items():
            refused.add_metric([reason], count)
        yield refused

    def _freshness(self):
        up = GaugeMetricFamily("adclick_store_up", "1 if the store answered the last scrape")
        try:
            with self.app.app_context():
                age = status.freshness_s(ads.newest_complete_minute())
        except ClickHouseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if age is not None:
            yield GaugeMetricFamily(
                "adclick_newest_complete_minute_age_seconds",
                "Seconds since the newest minute with final counts in the store ended",
                value=age)

    @staticmethod
    def _loader(loader):
        lag = GaugeMetricFamily("adclick_loader_lag_records",
                                "Records a topic holds that the loader has not stored yet",
                                labels=["topic"])
        for topic, behind in loader.lag.items():
            if behind is not None:
                lag.add_metric([topic], behind)
        yield lag
        rows = CounterMetricFamily("adclick_loader_rows", "Rows the loader stored (for a raw "
                                   "table: records handed to its rules, invalid ones included)",
                                   labels=["table"])
        for table, count in loader.rows_loaded.items():
            rows.add_metric([table], count)
        yield rows
        if loader.last_batch_at is not None:
            yield GaugeMetricFamily("adclick_loader_last_batch_timestamp_seconds",
                                    "When the loader last stored a batch (Unix time)",
                                    value=loader.last_batch_at)
        yield CounterMetricFamily("adclick_loader_reconnects",
                                  "Times the loader replaced its Kafka consumer",
                                  value=loader.reconnects)


def _start_timer():
    g.adclick_started = time.perf_counter()


def _observe(response):
    metrics = current_app.extensions[EXTENSION]
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    labels = (endpoint, request.method, str(response.status_code))
    metrics.requests.labels(*labels).inc()
    started = g.get("adclick_started")
    if started is not None:
        metrics.latency.labels(*labels).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics():
    """The metrics in Prometheus's text exposition format."""
    registry = current_app.extensions[EXTENSION].registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app):
    app.extensions[EXTENSION] = AppMetrics(app)
    app.before_request(_start_timer)
    app.after_request(_observe)
