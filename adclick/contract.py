"""The event contracts, declared once: each field of a click, an impression and a conversion,
its type and its rule.

Everything that knows an event's shape takes it from CLICK, IMPRESSION and CONVERSION below: the
Flink job's source and sink columns (jobs/ad_click_aggregation.py), the loader's raw rows
(adclick.ingest), the API's ad_id check (api/params.py), the generator, and validate() here,
which the raw store and the reconciliation use. Two copies remain on purpose, each checked
against this declaration: the job's parser in the JVM (udfs/java/.../EventParser.java, the hot
path, which prints its rules with --contract; tests/test_contract_parity.py compares them field
by field, then runs both over the same payloads) and the ClickHouse tables
(sql/clickhouse/001_tables.sql, whose columns tests/test_store_schema.py compares with
clickhouse_type below).

The rules, checked in this order, the first failure naming the reason: a payload over
config.MAX_PAYLOAD_BYTES is `oversized`; one that is not strict UTF-8 holding exactly one JSON
object (RFC 8259, nesting at most MAX_DEPTH, no escaped lone surrogate: a string must have a
UTF-8 form) is `not_json_object`; a repeated top-level key is `duplicate_field`; then each field
in declaration order.

A third copy is ClickHouse's (adclick.clickhouse_rules, written from these declarations), which
checks the raw store's events in bulk; the parity test runs it over the same payloads too.
"""

import json
import re
import time
from collections import namedtuple

from adclick import config

ENVELOPE_REASONS = ("oversized", "not_json_object", "duplicate_field")
MAX_DEPTH = 64  # nesting of objects and arrays, the top-level object being 1
MAX_DIGITS = 15  # of an integer field: an epoch-millisecond time fits; more digits are not one


class Text:
    """A string field: min_len to max_len characters, each one of `chars` (a regex class)."""

    sql_type = "STRING"  # Flink SQL

    def __init__(self, name, chars, min_len, max_len, low_cardinality=False):
        self.name = name
        self.chars = chars
        self.min_len = min_len
        self.max_len = max_len
        # fullmatch, not match: Python's $ would also accept a trailing newline.
        self.pattern = re.compile(f"[{chars}]{{{min_len},{max_len}}}")
        self.clickhouse_type = "LowCardinality(String)" if low_cardinality else "String"
        self.reasons = (f"bad_{name}",)

    def check(self, value, now_ms):
        if isinstance(value, str) and self.pattern.fullmatch(value) is not None:
            return None
        return self.reasons[0]

    def describe(self):
        """For people: "1 to 64 characters among A-Z a-z 0-9 _ . : -"."""
        # The class's ranges (A-Z) and single characters, in order.
        parts = re.findall(r"(?:\\x..|.)-(?:\\x..|.)|\\x..|.", self.chars)
        return f"{self.min_len} to {self.max_len} characters among {' '.join(parts)}"


class OptionalText(Text):
    """A string field that may be absent (or null): when present, the rule of Text."""

    def __init__(self, name, chars, min_len, max_len):
        super().__init__(name, chars, min_len, max_len)
        self.clickhouse_type = "Nullable(String)"

    def check(self, value, now_ms):
        return None if value is None else super().check(value, now_ms)


class OneOf:
    """A string field holding one of a few values."""

    sql_type = "STRING"
    clickhouse_type = "LowCardinality(String)"

    def __init__(self, name, values):
        self.name = name
        self.values = tuple(values)
        self.reasons = (f"bad_{name}",)

    def check(self, value, now_ms):
        return None if isinstance(value, str) and value in self.values else self.reasons[0]


class EventTime:
    """The event's time: an integer of epoch milliseconds, not before config.MIN_CLICK_TS_MS
    and not more than config.MAX_FUTURE_SECONDS ahead of the job's clock."""

    sql_type = "BIGINT"
    clickhouse_type = "DateTime64(3, 'UTC')"

    def __init__(self, name):
        self.name = name
        self.reasons = (f"bad_{name}", f"{name}_too_old", f"{name}_in_future")

    def check(self, value, now_ms):
        # bool is an int subclass in Python, but true/false are not JSON numbers; 1.0 and 1e3
        # are floats here, and not integers for the job either.
        if type(value) is not int or len(str(abs(value))) > MAX_DIGITS:
            return self.reasons[0]
        if value < config.MIN_CLICK_TS_MS:
            return self.reasons[1]
        if value > now_ms + config.MAX_FUTURE_SECONDS * 1000:
            return self.reasons[2]
        return None


class Count:
    """An optional count: absent (or null), or an integer of at least 0 (at most MAX_DIGITS
    digits)."""

    sql_type = "BIGINT"
    clickhouse_type = "Nullable(UInt64)"

    def __init__(self, name):
        self.name = name
        self.reasons = (f"bad_{name}",)

    def check(self, value, now_ms):
        if value is None or (type(value) is int and 0 <= value
                             and len(str(value)) <= MAX_DIGITS):
            return None
        return self.reasons[0]


class EventContract:
    """One event type: its fields in rule order, the one that identifies an event (its
    duplicates are dropped) and the one that times it."""

    def __init__(self, name, fields, id_field, time_field):
        self.name = name
        self.fields = tuple(fields)
        self.by_name = {field.name: field for field in self.fields}
        self.id_field = id_field
        self.time_field = time_field
        self.names = tuple(field.name for field in self.fields)
        self.reasons = ENVELOPE_REASONS + tuple(
            reason for field in self.fields for reason in field.reasons)
        # The optional texts, absent unless given (each is after every required field).
        self.optional = tuple(field.name for field in self.fields
                              if isinstance(field, OptionalText))
        # One valid event, its fields as attributes.
        self.Event = namedtuple(name.capitalize(), self.names,
                                defaults=(None,) * len(self.optional))

    def field(self, name):
        return self.by_name[name]

    def sql_columns(self):
        """(name, Flink SQL type) of each field, in order."""
        return [(field.name, field.sql_type) for field in self.fields]

    def clickhouse_columns(self):
        """{name: ClickHouse type} of each field, as the tables that store them declare it."""
        return {field.name: field.clickhouse_type for field in self.fields}

    def validate(self, payload, now_ms=None):
        """(event, None) for a valid payload, else (None, reason), reason one of self.reasons.

        now_ms stands for the job's clock (default: now). A None payload (a Kafka tombstone)
        is not a JSON object; a str payload is taken as its UTF-8 bytes.
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
        values = []
        for field in self.fields:
            value = obj.get(field.name)
            reason = field.check(value, now_ms)
            if reason is not None:
                return None, reason
            values.append(value)
        return self.Event._make(values), None

    def encode(self, event):
        """The compact JSON bytes of an event, with the contract's field names (an optional
        text without a value left out)."""
        fields = event._asdict()
        for name in self.optional:
            if fields[name] is None:
                del fields[name]
        return json.dumps(fields, separators=(",", ":")).encode("utf-8")


ID_CHARS = "A-Za-z0-9_.:-"  # of every id and of ad_id


def identifier(name):
    return Text(name, ID_CHARS, 1, 64)


# Who saw or clicked an ad, and where: the same rules in a click and an impression.
AD_ID = identifier("ad_id")
AUDIENCE = (
    Text("user_id", "A-Za-z0-9_.:@-", 1, 128),
    Text("ip", "0-9A-Fa-f.:", 2, 45),
    Text("country", "A-Z", 2, 2, low_cardinality=True),  # ISO 3166 alpha-2
    OneOf("device", ("mobile", "desktop", "tablet", "other")),
    # The browser's User-Agent header, when the producer has it: the invalid-traffic rules
    # match it against known crawlers. HTTP allows only visible ASCII and spaces in it.
    OptionalText("user_agent", "\\x20-\\x7E", 1, 512),
)

CLICK = EventContract(
    "click",
    fields=[identifier("click_id"), AD_ID, EventTime("click_ts"), *AUDIENCE],
    id_field="click_id",
    time_field="click_ts",
)

IMPRESSION = EventContract(
    "impression",
    fields=[identifier("impression_id"), AD_ID, EventTime("impression_ts"), *AUDIENCE],
    id_field="impression_id",
    time_field="impression_ts",
)

CONVERSION = EventContract(
    "conversion",
    fields=[
        identifier("conversion_id"),
        CLICK.field("click_id"),  # the click it is attributed to
        EventTime("conversion_ts"),
        OneOf("type", ("purchase", "signup", "inquiry")),
        Count("value_micros"),  # the order's value, when there is one
    ],
    id_field="conversion_id",
    time_field="conversion_ts",
)

CONTRACTS = {contract.name: contract for contract in (CLICK, IMPRESSION, CONVERSION)}

# The click's names, for the code that handles clicks only.
Click = CLICK.Event
REASONS = CLICK.reasons
DEVICES = CLICK.field("device").values


def validate(payload, now_ms=None):
    """CLICK.validate: (Click, None) or (None, reason)."""
    return CLICK.validate(payload, now_ms)


def encode(click):
    return CLICK.encode(click)


class _Object(dict):
    """A decoded JSON object that remembers whether one of its keys was repeated, and then
    all of its pairs (the dict keeps only each key's last value)."""

    repeated = False
    pairs = ()


def _object(pairs):
    obj = _Object(pairs)
    obj.repeated = len(obj) != len(pairs)
    if obj.repeated:
        obj.pairs = pairs
    return obj


def _reject_constant(name):
    # JSON has no NaN or Infinity; Python's json would accept them.
    raise ValueError(f"not JSON: {name}")


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


# A \u escape of a surrogate (D800-DFFF): the only way JSON can spell a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value):
    """Whether a decoded JSON value holds a string (key or value) with no UTF-8 form, i.e. a
    lone surrogate (json pairs a high and a low one into one character)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            # A repeated key's earlier values too: "not JSON" is decided before "repeated".
            for key, value in item.pairs or item.items():
                stack.extend((key, value))
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _parse_object(data):
    """The JSON object that is all of data (strict UTF-8, RFC 8259), or None."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                         object_pairs_hook=_object)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    if not isinstance(obj, dict) or _depth(obj) > MAX_DEPTH:
        return None
    if _SURROGATE_ESCAPE.search(data) and _has_lone_surrogate(obj):
        return None
    return obj
