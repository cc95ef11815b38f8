"""How long a recalculation of an hour takes: `python -m bench.recalculation` (make bench runs it).

Fills an embedded store of its own with an hour of raw events at --rate clicks/s (the
freshness run's live rate by default), each click with --impressions impressions and a
conversion for one in twenty, spread over 1,000 ads, 4 countries and 4 devices, written by
ClickHouse itself (INSERT ... SELECT FROM numbers()); then times a dry run of that hour
(adclick.recalculation: the export, the batch job, the comparison). Prints one JSON object:
the events, the seconds of each part, and the microseconds per exported event. The store's
counts are empty, so every cell differs: the comparison's cost is its largest.
"""

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

from adclick import recalculation
from adclick import store

DATABASE = "recalculation_bench"
START = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
HOUR_MS = 3_600_000
# A click of the hour: the number-th at rate/s, one of 1,000 ads (a few hot), a person each.
CLICKS = """
INSERT INTO {db}.raw_clicks (minute, click_ts, click_id, ad_id, user_id, ip, country, device,
                             user_agent, src_partition, src_offset)
SELECT toStartOfMinute(ts), ts, concat('c', toString(number)),
       concat('ad-', toString(intDiv(number % 1000 * (number % 7 + 1), 7))),
       concat('u', toString(number)), IPv4NumToString(toUInt32(167772160 + number % 16777216)),
       ['KR', 'US', 'JP', 'DE'][number % 4 + 1], ['mobile', 'desktop', 'tablet', 'other'][
       intDiv(number, 4) % 4 + 1], NULL, number % 4, intDiv(number, 4)
FROM (SELECT number, fromUnixTimestamp64Milli(toInt64({start} + intDiv(number * 1000, {rate})),
                                              'UTC') AS ts
      FROM numbers({clicks}))
"""
IMPRESSIONS = """
INSERT INTO {db}.raw_impressions (minute, impression_ts, impression_id, ad_id, user_id, ip,
                                  country, device, user_agent, src_partition, src_offset)
SELECT toStartOfMinute(ts), ts, concat('c', toString(click), '-i', toString(number % {per})),
       concat('ad-', toString(intDiv(click % 1000 * (click % 7 + 1), 7))),
       concat('u', toString(click)), IPv4NumToString(toUInt32(167772160 + click % 16777216)),
       ['KR', 'US', 'JP', 'DE'][click % 4 + 1], ['mobile', 'desktop', 'tablet', 'other'][
       intDiv(click, 4) % 4 + 1], NULL, number % 4, intDiv(number, 4)
FROM (SELECT number, intDiv(number, {per}) AS click,
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(click * 1000, {rate})
                                               - number % {per} * 1000), 'UTC') AS ts
      FROM numbers({impressions}))
"""
CONVERSIONS = """
INSERT INTO {db}.raw_conversions (minute, conversion_ts, conversion_id, click_id, type,
                                  value_micros, src_partition, src_offset)
SELECT toStartOfMinute(ts), ts, concat('v', toString(click)), concat('c', toString(click)),
       'purchase', 1000000, number % 4, number
FROM (SELECT number, number * 20 AS click,
             fromUnixTimestamp64Milli(toInt64({start} + intDiv(click * 1000, {rate}) + 5000),
                                      'UTC') AS ts
      FROM numbers({conversions}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=int, default=2000, help="clicks per second (default 2,000)")
    p.add_argument("--impressions", type=int, default=2, help="impressions per click")
    p.add_argument("--minutes", type=int, default=60, help="the span recalculated")
    return p.parse_args(argv)


def fill(client, args):
    clicks = args.rate * args.minutes * 60
    values = {"db": DATABASE, "start": int(START.timestamp() * 1000), "rate": args.rate,
              "clicks": clicks, "per": args.impressions,
              "impressions": clicks * args.impressions, "conversions": clicks // 20}
    for statement in (CLICKS, IMPRESSIONS, CONVERSIONS):
        client.command(statement.format(**values))
    # Every minute closed, long enough ago to be published.
    client.insert("minutes_closed", [[START + timedelta(hours=3), "", 0, 0]], database=DATABASE,
                  column_names=["minute", "traffic_rules", "src_partition", "src_offset"])
    return {"clicks": clicks, "impressions": values["impressions"],
            "conversions": values["conversions"]}


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="adclick-recalculation-bench-") as tmp:
        client = store.connect(f"chdb://{Path(tmp) / 'store'}")
        store.apply_schema(client, DATABASE)
        began = time.monotonic()
        filled = fill(client, args)
        fill_s = time.monotonic() - began
        request = recalculation.parse_request({
            "from": recalculation.iso(START),
            "to": recalculation.iso(START + timedelta(minutes=args.minutes))})
        began = time.monotonic()
        result = recalculation.recalculate(client, DATABASE, request, work_dir=tmp)
        total_s = time.monotonic() - began
    events = sum(result["exported"].values())
    print(json.dumps({
        "rate_clicks_per_s": args.rate, "minutes": args.minutes,
        "impressions_per_click": args.impressions, "stored": filled,
        "exported": result["exported"], "fill_s": round(fill_s, 1),
        "export_s": result["seconds"]["export"], "total_s": round(total_s, 1),
        "batch_and_compare_s": round(total_s - result["seconds"]["export"], 1),
        "us_per_event": round(total_s / max(events, 1) * 1e6, 2),
        "cells_compared": len(result["changed"]),
        "clicks_recounted": result["totals"]["clicks"]["new"]
        + result["totals"]["invalid_clicks"]["new"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
