"""The job's pipeline over stored raw events, in Flink's batch mode: what a recalculation runs.

    python -m jobs.recalculation --input DIR --output DIR [the streaming job's flags]

DIR/clicks, DIR/impressions, DIR/conversions hold JSON lines of the raw store's events (each
contract's fields, and the Kafka record's src_partition and src_offset), as
adclick.recalculation exports them. The statements are the streaming job's own, sql/flink/*.sql,
with the same parameters (the flags), planned in batch mode; three things differ:
- no watermark: `CURRENT_WATERMARK(event_time)` is null, so every event is on time, and the
  minute counts every unique event the raw store holds (the live job also counted the late
  ones, as corrections, and kept the too-late ones apart);
- the invalid-traffic labels come from the same aggregate over the same spans, but over the
  ad's clicks of the same user (repeat_click) and of the same ip key (ip_frequency) rather
  than over all the ad's clicks, ordered by the event time's BIGINT: batch mode adds up a
  sliding frame anew at every row (a hot ad's 10 minutes at every click), and cannot plan a
  RANGE interval over a timestamp. Each rule reads only those clicks, so the labels are the
  same (BATCH_LABELS says how the two are joined);
- the format's columns (the dedup key, the per-event traffic label) come from the same Java
  code as SQL functions, the events being read back from the store, not from Kafka; the first
  copy of a repeated id is the one of the earliest event time (the copies of a resend are the
  same event).
The top-N is ranked in SQL by the job's rule (clicks, then ad_id), since batch mode runs no
Python aggregate. Writes DIR/counts, DIR/top (one row per rank) and DIR/attributions as JSON
lines; the late, dead-letter, conversion and minute sinks are not recalculated.
"""

import argparse
import re
import sys
from pathlib import Path

from pyflink.table import DataTypes
from pyflink.table import EnvironmentSettings
from pyflink.table import TableDescriptor
from pyflink.table import TableEnvironment

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adclick.contract import CONTRACTS  # noqa: E402
from jobs import ad_click_aggregation as job  # noqa: E402

INPUTS = job.INPUTS  # clicks_raw <- click, ...
OUTPUTS = ("counts", "top", "attributions")
KEPT = ("counts", "attributions")  # the job's own INSERTs run as they are
TOP_COLUMNS = [("minute", DataTypes.TIMESTAMP_LTZ(3)), ("rank", DataTypes.BIGINT()),
               ("ad_id", DataTypes.STRING()), ("clicks", DataTypes.BIGINT())]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, type=Path, help="the exported raw events")
    p.add_argument("--output", required=True, type=Path, help="where the sinks' files go")
    ours, rest = p.parse_known_args(argv)
    settings = job.parse_args(rest)
    settings.input, settings.output = ours.input, ours.output
    return settings


# sql/flink/25_traffic_labels.sql's clicks_labeled in batch: the label from the aggregate over
# the user's clicks of the ad if it says repeat_click, else from the one over the ip key's if
# it says ip_frequency, else valid (the format's label, if any, first: both say it). The first
# sees every click the repeat rule reads, the second every click the ip rule reads, and the
# rules apply in that order; no late click revises a label here.
BATCH_LABELS = """
SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, event_time,
       watermark_ts, minute_start, timeliness,
       COALESCE(format_label, CASE WHEN by_user[event_id] = 'repeat_click' THEN 'repeat_click'
                                   WHEN by_ip[event_id] = 'ip_frequency' THEN 'ip_frequency'
                                   ELSE 'valid' END) AS traffic,
       CAST(NULL AS STRING) AS replaces
FROM (
  SELECT *, click_traffic_labels(
           format_label, user_id, ip, event_ts_ms, event_id, CAST({repeat_ms} AS BIGINT),
           CAST({ip_ms} AS BIGINT), {threshold}) OVER (
           PARTITION BY ad_id, ip_key(ip) ORDER BY event_ts_ms
           RANGE BETWEEN {ip_ms} PRECEDING AND CURRENT ROW) AS by_ip
  FROM (
    SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, event_time,
           watermark_ts, minute_start, timeliness, traffic AS format_label,
           click_traffic_labels(
             traffic, user_id, ip, event_ts_ms, event_id, CAST({repeat_ms} AS BIGINT),
             CAST({ip_ms} AS BIGINT), {threshold}) OVER (
             PARTITION BY ad_id, user_id ORDER BY event_ts_ms
             RANGE BETWEEN {repeat_ms} PRECEDING AND CURRENT ROW) AS by_user
    FROM events_timed
    WHERE event = 'click' AND timeliness <> 'too_late'
  )
)"""


def batch_statements(statements, args):
    """The job's statements as batch mode can plan them (the module's docstring says how they
    differ); the watermark's substitution must apply exactly once, so a change to the SQL
    cannot slip past."""
    labels = BATCH_LABELS.format(repeat_ms=int(args.repeat_click_window_s) * 1000,
                                 ip_ms=int(args.ip_frequency_window_s) * 1000,
                                 threshold=int(args.ip_frequency_threshold))
    statements = job.replace_views(statements, {"clicks_labeled": labels})
    swaps = [(r"CURRENT_WATERMARK\(event_time\)", "CAST(NULL AS TIMESTAMP_LTZ(3))")]
    applied = [0] * len(swaps)
    for statement in statements:
        insert = re.match(r"INSERT INTO (\w+)_sink\s", statement)
        if insert and insert[1] not in KEPT:
            continue
        for i, (pattern, replacement) in enumerate(swaps):
            statement, count = re.subn(pattern, replacement, statement)
            applied[i] += count
        yield statement
    if applied != [1] * len(swaps):
        raise ValueError(f"the job's SQL changed: batch substitutions applied {applied} times")
    # The merge of the local top lists (a Python aggregate in the live job), as SQL.
    yield f"""INSERT INTO top_sink
SELECT TIMESTAMPADD(MILLISECOND, -59999, minute_time), rank_in_minute, ad_id, clicks
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY minute_time ORDER BY clicks DESC, ad_id ASC) AS rank_in_minute
  FROM local_top_ads
)
WHERE rank_in_minute <= {int(args.top_n)}"""


def attach_files(t_env, args):
    """The pipeline's logical tables over the exported files: inputs as the format would fill
    them, the clock without rows, the recalculated sinks as JSON lines."""
    for name, event in INPUTS.items():
        contract = CONTRACTS[event]
        columns = ", ".join(f"`{column}` {data_type}" for column, data_type in
                            contract.sql_columns())
        folder = args.input / name
        folder.mkdir(parents=True, exist_ok=True)
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {name}_stored ({columns}, src_partition INT,"
            f" src_offset BIGINT) WITH ('connector' = 'filesystem', 'path' = '{folder.as_uri()}',"
            " 'format' = 'json')")
        id_field, time_field = contract.id_field, contract.time_field
        traffic = ("CAST(NULL AS STRING)" if event == "conversion"
                   else "event_traffic(user_agent, ip)")
        t_env.execute_sql(f"""
CREATE TEMPORARY VIEW {name}_raw AS
SELECT *, CAST(NULL AS STRING) AS reject_reason, CAST(NULL AS BYTES) AS payload,
       event_key({id_field}, 0) AS key_hi, event_key({id_field}, 1) AS key_lo,
       {traffic} AS traffic, src_partition AS kafka_partition, src_offset AS kafka_offset,
       CAST(NULL AS TIMESTAMP_LTZ(3)) AS kafka_timestamp,
       TO_TIMESTAMP_LTZ({time_field}, 3) AS proc_time,
       TO_TIMESTAMP_LTZ({time_field}, 3) AS event_time
FROM {name}_stored""")
    t_env.execute_sql("""
CREATE TEMPORARY VIEW job_clock AS
SELECT beat, CAST(NULL AS TIMESTAMP_LTZ(3)) AS proc_time,
       CAST(NULL AS TIMESTAMP_LTZ(3)) AS event_time
FROM (VALUES (0)) AS clock(beat)
WHERE beat > 0""")
    for name in OUTPUTS:
        columns = TOP_COLUMNS if name == "top" else job.SINK_COLUMNS[name]
        t_env.create_temporary_table(
            f"{name}_sink",
            TableDescriptor.for_connector("filesystem").schema(job.sink_schema(columns))
            .option("path", (args.output / name).as_uri()).format("json").build())


def main(argv=None):
    args = parse_args(argv)
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("python.executable", sys.executable)
    jar = job.JAR_DIR / "adclick-flink.jar"
    if not jar.exists():
        sys.exit(f"recalculation: {jar} is missing (run `make jars`)")
    conf.set("pipeline.jars", jar.as_uri())
    t_env.create_java_temporary_function("event_key", "adclick.flink.EventKeyFunction")
    t_env.create_java_temporary_function("event_traffic", "adclick.flink.TrafficLabelFunction")
    t_env.create_java_temporary_function("ip_key", "adclick.flink.IpKeyFunction")
    t_env.create_java_temporary_function("click_traffic_labels",
                                         "adclick.flink.ClickTrafficLabels")
    t_env.create_java_temporary_function("traffic_rules", "adclick.flink.TrafficRulesVersion")
    attach_files(t_env, args)
    statements = batch_statements(
        job.sql_statements(job.sql_parameters(args), sorted(Path(args.sql_dir).glob("*.sql"))),
        args)
    job.statement_set(t_env, statements).execute().wait()


if __name__ == "__main__":
    main()
