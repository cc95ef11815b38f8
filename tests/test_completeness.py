"""A minute completes when the watermark passes it, clicks or no clicks: after the traffic
stops, the minutes that follow (none of them with a click) still become complete, and the
API's freshness keeps following the clock. Completeness was inferred from the top-N rows,
which only a minute with clicks has: the newest complete minute stopped at the last click."""

import time
from datetime import datetime
from datetime import timezone

import pytest

from adclick import config
from adclick.testing.processes import start_job
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for
from adclick.testing.traffic import LiveTraffic

pytestmark = pytest.mark.integration


def minute_ms(iso):
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
               .timestamp() * 1000)


def test_minutes_without_clicks_complete_and_freshness_follows_the_clock(
        tmp_path, kafka_bootstrap, topic_prefix):
    job = start_job(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "checkpoints",
                    fast=True)
    server = None
    topics = config.Topics.with_prefix(topic_prefix)
    traffic = LiveTraffic(kafka_bootstrap, topics["clicks"], rate=50, seed=21)
    try:
        server, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "store")
        wait_for(lambda: "adclick: running" in job.tail(200), 180, "the job to run", [job])
        traffic.start()
        time.sleep(10)
        traffic.stopping.set()
        traffic.join(60)
        last_click_minute = max(key[0] for key in traffic.truth)
        silent = last_click_minute + config.WINDOW_MS  # the minute after: no clicks

        def status():
            code, body = api.get("/v1/status")
            assert code == 200, body
            return body

        body = wait_for(lambda: (lambda s: s if s["newest_complete_minute"] and minute_ms(
            s["newest_complete_minute"]) >= silent else None)(status()), 240,
            "a minute without clicks to complete", [job, server])
        assert body["freshness_s"] < 60, body
        # The newest complete minute is after the last click: answered, with 0.
        code, minutes = api.get("/v1/ads/per_minute", minutes=1)
        assert code == 200 and [m["clicks"] for m in minutes["minutes"]] == [0], minutes
        assert minute_ms(minutes["minutes"][0]["minute"]) >= silent
    finally:
        traffic.stopping.set()
        job.stop()
        if server is not None:
            server.stop()
