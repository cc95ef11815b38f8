"""Which state a start resumes, starting empty only on purpose, and one run per pipeline."""

import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from pyflink.java_gateway import get_gateway
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings
from pyflink.table import StreamTableEnvironment
from pyflink.table import TableEnvironment

from adclick import job_state
from adclick.testing.processes import PYTHON
from adclick.testing.processes import REPO
from jobs import ad_click_aggregation as job

JOB_A = "a" * 32
JOB_B = "b" * 32


def saved(root, relative, mtime, checkpoint_id=None):
    """A completed checkpoint or savepoint folder finished at mtime: its _metadata written by
    Flink's own writer, with checkpoint_id (by default the number that ends `relative`)."""
    if checkpoint_id is None:
        checkpoint_id = int(re.search(r"(\d+)$", relative)[1])
    folder = root / relative
    folder.mkdir(parents=True)
    metadata = folder / "_metadata"
    jvm = get_gateway().jvm
    flink = jvm.org.apache.flink.runtime.checkpoint
    out = jvm.java.io.DataOutputStream(jvm.java.io.FileOutputStream(str(metadata)))
    try:
        flink.Checkpoints.storeCheckpointMetadata(flink.metadata.CheckpointMetadata(
            checkpoint_id, jvm.java.util.ArrayList(), jvm.java.util.ArrayList()), out)
    finally:
        out.close()
    os.utime(metadata, (mtime, mtime))
    return folder


@pytest.fixture
def pipeline_dir(tmp_path):
    return tmp_path / "checkpoints" / "prefix-group"


def test_the_newest_completed_state_wins_whatever_its_kind(pipeline_dir):
    now = time.time()
    # One lineage: job A checkpoints, stops with a savepoint (the next id), job B resumes it
    # and counts on from there; ids go on across restores.
    saved(pipeline_dir, f"{JOB_A}/chk-7", now - 300)
    saved(pipeline_dir, "savepoints/savepoint-aaaaaa-1", now - 200, checkpoint_id=8)
    newest = saved(pipeline_dir, f"{JOB_B}/chk-9", now - 100)
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert [s.kind for s in state.saved_states()] == ["checkpoint", "savepoint", "checkpoint"]
    assert state.newest().path.endswith(str(newest))
    saved(pipeline_dir, "savepoints/savepoint-bbbbbb-2", now - 10, checkpoint_id=10)
    assert state.newest().kind == "savepoint"
    assert state.newest().path.endswith("savepoint-bbbbbb-2")


def test_incomplete_and_foreign_folders_are_never_resumed(pipeline_dir):
    now = time.time()
    older = saved(pipeline_dir, f"{JOB_A}/chk-1", now - 100)
    (pipeline_dir / JOB_A / "chk-2").mkdir()  # no _metadata: that checkpoint never completed
    saved(pipeline_dir, "not-a-job/chk-9", now)  # not Flink's layout
    # RocksDB's shared files, not a checkpoint
    saved(pipeline_dir, f"{JOB_A}/shared", now, checkpoint_id=99)
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert state.newest().path.endswith(str(older))


def test_equal_completion_times_resume_the_highest_checkpoint_id(pipeline_dir):
    # Coarse mtimes (object stores, NFS, a fast job): chk-9 and chk-10 finished "together".
    # By name chk-10 sorts before chk-9; only the id in the metadata tells them apart.
    now = int(time.time())
    saved(pipeline_dir, f"{JOB_A}/chk-9", now)
    newest = saved(pipeline_dir, f"{JOB_A}/chk-10", now)
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert state.newest().path.endswith(str(newest))
    assert state.newest().checkpoint_id == 10


def test_a_later_checkpoint_wins_over_an_older_savepoint_with_a_newer_mtime(pipeline_dir):
    # The savepoint (id 5) was copied or touched after the checkpoint (id 12) completed: its
    # mtime says newer, its id says older. Restoring it would publish ids 6..12's output again.
    now = time.time()
    newest = saved(pipeline_dir, f"{JOB_B}/chk-12", now - 300)
    saved(pipeline_dir, "savepoints/savepoint-aaaaaa-5", now, checkpoint_id=5)
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert state.newest().path.endswith(str(newest))
    assert [(s.kind, s.checkpoint_id) for s in state.saved_states()] == [
        ("savepoint", 5), ("checkpoint", 12)]


def test_an_unreadable_state_is_an_error_never_skipped(pipeline_dir):
    # Which state is the newest cannot be told without its id: the start must stop, not pick
    # the readable (older) one.
    now = time.time()
    saved(pipeline_dir, f"{JOB_A}/chk-1", now - 60)
    broken = saved(pipeline_dir, f"{JOB_B}/chk-2", now)
    (broken / "_metadata").write_bytes(b"not a checkpoint")
    state = job_state.PipelineState(pipeline_dir.as_uri())
    with pytest.raises(job_state.UnreadableState, match="Unexpected magic number") as raised:
        state.newest()
    assert raised.value.path.endswith(str(broken))


def restored(pipeline_dir):
    """The recovery settings restore_from gives a start of the pipeline in pipeline_dir."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    args = SimpleNamespace(from_savepoint=None, fresh=False)
    job.restore_from(t_env, args, job_state.PipelineState(pipeline_dir.as_uri()))
    conf = t_env.get_config()
    return (conf.get("execution.state-recovery.path", ""),
            conf.get("execution.state-recovery.claim-mode", ""))


def test_a_savepoint_is_restored_without_claiming_it_a_checkpoint_is_claimed(
        pipeline_dir, capsys):
    # An upgrade's stop-with-savepoint is its rollback point: claimed, the first checkpoint
    # after it would delete it. A checkpoint is claimed, so restarts do not pile up copies.
    now = time.time()
    saved(pipeline_dir, f"{JOB_A}/chk-7", now - 60)
    savepoint = saved(pipeline_dir, "savepoints/savepoint-aaaaaa-1", now, checkpoint_id=8)
    path, mode = restored(pipeline_dir)
    assert path.endswith(str(savepoint)) and mode == "NO_CLAIM"
    assert "savepoint is kept as a rollback point" in capsys.readouterr().out
    checkpoint = saved(pipeline_dir, f"{JOB_B}/chk-9", now)
    path, mode = restored(pipeline_dir)
    assert path.endswith(str(checkpoint)) and mode == "CLAIM"


def test_a_start_keeps_the_newest_savepoint_and_drops_the_older_ones(pipeline_dir, capsys):
    # Every stop takes a savepoint, restored without claiming it: without this they would pile
    # up, a full copy of the state each.
    now = time.time()
    older = [saved(pipeline_dir, f"savepoints/savepoint-aaaaaa-{n}", now - 100 + n,
                   checkpoint_id=n) for n in (3, 5)]
    newest_savepoint = saved(pipeline_dir, "savepoints/savepoint-bbbbbb-7", now - 50,
                             checkpoint_id=7)
    checkpoint = saved(pipeline_dir, f"{JOB_A}/chk-9", now)
    path, mode = restored(pipeline_dir)
    assert path.endswith(str(checkpoint)) and mode == "CLAIM"
    assert [folder.exists() for folder in older] == [False, False]
    assert newest_savepoint.exists() and checkpoint.exists()
    assert capsys.readouterr().out.count("deleted the superseded savepoint") == 2
    path, mode = restored(pipeline_dir)  # nothing more to drop
    assert path.endswith(str(checkpoint)) and newest_savepoint.exists()


def start_small_job(pipeline_dir, args=None):
    """A small stateful streaming job (a count per key) of the pipeline in pipeline_dir,
    checkpointing every 200 ms where the real job does; with args, restore_from picks its state.
    Returns its JobClient once it runs."""
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("execution.checkpointing.interval", "200 ms")
    conf.set("execution.checkpointing.dir", pipeline_dir.as_uri())
    conf.set("execution.checkpointing.externalized-checkpoint-retention",
             "RETAIN_ON_CANCELLATION")
    if args is not None:
        job.restore_from(t_env, args, job_state.PipelineState(pipeline_dir.as_uri()))
    t_env.execute_sql("CREATE TEMPORARY TABLE numbers (n INT) WITH ("
                      "'connector' = 'datagen', 'rows-per-second' = '20', "
                      "'fields.n.min' = '0', 'fields.n.max' = '9')")
    t_env.execute_sql("CREATE TEMPORARY TABLE nowhere (n INT, c BIGINT) WITH ("
                      "'connector' = 'blackhole')")
    client = t_env.execute_sql(
        "INSERT INTO nowhere SELECT n, COUNT(*) FROM numbers GROUP BY n").get_job_client()
    job.wait_until_running(client)
    return client


def wait_for_checkpoint(pipeline_dir, job_id, at_least, timeout_s=60):
    """Wait until job_id has completed a checkpoint with an id of at_least or more; return the
    ids of its completed checkpoints seen meanwhile."""
    deadline = time.monotonic() + timeout_s
    seen = set()
    while not seen or max(seen) < at_least:
        assert time.monotonic() < deadline, f"no checkpoint {at_least} of {job_id}: {seen}"
        time.sleep(0.05)
        seen |= {int(done.parent.name[len("chk-"):])
                 for done in (pipeline_dir / job_id).glob("chk-*/_metadata")}
    return seen


@pytest.mark.integration
def test_an_upgrade_savepoint_survives_the_first_checkpoints_after_it(pipeline_dir):
    # Stop with a savepoint (as before an upgrade), start again (it resumes that savepoint),
    # and let the new job checkpoint: the savepoint must still be there to roll back to.
    first = start_small_job(pipeline_dir)
    wait_for_checkpoint(pipeline_dir, str(first.get_job_id()), 1)
    savepoint = job.stop_with_savepoint(first, (pipeline_dir / "savepoints").as_uri()).result()
    first.get_job_execution_result().result()
    state = job_state.PipelineState(pipeline_dir.as_uri()).newest()
    assert state.kind == "savepoint" and savepoint.endswith(state.path.split("/")[-1])
    second = start_small_job(pipeline_dir, SimpleNamespace(from_savepoint=None, fresh=False))
    try:
        # Its ids go on after the savepoint's (it did restore it): two checkpoints of its own
        # subsume it.
        seen = wait_for_checkpoint(
            pipeline_dir, str(second.get_job_id()), state.checkpoint_id + 2)
        assert min(seen) > state.checkpoint_id, seen
        time.sleep(1)  # a subsumed state is deleted right after the checkpoint, asynchronously
        assert (pipeline_dir / "savepoints" / state.path.split("/")[-1] / "_metadata").exists()
    finally:
        second.cancel().result()


def test_a_start_stops_on_an_unreadable_state(pipeline_dir):
    saved(pipeline_dir, f"{JOB_A}/chk-1", time.time())
    broken = saved(pipeline_dir, f"{JOB_B}/chk-2", time.time())
    (broken / "_metadata").write_bytes(b"")  # a _metadata cut short
    with pytest.raises(SystemExit,
                       match=r"(?s)adclick: cannot restore .*chk-2: .*--fresh") as ended:
        restored(pipeline_dir)
    assert "EOFException" in str(ended.value)


def test_the_cluster_check_fails_closed_when_the_cluster_does_not_answer(monkeypatch, capsys):
    # Unasked, a second copy could be running and count every click twice: not submitted.
    monkeypatch.delenv("ADCLICK_SKIP_COPY_CHECK", raising=False)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("rest.address", "127.0.0.1")
    t_env.get_config().set("rest.port", "1")  # nothing listens there
    with pytest.raises(job_state.PipelineBusy,
                       match=r"http://127\.0\.0\.1:1 .*ADCLICK_SKIP_COPY_CHECK=1"):
        job.refuse_a_second_copy(t_env)
    # Overridden on purpose, it submits and says so.
    monkeypatch.setenv("ADCLICK_SKIP_COPY_CHECK", "1")
    job.refuse_a_second_copy(t_env)
    assert "not asking http://127.0.0.1:1" in capsys.readouterr().out


def test_a_pipeline_that_never_checkpointed_starts_empty(pipeline_dir):
    assert job_state.PipelineState(pipeline_dir.as_uri()).newest() is None


def test_pipelines_are_told_apart_by_topics_and_group():
    assert job_state.pipeline_name("", "adclick-aggregation") == "adclick-aggregation"
    assert job_state.pipeline_name("t1-", "g") != job_state.pipeline_name("t2-", "g")
    assert job_state.pipeline_name("a/b ", "g") == "a_b_g"  # one folder, never a path


def test_fresh_sets_the_old_state_aside_and_keeps_it(pipeline_dir):
    saved(pipeline_dir, f"{JOB_A}/chk-1", time.time())
    state = job_state.PipelineState(pipeline_dir.as_uri())
    moved = state.set_aside()
    assert state.newest() is None
    assert not pipeline_dir.exists()
    kept = list(pipeline_dir.parent.glob("prefix-group.before-fresh-*/*/chk-1/_metadata"))
    assert len(kept) == 1 and moved.endswith(kept[0].parent.parent.parent.name)


def test_a_second_run_of_the_pipeline_is_refused_while_the_first_holds_the_lock(pipeline_dir):
    holder = subprocess.Popen(
        [PYTHON, "-c", (
            "import sys, time\n"
            "from pyflink.java_gateway import get_gateway\n"
            "from adclick.job_state import PipelineState\n"
            "get_gateway()\n"
            f"PipelineState({pipeline_dir.as_uri()!r}).lock(wait_s=5)\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        state = job_state.PipelineState(pipeline_dir.as_uri())
        with pytest.raises(job_state.PipelineBusy, match="count every click twice"):
            state.lock(wait_s=1)
    finally:
        holder.kill()
        holder.wait()
    # Once the holder's JVM is gone, the lock is free again.
    deadline = time.monotonic() + 30
    while True:
        try:
            assert state.lock(wait_s=1) is not None
            break
        except job_state.PipelineBusy:
            assert time.monotonic() < deadline, "the lock outlived its holder"


@pytest.mark.integration
def test_a_state_that_cannot_be_restored_is_an_error_never_a_fresh_start(tmp_path, pipeline_dir):
    # The newest checkpoint is unreadable: the job must stop with the reason, not start empty
    # (which would lose its open minutes) and not fall back to an older one (which would
    # publish what came after that one a second time).
    saved(pipeline_dir, f"{JOB_A}/chk-1", time.time() - 60)
    broken = saved(pipeline_dir, f"{JOB_B}/chk-2", time.time())
    (broken / "_metadata").write_bytes(b"not a checkpoint")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.ad_click_aggregation", "--bootstrap-servers",
         "127.0.0.1:9", "--topic-prefix", "prefix-", "--group-id", "group",
         "--checkpoint-dir", pipeline_dir.parent.as_uri()],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # Its checkpoint id cannot be read, so the start stops before it picks any state.
    assert f"adclick: cannot restore {broken.as_uri().replace('///', '/')}: " in done.stderr
    assert "--fresh" in done.stderr, done.stderr
    assert "resuming from" not in done.stdout and "starting empty" not in done.stdout
    assert "adclick: running" not in done.stdout
