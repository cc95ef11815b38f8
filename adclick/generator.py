"""Produce realistic ad clicks to Kafka, with optional duplicates, disorder and garbage.

The job, the loader and the benchmarks need traffic that looks like production (a few ads get
most clicks, most clicks come from phones) and that breaks the same ways production does
(resent events, late events, malformed payloads), plus the ground truth of what was sent so a
test can check the job's counts exactly. Event generation is pure and seeded (ClickFactory,
make_malformed, Traffic), so tests build the same event sets without Kafka.

    python -m adclick.generator --rate 500 --duplicates 0.02 --malformed 0.01 --truth t.jsonl
"""

import argparse
import bisect
import collections
import heapq
import itertools
import json
import random
import re
import signal
import sys
import time
import uuid
from typing import NamedTuple

from adclick import config
from adclick.contract import Click
from adclick.contract import encode

# Shares of clicks by country (ISO 3166 alpha-2) and by device: skewed, like real traffic.
COUNTRY_WEIGHTS = {
    "US": 28, "IN": 10, "GB": 7, "DE": 7, "JP": 7, "KR": 6, "BR": 6, "FR": 5,
    "CA": 5, "MX": 4, "AU": 3, "ES": 3, "IT": 3, "ID": 3, "NL": 2, "SE": 1,
}
DEVICE_WEIGHTS = {"mobile": 60, "desktop": 30, "tablet": 8, "other": 2}
# At most WINDOW_STEP * WINDOW_STEPS sent messages wait for their acknowledgement (see run).
WINDOW_STEP = 10_000
WINDOW_STEPS = 20

# Kind of malformed payload -> the reason the contract (and the job) rejects it with.
# missing_field and wrong_type hit a random field, so their reason is bad_<that field>.
MALFORMED_KINDS = (
    "not_json", "missing_field", "wrong_type", "far_future", "before_2000", "oversized",
    "unknown_device",
)
_FIELDS = Click._fields
_FIXED_REASONS = {
    "not_json": "not_json_object",
    "far_future": "click_ts_in_future",
    "before_2000": "click_ts_too_old",
    "oversized": "oversized",
    "unknown_device": "bad_device",
}
# Not [value]: the job reads a one-element array like its element (see contract._field).
_WRONG_VALUES = {
    "click_ts": lambda ts: [str(ts), ts + 0.5, True, None, [ts, ts]],
    "other": lambda value: [12345, None, True, [value, value], {"v": value}],
}


def _cumulative(weights):
    return list(itertools.accumulate(weights))


def _pick(rng, values, cum):
    # min(): a float product may round up to the total itself
    return values[min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(values) - 1)]


def now_ms():
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class ClickFactory:
    """Seeded source of valid clicks: Zipf ad popularity, weighted countries and devices.

    Ad of rank k (ad-000001 is rank 1) gets clicks in proportion to 1/k**zipf_s; with skew > 0
    that fraction of all clicks goes to the rank-1 ad on top (a hot key, for benchmarks).
    click_id is "<run_id>-<counter>": unique within a run, and across runs as long as run_id
    differs. run_id defaults to one drawn from the seed (reproducible) or a random one.
    """

    def __init__(self, seed=None, ads=10_000, zipf_s=1.1, skew=0.0, users=1_000_000,
                 run_id=None):
        if ads < 1 or users < 1:
            raise ValueError("ads and users must be at least 1")
        if not 0.0 <= skew <= 1.0:
            raise ValueError("skew must be within [0, 1]")
        self.rng = random.Random(seed)
        if run_id is None:
            run_id = f"{self.rng.getrandbits(32):08x}" if seed is not None else uuid.uuid4().hex[:8]
        self.run_id = run_id
        width = max(6, len(str(ads)))
        self.ad_ids = [f"ad-{rank:0{width}d}" for rank in range(1, ads + 1)]
        self.hot_ad = self.ad_ids[0]
        self._ad_cum = _cumulative(1.0 / rank ** zipf_s for rank in range(1, ads + 1))
        self._countries = list(COUNTRY_WEIGHTS)
        self._country_cum = _cumulative(COUNTRY_WEIGHTS.values())
        self._devices = list(DEVICE_WEIGHTS)
        self._device_cum = _cumulative(DEVICE_WEIGHTS.values())
        self.skew = skew
        self.users = users
        self._counter = itertools.count(1)

    def ad(self):
        if self.skew and self.rng.random() < self.skew:
            return self.hot_ad
        return _pick(self.rng, self.ad_ids, self._ad_cum)

    def click(self, click_ts):
        """A new valid click with a fresh click_id at click_ts (epoch ms)."""
        rng = self.rng
        ip = rng.getrandbits(32)
        return Click(
            click_id=f"{self.run_id}-{next(self._counter)}",
            ad_id=self.ad(),
            click_ts=int(click_ts),
            user_id=f"u-{rng.randrange(self.users)}",
            ip=f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}",
            country=_pick(rng, self._countries, self._country_cum),
            device=_pick(rng, self._devices, self._device_cum),
        )


class Malformed(NamedTuple):
    """A bad payload and the reason code the contract must reject it with."""

    kind: str
    reason: str
    payload: bytes


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def make_malformed(rng, kind, base, now=None):
    """A payload of the given kind (one of MALFORMED_KINDS) derived from the valid click base.

    now is the validating job's clock in ms (default: the wall clock), for far_future.
    """
    now = now_ms() if now is None else now
    fields = base._asdict()
    if kind == "not_json":
        text = encode(base)
        payload = rng.choice([text[: len(text) // 2], b"click!", b"", b"[1,2]", b'"click"'])
    elif kind in ("missing_field", "wrong_type"):
        field = rng.choice(_FIELDS)
        if kind == "missing_field":
            del fields[field]
        else:
            wrong = _WRONG_VALUES["click_ts" if field == "click_ts" else "other"]
            fields[field] = rng.choice(wrong(fields[field]))
        return Malformed(kind, f"bad_{field}", _dumps(fields))
    elif kind == "far_future":
        fields["click_ts"] = now + config.MAX_FUTURE_SECONDS * 1000 + rng.randint(1, 10**10)
        payload = _dumps(fields)
    elif kind == "before_2000":
        fields["click_ts"] = rng.randrange(0, config.MIN_CLICK_TS_MS)
        payload = _dumps(fields)
    elif kind == "oversized":
        fields["note"] = "x" * (config.MAX_PAYLOAD_BYTES + rng.randint(1, 1000))
        payload = _dumps(fields)
    elif kind == "unknown_device":
        fields["device"] = rng.choice(["smart-tv", "Mobile", "console", ""])
        payload = _dumps(fields)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return Malformed(kind, _FIXED_REASONS[kind], payload)


class Message(NamedTuple):
    """One message to produce: kind is unique, duplicate or malformed."""

    kind: str
    payload: bytes
    click: Click = None
    malformed: Malformed = None


class Traffic:
    """The message stream: new clicks, resent duplicates and malformed payloads, mixed.

    Each unique click is resent, byte for byte, with probability `duplicates`: half of those
    right after it, the others once the send clock passes a random delay up to duplicate_delay_ms.
    A new event is malformed with probability `malformed`. click_ts is the event clock minus a
    random jitter up to out_of_order_ms, so events reach Kafka out of event-time order.
    """

    def __init__(self, factory, duplicates=0.0, duplicate_delay_ms=30_000, malformed=0.0,
                 out_of_order_ms=0, malformed_kinds=MALFORMED_KINDS):
        for name, value in (("duplicates", duplicates), ("malformed", malformed)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if duplicate_delay_ms < 0 or out_of_order_ms < 0:
            raise ValueError("delays must not be negative")
        self.factory = factory
        # A stream of its own, so the decisions do not shift when other settings change.
        self.rng = random.Random(factory.rng.getrandbits(64))
        self.duplicates = duplicates
        self.duplicate_delay_ms = int(duplicate_delay_ms)
        self.malformed = malformed
        self.out_of_order_ms = int(out_of_order_ms)
        self.malformed_kinds = tuple(malformed_kinds)
        self._pending = []
        self._seq = itertools.count()

    @property
    def pending(self):
        return len(self._pending)

    def next(self, send_ms, event_ms):
        """The message to send at send_ms (wall clock) with the event clock at event_ms."""
        rng = self.rng
        if self._pending and self._pending[0][0] <= send_ms:
            _, _, payload, click = heapq.heappop(self._pending)
            return Message("duplicate", payload, click)
        if self.malformed and rng.random() < self.malformed:
            kind = rng.choice(self.malformed_kinds)
            bad = make_malformed(rng, kind, self.factory.click(event_ms), now=send_ms)
            return Message("malformed", bad.payload, malformed=bad)
        if self.out_of_order_ms:
            event_ms -= rng.randint(0, self.out_of_order_ms)
        click = self.factory.click(event_ms)
        payload = encode(click)
        if self.duplicates and rng.random() < self.duplicates:
            delay = 0 if rng.random() < 0.5 else rng.randint(1, max(1, self.duplicate_delay_ms))
            heapq.heappush(self._pending, (send_ms + delay, next(self._seq), payload, click))
        return Message("unique", payload, click)

    def drain(self):
        """Every duplicate still waiting, in due order (sent at the end of a run)."""
        pending, self._pending = self._pending, []
        return [Message("duplicate", p, c) for _, _, p, c in sorted(pending)]


class Pacer:
    """Token bucket: at most `rate` messages a second, with bursts of at most burst_s of them.

    Tokens beyond one burst are dropped, so a producer that fell behind does not catch up in a
    flood. rate <= 0 means no limit.
    """

    def __init__(self, rate, burst_s=0.25, clock=time.monotonic):
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate * burst_s)
        self.clock = clock
        self.tokens = 0.0
        self.last = clock()

    def take(self, want):
        """How many of want messages may go now (possibly 0)."""
        if self.rate <= 0:
            return want
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait_s(self):
        """Seconds until the next token."""
        return max(0.0, (1.0 - self.tokens) / self.rate) if self.rate > 0 else 0.0


class Tally:
    """Counts what was produced, and writes the ground truth of unique valid clicks."""

    def __init__(self, truth_path=None):
        self.counts = {"sent": 0, "unique": 0, "duplicates": 0, "malformed": 0}
        self.malformed_kinds = dict.fromkeys(MALFORMED_KINDS, 0)
        self.delivery_errors = 0
        self.min_click_ts = None
        self.max_click_ts = None
        self.truth_path = truth_path
        self._truth = open(truth_path, "w", encoding="utf-8") if truth_path else None

    def add(self, message):
        counts = self.counts
        counts["sent"] += 1
        if message.kind == "unique":
            counts["unique"] += 1
            click = message.click
            ts = click.click_ts
            if self.min_click_ts is None or ts < self.min_click_ts:
                self.min_click_ts = ts
            if self.max_click_ts is None or ts > self.max_click_ts:
                self.max_click_ts = ts
            if self._truth:
                # Factory values never need JSON escaping (the contract's patterns forbid it).
                self._truth.write(
                    f'{{"click_id":"{click.click_id}","ad_id":"{click.ad_id}",'
                    f'"click_ts":{ts},"country":"{click.country}","device":"{click.device}"}}\n'
                )
        elif message.kind == "duplicate":
            counts["duplicates"] += 1
        else:
            counts["malformed"] += 1
            self.malformed_kinds[message.malformed.kind] += 1

    def on_error(self, _exc):
        self.delivery_errors += 1

    def summary(self, **extra):
        result = dict(self.counts)
        result["malformed_by_kind"] = {k: v for k, v in self.malformed_kinds.items() if v}
        result["delivery_errors"] = self.delivery_errors
        result["min_click_ts"] = self.min_click_ts
        result["max_click_ts"] = self.max_click_ts
        result.update(extra)
        return result

    def close(self, summary):
        if self._truth:
            self._truth.close()
            with open(f"{self.truth_path}.summary.json", "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2, sort_keys=True)
                f.write("\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    p.add_argument("--topic", default=config.Topics.CLICKS)
    p.add_argument("--rate", type=float, default=200.0,
                   help="messages per second, duplicates and malformed included; 0: no limit")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to run (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--count", type=int, default=None,
                   help="new events to send (unique + malformed); their duplicates come on top")
    p.add_argument("--ads", type=int, default=10_000)
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of ad popularity")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--skew", type=float, default=0.0,
                   help="fraction of clicks that go to one hot ad, on top of Zipf")
    p.add_argument("--duplicates", type=float, default=0.0,
                   help="fraction of unique clicks resent byte for byte")
    p.add_argument("--duplicate-delay-s", type=float, default=30.0,
                   help="a resend comes immediately or after a random delay up to this")
    p.add_argument("--out-of-order-ms", type=int, default=0,
                   help="max random jitter subtracted from click_ts")
    p.add_argument("--malformed", type=float, default=0.0,
                   help="fraction of new events that are malformed, each of a random kind")
    p.add_argument("--start-ts-ms", type=int, default=None,
                   help="simulated event clock start (epoch ms; default: real time)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="simulated event clock speed; keep it in the job's accepted range")
    p.add_argument("--truth", default=None,
                   help="write unique valid clicks as JSON lines here, totals to PATH.summary.json")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--run-id", default=None,
                   help="click_id prefix (default: random even with --seed, so reruns with one "
                        "seed are not deduplicated against each other)")
    p.add_argument("--progress-s", type=float, default=2.0, help="progress interval on stderr")
    p.add_argument("--compression", default="lz4", choices=["none", "gzip", "lz4", "zstd"],
                   help="lz4 is about twice as fast as none with kafka-python")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256 * 1024)
    args = p.parse_args(argv)
    for name in ("duplicates", "malformed", "skew"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name} must be within [0, 1]")
    if args.speedup <= 0:
        p.error("--speedup must be positive")
    if args.count is not None and args.count < 0:
        p.error("--count must not be negative")
    if args.run_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,40}", args.run_id):
        p.error("--run-id must be 1-40 of A-Z a-z 0-9 _ . : - (it starts every click_id)")
    return args


def make_producer(args):
    from kafka import KafkaProducer  # here, so the pure parts import without a Kafka client

    return KafkaProducer(
        bootstrap_servers=args.bootstrap_servers,
        client_id="adclick-generator",
        acks="all",
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        compression_type=None if args.compression == "none" else args.compression,
        metrics_enabled=False,
    )


class _Stop:
    """Set by SIGINT/SIGTERM; a second signal kills the process the default way."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, _frame):
        self.signal = signal.Signals(signum).name
        signal.signal(signum, signal.SIG_DFL)


def _progress(elapsed, rate, tally, traffic):
    c = tally.counts
    print(f"[generator] {elapsed:7.1f}s rate={rate:8.0f}/s sent={c['sent']} "
          f"unique={c['unique']} duplicates={c['duplicates']} malformed={c['malformed']} "
          f"pending_dups={traffic.pending}", file=sys.stderr, flush=True)


def _settle(future):
    """Wait until a send is acknowledged or failed (the errback counts failures)."""
    try:
        future.get()
    except Exception:  # noqa: BLE001 - counted by Tally.on_error already
        pass


def run(args, producer, traffic, tally, stop):
    """Send until --count, --duration or a signal; then resend pending duplicates and flush.

    Returns (seconds taken, what stopped it: count, duration or the signal's name).
    """
    pacer = Pacer(args.rate)
    send = producer.send
    topic = args.topic
    on_error = tally.on_error
    started = time.monotonic()
    wall0_ms = now_ms()
    event0_ms = wall0_ms if args.start_ts_ms is None else args.start_ts_ms
    speedup = args.speedup
    batch = 1000
    new_events = 0
    last_report = started
    last_sent = 0

    # kafka-python 3 has no buffer_memory bound: without this, --rate 0 against a slow broker
    # would queue without limit. Every WINDOW_STEP-th future is kept, and once WINDOW_STEPS of
    # them are outstanding the oldest is awaited.
    window = collections.deque()

    def emit(message):
        future = send(topic, message.payload)
        future.add_errback(on_error)
        tally.add(message)
        if tally.counts["sent"] % WINDOW_STEP == 0:
            window.append(future)
            if len(window) > WINDOW_STEPS:
                _settle(window.popleft())

    while True:
        mono = time.monotonic()
        if stop.signal is not None:
            stopped_by = stop.signal
            break
        if args.duration is not None and mono - started >= args.duration:
            stopped_by = "duration"
            break
        if args.count is not None and new_events >= args.count:
            stopped_by = "count"
            break
        if mono - last_report >= args.progress_s:
            _progress(mono - started, (tally.counts["sent"] - last_sent) / (mono - last_report),
                      tally, traffic)
            last_report, last_sent = mono, tally.counts["sent"]
        granted = pacer.take(batch)
        if not granted:
            time.sleep(min(pacer.wait_s(), 0.1))
            continue
        for _ in range(granted):
            wall_ms = time.time_ns() // 1_000_000
            event_ms = event0_ms + int((wall_ms - wall0_ms) * speedup)
            message = traffic.next(wall_ms, event_ms)
            if message.kind != "duplicate":
                new_events += 1
            emit(message)
            if args.count is not None and new_events >= args.count:
                break
    for message in traffic.drain():
        emit(message)
    producer.flush()
    return time.monotonic() - started, stopped_by


def main(argv=None):
    args = parse_args(argv)
    factory = ClickFactory(seed=args.seed, ads=args.ads, zipf_s=args.zipf_s, skew=args.skew,
                           users=args.users, run_id=args.run_id or uuid.uuid4().hex[:8])
    traffic = Traffic(factory, duplicates=args.duplicates,
                      duplicate_delay_ms=args.duplicate_delay_s * 1000,
                      malformed=args.malformed, out_of_order_ms=args.out_of_order_ms)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    producer = make_producer(args)
    tally = Tally(args.truth)
    try:
        elapsed, stopped_by = run(args, producer, traffic, tally, stop)
    finally:
        producer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sent = tally.counts["sent"]
    summary = tally.summary(
        topic=args.topic, run_id=factory.run_id, seed=args.seed, elapsed_s=round(elapsed, 3),
        rate_achieved=round(sent / elapsed, 1) if elapsed > 0 else None,
        stopped_by=stopped_by,
    )
    tally.close(summary)
    _progress(elapsed, summary["rate_achieved"] or 0.0, tally, traffic)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 1 if tally.delivery_errors else 0


if __name__ == "__main__":
    sys.exit(main())
