"""`make reconcile`: the brief's end-of-day check of the streaming counts against raw events.

For each stream, from the raw events the loader stored straight from the input topics
(validated in Python, independent of Flink), per (minute, ad_id):
- clicks: distinct raw click_ids against what the job counted plus what it set aside as too
  late; every unique valid click must be in exactly one of the two;
- impressions: the same, with distinct impression_ids;
- conversions: each distinct raw conversion attributed here to its raw click (the first record
  of that click_id, unless it was too late to count), when it came within the attribution
  window after it, against the conversions the job attributed. (A conversion whose click came
  more than the job's conversion wait after it is attributed here but not by the job: such a
  cell is reported too.)
The job counts each click and impression under one traffic label (valid, or the reason it is
not billed): "counted" is all of them, so a cell agrees only if valid + invalid = all; the
report also says how many were invalid, by reason. Prints a report; exits 1 on any mismatch.
What the job counted is read as published (published_click_counts, published_attributions):
a recalculation in force has corrected it.

Only minutes that can no longer change are checked: up to the latest complete minute minus the
allowed lateness (late corrections may still arrive for younger minutes).
"""

import argparse
import sys
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from adclick import config
from adclick import sql_client
from adclick import store

def counted_cells(event):
    """Distinct raw ids of event (click, impression) against the job's counts and too-late
    ones, per (minute, ad_id)."""
    return f"""
SELECT minute, ad_id, sum(raw) AS raw_unique, sum(counted) AS counted, sum(too_late) AS too_late
FROM (
    SELECT minute, ad_id, uniqExact({event}_id) AS raw, 0 AS counted, 0 AS too_late
    FROM {{db}}.raw_{event}s FINAL WHERE minute >= {{start}} AND minute < {{end}}
    GROUP BY minute, ad_id
    UNION ALL
    SELECT minute, ad_id, 0, sum({event}s), 0
    FROM {{db}}.published_click_counts WHERE minute >= {{start}} AND minute < {{end}}
    GROUP BY minute, ad_id
    UNION ALL
    SELECT minute, ad_id, 0, 0, uniqExact({event}_id)
    FROM {{db}}.late_{event}s FINAL WHERE minute >= {{start}} AND minute < {{end}}
    GROUP BY minute, ad_id
)
GROUP BY minute, ad_id
"""


# One row per (minute, ad_id) of each stream: what the raw events say must count
# (raw_unique), what the job counted, and what it kept as too late.
CELLS = {
    "clicks": counted_cells("click"),
    "impressions": counted_cells("impression"),
    # The first record (lowest partition, then offset) of an id stands for it, as the job
    # keeps the first it reads; the clicks looked at are those the range's conversions name,
    # from the attribution window before the range on.
    "conversions": """
SELECT minute, ad_id, sum(raw) AS raw_unique, sum(counted) AS counted, sum(too_late) AS too_late
FROM (
    SELECT toStartOfMinute(v.conversion_ts) AS minute, k.ad_id AS ad_id, count() AS raw,
           0 AS counted, 0 AS too_late
    FROM (
        SELECT conversion_id, argMin(click_id, (src_partition, src_offset)) AS click_id,
               argMin(conversion_ts, (src_partition, src_offset)) AS conversion_ts
        FROM {db}.raw_conversions FINAL WHERE minute >= {start} AND minute < {end}
        GROUP BY conversion_id
    ) AS v
    INNER JOIN (
        SELECT click_id, argMin(ad_id, (src_partition, src_offset)) AS ad_id,
               argMin(click_ts, (src_partition, src_offset)) AS click_ts
        FROM {db}.raw_clicks FINAL
        WHERE minute >= {clicks_start} AND minute < {end}
          AND click_id IN (SELECT click_id FROM {db}.raw_conversions
                           WHERE minute >= {start} AND minute < {end})
          AND click_id NOT IN (SELECT click_id FROM {db}.late_clicks FINAL
                               WHERE minute >= {clicks_start} AND minute < {end})
        GROUP BY click_id
    ) AS k ON v.click_id = k.click_id
    WHERE v.conversion_ts >= k.click_ts
      AND v.conversion_ts < k.click_ts + toIntervalSecond({window_s})
    GROUP BY minute, ad_id
    UNION ALL
    SELECT minute, ad_id, 0, count(), 0
    FROM {db}.published_attributions
    WHERE outcome = 'attributed' AND minute >= {start} AND minute < {end}
    GROUP BY minute, ad_id
)
GROUP BY minute, ad_id
""",
}
WHAT = {
    "clicks": "unique raw clicks",
    "impressions": "unique raw impressions",
    "conversions": "raw conversions of counted raw clicks in the window",
}

# Totals in one row, so the report never pulls every cell through the API's row cap.
TOTALS = """
SELECT uniqExact(minute), uniqExact(ad_id), sum(raw_unique), sum(counted), sum(too_late),
       countIf(raw_unique != counted + too_late)
FROM ({cells})
"""

MISMATCHES = """
SELECT toUnixTimestamp(minute), ad_id, raw_unique, counted, too_late
FROM ({cells}) WHERE raw_unique != counted + too_late ORDER BY minute, ad_id LIMIT 50
"""

# The counted clicks and impressions by label, for the report.
BY_LABEL = """
SELECT traffic, sum(clicks), sum(impressions)
FROM {db}.published_click_counts WHERE minute >= {start} AND minute < {end}
GROUP BY traffic ORDER BY traffic
"""

LATEST_COMPLETE = "SELECT toUnixTimestamp(max(minute)), count() FROM {db}.top_ads_minute"
EARLIEST_RAW = "SELECT toUnixTimestamp(min(minute)), count() FROM {db}.raw_clicks"


def sql_time(moment):
    """A DateTime literal for moment (a datetime we built, never user text)."""
    return f"toDateTime({int(moment.timestamp())}, 'UTC')"


def parse_minute(text):
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    if moment.second or moment.microsecond:
        raise argparse.ArgumentTypeError(f"{text} is not minute-aligned")
    return moment


def default_range(query, db, allowed_lateness_s):
    latest, minutes = query(LATEST_COMPLETE.format(db=db))[0]
    earliest, raw_rows = query(EARLIEST_RAW.format(db=db))[0]
    if not minutes or not raw_rows:
        return None
    end = datetime.fromtimestamp(latest, tz=timezone.utc) + timedelta(minutes=1)
    end -= timedelta(seconds=allowed_lateness_s)
    end = end.replace(second=0, microsecond=0)
    start = datetime.fromtimestamp(earliest, tz=timezone.utc)
    return (start, end) if start < end else None


def reconcile(query, db, start, end, attribution_window_s=config.ATTRIBUTION_WINDOW_SECONDS):
    """{stream: (totals, first mismatching cells)} for [start, end)."""
    results = {}
    for stream, cells in CELLS.items():
        cells = cells.format(
            db=db, start=sql_time(start), end=sql_time(end), window_s=int(attribution_window_s),
            clicks_start=sql_time(start - timedelta(seconds=attribution_window_s)))
        totals = query(TOTALS.format(cells=cells))[0]
        mismatches = query(MISMATCHES.format(cells=cells)) if totals[5] else []
        results[stream] = (totals, mismatches)
    labels = query(BY_LABEL.format(db=db, start=sql_time(start), end=sql_time(end)))
    return results, {label: (int(clicks), int(impressions))
                     for label, clicks, impressions in labels}


def report(results, start, end, out=sys.stdout):
    results, labels = results
    print(f"reconciliation of [{start:%Y-%m-%dT%H:%MZ}, {end:%Y-%m-%dT%H:%MZ}):", file=out)
    for stream, (totals, mismatches) in results.items():
        report_stream(stream, totals, mismatches, out)
    for index, stream in enumerate(("clicks", "impressions")):
        invalid = {label: counts[index] for label, counts in labels.items()
                   if label != "valid" and counts[index]}
        print(f"  counted {stream}: valid {labels.get('valid', (0, 0))[index]}, invalid "
              f"{sum(invalid.values())}" + "".join(f", {label} {n}"
                                                   for label, n in sorted(invalid.items())),
              file=out)


def report_stream(stream, totals, mismatches, out):
    minutes, ads, raw, counted, too_late, bad_cells = totals
    print(f"  {stream}: {minutes} minutes, {ads} ads", file=out)
    print(f"  {WHAT[stream]} {raw}, counted {counted}, too late (kept, not counted) "
          f"{too_late}", file=out)
    if not bad_cells:
        print(f"  OK: every one counted exactly once ({stream})", file=out)
        return
    print(f"  MISMATCH in {bad_cells} (minute, ad) cells "
          f"(lost = raw - counted - too late; negative = counted twice), first ones:", file=out)
    for minute, ad_id, raw_n, counted_n, late_n in mismatches:
        when = datetime.fromtimestamp(int(minute), tz=timezone.utc)
        print(f"    {when:%Y-%m-%dT%H:%MZ} {ad_id}: raw {raw_n}, counted {counted_n}, "
              f"too late {late_n}, lost {int(raw_n) - int(counted_n) - int(late_n)}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="adclick reconcile", description=__doc__.split("\n")[0])
    sql_client.add_connection_arguments(parser)
    parser.add_argument("--from", dest="start", type=parse_minute)
    parser.add_argument("--to", dest="end", type=parse_minute)
    parser.add_argument("--allowed-lateness-s", type=int, default=config.ALLOWED_LATENESS_SECONDS)
    parser.add_argument("--attribution-window-s", type=int,
                        default=config.ATTRIBUTION_WINDOW_SECONDS,
                        help="the job's: a conversion counts within this long after its click")
    args = parser.parse_args(argv)
    sql_client.check_connection_arguments(parser, args)
    args.database = store.check_identifier(args.database)

    def query(statement):
        return sql_client.run(args, statement)["rows"]

    if args.start and args.end:
        span = (args.start, args.end)
    else:
        span = default_range(query, args.database, args.allowed_lateness_s)
        if span is None:
            print("nothing to reconcile yet: no complete minute older than the allowed lateness")
            return 0
    try:
        results = reconcile(query, args.database, *span, args.attribution_window_s)
    except sql_client.Refused as error:
        print(f"adclick reconcile: {error}", file=sys.stderr)
        return 2
    report(results, *span)
    return 1 if any(totals[5] for totals, _ in results[0].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
