"""The contract's rules in ClickHouse SQL: the raw store checks events in bulk, not in Python.

The loader hands each input record to ClickHouse as it came (its bytes, the Kafka record's
timestamp and coordinates) by inserting into `raw_<events>_input`, a Null table. A materialized
view, written here from adclick.contract, parses the JSON once, applies the contract's rules and
writes the valid events into `raw_<events>`. The records of rejected events are dropped: their
dead letters are the job's (the raw store is the reconciliation's independent recount, so it
must accept exactly what the job and adclick.contract accept; tests/test_contract_parity.py runs
all three over the same payloads).

How each rule is said in SQL (one parse per record, JSONExtractKeysAndValuesRaw, which is empty
for anything but a strictly valid JSON object: the fields then fail as absent):
- oversized: the payload's length in bytes;
- not_json_object: the parse (which also rejects an escaped lone surrogate), no byte order
  mark (which it skips), and the nesting depth, counted outside strings only when the
  payload holds more than MAX_DEPTH brackets (a rare payload);
- duplicate_field: the top-level keys (decoded) are distinct;
- a field's value comes back re-serialized (a string quoted, with escapes decoded), so a text
  rule is a regex over the quoted value; only a number's JSON type needs another look at the
  payload, because an integral float (1.0) comes back as 1.
"""

from adclick import config
from adclick import contract

INPUT_COLUMNS = ("payload", "received_ms", "src_partition", "src_offset")


def input_table(table):
    """The Null table the loader inserts an input topic's records into, for raw table `table`."""
    return f"{table}_input"


def _quoted(text):
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _raw(name):
    return f"raw_{name}"


def _integer(name, raw):
    """The field is a JSON integer of at most MAX_DIGITS characters (a minus sign counted, which
    every rule below rejects anyway)."""
    return (f"JSONType(payload, {_quoted(name)}) IN ('Int64', 'UInt64') "
            f"AND length({raw}) <= {contract.MAX_DIGITS}")


def field_rule(field):
    """(condition, value) of one field, over the column raw_<name> (the re-serialized value,
    '' when absent) and the input's columns."""
    raw = _raw(field.name)
    if isinstance(field, contract.OptionalText):
        # Its characters include '\\' and '"', which the raw value keeps escaped: the rule
        # reads the decoded string.
        pattern = f'^[{field.chars}]{{{field.min_len},{field.max_len}}}$'
        decoded = f"JSONExtractString({raw})"
        return (f"({raw} IN ('', 'null') OR (startsWith({raw}, '\"') "
                f"AND match({decoded}, {_quoted(pattern)})))",
                f"if({raw} IN ('', 'null'), NULL, {decoded})")
    if isinstance(field, contract.Text):
        pattern = f'^"[{field.chars}]{{{field.min_len},{field.max_len}}}"$'
        return f"match({raw}, {_quoted(pattern)})", f"substring({raw}, 2, length({raw}) - 2)"
    if isinstance(field, contract.OneOf):
        values = ", ".join(_quoted(f'"{value}"') for value in field.values)
        return f"{raw} IN ({values})", f"substring({raw}, 2, length({raw}) - 2)"
    if isinstance(field, contract.EventTime):
        ms = f"toInt64OrZero({raw})"
        condition = (f"{_integer(field.name, raw)} AND {ms} >= {config.MIN_CLICK_TS_MS} "
                     f"AND {ms} <= received_ms + {config.MAX_FUTURE_SECONDS * 1000}")
        return condition, f"fromUnixTimestamp64Milli({ms}, 'UTC')"
    if isinstance(field, contract.Count):
        condition = (f"({raw} IN ('', 'null') OR ({_integer(field.name, raw)} "
                     f"AND NOT startsWith({raw}, '-')))")
        return condition, f"if({raw} IN ('', 'null'), NULL, toUInt64OrZero({raw}))"
    raise TypeError(f"no ClickHouse rule for {type(field).__name__}")


# Nesting depth of a valid JSON text: the running count of brackets, strings taken out first.
_DEPTH = ("arrayMax(arrayCumSum(arrayMap(c -> multiIf(c IN ('[', '{'), 1, c IN (']', '}'), -1, 0),"
          " splitByString('', replaceRegexpAll(payload, '\"([^\"\\\\\\\\]|\\\\\\\\.)*\"', '')))))")


def checked_select(event_contract, source):
    """SELECT of the rows of raw table columns (minute, the fields, src_partition, src_offset)
    for the valid events among source's records."""
    extract = ["JSONExtractKeysAndValuesRaw(payload) AS fields", "fields.1 AS keys"]
    extract += [f"fields.2[indexOf(keys, {_quoted(name)})] AS {_raw(name)}"
                for name in event_contract.names]
    conditions = [
        f"length(payload) <= {config.MAX_PAYLOAD_BYTES}",
        "NOT startsWith(payload, unhex('EFBBBF'))",  # the parser would skip a byte order mark
        "arrayUniq(keys) = length(keys)",
        f"(countSubstrings(payload, '[') + countSubstrings(payload, '{{') <= {contract.MAX_DEPTH}"
        f" OR {_DEPTH} <= {contract.MAX_DEPTH})",
    ]
    values = []
    for field in event_contract.fields:
        condition, value = field_rule(field)
        conditions.append(condition)
        values.append(f"{value} AS {field.name}")
    time_field = event_contract.time_field
    return "\n".join([
        f"SELECT toStartOfMinute({time_field}) AS minute, *",
        "FROM (",
        "    SELECT " + ",\n        ".join(values) + ", src_partition, src_offset",
        "    FROM (",
        "        SELECT " + ",\n            ".join(extract) + ", payload, received_ms, "
        "src_partition, src_offset",
        f"        FROM {source}",
        "    )",
        "    WHERE " + "\n      AND ".join(conditions),
        ")",
    ])


def statements(db):
    """The DDL of each raw table's input and rules view (after the tables themselves). The view
    is made anew at every start, so a changed rule takes effect with the release that changes
    it; the loader inserts only after the schema is applied."""
    for name, event in config.Topics.INPUTS.items():
        table = f"raw_{name}"
        source = f"{db}.{input_table(table)}"
        yield (f"CREATE TABLE IF NOT EXISTS {source} (payload String, received_ms Int64, "
               "src_partition UInt32, src_offset UInt64) ENGINE = Null")
        yield f"DROP VIEW IF EXISTS {db}.{table}_rules"
        yield (f"CREATE MATERIALIZED VIEW {db}.{table}_rules TO {db}.{table} AS\n"
               + checked_select(contract.CONTRACTS[event], source))
