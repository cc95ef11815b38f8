"""The click event contract in Python: the Flink job's validation, rule for rule.

sql/flink/10_parse.sql is the reference. The loader of the raw-clicks table and the tests must
accept and reject exactly what the job does, with the same reason codes checked in the same
order, or counts in ClickHouse and in the job's output would disagree for the same input.
"""

import json
import re
import time
from typing import NamedTuple

from adclick import config

REASONS = (
    "oversized",
    "not_json_object",
    "bad_click_id",
    "bad_ad_id",
    "bad_click_ts",
    "click_ts_too_old",
    "click_ts_in_future",
    "ambiguous_click_ts",
    "bad_user_id",
    "bad_ip",
    "bad_country",
    "bad_device",
)

# Each pattern is the SQL one without the ["..."] wrapper that JSON_QUERY adds around a string.
# fullmatch, not match: Python's $ would also accept a trailing newline.
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_IP = re.compile(r"[0-9A-Fa-f.:]{2,45}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_MAX_TS_DIGITS = 15
_LEADING_SPACE = re.compile(r"[ \t\n\r]*")
# The job's event_time comes from this regular expression over the raw text, not from the parsed
# JSON (jobs/ad_click_aggregation.py, RAW_CLICK_TS). Java's \s is ASCII whitespace only.
_RAW_CLICK_TS = re.compile(r'"click_ts"[ \t\n\x0b\f\r]*:[ \t\n\x0b\f\r]*(-?[0-9]{1,15})')


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
    # Jackson, like the JSON standard, has no NaN or Infinity; Python's json would accept them.
    raise ValueError(f"not JSON: {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_object(body):
    """The JSON object at the start of body, or None: what IS JSON OBJECT and JSON_QUERY see.

    The job's JSON functions (Jackson) read the first JSON value and ignore whatever follows it,
    so '{...} trailing' is a JSON object there; Python's json.loads would reject it.
    """
    try:
        obj, _ = _DECODER.raw_decode(body, _LEADING_SPACE.match(body).end())
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _field(obj, name):
    """obj[name], or None when absent.

    The SQL reads fields with JSON_QUERY ... WITH UNCONDITIONAL ARRAY WRAPPER, so an array
    value is wrapped again ([["x"]]) and fails every pattern, as a non-scalar does here.
    """
    return obj.get(name)


def _is_string(value, pattern):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _is_click_ts(value):
    # bool is an int subclass in Python, but true/false are not JSON numbers; floats and
    # exponents (1.0, 1e3) are not integers in the SQL either, since their text has a dot or E.
    return type(value) is int and len(str(abs(value))) <= _MAX_TS_DIGITS


def _raw_event_ms(body, now_s, max_future_ms):
    """The job's event_time in ms: the first raw "click_ts" match, or 0 when absent or absurd."""
    match = _RAW_CLICK_TS.search(body)
    if match is None:
        return 0
    raw = int(match.group(1))
    if config.MIN_CLICK_TS_MS <= raw <= now_s * 1000 + max_future_ms:
        return raw
    return 0


def validate(payload, now_ms=None):
    """(Click, None) for a valid payload, else (None, reason) with reason one of REASONS.

    now_ms stands for the job's clock (default: now). Like the job's UNIX_TIMESTAMP() it is
    truncated to whole seconds before MAX_FUTURE_SECONDS is added. A None payload (a Kafka
    tombstone) is not a JSON object, as in the SQL.
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if payload is None:
        return None, "not_json_object"
    if isinstance(payload, str):
        body = payload
    else:
        body = bytes(payload).decode("utf-8", errors="replace")
    if len(body) > config.MAX_PAYLOAD_CHARS:
        return None, "oversized"
    obj = _parse_object(body)
    if obj is None:
        return None, "not_json_object"
    click_id = _field(obj, "click_id")
    if not _is_string(click_id, _ID):
        return None, "bad_click_id"
    ad_id = _field(obj, "ad_id")
    if not _is_string(ad_id, _ID):
        return None, "bad_ad_id"
    click_ts = _field(obj, "click_ts")
    if not _is_click_ts(click_ts):
        return None, "bad_click_ts"
    if click_ts < config.MIN_CLICK_TS_MS:
        return None, "click_ts_too_old"
    now_s = now_ms // 1000
    max_future_ms = config.MAX_FUTURE_SECONDS * 1000
    if click_ts > now_s * 1000 + max_future_ms:
        return None, "click_ts_in_future"
    # The job watermarks on a regex reading of click_ts; a payload where that reading differs
    # from the parsed field (a nested or repeated "click_ts" key, an escaped key) is rejected.
    if _raw_event_ms(body, now_s, max_future_ms) != click_ts:
        return None, "ambiguous_click_ts"
    user_id = _field(obj, "user_id")
    if not _is_string(user_id, _USER_ID):
        return None, "bad_user_id"
    ip = _field(obj, "ip")
    if not _is_string(ip, _IP):
        return None, "bad_ip"
    country = _field(obj, "country")
    if not _is_string(country, _COUNTRY):
        return None, "bad_country"
    device = _field(obj, "device")
    if not isinstance(device, str) or device not in config.DEVICES:
        return None, "bad_device"
    return Click(click_id, ad_id, click_ts, user_id, ip, country, device), None


def encode(click):
    """The compact JSON bytes of a click, with the contract's field names."""
    return json.dumps(click._asdict(), separators=(",", ":")).encode("utf-8")
