"""The click model: realistic ad clicks, with optional duplicates, disorder and garbage, and
the funnel around them: the impressions before the clicks and the conversions after some.

The job, the loader and the benchmarks need traffic that looks like production (a few ads get
most clicks, most clicks come from phones) and that breaks the same ways production does
(resent events, late events, malformed payloads), plus the ground truth of what was sent so a
test can check the job's counts exactly. Event generation is pure and seeded (ClickFactory,
make_malformed, Traffic, Funnel), so tests build the same event sets without Kafka; the command
that sends them to Kafka and writes the ground truth is apps.generate (`adclick generate`).
"""

import bisect
import collections
import heapq
import ipaddress
import itertools
import json
import random
import time
import uuid
from typing import NamedTuple

from adclick import config
from adclick import invalid_traffic
from adclick.contract import CLICK
from adclick.contract import CONVERSION
from adclick.contract import IMPRESSION
from adclick.contract import Click
from adclick.contract import encode

# Shares of clicks by country (ISO 3166 alpha-2) and by device: skewed, like real traffic.
COUNTRY_WEIGHTS = {
    "US": 28, "IN": 10, "GB": 7, "DE": 7, "JP": 7, "KR": 6, "BR": 6, "FR": 5,
    "CA": 5, "MX": 4, "AU": 3, "ES": 3, "IT": 3, "ID": 3, "NL": 2, "SE": 1,
}
DEVICE_WEIGHTS = {"mobile": 60, "desktop": 30, "tablet": 8, "other": 2}
# People's browsers (none of them a crawler's user agent: tests/test_generator.py checks); a
# click without a user agent is valid too.
BROWSER_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.6778.104 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    None,
)
# Shares of conversions by type.
CONVERSION_TYPE_WEIGHTS = {"purchase": 50, "signup": 35, "inquiry": 15}
CONVERSION_TYPES = list(CONVERSION_TYPE_WEIGHTS)

# Kind of malformed payload -> the reason the contract (and the job) rejects it with.
# missing_field and wrong_type hit a random field, so their reason is bad_<that field>.
MALFORMED_KINDS = (
    "not_json", "missing_field", "wrong_type", "far_future", "before_2000", "oversized",
    "unknown_device",
)
_FIELDS = Click._fields
_REQUIRED = tuple(name for name in _FIELDS if name not in CLICK.optional)  # absent is valid
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


_CONVERSION_TYPE_CUM = list(itertools.accumulate(CONVERSION_TYPE_WEIGHTS.values()))


def _pick(rng, values, cum):
    # min(): a float product may round up to the total itself
    return values[min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(values) - 1)]


def now_ms():
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def ad_ids(ads=10_000):
    """The generator's ad ids, most clicked first (ad-000001 is rank 1)."""
    width = max(6, len(str(ads)))
    return [f"ad-{rank:0{width}d}" for rank in range(1, ads + 1)]


def ads_dimension(ads=10_000, advertisers=50):
    """Who owns the generator's ads, as (ad_id, advertiser_id, name) rows: ad of rank k
    belongs to advertiser (k - 1) mod advertisers + 1, so each advertiser has popular and
    rare ads (the ads table of adclick.access; `make demo` loads it)."""
    width = max(3, len(str(advertisers)))
    return [(ad_id, f"adv-{rank % advertisers + 1:0{width}d}", f"Ad {rank + 1} of the demo")
            for rank, ad_id in enumerate(ad_ids(ads))]


class ClickFactory:
    """Seeded source of valid clicks: Zipf ad popularity, weighted countries and devices.

    Ad of rank k (ad-000001 is rank 1) gets clicks in proportion to 1/k**zipf_s; with skew > 0
    that fraction of all clicks goes to the rank-1 ad on top (a hot key, for benchmarks).
    click_id is "<run_id>-<counter>": unique within a run, and across runs as long as run_id
    differs. run_id defaults to one drawn from the seed (reproducible) or a random one.
    """

    def __init__(self, seed=None, ads=10_000, zipf_s=1.1, skew=0.0, users=1_000_000,
                 run_id=None, bots=0.0, datacenter=0.0):
        if ads < 1 or users < 1:
            raise ValueError("ads and users must be at least 1")
        for name, value in (("skew", skew), ("bots", bots), ("datacenter", datacenter)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        # Invalid traffic: a share of events from a crawler (its user agent from the crawler
        # list's examples) and a share from a data-center address; the others from people,
        # at addresses outside every data-center range.
        self.bots = bots
        self.datacenter = datacenter
        self.rng = random.Random(seed)
        if run_id is None:
            run_id = f"{self.rng.getrandbits(32):08x}" if seed is not None else uuid.uuid4().hex[:8]
        self.run_id = run_id
        self.ad_ids = ad_ids(ads)
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
        return Click(
            click_id=f"{self.run_id}-{next(self._counter)}",
            ad_id=self.ad(),
            click_ts=int(click_ts),
            user_id=f"u-{rng.randrange(self.users)}",
            ip=self.ip(),
            country=_pick(rng, self._countries, self._country_cum),
            device=_pick(rng, self._devices, self._device_cum),
            user_agent=self.user_agent(),
        )

    def user_agent(self):
        if self.bots and self.rng.random() < self.bots:
            return self.rng.choice(invalid_traffic.crawler_examples())
        return self.rng.choice(BROWSER_USER_AGENTS)

    def ip(self):
        """A person's IPv4 address, or (a `datacenter` share) one of a data-center range, v4
        or v6."""
        rng = self.rng
        if self.datacenter and rng.random() < self.datacenter:
            ranges = invalid_traffic.datacenter_ranges()[0][rng.choice((4, 6))]
            first, last = rng.choice(ranges)
            return str(ipaddress.ip_address(rng.randint(first, last)))
        while True:
            ip = rng.getrandbits(32)
            text = f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"
            if not invalid_traffic.is_datacenter(text):
                return text

    def impression(self, impression_ts):
        """A new valid impression (an ad shown) at impression_ts, drawn like a click."""
        return self.impression_of(self.click(impression_ts), impression_ts)

    def impression_of(self, click, impression_ts):
        """A new impression of the ad click is on, shown to its user, at impression_ts."""
        return IMPRESSION.Event(
            impression_id=f"{self.run_id}-i{next(self._counter)}", ad_id=click.ad_id,
            impression_ts=int(impression_ts), user_id=click.user_id, ip=click.ip,
            country=click.country, device=click.device, user_agent=click.user_agent)

    def conversion(self, click_id, conversion_ts):
        """A new conversion naming click_id: a purchase (with a value), sign-up or inquiry."""
        rng = self.rng
        kind = _pick(rng, CONVERSION_TYPES, _CONVERSION_TYPE_CUM)
        return CONVERSION.Event(
            conversion_id=f"{self.run_id}-v{next(self._counter)}", click_id=click_id,
            conversion_ts=int(conversion_ts), type=kind,
            value_micros=rng.randrange(1, 500) * 1_000_000 if kind == "purchase" else None)


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
        field = rng.choice(_REQUIRED if kind == "missing_field" else _FIELDS)
        if kind == "missing_field":
            del fields[field]
        else:
            wrong = _WRONG_VALUES["click_ts" if field == "click_ts" else "other"]
            # An optional field may be null.
            fields[field] = rng.choice([value for value in wrong(fields[field])
                                        if value is not None or field in _REQUIRED])
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
    """One message to produce: kind is unique, duplicate or malformed; event is the topic's
    event type (click, impression or conversion)."""

    kind: str
    payload: bytes
    click: Click = None
    malformed: Malformed = None
    event: str = "click"


class Traffic:
    """The message stream: new clicks, resent duplicates and malformed payloads, mixed.

    Each unique click is resent, byte for byte, with probability `duplicates`: half of those
    right after it, the others once the send clock passes a random delay up to duplicate_delay_ms.
    A new event is malformed with probability `malformed`. click_ts is the event clock minus a
    random jitter up to out_of_order_ms, so events reach Kafka out of event-time order. With
    probability `repeats`, the same person clicks the same ad again (a new click) 1 to
    REPEAT_MAX_MS later: a repeat_click when that is under the rule's window.
    """

    REPEAT_MAX_MS = 2 * config.REPEAT_CLICK_WINDOW_SECONDS * 1000

    def __init__(self, factory, duplicates=0.0, duplicate_delay_ms=30_000, malformed=0.0,
                 out_of_order_ms=0, malformed_kinds=MALFORMED_KINDS, repeats=0.0):
        for name, value in (("duplicates", duplicates), ("malformed", malformed),
                            ("repeats", repeats)):
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
        self.repeats = repeats
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
            if payload is None:  # a repeat: a new click
                return Message("unique", encode(click), click)
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
        if self.repeats and rng.random() < self.repeats:
            delay = rng.randint(1, self.REPEAT_MAX_MS)
            again = click._replace(click_id=f"{self.factory.run_id}-{next(self.factory._counter)}",
                                   click_ts=click.click_ts + delay)
            heapq.heappush(self._pending, (send_ms + delay, next(self._seq), None, again))
        return Message("unique", payload, click)

    def drain(self):
        """Every duplicate and repeat still waiting, in due order (sent at the end of a run)."""
        pending, self._pending = self._pending, []
        return [Message("duplicate", p, c) if p is not None else Message("unique", encode(c), c)
                for _, _, p, c in sorted(pending, key=lambda item: item[:2])]


class Funnel:
    """Traffic's messages, with each new click's funnel around it: the impressions before it
    (the one clicked, and impressions_per_click - 1 of other ads that were not) and, for a
    conversion_rate of the clicks, a conversion after it.

    A conversion comes up to conversion_delay_ms after its click, both in event time and in
    sending; early_conversions of them are sent before their click instead (another producer,
    ahead of the click's). unknown_conversions per click name a click nobody made. Impressions
    and conversions are resent, byte for byte, with Traffic's duplicates probability.
    """

    def __init__(self, traffic, impressions_per_click=20, conversion_rate=0.05,
                 conversion_delay_ms=60_000, early_conversions=0.05, unknown_conversions=0.002):
        if impressions_per_click < 1:
            raise ValueError("impressions_per_click must be at least 1 (the clicked one)")
        for name, value in (("conversion_rate", conversion_rate),
                            ("early_conversions", early_conversions),
                            ("unknown_conversions", unknown_conversions)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        self.traffic = traffic
        self.factory = traffic.factory
        self.rng = random.Random(self.factory.rng.getrandbits(64))
        self.impressions_per_click = int(impressions_per_click)
        self.conversion_rate = conversion_rate
        self.conversion_delay_ms = int(conversion_delay_ms)
        self.early_conversions = early_conversions
        self.unknown_conversions = unknown_conversions
        self._ready = collections.deque()  # messages to send before anything new
        self._later = []  # heap of (send at ms, seq, message): conversions not due yet
        self._seq = itertools.count()

    @property
    def pending(self):
        return self.traffic.pending + len(self._later)

    def _message(self, contract, event, resend=True):
        message = Message("unique", contract.encode(event), event=contract.name)
        if resend and self.traffic.duplicates and self.rng.random() < self.traffic.duplicates:
            return [message, message._replace(kind="duplicate")]
        return [message]

    def next(self, send_ms, event_ms):
        """The message to send at send_ms (wall clock) with the event clock at event_ms."""
        if self._ready:
            return self._ready.popleft()
        if self._later and self._later[0][0] <= send_ms:
            return heapq.heappop(self._later)[2]
        message = self.traffic.next(send_ms, event_ms)
        if message.kind != "unique":
            return message
        click, rng, factory = message.click, self.rng, self.factory
        before = []
        # Shown up to 20 s before the click: the one clicked, and others not clicked.
        shown = [factory.impression_of(click, click.click_ts - rng.randrange(20_000))]
        for _ in range(self.impressions_per_click - 1):
            shown.append(factory.impression(click.click_ts - rng.randrange(20_000)))
        for impression in shown:
            before += self._message(IMPRESSION, impression)
        if rng.random() < self.conversion_rate:
            delay = rng.randrange(max(1, self.conversion_delay_ms))
            conversion = self._message(
                CONVERSION, factory.conversion(click.click_id, click.click_ts + delay))
            if rng.random() < self.early_conversions:
                before += conversion
            else:
                for later in conversion:
                    heapq.heappush(self._later, (send_ms + delay, next(self._seq), later))
        if rng.random() < self.unknown_conversions:
            before += self._message(CONVERSION, factory.conversion(
                f"{factory.run_id}-nobody-{next(self._seq)}", click.click_ts), resend=False)
        self._ready.extend(before[1:] + [message])
        return before[0]

    def drain(self):
        """Everything still waiting (conversions, resent duplicates), in due order."""
        later, self._later = self._later, []
        ready, self._ready = list(self._ready), collections.deque()
        return ready + [message for _, _, message in sorted(later)] + self.traffic.drain()


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
