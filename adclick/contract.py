"""The click event contract in Python: the Flink job's validation, rule for rule.

The job validates in its source format, udfs/java/src/main/java/adclick/flink/ClickParser.java,
which is the reference. The loader of the raw-clicks table and the tests must accept and reject
exactly what the job does, with the same reason codes checked in the same order, or counts in
ClickHouse and in the job's output would disagree for the same input
(tests/test_contract_parity.py feeds both the same payloads).
"""

import json
import re
import time
from typing import NamedTuple

from adclick import config

REASONS = (
    "oversized",
    "not_json_object",
    "duplicate_field",
    "bad_click_id",
    "bad_ad_id",
    "bad_click_ts",
    "click_ts_too_old",
    "click_ts_in_future",
    "bad_user_id",
    "bad_ip",
    "bad_country",
    "bad_device",
)

# fullmatch, not match: Python's $ would also accept a trailing newline.
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_IP = re.compile(r"[0-9A-Fa-f.:]{2,45}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_MAX_TS_DIGITS = 15
MAX_DEPTH = 64  # nesting of objects and arrays, the top-level object being 1


class Click(NamedTuple):
    """One valid click, as the job's clicks_valid view has it."""

    click_id: str
    ad_id: str
    click_ts: int
    user_id: str
    ip: str
    country: str
    device: str


def _reject_constant(name):
    # JSON has no NaN or Infinity; Python's json would accept them.
    raise ValueError(f"not JSON: {name}")


class _Object(dict):
    """A decoded JSON object that remembers whether one of its keys was repeated."""

    repeated = False


def _object(pairs):
    obj = _Object(pairs)
    obj.repeated = len(obj) != len(pairs)
    return obj


def _depth(value):
    """Nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_object(data):
    """The JSON object that is all of data (strict UTF-8, RFC 8259), or None."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                         object_pairs_hook=_object)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    if not isinstance(obj, dict) or _depth(obj) > MAX_DEPTH:
        return None
    return obj


def _is_string(value, pattern):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _is_click_ts(value):
    # bool is an int subclass in Python, but true/false are not JSON numbers; 1.0 and 1e3 are
    # floats here, and not integers for the job either.
    return type(value) is int and len(str(abs(value))) <= _MAX_TS_DIGITS


def validate(payload, now_ms=None):
    """(Click, None) for a valid payload, else (None, reason) with reason one of REASONS.

    now_ms stands for the job's clock (default: now). A None payload (a Kafka tombstone) is not
    a JSON object; a str payload is taken as its UTF-8 bytes.
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if payload is None:
        return None, "not_json_object"
    data = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) \
        else bytes(payload)
    if len(data) > config.MAX_PAYLOAD_BYTES:
        return None, "oversized"
    obj = _parse_object(data)
    if obj is None:
        return None, "not_json_object"
    if obj.repeated:
        return None, "duplicate_field"
    click_id = obj.get("click_id")
    if not _is_string(click_id, _ID):
        return None, "bad_click_id"
    ad_id = obj.get("ad_id")
    if not _is_string(ad_id, _ID):
        return None, "bad_ad_id"
    click_ts = obj.get("click_ts")
    if not _is_click_ts(click_ts):
        return None, "bad_click_ts"
    if click_ts < config.MIN_CLICK_TS_MS:
        return None, "click_ts_too_old"
    if click_ts > now_ms + config.MAX_FUTURE_SECONDS * 1000:
        return None, "click_ts_in_future"
    user_id = obj.get("user_id")
    if not _is_string(user_id, _USER_ID):
        return None, "bad_user_id"
    ip = obj.get("ip")
    if not _is_string(ip, _IP):
        return None, "bad_ip"
    country = obj.get("country")
    if not _is_string(country, _COUNTRY):
        return None, "bad_country"
    device = obj.get("device")
    if not isinstance(device, str) or device not in config.DEVICES:
        return None, "bad_device"
    return Click(click_id, ad_id, click_ts, user_id, ip, country, device), None


def encode(click):
    """The compact JSON bytes of a click, with the contract's field names."""
    return json.dumps(click._asdict(), separators=(",", ":")).encode("utf-8")
