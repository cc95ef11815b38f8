"""The job's plan keeps the invariants its exactly-once argument rests on.

Planned (not run) from the real SQL: every sink must hang off ONE deduplication, or a click
could be classed on time by one copy and late by another and be counted twice; the windowed
count must be split into local and global phases, so a hot ad is pre-counted before the shuffle;
each record is parsed once, by the source's format, not again by SQL functions.
"""

import json
import re

import pytest
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings
from pyflink.table import StreamTableEnvironment
from pyflink.table import TableEnvironment

from jobs import ad_click_aggregation as job
from tests.sql_change import changed_sql_dir


@pytest.fixture(scope="module")
def execution_plan():
    # Default flags: planning also proves the default lateness/delay intervals are valid SQL.
    args = job.parse_args(["--topic-prefix", "plan-"])
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    job.attach_connectors(t_env, args)
    plan = job.build_pipeline(t_env, args).explain()
    return plan[plan.index("== Optimized Execution Plan =="):]


def test_one_dedup_feeds_every_sink(execution_plan):
    # The classifiers (CURRENT_WATERMARK) are chained right after this one operator, so they
    # all see the same watermark when a click or impression passes: each takes exactly one
    # path, the attribution's branch of counted clicks included. Conversions have a dedup of
    # their own, shared by both of their sinks.
    dedups = re.findall(r"\bDeduplicate\(keep=\[FirstRow\], key=\[([\w, ]+)\]", execution_plan)
    assert dedups == ["event, key_hi, key_lo", "key_hi, key_lo"]
    # Each classifier reads the events' dedup itself (the labelling's, the impressions' window
    # branch's, and the late rows'), nothing in between.
    dedup = re.search(r"Deduplicate\(keep=\[FirstRow\], key=\[event, key_hi, key_lo\].*"
                      r"\(reuse_id=\[(\d+)\]\)", execution_plan)[1]
    lines = execution_plan.splitlines()
    classifiers = [i for i, line in enumerate(lines) if "CURRENT_WATERMARK" in line]
    assert len(classifiers) == 3
    assert all(f"Reused(reference_id=[{dedup}])" in lines[i + 1] for i in classifiers)
    assert len(re.findall(r"\bSink\(table=", execution_plan)) == len(job.SINK_COLUMNS) == 7


def test_the_dedup_is_keyed_by_the_id_fingerprint(execution_plan):
    # Two BIGINTs from the source format (EventKey.java), not the id string: the keyed state's
    # cost per event (measured in docs/SCALING.md); and the event type, as a click and an
    # impression may share an id.
    assert "Deduplicate(keep=[FirstRow], key=[event, key_hi, key_lo]" in execution_plan


def test_the_attribution_join_keeps_clicks_for_the_window_and_conversions_for_the_wait():
    args = job.parse_args(["--topic-prefix", "plan-", "--attribution-window-s", "600",
                           "--conversion-wait-s", "480"])
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    job.attach_connectors(t_env, args)
    plan = json.loads(
        job.build_pipeline(t_env, args)._j_statement_set.compilePlan().asJsonString())
    joins = [node for node in plan["nodes"] if node["type"].startswith("stream-exec-join")]
    assert [(state["name"], state["ttl"]) for state in joins[0]["state"]] == \
        [("leftState", "8 min"), ("rightState", "18 min")]


def test_window_counts_are_two_phase(execution_plan):
    assert "LocalWindowAggregate(groupBy=[ad_id, country, device, traffic]" in execution_plan
    assert "GlobalWindowAggregate(groupBy=[ad_id, country, device, traffic]" in execution_plan


def test_each_event_is_windowed_once(execution_plan):
    # The per-ad totals of the top-N are cascaded from the one window count (clicks and
    # impressions); a window of their own would be a second pass over every event.
    for phase in ("Local", "Global"):
        key = "groupBy=[ad_id, country, device, traffic]"
        assert execution_plan.count(f"{phase}WindowAggregate({key}") == 1, phase



def test_each_record_is_parsed_once_by_the_source(execution_plan):
    assert len(re.findall(r"\bTableSourceScan\(table=\[\[\w+, \w+, clicks_raw\b",
                          execution_plan)) == 1
    assert "JSON_" not in execution_plan and "REGEXP" not in execution_plan


def test_the_job_clock_reaches_the_dedup_but_none_of_its_rows_do(execution_plan):
    # The clock's watermark and never-idle status must reach the dedup (docs/ARCHITECTURE.md,
    # idle partitions); its filter must not have been folded away.
    assert re.search(r"TableSourceScan\(table=\[\[\w+, \w+, job_clock\b", execution_plan)
    assert "where=[(beat < 0)]" in execution_plan
    assert re.search(r"Union\(all=\[true\]", execution_plan)


def test_a_conversion_waits_for_every_click_that_can_still_count():
    with pytest.raises(SystemExit):
        job.parse_args(["--allowed-lateness-s", "360", "--conversion-wait-s", "419"])
    assert job.parse_args(["--allowed-lateness-s", "360", "--conversion-wait-s", "420"])


@pytest.mark.parametrize("backend, incremental", [("rocksdb", "true"), ("hashmap", "false")])
def test_state_backend_flag_sets_the_backend_and_incremental_checkpoints(backend, incremental):
    args = job.parse_args(["--state-backend", backend])
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    conf = t_env.get_config()
    assert conf.get("state.backend.type", None) == backend
    assert conf.get("execution.checkpointing.incremental", None) == incremental
    # RocksDB gets memory in a local run (the MiniCluster's default is 64 MiB per slot).
    managed = conf.get("taskmanager.memory.managed.size", None)
    assert managed == (f"{512 * args.parallelism}m" if backend == "rocksdb" else None)


def test_key_groups_and_timers_are_fixed_by_the_job():
    """The max parallelism is set, not left to Flink's choice from the parallelism (it lays
    out every keyed state); timers stay out of raw keyed state, which the dedup writes."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, job.parse_args(["--parallelism", "3"]))
    conf = t_env.get_config()
    assert conf.get("pipeline.max-parallelism", None) == "128"
    assert conf.get("state.backend.rocksdb.timer-service.factory", None) == "ROCKSDB"


def test_rocksdb_files_carry_bloom_filters():
    """The labelling looks up every click's user and ip key, nearly always absent: with a
    filter in each of RocksDB's files, a miss seldom reads one of their blocks."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, job.parse_args(["--state-backend", "rocksdb"]))
    assert t_env.get_config().get("state.backend.rocksdb.use-bloom-filter", None) == "true"


def test_without_the_flag_the_cluster_decides_the_state_backend():
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, job.parse_args([]))
    assert t_env.get_config().get("state.backend.type", None) is None


@pytest.mark.parametrize("flag, ignored", [([], None), (["--allow-non-restored-state"], "true")])
def test_state_of_removed_operators_is_dropped_only_when_asked(flag, ignored):
    # A state saved before the compact attribution holds the SQL join's clicks: without the
    # flag Flink refuses to restore it (nothing runs, it says why); with it, they are dropped.
    args = job.parse_args(flag)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    assert t_env.get_config().get("execution.state-recovery.ignore-unclaimed-state",
                                  None) == ignored


@pytest.mark.parametrize("attached, waits", [(None, True), ("true", True), ("false", False)])
def test_the_program_waits_for_the_job_unless_detached(attached, waits):
    # `flink run -d` sets execution.attached=false: the program must return once the job is
    # submitted, or the detached client hangs on a streaming job that never ends.
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    if attached is not None:
        t_env.get_config().set("execution.attached", attached)
    assert job.follows_the_job(t_env) is waits


def plan_nodes(sql_dir):
    """(id relative to the first, kind) of every plan node: operators' uids are built from
    these ids (table.exec.uid.generation ALWAYS), and the ids of one JVM keep counting up."""
    args = job.parse_args(["--topic-prefix", "plan-", "--sql-dir", str(sql_dir)])
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    job.configure(t_env, args)
    job.attach_connectors(t_env, args)
    plan = json.loads(
        job.build_pipeline(t_env, args)._j_statement_set.compilePlan().asJsonString())
    first = plan["nodes"][0]["id"]
    return [(node["id"] - first, node["type"]) for node in plan["nodes"]]


def test_an_appended_statement_keeps_every_operators_uid(tmp_path):
    # Savepoints map state to operators by uid: a statement added after the existing ones must
    # leave their ids as they were (tests/test_cluster_restarts.py restores across this).
    before, after = plan_nodes(job.SQL_DIR), plan_nodes(changed_sql_dir(tmp_path))
    assert len(after) > len(before)
    assert after[:len(before)] == before


@pytest.fixture(scope="module")
def stream_nodes():
    """The job's operators as it runs them: after attach_job (compact dedups, uids)."""
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    args = job.parse_args(["--topic-prefix", "plan-", "--dedup-horizon-s", "900",
                           "--impression-dedup-horizon-s", "420",
                           "--attribution-window-s", "600", "--conversion-wait-s", "480"])
    job.configure(t_env, args)
    job.attach_connectors(t_env, args)
    job.attach_job(env, job.build_pipeline(t_env, args), args)
    return env._generate_stream_graph(clear_transformations=True).getStreamNodes().toArray()


def test_every_operator_has_a_uid_the_python_one_too(stream_nodes):
    # Without one, an operator's id is a hash of the graph's shape, and a savepoint taken
    # before a change to the SQL could not be restored after it (the planner gives none to its
    # Python operators; the job's attach_job does).
    uids = {node.getOperatorName(): node.getTransformationUID() for node in stream_nodes}
    assert [name for name, uid in uids.items() if not uid] == []
    python = [uid for name, uid in uids.items() if name.startswith("PythonGroupWindowAggregate")]
    assert len(python) == 1 and python[0].endswith("_python-group-window-aggregate")


def test_the_job_runs_the_compact_dedup_in_place_of_each_planned_one(stream_nodes):
    # The plan's two dedups (events, conversions) run as udfs/java's CompactDeduplicateOperator,
    # each behind the planner's keyBy (a keyed operator: key groups carry its state when
    # rescaled), with a uid of its own: its state is not the planner's.
    dedups = {node.getOperatorName(): node for node in stream_nodes
              if "Deduplicate" in node.getOperatorName()}
    assert sorted(re.sub(r"\d+", "N", name) for name in dedups) == ["CompactDeduplicate[N]"] * 2
    clocks, impressions = [], []
    for name, node in dedups.items():
        operator = node.getOperatorFactory().getOperator()
        assert operator.getClass().getName() == "adclick.flink.CompactDeduplicateOperator"
        assert operator.getHorizonS() == 900  # --dedup-horizon-s
        assert operator.getHorizonS("click") == 900
        assert node.getStatePartitioners()[0] is not None
        assert node.getTransformationUID() == re.sub(r"\D", "", name) + "_compact-deduplicate"
        clocks.append(operator.usesWatermarkClock())
        impressions.append(operator.getHorizonS("impression"))
    # The horizon runs on event time: the events' watermark, the conversions' newest time.
    assert sorted(clocks) == [False, True]
    # Impressions have a horizon of their own in the events' dedup (the conversions' has no
    # event type in its key).
    assert sorted(impressions) == [420, 900]


def test_the_job_runs_the_compact_attribution_in_place_of_the_planned_join(stream_nodes):
    # The attribution join (35_attribution.sql) runs as udfs/java's CompactAttributionOperator
    # behind the planner's keyBy on click_id, keeping clicks for the window plus the wait and
    # conversions for the wait, and no regular join is left in the job.
    names = [node.getOperatorName() for node in stream_nodes]
    assert [name for name in names if re.fullmatch(r"Join\[\d+\]", name)] == []
    joins = [node for node in stream_nodes if "CompactAttribution" in node.getOperatorName()]
    assert len(joins) == 1
    node = joins[0]
    operator = node.getOperatorFactory().getOperator()
    assert operator.getClass().getName() == "adclick.flink.CompactAttributionOperator"
    assert (operator.getRetentionS(), operator.getWaitS()) == (1080, 480)
    assert all(partitioner is not None for partitioner in node.getStatePartitioners())
    assert node.getTransformationUID() == \
        re.sub(r"\D", "", node.getOperatorName()) + "_compact-attribution"


def test_the_job_labels_clicks_in_place_of_the_planned_over_window(stream_nodes):
    # The invalid-traffic rules' OVER window (25_traffic_labels.sql) runs as udfs/java's
    # ClickLabelOperator behind the planner's keyBy on ad_id; no OVER aggregate is left.
    names = [node.getOperatorName() for node in stream_nodes]
    assert [name for name in names if name.startswith("OverAggregate")] == []
    labels = [node for node in stream_nodes if node.getOperatorName().startswith("ClickLabel[")]
    assert len(labels) == 1
    node = labels[0]
    assert node.getOperatorFactory().getOperator().getClass().getName() == \
        "adclick.flink.ClickLabelOperator"
    assert node.getStatePartitioners()[0] is not None
    assert node.getTransformationUID() == \
        re.sub(r"\D", "", node.getOperatorName()) + "_click-label"


@pytest.mark.parametrize("argv, message", [
    (["--repeat-click-window-s", "0"], "must be positive"),
    (["--ip-frequency-threshold", "0"], "must be positive"),
    (["--repeat-click-window-s", "700"], "must not exceed --ip-frequency-window-s"),
    (["--ip-frequency-window-s", "1000"], "must be at most 999"),
])
def test_invalid_traffic_thresholds_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        job.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_stage_is_replaced_by_name_not_by_text():
    statements = ["CREATE TEMPORARY VIEW a AS SELECT 1", "CREATE TEMPORARY VIEW b AS\nSELECT 2",
                  "INSERT INTO s SELECT * FROM b"]
    replaced = list(job.replace_views(statements, {"b": "SELECT 3"}))
    assert replaced == [statements[0], "CREATE TEMPORARY VIEW b AS SELECT 3", statements[2]]
    with pytest.raises(ValueError, match="no view c"):
        list(job.replace_views(statements, {"c": "SELECT 3"}))
