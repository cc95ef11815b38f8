"""Live click traffic and its truth, for fault tests: real-time event times, resent on errors.

A send that fails (broker down) is retried with the same bytes, so the stream itself carries
duplicates; the truth holds each click once. Every click also goes out a second time with
probability `duplicates`, as producers that retry do, and resend() sends earlier clicks again
(as a producer recovering from an outage does), which must not count twice either.

With `funnel` (the impressions' and the conversions' topics), each click comes with
IMPRESSIONS_PER_CLICK impressions of its ad and, for CONVERSION_RATE of the clicks, a
conversion a few seconds after it (sent before its click half of the time), under the same
duplicates, retries and resends; the truth then also holds the impressions and the attributed
conversions.
"""

import collections
import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError

from adclick import config
from adclick.testing.processes import wait_for


IMPRESSIONS_PER_CLICK = 3
CONVERSION_RATE = 0.2


class LiveTraffic(threading.Thread):
    """Clicks of the current minute at `rate` per second until `stopping` is set; `truth`
    counts each unique click once. (adclick.generator.Traffic is the generator's stream.)
    funnel: (impressions topic, conversions topic) to send those too."""

    def __init__(self, bootstrap, topic, rate=200, duplicates=0.03, jitter_ms=800, seed=1,
                 ads=50, funnel=None):
        super().__init__(name="traffic", daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.duplicates, self.jitter_ms = duplicates, jitter_ms
        self.funnel = funnel
        self.rng = random.Random(seed)
        self.ads = [f"ad-{i:03d}" for i in range(ads)]
        self.truth = collections.Counter()  # (minute_ms, ad, country, device) -> clicks
        # The same for impressions, and for attributed conversions (their minute, their
        # click's ad and attributes).
        self.impressions = collections.Counter()
        self.conversions = collections.Counter()
        self.sent_records = 0
        self.send_errors = 0
        self.stopping = threading.Event()
        self.serial = 0
        self.sent_payloads = []  # every unique record (topic, bytes), for resend()
        self.resent = 0
        self.made = threading.Lock()  # the serial, the random draws and the truths are shared

    def click(self, user_agent=None):
        """A new click of now; a person of its own (user and private address), so that the
        invalid-traffic rules find nothing to say of it unless user_agent is a crawler's."""
        self.serial += 1
        ts = int(time.time() * 1000) - self.rng.randrange(self.jitter_ms)
        serial = self.serial
        click = {"click_id": f"c{serial}", "click_ts": ts,
                 "ad_id": self.ads[min(int(self.rng.paretovariate(1.1)) - 1, len(self.ads) - 1)],
                 "user_id": f"u{serial}",
                 "ip": f"10.{(serial >> 16) & 255}.{(serial >> 8) & 255}.{serial & 255}",
                 "country": self.rng.choice(["KR", "US", "JP", "DE"]),
                 "device": self.rng.choice(["mobile", "desktop", "tablet", "other"])}
        if user_agent is not None:
            click["user_agent"] = user_agent
        return click

    def deliver(self, producer, records):
        """Send until every (topic, payload) is acknowledged (retrying through outages)."""
        pending = list(records)
        while pending:
            futures = [(record, producer.send(*record)) for record in pending]
            pending = []
            for record, future in futures:
                try:
                    future.get(timeout=30)
                    self.sent_records += 1
                except KafkaError:
                    self.send_errors += 1
                    pending.append(record)
            if pending:
                time.sleep(1)

    def funnel_of(self, click):
        """The records that go with click: its impressions, and maybe its conversion (first
        when it is sent ahead of the click), counted in the truth."""
        impressions_topic, conversions_topic = self.funnel
        key = (click["ad_id"], click["country"], click["device"])
        records = []
        for i in range(IMPRESSIONS_PER_CLICK):
            ts = click["click_ts"] - self.rng.randrange(5000)
            impression = {"impression_id": f"{click['click_id']}-i{i}", "ad_id": click["ad_id"],
                          "impression_ts": ts, "user_id": click["user_id"], "ip": click["ip"],
                          "country": click["country"], "device": click["device"]}
            records.append((impressions_topic, json.dumps(impression).encode()))
            self.impressions[(ts - ts % config.WINDOW_MS, *key)] += 1
        if self.rng.random() < CONVERSION_RATE:
            ts = click["click_ts"] + self.rng.randrange(10_000)
            conversion = {"conversion_id": f"{click['click_id']}-v", "type": "signup",
                          "click_id": click["click_id"], "conversion_ts": ts}
            record = (conversions_topic, json.dumps(conversion).encode())
            records.insert(0, record) if self.rng.random() < 0.5 else records.append(record)
            self.conversions[(ts - ts % config.WINDOW_MS, *key)] += 1
        return records

    def run(self):
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=10,
                                 retries=5, max_block_ms=30000, request_timeout_ms=10000)
        tick = 0.1
        while not self.stopping.is_set():
            started = time.time()
            batch = []
            with self.made:
                for _ in range(max(1, int(self.rate * tick))):
                    batch += self.counted(self.click())
            self.deliver(producer, batch)
            self.stopping.wait(max(0.0, tick - (time.time() - started)))
        producer.close()

    def counted(self, click):
        """click's records (its funnel's too, and some sent twice), counted in the truth."""
        records = [(self.topic, json.dumps(click).encode())]
        if self.funnel:
            records = self.funnel_of(click) + records
        batch = []
        for record in records:
            batch.append(record)
            self.sent_payloads.append(record)
            if self.rng.random() < self.duplicates:
                batch.append(record)
        minute = click["click_ts"] - click["click_ts"] % config.WINDOW_MS
        self.truth[(minute, click["ad_id"], click["country"], click["device"])] += 1
        return batch

    def send_dated(self, count, ts):
        """count new clicks (and their funnels) dated ts, epoch ms, counted in the truth: a
        delivery as late as ts is old."""
        with self.made:
            batch = [record for _ in range(count)
                     for record in self.counted(dict(self.click(), click_ts=ts))]
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            self.deliver(producer, batch)
        finally:
            producer.close()

    def resend(self, count, newest=None):
        """Send `count` records sent earlier again, picked at random (not counted again) among
        all, or among the `newest` records sent."""
        earlier = list(self.sent_payloads)  # the sending thread goes on appending
        if newest is not None:
            earlier = earlier[-newest:]
        payloads = random.Random(count).sample(earlier, min(count, len(earlier)))
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            self.deliver(producer, payloads)
        finally:
            producer.close()
        self.resent += len(payloads)

    def close_windows(self, partitions=config.PARTITIONS):
        """Clicks 3 minutes ahead on every partition, so the watermark closes every minute sent."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        ts = int(time.time() * 1000) + 3 * config.WINDOW_MS
        for partition in range(partitions):
            click = dict(self.click(), click_ts=ts, click_id=f"closer-{partition}")
            producer.send(self.topic, json.dumps(click).encode(), partition=partition).get(30)
            self.truth[(ts - ts % config.WINDOW_MS, click["ad_id"], click["country"],
                        click["device"])] += 1
        producer.close()
        return ts - ts % config.WINDOW_MS

    @property
    def unique(self):
        return sum(self.truth.values())


class FirstFreshAnswer(threading.Thread):
    """Seconds from `since` (a restart, time.time()) until API 2 answers a complete minute that
    ended after it: how long users wait for new numbers after a restart."""

    def __init__(self, api, since, timeout=300):
        super().__init__(name="fresh-answer", daemon=True)
        self.api, self.since, self.timeout = api, since, timeout
        self.seconds = None
        self.start()

    def run(self):
        while self.seconds is None and time.time() < self.since + self.timeout:
            try:
                status, body = self.api.get("/v1/ads/popular_ads", count=1, minutes=1)
            except OSError:  # the server may be restarting too
                status, body = None, {}
            if status == 200 and body.get("to"):
                ended = datetime.fromisoformat(body["to"].replace("Z", "+00:00")).timestamp()
                if ended > self.since:
                    self.seconds = time.time() - self.since
            time.sleep(1)

    def result(self, wait_s=10):
        """The seconds, once seen: waits a little, as the answer the comparison just saw may
        not have been polled here yet."""
        self.join(wait_s)
        return self.seconds


@dataclass
class Outcome:
    """Stored counts against the truth, per (minute, ad, country, device): of clicks, and with a
    funnel of impressions and attributed conversions too (`streams`: each one's numbers)."""

    sent: int
    unique: int
    counted: int
    lost: int
    doubled: int
    streams: str = ""

    @property
    def matches(self):
        """Every key's count equals the truth (a key missing on one side counts as 0)."""
        return self.lost == 0 and self.doubled == 0

    def line(self, fault, fresh=None):
        seconds = None if fresh is None else fresh.result()
        after = "" if fresh is None else (
            f", first fresh answer {seconds:.0f} s after the restart"
            if seconds is not None else ", no fresh answer seen")
        return (f"{fault}: records sent {self.sent}, unique {self.unique}, counted "
                f"{self.counted}, lost {self.lost}, doubled {self.doubled}{after}"
                + (f" ({self.streams})" if self.streams else ""))


def settle_and_compare(traffic, api, processes=(), timeout=300):
    """Stop the traffic, let every minute it sent close and land, and compare with the truth.

    Call after traffic.stopping is set and the thread joined. The job's clock keeps the
    watermark at the wall clock, so this takes about a minute and a half.
    """
    last_minute = traffic.close_windows()

    def closed():
        # minutes_closed, not top_ads_minute: a minute without a valid click has no top list.
        rows = api.sql("SELECT toUnixTimestamp(max(minute)) * 1000 FROM minutes_closed")
        return rows[0][0] >= last_minute - 3 * config.WINDOW_MS

    wait_for(closed, timeout, "every minute sent to close", processes)
    minutes = {key[0] for key in traffic.truth if key[0] < last_minute}
    streams = {"clicks": (traffic.truth, """
        SELECT toUnixTimestamp(minute) * 1000, ad_id, country, device, sum(clicks)
        FROM ad_click_counts FINAL GROUP BY minute, ad_id, country, device""")}
    if traffic.funnel:
        streams["impressions"] = (traffic.impressions, """
            SELECT toUnixTimestamp(minute) * 1000, ad_id, country, device, sum(impressions)
            FROM ad_click_counts FINAL GROUP BY minute, ad_id, country, device""")
        streams["conversions"] = (traffic.conversions, """
            SELECT toUnixTimestamp(minute) * 1000, ad_id, country, device, count()
            FROM conversion_attributions FINAL WHERE outcome = 'attributed'
            GROUP BY minute, ad_id, country, device""")
    expected = {name: {key: n for key, n in truth.items() if key[0] in minutes}
                for name, (truth, _sql) in streams.items()}

    def stored(name):
        return {(m, a, c, d): n for m, a, c, d, n in api.sql(streams[name][1])
                if m in minutes and n}

    def landed():
        return all(sum(stored(name).values()) >= sum(expected[name].values())
                   for name in streams)

    # Loading trails the commit by a poll; give the last minutes a moment to land.
    try:
        wait_for(landed, 60, "all counts to land", processes)
    except AssertionError:
        pass  # compared below, with the numbers
    totals = collections.Counter()
    lines = []
    for name in streams:
        counted = stored(name)
        lost = sum(max(0, n - counted.get(k, 0)) for k, n in expected[name].items())
        doubled = sum(max(0, n - expected[name].get(k, 0)) for k, n in counted.items())
        unique = sum(expected[name].values())
        totals.update(unique=unique, counted=sum(counted.values()), lost=lost, doubled=doubled)
        lines.append(f"{name}: unique {unique}, counted {sum(counted.values())}, lost {lost},"
                     f" doubled {doubled}")
    return Outcome(sent=traffic.sent_records, unique=totals["unique"], counted=totals["counted"],
                   lost=totals["lost"], doubled=totals["doubled"],
                   streams="; ".join(lines) if traffic.funnel else "")
