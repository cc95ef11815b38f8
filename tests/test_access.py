"""Scoped keys on the real embedded engine: roles, advertisers' own ads, expiry, revocation,
the key commands, and fair use (429 with Retry-After).

Two advertisers own the data set's ads between them (the ads table); every answer an
advertiser's key gets is compared with the truth computed from its own ads' rows only.
"""

import io
import os
import stat
import threading
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import pytest
import requests
import yaml

from adclick import access
from api import create_app
from apps import ads as ads_cli
from apps import keys as keys_cli
from apps.server import kept_key
from tests.api_fixtures import ADS
from tests.api_fixtures import COMPLETE_MINUTES
from tests.api_fixtures import MINUTE
from tests.api_fixtures import T0
from tests.api_fixtures import Api
from tests.api_fixtures import LiveServer
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database
from tests.api_fixtures import iso
from tests.api_fixtures import load_attributions
from tests.api_fixtures import load_dataset
from tests.api_fixtures import truth_count
from tests.api_fixtures import truth_metrics
from tests.api_fixtures import truth_popular_by
from tests.api_fixtures import truth_top

DB = "t_access"
ROOT = Path(__file__).resolve().parent.parent
END = T0 + COMPLETE_MINUTES * MINUTE
# Advertiser A owns the even ads and tie-a, B the odd ones and tie-b.
OWNERS = {ad: ("adv-a" if ad == "tie-a" or (ad.startswith("ad-") and int(ad[3:]) % 2 == 0)
               else "adv-b") for ad in ADS}


@pytest.fixture(scope="module")
def dataset(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    rows = load_dataset(client, DB)
    attributions = load_attributions(client, DB)
    access.load_ads(client, DB, [(ad, owner, f"name of {ad}") for ad, owner in OWNERS.items()])
    return client, rows, attributions


@pytest.fixture(scope="module")
def openapi():
    return yaml.safe_load((ROOT / "api" / "openapi.yaml").read_text())


@pytest.fixture(scope="module")
def app(dataset, chdb_url):  # noqa: F811
    return create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "TESTING": True,
                       "RATE_LIMIT_PER_S": 0})


def key_for(dataset, role, name=None):
    return access.create_key(dataset[0], DB, name or f"{role.replace(':', '-')}-{time.time_ns()}",
                             role)[0]


@pytest.fixture(scope="module")
def clients(app, dataset, openapi):
    return {role: Api(app, key_for(dataset, role), openapi)
            for role in ("admin", "reader", "advertiser:adv-a", "advertiser:adv-b")}


def own(rows, advertiser):
    return [row for row in rows if OWNERS.get(row["ad_id"]) == advertiser]


@pytest.mark.parametrize("advertiser", ["adv-a", "adv-b"])
def test_an_advertiser_reads_exactly_its_own_ads(clients, dataset, advertiser):
    _, rows, attributions = dataset
    api = clients[f"advertiser:{advertiser}"]
    mine = own(rows, advertiser)
    my_attributions = own(attributions, advertiser)
    start = END - 10 * MINUTE
    for ad, owner in OWNERS.items():
        count = api.get(f"/v1/ads/{ad}/aggregated_count", "/v1/ads/{ad_id}/aggregated_count",
                        minutes=10)
        metrics = api.get(f"/v1/ads/{ad}/metrics", "/v1/ads/{ad_id}/metrics", minutes=10)
        per_minute = api.get("/v1/ads/per_minute", minutes=10, ad_id=ad)
        if owner != advertiser:
            for response in (count, metrics, per_minute):
                assert response.status_code == 404, response.get_json()
                assert str(truth_count(rows, ad, start, END)) not in str(response.get_json())
            continue
        assert count.get_json()["count"] == truth_count(rows, ad, start, END)
        expected = truth_metrics(rows, attributions, ad, start, END)
        assert {k: metrics.get_json()[k] for k in expected} == expected
        assert sum(m["clicks"] for m in per_minute.get_json()["minutes"]) == \
            truth_count(rows, ad, start, END)
    top = api.get("/v1/ads/popular_ads", minutes=10, count=100).get_json()["ads"]
    assert [(ad["ad_id"], ad["count"]) for ad in top] == truth_top(mine, start, END, 100)
    assert top and all(OWNERS[ad["ad_id"]] == advertiser for ad in top)
    for by in ("impressions", "conversions", "ctr"):
        ranked = api.get("/v1/ads/popular_ads", minutes=10, count=100, by=by,
                         min_impressions=1).get_json()["ads"]
        expected = truth_popular_by(mine, my_attributions, by, start, END, 100, 1)
        assert [ad["ad_id"] for ad in ranked] == [ad for ad, _ in expected]
    everything = api.get("/v1/ads/per_minute", minutes=10).get_json()["minutes"]
    assert sum(m["clicks"] for m in everything) == sum(
        truth_count(mine, ad, start, END) for ad in OWNERS if OWNERS[ad] == advertiser)


def test_a_reader_reads_every_ad(clients, dataset):
    _, rows, _ = dataset
    start = END - 10 * MINUTE
    top = clients["reader"].get("/v1/ads/popular_ads", minutes=10, count=100).get_json()["ads"]
    assert [(ad["ad_id"], ad["count"]) for ad in top] == truth_top(rows, start, END, 100)
    assert clients["reader"].get("/v1/status").status_code == 200


def test_an_unknown_ad_is_a_404_for_an_advertiser_and_a_0_for_a_reader(clients):
    path = "/v1/ads/{ad_id}/aggregated_count"
    assert clients["advertiser:adv-a"].get("/v1/ads/never-seen/aggregated_count", path
                                           ).status_code == 404
    assert clients["reader"].get("/v1/ads/never-seen/aggregated_count", path
                                 ).get_json()["count"] == 0


@pytest.mark.parametrize("role", ["reader", "advertiser:adv-a"])
def test_only_admins_run_sql_and_manage_keys(clients, role):
    api = clients[role]
    assert "admin key" in api.sql("SELECT 1", 403)["error"]
    for path in ("/v1/admin/keys", "/v1/admin/storage"):
        response = api.get(path)
        assert response.status_code == 403, response.get_json()
    response = api.client.post("/v1/admin/keys", json={"name": "x", "role": "admin"},
                               headers=api.headers)
    assert response.status_code == 403
    assert clients["admin"].sql("SELECT 1", 200)["rows"] == [[1]]


def test_an_advertiser_has_no_pipeline_status(clients):
    response = clients["advertiser:adv-a"].get("/v1/status")
    assert response.status_code == 403 and "reader or admin" in response.get_json()["error"]


def test_expired_and_revoked_keys_are_refused(app, clients, dataset, openapi):
    admin = clients["admin"]
    created = {}
    for name in ("soon-expired", "to-revoke", "expires-later"):
        response = admin.client.post("/v1/admin/keys", headers=admin.headers, json={
            "name": name, "role": "reader",
            "expires_at": iso(datetime.now(timezone.utc) + timedelta(days=1))})
        assert response.status_code == 201, response.get_json()
        created[name] = response.get_json()

    def status(name):
        return admin.get("/v1/ads/popular_ads", headers={
            "Authorization": f"Bearer {created[name]['key']}"})
    assert all(status(name).status_code == 200 for name in created)
    response = admin.client.post("/v1/admin/keys/soon-expired/expire", headers=admin.headers)
    assert response.status_code == 200 and response.get_json()["expired"] is True
    response = admin.client.post(f"/v1/admin/keys/{created['to-revoke']['id']}/revoke",
                                 headers=admin.headers)
    assert response.status_code == 200
    assert "expired" in status("soon-expired").get_json()["error"]
    assert status("soon-expired").status_code == 401
    assert status("to-revoke").status_code == 401
    assert status("expires-later").status_code == 200
    # An expiry set in the store directly (another process) takes effect with the clock.
    access.expire_key(dataset[0], DB, "expires-later",
                      datetime.now(timezone.utc) + timedelta(seconds=1))
    other = create_app({"CLICKHOUSE_URL": app.config["CLICKHOUSE_URL"], "DATABASE": DB})
    bearer = {"Authorization": f"Bearer {created['expires-later']['key']}"}
    assert other.test_client().get("/v1/ads/popular_ads", headers=bearer).status_code == 200
    time.sleep(1.2)
    assert other.test_client().get("/v1/ads/popular_ads", headers=bearer).status_code == 401


def test_the_key_list_never_shows_a_key_and_tells_last_use(clients, dataset):
    admin = clients["admin"]
    reader_key = clients["reader"].headers["Authorization"].split()[1]
    clients["reader"].get("/v1/ads/popular_ads")
    body = admin.get("/v1/admin/keys").get_json()
    assert reader_key not in str(body)
    assert not any(key.key_hash in str(body) for key in access.keys(dataset[0], DB))
    reader = next(k for k in body["keys"] if k["id"] == access.key_id(access.hash_key(
        reader_key)))
    assert reader["role"] == "reader" and reader["last_used_at"] is not None
    assert reader["expires_at"] is None and reader["revoked"] is False


@pytest.mark.parametrize("body,reason", [
    ({"name": "x", "role": "owner"}, "role must be"),
    ({"name": "x", "role": "advertiser:"}, "role must be"),
    ({"name": "k_0123456789", "role": "reader"}, "look like a key id"),
    ({"name": "has space", "role": "reader"}, "name"),
    ({"name": "x", "role": "reader", "expires_at": "2001-01-01T00:00:00Z"}, "future"),
    ({"name": "x", "role": "reader", "expires_at": "tomorrow"}, "ISO 8601"),
    ({"name": "x", "role": "reader", "secret": "y"}, "unknown body field"),
])
def test_bad_key_requests(clients, body, reason):
    admin = clients["admin"]
    response = admin.client.post("/v1/admin/keys", json=body, headers=admin.headers)
    admin.check(response, "/v1/admin/keys", "post")
    assert response.status_code == 400 and reason in response.get_json()["error"]


def test_a_name_names_one_live_key(clients):
    admin = clients["admin"]
    first = admin.client.post("/v1/admin/keys", json={"name": "twice", "role": "reader"},
                              headers=admin.headers)
    second = admin.client.post("/v1/admin/keys", json={"name": "twice", "role": "reader"},
                               headers=admin.headers)
    assert first.status_code == 201 and second.status_code == 400
    assert admin.client.post("/v1/admin/keys/nobody/revoke", headers=admin.headers
                             ).status_code == 404


def test_ads_are_loaded_and_checked(clients, dataset):
    admin = clients["admin"]
    response = admin.client.post("/v1/admin/ads", headers=admin.headers, json={
        "ads": [{"ad_id": "ad-new", "advertiser_id": "adv-c", "name": "new"}]})
    assert response.status_code == 200 and response.get_json() == {"stored": 1}
    assert access.ad_owner(dataset[0], DB, "ad-new") == "adv-c"
    response = admin.client.post("/v1/admin/ads", headers=admin.headers, json={
        "ads": [{"ad_id": "bad id!", "advertiser_id": "adv-c"}]})
    assert response.status_code == 400 and "ad 1" in response.get_json()["error"]


# --- the commands ---------------------------------------------------------------------------

def run(main, argv):
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def test_key_commands_through_the_api(app, clients, dataset, tmp_path, capsys):
    admin_key = clients["admin"].headers["Authorization"].split()[1]
    with LiveServer(app) as server:
        connection = ["--api-url", server.url, "--api-key", admin_key]
        status, out = run(keys_cli.main, [*connection, "create", "cli-reader", "--role",
                                          "reader", "--expires-in", "30d"])
        assert status == 0
        new_key = out.strip()
        assert new_key.startswith("ak_")
        assert "shown only now" in capsys.readouterr().err
        status, listing = run(keys_cli.main, [*connection, "list"])
        assert status == 0 and "cli-reader" in listing and new_key not in listing
        assert "reader" in listing and str(datetime.now(timezone.utc).year) in listing
        status, out = run(keys_cli.main, [*connection, "expire", "cli-reader", "--at",
                                          "2099-01-01T00:00:00Z"])
        assert status == 0 and "2099-01-01" in out
        status, out = run(keys_cli.main, [*connection, "revoke", "cli-reader"])
        assert status == 0 and "revoked" in out
        status, listing = run(keys_cli.main, [*connection, "list"])
        assert "cli-reader" not in listing
        status, _ = run(keys_cli.main, [*connection, "revoke", "cli-reader"])
        assert status == 1 and "no live key" in capsys.readouterr().err
        reader_key = clients["reader"].headers["Authorization"].split()[1]
        status, _ = run(keys_cli.main, ["--api-url", server.url, "--api-key", reader_key,
                                        "list"])
        assert status == 1 and "admin key" in capsys.readouterr().err
        ads_file = tmp_path / "ads.csv"
        ads_cli.write_ads(ads_file, [("ad-cli", "adv-cli", "from the cli")])
        assert run(ads_cli.main, [*connection, "load", str(ads_file)])[0] == 0
    assert access.ad_owner(dataset[0], DB, "ad-cli") == "adv-cli"


def test_key_commands_on_the_store_directly(chdb_url, dataset):  # noqa: F811
    connection = ["--clickhouse-url", chdb_url, "--database", DB]
    status, out = run(keys_cli.main, [*connection, "create", "direct", "--role",
                                      "advertiser:adv-a"])
    assert status == 0
    key = out.strip()
    status, listing = run(keys_cli.main, [*connection, "list", "--format", "json"])
    assert status == 0 and key not in listing and '"advertiser:adv-a"' in listing
    assert run(keys_cli.main, [*connection, "revoke", access.key_id(access.hash_key(key))]
               )[0] == 0
    assert not any(k.name == "direct" for k in access.keys(dataset[0], DB))


def test_the_demo_key_is_kept_private_and_reused(tmp_path):
    path = tmp_path / "api-key"
    key = kept_key(path)
    assert key.startswith("ak_") and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert kept_key(path) == key
    os.chmod(path, 0o644)
    assert kept_key(path) == key and stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --- fair use -------------------------------------------------------------------------------

def test_a_key_over_its_rate_gets_429_with_retry_after(chdb_url, dataset, openapi):  # noqa: F811
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "RATE_LIMIT_PER_S": 2,
                      "RATE_LIMIT_BURST": 5})
    api = Api(app, key_for(dataset, "reader"), openapi)
    other = Api(app, key_for(dataset, "reader"), openapi)  # another key has its own budget
    statuses = [api.get("/v1/ads/popular_ads").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
    metrics = api.client.get("/metrics").get_data(as_text=True)
    assert 'adclick_fair_use_refused_total{reason="rate"} 3.0' in metrics
    refused = api.get("/v1/ads/popular_ads")
    assert int(refused.headers["Retry-After"]) >= 1 and "rate limit" in refused.get_json()["error"]
    assert other.get("/v1/ads/popular_ads").status_code == 200
    time.sleep(1.1)
    assert api.get("/v1/ads/popular_ads").status_code == 200


def test_sql_statements_at_once_are_capped(chdb_url, dataset, openapi):  # noqa: F811
    """Past SQL_MAX_CONCURRENT statements (and one per key), more are answered 429 at once
    while the slow ones run; /healthz and the data APIs answer meanwhile."""
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "QUERY_TIMEOUT_S": 3,
                      "SQL_MAX_CONCURRENT": 2, "RATE_LIMIT_PER_S": 0})
    admins = [key_for(dataset, "admin") for _ in range(4)]
    slow = "SELECT count() FROM numbers(100000000000000)"
    results = []
    with LiveServer(app) as server:
        def send(key):
            started = time.monotonic()
            response = requests.post(f"{server.url}/v1/sql", json={"query": slow}, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"})
            results.append((response.status_code, time.monotonic() - started,
                            response.headers.get("Retry-After"), response.json()["error"]))

        threads = [threading.Thread(target=send, args=(key,)) for key in admins + admins[:2]]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        health = []
        while any(thread.is_alive() for thread in threads):
            started = time.monotonic()
            assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
            health.append(time.monotonic() - started)
            time.sleep(0.2)
        for thread in threads:
            thread.join()
    cut = [r for r in results if r[0] == 400]
    refused = [r for r in results if r[0] == 429]
    assert len(cut) == 2 and all("TIMEOUT_EXCEEDED" in r[3] for r in cut), results
    assert len(refused) == 4 and all(r[1] < 2 and int(r[2]) >= 1 for r in refused), results
    assert health and max(health) < 1.5, health
