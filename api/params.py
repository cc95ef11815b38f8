"""Request parsing and validation: query strings and SQL bodies in, checked values out.

Every rule of the API's input lives here, so that the views stay short and every 400 names the
parameter that is wrong. Nothing is coerced silently: a parameter is either exactly right or
the request is refused (unknown or repeated parameters included), which keeps a typo such as
`?minute=5` from quietly answering a different question.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from adclick import config
from adclick.contract import CLICK
from api.errors import ApiError

# Filters and paths accept what the event contract accepts.
AD_ID = CLICK.field("ad_id")
COUNTRY = CLICK.field("country")
DEVICES = CLICK.field("device").values
INTEGER = re.compile(r"^[0-9]{1,9}$")
TIMESTAMP = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?(?:Z|\+00:00)$")
MAX_FILTER_VALUES = 50
POPULAR_DEFAULT = 100
POPULAR_MAX = 1000
# Ranked by CTR or CVR, an ad needs this many impressions: with a handful, one click is a
# CTR of 10 % or more and would lead the list.
MIN_IMPRESSIONS_DEFAULT = 100
INTEGER_MAX = 999_999_999  # the largest INTEGER
# ClickHouse's DateTime ends in 2106; a day's margin keeps every [from, to) representable.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2106, 1, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
RANGE_PARAMETERS = ("minutes", "from", "to")
FILTER_PARAMETERS = ("country", "device", "traffic", "reason")
TRAFFIC = ("valid", "invalid", "all")


@dataclass(frozen=True)
class RangeRequest:
    """Either `minutes` (relative to the latest complete minute) or an explicit [start, end)."""

    minutes: int = None
    start: datetime = None
    end: datetime = None


@dataclass(frozen=True)
class Filters:
    """Countries and devices to count (empty: all), and the advertiser whose ads alone count
    (an advertiser's key; None: every ad). Part of every cached answer's key."""

    countries: tuple = ()
    devices: tuple = ()
    advertiser: str = None
    # The traffic labels counted: valid only unless asked (() counts every label).
    traffic: tuple = ("valid",)


def check_known(args, allowed):
    """400 naming any query parameter not in allowed, or given more than once."""
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ApiError(f"unknown query parameter(s): {', '.join(unknown)}"
                       f" (allowed: {', '.join(allowed)})")
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        raise ApiError(f"query parameter(s) given more than once: {', '.join(repeated)}"
                       " (use one comma-separated value)")


def integer(args, name, default, low, high):
    """args[name] as an int in [low, high], or default if absent."""
    text = args.get(name)
    if text is None:
        return default
    if not INTEGER.match(text) or not low <= int(text) <= high:
        raise ApiError(f"'{name}' must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def choice(args, name, default, allowed):
    """args[name] as one of allowed, or default if absent."""
    text = args.get(name)
    if text is None:
        return default
    if text not in allowed:
        raise ApiError(f"'{name}' must be one of {', '.join(allowed)}, got {text[:80]!r}")
    return text


def timestamp(args, name):
    """args[name] as an aware UTC datetime on a whole minute."""
    text = args[name]
    match = TIMESTAMP.match(text)
    if not match:
        raise ApiError(f"'{name}' must be an ISO 8601 UTC time like 2026-11-24T10:00:00Z,"
                       f" got {text!r}")
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as error:
        raise ApiError(f"'{name}' is not a valid time ({error}), got {text!r}") from None
    if second:
        raise ApiError(f"'{name}' must be on a whole minute (seconds 00), got {text!r}")
    if not EARLIEST <= moment <= LATEST:
        raise ApiError(f"'{name}' must be between {iso(EARLIEST)} and {iso(LATEST)}")
    return moment


def time_range(args, max_minutes):
    """The requested range: minutes=M (default 1) or from/to, never both."""
    given = [name for name in RANGE_PARAMETERS if name in args]
    if "minutes" in given and len(given) > 1:
        raise ApiError("give either 'minutes' or 'from' and 'to', not both")
    if "from" in args or "to" in args:
        if "from" not in args or "to" not in args:
            missing = "to" if "from" in args else "from"
            raise ApiError(f"'{missing}' is required with '{given[0]}'")
        start, end = timestamp(args, "from"), timestamp(args, "to")
        if start >= end:
            raise ApiError("'from' must be earlier than 'to'")
        if end - start > max_minutes * MINUTE:
            raise ApiError(f"'from' to 'to' spans more than {max_minutes} minutes")
        return RangeRequest(start=start, end=end)
    return RangeRequest(minutes=integer(args, "minutes", 1, 1, max_minutes))


def _values(args, name):
    text = args.get(name)
    if text is None:
        return ()
    values = text.split(",")
    if len(values) > MAX_FILTER_VALUES:
        raise ApiError(f"'{name}' takes at most {MAX_FILTER_VALUES} values")
    return tuple(values)


def filters(args, advertiser=None):
    """The country and device filters (comma-separated, several values each), scoped to
    advertiser's ads if given."""
    countries = _values(args, "country")
    for value in countries:
        if COUNTRY.check(value, None):
            raise ApiError("'country' must be comma-separated ISO 3166 codes of 2 upper-case"
                           f" letters like KR,JP; got {value!r}")
    devices = _values(args, "device")
    for value in devices:
        if value not in DEVICES:
            raise ApiError(f"'device' values must be among {', '.join(DEVICES)}; got {value!r}")
    return Filters(countries=tuple(sorted(set(countries))), devices=tuple(sorted(set(devices))),
                   advertiser=advertiser, traffic=traffic_labels(args))


def traffic_labels(args):
    """The labels a request counts: `traffic` valid (the default: what is billed), invalid
    (every reason) or all, narrowed by `reason` (comma-separated, invalid traffic only)."""
    traffic = choice(args, "traffic", None, TRAFFIC)
    reasons = _values(args, "reason")
    for value in reasons:
        if value not in config.TRAFFIC_REASONS:
            raise ApiError(f"'reason' values must be among {', '.join(config.TRAFFIC_REASONS)};"
                           f" got {value!r}")
    if reasons:
        if traffic not in (None, "invalid"):
            raise ApiError(f"'reason' selects invalid traffic; it cannot go with traffic={traffic}")
        return tuple(sorted(set(reasons)))
    if traffic == "all":
        return ()
    if traffic == "invalid":
        return tuple(sorted(config.TRAFFIC_REASONS))
    return ("valid",)


def ad_id(value):
    """The ad id of a path, as the event contract allows it."""
    if AD_ID.check(value, None):
        raise ApiError(f"'ad_id' must be {AD_ID.describe()}, got {value[:80]!r}")
    return value


def minutes_of(start, end):
    """The start of every minute of [start, end), oldest first."""
    minute = start
    while minute < end:
        yield minute
        minute += MINUTE


def iso(moment):
    """An aware datetime as ISO 8601 UTC with a Z (2026-11-24T10:00:00Z)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_object(body, allowed, required=(), example=None):
    """A request body that must be a JSON object of only the allowed fields, with the required
    ones: 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object" + (f" like {example}" if example else ""))
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(f"unknown body field(s): {', '.join(unknown)}"
                       f" (allowed: {', '.join(allowed)})")
    missing = [name for name in required if name not in body]
    if missing:
        raise ApiError(f"missing body field(s): {', '.join(missing)}")
    return body


def moment(body, name):
    """body[name] as an aware UTC datetime (ISO 8601 with its zone), or None if absent or
    null."""
    text = body.get(name)
    if text is None:
        return None
    if not isinstance(text, str):
        raise ApiError(f"'{name}' must be an ISO 8601 UTC time like 2026-12-31T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"'{name}' must be an ISO 8601 UTC time like 2026-12-31T00:00:00Z,"
                       f" got {text[:80]!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(f"'{name}' must say its zone (Z for UTC), got {text[:80]!r}")
    return parsed.astimezone(timezone.utc)


def sql_query(body, max_chars):
    """The single statement of a POST /v1/sql body {"query": "..."}."""
    query = json_object(body, ("query",), example='{"query": "SELECT 1"}').get("query")
    if not isinstance(query, str):
        raise ApiError("'query' is required and must be a string")
    if len(query) > max_chars:
        raise ApiError(f"'query' is longer than {max_chars} characters")
    statement = single_statement(query)
    if not statement:
        raise ApiError("'query' is empty")
    return statement


def single_statement(text):
    """text without trailing semicolons; 400 if it holds more than one statement.

    A small lexer skips string literals, quoted identifiers and comments, so a semicolon
    inside them does not count. Whatever follows the first top-level semicolon must be
    blank or comments. (The engine's readonly session refuses writes in any case; this
    gives a clear error and keeps the appended SETTINGS/FORMAT clauses on one statement.)
    """
    end = _first_top_level_semicolon(text)
    if end is None:
        return text.strip() if _strip_blank(text) else ""
    rest = text[end + 1:]
    if _strip_blank(rest.replace(";", " ")):
        raise ApiError("'query' must be a single statement (found more after ';')")
    return text[:end].strip() if _strip_blank(text[:end]) else ""


def _first_top_level_semicolon(text):
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            i = _skip_quoted(text, i, c)
        elif text.startswith(("--", "# ", "#!"), i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif c == "$" and _heredoc_tag(text, i):
            tag = _heredoc_tag(text, i)
            close = text.find(tag, i + len(tag))
            i = n if close < 0 else close + len(tag)
        elif c == ";":
            return i
        else:
            i += 1
    return None


def _skip_quoted(text, i, quote):
    # ClickHouse escapes a quote by doubling it or with a backslash.
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == quote:
            if text.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(text)


def _heredoc_tag(text, i):
    match = re.match(r"\$[A-Za-z0-9_]*\$", text[i:])
    return match.group(0) if match else None


def _strip_blank(text):
    """text without whitespace and comments (empty if that is all it holds)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith(("--", "# ", "#!"), i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif text[i].isspace():
            i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
