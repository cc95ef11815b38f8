"""adclick's streaming job: per-minute ad click counts and top-N, exactly once.

Reads raw click events from Kafka, parses and validates them, drops repeated click_ids,
counts clicks per 1-minute event-time tumbling window keyed by (ad_id, country, device), ranks
ads per minute (local top-N in the JVM, global merge in Python), and writes four Kafka topics
through transactional sinks: counts, top-N, too-late events and dead letters. ClickHouse
ingests those topics (adclick.ingest). Everything per click runs in the JVM as Flink SQL.

Run locally (MiniCluster):  python -m jobs.ad_click_aggregation --bootstrap-servers ...
Submit to a cluster:        flink run -py jobs/ad_click_aggregation.py -pyexec <python> ...
"""

import argparse
import logging
import re
import sys
from pathlib import Path

from pyflink.table import DataTypes
from pyflink.table import EnvironmentSettings
from pyflink.table import FormatDescriptor
from pyflink.table import Schema
from pyflink.table import TableDescriptor
from pyflink.table import TableEnvironment

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `flink run -py` starts this file as a script
    sys.path.insert(0, str(ROOT))

from adclick import config  # noqa: E402
from udfs.top_n import TOP_ENTRY  # noqa: E402
from udfs.top_n import merge_top_n  # noqa: E402

SQL_DIR = ROOT / "sql" / "flink"
JAR_DIR = config.STACK_DIR / "jars" / "flink"
CLICK_FORMAT = "adclick-click"  # udfs/java: parses and validates clicks in the source
# Rows a second of each subtask of the job's clock source: it must tick well within the idle
# timeout, or the clock itself would be idle.
CLOCK_TICKS_PER_SECOND = 4
MIN_IDLE_TIMEOUT_MS = 1000
# RocksDB's memory per slot in a local run with --state-backend rocksdb (flink-conf/ gives a
# cluster slot the same).
LOCAL_MANAGED_MIB_PER_SLOT = 512
JOB_NAME = "adclick: ad click aggregation"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    p.add_argument("--topic-prefix", default="", help="prefix of all five topic names")
    p.add_argument("--group-id", default="adclick-aggregation")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--checkpoint-interval-ms", type=int, default=5000,
                   help="results become visible to read_committed consumers at each checkpoint")
    p.add_argument("--checkpoint-dir", default=(config.STACK_DIR / "checkpoints").as_uri())
    p.add_argument("--watermark-delay-ms", type=int,
                   default=config.WATERMARK_DELAY_SECONDS * 1000,
                   help="bounded out-of-orderness of click_ts")
    p.add_argument("--allowed-lateness-s", type=int, default=config.ALLOWED_LATENESS_SECONDS,
                   help="how long after its window fired a click still corrects its minute")
    p.add_argument("--dedup-horizon-s", type=int, default=config.DEDUP_HORIZON_SECONDS,
                   help="how long a click_id is remembered to drop its duplicates")
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
    p.add_argument("--startup-mode", default="group-offsets",
                   choices=["group-offsets", "earliest-offset", "latest-offset"],
                   help="where a fresh start (no checkpoint) begins reading; group offsets fall"
                        " back to earliest")
    args = p.parse_args(argv)
    for name in ("parallelism", "checkpoint_interval_ms", "top_n", "top_n_buckets",
                 "max_payload_bytes", "dedup_horizon_s", "idle_timeout_ms"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("watermark_delay_ms", "allowed_lateness_s", "max_future_s"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
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


def configure(t_env, args):
    """Job-level settings; cluster-level ones live in flink-conf/config.yaml."""
    conf = t_env.get_config()
    conf.set("pipeline.name", JOB_NAME)
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("execution.checkpointing.interval", f"{args.checkpoint_interval_ms} ms")
    conf.set("execution.checkpointing.mode", "EXACTLY_ONCE")
    conf.set("execution.checkpointing.dir", args.checkpoint_dir)
    conf.set("execution.checkpointing.externalized-checkpoint-retention",
             "RETAIN_ON_CANCELLATION")
    conf.set("table.exec.source.idle-timeout", f"{args.idle_timeout_ms} ms")
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
    click_format = JAR_DIR / "adclick-flink.jar"
    return connectors[-1:] + ([click_format] if click_format.exists() else [])


def kafka_options(args, topic):
    return {"topic": topic, "properties.bootstrap.servers": args.bootstrap_servers}


def source_schema(args):
    """The click source's columns, event time and watermark (the benchmark reuses it).

    The 'adclick-click' format (udfs/java) parses each record once and fills the click columns,
    or only reject_reason and payload (the original bytes) for a record that breaks the
    contract. A rejected record has no click_ts, so its event time is 0 and cannot move the
    watermark.
    """
    schema = Schema.new_builder()
    for column, data_type in CLICK_COLUMNS:
        schema = schema.column(column, data_type)
    return (
        schema
        .column_by_metadata("kafka_partition", DataTypes.INT(), "partition", True)
        .column_by_metadata("kafka_offset", DataTypes.BIGINT(), "offset", True)
        .column_by_metadata("kafka_timestamp", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
        .column_by_expression("proc_time", "PROCTIME()")
        .column_by_expression("event_time", "TO_TIMESTAMP_LTZ(COALESCE(click_ts, 0), 3)")
        .watermark("event_time",
                   f"TIMESTAMPADD(MILLISECOND, -{int(args.watermark_delay_ms)}, event_time)")
        .build()
    )


def click_format(args):
    """The contract's limits, handed to the 'adclick-click' format."""
    return (
        FormatDescriptor.for_format(CLICK_FORMAT)
        .option("max-payload-bytes", str(int(args.max_payload_bytes)))
        .option("min-click-ts-ms", str(int(config.MIN_CLICK_TS_MS)))
        .option("max-future-ms", str(int(args.max_future_s) * 1000))
        .build()
    )


def source_descriptor(args, topic):
    builder = TableDescriptor.for_connector("kafka").schema(source_schema(args))
    builder = builder.format(click_format(args))
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
        .option("sink.transactional-id-prefix", f"{args.group_id}-{name}")
        # The broker caps transactions at 15 minutes (transaction.max.timeout.ms).
        .option("properties.transaction.timeout.ms", "900000")
    )
    for key, value in kafka_options(args, topic).items():
        builder = builder.option(key, value)
    return builder.build()


# What the 'adclick-click' format fills (udfs/java/.../ClickColumns.java).
CLICK_COLUMNS = [
    ("click_id", DataTypes.STRING()),
    ("ad_id", DataTypes.STRING()),
    ("click_ts", DataTypes.BIGINT()),
    ("user_id", DataTypes.STRING()),
    ("ip", DataTypes.STRING()),
    ("country", DataTypes.STRING()),
    ("device", DataTypes.STRING()),
    ("reject_reason", DataTypes.STRING()),
    ("payload", DataTypes.BYTES()),
    # The dedup key: a 128-bit fingerprint of click_id (udfs/java/.../ClickKey.java).
    ("click_key_hi", DataTypes.BIGINT()),
    ("click_key_lo", DataTypes.BIGINT()),
]

SINK_COLUMNS = {
    "counts": [
        ("minute", DataTypes.TIMESTAMP_LTZ(3)),
        ("ad_id", DataTypes.STRING()),
        ("country", DataTypes.STRING()),
        ("device", DataTypes.STRING()),
        ("clicks", DataTypes.BIGINT()),
        ("late", DataTypes.BOOLEAN()),
        ("click_id", DataTypes.STRING()),
        ("user_id", DataTypes.STRING()),
        ("ip", DataTypes.STRING()),
        ("click_ts", DataTypes.BIGINT()),
        ("watermark", DataTypes.TIMESTAMP_LTZ(3)),
    ],
    "top": [
        ("minute", DataTypes.TIMESTAMP_LTZ(3)),
        ("top", DataTypes.ARRAY(TOP_ENTRY)),
    ],
    "late": [
        ("minute", DataTypes.TIMESTAMP_LTZ(3)),
        ("click_id", DataTypes.STRING()),
        ("ad_id", DataTypes.STRING()),
        ("country", DataTypes.STRING()),
        ("device", DataTypes.STRING()),
        ("user_id", DataTypes.STRING()),
        ("ip", DataTypes.STRING()),
        ("click_ts", DataTypes.BIGINT()),
        ("watermark", DataTypes.TIMESTAMP_LTZ(3)),
    ],
    "dlq": [
        ("reason", DataTypes.STRING()),
        ("payload_base64", DataTypes.STRING()),
        ("source_partition", DataTypes.INT()),
        ("source_offset", DataTypes.BIGINT()),
        ("source_timestamp", DataTypes.TIMESTAMP_LTZ(3)),
    ],
}


def build_pipeline(t_env, args):
    """Register source, sinks and views; return the statement set of all outputs."""
    topics = config.Topics.with_prefix(args.topic_prefix)
    t_env.create_temporary_table("clicks_raw", source_descriptor(args, topics["clicks"]))
    t_env.create_temporary_table("job_clock", clock_descriptor(args))
    for name, columns in SINK_COLUMNS.items():
        t_env.create_temporary_table(
            f"{name}_sink", sink_descriptor(args, topics[name], name, columns))
    t_env.create_temporary_function("merge_top_n", merge_top_n(args.top_n))
    return statement_set(t_env, sql_statements(sql_parameters(args)))


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
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    configure(t_env, args)
    result = build_pipeline(t_env, args).execute()
    job_client = result.get_job_client()
    if job_client is not None:
        logging.info("submitted %s as job %s", JOB_NAME, job_client.get_job_id())
        if follows_the_job(t_env):
            result.wait()


def follows_the_job(t_env):
    """Whether this program should wait for the job to end: yes in a local run (the MiniCluster
    lives in this process) and under an attached `flink run`; no under `flink run -d`, where the
    client's work ends once the job is submitted (a streaming job never ends by itself)."""
    return t_env.get_config().get("execution.attached", "true").strip().lower() != "false"


if __name__ == "__main__":
    main()
