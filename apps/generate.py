"""`adclick generate`: produce realistic ad clicks to Kafka, with duplicates, disorder and garbage,
and with --impressions-per-click or --conversion-rate the funnel around them (impressions and
conversions, to their own topics).

The traffic comes from the click model in adclick.generator (ClickFactory, Traffic, Funnel,
Pacer); this sends it at the asked rate and writes the ground truth of what was sent (Tally),
so a test or benchmark can check the job's counts exactly.

    python -m apps.generate --rate 500 --duplicates 0.02 --malformed 0.01 --truth t.jsonl
    adclick generate --rate 500 --impressions-per-click 20 --conversion-rate 0.05
"""

import argparse
import collections
import json
import re
import signal
import sys
import time
import uuid

from adclick import config
from adclick import invalid_traffic
from adclick.contract import Click
from adclick.generator import MALFORMED_KINDS
from adclick.generator import ClickFactory
from adclick.generator import Funnel
from adclick.generator import Pacer
from adclick.generator import Traffic
from adclick.generator import now_ms

# At most WINDOW_STEP * WINDOW_STEPS sent messages wait for their acknowledgement (see run).
WINDOW_STEP = 10_000
WINDOW_STEPS = 20


class Tally:
    """Counts what was produced, and writes the ground truth of unique valid clicks."""

    def __init__(self, truth_path=None):
        # unique and duplicates count clicks; the funnel's unique events have counts of their
        # own, their resends one together.
        self.counts = {"sent": 0, "unique": 0, "duplicates": 0, "malformed": 0,
                       "impressions": 0, "conversions": 0, "funnel_duplicates": 0}
        self.malformed_kinds = dict.fromkeys(MALFORMED_KINDS, 0)
        self.delivery_errors = 0
        self.min_click_ts = None
        self.max_click_ts = None
        self.truth_path = truth_path
        self._truth = open(truth_path, "w", encoding="utf-8") if truth_path else None
        # The funnel's unique events, as sent, beside it: PATH.impressions.jsonl, ...
        self._funnel_truth = {}

    def add(self, message):
        counts = self.counts
        counts["sent"] += 1
        if message.event != "click":
            if message.kind != "unique":
                counts["funnel_duplicates"] += 1
                return
            counts[message.event + "s"] += 1
            if self._truth:
                self._funnel_file(message.event).write(message.payload.decode() + "\n")
        elif message.kind == "unique":
            counts["unique"] += 1
            click = message.click
            ts = click.click_ts
            if self.min_click_ts is None or ts < self.min_click_ts:
                self.min_click_ts = ts
            if self.max_click_ts is None or ts > self.max_click_ts:
                self.max_click_ts = ts
            if self._truth:
                self._truth.write(message.payload.decode() + "\n")
        elif message.kind == "duplicate":
            counts["duplicates"] += 1
        else:
            counts["malformed"] += 1
            self.malformed_kinds[message.malformed.kind] += 1

    def _funnel_file(self, event):
        if event not in self._funnel_truth:
            self._funnel_truth[event] = open(f"{self.truth_path}.{event}s.jsonl", "w",
                                             encoding="utf-8")
        return self._funnel_truth[event]

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
        for funnel_file in self._funnel_truth.values():
            funnel_file.close()
        if self._truth:
            self._truth.close()
            # What the job must bill: the unique clicks by traffic label, from all of them.
            with open(self.truth_path, encoding="utf-8") as f:
                clicks = [Click(**json.loads(line)) for line in f]
            summary["clicks_by_traffic"] = dict(collections.Counter(
                invalid_traffic.click_labels(clicks).values()))
            with open(f"{self.truth_path}.summary.json", "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2, sort_keys=True)
                f.write("\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="adclick generate",
                                description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    p.add_argument("--topic", default=config.Topics.CLICKS, help="the clicks' topic")
    p.add_argument("--impressions-topic", default=config.Topics.IMPRESSIONS)
    p.add_argument("--conversions-topic", default=config.Topics.CONVERSIONS)
    p.add_argument("--rate", type=float, default=200.0,
                   help="messages per second, duplicates and malformed included; 0: no limit")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to run (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--count", type=int, default=None,
                   help="new events to send (unique + malformed); their duplicates come on top")
    p.add_argument("--ads", type=int, default=10_000)
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of ad popularity")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--bots", type=float, default=0.0,
                   help="share of events with a known crawler's user agent (bot_user_agent)")
    p.add_argument("--datacenter", type=float, default=0.0,
                   help="share of events from a data-center address (datacenter_ip)")
    p.add_argument("--repeats", type=float, default=0.0,
                   help="share of clicks followed by the same person's click on the same ad up"
                        " to 20 s later (a repeat_click under 10 s)")
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
    p.add_argument("--impressions-per-click", type=int, default=0,
                   help="with each click, this many impressions: the clicked one and others not"
                        " clicked (a CTR of about its inverse); 0: clicks only")
    p.add_argument("--conversion-rate", type=float, default=0.0,
                   help="fraction of clicks that convert (purchase, sign-up, inquiry)")
    p.add_argument("--conversion-delay-s", type=float, default=60.0,
                   help="a conversion comes up to this long after its click")
    p.add_argument("--start-ts-ms", type=int, default=None,
                   help="simulated event clock start (epoch ms; default: real time)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="simulated event clock speed; keep it in the job's accepted range")
    p.add_argument("--truth", default=None,
                   help="write unique valid clicks as JSON lines here, totals to PATH.summary.json"
                        " (and the funnel's unique impressions and conversions, as sent, to"
                        " PATH.impressions.jsonl and PATH.conversions.jsonl)")
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
    for name in ("duplicates", "malformed", "skew", "conversion_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name} must be within [0, 1]")
    if args.speedup <= 0:
        p.error("--speedup must be positive")
    if args.impressions_per_click < 0 or args.conversion_delay_s < 0:
        p.error("--impressions-per-click and --conversion-delay-s must not be negative")
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
    topics = {"click": args.topic, "impression": args.impressions_topic,
              "conversion": args.conversions_topic}
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
        future = send(topics[message.event], message.payload)
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
            if message.kind != "duplicate" and message.event == "click":
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
                           users=args.users, run_id=args.run_id or uuid.uuid4().hex[:8],
                           bots=args.bots, datacenter=args.datacenter)
    traffic = Traffic(factory, duplicates=args.duplicates,
                      duplicate_delay_ms=args.duplicate_delay_s * 1000,
                      malformed=args.malformed, out_of_order_ms=args.out_of_order_ms,
                      repeats=args.repeats)
    if args.impressions_per_click or args.conversion_rate:
        traffic = Funnel(traffic, impressions_per_click=max(1, args.impressions_per_click),
                         conversion_rate=args.conversion_rate,
                         conversion_delay_ms=int(args.conversion_delay_s * 1000))
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
