"""`adclick recalculate`: count closed minutes again from the raw store; show or publish the diff.

    adclick recalculate --from 2026-12-07T09:00:00Z --to 2026-12-07T10:00:00Z
                        [--ads ad-1,ad-2] [--set ip_frequency_threshold=2]
                        (--dry-run | --reason TEXT) [--format json]
    adclick recalculate --rollback ID --reason TEXT

Asks the running `adclick serve` (its /v1/admin/recalculations API, with an admin key), which
owns the store, exports the raw events and runs the job's pipeline over them in Flink's batch
mode (adclick.recalculation), then waits for the result: the cells whose numbers differ from
what the store holds, per (minute, ad, metric), old, new and delta, and every metric's
totals. With --dry-run nothing is written; without it the differences are published (all at
once, recorded with the reason, which is then required) and the record's id printed, which
--rollback takes to undo it.

Exit status: 0 when the numbers agree (or a publish or rollback is done), 3 when a dry run
finds cells that differ, 1 if refused or failed (the reason on stderr), 2 on a usage error.
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
    p.add_argument("--from", dest="start", help="first minute (ISO 8601)")
    p.add_argument("--to", dest="end", help="minute after the last (ISO 8601)")
    p.add_argument("--rollback", type=int, metavar="ID", help="undo published recalculation ID")
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
    if args.rollback is None and not (args.start and args.end):
        p.error("give --from and --to (or --rollback ID)")
    if args.rollback is not None and (args.start or args.end or args.dry_run):
        p.error("--rollback takes no range and no --dry-run")
    if not args.dry_run and not args.reason:
        p.error("a publish or rollback is recorded with its reason: give --reason (or"
                " --dry-run)")
    if args.clickhouse_url:
        p.error("a recalculation runs in `adclick serve`; give --api-url, not --clickhouse-url")
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not value.isdigit():
            p.error(f"--set {item}: NAME=VALUE with a whole number")
        settings[name] = int(value)
    args.body = {"from": args.start, "to": args.end, "reason": args.reason,
                 "dry_run": args.dry_run,
                 "ads": [ad for ad in args.ads.split(",") if ad], "settings": settings}
    return args


def run(args):
    base = args.api_url.rstrip("/") + "/v1/admin/recalculations"
    hints = {401: " (give --api-key or set ADCLICK_API_KEY)", 403: " (needs an admin key)"}
    if args.rollback is not None:
        return sql_client.call_api("POST", f"{base}/rollback", args.api_key, args.timeout,
                                   hints, json={"id": args.rollback, "reason": args.reason})
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
    if "rolls_back" in result:
        return (f"recalculation {result['rolls_back']} rolled back (record {result['id']}):"
                f" {result['count_rows']} count rows, {result['attribution_rows']} attribution"
                " rows written")
    published = result.get("published")
    lines = [f"recalculation of {result['from']} .. {result['to']}"
             + (f" for {', '.join(result['ads'])}" if result["ads"] else " for every ad")
             + (f" (published as {published['id']}" if published else " (dry run")
             + f", {result['seconds']['total']:.0f} s)",
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
    return 3 if args.dry_run and result["changed"] else 0


if __name__ == "__main__":
    sys.exit(main())
