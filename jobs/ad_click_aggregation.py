"""adclick's streaming job: per-minute ad click and impression counts, top-N, and conversions
attributed to their clicks, exactly once.

Reads raw clicks, impressions and conversions from Kafka, parses and validates them, drops
repeated ids, counts clicks and impressions per 1-minute event-time tumbling window keyed by
(ad_id, country, device), ranks ads per minute by clicks (local top-N in the JVM, global merge
in Python), joins each conversion to the counted click it names, and writes seven Kafka topics
through transactional sinks: counts, top-N, too-late events, dead letters, unique conversions,
attributions and the minutes closed. ClickHouse ingests those topics (adclick.ingest).
Everything per event runs in the JVM: Flink SQL, and adclick's compact dedup operator
(udfs/java) in place of the planner's dedup.

Every start resumes the pipeline's newest savepoint or retained checkpoint (adclick.job_state;
--fresh starts empty); SIGTERM or Ctrl-C of a local run stops the job with a savepoint.

Run locally (MiniCluster):  python -m jobs.ad_click_aggregation --bootstrap-servers ...
Submit to a cluster:        flink run -py jobs/ad_click_aggregation.py -pyexec <python> ...
"""

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyflink.common.completable_future import CompletableFuture
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes
from pyflink.table import EnvironmentSettings
from pyflink.table import FormatDescriptor
from pyflink.table import Schema
from pyflink.table import StreamTableEnvironment
from pyflink.table import TableDescriptor
from pyflink.util.exceptions import JavaException

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `flink run -py` starts this file as a script
    sys.path.insert(0, str(ROOT))

from adclick import config  # noqa: E402
from adclick.contract import CONTRACTS  # noqa: E402
from adclick import flink_rest  # noqa: E402
from adclick import job_state  # noqa: E402
from udfs.top_n import TOP_ENTRY  # noqa: E402
from udfs.top_n import merge_top_n  # noqa: E402

SQL_DIR = ROOT / "sql" / "flink"
JAR_DIR = config.JARS_DIR / "flink"
EVENT_FORMAT = "adclick-event"  # udfs/java: parses and validates events in the source
# Rows a second of each subtask of the job's clock source: it must tick well within the idle
# timeout, or the clock itself would be idle.
CLOCK_TICKS_PER_SECOND = 4
MIN_IDLE_TIMEOUT_MS = 1000
# RocksDB's memory per slot in a local run with --state-backend rocksdb (flink-conf/ gives a
# cluster slot the same).
LOCAL_MANAGED_MIB_PER_SLOT = 512
JOB_NAME = "adclick: ad click aggregation"
# The job's savepoint folder, published in its configuration (REST: /jobs/<id>/config).
SAVEPOINT_DIR_PARAMETER = "adclick.savepoint-dir"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    p.add_argument("--topic-prefix", default="", help="prefix of all nine topic names")
    p.add_argument("--group-id", default="adclick-aggregation")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--max-parallelism", type=int, default=128,
                   help="key groups of the keyed state: the most subtasks it can ever be"
                        " rescaled to; cannot change once state exists")
    p.add_argument("--checkpoint-interval-ms", type=int, default=5000,
                   help="results become visible to read_committed consumers at each checkpoint")
    p.add_argument("--checkpoint-dir", default=(config.STACK_DIR / "checkpoints").as_uri())
    p.add_argument("--watermark-delay-ms", type=int,
                   default=config.WATERMARK_DELAY_SECONDS * 1000,
                   help="bounded out-of-orderness of click_ts")
    p.add_argument("--allowed-lateness-s", type=int, default=config.ALLOWED_LATENESS_SECONDS,
                   help="how long after its window fired a click still corrects its minute")
    p.add_argument("--dedup-horizon-s", type=int, default=config.DEDUP_HORIZON_SECONDS,
                   help="how long a click_id (or conversion_id) is remembered to drop its"
                        " duplicates, in event time")
    p.add_argument("--impression-dedup-horizon-s", type=int,
                   default=config.IMPRESSION_DEDUP_HORIZON_SECONDS,
                   help="the same for an impression_id (impressions are many, their resends"
                        " come within minutes)")
    p.add_argument("--attribution-window-s", type=int,
                   default=config.ATTRIBUTION_WINDOW_SECONDS,
                   help="a conversion counts for its click when it comes within this long after"
                        " it (the join keeps each counted click this long, plus the wait)")
    p.add_argument("--conversion-wait-s", type=int, default=config.CONVERSION_WAIT_SECONDS,
                   help="how long a conversion waits for its click to be counted before it"
                        " stays unattributed")
    p.add_argument("--repeat-click-window-s", type=int,
                   default=config.REPEAT_CLICK_WINDOW_SECONDS,
                   help="a click is a repeat_click when its user clicked the same ad less than"
                        " this long before it, in event time")
    p.add_argument("--ip-frequency-window-s", type=int,
                   default=config.IP_FREQUENCY_WINDOW_SECONDS,
                   help="how far back the ip_frequency rule counts a click's ip key's clicks on"
                        " the same ad")
    p.add_argument("--ip-frequency-threshold", type=int, default=config.IP_FREQUENCY_THRESHOLD,
                   help="a click is an ip_frequency click when its ip key made this many clicks"
                        " or more on the same ad in the window before it")
    p.add_argument("--idle-timeout-ms", type=int, default=10000,
                   help="a partition silent this long stops holding the watermark back")
    p.add_argument("--top-n", type=int, default=config.TOP_N)
    p.add_argument("--top-n-buckets", type=int, default=4,
                   help="parallel local top-N partitions merged by the global top-N")
    p.add_argument("--max-payload-bytes", type=int, default=config.MAX_PAYLOAD_BYTES)
    p.add_argument("--max-future-s", type=int, default=config.MAX_FUTURE_SECONDS)
    p.add_argument("--state-backend", choices=["hashmap", "rocksdb"], default=None,
                   help="keyed state on the JVM heap or in RocksDB (with incremental "
                        "checkpoints); default: the cluster's (flink-conf/ sets rocksdb), or the "
                        "heap in a local run")
    p.add_argument("--fresh", action="store_true",
                   help="start empty instead of resuming this pipeline's newest savepoint or"
                        " checkpoint (its state folder is moved aside, not deleted); the minutes"
                        " open in that state and its dedup memory are lost")
    p.add_argument("--from-savepoint", default=None, metavar="PATH",
                   help="restore this savepoint or checkpoint instead of the newest one (only"
                        " safe with the newest: older ones republish what came after them)")
    p.add_argument("--allow-non-restored-state", action="store_true",
                   help="restore a state that holds operators this job no longer has, dropping"
                        " theirs (as `flink run --allowNonRestoredState`): a state saved before"
                        " the compact attribution holds the SQL join's clicks, which are then"
                        " lost for attribution; every count is kept")
    p.add_argument("--stop-timeout-s", type=int, default=45,
                   help="on SIGTERM or Ctrl-C, how long stopping with a savepoint may take before"
                        " this process exits anyway (the next start then resumes the newest"
                        " checkpoint)")
    p.add_argument("--sql-dir", type=Path, default=SQL_DIR,
                   help="the job's statements, run in file name order (a changed copy of"
                        " sql/flink/ restores the state of the statements it keeps)")
    p.add_argument("--rest-port", type=int, default=None,
                   help="a local run's Flink REST API on this port (the dashboard reads the"
                        " job's checkpoints there); default: a free port Flink picks. A cluster"
                        " has its own (flink-conf/)")
    p.add_argument("--startup-mode", default="group-offsets",
                   choices=["group-offsets", "earliest-offset", "latest-offset"],
                   help="where a fresh start (no checkpoint) begins reading; group offsets fall"
                        " back to earliest")
    args = p.parse_args(argv)
    if args.fresh and args.from_savepoint:
        p.error("--fresh and --from-savepoint exclude each other")
    if not any(args.sql_dir.glob("*.sql")):
        p.error(f"--sql-dir: no *.sql files in {args.sql_dir}")
    for name in ("parallelism", "checkpoint_interval_ms", "top_n", "top_n_buckets",
                 "max_payload_bytes", "dedup_horizon_s", "impression_dedup_horizon_s",
                 "idle_timeout_ms", "stop_timeout_s",
                 "attribution_window_s", "conversion_wait_s", "repeat_click_window_s",
                 "ip_frequency_window_s", "ip_frequency_threshold"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("watermark_delay_ms", "allowed_lateness_s", "max_future_s"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.conversion_wait_s < args.allowed_lateness_s + 60:
        # A click counted late (its minute closed less than the lateness ago) may come after a
        # conversion that waited for it: the wait must outlast that, or an attribution is lost.
        p.error("--conversion-wait-s must be at least --allowed-lateness-s plus a minute"
                f" ({args.allowed_lateness_s + 60})")
    if args.repeat_click_window_s > args.ip_frequency_window_s:
        # The rules' OVER window (sql/flink/25_*.sql) spans the longer of the two.
        p.error("--repeat-click-window-s must not exceed --ip-frequency-window-s")
    if args.ip_frequency_window_s > 999:
        # Its range is an INTERVAL SECOND(3) literal: Flink plans no wider precision.
        p.error("--ip-frequency-window-s must be at most 999")
    if args.idle_timeout_ms < MIN_IDLE_TIMEOUT_MS:
        p.error(f"--idle-timeout-ms must be at least {MIN_IDLE_TIMEOUT_MS} (the job's clock"
                " source ticks every 250 ms)")
    return args


def sql_parameters(args):
    """Integers substituted into sql/flink/*.sql (validated ints only, never free text)."""
    return {
        "allowed_lateness_s": int(args.allowed_lateness_s),
        "top_n": int(args.top_n),
        "top_n_buckets": int(args.top_n_buckets),
        "attribution_window_s": int(args.attribution_window_s),
        "conversion_wait_s": int(args.conversion_wait_s),
        "click_retention_s": int(args.attribution_window_s) + int(args.conversion_wait_s),
        "repeat_click_window_ms": int(args.repeat_click_window_s) * 1000,
        "ip_frequency_window_s": int(args.ip_frequency_window_s),
        "ip_frequency_window_ms": int(args.ip_frequency_window_s) * 1000,
        "ip_frequency_threshold": int(args.ip_frequency_threshold),
    }


def substitute(text, params):
    """Replace each ${name} by its integer parameter (JSON paths keep their bare $)."""
    return re.sub(r"\$\{(\w+)\}", lambda match: str(int(params[match.group(1)])), text)


def sql_statements(params, paths=None):
    """The statements of sql/flink/*.sql (or of paths) in file order, parameters substituted."""
    for path in paths or sorted(SQL_DIR.glob("*.sql")):
        text = substitute(path.read_text(), params)
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        for statement in body.split(";"):
            if statement.strip():
                yield statement.strip()


def pipeline_name(args):
    """One pipeline: its topics and consumer group. Its state, its lock and its job name."""
    return job_state.pipeline_name(args.topic_prefix, args.group_id)


def state_uri(args):
    """The pipeline's state folder: its retained checkpoints and its savepoints."""
    return job_state.state_uri(args.checkpoint_dir, pipeline_name(args))


def configure(t_env, args):
    """Job-level settings; cluster-level ones live in flink-conf/config.yaml."""
    conf = t_env.get_config()
    # The pipeline in the name: scripts and the job itself find a running copy by it.
    conf.set("pipeline.name", f"{JOB_NAME} [{pipeline_name(args)}]")
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(args.parallelism))
    # Fixed before any state exists: keyed state is laid out in this many key groups, and a
    # state saved under another number cannot be restored. 128 is what Flink chose by itself
    # for every state saved so far (its default up to a parallelism of 85).
    conf.set("pipeline.max-parallelism", str(args.max_parallelism))
    # Timers in RocksDB, as RocksDB's own default: heap timers are written into the raw keyed
    # state at every checkpoint, which an operator writing its own raw keyed state (the
    # compact dedup) excludes, and the checkpoint would fail (Flink's checkState on it).
    conf.set("state.backend.rocksdb.timer-service.factory", "ROCKSDB")
    # A Bloom filter in each of RocksDB's files: the labelling looks up every click's user and
    # ip key, nearly always absent (a new one), and without a filter each miss searches every
    # level's files (docs/SCALING.md section 8).
    conf.set("state.backend.rocksdb.use-bloom-filter", "true")
    conf.set("execution.checkpointing.interval", f"{args.checkpoint_interval_ms} ms")
    conf.set("execution.checkpointing.mode", "EXACTLY_ONCE")
    conf.set("execution.checkpointing.dir", state_uri(args))
    savepoint_dir = job_state.savepoint_uri(state_uri(args))
    conf.set("execution.checkpointing.savepoint-dir", savepoint_dir)
    # A stop asked for from outside (`flink stop`, the REST API) uses the cluster's savepoint
    # folder unless given one; the cluster scripts read the job's own from here.
    # (Flink's map syntax: the entry in double quotes, its key and value in single ones.)
    conf.set("pipeline.global-job-parameters",
             f"\"'{SAVEPOINT_DIR_PARAMETER}':'{savepoint_dir}'\"")
    # Kept when the job is cancelled or its cluster goes away: every start resumes the newest.
    conf.set("execution.checkpointing.externalized-checkpoint-retention",
             "RETAIN_ON_CANCELLATION")
    # Every operator gets an explicit uid from its plan node ("<id>_<kind>"; attach_job
    # adds the ones the planner leaves out), instead of a hash of the whole graph that changes
    # when a sink is added anywhere: state saved before a change to the SQL maps onto the
    # operators that did not change. The ids are numbered in the order of sql/flink/*.sql, so
    # an added statement belongs after the existing ones (tests/test_cluster_restarts.py
    # restores a savepoint across such a change).
    conf.set("table.exec.uid.generation", "ALWAYS")
    if args.allow_non_restored_state:
        conf.set("execution.state-recovery.ignore-unclaimed-state", "true")
    conf.set("table.exec.source.idle-timeout", f"{args.idle_timeout_ms} ms")
    # The planned dedups' horizon (attach_job gives the compact ones the same) and a bound on
    # any other state the SQL does not bound itself.
    conf.set("table.exec.state.ttl", f"{args.dedup_horizon_s} s")
    if args.state_backend:
        conf.set("state.backend.type", args.state_backend)
        conf.set("execution.checkpointing.incremental",
                 "true" if args.state_backend == "rocksdb" else "false")
    if args.state_backend == "rocksdb":
        # A local run's MiniCluster (one slot per parallel subtask) gives RocksDB 64 MiB per
        # slot by default, which made the job 4x slower at 10 M click_ids; give it what
        # flink-conf/ gives a cluster slot. A TaskManager setting: a job submitted to a running
        # cluster cannot change it, so there it does nothing.
        conf.set("taskmanager.memory.managed.size",
                 f"{LOCAL_MANAGED_MIB_PER_SLOT * args.parallelism}m")
    if args.rest_port is not None and conf.get("execution.target", "local") == "local":
        conf.set("rest.bind-port", str(args.rest_port))
        conf.set("rest.port", str(args.rest_port))
    conf.set("python.executable", sys.executable)
    # Flink SQL operators do not keep references to their input rows, so chained operators can
    # hand rows on without copying each one.
    conf.set("pipeline.object-reuse", "true")
    jars = job_jars()
    if len(jars) == 2:
        conf.set("pipeline.jars", ";".join(jar.as_uri() for jar in jars))
    else:  # `flink run -D pipeline.jars=...` may still provide them
        logging.warning("the Kafka connector or adclick-flink.jar is missing in %s (run `make"
                        " jars`); relying on pipeline.jars given to flink run", JAR_DIR)


def job_jars():
    """The Kafka connector and adclick's format, as `make jars` leaves them (those found)."""
    connectors = sorted(JAR_DIR.glob("flink-sql-connector-kafka-*.jar"))
    event_format = JAR_DIR / "adclick-flink.jar"
    return connectors[-1:] + ([event_format] if event_format.exists() else [])


def kafka_options(args, topic):
    return {"topic": topic, "properties.bootstrap.servers": args.bootstrap_servers}


def source_columns(contract):
    """What the 'adclick-event' format fills for an event type (udfs/java/.../EventColumns.java):
    the contract's fields, then the format's own columns."""
    return contract.sql_columns() + [
        ("reject_reason", "STRING"),
        ("payload", "BYTES"),
        # The dedup key: a 128-bit fingerprint of the event's id (udfs/java/.../EventKey.java).
        ("key_hi", "BIGINT"),
        ("key_lo", "BIGINT"),
        # The event's general invalid-traffic label (bot_user_agent, datacenter_ip), or null
        # (udfs/java/.../TrafficRules.java): the rules that need no other event.
        ("traffic", "STRING"),
    ]


def source_schema(args, event="click"):
    """An input's columns, event time and watermark (the benchmark reuses it).

    The 'adclick-event' format (udfs/java) parses each record once and fills the event's
    columns, or only reject_reason and payload (the original bytes) for a record that breaks the
    contract. A rejected record has no event time of its own, so its event_time is its Kafka
    timestamp: the time it was produced, which keeps its partition's watermark where the
    partition's clicks keep it (with 0, a partition receiving only junk held every minute
    open: never idle, its watermark at 1970). Conversions are not windowed: they have no
    watermark.
    """
    contract = CONTRACTS[event]
    schema = Schema.new_builder()
    for column, data_type in source_columns(contract):
        schema = schema.column(column, data_type)
    schema = (
        schema
        .column_by_metadata("kafka_partition", DataTypes.INT(), "partition", True)
        .column_by_metadata("kafka_offset", DataTypes.BIGINT(), "offset", True)
        .column_by_metadata("kafka_timestamp", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
        .column_by_expression("proc_time", "PROCTIME()")
    )
    if event == "conversion":
        return schema.build()
    return (
        schema
        .column_by_expression("event_time",
                              f"COALESCE(TO_TIMESTAMP_LTZ({contract.time_field}, 3),"
                              f" kafka_timestamp)")
        .watermark("event_time",
                   f"TIMESTAMPADD(MILLISECOND, -{int(args.watermark_delay_ms)}, event_time)")
        .build()
    )


def event_format(args, event="click"):
    """The contract's limits, handed to the 'adclick-event' format."""
    return (
        FormatDescriptor.for_format(EVENT_FORMAT)
        .option("event", event)
        .option("max-payload-bytes", str(int(args.max_payload_bytes)))
        .option("min-ts-ms", str(int(config.MIN_CLICK_TS_MS)))
        .option("max-future-ms", str(int(args.max_future_s) * 1000))
        .build()
    )


def source_descriptor(args, topic, event="click"):
    builder = TableDescriptor.for_connector("kafka").schema(source_schema(args, event))
    builder = builder.format(event_format(args, event))
    options = kafka_options(args, topic)
    options.update({
        "properties.group.id": args.group_id,
        "properties.isolation.level": "read_committed",
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": args.startup_mode,
        "properties.partition.discovery.interval.ms": "30000",
    })
    for key, value in options.items():
        builder = builder.option(key, value)
    return builder.build()


def clock_descriptor(args, rows=None):
    """The job's clock: a tiny source, merged with the clicks before the dedup, whose watermark
    is the wall clock minus the watermark delay (it never carries a row past its filter).

    It is never idle, so no operator after the dedup ever sees an idle input: otherwise, once
    every partition had been silent for the idle timeout, the dedup subtasks went idle and woke
    up at different moments, and a window fired on one subtask's watermark dropped as late what
    another had classed on time (docs/ARCHITECTURE.md, idle partitions). It also makes time
    pass while the whole input is silent, and keeps the watermark from running ahead of the
    clock on a producer's fast clock.
    """
    lag_ms = int(args.watermark_delay_ms)
    schema = (
        Schema.new_builder()
        .column("beat", DataTypes.INT())
        .column_by_expression("proc_time", "PROCTIME()")
        .column_by_expression(
            "event_time", f"TIMESTAMPADD(MILLISECOND, -{lag_ms}, CURRENT_TIMESTAMP)")
        .watermark("event_time", "event_time")
        .build()
    )
    builder = (
        TableDescriptor.for_connector("datagen")
        .schema(schema)
        .option("rows-per-second", str(CLOCK_TICKS_PER_SECOND * args.parallelism))
        .option("fields.beat.kind", "random")
        .option("fields.beat.min", "0")
        .option("fields.beat.max", "0")
    )
    if rows is not None:  # a bounded run (the benchmark's): the clock ends too
        builder = builder.option("number-of-rows", str(int(rows)))
    return builder.build()


def sink_schema(columns):
    """A sink's schema from its (column, type) pairs (SINK_COLUMNS)."""
    schema = Schema.new_builder()
    for column, data_type in columns:
        schema = schema.column(column, data_type)
    return schema.build()


def sink_descriptor(args, topic, name, columns):
    builder = (
        TableDescriptor.for_connector("kafka")
        .schema(sink_schema(columns))
        .format("json")
        .option("json.timestamp-format.standard", "ISO-8601")
        .option("sink.delivery-guarantee", "exactly-once")
        # The whole pipeline (topic prefix and group) names its transactions: two pipelines
        # sharing a group id would otherwise fence each other's producers.
        .option("sink.transactional-id-prefix", f"{args.topic_prefix}{args.group_id}-{name}")
        # The broker caps transactions at 15 minutes (transaction.max.timeout.ms).
        .option("properties.transaction.timeout.ms", "900000")
    )
    for key, value in kafka_options(args, topic).items():
        builder = builder.option(key, value)
    return builder.build()


SINK_COLUMNS = {
    "counts": [
        ("minute", DataTypes.TIMESTAMP_LTZ(3)),
        ("ad_id", DataTypes.STRING()),
        ("country", DataTypes.STRING()),
        ("device", DataTypes.STRING()),
        # valid, or the reason the events are not (config.TRAFFIC_REASONS).
        ("traffic", DataTypes.STRING()),
        # -1 with the label a late click took from an earlier-decided click (a revision).
        ("clicks", DataTypes.BIGINT()),
        ("impressions", DataTypes.BIGINT()),
        ("late", DataTypes.BOOLEAN()),
        # A correction row's event: click or impression, its id, who and when.
        ("event", DataTypes.STRING()),
        ("event_id", DataTypes.STRING()),
        ("user_id", DataTypes.STRING()),
        ("ip", DataTypes.STRING()),
        ("event_ts", DataTypes.BIGINT()),
        ("watermark", DataTypes.TIMESTAMP_LTZ(3)),
    ],
    "top": [
        ("minute", DataTypes.TIMESTAMP_LTZ(3)),
        ("top", DataTypes.ARRAY(TOP_ENTRY)),
    ],
    # The click or impression as it came (its id and time under the names event_id and
    # event_ts), its minute, and the watermark that excluded it.
    "late": [
        ("minute", "TIMESTAMP_LTZ(3)"), ("event", "STRING"), ("event_id", "STRING"),
        ("ad_id", "STRING"), ("event_ts", "BIGINT"), ("user_id", "STRING"), ("ip", "STRING"),
        ("country", "STRING"), ("device", "STRING"), ("watermark", "TIMESTAMP_LTZ(3)"),
    ],
    "dlq": [
        ("event", DataTypes.STRING()),
        ("reason", DataTypes.STRING()),
        ("payload_base64", DataTypes.STRING()),
        ("source_partition", DataTypes.INT()),
        ("source_offset", DataTypes.BIGINT()),
        ("source_timestamp", DataTypes.TIMESTAMP_LTZ(3)),
    ],
    "conversions_unique": [
        ("minute", "TIMESTAMP_LTZ(3)"), ("conversion_id", "STRING"), ("click_id", "STRING"),
        ("type", "STRING"), ("value_micros", "BIGINT"), ("conversion_ts", "BIGINT"),
    ],
    # A conversion that met its counted click: the click's ad, attributes and traffic label,
    # the outcome.
    "attributions": [
        ("minute", "TIMESTAMP_LTZ(3)"), ("ad_id", "STRING"), ("country", "STRING"),
        ("device", "STRING"), ("traffic", "STRING"), ("conversion_id", "STRING"),
        ("click_id", "STRING"),
        ("type", "STRING"), ("value_micros", "BIGINT"), ("conversion_ts", "BIGINT"),
        ("click_ts", "BIGINT"), ("outcome", "STRING"),
    ],
    # Each minute the watermark has passed, with or without events (sql/flink/50_*.sql).
    "minutes": [("minute", "TIMESTAMP_LTZ(3)"), ("traffic_rules", "STRING")],
}


# The pipeline's logical tables. Its statements (sql/flink/) read the three <input>_raw tables
# and job_clock and write the seven sinks; attach_connectors binds them to Kafka and the clock,
# and a test or the benchmark may bind them to something else (tests/test_pipeline_logic.py:
# rows in memory).
#   clicks_raw, impressions_raw, conversions_raw
#               source_columns(contract), kafka_partition INT, kafka_offset BIGINT,
#               kafka_timestamp TIMESTAMP_LTZ(3), proc_time (processing time), and but for
#               conversions event_time (rowtime, watermarked)
#   job_clock   beat INT, proc_time, event_time (rowtime): rows never pass beat < 0
#   <name>_sink SINK_COLUMNS[name]
INPUTS = config.Topics.INPUTS


def attach_connectors(t_env, args):
    """Bind the pipeline's logical tables to the Kafka topics and the job's clock."""
    topics = config.Topics.with_prefix(args.topic_prefix)
    for name, event in INPUTS.items():
        t_env.create_temporary_table(f"{name}_raw", source_descriptor(args, topics[name], event))
    t_env.create_temporary_table("job_clock", clock_descriptor(args))
    for name, columns in SINK_COLUMNS.items():
        t_env.create_temporary_table(
            f"{name}_sink", sink_descriptor(args, topics[name], name, columns))


def build_pipeline(t_env, args, replace=None):
    """The job's transformation over its logical tables (parse result -> dedup -> timeliness ->
    windows -> top-N, attribution -> outputs); returns the statement set of all outputs.

    replace: {view name: SELECT} swaps one stage of sql/flink/ for another query (the
    benchmark measures the job without its dedup this way).
    """
    t_env.create_temporary_function("merge_top_n", merge_top_n(args.top_n))
    # The invalid-traffic rules that look at other clicks, as an OVER aggregate
    # (sql/flink/25_traffic_labels.sql); attach_job runs ClickLabelOperator in its place.
    t_env.create_java_temporary_function("click_traffic_labels",
                                         "adclick.flink.ClickTrafficLabels")
    t_env.create_java_temporary_function("traffic_rules", "adclick.flink.TrafficRulesVersion")
    paths = sorted(Path(args.sql_dir).glob("*.sql"))
    statements = replace_views(sql_statements(sql_parameters(args), paths), replace or {})
    return statement_set(t_env, statements)


def replace_views(statements, replace):
    """The statements, each view named in replace defined by its query there instead."""
    replaced = set()
    for statement in statements:
        view = re.match(r"CREATE TEMPORARY VIEW (\w+) AS\s", statement)
        if view and view[1] in replace:
            replaced.add(view[1])
            statement = f"CREATE TEMPORARY VIEW {view[1]} AS {replace[view[1]]}"
        yield statement
    missing = set(replace) - replaced
    if missing:
        raise ValueError(f"no view {', '.join(sorted(missing))} in the job's statements")


def statement_set(t_env, statements):
    """Create the views; return the INSERTs as one statement set (one job)."""
    inserts = t_env.create_statement_set()
    for statement in statements:
        if statement.upper().startswith("INSERT"):
            inserts.add_insert_sql(statement)
        else:
            t_env.execute_sql(statement)
    return inserts


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # From the start: a stop asked for while the job is being submitted still takes a savepoint.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    # A StreamTableEnvironment, not a plain one: the job's operators are reached before it runs
    # (attach_job).
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    configure(t_env, args)
    local = t_env.get_config().get("execution.target", "local") == "local"
    state = job_state.PipelineState(state_uri(args))
    try:
        if local:
            # Held by this run's JVM until it ends (a killed run's JVM may still be ending).
            state.lock(wait_s=args.stop_timeout_s + 15)
        else:
            refuse_a_second_copy(t_env)
    except job_state.PipelineBusy as busy:
        sys.exit(f"adclick: not started: {busy}")
    restore_from(t_env, args, state)
    recovery = t_env.get_config().get("execution.state-recovery.path", "")
    attach_connectors(t_env, args)
    attach_job(env, build_pipeline(t_env, args), args)
    try:
        job_client = env.execute_async(t_env.get_config().get("pipeline.name", JOB_NAME))
        announce(f"submitted job {job_client.get_job_id()}")
        wait_until_running(job_client)
    except (Py4JJavaError, JavaException) as error:
        if not recovery:
            raise
        sys.exit(f"adclick: cannot restore {recovery}: {root_cause(error)}\nNothing runs. "
                 "Repair that state, or start empty on purpose with --fresh (the minutes it "
                 "holds open and its dedup memory are then lost).")
    if follows_the_job(t_env):
        follow(job_client, state, stopping, args.stop_timeout_s)


def attach_job(env, statements, args):
    """Translate the statements into env's graph, with adclick's compact operators in place of
    the planner's dedups and attribution join, and a uid on every operator.

    The dedups: the planner's keep-first-row dedup (sql/flink/20_*.sql, 35_*.sql) becomes a
    CompactDeduplicateOperator (udfs/java), same keyBy, input and output, holding 16 bytes per
    id in per-key-group sets instead of a state entry with a TTL per id, its horizon in event
    time (--dedup-horizon-s; --impression-dedup-horizon-s for impressions).

    The attribution: the planner's join of conversions with counted clicks (35_*.sql) becomes a
    CompactAttributionOperator, same keyBy, inputs and output, holding 24 bytes per click in
    per-key-group tables instead of the whole row with a TTL per click, and keeping each click
    for the attribution window plus the conversion wait, each conversion for the wait, in event
    time (the SQL's STATE_TTL hint says the same on the wall clock).

    The click labels: the planner's OVER aggregate of the invalid-traffic rules (25_*.sql)
    becomes a ClickLabelOperator, same keyBy (the ad), input and output: it decides a click's
    label when its minute closes here instead of at each watermark, labels a late click instead
    of dropping it, and emits a revision when a late click changes a label decided before.

    The uids: the planner names each operator "<Kind>[<plan node id>]" and (uid generation
    ALWAYS) gives it the uid "<id>_<kind>", but not its Python operators
    (PythonGroupWindowAggregate, the top-N merge): theirs would fall back to a hash of the
    graph's shape, which any statement added upstream changes, and a savepoint taken before
    such a change could not be restored.
    """
    statements.attach_as_datastream()
    compact = get_gateway().jvm.adclick.flink
    retention_s = int(args.attribution_window_s) + int(args.conversion_wait_s)
    horizons = get_gateway().jvm.java.util.HashMap()  # by the dedup key's event type
    horizons.put("impression", int(args.impression_dedup_horizon_s))
    pending = list(env._j_stream_execution_environment.getTransformations())
    seen = set()
    while pending:
        transformation = pending.pop()
        if transformation.getId() in seen:
            continue
        seen.add(transformation.getId())
        named = re.fullmatch(r"([A-Za-z]+)\[(\d+)\]", transformation.getName())
        if named and named[1] == "Deduplicate":
            compact.CompactDeduplicate.install(transformation, int(args.dedup_horizon_s),
                                               horizons)
        elif named and named[1] == "Join":
            compact.CompactAttribution.install(transformation, retention_s,
                                               int(args.conversion_wait_s))
        elif named and named[1] == "OverAggregate":
            compact.ClickLabel.install(
                transformation, int(args.repeat_click_window_s) * 1000,
                int(args.ip_frequency_window_s) * 1000, int(args.ip_frequency_threshold),
                int(args.allowed_lateness_s) * 1000)
        elif named and transformation.getUid() is None:
            kind = re.sub(r"(?<!^)(?=[A-Z])", "-", named[1]).lower()
            transformation.setUid(f"{named[2]}_{kind}")
        pending.extend(transformation.getInputs())


def announce(message):
    """Say it on the terminal and in the log (both are what a person reads after a start)."""
    print(f"adclick: {message}", flush=True)
    logging.info(message)


def restore_from(t_env, args, state):
    """Point the job at the state it must resume: given (`flink run -s` or --from-savepoint),
    else the pipeline's newest; --fresh sets the old state aside and starts empty.

    The newest it picks by itself is restored in CLAIM mode if it is a checkpoint (the job takes
    it over and deletes it once a newer checkpoint subsumes it, so restarts do not pile up full
    copies of the state), in NO_CLAIM mode if it is a savepoint: a stop-with-savepoint, such as
    an upgrade's, is the rollback point, and a claimed one would be deleted by the first
    checkpoint after it. A state that cannot be read stops the start (job_state)."""
    conf = t_env.get_config()
    given = args.from_savepoint or conf.get("execution.state-recovery.path", "")
    if args.fresh:
        moved = state.set_aside()
        announce("starting empty (--fresh)" + (f"; earlier state kept in {moved}" if moved else ""))
        return
    if given:
        conf.set("execution.state-recovery.path", given)
        announce(f"restoring the given state {given}")
        return
    try:
        states = state.saved_states()  # read once: the newest, and the savepoints to drop
    except job_state.UnreadableState as unreadable:
        sys.exit(f"adclick: cannot restore {unreadable.path}: {unreadable.reason}\nNothing "
                 "runs: without its checkpoint id, which state is the newest cannot be told. "
                 "Repair that state (or move it out of the pipeline's folder if it is not the "
                 "newest), or start empty on purpose with --fresh (the minutes it holds open and "
                 "its dedup memory are then lost).")
    newest = states[-1] if states else None
    if newest is None:
        announce(f"starting empty: no savepoint or checkpoint yet in {state.uri}")
        return
    conf.set("execution.state-recovery.path", newest.path)
    for path in state.drop_older_savepoints(states):
        announce(f"deleted the superseded savepoint {path}")
    if newest.kind == "savepoint":
        conf.set("execution.state-recovery.claim-mode", "NO_CLAIM")
        announce(f"resuming from the newest {newest.describe()}; NO_CLAIM: the savepoint is "
                 "kept as a rollback point until a newer savepoint supersedes it")
    else:
        conf.set("execution.state-recovery.claim-mode", "CLAIM")
        announce(f"resuming from the newest {newest.describe()}; CLAIM: the job deletes it once "
                 "a newer checkpoint subsumes it")


def refuse_a_second_copy(t_env):
    """On a cluster: a second copy of the pipeline would publish every count twice, so the job
    is not submitted while the cluster (its REST API, rest.address:rest.port) lists a job of
    the same name that has not ended, nor when it cannot be asked (fails closed). Setting
    ADCLICK_SKIP_COPY_CHECK=1 skips the check: only when you know no copy runs.

    Why a check and not a lock: the standalone cluster has no lock per job name; a lock file in
    the checkpoint file system would not be released when a JobManager dies with its job (and
    object stores have no atomic create to take one), so a crash would block every later start.
    The check is made before the submission, so two submissions racing each other can both pass
    it; one submitter (scripts/submit-job.sh, by hand) is assumed. A local run holds a real lock
    instead, taken by its JVM (job_state.PipelineState.lock)."""
    skip = "ADCLICK_SKIP_COPY_CHECK"
    conf = t_env.get_config()
    address = conf.get("rest.address", "localhost")
    port = conf.get("rest.port", "8081")
    name = conf.get("pipeline.name", "")
    url = f"http://{address}:{port}"
    if os.environ.get(skip) == "1":
        announce(f"{skip}=1: not asking {url} for a running copy of this pipeline")
        return
    try:
        jobs = flink_rest.live_jobs(url, timeout_s=10)
    except (OSError, ValueError) as error:
        raise job_state.PipelineBusy(
            f"could not ask the cluster's REST API at {url} whether a copy of this pipeline "
            f"runs ({error}); a second copy would count every click twice. Check rest.address "
            f"and rest.port, or set {skip}=1 if you know none runs") from error
    for job in jobs:
        if job["name"] == name:
            raise job_state.PipelineBusy(f"job {job['jid']} of this pipeline is {job['state']}")


def wait_until_running(job_client, timeout_s=180):
    """Return once the job runs; raise its failure (a state it could not restore, say), which a
    detached submission would otherwise never show."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job_client.get_job_status().result()
        if status.name == "RUNNING":
            announce("running")
            return
        if status.is_globally_terminal_state():
            job_client.get_job_execution_result().result()  # raises the failure's cause
            raise RuntimeError(f"the job ended at once: {status.name}")
        time.sleep(0.5)
    logging.warning("the job is not running after %d s; not waiting longer", timeout_s)


def follow(job_client, state, stopping, stop_timeout_s):
    """Wait for the job; once `stopping` is set (SIGTERM, Ctrl-C) stop it with a savepoint,
    bounded in time."""
    while not stopping.wait(1):
        status = job_client.get_job_status().result()
        if status.is_globally_terminal_state():
            announce(f"job ended: {status.name}")
            sys.exit(0 if status.name == "FINISHED" else 1)
    announce(f"stopping with a savepoint into {state.savepoint_dir} ...")
    future = stop_with_savepoint(job_client, state.savepoint_dir)
    deadline = time.monotonic() + stop_timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not future.done():
        announce(f"no savepoint after {stop_timeout_s} s; exiting (the next start resumes the"
                 " newest checkpoint)")
        sys.exit(1)
    try:
        announce(f"stopped with savepoint {future.result()}")
    except Py4JJavaError as error:
        announce(f"stop with savepoint failed ({root_cause(error)}); the next start resumes the"
                 " newest checkpoint")
        sys.exit(1)


def stop_with_savepoint(job_client, directory):
    """Stop the job with a savepoint (sources first, then the final savepoint commits the sinks'
    transactions); windows are not fired early, their state goes into the savepoint.

    PyFlink 2.2's JobClient.stop_with_savepoint calls a Java overload that no longer exists
    (one without the savepoint format), so the Java client is called directly.
    """
    canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return CompletableFuture(
        job_client._j_job_client.stopWithSavepoint(False, directory, canonical), str)


def root_cause(error):
    """The innermost cause of a Java error, one line: what went wrong, without the stack."""
    lines = str(error).splitlines()
    causes = [line[len("Caused by: "):] for line in lines if line.startswith("Caused by: ")]
    return causes[-1] if causes else next((line for line in lines if line.strip()), "")


def follows_the_job(t_env):
    """Whether this program should wait for the job to end: yes in a local run (the MiniCluster
    lives in this process) and under an attached `flink run`; no under `flink run -d`, where the
    client's work ends once the job is submitted (a streaming job never ends by itself)."""
    return t_env.get_config().get("execution.attached", "true").strip().lower() != "false"


if __name__ == "__main__":
    main()
