"""`make demo`: the whole pipeline on this machine, in the foreground.

Starts the Kafka broker (unless one is already running), creates the topics, runs the Flink job
on a local MiniCluster, the store-owning server (loader + API on the embedded ClickHouse) and the
generator of all three streams (impressions, clicks on some, conversions of some clicks), with
the generator's ads and their advertisers loaded into the ads table; prints the URLs, where the
admin key is kept (.stack/api-key, 0600, the same key at every start; never printed) and
sample curls, and reports when the first answer is ready. Ctrl-C or SIGTERM stops everything
it started, in reverse order; the job stops with a savepoint, and the next start resumes it
(or its newest checkpoint after a crash), so stopping and starting keeps every count. Needs no
terminal, so it also runs unattended.
"""

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from datetime import timezone

from adclick import config
from adclick import generator
from adclick.topics import create_topics
from apps.ads import write_ads
from apps.server import kept_key

KAFKA_SCRIPT = config.ROOT / "scripts" / "kafka.sh"
LOG_DIR = config.STACK_DIR / "log"
# The generator's funnel: a CTR of about 5 % and a CVR of about 5 %.
IMPRESSIONS_PER_CLICK = 20
CONVERSION_RATE = 0.05


def start(name, argv):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")
    print(f"  {name:<10} log: {LOG_DIR / (name + '.log')}", flush=True)
    return subprocess.Popen(argv, cwd=config.ROOT, stdout=log, stderr=subprocess.STDOUT)


class JobAnnouncements:
    """Relays the job's own announcements ("adclick: resuming from ...", its stop) from its log
    to this terminal, so a person sees which state each start resumed."""

    def __init__(self, path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def relay(self):
        if not self.path.exists():
            return
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read()
        complete = text[:text.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if line.startswith("adclick: "):
                print(f"  job: {line[len('adclick: '):]}", flush=True)


def kafka_is_up(bootstrap):
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def answers(api):
    """True once the API answers /healthz."""
    try:
        urllib.request.urlopen(f"{api}/healthz", timeout=2).close()
        return True
    except OSError:
        return False


def first_answer(api, key, stop, since, while_waiting):
    """Wait until popular_ads returns ads of a minute that ended after `since` (a store kept
    from an earlier run may already hold older minutes), calling while_waiting() every poll;
    returns (seconds waited, answer) or None if stopped."""
    started = time.time()
    request = urllib.request.Request(f"{api}/v1/ads/popular_ads?count=5&minutes=5",
                                     headers={"Authorization": f"Bearer {key}"})
    while not stop.wait(2):
        while_waiting()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.loads(response.read())
            ended = datetime.strptime(body.get("to") or "1970-01-01T00:00:00Z",
                                      "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            if body.get("ads") and ended.timestamp() > since:
                return time.time() - started, body
        except OSError:
            pass
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=100,
                        help=f"generated clicks per second, each with {IMPRESSIONS_PER_CLICK}"
                             " impressions (0: no generator, bring your own)")
    parser.add_argument("--port", type=int, default=config.API_PORT)
    parser.add_argument("--fresh", action="store_true",
                        help="start the job empty instead of resuming its saved state (the open"
                             " minutes and the dedup memory of the last run are then lost)")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must not be negative")
    began = time.time()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    started_kafka = False
    if not kafka_is_up(config.KAFKA_BOOTSTRAP):
        print("starting Kafka ...", flush=True)
        subprocess.run([str(KAFKA_SCRIPT), "start"], check=True)
        started_kafka = True
    create_topics(config.KAFKA_BOOTSTRAP)

    key_file = config.DEMO_API_KEY_FILE
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = kept_key(key_file)
    ads_file = config.STACK_DIR / "ads.csv"
    write_ads(ads_file, generator.ads_dimension())
    python = sys.executable
    flink_rest = f"http://127.0.0.1:{config.DEMO_FLINK_REST_PORT}"
    print("starting the pipeline:", flush=True)
    announcements = JobAnnouncements(LOG_DIR / "job.log")
    # Stopped in reverse order: the generator first, then the job (with a savepoint), then the
    # server, which has loaded what the job committed by then (and resumes the rest next time).
    children = [
        ("server", start("server", [python, "-m", "apps.cli", "serve", "--port",
                                    str(args.port), "--api-key-file", str(key_file),
                                    "--ads-file", str(ads_file),
                                    "--flink-rest-url", flink_rest])),
        # RocksDB, as on a cluster: the attribution join keeps a week of clicks, which would
        # outgrow the heap of a demo left running, and be copied whole at every checkpoint.
        ("job", start("job", [python, "-m", "jobs.ad_click_aggregation",
                              "--rest-port", str(config.DEMO_FLINK_REST_PORT),
                              "--state-backend", "rocksdb",
                              *(["--fresh"] if args.fresh else [])])),
    ]
    if args.rate:
        # The generator paces messages: the clicks with their impressions and conversions.
        messages = args.rate * (1 + IMPRESSIONS_PER_CLICK + CONVERSION_RATE)
        children.append(("generator", start("generator", [
            python, "-m", "apps.generate", "--rate", str(messages), "--duplicates", "0.01",
            "--out-of-order-ms", "2000", "--malformed", "0.001",
            "--impressions-per-click", str(IMPRESSIONS_PER_CLICK),
            "--conversion-rate", str(CONVERSION_RATE)])))
    api = f"http://{config.API_HOST}:{args.port}"
    exited = []

    def watch():
        """Relay the job's announcements; stop everything once any child has exited."""
        announcements.relay()
        for name, child in children:
            if child.poll() is not None and not exited:
                exited.append(name)
                print(f"{name} exited with {child.returncode}; stopping (see "
                      f"{LOG_DIR / (name + '.log')})", flush=True)
                stop.set()

    try:
        while not answers(api) and not stop.wait(0.5):
            watch()
        if stop.is_set():
            return 1 if exited else 0
        bearer = f"-H \"Authorization: Bearer $(cat {key_file})\""
        print(f"\nAPI:      {api}\nAPI key:  admin, in {key_file} (readable by you only);"
              f" more with `adclick keys create NAME --role reader|advertiser:adv-001`\n"
              f"Dashboard: {api}/dashboard (it asks for a key)\n"
              f"Try:      curl {bearer} "
              f"'{api}/v1/ads/popular_ads?count=10&minutes=5'\n"
              f"          curl {bearer} "
              f"'{api}/v1/ads/ad-000001/aggregated_count?minutes=5'\n"
              f"          curl {bearer} "
              f"'{api}/v1/ads/ad-000001/metrics?minutes=5'   (CTR, CVR)\n"
              f"Flink:    the job runs on a local MiniCluster, REST API {flink_rest}"
              f" (log: {LOG_DIR / 'job.log'})\n"
              f"Metrics:  {api}/metrics\n"
              "Waiting for the first complete minute (a minute closes when the watermark "
              "passes it) ...", flush=True)
        answered = first_answer(api, key, stop, began, watch)
        if answered:
            _waited, body = answered
            print(f"first answer {time.time() - began:.0f} s after start: top ads of "
                  f"[{body['from']}, {body['to']}): {body['ads'][:3]} ...", flush=True)
            print("running; Ctrl-C (or SIGTERM) stops everything", flush=True)
        while not stop.wait(1):
            watch()
        return 1 if exited else 0
    finally:
        print("stopping ...", flush=True)
        for name, child in reversed(children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
        announcements.relay()
        if started_kafka:
            subprocess.run([str(KAFKA_SCRIPT), "stop"])
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
