"""`make reconcile`: the brief's end-of-day check of the streaming counts against raw clicks.

Recounts distinct click_ids per (minute, ad_id) from raw_clicks (stored by the loader straight
from the input topic, validated in Python, independent of Flink) and compares them with what
the job counted plus what it set aside as too late. Every unique valid click must be in exactly
one of the two. Prints a report; exits 1 on any mismatch.

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

# One row per (minute, ad_id): distinct raw click_ids, counted clicks, too-late clicks.
CELLS = """
SELECT minute, ad_id, sum(raw) AS raw_unique, sum(counted) AS counted, sum(too_late) AS too_late
FROM (
    SELECT minute, ad_id, uniqExact(click_id) AS raw, 0 AS counted, 0 AS too_late
    FROM {db}.raw_clicks FINAL WHERE minute >= {start} AND minute < {end} GROUP BY minute, ad_id
    UNION ALL
    SELECT minute, ad_id, 0, sum(clicks), 0
    FROM {db}.ad_click_counts FINAL WHERE minute >= {start} AND minute < {end}
    GROUP BY minute, ad_id
    UNION ALL
    SELECT minute, ad_id, 0, 0, uniqExact(click_id)
    FROM {db}.late_clicks FINAL WHERE minute >= {start} AND minute < {end} GROUP BY minute, ad_id
)
GROUP BY minute, ad_id
"""

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


def reconcile(query, db, start, end):
    """(totals, first mismatching cells) for [start, end)."""
    cells = CELLS.format(db=db, start=sql_time(start), end=sql_time(end))
    totals = query(TOTALS.format(cells=cells))[0]
    mismatches = query(MISMATCHES.format(cells=cells)) if totals[5] else []
    return totals, mismatches


def report(totals, mismatches, start, end, out=sys.stdout):
    minutes, ads, raw, counted, too_late, bad_cells = totals
    print(f"reconciliation of [{start:%Y-%m-%dT%H:%MZ}, {end:%Y-%m-%dT%H:%MZ}): "
          f"{minutes} minutes, {ads} ads", file=out)
    print(f"  unique raw clicks {raw}, counted {counted}, too late (kept, not counted) "
          f"{too_late}", file=out)
    if not bad_cells:
        print("  OK: every unique click counted exactly once", file=out)
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
        totals, mismatches = reconcile(query, args.database, *span)
    except sql_client.Refused as error:
        print(f"adclick reconcile: {error}", file=sys.stderr)
        return 2
    report(totals, mismatches, *span)
    return 1 if totals[5] else 0


if __name__ == "__main__":
    sys.exit(main())
