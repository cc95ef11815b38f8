"""Tests of the click model (adclick.generator) and `adclick generate` (apps.generate): the pure
traffic model, and one run against a real broker.

The benchmarks and the pipeline tests trust the generator's ground truth, so these check the
shape of the traffic (Zipf, weights, duplicates, disorder) and that truth holds exactly the
unique valid clicks, then that a real run, stopped by SIGTERM, put the same in Kafka.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from adclick import config
from adclick import contract
from adclick import generator
from adclick import invalid_traffic
from apps import generate

NOW = 1_800_000_000_000


def clicks(factory, n, ts=NOW):
    return [factory.click(ts) for _ in range(n)]


def run_traffic(traffic, n, step_ms=1):
    """n new events and their duplicates, the send clock advancing step_ms per message."""
    messages = []
    clock = NOW
    new = 0
    while new < n:
        message = traffic.next(clock, clock)
        new += message.kind != "duplicate"
        messages.append(message)
        clock += step_ms
    return messages + traffic.drain()


def test_ad_ids_and_click_ids():
    factory = generator.ClickFactory(seed=1, ads=1234, run_id="run7")
    assert factory.ad_ids[0] == "ad-000001"
    assert factory.ad_ids[-1] == "ad-001234"
    assert len(generator.ClickFactory(seed=1, ads=1_234_567).ad_ids[-1]) == len("ad-1234567")
    made = clicks(factory, 1000)
    assert [c.click_id for c in made[:2]] == ["run7-1", "run7-2"]
    assert len({c.click_id for c in made}) == 1000


def test_zipf_top_ad_gets_the_most_clicks():
    ads, s, n = 1000, 1.1, 50_000
    factory = generator.ClickFactory(seed=3, ads=ads)
    counts = collections.Counter(c.ad_id for c in clicks(factory, n))
    ranked = [ad for ad, _ in counts.most_common()]
    assert ranked[0] == "ad-000001"
    assert counts["ad-000001"] > counts["ad-000002"] > counts["ad-000010"] > counts["ad-000100"]
    expected_top = n / sum(1 / k ** s for k in range(1, ads + 1))
    assert abs(counts["ad-000001"] - expected_top) < 0.1 * expected_top
    assert len(counts) > ads // 2  # the long tail is there too


def test_skew_sends_a_fraction_to_the_hot_ad():
    factory = generator.ClickFactory(seed=3, ads=10_000, skew=0.5)
    counts = collections.Counter(c.ad_id for c in clicks(factory, 20_000))
    share = counts[factory.hot_ad] / 20_000
    assert 0.5 < share < 0.6  # half by skew, plus its Zipf share of the other half


def test_device_and_country_weights():
    made = clicks(generator.ClickFactory(seed=4), 40_000)
    devices = collections.Counter(c.device for c in made)
    assert set(devices) == set(contract.DEVICES)
    for device, share in (("mobile", 0.60), ("desktop", 0.30), ("tablet", 0.08), ("other", 0.02)):
        assert abs(devices[device] / len(made) - share) < 0.01
    countries = collections.Counter(c.country for c in made)
    assert len(countries) >= 12
    assert countries.most_common(1)[0][0] == "US"


def test_seed_reproducible_and_run_id():
    first = generator.Traffic(generator.ClickFactory(seed=9), duplicates=0.2, malformed=0.1,
                              out_of_order_ms=5_000)
    second = generator.Traffic(generator.ClickFactory(seed=9), duplicates=0.2, malformed=0.1,
                               out_of_order_ms=5_000)
    assert [m.payload for m in run_traffic(first, 2000)] == [
        m.payload for m in run_traffic(second, 2000)]
    other = generator.ClickFactory(seed=10)
    assert clicks(other, 50) != clicks(generator.ClickFactory(seed=9), 50)
    a, b = generator.ClickFactory(), generator.ClickFactory()
    assert a.run_id != b.run_id  # unseeded: random run ids, so click ids never collide
    same_ids = generator.ClickFactory(seed=9, run_id="x")
    assert clicks(same_ids, 3)[0].click_id == "x-1"


def test_duplicates_fraction_and_identical_bytes():
    traffic = generator.Traffic(generator.ClickFactory(seed=5), duplicates=0.1,
                                duplicate_delay_ms=2_000)
    messages = run_traffic(traffic, 20_000)
    kinds = collections.Counter(m.kind for m in messages)
    assert kinds["malformed"] == 0
    assert abs(kinds["duplicate"] / kinds["unique"] - 0.1) < 0.01
    originals = {}
    for position, message in enumerate(messages):
        if message.kind == "unique":
            originals[message.click.click_id] = (position, message.payload)
        else:
            first_position, payload = originals[message.click.click_id]
            assert payload == message.payload
            assert position > first_position
    resent = collections.Counter(m.click.click_id for m in messages if m.kind == "duplicate")
    assert set(resent.values()) == {1}


def test_duplicates_come_immediately_or_within_the_delay():
    traffic = generator.Traffic(generator.ClickFactory(seed=6), duplicates=0.3,
                                duplicate_delay_ms=500)
    sent_at = {}
    gaps = []
    clock = NOW
    for _ in range(20_000):
        message = traffic.next(clock, clock)
        if message.kind == "unique":
            sent_at[message.click.click_id] = clock
        else:
            gaps.append(clock - sent_at[message.click.click_id])
        clock += 1
    assert min(gaps) <= 1  # the immediate half
    assert max(gaps) <= 500 + 2
    assert sum(gap > 100 for gap in gaps) > len(gaps) // 4  # the delayed half


def test_malformed_fraction_and_kinds():
    traffic = generator.Traffic(generator.ClickFactory(seed=7), malformed=0.2)
    messages = run_traffic(traffic, 10_000)
    bad = [m for m in messages if m.kind == "malformed"]
    assert abs(len(bad) / 10_000 - 0.2) < 0.02
    assert {m.malformed.kind for m in bad} == set(generator.MALFORMED_KINDS)
    for message in bad:
        assert contract.validate(message.payload, now_ms=NOW)[1] == message.malformed.reason


def test_out_of_order_jitter():
    traffic = generator.Traffic(generator.ClickFactory(seed=8), out_of_order_ms=3_000)
    messages = run_traffic(traffic, 5_000, step_ms=0)
    stamps = [m.click.click_ts for m in messages]
    assert min(stamps) >= NOW - 3_000
    assert max(stamps) <= NOW
    assert max(stamps) - min(stamps) > 2_500
    assert stamps != sorted(stamps)


def test_tally_truth_excludes_duplicates_and_malformed(tmp_path):
    traffic = generator.Traffic(generator.ClickFactory(seed=11), duplicates=0.2, malformed=0.1)
    messages = run_traffic(traffic, 3_000)
    path = tmp_path / "truth.jsonl"
    tally = generate.Tally(str(path))
    for message in messages:
        tally.add(message)
    summary = tally.summary(run_id="r")
    tally.close(summary)
    truth = [json.loads(line) for line in path.read_text().splitlines()]
    unique = [m.click for m in messages if m.kind == "unique"]
    assert [t["click_id"] for t in truth] == [c.click_id for c in unique]
    assert [contract.Click(**t) for t in truth] == unique  # each click as sent
    written = json.loads((tmp_path / "truth.jsonl.summary.json").read_text())
    assert written["clicks_by_traffic"] == dict(collections.Counter(
        invalid_traffic.click_labels(unique).values()))
    kinds = collections.Counter(m.kind for m in messages)
    assert written["unique"] == kinds["unique"] == len(truth)
    assert written["duplicates"] == kinds["duplicate"] > 0
    assert written["malformed"] == kinds["malformed"] == sum(written["malformed_by_kind"].values())
    assert written["sent"] == len(messages)
    assert written["run_id"] == "r"


def run_funnel(n, **options):
    factory = generator.ClickFactory(seed=9, ads=200)
    traffic = generator.Traffic(factory, duplicates=0.05, duplicate_delay_ms=0,
                                out_of_order_ms=1000)
    funnel = generator.Funnel(traffic, **options)
    messages, clock, clicks = [], NOW, 0
    while clicks < n:
        messages.append(funnel.next(clock, clock))
        clicks += messages[-1].event == "click" and messages[-1].kind == "unique"
        clock += 10
    return messages + funnel.drain()


def test_the_funnel_shows_clicks_converts_some_and_everything_is_valid():
    messages = run_funnel(2000, impressions_per_click=20, conversion_rate=0.1,
                          conversion_delay_ms=30_000, early_conversions=0.2,
                          unknown_conversions=0.01)
    events = collections.defaultdict(dict)
    position = {}
    for i, message in enumerate(messages):
        valid, reason = contract.CONTRACTS[message.event].validate(message.payload, now_ms=NOW)
        assert reason is None, (message, reason)
        event_id = getattr(valid, contract.CONTRACTS[message.event].id_field)
        if message.kind == "duplicate":  # a resend: the same bytes as the first
            assert event_id in events[message.event]
            continue
        events[message.event][event_id] = valid
        position[(message.event, event_id)] = i
    clicks, impressions = events["click"], events["impression"]
    conversions = events["conversion"]
    assert len(clicks) == 2000 and len(impressions) == 20 * 2000  # a CTR of 5 %
    # Each click has the impression it came from: its ad and user, at most 20 s earlier.
    shown = {(i.ad_id, i.user_id, i.country, i.device) for i in impressions.values()}
    assert all((c.ad_id, c.user_id, c.country, c.device) in shown for c in clicks.values())
    assert all(i.impression_ts > NOW - 22_000 for i in impressions.values())
    # About 10 % of clicks convert, within the delay after their click; some conversions go
    # ahead of their click, a few name clicks nobody made.
    known = [c for c in conversions.values() if c.click_id in clicks]
    assert 150 <= len(known) <= 250
    for conversion in known:
        click = clicks[conversion.click_id]
        assert click.click_ts <= conversion.conversion_ts < click.click_ts + 30_000
    early = [c for c in known if position[("conversion", c.conversion_id)]
             < position[("click", c.click_id)]]
    assert 0.1 * len(known) <= len(early) <= 0.3 * len(known)
    assert 5 <= len(conversions) - len(known) <= 40
    assert {c.type for c in known} == {"purchase", "signup", "inquiry"}
    assert all((c.value_micros is not None) == (c.type == "purchase") for c in known)


def test_the_funnel_refuses_nonsense():
    traffic = generator.Traffic(generator.ClickFactory(seed=1))
    for bad in ({"impressions_per_click": 0}, {"conversion_rate": 1.5},
                {"early_conversions": -0.1}):
        with pytest.raises(ValueError):
            generator.Funnel(traffic, **bad)


def test_pacer_limits_rate_and_does_not_flood_after_a_stall():
    now = [0.0]
    pacer = generator.Pacer(1000, burst_s=0.25, clock=lambda: now[0])
    granted = 0
    for _ in range(1000):  # one simulated second, asking for more than allowed
        now[0] += 0.001
        granted += pacer.take(50)
    assert 990 <= granted <= 1000
    now[0] += 60  # a stall: at most one burst is made up for
    assert pacer.take(10**9) == 250
    assert pacer.take(1) == 0
    assert 0 < pacer.wait_s() <= 0.001
    assert generator.Pacer(0).take(12345) == 12345


def test_parse_args_defaults_and_checks():
    args = generate.parse_args([])
    assert args.rate == 200 and args.ads == 10_000 and args.duplicates == 0.0
    assert args.duplicate_delay_s == 30 and args.topic == config.Topics.CLICKS
    assert args.bootstrap_servers == config.KAFKA_BOOTSTRAP
    assert args.duration is None and args.count is None
    for bad in (["--duplicates", "1.5"], ["--malformed", "-0.1"], ["--speedup", "0"],
                ["--run-id", 'a"b'], ["--count", "-1"]):
        with pytest.raises(SystemExit):
            generate.parse_args(bad)


class FakeFuture:
    def add_errback(self, _callback):
        return self

    def get(self, timeout=None):
        return None


class FakeProducer:
    def __init__(self):
        self.sent = []
        self.flushed = self.closed = False

    def send(self, topic, value):
        self.sent.append((topic, value))
        return FakeFuture()

    def flush(self):
        self.flushed = True

    def close(self):
        self.closed = True


def test_main_with_a_fake_producer(tmp_path, monkeypatch, capsys):
    producer = FakeProducer()
    monkeypatch.setattr(generate, "make_producer", lambda args: producer)
    truth = tmp_path / "t.jsonl"
    code = generate.main(["--topic", "x", "--rate", "0", "--count", "3000", "--seed", "1",
                          "--duplicates", "0.1", "--duplicate-delay-s", "60",
                          "--malformed", "0.05", "--start-ts-ms", str(NOW - 10**6),
                          "--speedup", "10", "--truth", str(truth)])
    assert code == 0
    assert producer.flushed and producer.closed
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["unique"] + summary["malformed"] == 3000
    assert summary["sent"] == len(producer.sent) == 3000 + summary["duplicates"]
    assert summary["stopped_by"] == "count"
    assert summary["duplicates"] > 0  # drained at the end although the delay is a minute
    assert NOW - 10**6 <= summary["min_click_ts"] <= summary["max_click_ts"] < NOW
    assert len(truth.read_text().splitlines()) == summary["unique"]
    assert json.loads((tmp_path / "t.jsonl.summary.json").read_text()) == summary


def test_main_sends_the_funnel_to_three_topics(tmp_path, monkeypatch, capsys):
    producer = FakeProducer()
    monkeypatch.setattr(generate, "make_producer", lambda args: producer)
    truth = tmp_path / "t.jsonl"
    code = generate.main(["--topic", "c", "--impressions-topic", "i", "--conversions-topic",
                          "v", "--rate", "0", "--count", "500", "--seed", "2",
                          "--impressions-per-click", "10", "--conversion-rate", "0.2",
                          "--conversion-delay-s", "1", "--start-ts-ms", str(NOW - 10**6),
                          "--duplicates", "0.05", "--truth", str(truth)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_topic = collections.Counter(topic for topic, _ in producer.sent)
    assert by_topic["c"] == summary["unique"] + summary["duplicates"] + summary["malformed"]
    assert summary["unique"] == 500
    assert summary["impressions"] == 5000 and 60 <= summary["conversions"] <= 140
    assert by_topic["i"] + by_topic["v"] == \
        summary["impressions"] + summary["conversions"] + summary["funnel_duplicates"]
    assert summary["sent"] == len(producer.sent)
    # The truth of the funnel: each unique impression and conversion once, as sent.
    for topic, event in (("i", "impression"), ("v", "conversion")):
        lines = (tmp_path / f"t.jsonl.{event}s.jsonl").read_text().splitlines()
        sent = [value for t, value in producer.sent if t == topic]
        assert sorted(set(sent)) == sorted(line.encode() for line in lines)
        assert len(sent) > len(lines)  # duplicates were sent, and are not in the truth


def _consume_all(bootstrap, topic, expected, timeout_s=60):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    values = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(record.value for record in consumer)
    finally:
        consumer.close()
    return values


@pytest.mark.integration
def test_generator_against_kafka_stopped_by_sigterm(kafka_bootstrap, tmp_path):
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"test-generator-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    truth = tmp_path / "truth.jsonl"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apps.generate", "--bootstrap-servers", kafka_bootstrap,
             "--topic", topic, "--rate", "1000", "--duplicates", "0.1",
             "--duplicate-delay-s", "2", "--malformed", "0.05", "--out-of-order-ms", "1000",
             "--truth", str(truth), "--seed", "7", "--progress-s", "1"],
            cwd=config.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(config.ROOT)))
        time.sleep(4)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "rate=" in err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["stopped_by"] == "SIGTERM"
        assert summary["delivery_errors"] == 0
        assert summary["unique"] > 1000 and summary["duplicates"] > 0 and summary["malformed"] > 0
        assert json.loads((tmp_path / "truth.jsonl.summary.json").read_text()) == summary

        values = _consume_all(kafka_bootstrap, topic, summary["sent"])
        assert len(values) == summary["sent"]
        valid = collections.Counter()
        rejected = 0
        for value in values:
            click, _reason = contract.validate(value)
            if click is None:
                rejected += 1
            else:
                valid[click] += 1
        assert rejected == summary["malformed"]
        assert sum(valid.values()) == summary["unique"] + summary["duplicates"]
        truth_rows = [json.loads(line) for line in truth.read_text().splitlines()]
        fields = ("click_id", "ad_id", "click_ts", "country", "device")
        assert sorted(tuple(row[f] for f in fields) for row in truth_rows) == sorted(
            tuple(getattr(click, f) for f in fields) for click in valid)
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_invalid_traffic_comes_in_the_shares_asked_for_and_labels_as_the_rules_say():
    factory = generator.ClickFactory(seed=21, bots=0.1, datacenter=0.1)
    traffic = generator.Traffic(factory, repeats=0.2)
    clicks = [m.click for m in run_traffic(traffic, 20_000) if m.kind == "unique"]
    labels = invalid_traffic.click_labels(clicks)
    shares = collections.Counter(labels.values())
    assert 0.08 < shares["bot_user_agent"] / len(clicks) < 0.12
    # datacenter_ip: the draws from a range that were not a bot's
    assert 0.07 < shares["datacenter_ip"] / len(clicks) < 0.11
    assert shares["repeat_click"] > 0.05 * len(clicks) and shares["valid"] > 0.6 * len(clicks)
    for click in clicks:
        assert contract.CLICK.validate(contract.CLICK.encode(click), click.click_ts)[1] is None
    # A repeat is the same person on the same ad, a new click, at most 20 s later.
    by_person = collections.defaultdict(list)
    for click in clicks:
        by_person[(click.user_id, click.ad_id)].append(click.click_ts)
    gaps = [b - a for times in by_person.values() if len(times) > 1
            for a, b in zip(sorted(times), sorted(times)[1:])]
    assert gaps and max(gaps) <= generator.Traffic.REPEAT_MAX_MS


def test_people_use_browsers_from_ordinary_addresses():
    assert not any(invalid_traffic.is_crawler(agent)
                   for agent in generator.BROWSER_USER_AGENTS if agent)
    factory = generator.ClickFactory(seed=22)
    clicks = [factory.click(NOW) for _ in range(5_000)]
    assert set(invalid_traffic.click_labels(clicks).values()) == {"valid"}
