"""`adclick serve`: the process that owns the store, loading it and answering the API.

With the embedded store only one process may open the chdb path, so this one process runs the
loader thread and the Flask API side by side on the same client. The API is served by waitress,
a production WSGI server that runs the app in a pool of threads of this process (a forking
server such as gunicorn would need a process per worker, and only one may open the store).
With a ClickHouse server the two can run apart instead: `adclick ingest` and
`gunicorn 'api:create_app()'`.

SIGTERM or Ctrl-C stops it within seconds whatever Kafka is doing: the loader is told to stop
and given LOADER_STOP_S; a batch it was loading and had not committed is loaded again by the
next start (the store's tables collapse the replay).
"""

import logging
import os
import signal
import threading
from pathlib import Path

import waitress

from adclick import access
from adclick import config
from adclick import store
from adclick.ingest import Loader
from api import create_app
from api import status
from apps.ads import read_ads

log = logging.getLogger(__name__)
LOADER_STOP_S = 3


def add_arguments(parser):
    parser.add_argument("--clickhouse-url", default=config.CLICKHOUSE_URL)
    parser.add_argument("--database", default=config.DATABASE)
    parser.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--loader-group-id", default="adclick-loader")
    parser.add_argument("--no-raw", action="store_true",
                        help="do not store raw clicks (reconciliation needs them)")


def add_serve_arguments(parser):
    parser.add_argument("--host", default=config.API_HOST)
    parser.add_argument("--port", type=int, default=config.API_PORT)
    parser.add_argument("--threads", type=int, default=8,
                        help="requests answered at once (waitress's thread pool)")
    parser.add_argument("--api-key-file",
                        help="an admin key kept in this file (0600): created with the file if"
                             " missing, the same key at every start; never printed")
    parser.add_argument("--ads-file",
                        help="load this CSV (ad_id,advertiser_id,name) into the ads table at"
                             " start (adclick ads load does it while running)")
    parser.add_argument("--flink-rest-url", default=None,
                        help="the Flink job's REST API (e.g. http://127.0.0.1:8081), for the"
                             " status of its checkpoints in /v1/status and the dashboard")


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


def kept_key(path):
    """The key in path, or a new one written there readable by this user only."""
    path = Path(path)
    if path.exists() and path.read_text().strip():
        os.chmod(path, 0o600)
        return path.read_text().strip()
    key = access.new_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(key + "\n")
    return key


def serve(args):
    client = store.connect(args.clickhouse_url)
    loader = start_loader(args, client)
    if args.ads_file:
        log.info("ads loaded from %s: %d", args.ads_file,
                 access.load_ads(client, args.database, read_ads(args.ads_file)))
    if args.api_key_file:
        key = kept_key(args.api_key_file)
        access.ensure_key(client, args.database, key, "demo", "admin")
        print(f"admin API key in {args.api_key_file}", flush=True)
    app = create_app({"CLICKHOUSE_URL": args.clickhouse_url, "DATABASE": args.database,
                      "FLINK_REST_URL": args.flink_rest_url})
    status.attach_loader(app, loader)
    server = waitress.create_server(app, host=args.host, port=args.port, threads=args.threads)

    def exit_serving(signum, _frame):
        # waitress runs its loop in this (the main) thread and closes itself on SystemExit.
        log.info("signal %d: shutting down", signum)
        raise SystemExit(0)
    signal.signal(signal.SIGINT, exit_serving)
    signal.signal(signal.SIGTERM, exit_serving)
    print(f"adclick API on http://{args.host}:{server.effective_port}", flush=True)
    try:
        server.run()
    finally:
        server.close()
        loader.stop(timeout=LOADER_STOP_S)
        log.info("stopped; rows loaded: %s", loader.rows_loaded)


def ingest(args):
    client = store.connect(args.clickhouse_url)
    loader = start_loader(args, client)
    done = threading.Event()
    stop_on_signals(done.set)
    while not done.wait(30):
        log.info("rows loaded: %s", loader.rows_loaded)
    loader.stop()
