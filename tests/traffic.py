"""Live click traffic for failure tests: real-time event times, resent on send errors.

A send that fails (broker down) is retried with the same bytes, so the stream itself carries
duplicates; the truth holds each click once. Every click also goes out a second time with
probability `duplicates`, as producers that retry do.
"""

import collections
import json
import random
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

MINUTE_MS = 60_000


class Traffic(threading.Thread):
    def __init__(self, bootstrap, topic, rate=200, duplicates=0.03, jitter_ms=800, seed=1,
                 ads=50):
        super().__init__(name="traffic", daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.duplicates, self.jitter_ms = duplicates, jitter_ms
        self.rng = random.Random(seed)
        self.ads = [f"ad-{i:03d}" for i in range(ads)]
        self.truth = collections.Counter()  # (minute_ms, ad, country, device) -> clicks
        self.sent_records = 0
        self.send_errors = 0
        self.stopping = threading.Event()
        self.serial = 0

    def click(self):
        self.serial += 1
        ts = int(time.time() * 1000) - self.rng.randrange(self.jitter_ms)
        return {"click_id": f"c{self.serial}", "click_ts": ts,
                "ad_id": self.ads[min(int(self.rng.paretovariate(1.1)) - 1, len(self.ads) - 1)],
                "user_id": f"u{self.rng.randrange(1000)}", "ip": "192.0.2.1",
                "country": self.rng.choice(["KR", "US", "JP", "DE"]),
                "device": self.rng.choice(["mobile", "desktop", "tablet", "other"])}

    def deliver(self, producer, payloads):
        """Send until every payload is acknowledged (retrying through broker outages)."""
        pending = list(payloads)
        while pending:
            futures = [(p, producer.send(self.topic, p)) for p in pending]
            pending = []
            for payload, future in futures:
                try:
                    future.get(timeout=30)
                    self.sent_records += 1
                except KafkaError:
                    self.send_errors += 1
                    pending.append(payload)
            if pending:
                time.sleep(1)

    def run(self):
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=10,
                                 retries=5, max_block_ms=30000, request_timeout_ms=10000)
        tick = 0.1
        while not self.stopping.is_set():
            started = time.time()
            batch = []
            for _ in range(max(1, int(self.rate * tick))):
                click = self.click()
                payload = json.dumps(click).encode()
                batch.append(payload)
                if self.rng.random() < self.duplicates:
                    batch.append(payload)
                minute = click["click_ts"] - click["click_ts"] % MINUTE_MS
                self.truth[(minute, click["ad_id"], click["country"], click["device"])] += 1
            self.deliver(producer, batch)
            self.stopping.wait(max(0.0, tick - (time.time() - started)))
        producer.close()

    def close_windows(self, partitions=4):
        """Clicks 3 minutes ahead on every partition, so the watermark closes every minute sent."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        ts = int(time.time() * 1000) + 3 * MINUTE_MS
        for partition in range(partitions):
            click = dict(self.click(), click_ts=ts, click_id=f"closer-{partition}")
            producer.send(self.topic, json.dumps(click).encode(), partition=partition).get(30)
            self.truth[(ts - ts % MINUTE_MS, click["ad_id"], click["country"],
                        click["device"])] += 1
        producer.close()
        return ts - ts % MINUTE_MS

    @property
    def unique(self):
        return sum(self.truth.values())
