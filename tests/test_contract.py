"""Tests of adclick.contract: every reason code, in the job's order, and the generator's output.

The contract must agree with the job's parser (udfs/java/.../EventParser.java) payload for
payload; tests/test_contract_parity.py runs both over the same payloads. These tests pin each
rule and its edges on the Python side.
"""

import json
import random

import pytest

from adclick import config
from adclick import contract
from adclick import generator
from adclick.contract import Click

NOW = 1_800_000_000_000  # a fixed job clock, a whole second
BASE = {
    "click_id": "r1-42",
    "ad_id": "ad-000123",
    "click_ts": NOW - 1_000,
    "user_id": "u-7@example",
    "ip": "203.0.113.9",
    "country": "KR",
    "device": "mobile",
}


def payload(**changes):
    """BASE with changes applied; a value of ... removes the field."""
    fields = dict(BASE)
    for name, value in changes.items():
        if value is ...:
            del fields[name]
        else:
            fields[name] = value
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


def reason(data, now_ms=NOW):
    click, why = contract.validate(data, now_ms=now_ms)
    assert (click is None) == (why is not None)
    return why


def test_valid_click():
    click, why = contract.validate(payload(), now_ms=NOW)
    assert why is None
    assert click == Click(**BASE)
    assert click.click_ts == NOW - 1_000


def test_valid_accepts_extra_fields_and_unicode_in_them():
    assert reason(payload(campaign="printemps été 😀", nested={"a": [1, 2]}, n=None)) is None
    raw = json.dumps(dict(BASE, note="서울"), ensure_ascii=False).encode("utf-8")
    assert reason(raw) is None


def test_accepts_str_and_whitespace_and_default_clock():
    assert reason(" \n" + payload().decode() + "\n") is None
    fresh = payload(click_ts=generator.now_ms())
    assert contract.validate(fresh)[1] is None


def test_encode_is_compact_json_that_validates():
    click = Click(**BASE)
    data = contract.encode(click)
    assert b" " not in data
    assert json.loads(data) == BASE
    assert contract.validate(data, now_ms=NOW) == (click, None)


@pytest.mark.parametrize("size_delta, expected", [(0, None), (1, "oversized")])
def test_oversized_counts_bytes(size_delta, expected):
    body = payload(pad="")
    fill = config.MAX_PAYLOAD_BYTES - len(body) + size_delta
    data = payload(pad="é" * (fill // 2) + "x" * (fill % 2))  # two UTF-8 bytes each
    assert len(data) == config.MAX_PAYLOAD_BYTES + size_delta
    assert reason(data) == expected


def test_oversized_comes_first_even_for_garbage():
    assert reason(b"x" * (config.MAX_PAYLOAD_BYTES + 1)) == "oversized"


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[1, 2]", b'"click"', b"42", b"null", b"{'click_id': 'a'}",
    b'{"click_id": NaN}', b'{"a": -Infinity}', b'{"a": 1,}', b'{"a": 01}', b'{"a": 1.}',
    b'{"a": "tab\tinside"}', b'{"a": "\\x"}', b'{"a": "\\u12G4"}',
    payload()[:-5], payload() + b" trailing", payload() + b"}", b"\xef\xbb\xbf" + payload(),
    b"\xff\xfe" + payload(), payload(note="x").replace(b'"x"', b'"\xc3\x28"'),
    payload(note="x").replace(b'"x"', b'"\xed\xa0\x80"'),  # a UTF-8 encoded surrogate
    payload(note="x").replace(b'"x"', b'"\xc0\xaf"'),  # an overlong encoding
    None,
])
def test_not_json_object(data):
    assert reason(data) == "not_json_object"


def test_whitespace_around_the_object_is_allowed():
    assert reason(b" \t\r\n" + payload() + b"\n ") is None


def test_nesting_is_limited():
    deep = contract.MAX_DEPTH - 1  # the top-level object is one level
    assert reason(payload(note=json.loads("[" * deep + "]" * deep))) is None
    deeper = deep + 1
    assert reason(payload(note=json.loads("[" * deeper + "]" * deeper))) == "not_json_object"
    assert reason(b'{"n": ' + b"[" * 2000 + b"]" * 2000 + b"}") == "not_json_object"


def test_repeated_top_level_key_is_a_duplicate_field():
    repeated = b'{"click_ts": %d, ' % (NOW - 7) + payload()[1:]
    assert reason(repeated) == "duplicate_field"
    repeated_other = payload(note="a")[:-1] + b', "note": "b"}'
    assert reason(repeated_other) == "duplicate_field"
    escaped = payload()[:-1] + b', "click\\u005fts": 5}'
    assert reason(escaped) == "duplicate_field"
    nested = json.dumps({**BASE, "meta": {"click_ts": 5}}).encode()
    assert reason(nested) is None
    nested_repeat = payload()[:-1] + b', "meta": {"a": 1, "a": 2}}'
    assert reason(nested_repeat) is None


def test_escaped_field_names_and_values_are_decoded():
    data = payload().replace(b'"ad_id"', b'"ad\\u005fid"').replace(b'"KR"', b'"\\u004bR"')
    assert contract.validate(data, now_ms=NOW) == (Click(**BASE), None)


@pytest.mark.parametrize("field", ["click_id", "ad_id"])
@pytest.mark.parametrize("value", [
    ..., None, 7, True, "", "x" * 65, "ad 1", "ad/1", "a@b", "é", "a\n", ["a", "b"], {"v": "a"},
])
def test_bad_ids(field, value):
    assert reason(payload(**{field: value})) == f"bad_{field}"


@pytest.mark.parametrize("field", ["click_id", "ad_id"])
def test_ids_allow_their_charset_up_to_64(field):
    assert reason(payload(**{field: "Az09_.:-" * 8})) is None
    assert reason(payload(**{field: "x"})) is None


@pytest.mark.parametrize("value", [
    ..., None, True, False, str(NOW), float(NOW), NOW + 0.5, [NOW, NOW], 10**15, -(10**15),
])
def test_bad_click_ts(value):
    assert reason(payload(click_ts=value)) == "bad_click_ts"


def test_click_ts_exponent_and_fraction_text_are_not_integers():
    text = payload().decode().replace(str(NOW - 1_000), "1.7999999990E12")
    assert reason(text.encode()) == "bad_click_ts"
    text = payload().decode().replace(str(NOW - 1_000), f"{NOW - 1_000}.0")
    assert reason(text.encode()) == "bad_click_ts"


@pytest.mark.parametrize("value, expected", [
    (config.MIN_CLICK_TS_MS - 1, "click_ts_too_old"),
    (0, "click_ts_too_old"),
    (-5, "click_ts_too_old"),
    (10**15 - 1, "click_ts_in_future"),
    (config.MIN_CLICK_TS_MS, None),
])
def test_click_ts_range(value, expected):
    assert reason(payload(click_ts=value)) == expected


@pytest.mark.parametrize("now_ms", [NOW, NOW + 999])
def test_future_limit_is_the_clock_plus_max_future(now_ms):
    limit = now_ms + config.MAX_FUTURE_SECONDS * 1000
    assert reason(payload(click_ts=limit), now_ms=now_ms) is None
    assert reason(payload(click_ts=limit + 1), now_ms=now_ms) == "click_ts_in_future"


def test_order_click_ts_checks_come_before_user_fields():
    assert reason(payload(click_ts=5, user_id=None, device="tv")) == "click_ts_too_old"
    assert reason(payload(click_ts=NOW * 2, ip="?")) == "click_ts_in_future"


@pytest.mark.parametrize("value", [..., None, 1, "", "a b", "é", "x" * 129, "a#b"])
def test_bad_user_id(value):
    assert reason(payload(user_id=value)) == "bad_user_id"


def test_user_id_allows_at_and_128_chars():
    assert reason(payload(user_id="a@b.c:d-e_f" + "x" * 117)) is None


@pytest.mark.parametrize("value", [..., None, 167772161, "1", "10.0.0.1 ", "g::1", "x" * 46])
def test_bad_ip(value):
    assert reason(payload(ip=value)) == "bad_ip"


@pytest.mark.parametrize("value", ["::1", "2001:DB8::ff", "10.0.0.1", "f" * 45])
def test_ip_allows_v4_and_v6_text(value):
    assert reason(payload(ip=value)) is None


@pytest.mark.parametrize("value", [..., None, "us", "USA", "U", "Ü1", 82])
def test_bad_country(value):
    assert reason(payload(country=value)) == "bad_country"


@pytest.mark.parametrize("value", [..., None, "Mobile", "smart-tv", "", 1, True, [["mobile"]]])
def test_bad_device(value):
    assert reason(payload(device=value)) == "bad_device"


@pytest.mark.parametrize("device", contract.DEVICES)
def test_every_device_is_valid(device):
    assert reason(payload(device=device)) is None


def test_first_failing_rule_wins():
    everything_wrong = payload(click_id=None, ad_id=None, click_ts=None, device=None)
    assert reason(everything_wrong) == "bad_click_id"
    assert reason(payload(ad_id=None, click_ts=None)) == "bad_ad_id"
    assert reason(payload(user_id=None, ip=None, country=None, device=None)) == "bad_user_id"
    assert reason(payload(ip=None, country=None)) == "bad_ip"
    assert reason(payload(country=None, device=None)) == "bad_country"


def test_one_element_arrays_are_not_their_element():
    # A field must be the scalar itself: ["x"] is the wrong type.
    assert reason(payload(click_id=["r1-42"])) == "bad_click_id"
    assert reason(payload(device=["mobile"])) == "bad_device"
    assert reason(payload(click_ts=[NOW - 1_000])) == "bad_click_ts"


@pytest.mark.parametrize("kind", generator.MALFORMED_KINDS)
def test_every_malformed_kind_is_rejected_with_its_reason(kind):
    rng = random.Random(kind)
    factory = generator.ClickFactory(seed=1)
    for _ in range(200):
        bad = generator.make_malformed(rng, kind, factory.click(NOW - 2_000), now=NOW)
        assert bad.kind == kind
        assert bad.reason in contract.REASONS
        assert reason(bad.payload) == bad.reason, bad.payload[:200]


def test_every_factory_click_is_valid_and_round_trips():
    factory = generator.ClickFactory(seed=5, ads=50_000, skew=0.1)
    traffic = generator.Traffic(factory, duplicates=0.2, out_of_order_ms=60_000)
    for i in range(5_000):
        message = traffic.next(NOW + i, NOW + i)
        click, why = contract.validate(message.payload, now_ms=NOW + i)
        assert why is None
        assert click == message.click
