"""`adclick serve`: the process that owns the store, loading it and answering the API.

With the embedded store only one process may open the chdb path, so this one process runs the
loader thread and the Flask API side by side on the same client. With a ClickHouse server the
two can run apart instead: `adclick ingest` and `gunicorn 'api:create_app()'`.
"""

import logging
import signal
import threading

from werkzeug.serving import make_server

from adclick import config
from adclick import store
from adclick.ingest import Loader
from api import create_app
from api.auth import create_key

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--clickhouse-url", default=config.CLICKHOUSE_URL)
    parser.add_argument("--database", default=config.DATABASE)
    parser.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--loader-group-id", default="adclick-loader")
    parser.add_argument("--no-raw", action="store_true",
                        help="do not store raw clicks (reconciliation needs them)")


def start_loader(args, client):
    store.apply_schema(client, args.database)
    return Loader(client, database=args.database, bootstrap=args.bootstrap_servers,
                  topic_prefix=args.topic_prefix, group_id=args.loader_group_id,
                  raw=not args.no_raw).start()


def stop_on_signals(stop):
    """Run stop() in a thread on SIGINT/SIGTERM (stop may block; handlers must not)."""
    def handler(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=stop, daemon=True).start()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def serve(args):
    client = store.connect(args.clickhouse_url)
    loader = start_loader(args, client)
    app = create_app({"CLICKHOUSE_URL": args.clickhouse_url, "DATABASE": args.database})
    if args.api_key_file:
        key = create_key(client, args.database, "demo")
        with open(args.api_key_file, "w") as out:
            out.write(key + "\n")
        print(f"API key: {key}", flush=True)
    server = make_server(args.host, args.port, app, threaded=True)
    stop_on_signals(server.shutdown)
    print(f"adclick API on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        loader.stop()
        log.info("stopped; rows loaded: %s", loader.rows_loaded)


def ingest(args):
    client = store.connect(args.clickhouse_url)
    loader = start_loader(args, client)
    done = threading.Event()
    stop_on_signals(done.set)
    while not done.wait(30):
        log.info("rows loaded: %s", loader.rows_loaded)
    loader.stop()
