"""The engine limit: a plain Flink SQL windowed count over the same topic, bounded.

    python -m bench.engine_job --bootstrap-servers H:P --topic T [--empty-topic E]
                               [--adclick-parse]

Same connector jar as the adclick job, parallelism 2, 'json' format with all seven click fields
declared, event time from click_ts with a 5 s bounded-out-of-orderness watermark, a 1-minute
tumbling window COUNT(*) per ad_id into a 'blackhole' sink, reading from the earliest to the
latest offset ('scan.bounded.mode' = 'latest-offset'), so the job ends by itself.

Job time is the JobManager's net runtime of the job (JobExecutionResult.getNetRuntime(): from
the job's start on the MiniCluster to its end), which excludes the JVM and Python start and
the planning. When --empty-topic is given, the same job runs on that empty topic before (to
warm the JVM up) and after the real run in the same JVM: the net runtime of the second empty
run is the fixed per-job cost (deploying tasks, connecting to Kafka, finishing), reported and
subtracted in a second rate. With --adclick-parse, the adclick job's own source (its
'adclick-click' format parses and validates) and sql/flink/10_parse.sql then run alone over the
same topic into blackhole sinks, in the same JVM: the cost of the job's first operator chain.
Prints one JSON object on stdout, on the line that starts with RESULT_MARK.
"""

import argparse
import json
import os
import sys
import time

from pyflink.table import DataTypes
from pyflink.table import EnvironmentSettings
from pyflink.table import Schema
from pyflink.table import TableDescriptor
from pyflink.table import TableEnvironment

from bench import procs
from jobs import ad_click_aggregation as job

RESULT_MARK = "BENCH_ENGINE_RESULT "

SOURCE = """
CREATE TEMPORARY TABLE {name} (
  click_id STRING, ad_id STRING, click_ts BIGINT, user_id STRING, ip STRING,
  country STRING, device STRING,
  event_time AS TO_TIMESTAMP_LTZ(click_ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = 'bench-engine',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
)"""

SINK = """
CREATE TEMPORARY TABLE {name} (window_start TIMESTAMP_LTZ(3), ad_id STRING, clicks BIGINT)
WITH ('connector' = 'blackhole')"""

QUERY = """
INSERT INTO {sink}
SELECT window_start, ad_id, COUNT(*) AS clicks
FROM TABLE(TUMBLE(TABLE {source}, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, ad_id"""


def jvm_cpu_seconds():
    """CPU seconds used so far by this process's children (the gateway JVM with the job)."""
    total = sum(int(fields[11]) + int(fields[12]) for _pid, fields in procs.proc_stats()
                if int(fields[1]) == os.getpid())
    return total / os.sysconf("SC_CLK_TCK")


def run_job(t_env, args, topic, name):
    t_env.execute_sql(SOURCE.format(name=f"src_{name}", topic=topic,
                                    bootstrap=args.bootstrap_servers))
    t_env.execute_sql(SINK.format(name=f"sink_{name}"))
    cpu0 = jvm_cpu_seconds()
    submitted = time.monotonic()
    result = t_env.execute_sql(QUERY.format(sink=f"sink_{name}", source=f"src_{name}"))
    client = result.get_job_client()
    execution = client.get_job_execution_result().result()
    ended = time.monotonic()
    return {"net_runtime_s": execution.get_net_runtime() / 1000.0,
            "submit_to_end_s": round(ended - submitted, 3),
            "jvm_cpu_s": round(jvm_cpu_seconds() - cpu0, 2),
            "job_id": str(client.get_job_id())}


def run_adclick_parse(t_env, args, topic):
    """Only the adclick job's first operator chain, bounded: its source (same schema, format
    and watermark) and sql/flink/10_parse.sql, valid clicks and rejects into blackhole sinks.
    Isolates what parsing and validating costs per record."""
    job_args = job.parse_args(["--bootstrap-servers", args.bootstrap_servers])
    params = job.sql_parameters(job_args)
    schema = job.source_schema(job_args)
    builder = TableDescriptor.for_connector("kafka").schema(schema)
    builder = builder.format(job.click_format(job_args))
    for key, value in {"topic": topic, "properties.bootstrap.servers": args.bootstrap_servers,
                       "properties.group.id": "bench-parse",
                       "scan.startup.mode": "earliest-offset",
                       "scan.bounded.mode": "latest-offset"}.items():
        builder = builder.option(key, value)
    t_env.create_temporary_table("clicks_raw", builder.build())
    for statement in job.sql_statements(params, [job.SQL_DIR / "10_parse.sql"]):
        t_env.execute_sql(statement)
    t_env.execute_sql("CREATE TEMPORARY TABLE parsed_sink (click_id STRING, ad_id STRING, "
                      "country STRING, device STRING, event_time TIMESTAMP_LTZ(3)) "
                      "WITH ('connector' = 'blackhole')")
    t_env.execute_sql("CREATE TEMPORARY TABLE rejects_sink (reason STRING, payload STRING) "
                      "WITH ('connector' = 'blackhole')")
    statements = t_env.create_statement_set()
    statements.add_insert_sql("INSERT INTO parsed_sink SELECT click_id, ad_id, country, device, "
                              "event_time FROM clicks_valid")
    statements.add_insert_sql("INSERT INTO rejects_sink SELECT reject_reason, "
                              "TO_BASE64(payload) FROM clicks_rejected")
    cpu0 = jvm_cpu_seconds()
    submitted = time.monotonic()
    result = statements.execute()
    client = result.get_job_client()
    execution = client.get_job_execution_result().result()
    return {"net_runtime_s": execution.get_net_runtime() / 1000.0,
            "submit_to_end_s": round(time.monotonic() - submitted, 3),
            "jvm_cpu_s": round(jvm_cpu_seconds() - cpu0, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--empty-topic", default=None)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--adclick-parse", action="store_true",
                   help="also run the adclick job's parse/validate chain alone over the topic")
    args = p.parse_args(argv)
    process_started = time.monotonic()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(args.parallelism))
    jars = job.job_jars()
    conf.set("pipeline.jars", ";".join(jar.as_uri() for jar in jars))
    conf.set("table.optimizer.reuse-optimize-block-with-digest-enabled", "true")
    out = {"parallelism": args.parallelism, "connector_jar": jars[0].name}
    if args.empty_topic:
        out["warmup_empty_run"] = run_job(t_env, args, args.empty_topic, "warmup")
    out["run"] = run_job(t_env, args, args.topic, "full")
    if args.empty_topic:
        out["empty_run"] = run_job(t_env, args, args.empty_topic, "empty")
    if args.adclick_parse:
        out["adclick_parse_run"] = run_adclick_parse(t_env, args, args.topic)
    out["process_s"] = round(time.monotonic() - process_started, 3)
    # The gateway JVM shares this stdout and may write to it too: the result line is marked.
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
