"""`adclick sql`: run one read-only SQL statement against the store and print the result.

By default the statement goes through the running `adclick serve`'s API (POST /v1/sql, with an
API key), read-only with time and row limits; with --clickhouse-url it runs on that ClickHouse
server directly, still with readonly=1 (adclick/sql_client.py does either).

    adclick sql "SELECT ad_id, sum(clicks) FROM ad_click_counts FINAL GROUP BY ad_id LIMIT 5"
    adclick sql -f sql/analyses/02_top_ads_per_device_over_a_day.sql --format json
    echo "SELECT 1" | adclick sql

Exit status: 0 on success, 1 if the statement is refused or fails (the reason on stderr),
2 on a usage error.
"""

import argparse
import json
import sys

from adclick import sql_client

MAX_CELL_CHARS = 80


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="adclick sql", description=__doc__.split("\n")[0])
    parser.add_argument("query", nargs="?",
                        help="the statement (default: --file, else standard input)")
    parser.add_argument("-f", "--file", help="read the statement from this file")
    sql_client.add_connection_arguments(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.query is not None and args.file:
        parser.error("give the statement or --file, not both")
    sql_client.check_connection_arguments(parser, args)
    return args


def read_query(args):
    """The statement from the argument, --file, or standard input."""
    if args.file:
        with open(args.file, encoding="utf-8") as source:
            return source.read()
    if args.query is not None and args.query != "-":
        return args.query
    if sys.stdin.isatty():
        raise sql_client.Refused(
            "no statement: give one as an argument, with --file, or on standard input")
    return sys.stdin.read()


def _cell(value):
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


def format_table(body):
    """The result as an aligned text table with a row count (numbers right-aligned)."""
    columns = body["columns"]
    cells = [[_cell(value) for value in row] for row in body["rows"]]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in
              enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in body["rows"] if row[i] is not None) and bool(body["rows"])
               for i in range(len(columns))]

    def line(values):
        return " | ".join(value.rjust(width) if is_number else value.ljust(width)
                          for value, width, is_number in zip(values, widths, numeric)).rstrip()

    out = []
    if columns:
        out.append(line(columns))
        out.append("-+-".join("-" * width for width in widths))
        out.extend(line(row) for row in cells)
    count = body.get("row_count", len(body["rows"]))
    footer = f"({count} row{'' if count == 1 else 's'}"
    if body.get("truncated"):
        footer += f"; {body.get('note', 'truncated')}"
    out.append(footer + ")")
    return "\n".join(out)


def main(argv=None):
    """Run `adclick sql`; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        query = read_query(args)
        body = sql_client.run(args, query)
    except (sql_client.Refused, OSError) as error:
        print(f"adclick sql: {error}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        print(format_table(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
