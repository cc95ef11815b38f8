"""The dashboard and /metrics on a running stack: the real broker, Flink job and server.

A burst of clicks of the current minute goes in while /metrics is scraped (and parsed with the
Prometheus client's own parser): the loader's lag rises and drains, the rows it stored add up,
and once the minute is complete its freshness appears and then grows while no traffic comes.
Then a real headless Chromium opens the dashboard as `make demo` prints it: the top-ads table
must equal API 2's answer, the chart must have the range's minutes with per_minute's counts
(of all ads and of the chosen one), the health strip must show the job's checkpoint, and a
device filter must change both table and chart to the filtered answers.
"""

import json
import os
import threading
import time
import uuid
from datetime import datetime
from datetime import timezone

import pytest
from kafka import KafkaProducer

from adclick import config
from adclick.testing import browser
from adclick.testing.processes import free_port
from adclick.testing.processes import start_job
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for
from adclick.testing.traffic import LiveTraffic
from adclick.topics import create_topics

pytestmark = pytest.mark.integration
BURST = 40_000
MALFORMED = 25  # records among the burst that are not clicks: dead letters
PAGE_MINUTES = "15"  # the page's default range
BOT_AGENT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, kafka_bootstrap):
    """Job (its REST API on a known port) and server (told that port), on fresh topics."""
    tmp = tmp_path_factory.mktemp("dashboard")
    prefix = f"d{uuid.uuid4().hex[:10]}-"
    create_topics(kafka_bootstrap, prefix=prefix)
    rest_port = free_port()
    job = start_job(tmp, kafka_bootstrap, prefix, tmp / "checkpoints", "--rest-port",
                    str(rest_port))
    server = None
    try:
        server, api = start_server(tmp, kafka_bootstrap, prefix, tmp / "store",
                                   flink_rest_url=f"http://127.0.0.1:{rest_port}")
        yield api, prefix, (job, server)
    finally:
        for process in (server, job):
            if process is not None:
                process.stop()


def iso_minute(ms):
    """The start of the minute of epoch ms ms, as the API writes it."""
    return datetime.fromtimestamp(ms // 60_000 * 60, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def clicks_lag(samples, topic):
    return samples.get(("adclick_loader_lag_records", (("topic", topic),)))


FRESHNESS = ("adclick_newest_complete_minute_age_seconds", ())
RAW_ROWS = ("adclick_loader_rows_total", (("table", "raw_clicks"),))
DEAD_ROWS = ("adclick_loader_rows_total", (("table", "dead_letters"),))


@pytest.fixture(scope="module")
def burst(stack, kafka_bootstrap):
    """Send BURST clicks of the current minute at once, scraping /metrics all along; returns
    the scrapes before, during and after (until the minute is complete and a while later)."""
    api, prefix, processes = stack
    topic = config.Topics.with_prefix(prefix)["clicks"]
    wait_for(lambda: clicks_lag(api.metrics(), topic) is not None, 90,
             "the loader to be assigned the clicks topic", processes)
    before = api.metrics()
    during = []
    sending = threading.Event()
    sending.set()

    def watch():
        while sending.is_set():
            during.append(api.metrics())
            time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    traffic = LiveTraffic(kafka_bootstrap, topic, duplicates=0)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20,
                             batch_size=256 * 1024)
    # All in one minute (the page and the API are then compared on data that no longer
    # changes): a burst takes a few seconds, so it does not start late in a minute.
    # (LiveTraffic's clicks are up to 0.8 s older than the moment they are sent.)
    while not 2 < time.time() % 60 < 40:
        time.sleep(0.5)
    for serial in range(MALFORMED):
        producer.send(topic, f"not a click {serial}".encode())
    newest_ts = 0
    for serial in range(BURST):
        # One in 40 from a crawler: invalid traffic the page shows apart.
        click = traffic.click(user_agent=BOT_AGENT if serial % 40 == 0 else None)
        newest_ts = max(newest_ts, click["click_ts"])
        producer.send(topic, json.dumps(click).encode())
    producer.flush()
    producer.close()
    def stored():
        samples = api.metrics()
        # The raw table's count is of records handed to its rules, the malformed included.
        return (samples.get(RAW_ROWS) == BURST + MALFORMED
                and samples.get(DEAD_ROWS) == MALFORMED
                and clicks_lag(samples, topic) == 0)
    wait_for(stored, 120, "the loader to store the burst", processes)
    burst_minute = iso_minute(newest_ts)

    def burst_complete():
        _, status = api.get("/v1/status")
        return status["newest_complete_minute"] == burst_minute and api.metrics()
    complete = wait_for(burst_complete, 150, f"the burst's minute {burst_minute} to be complete",
                        processes)
    sending.clear()
    watcher.join()
    time.sleep(3)
    later = api.metrics()
    return {"topic": topic, "before": before, "during": during, "complete": complete,
            "later": later}


def test_metrics_follow_the_traffic(burst):
    topic = burst["topic"]
    assert FRESHNESS not in burst["before"]  # no complete minute before the traffic
    assert burst["before"].get(RAW_ROWS, 0) == 0
    lags = [clicks_lag(samples, topic) for samples in burst["during"]]
    assert max(lag for lag in lags if lag is not None) > 0  # the burst piled up ...
    assert lags[-1] == 0  # ... and drained
    assert burst["later"][RAW_ROWS] == BURST + MALFORMED
    assert burst["later"][("adclick_store_up", ())] == 1
    # No traffic since: the newest complete minute stays and its age grows with the clock.
    grew = burst["later"][FRESHNESS] - burst["complete"][FRESHNESS]
    assert grew >= 2.5, (burst["complete"][FRESHNESS], burst["later"][FRESHNESS])


def test_dashboard_in_chromium(stack, burst, tmp_path):
    missing = browser.available()
    if missing:
        pytest.fail(f"no browser to test the page with: {missing} (`make test` installs it)")
    api, _, _ = stack
    driver = browser.chromium()
    try:
        page = browser.Dashboard(driver, api.base, api.key)
        shown = page.wait_for_refresh(
            filters={"minutes": PAGE_MINUTES, "country": "", "device": "", "traffic": "valid"})
        assert page.error() == ""
        assert "#" not in driver.current_url  # the key left the address bar
        unfiltered = check_page_equals_the_api(page, api)
        assert "s (minute" in page.text("freshness")
        assert burst["topic"] in page.text("lag")
        assert page.text("checkpoint").startswith("#")  # the job's last completed checkpoint
        _, status = api.get("/v1/status")
        assert page.late_minutes() == [
            (m["minute"][11:16], m["late_corrections"], m["too_late"], m["dead_letters"])
            for m in reversed(status["minutes"])]
        assert sum(m["dead_letters"] for m in status["minutes"]) == MALFORMED, (
            status["minutes"], api.sql("SELECT toString(min(received_at)),"
                                       " toString(max(received_at)), count() FROM dead_letters"))
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(screenshot)
        if os.environ.get("ADCLICK_DASHBOARD_SCREENSHOT"):
            page.screenshot(os.environ["ADCLICK_DASHBOARD_SCREENSHOT"])
        assert screenshot.stat().st_size > 10_000

        page.choose("device", "mobile")
        shown = page.wait_for_refresh(after=shown, filters={
            "minutes": PAGE_MINUTES, "country": "", "device": "mobile", "traffic": "valid"})
        filtered = check_page_equals_the_api(page, api, device="mobile")
        assert filtered["top"] != unfiltered["top"]
        assert sum(c for _, c in filtered["all"]) < sum(c for _, c in unfiltered["all"])

        page.choose("traffic", "invalid")
        page.wait_for_refresh(after=shown, filters={
            "minutes": PAGE_MINUTES, "country": "", "device": "mobile", "traffic": "invalid"})
        invalid = check_page_equals_the_api(page, api, device="mobile", traffic="invalid")
        assert 0 < sum(c for _, c in invalid["all"]) < sum(c for _, c in filtered["all"])
    finally:
        driver.quit()


def check_page_equals_the_api(page, api, **filters):
    """The page's table and chart against API 2 and per_minute with the same filters."""
    query = {"minutes": PAGE_MINUTES, **filters}
    status, top = api.get("/v1/ads/popular_ads", count=20, **query)
    assert status == 200
    expected_top = [(ad["ad_id"], ad["count"]) for ad in top["ads"]]
    assert expected_top and page.top_ads() == expected_top
    status, per_minute = api.get("/v1/ads/per_minute", **query)
    expected_all = [(m["minute"], m["clicks"]) for m in per_minute["minutes"]]
    assert len(expected_all) == int(PAGE_MINUTES) and sum(c for _, c in expected_all) > 0
    assert page.chart("rect.all") == expected_all
    chosen = page.text("chosen-ad")
    assert chosen == expected_top[0][0]  # the page charts the leading ad until one is clicked
    _, one = api.get("/v1/ads/per_minute", ad_id=chosen, **query)
    assert page.chart("circle.ad") == [(m["minute"], m["clicks"]) for m in one["minutes"]]
    # The chosen ad's funnel, and its invalid clicks whatever traffic is chosen.
    _, metrics = api.get(f"/v1/ads/{chosen}/metrics", **query)
    assert page.text("metrics-ad") == chosen
    assert [page.text(f"m-{name}") for name in ("impressions", "clicks", "conversions")] == \
        [f"{metrics[name]:,}" for name in ("impressions", "clicks", "conversions")]
    assert page.text("m-invalid").startswith(f"{metrics['invalid_clicks']:,} (")
    assert metrics["invalid_clicks_by_reason"]["bot_user_agent"] > 0  # one click in 40
    assert f"bot_user_agent {metrics['invalid_clicks_by_reason']['bot_user_agent']}" in \
        page.text("m-reasons")
    return {"top": expected_top, "all": expected_all}
