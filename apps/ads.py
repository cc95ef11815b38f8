"""`adclick ads load FILE`: store who owns each ad (the ads dimension of adclick.access).

FILE is CSV with the header ad_id,advertiser_id,name (`make demo` writes one from the
generator's ads). It goes through the running server's /v1/admin/ads with an admin key, or to
the store directly with --clickhouse-url, like `adclick keys` (apps.keys). An ad loaded again
takes its new advertiser and name.
"""

import argparse
import csv
import sys

from adclick import access
from adclick import sql_client
from apps.keys import Refused
from apps.keys import connection_of


def read_ads(path):
    """(ad_id, advertiser_id, name) rows of a CSV file with that header."""
    with open(path, newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        missing = set(access.AD_COLUMNS[:2]) - set(reader.fieldnames or ())
        if missing:
            raise Refused(f"{path}: the header must name ad_id, advertiser_id and name"
                          f" (missing: {', '.join(sorted(missing))})")
        return [tuple(row.get(column) or "" for column in access.AD_COLUMNS) for row in reader]


def write_ads(path, rows):
    """Write (ad_id, advertiser_id, name) rows as the CSV file read_ads reads."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(access.AD_COLUMNS)
        writer.writerows(rows)


def main(argv=None, out=sys.stdout):
    """`adclick ads load FILE`: store who owns each ad."""
    main = argparse.ArgumentParser(prog="adclick ads", description="the ads dimension")
    sql_client.add_connection_arguments(main)
    commands = main.add_subparsers(dest="command", required=True, metavar="command")
    load = commands.add_parser("load", help="store the ads of a CSV file (ad_id,advertiser_id,"
                                            "name)")
    load.add_argument("file")
    args = main.parse_args(argv)
    try:
        rows = read_ads(args.file)
        stored = connection_of(args).load_ads(rows)
    except (Refused, OSError) as error:
        print(f"adclick ads: {error}", file=sys.stderr)
        return 1
    print(f"stored {stored} ads", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
