"""Which state a start resumes, starting empty only on purpose, and one run per pipeline."""

import os
import subprocess
import sys
import time

import pytest

from adclick import job_state
from adclick.testing.processes import PYTHON
from adclick.testing.processes import REPO

JOB_A = "a" * 32
JOB_B = "b" * 32


def saved(root, relative, mtime):
    """A completed checkpoint or savepoint folder (its _metadata) finished at mtime."""
    folder = root / relative
    folder.mkdir(parents=True)
    metadata = folder / "_metadata"
    metadata.write_bytes(b"metadata")
    os.utime(metadata, (mtime, mtime))
    return folder


@pytest.fixture
def pipeline_dir(tmp_path):
    return tmp_path / "checkpoints" / "prefix-group"


def test_the_newest_completed_state_wins_whatever_its_kind(pipeline_dir):
    now = time.time()
    saved(pipeline_dir, f"{JOB_A}/chk-7", now - 300)
    saved(pipeline_dir, "savepoints/savepoint-aaaaaa-1", now - 200)
    newest = saved(pipeline_dir, f"{JOB_B}/chk-3", now - 100)
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert [s.kind for s in state.saved_states()] == ["checkpoint", "savepoint", "checkpoint"]
    assert state.newest().path.endswith(str(newest))
    saved(pipeline_dir, "savepoints/savepoint-bbbbbb-2", now - 10)
    assert state.newest().kind == "savepoint"
    assert state.newest().path.endswith("savepoint-bbbbbb-2")


def test_incomplete_and_foreign_folders_are_never_resumed(pipeline_dir):
    now = time.time()
    older = saved(pipeline_dir, f"{JOB_A}/chk-1", now - 100)
    (pipeline_dir / JOB_A / "chk-2").mkdir()  # no _metadata: that checkpoint never completed
    saved(pipeline_dir, "not-a-job/chk-9", now)  # not Flink's layout
    saved(pipeline_dir, f"{JOB_A}/shared", now)  # RocksDB's shared files, not a checkpoint
    state = job_state.PipelineState(pipeline_dir.as_uri())
    assert state.newest().path.endswith(str(older))


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
    assert f"resuming from the newest checkpoint {broken.as_uri().replace('///', '/')}" in (
        done.stdout)
    assert "adclick: cannot restore" in done.stderr and "--fresh" in done.stderr, done.stderr
    assert "adclick: running" not in done.stdout
