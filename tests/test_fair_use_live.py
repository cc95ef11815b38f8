"""Slow SQL cannot stall the server: `adclick serve` on the real broker and embedded store, with
more slow statements sent at once than it has worker threads, keeps answering /healthz and
keeps loading raw clicks (its loader on a handle of its own, the statements capped, the
excess refused with 429 at once, each statement cut by the engine's time limit)."""

import threading
import time

import pytest
import requests
from kafka import KafkaProducer

from adclick import config
from adclick.contract import encode
from adclick.generator import ClickFactory
from adclick.generator import now_ms
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for

pytestmark = pytest.mark.integration
SLOW = "SELECT count() FROM numbers(100000000000000)"
STATEMENTS = 16  # waitress runs 8 threads
CLICKS_PER_S = 400


def raw_rows(base):
    """Records the loader has handed to raw_clicks' rules, from /metrics (no key, no SQL)."""
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith('adclick_loader_rows_total{table="raw_clicks"}'):
            return float(line.split()[-1])
    return 0.0


def test_slow_statements_leave_healthz_and_the_loader_alone(kafka_bootstrap, topic_prefix,
                                                            tmp_path):
    process, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "store")
    stop = threading.Event()
    sent = [0]

    def produce():
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        factory = ClickFactory(seed=3)
        topic = topic_prefix + config.Topics.CLICKS
        while not stop.is_set():
            for _ in range(CLICKS_PER_S // 10):
                producer.send(topic, encode(factory.click(now_ms())))
                sent[0] += 1
            time.sleep(0.1)
        producer.flush()
        producer.close()

    admin = {"Authorization": f"Bearer {api.key}"}
    keys = []
    for n in range(STATEMENTS // 2):
        response = requests.post(f"{api.base}/v1/admin/keys", headers=admin, timeout=10,
                                 json={"name": f"slow-{n}", "role": "admin"})
        assert response.status_code == 201, response.text
        keys.append(response.json()["key"])
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        wait_for(lambda: raw_rows(api.base) > 0, 90, "the first raw clicks loaded", [process])
        results = []

        def send(key):
            started = time.monotonic()
            response = requests.post(f"{api.base}/v1/sql", json={"query": SLOW}, timeout=60,
                                     headers={"Authorization": f"Bearer {key}"})
            results.append((response.status_code, round(time.monotonic() - started, 2)))

        before = raw_rows(api.base)
        began = time.monotonic()
        statements = [threading.Thread(target=send, args=(key,)) for key in keys * 2]
        for thread in statements:
            thread.start()
        health = []
        while any(thread.is_alive() for thread in statements) or time.monotonic() - began < 8:
            started = time.monotonic()
            assert requests.get(f"{api.base}/healthz", timeout=10).status_code == 200
            health.append(time.monotonic() - started)
            time.sleep(0.25)
        loaded = raw_rows(api.base) - before
        elapsed = time.monotonic() - began
        lag = requests.get(f"{api.base}/v1/status", headers=admin, timeout=10).json()[
            "loader"]["lag"]
    finally:
        stop.set()
        producer.join(timeout=30)
        process.stop()
    print(f"statements (status, seconds): {sorted(results)}; /healthz max"
          f" {max(health):.3f} s over {len(health)}; raw clicks loaded {loaded:.0f} in"
          f" {elapsed:.1f} s ({CLICKS_PER_S}/s sent); lag {lag}")
    statuses = sorted(status for status, _ in results)
    assert len(results) == STATEMENTS and set(statuses) <= {400, 429}, results
    assert statuses.count(400) >= 1, results  # ran, and the engine's time limit cut it
    assert all(seconds < 3 for status, seconds in results if status == 429), results
    assert max(health) < 2, health
    # The loader kept loading: most of what was sent meanwhile is in, and little is waiting.
    assert loaded >= 0.5 * CLICKS_PER_S * elapsed, (loaded, elapsed)
    assert lag[topic_prefix + config.Topics.CLICKS] is not None
    assert lag[topic_prefix + config.Topics.CLICKS] < 5 * CLICKS_PER_S, lag
