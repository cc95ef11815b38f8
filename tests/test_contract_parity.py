"""The job's parser (Java, in the source format), adclick.contract (Python) and the raw store's
rules (ClickHouse SQL) agree, for each event type (click, impression, conversion).

The job counts what udfs/java/.../EventParser.java accepts; the raw store keeps what
adclick/clickhouse_rules.py's views accept, and the reconciliation recounts that; both are
declared by adclick/contract.py. Their rules are compared field by field
(each field's reason, lengths and every allowed character, as the Java rule table applies them),
the format's columns and defaults with the job's, and then both run over the same payloads:
the generator's valid events (and malformed clicks), hand-picked edge cases and thousands of
random mutations, and must give the same reason, or the same fields, for every one.
"""

import base64
import hashlib
import json
import random
import re
import subprocess
from pathlib import Path

import pyflink
import pytest

from adclick import clickhouse_rules
from adclick import config
from adclick import contract
from adclick import generator
from adclick.contract import CONTRACTS
from jobs import ad_click_aggregation as job
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database

JAR = config.JARS_DIR / "flink" / "adclick-flink.jar"
FLINK_LIB = Path(pyflink.__file__).parent / "lib"  # Flink's jars, for the format's classes
NOW = 1_800_000_000_000

# Pieces a mutation splices in: JSON syntax, escapes, numbers and bytes that are not UTF-8.
FRAGMENTS = [
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\\u", b"\\u0041", b"\\ud83d\\ude00",
    b"\\ud83d", b"\\n", b"\\/", b"\\x", b"0", b"-", b".", b"e", b"E+", b"01", b"1.5", b"1e3",
    b"-0", b"true", b"false", b"null", b"NaN", b"Infinity", b" ", b"\t", b"\r\n", b"\x00",
    b"\x1f", b"\x7f", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
    b"\xe2\x82", b"\xef\xbb\xbf", b'"click_ts":', b'"ad_id":"x",', b'"click_id":"a"',
    b'"value_micros":', b'"type":"signup"', b'"impression_ts":',
]

# Values a field may be given, of every JSON type and on both sides of each rule's edges.
VALUES = [
    None, True, False, 0, -1, 7, NOW, NOW + 3_600_000, NOW + 3_600_001, 10**15 - 1, 10**15,
    config.MIN_CLICK_TS_MS - 1, config.MIN_CLICK_TS_MS, 1.5, 1e3, float(NOW), "", "x", "x" * 64,
    "x" * 65, "x" * 128, "x" * 129, "a@b", "a b", "KR", "kr", "K", "KRR", "é", "😀", "10.0.0.1",
    "::1", "g::1", "f" * 45, "f" * 46, "mobile", "desktop", "tablet", "other", "tv", "Mobile",
    "purchase", "signup", "inquiry", "Purchase", -0, 10**15 + 1, -(10**14),
    str(NOW), [], ["mobile"], [NOW], {}, {"click_ts": 5}, "\ud83d", "a\u0000b", "a\nb",
    # user agents: the edges of its length, and the printable ASCII that JSON escapes
    "a" * 512, "a" * 513, 'Mozilla/5.0 "quoted" \\ (x)', "a\x7fb", "~ !",
]


EVENTS = list(CONTRACTS)


def java_reasons(event):
    out = subprocess.run(["java", "-cp", str(JAR), "adclick.flink.EventParser", event,
                          "--reasons"], capture_output=True, text=True, check=True, timeout=60)
    return tuple(out.stdout.strip().split(","))


def java_validate(event, items):
    """[(now_ms, payload bytes or None)] -> what EventParser.main prints, one str per item."""
    lines = [f"{now} {'-' if data is None else base64.b64encode(data).decode()}"
             for now, data in items]
    out = subprocess.run(
        ["java", "-cp", str(JAR), "adclick.flink.EventParser", event,
         str(config.MAX_PAYLOAD_BYTES), str(config.MIN_CLICK_TS_MS),
         str(config.MAX_FUTURE_SECONDS * 1000)],
        input="\n".join(lines) + "\n", capture_output=True, text=True, check=True, timeout=300)
    results = out.stdout.split("\n")[:-1]
    assert len(results) == len(items), out.stderr[-2000:]
    return results


def python_validate(event, now, data):
    valid, why = CONTRACTS[event].validate(data, now_ms=now)
    if why is not None:
        return why
    return "\t".join(["ok", *("-" if value is None else str(value) for value in valid)])


def dumps(fields):
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(4)
        at = rng.randint(0, len(data))
        if action == 0 and data:  # delete a few bytes
            del data[at:at + rng.randint(1, 4)]
        elif action == 1:  # splice in a fragment
            data[at:at] = rng.choice(FRAGMENTS)
        elif action == 2 and data:  # flip a byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        else:  # cut the end off
            del data[at:]
    return bytes(data)


def valid_events(event, rng, count):
    factory = generator.ClickFactory(seed=3, ads=1_000)
    events = []
    for _ in range(count):
        ts = NOW - rng.randrange(600_000)
        click = factory.click(ts)
        events.append({"click": click, "impression": factory.impression(ts),
                       "conversion": factory.conversion(click.click_id, ts)}[event])
    return events


def corpus(event):
    rng = random.Random(20261125)
    event_contract = CONTRACTS[event]
    valid = valid_events(event, rng, 300)
    items = [(NOW, event_contract.encode(one)) for one in valid]
    if event == "click":
        for kind in generator.MALFORMED_KINDS:
            for click in valid[:60]:
                items.append((NOW, generator.make_malformed(rng, kind, click, now=NOW).payload))
    for click in valid[:200]:  # each field set to each kind of value, or removed
        for field in event_contract.names:
            fields = click._asdict()
            if rng.random() < 0.1:
                del fields[field]
            else:
                fields[field] = rng.choice(VALUES)
            items.append((NOW, dumps(fields)))
    for click in valid[:100]:  # extra fields, escapes, nesting, repeats, whitespace
        fields = click._asdict()
        text = dumps(fields)
        items += [
            (NOW, dumps(dict(fields, note=rng.choice(VALUES), meta={"a": [1, {"b": None}]}))),
            (NOW, text.replace(b'_id"', b'\\u005fid"', 1)),
            (NOW, text.replace(b'"device"', b'"dev\\u0069ce"')
             .replace(b'"mobile"', b'"m\\u006fbile"')),
            (NOW, text[:-1] + f', "{event_contract.id_field}": "dup"}}'.encode()),
            (NOW, text[:-1] + b', "x": 1, "x": 2}'),
            (NOW, text[:-1] + b', "n": {"x": 1, "x": 2}}'),
            (NOW, b" \r\n\t" + text + b" \n"),
            (NOW, b"\xef\xbb\xbf" + text),
            (NOW, text + b"\n\x00"),
            (NOW, text[:-1] + b', "deep": ' + b"[" * 63 + b"]" * 63 + b"}"),
            (NOW, text[:-1] + b', "deep": ' + b"[" * 64 + b"]" * 64 + b"}"),
            # Brackets in strings are not nesting (ClickHouse counts depth outside strings).
            (NOW, text[:-1] + b', "s": "' + b"[" * 70 + b'\\\"{"}'),
            (NOW, text[:-1] + b', "d": ' + b'["]\\"",' * 62 + b"[" + b"]" * 63 + b"}"),
            (NOW, text[:-1] + b', "d": ' + b'["[",' * 64 + b"1" + b"]" * 64 + b"}"),
            (NOW, text[:-1] + b', "pair": "\\ud83d\\ude00", "lone": "\\udE00"}'),
            (NOW, text[:-1] + b', "pad": "' + b"\xc3\xa9" * rng.randint(1900, 2100) + b'"}'),
        ]
    seeds = [data for _, data in items]
    for _ in range(20_000):
        items.append((NOW, mutate(rng, rng.choice(seeds))))
    items += [(NOW, None), (NOW, b""), (NOW, b"{}"), (NOW, b"[]"), (NOW, b"\xef\xbb\xbf{}")]
    return items


@pytest.fixture(scope="module")
def java_available():
    if not JAR.exists():
        pytest.fail(f"{JAR} is missing: run `make jars`")


@pytest.mark.parametrize("event", EVENTS)
def test_reason_codes_and_their_order_are_the_same(java_available, event):
    assert java_reasons(event) == CONTRACTS[event].reasons


def java_lines(main_class, *args, flink=False):
    classpath = str(JAR) + (f":{FLINK_LIB}/*" if flink else "")
    out = subprocess.run(["java", "-cp", classpath, main_class, *args], capture_output=True,
                         text=True, check=True, timeout=60)
    return [line.split("\t") for line in out.stdout.splitlines()]


@pytest.mark.parametrize("event", EVENTS)
def test_each_fields_rule_is_the_contracts(java_available, event):
    # What EventParser applies, printed from its own rule table, against adclick.contract's
    # declaration: the same fields in the same order, each with the same reason, lengths and
    # characters, and the same id field.
    event_contract = CONTRACTS[event]
    lines = java_lines("adclick.flink.EventParser", event, "--contract")
    rules, id_line, limits = lines[:-2], lines[-2], lines[-1]
    assert [line[1] for line in rules] == list(event_contract.names)
    for line, field in zip(rules, event_contract.fields):
        kind, name = line[:2]
        if kind in ("text", "optionaltext"):
            assert isinstance(field, contract.OptionalText) == (kind == "optionaltext"), name
            allowed = {chr(c) for c in range(0x10000) if re.fullmatch(f"[{field.chars}]", chr(c))}
            assert (line[2], int(line[3]), int(line[4]), set(line[5])) == \
                (field.reasons[0], field.min_len, field.max_len, allowed), name
        elif kind == "time":
            assert isinstance(field, contract.EventTime), name
        elif kind == "count":
            assert isinstance(field, contract.Count), name
        else:
            assert kind == "oneof" and tuple(line[2].split(",")) == field.values, name
    assert id_line == ["id", event_contract.id_field]
    assert limits == ["limits", str(contract.MAX_DEPTH), str(contract.MAX_DIGITS)]


def test_the_formats_columns_and_defaults_are_the_jobs(java_available):
    lines = java_lines("adclick.flink.EventFormatFactory", flink=True)
    columns = {line[1]: line[2].split(",") for line in lines if line[0] == "columns"}
    assert columns == {event: [name for name, _ in job.source_columns(CONTRACTS[event])]
                       for event in EVENTS}
    lines = dict((line[0], line[1:]) for line in lines)
    assert lines["defaults"] == [str(config.MAX_PAYLOAD_BYTES), str(config.MIN_CLICK_TS_MS),
                                 str(config.MAX_FUTURE_SECONDS * 1000)]


@pytest.mark.parametrize("event", EVENTS)
def test_java_and_python_agree_on_every_payload(java_available, event):
    items = corpus(event)
    java = java_validate(event, items)
    python = [python_validate(event, now, data) for now, data in items]
    disagreements = [(data, j, p) for (_, data), j, p in zip(items, java, python) if j != p]
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:5]}"
    # The corpus exercises every reason and plenty of valid events.
    seen = {result.split("\t")[0] for result in python}
    assert seen == set(CONTRACTS[event].reasons) | {"ok"}
    assert sum(result.startswith("ok") for result in python) > 500


def clickhouse_validate(client, event, items):
    """What the raw store keeps of each item, in python_validate's form (a valid event's fields;
    None for a record it drops), through the schema's input table and rules view."""
    table = {event_type: f"raw_{name}" for name, event_type in config.Topics.INPUTS.items()}[event]
    client.command(f"TRUNCATE TABLE parity.{table}")
    client.insert(clickhouse_rules.input_table(table), [
        [b"" if data is None else data for _, data in items], [now for now, _ in items],
        [0] * len(items), list(range(len(items)))],
        column_names=list(clickhouse_rules.INPUT_COLUMNS), database="parity",
        column_oriented=True)
    names = CONTRACTS[event].names
    time_field = names.index(CONTRACTS[event].time_field)
    kept = {}
    for offset, *values in client.query(
            f"SELECT src_offset, {', '.join(names)} FROM parity.{table}").result_rows:
        values[time_field] = round(values[time_field].timestamp() * 1000)
        kept[offset] = "\t".join(["ok", *("-" if v is None else str(v) for v in values)])
    return [kept.get(offset) for offset in range(len(items))]


@pytest.mark.parametrize("event", EVENTS)
def test_clickhouse_keeps_exactly_what_python_accepts(chdb_url, event):  # noqa: F811
    client = fresh_database(chdb_url, "parity")
    items = corpus(event)
    kept = clickhouse_validate(client, event, items)
    python = [python_validate(event, now, data) for now, data in items]
    disagreements = [(data if data is None else data[:200], p, c)
                     for (_, data), p, c in zip(items, python, kept)
                     if c != (p if p.startswith("ok") else None)]
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:5]}"
    assert sum(result is not None for result in kept) > 500


def java_click_keys(click_ids):
    out = subprocess.run(["java", "-cp", str(JAR), "adclick.flink.EventKey"],
                         input="\n".join(click_ids) + "\n", capture_output=True, text=True,
                         check=True, timeout=60)
    return [tuple(int(part) for part in line.split()) for line in out.stdout.splitlines()]


def test_the_dedup_key_is_the_md5_of_the_click_id(java_available):
    # The job's dedup state is keyed by this fingerprint, so it must not change between
    # releases (a savepoint's keys would no longer match) and must tell click_ids apart.
    rng = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
    factory = generator.ClickFactory(seed=5, ads=10)
    click_ids = [factory.click(NOW).click_id for _ in range(200)]
    click_ids += ["x", "x" * 64, "a-1", "a-2", "1-a", "2-a"]
    click_ids += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 64)))
                  for _ in range(2000)]
    expected = []
    for click_id in click_ids:
        digest = hashlib.md5(click_id.encode("ascii")).digest()
        expected.append((int.from_bytes(digest[:8], "big", signed=True),
                         int.from_bytes(digest[8:], "big", signed=True)))
    assert java_click_keys(click_ids) == expected
    assert len(set(expected)) == len(set(click_ids))
