"""The engine limit: a plain Flink SQL windowed count over the same topic, bounded.

    python -m bench.engine_job --bootstrap-servers H:P --topic T [--empty-topic E]
                               [--with-dedup] [--adclick-stages --checkpoint-dir URI]

Same connector jar as the adclick job, parallelism 2, 'json' format with all seven click fields
declared, event time from click_ts with a 5 s bounded-out-of-orderness watermark, a 1-minute
tumbling window COUNT(*) per ad_id into a 'blackhole' sink, reading from the earliest to the
latest offset ('scan.bounded.mode' = 'latest-offset'), so the job ends by itself.

Job time is the JobManager's net runtime of the job (JobExecutionResult.getNetRuntime(): from
the job's start on the MiniCluster to its end), which excludes the JVM and Python start and
the planning. When --empty-topic is given, the same job runs on that empty topic before (to
warm the JVM up) and after the real run in the same JVM: the net runtime of the second empty
run is the fixed per-job cost (deploying tasks, connecting to Kafka, finishing), reported and
subtracted in a second rate. With --with-dedup, the same count then runs over the first row of
each click_id (UNIQUE_CLICKS), the engine's limit with adclick's deduplication duty.

With --adclick-stages, the adclick job then runs over the same topic, bounded, in the same JVM,
into blackhole sinks, with the job's own settings (exactly-once checkpoints every 5 s, heap
state): its first operator chain alone (the 'adclick-event' format and sql/flink/10_parse.sql),
the whole job without its deduplication, and the whole job. The three say what each part of
the job costs against the same engine limit.
Prints one JSON object on stdout, on the line that starts with RESULT_MARK.
"""

import argparse
import json
import os
import sys
import time

from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings
from pyflink.table import TableDescriptor
from pyflink.table import StreamTableEnvironment
from pyflink.table import TableEnvironment

from adclick import config
from bench import procs
from jobs import ad_click_aggregation as job

RESULT_MARK = "BENCH_ENGINE_RESULT "

SOURCE = """
CREATE TEMPORARY TABLE {name} (
  click_id STRING, ad_id STRING, click_ts BIGINT, user_id STRING, ip STRING,
  country STRING, device STRING,
  event_time AS TO_TIMESTAMP_LTZ(click_ts, 3),
  proc_time AS PROCTIME(),
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

# The same count over the first row of each click_id, as plain Flink SQL writes a dedup (keyed
# by the string, first row on processing time, state kept for the dedup horizon): what this
# engine can do with the same duty as adclick's, without adclick's other work.
# A view, because a window TVF takes a table by name, not a subquery.
UNIQUE_CLICKS = """
CREATE TEMPORARY VIEW {source}_unique AS
SELECT ad_id, event_time FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY click_id ORDER BY proc_time ASC) AS row_num
  FROM {source})
WHERE row_num = 1"""


def jvm_cpu_seconds():
    """CPU seconds used so far by this process's children (the gateway JVM with the job)."""
    total = sum(int(fields[11]) + int(fields[12]) for _pid, fields in procs.proc_stats()
                if int(fields[1]) == os.getpid())
    return total / os.sysconf("SC_CLK_TCK")


def timed(submit):
    """Run submit() (it submits one bounded job and returns its JobClient) and time the job:
    its net runtime, and the JVM's CPU from the submission's return to the job's end (the
    planning and translation before it are not the records' cost: planning_cpu_s)."""
    cpu0 = jvm_cpu_seconds()
    submitted = time.monotonic()
    client = submit()
    cpu_running = jvm_cpu_seconds()
    execution = client.get_job_execution_result().result()
    return {"net_runtime_s": execution.get_net_runtime() / 1000.0,
            "submit_to_end_s": round(time.monotonic() - submitted, 3),
            "jvm_cpu_s": round(jvm_cpu_seconds() - cpu_running, 2),
            "planning_cpu_s": round(cpu_running - cpu0, 2),
            "job_id": str(client.get_job_id())}


def run_job(t_env, args, topic, name, dedup=False):
    source = f"src_{name}"
    t_env.execute_sql(SOURCE.format(name=source, topic=topic, bootstrap=args.bootstrap_servers))
    t_env.execute_sql(SINK.format(name=f"sink_{name}"))
    if dedup:
        t_env.execute_sql(UNIQUE_CLICKS.format(source=source))
        source += "_unique"
    return timed(lambda: t_env.execute_sql(
        QUERY.format(sink=f"sink_{name}", source=source)).get_job_client())


def adclick_env(args, stage, measured=None):
    """A fresh table environment (same JVM) with the adclick job's settings and its bounded
    sources: the same schema, 'adclick-event' format and watermark, from the earliest to the
    latest offset; the measured inputs ({input name: topic}; default: clicks from --topic)
    filled, the others from the empty topic."""
    measured = measured or {"clicks": args.topic}
    job_args = job.parse_args(["--bootstrap-servers", args.bootstrap_servers,
                               "--parallelism", str(args.parallelism),
                               "--checkpoint-dir", f"{args.checkpoint_dir}/{stage}"])
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, job_args)
    for name, event in job.INPUTS.items():
        topic = measured.get(name, args.empty_topic)
        if topic is None:
            raise SystemExit("the adclick stages need --empty-topic for the other inputs")
        builder = TableDescriptor.for_connector("kafka").schema(
            job.source_schema(job_args, event))
        builder = builder.format(job.event_format(job_args, event))
        for key, value in {"topic": topic, "properties.bootstrap.servers": args.bootstrap_servers,
                           "properties.group.id": f"bench-{stage}",
                           "scan.startup.mode": "earliest-offset",
                           "scan.bounded.mode": "latest-offset"}.items():
            builder = builder.option(key, value)
        t_env.create_temporary_table(f"{name}_raw", builder.build())
    return env, t_env, job_args


def run_adclick_parse(args, stage):
    """Only the adclick job's first operator chain: its source and sql/flink/10_parse.sql,
    valid clicks and rejects into blackhole sinks. What parsing and validating cost."""
    _env, t_env, job_args = adclick_env(args, stage)
    t_env.execute_sql("CREATE TEMPORARY TABLE parsed_sink (click_id STRING, ad_id STRING, "
                      "country STRING, device STRING, event_time TIMESTAMP_LTZ(3)) "
                      "WITH ('connector' = 'blackhole')")
    t_env.execute_sql("CREATE TEMPORARY TABLE rejects_sink (reason STRING, payload STRING) "
                      "WITH ('connector' = 'blackhole')")
    statements = job.sql_statements(job.sql_parameters(job_args), [job.SQL_DIR / "10_parse.sql"])
    inserts = job.statement_set(t_env, statements)
    inserts.add_insert_sql("INSERT INTO parsed_sink SELECT event_id, ad_id, country, device, "
                           "event_time FROM events_valid")
    inserts.add_insert_sql("INSERT INTO rejects_sink SELECT reject_reason, "
                           "TO_BASE64(payload) FROM events_rejected")
    return timed(lambda: inserts.execute().get_job_client())


# Stands in for the dedup stage of sql/flink/20_dedup_and_lateness.sql: every valid event
# passes, as if each were the first of its id.
WITHOUT_DEDUP = ("SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, "
                 "event_time, traffic FROM events_valid")


def run_adclick_job(args, stage, dedup=True, measured=None):
    """The whole adclick job (sql/flink/*.sql), bounded, its sinks bound to blackhole ones,
    over the measured inputs (adclick_env); with dedup=False its dedup stage (the view
    events_unique) is WITHOUT_DEDUP."""
    env, t_env, job_args = adclick_env(args, stage, measured)
    t_env.create_temporary_table("job_clock", job.clock_descriptor(job_args, rows=16))
    for name, columns in job.SINK_COLUMNS.items():
        t_env.create_temporary_table(f"{name}_sink", TableDescriptor.for_connector("blackhole")
                                     .schema(job.sink_schema(columns)).build())
    stages = {} if dedup else {"events_unique": WITHOUT_DEDUP}
    statements = job.build_pipeline(t_env, job_args, replace=stages)

    def submit():
        # As the job runs: with its compact dedup in place of the planner's.
        job.attach_job(env, statements, job_args)
        return env.execute_async(f"adclick {stage}")
    return timed(submit)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--empty-topic", default=None)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--with-dedup", action="store_true",
                   help="also run the plain count over the first row of each click_id")
    p.add_argument("--adclick-stages", action="store_true",
                   help="also run the adclick job's parse chain alone, the job without its "
                        "dedup, and the whole job, over the topic into blackhole sinks")
    p.add_argument("--checkpoint-dir", default=None,
                   help="where the adclick stages checkpoint (a file:// URI)")
    p.add_argument("--impressions-topic", default=None,
                   help="with --adclick-stages: also the whole job over these impressions")
    p.add_argument("--mix-clicks-topic", default=None,
                   help="with --adclick-stages: also the whole job over these clicks (with "
                        "duplicates, late and too-late ones) and --mix-conversions-topic")
    p.add_argument("--mix-conversions-topic", default=None)
    p.add_argument("--stage", action="append", default=None,
                   help="with --adclick-stages: run only this stage (parse_only, "
                        "without_dedup, whole_job, whole_job_impressions, whole_job_mix); "
                        "repeatable. For a profile of one stage")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the plain jobs and the adclick stages this many times, "
                        "alternating; each result is the run of median time, with every "
                        "run's times beside it")
    args = p.parse_args(argv)
    if args.adclick_stages and not args.checkpoint_dir:
        p.error("--adclick-stages needs --checkpoint-dir")
    process_started = time.monotonic()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(args.parallelism))
    jars = job.job_jars()
    conf.set("pipeline.jars", ";".join(jar.as_uri() for jar in jars))
    conf.set("table.optimizer.reuse-optimize-block-with-digest-enabled", "true")
    out = {"parallelism": args.parallelism, "connector_jar": jars[0].name,
           "repeats": args.repeats}
    if args.empty_topic:
        out["warmup_empty_run"] = run_job(t_env, args, args.empty_topic, "warmup")
    if args.with_dedup:
        conf.set("table.exec.state.ttl", f"{config.DEDUP_HORIZON_SECONDS} s")
    stages = {"parse_only": lambda r: run_adclick_parse(args, f"parse-{r}"),
              "without_dedup": lambda r: run_adclick_job(args, f"job-without-dedup-{r}",
                                                         dedup=False),
              "whole_job": lambda r: run_adclick_job(args, f"job-{r}")}
    if args.impressions_topic:
        stages["whole_job_impressions"] = lambda r: run_adclick_job(
            args, f"job-impressions-{r}", measured={"impressions": args.impressions_topic})
    if args.mix_clicks_topic and args.mix_conversions_topic:
        stages["whole_job_mix"] = lambda r: run_adclick_job(
            args, f"job-mix-{r}", measured={"clicks": args.mix_clicks_topic,
                                            "conversions": args.mix_conversions_topic})
    if args.stage:
        unknown = set(args.stage) - set(stages)
        if unknown:
            p.error(f"unknown or unavailable --stage: {', '.join(sorted(unknown))}")
        stages = {name: run for name, run in stages.items() if name in args.stage}
    runs = {}
    for r in range(args.repeats):  # alternating: each repeat runs every job once
        runs.setdefault("run", []).append(run_job(t_env, args, args.topic, f"full{r}"))
        if args.empty_topic and r == 0:
            out["empty_run"] = run_job(t_env, args, args.empty_topic, "empty")
        if args.with_dedup:
            runs.setdefault("dedup_run", []).append(
                run_job(t_env, args, args.topic, f"dedup{r}", dedup=True))
        if args.adclick_stages:
            for name, run in stages.items():
                runs.setdefault(name, []).append(run(r))
    for name, each in runs.items():
        median = sorted(each, key=lambda run: run["net_runtime_s"])[len(each) // 2]
        median = dict(median, repeats=[{key: run[key] for key in ("net_runtime_s", "jvm_cpu_s")}
                                       for run in each])
        if name in ("run", "dedup_run"):
            out[name] = median
        else:
            out.setdefault("adclick_stages", {})[name] = median
    out["process_s"] = round(time.monotonic() - process_started, 3)
    # The gateway JVM shares this stdout and may write to it too: the result line is marked.
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
