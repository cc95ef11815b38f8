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
from adclick import store

RECOUNT = """
SELECT toUnixTimestamp(minute) AS minute, ad_id,
       sum(raw) AS raw_unique, sum(counted) AS counted, sum(too_late) AS too_late
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
ORDER BY minute, ad_id
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
    start = datetime.fromtimestamp(earliest, tz=timezone.utc)
    return (start, end) if start < end else None


def reconcile(query, db, start, end):
    """Rows (minute, ad_id, raw_unique, counted, too_late) and the mismatching ones."""
    rows = query(RECOUNT.format(db=db, start=sql_time(start), end=sql_time(end)))
    mismatches = [row for row in rows if row[2] != row[3] + row[4]]
    return rows, mismatches


def report(rows, mismatches, start, end, out=sys.stdout):
    raw = sum(r[2] for r in rows)
    counted = sum(r[3] for r in rows)
    too_late = sum(r[4] for r in rows)
    print(f"reconciliation of [{start:%Y-%m-%dT%H:%MZ}, {end:%Y-%m-%dT%H:%MZ}): "
          f"{len({r[0] for r in rows})} minutes, {len({r[1] for r in rows})} ads", file=out)
    print(f"  unique raw clicks {raw}, counted {counted}, too late (kept, not counted) "
          f"{too_late}", file=out)
    if not mismatches:
        print("  OK: every unique click counted exactly once", file=out)
        return
    print(f"  MISMATCH in {len(mismatches)} (minute, ad) cells "
          f"(lost = raw - counted - too_late; negative = counted twice):", file=out)
    for minute, ad_id, raw_n, counted_n, late_n in mismatches[:50]:
        when = datetime.fromtimestamp(minute, tz=timezone.utc)
        print(f"    {when:%Y-%m-%dT%H:%MZ} {ad_id}: raw {raw_n}, counted {counted_n}, "
              f"too late {late_n}, lost {raw_n - counted_n - late_n}", file=out)


def main(argv=None):
    from adclick.sql_cli import add_connection_arguments
    from adclick.sql_cli import querier

    parser = argparse.ArgumentParser(prog="adclick reconcile", description=__doc__.split("\n")[0])
    add_connection_arguments(parser)
    parser.add_argument("--database", default=config.DATABASE)
    parser.add_argument("--from", dest="start", type=parse_minute)
    parser.add_argument("--to", dest="end", type=parse_minute)
    parser.add_argument("--allowed-lateness-s", type=int, default=config.ALLOWED_LATENESS_SECONDS)
    args = parser.parse_args(argv)
    query = querier(args)
    args.database = store.check_identifier(args.database)
    if args.start and args.end:
        span = (args.start, args.end)
    else:
        span = default_range(query, args.database, args.allowed_lateness_s)
        if span is None:
            print("nothing to reconcile yet: no complete minute older than the allowed lateness")
            return 0
    rows, mismatches = reconcile(query, args.database, *span)
    report(rows, mismatches, *span)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
