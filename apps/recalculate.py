"""`adclick recalculate`: count closed minutes again from the raw store, and show the diff.

    adclick recalculate --from 2026-12-07T09:00:00Z --to 2026-12-07T10:00:00Z
                        [--ads ad-1,ad-2] [--reason TEXT] [--set ip_frequency_threshold=2]
                        --dry-run [--format json]

Asks the running `adclick serve` (its /v1/admin/recalculations API, with an admin key), which
owns the store, exports the raw events and runs the job's pipeline over them in Flink's batch
mode (adclick.recalculation), then waits for the result: the cells whose numbers differ from
what the store holds, per (minute, ad, metric), old, new and delta, and every metric's
totals. Only dry runs exist so far: nothing is written, and --dry-run is required.

Exit status: 0 when the numbers agree, 3 when some cells differ, 1 if refused or failed (the
reason on stderr), 2 on a usage error.
"""

import argparse
import json
import sys
import time

from adclick import recalculation
from adclick import sql_client

POLL_S = 2.0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="adclick recalculate", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="start", required=True, help="first minute (ISO 8601)")
    p.add_argument("--to", dest="end", required=True, help="minute after the last (ISO 8601)")
    p.add_argument("--ads", default="", help="comma-separated ad ids (default: every ad)")
    p.add_argument("--reason", default="", help="why, for the record")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a rule's setting for this run: "
                        + ", ".join(recalculation.SETTINGS))
    p.add_argument("--dry-run", action="store_true", help="compute and compare, write nothing")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--wait-s", type=float, default=3600, help="how long to wait for the result")
    sql_client.add_connection_arguments(p)
    args = p.parse_args(argv)
    if not args.dry_run:
        p.error("only dry runs exist so far: give --dry-run")
    if args.clickhouse_url:
        p.error("a recalculation runs in `adclick serve`; give --api-url, not --clickhouse-url")
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not value.isdigit():
            p.error(f"--set {item}: NAME=VALUE with a whole number")
        settings[name] = int(value)
    args.body = {"from": args.start, "to": args.end, "reason": args.reason, "dry_run": True,
                 "ads": [ad for ad in args.ads.split(",") if ad], "settings": settings}
    return args


def run(args):
    base = args.api_url.rstrip("/") + "/v1/admin/recalculations"
    hints = {401: " (give --api-key or set ADCLICK_API_KEY)", 403: " (needs an admin key)"}
    started = sql_client.call_api("POST", base, args.api_key, args.timeout, hints,
                                  json=args.body)
    deadline = time.monotonic() + args.wait_s
    while True:
        run_ = sql_client.call_api("GET", f"{base}/{started['id']}", args.api_key, args.timeout,
                                   hints)
        if run_["status"] != "running":
            break
        if time.monotonic() > deadline:
            raise sql_client.Refused(f"still running after {args.wait_s:.0f} s: {base}/"
                                     f"{started['id']}")
        time.sleep(POLL_S)
    if run_["status"] != "done":
        raise sql_client.Refused(f"recalculation {run_['status']}: {run_.get('error', '')}")
    return run_["result"]


def report(result):
    lines = [f"recalculation of {result['from']} .. {result['to']}"
             + (f" for {', '.join(result['ads'])}" if result["ads"] else " for every ad")
             + f" (dry run, {result['seconds']['total']:.0f} s)",
             "exported: " + ", ".join(f"{n} {name}" for name, n in result["exported"].items()),
             f"{'metric':<22}{'old':>12}{'new':>12}{'delta':>10}"]
    for metric, total in result["totals"].items():
        lines.append(f"{metric:<22}{total['old']:>12}{total['new']:>12}{total['delta']:>+10}")
    lines.append(f"{len(result['changed'])} cell(s) differ")
    for cell in result["changed"]:
        lines.append(f"  {cell['minute']} {cell['ad_id']:<20} {cell['metric']:<20}"
                     f" {cell['old']:>8} -> {cell['new']:<8} ({cell['delta']:+})")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run(args)
    except sql_client.Refused as refused:
        print(f"adclick recalculate: {refused}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.format == "json" else report(result))
    return 3 if result["changed"] else 0


if __name__ == "__main__":
    sys.exit(main())
