"""Every SQL statement the HTTP API runs, with the small functions that run them.

Keeping the SQL in one module makes it reviewable in one place and testable without HTTP
(tests/test_queries.py). Values never become SQL text: each one is a ClickHouse server-side
parameter ({name:Type}, bound by clickhouse-connect), and so is the database name
({db:Identifier}), which adclick.store.check_identifier has vetted as well. Times cross the
boundary as Unix seconds so that no client or engine time zone can shift a minute.

The counts are read from ad_click_counts with FINAL, which collapses rows the loader replayed
(same Kafka coordinates); late = 1 rows are corrections and are summed like the others, and
the rows of recalculations count while they are in force (adclick.published).
Each row has a traffic label (valid, or why not: config.TRAFFIC_REASONS); every read takes the
labels it is asked for, valid only unless a caller says otherwise (api/params.py).
"""

from datetime import datetime
from datetime import timezone

from adclick import published
from adclick import rollup
from adclick import store

# The newest minute the job's watermark has passed: minutes_closed gets every minute once it
# is complete, with or without clicks (top_ads_minute, a minute with clicks; a store from before
# minutes_closed has only that), so the newest of both is the end of what the API can present
# as final.
LATEST_COMPLETE_MINUTE = """
SELECT toUnixTimestamp(maxOrNull(minute))
FROM (
    SELECT maxOrNull(minute) AS minute FROM {db:Identifier}.top_ads_minute
    UNION ALL
    SELECT maxOrNull(minute) FROM {db:Identifier}.minutes_closed
)
"""

# The filter arrays are always bound; an empty array means "any value". ClickHouse folds the
# empty() test to a constant, so one statement serves every combination of filters. The marker
# is where an advertiser's key gets its scope (_scoped): only the ads the ads table gives to it
# count, in every statement that reads counts.
_FILTERS = """
  AND (empty({countries:Array(String)}) OR country IN {countries:Array(String)})
  AND (empty({devices:Array(String)}) OR device IN {devices:Array(String)})
  /* advertiser */
"""
# The traffic labels counted (an empty array: all of them), on the rows of ad_click_counts.
_TRAFFIC = """
  AND (empty({traffic:Array(String)}) OR traffic IN {traffic:Array(String)})
"""
# On every read of ad_click_counts: the live rows and those of recalculations in force.
_PUBLISHED = published.COUNTS
# Put in only for an advertiser's key: for any other, a bound '' still built the set of the
# ads table at every query (measured with 100,000 ads: API 2's median 2.54 ms with it, 2.25 ms
# without, 200 runs each interleaved; it grows with the ads table).
_ADVERTISER = """AND ad_id IN (
      SELECT ad_id FROM {db:Identifier}.ads FINAL WHERE advertiser_id = {advertiser:String})"""

# API 1: one ad's clicks over [start, end). An ad with no rows sums to 0.
AD_CLICK_COUNT = """
SELECT sum(clicks)
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= toDateTime({start:UInt32}, 'UTC')
  AND minute < toDateTime({end:UInt32}, 'UTC')
  AND ad_id = {ad_id:String}
""" + _FILTERS + _TRAFFIC + _PUBLISHED

# API 2: the most clicked ads over [start, end), ranked from the per-minute counts (not from
# top_ads_minute, whose per-minute top-N cannot be added up into a top-N over several minutes).
POPULAR_ADS = """
SELECT ad_id, sum(clicks) AS count
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= toDateTime({start:UInt32}, 'UTC')
  AND minute < toDateTime({end:UInt32}, 'UTC')
""" + _FILTERS + _TRAFFIC + _PUBLISHED + """
GROUP BY ad_id
ORDER BY count DESC, ad_id ASC
LIMIT {limit:UInt32}
"""

# API 2 without filters over a range holding whole hours: the hours whose rollup is current
# (computed after their last change; adclick.rollup) are read from ad_counts_hourly, the other
# minutes from ad_click_counts. Both parts are chosen by key (hour IN, minute IN) so that each
# reads only its own granules. An hour's rows are those of its latest computation (each one
# writes all of the hour's ads with its computed_at), picked by (hour, computed_at) rather than
# with FINAL, which took 1.7x as long over a day of 90,000 ads an hour.
ROLLED_HOURS = """
SELECT toUnixTimestamp(hour), toUnixTimestamp64Micro(max(computed_at))
FROM {db:Identifier}.ad_counts_hourly_state
WHERE hour IN arrayMap(t -> toDateTime(t, 'UTC'), {hours:Array(UInt32)})
GROUP BY hour
HAVING max(computed_at) > max(changed_at)
"""

POPULAR_ADS_ROLLED_UP = """
SELECT ad_id, sum(clicks) AS count
FROM (
    SELECT ad_id, clicks
    FROM {db:Identifier}.ad_counts_hourly
    WHERE hour >= toDateTime({start:UInt32}, 'UTC')
      AND hour < toDateTime({end:UInt32}, 'UTC')
      AND (toUnixTimestamp(hour), toUnixTimestamp64Micro(computed_at))
          IN {versions:Array(Tuple(UInt32, Int64))}
      """ + _TRAFFIC + """
    UNION ALL
    SELECT ad_id, clicks
    FROM {db:Identifier}.ad_click_counts FINAL
    WHERE minute IN {minutes:Array(DateTime('UTC'))}
      AND minute >= toDateTime({start:UInt32}, 'UTC')
      AND minute < toDateTime({end:UInt32}, 'UTC')
      """ + _TRAFFIC + _PUBLISHED + """
)
GROUP BY ad_id
ORDER BY count DESC, ad_id ASC
LIMIT {limit:UInt32}
"""

# Impressions, clicks and conversions of each ad over [start, end), filtered, side by side: the
# counts from ad_click_counts, the conversions from the attributions that count (a conversion
# counts for its click's ad, country, device and traffic label, in the minute of its
# conversion_ts: CVR is valid conversions over valid clicks unless asked otherwise), with the
# changes of the recalculations in force (signed, adclick.published).
_FUNNEL_ROWS = """
    SELECT ad_id, impressions, clicks, toInt64(0) AS conversions
    FROM {db:Identifier}.ad_click_counts FINAL
    WHERE minute >= toDateTime({start:UInt32}, 'UTC')
      AND minute < toDateTime({end:UInt32}, 'UTC')
      AND (empty({ad_ids:Array(String)}) OR ad_id IN {ad_ids:Array(String)})
""" + _FILTERS + _TRAFFIC + _PUBLISHED + """
    UNION ALL
    SELECT ad_id, toInt64(0), toInt64(0), toInt64(1)
    FROM {db:Identifier}.conversion_attributions FINAL
    WHERE minute >= toDateTime({start:UInt32}, 'UTC')
      AND minute < toDateTime({end:UInt32}, 'UTC')
      AND (empty({ad_ids:Array(String)}) OR ad_id IN {ad_ids:Array(String)})
      AND outcome = 'attributed'
""" + _FILTERS + _TRAFFIC + """
    UNION ALL
    SELECT ad_id, toInt64(0), toInt64(0), """ + published.ATTRIBUTION_SIGN + \
    published.ATTRIBUTION_CHANGES + """
      AND minute >= toDateTime({start:UInt32}, 'UTC')
      AND minute < toDateTime({end:UInt32}, 'UTC')
      AND (empty({ad_ids:Array(String)}) OR ad_id IN {ad_ids:Array(String)})
      AND outcome = 'attributed'
""" + _FILTERS + _TRAFFIC

# One ad's (or, with no ad_ids, every ad's) impressions, clicks and conversions.
AD_METRICS = """
SELECT sum(impressions), sum(clicks), sum(conversions)
FROM (""" + _FUNNEL_ROWS + """)
"""

# Clicks and impressions by traffic label (every label), of one ad or of all (an empty ad_ids):
# the invalid share and its reasons.
TRAFFIC_BREAKDOWN = """
SELECT traffic, sum(clicks), sum(impressions)
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= toDateTime({start:UInt32}, 'UTC')
  AND minute < toDateTime({end:UInt32}, 'UTC')
  AND (empty({ad_ids:Array(String)}) OR ad_id IN {ad_ids:Array(String)})
""" + _FILTERS + _PUBLISHED + """
GROUP BY traffic
ORDER BY traffic
"""

# What popular_ads can rank by: the SQL of each (chosen from this table, never from input).
# A ratio with a zero divisor has no value; such ads are left out of a ranking by it.
RANKINGS = {
    "clicks": "clicks",
    "impressions": "impressions",
    "conversions": "conversions",
    "ctr": "clicks / impressions",
    "cvr": "conversions / clicks",
}
RATIO_DIVISORS = {"ctr": "impressions", "cvr": "clicks"}


def popular_by_sql(by):
    """API 2 ranked by one of RANKINGS, with the three counts of each ad; an ad needs
    min_impressions impressions (and a divisor above 0) to be ranked by a ratio."""
    floor = ""
    if by in RATIO_DIVISORS:
        floor = (f"HAVING impressions >= {{min_impressions:UInt64}}"
                 f" AND {RATIO_DIVISORS[by]} > 0")
    return f"""
SELECT ad_id, sum(impressions) AS impressions, sum(clicks) AS clicks,
       sum(conversions) AS conversions
FROM ({_FUNNEL_ROWS})
GROUP BY ad_id
{floor}
ORDER BY {RANKINGS[by]} DESC, ad_id ASC
LIMIT {{limit:UInt32}}
"""


# Clicks per minute over [start, end), of one ad or of all ads (an empty ad_ids), filtered.
# Minutes without clicks are absent; the API fills them in.
CLICKS_PER_MINUTE = """
SELECT toUnixTimestamp(minute) AS minute, sum(clicks)
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= toDateTime({start:UInt32}, 'UTC')
  AND minute < toDateTime({end:UInt32}, 'UTC')
  AND (empty({ad_ids:Array(String)}) OR ad_id IN {ad_ids:Array(String)})
""" + _FILTERS + _TRAFFIC + _PUBLISHED + """
GROUP BY minute
ORDER BY minute
"""

# What did not count on time, per minute over [start, end): clicks that came late but within
# the allowed lateness (correction rows, by their click's minute), clicks too late to count
# (by their click's minute) and records that were not clicks at all (by arrival).
LATE_PER_MINUTE = """
SELECT minute, sum(corrections), sum(too_late), sum(dead_letters)
FROM (
    SELECT toUnixTimestamp(minute) AS minute, sum(clicks) AS corrections,
           0 AS too_late, 0 AS dead_letters
    FROM {db:Identifier}.ad_click_counts FINAL
    WHERE late = 1
      AND minute >= toDateTime({start:UInt32}, 'UTC') AND minute < toDateTime({end:UInt32}, 'UTC')
    GROUP BY minute
    UNION ALL
    SELECT toUnixTimestamp(minute), 0, count(), 0
    FROM {db:Identifier}.late_clicks FINAL
    WHERE minute >= toDateTime({start:UInt32}, 'UTC') AND minute < toDateTime({end:UInt32}, 'UTC')
    GROUP BY minute
    UNION ALL
    SELECT toUnixTimestamp(toStartOfMinute(received_at)), 0, 0, count()
    FROM {db:Identifier}.dead_letters FINAL
    WHERE received_at >= toDateTime({start:UInt32}, 'UTC')
      AND received_at < toDateTime({end:UInt32}, 'UTC')
    GROUP BY 1
)
GROUP BY minute
ORDER BY minute
"""

HEALTH_CHECK = "SELECT 1"

# Settings every API read runs with (on top of the per-request limits): each partition is a
# day and a replayed row always lands in its twin's partition, so FINAL need not merge across.
READ_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}


def _epoch(moment):
    """Unix seconds of an aware datetime (the API only handles UTC ones)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the API works in UTC only")
    return int(moment.timestamp())


def _scoped(statement, parameters):
    """statement with the advertiser's scope in its filters, if the parameters name one."""
    if parameters.get("advertiser"):
        return statement.replace("/* advertiser */", _ADVERTISER)
    return statement


def _settings(settings):
    return {**READ_SETTINGS, **(settings or {})}


VALID = ("valid",)


def _range_parameters(db, start, end, countries, devices, advertiser=None, traffic=VALID):
    """traffic: the labels counted (VALID by default, () for all)."""
    return {
        "db": store.check_identifier(db),
        "start": _epoch(start),
        "end": _epoch(end),
        "countries": sorted(set(countries or ())),
        "devices": sorted(set(devices or ())),
        "advertiser": advertiser or "",
        "traffic": sorted(set(traffic)),
    }


def latest_complete_minute(client, db, settings=None):
    """The start of the newest complete minute in the store, or None if there is none yet."""
    rows = client.query(LATEST_COMPLETE_MINUTE, parameters={"db": store.check_identifier(db)},
                        settings=_settings(settings)).result_rows
    value = rows[0][0] if rows else None
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def ad_click_count(client, db, ad_id, start, end, countries=(), devices=(),
                   advertiser=None, settings=None, traffic=VALID):
    """Clicks of ad_id over [start, end), optionally only in countries and on devices, of the
    traffic labels asked for (valid by default)."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, traffic)
    parameters["ad_id"] = ad_id
    rows = client.query(_scoped(AD_CLICK_COUNT, parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def popular_ads(client, db, start, end, limit, countries=(), devices=(),
                advertiser=None, settings=None, traffic=VALID):
    """The limit most clicked ads over [start, end) as [(ad_id, count)], best first."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, traffic)
    parameters["limit"] = int(limit)
    query = POPULAR_ADS
    hours = rollup.whole_hours(parameters["start"], parameters["end"])
    if hours and not countries and not devices and not advertiser:
        versions = dict(client.query(
            ROLLED_HOURS, parameters={"db": parameters["db"], "hours": hours},
            settings=_settings(settings)).result_rows)
        if versions:
            query = POPULAR_ADS_ROLLED_UP
            parameters["versions"] = sorted(versions.items())
            # Every other minute of the range (its ends may be parts of minutes).
            first = parameters["start"] // 60 * 60
            parameters["minutes"] = [minute for minute in range(first, parameters["end"], 60)
                                     if rollup.hour_of(minute) not in versions]
    rows = client.query(_scoped(query, parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return [(ad_id, int(count)) for ad_id, count in rows]


def ratio(part, whole):
    """part / whole, or None when whole is 0 (a rate of nothing is not 0)."""
    return part / whole if whole else None


def ad_metrics(client, db, ad_id, start, end, countries=(), devices=(),
               advertiser=None, settings=None, traffic=VALID):
    """(impressions, clicks, conversions) of ad_id over [start, end), filtered."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, traffic)
    parameters["ad_ids"] = [ad_id]
    rows = client.query(_scoped(AD_METRICS, parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return tuple(int(value or 0) for value in rows[0]) if rows else (0, 0, 0)


def traffic_breakdown(client, db, start, end, ad_ids=(), countries=(), devices=(),
                      advertiser=None, settings=None):
    """{label: (clicks, impressions)} over [start, end), of every label with rows."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, ())
    parameters["ad_ids"] = sorted(set(ad_ids or ()))
    rows = client.query(_scoped(TRAFFIC_BREAKDOWN, parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return {label: (int(clicks), int(impressions)) for label, clicks, impressions in rows}


def popular_ads_by(client, db, by, start, end, limit, min_impressions, countries=(),
                   devices=(), advertiser=None, settings=None, traffic=VALID):
    """The limit best ads by `by` (a RANKINGS key) over [start, end) as
    [(ad_id, impressions, clicks, conversions)], best first."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, traffic)
    parameters.update({"ad_ids": [], "limit": int(limit), "min_impressions": int(min_impressions)})
    rows = client.query(_scoped(popular_by_sql(by), parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return [(ad_id, int(i), int(c), int(v)) for ad_id, i, c, v in rows]


def clicks_per_minute(client, db, start, end, ad_ids=(), countries=(), devices=(),
                      advertiser=None, settings=None, traffic=VALID):
    """{minute start (aware UTC datetime): clicks} over [start, end); minutes with none absent."""
    parameters = _range_parameters(db, start, end, countries, devices, advertiser, traffic)
    parameters["ad_ids"] = sorted(set(ad_ids or ()))
    rows = client.query(_scoped(CLICKS_PER_MINUTE, parameters), parameters=parameters,
                        settings=_settings(settings)).result_rows
    return {datetime.fromtimestamp(minute, tz=timezone.utc): int(clicks)
            for minute, clicks in rows}


def late_per_minute(client, db, start, end, settings=None):
    """{minute start: (late corrections, too late, dead letters)} over [start, end)."""
    parameters = _range_parameters(db, start, end, (), ())
    rows = client.query(LATE_PER_MINUTE, parameters=parameters,
                        settings=_settings(settings)).result_rows
    return {datetime.fromtimestamp(minute, tz=timezone.utc): tuple(int(n) for n in counts)
            for minute, *counts in rows}


def health_check(client, settings=None):
    """True if ClickHouse answers a trivial query."""
    rows = client.query(HEALTH_CHECK, settings=settings).result_rows
    return bool(rows) and rows[0][0] == 1
