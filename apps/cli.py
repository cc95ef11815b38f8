"""The `adclick` command: one entry point for the project's processes and tools."""

import argparse
import logging
import sys

from apps import server


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    tools = {
        "generate": ("apps.generate", "send click events to Kafka"),
        "sql": ("apps.sql", "run read-only SQL against the store"),
        "reconcile": ("apps.reconcile", "recount raw events and compare with the counts"),
        "recalculate": ("apps.recalculate",
                        "count closed minutes again from the raw store (a dry run's diff)"),
        "topics": ("adclick.topics", "create the Kafka topics"),
        "keys": ("apps.keys", "create, list, revoke and expire API keys"),
        "ads": ("apps.ads", "load which advertiser owns each ad"),
    }
    if argv and argv[0] in tools:  # these parse their own flags
        module = __import__(tools[argv[0]][0], fromlist=["main"])
        return module.main(argv[1:])

    parser = argparse.ArgumentParser(prog="adclick", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    serve = commands.add_parser("serve", help="load the store and serve the API (owns chdb)")
    server.add_arguments(serve)
    server.add_serve_arguments(serve)
    ingest = commands.add_parser("ingest", help="only load the store (with a ClickHouse server)")
    server.add_arguments(ingest)
    for name, (_module, help_text) in tools.items():
        commands.add_parser(name, help=help_text, add_help=False)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return {"serve": server.serve, "ingest": server.ingest}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
