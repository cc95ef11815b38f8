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
CONNECTOR_JAR_DIR = config.STACK_DIR / "jars" / "flink"
JOB_NAME = "adclick: ad click aggregation"

# event_time comes from a cheap regular expression over the raw bytes, because a watermark can
# only be declared on a source column. Timestamps outside [2000, now + max_future] become 0 so
# that an absurd timestamp cannot push the watermark (validation rejects those clicks anyway).
RAW_CLICK_TS = (
    "CAST(REGEXP_EXTRACT(CAST(payload AS STRING), '\"click_ts\"\\s*:\\s*(-?[0-9]{1,15})', 1)"
    " AS BIGINT)"
)
EVENT_TIME_EXPR = (
    f"TO_TIMESTAMP_LTZ(CASE WHEN {RAW_CLICK_TS} BETWEEN ${{min_click_ts_ms}}"
    f" AND UNIX_TIMESTAMP() * 1000 + ${{max_future_ms}} THEN {RAW_CLICK_TS} ELSE 0 END, 3)"
)


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
    p.add_argument("--idle-timeout-ms", type=int, default=0,
                   help="0 (default): off, a silent partition holds the watermark back. N > 0:"
                        " a partition silent for N ms stops holding it back, but after every"
                        " partition has been silent that long, on-time clicks can be lost"
                        " (docs/ARCHITECTURE.md, idle partitions)")
    p.add_argument("--top-n", type=int, default=config.TOP_N)
    p.add_argument("--top-n-buckets", type=int, default=4,
                   help="parallel local top-N partitions merged by the global top-N")
    p.add_argument("--max-payload-chars", type=int, default=config.MAX_PAYLOAD_CHARS)
    p.add_argument("--max-future-s", type=int, default=config.MAX_FUTURE_SECONDS)
    p.add_argument("--startup-mode", default="group-offsets",
                   choices=["group-offsets", "earliest-offset", "latest-offset"],
                   help="where a fresh start (no checkpoint) begins reading; group offsets fall"
                        " back to earliest")
    args = p.parse_args(argv)
    for name in ("parallelism", "checkpoint_interval_ms", "top_n", "top_n_buckets",
                 "max_payload_chars", "dedup_horizon_s"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("watermark_delay_ms", "allowed_lateness_s", "max_future_s", "idle_timeout_ms"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    return args


def sql_parameters(args):
    """Integers substituted into sql/flink/*.sql (validated ints only, never free text)."""
    return {
        "max_payload_chars": int(args.max_payload_chars),
        "min_click_ts_ms": int(config.MIN_CLICK_TS_MS),
        "max_future_ms": int(args.max_future_s) * 1000,
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
    # Off by default (0 ms): idleness lets the window run ahead of the classifier and drop
    # on-time clicks once every partition has been silent (docs/ARCHITECTURE.md).
    conf.set("table.exec.source.idle-timeout", f"{args.idle_timeout_ms} ms")
    conf.set("table.exec.state.ttl", f"{args.dedup_horizon_s} s")
    conf.set("python.executable", sys.executable)
    jars = sorted(CONNECTOR_JAR_DIR.glob("flink-sql-connector-kafka-*.jar"))
    if jars:  # under `flink run` the jar may come from --jarfile instead
        conf.set("pipeline.jars", ";".join(jar.as_uri() for jar in jars))


def kafka_options(args, topic):
    return {"topic": topic, "properties.bootstrap.servers": args.bootstrap_servers}


def source_schema(args):
    """The raw click source's columns, event time and watermark (the benchmark reuses it)."""
    return (
        Schema.new_builder()
        .column("payload", DataTypes.BYTES())
        .column_by_metadata("kafka_partition", DataTypes.INT(), "partition", True)
        .column_by_metadata("kafka_offset", DataTypes.BIGINT(), "offset", True)
        .column_by_metadata("kafka_timestamp", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
        .column_by_expression("proc_time", "PROCTIME()")
        .column_by_expression("event_time", substitute(EVENT_TIME_EXPR, sql_parameters(args)))
        .watermark("event_time",
                   f"TIMESTAMPADD(MILLISECOND, -{int(args.watermark_delay_ms)}, event_time)")
        .build()
    )


def source_descriptor(args, topic):
    builder = TableDescriptor.for_connector("kafka").schema(source_schema(args)).format("raw")
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


def sink_descriptor(args, topic, name, columns):
    schema = Schema.new_builder()
    for column, data_type in columns:
        schema = schema.column(column, data_type)
    builder = (
        TableDescriptor.for_connector("kafka")
        .schema(schema.build())
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
    for name, columns in SINK_COLUMNS.items():
        t_env.create_temporary_table(
            f"{name}_sink", sink_descriptor(args, topics[name], name, columns))
    t_env.create_temporary_function("merge_top_n", merge_top_n(args.top_n))
    statements = t_env.create_statement_set()
    for statement in sql_statements(sql_parameters(args)):
        if statement.upper().startswith("INSERT"):
            statements.add_insert_sql(statement)
        else:
            t_env.execute_sql(statement)
    return statements


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    configure(t_env, args)
    result = build_pipeline(t_env, args).execute()
    job_client = result.get_job_client()
    if job_client is not None:
        logging.info("submitted %s as job %s", JOB_NAME, job_client.get_job_id())
        result.wait()


if __name__ == "__main__":
    main()
