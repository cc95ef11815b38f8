"""A small client of adclick's HTTP API, as tests and the benchmark use it."""

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from datetime import timezone

from prometheus_client.parser import text_string_to_metric_families


def prometheus_samples(text):
    """{(sample name, labels as a sorted tuple of pairs): value} of a Prometheus text page,
    read with the Prometheus client's own parser."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def iso(ms):
    """Epoch milliseconds as the API's timestamps: 2024-05-01T12:34:00Z."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The API at base (http://host:port) with an API key."""

    def __init__(self, base, key):
        self.base = base.rstrip("/")
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}

    def _open(self, path, params=None, body=None, timeout=30):
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, safe=",:")
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers)
        return urllib.request.urlopen(request, timeout=timeout)

    def get(self, path, **params):
        """(HTTP status, decoded JSON body) of GET path?params; an error status is returned too."""
        try:
            with self._open(path, params) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def storage(self, timeout=30):
        """{table: (rows, compressed bytes, uncompressed bytes)} of the store (an admin key's
        GET /v1/admin/storage; system tables are not readable through /v1/sql)."""
        with self._open("/v1/admin/storage", timeout=timeout) as response:
            return {entry["table"]: (entry["rows"], entry["compressed_bytes"],
                                     entry["uncompressed_bytes"])
                    for entry in json.loads(response.read())["tables"]}

    def metrics(self, timeout=10):
        """GET /metrics (no key needed), as prometheus_samples."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=timeout) as response:
            return prometheus_samples(response.read().decode())

    def sql(self, query, timeout=30):
        """The rows of a read-only query through POST /v1/sql (raises on an error status)."""
        with self._open("/v1/sql", body={"query": query}, timeout=timeout) as response:
            return json.loads(response.read())["rows"]

    def ad_count(self, ad_id, start_ms, end_ms, timeout=10):
        """API 1: the ad's clicks in [start_ms, end_ms) (raises on an error status)."""
        params = {"from": iso(start_ms), "to": iso(end_ms)}
        with self._open(f"/v1/ads/{ad_id}/aggregated_count", params,
                        timeout=timeout) as response:
            return json.loads(response.read())["count"]
