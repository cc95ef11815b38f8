"""The job on the standalone cluster resumes after the cluster loses it, and across a SQL change.

Without HA services a standalone cluster forgets its jobs when its JobManager goes away, by a
crash or a stop. The recovery is the one every start of the job has: start the cluster again
and resubmit, and the job resumes its pipeline's newest savepoint or retained checkpoint. Each
test runs live traffic (with duplicates) through one fault, resends 150 earlier clicks after
it, and requires every per-minute, per-ad, per-attribute count to equal the truth.
"""

import time
import urllib.request

import pytest

from tests.helpers_stack import flink_cli
from tests.helpers_stack import flink_env
from tests.helpers_stack import run_script
from tests.helpers_stack import run_script_for_both
from tests.processes import Api
from tests.processes import free_port
from tests.processes import start_server
from tests.sql_change import changed_sql_dir
from tests.traffic import FirstFreshAnswer
from tests.traffic import Traffic
from tests.traffic import settle_and_compare

pytestmark = pytest.mark.integration

RESENDS = 150


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    """Environment (ports, state folder) of a standalone cluster of this module's own."""
    env = flink_env(tmp_path_factory.mktemp("flink"))
    run_script("flink-cluster.sh", "start", env=env, timeout=240)
    try:
        yield env
    finally:
        run_script("flink-cluster.sh", "stop", env=env, timeout=300)


class Pipeline:
    """One pipeline on the cluster: its job flags, the store-owning server and the traffic."""

    def __init__(self, flink, tmp_path, bootstrap, prefix):
        self.flink = flink
        self.flags = ["--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
                      "--group-id", prefix + "job", "--checkpoint-interval-ms", "2000",
                      "--watermark-delay-ms", "1000", "--allowed-lateness-s", "120",
                      "--idle-timeout-ms", "3000", "--top-n", "5",
                      "--checkpoint-dir", (tmp_path / "checkpoints").as_uri()]
        self.job_id = None
        port = free_port()
        self.server, key = start_server(tmp_path, bootstrap, prefix, tmp_path / "store", port)
        self.api = Api(port, key)
        self.traffic = Traffic(bootstrap, f"{prefix}ad-clicks", rate=150)

    def submit(self, *extra):
        """Submit the job; returns what it announced (which state it resumed)."""
        out, announced = run_script_for_both("submit-job.sh", *self.flags, *extra,
                                             env=self.flink, timeout=360)
        self.job_id = out.strip().splitlines()[-1]
        assert len(self.job_id) == 32, out
        return announced

    def plan(self):
        """The running job's plan, as the cluster's REST API shows it."""
        url = f"http://127.0.0.1:{self.flink['FLINK_REST_PORT']}/jobs/{self.job_id}/plan"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def cancel(self):
        if self.job_id:
            try:
                flink_cli(self.flink, "cancel", "-m",
                          f"127.0.0.1:{self.flink['FLINK_REST_PORT']}", self.job_id)
            except AssertionError:
                pass  # already ended

    def run_through(self, fault, restart):
        """Traffic; the fault; the restart (returns what the job announced); more traffic and
        150 resends; then the comparison with the truth."""
        try:
            try:
                self.traffic.start()
                time.sleep(25)
                fault()
                restarted = time.time()
                announced = restart()
                fresh = FirstFreshAnswer(self.api, restarted)
                self.traffic.resend(RESENDS)
                time.sleep(25)
            finally:
                self.traffic.stopping.set()
                self.traffic.join(60)
            outcome = settle_and_compare(self.traffic, self.api, [self.server])
        finally:  # also when the fault or the restart failed: nothing of this test lives on
            self.cancel()
            self.server.stop()
        return announced, outcome, fresh


@pytest.fixture
def pipeline(flink, tmp_path, kafka_bootstrap, topic_prefix):
    return Pipeline(flink, tmp_path, kafka_bootstrap, topic_prefix)


def test_jobmanager_killed_then_cluster_started_and_job_resubmitted(pipeline, flink):
    pipeline.submit()

    def crash():
        run_script("flink-cluster.sh", "jobmanager-kill", env=flink)
        time.sleep(3)

    def recover():
        run_script("flink-cluster.sh", "start", env=flink, timeout=240)
        return pipeline.submit()

    announced, outcome, fresh = pipeline.run_through(crash, recover)
    print(f"\n{outcome.line('JobManager SIGKILL, cluster start, resubmit', fresh)}")
    assert "resuming from the newest checkpoint" in announced, announced
    assert outcome.matches, outcome


def test_whole_cluster_stopped_and_started_then_job_resubmitted(pipeline, flink):
    pipeline.submit()

    def stop_cluster():
        stopped = run_script("flink-cluster.sh", "stop", env=flink, timeout=300)
        assert f"stopped job {pipeline.job_id} with a savepoint" in stopped, stopped

    def start_again():
        run_script("flink-cluster.sh", "start", env=flink, timeout=240)
        return pipeline.submit()

    announced, outcome, fresh = pipeline.run_through(stop_cluster, start_again)
    print(f"\n{outcome.line('cluster stop + start, resubmit', fresh)}")
    assert "resuming from the newest savepoint" in announced, announced
    assert outcome.matches, outcome


def test_savepoint_restores_after_a_change_to_the_jobs_sql(pipeline, flink, tmp_path):
    changed = changed_sql_dir(tmp_path)
    pipeline.submit()

    def stop_with_savepoint():
        run_script("stop-job-with-savepoint.sh", pipeline.job_id, env=flink, timeout=180)

    def submit_changed():
        announced = pipeline.submit("--sql-dir", str(changed))
        assert "country_minute_sink" in pipeline.plan()  # the change is really running
        return announced

    announced, outcome, fresh = pipeline.run_through(stop_with_savepoint, submit_changed)
    fault = "savepoint, SQL change (one more stateful statement and sink), resubmit"
    print(f"\n{outcome.line(fault, fresh)}")
    assert "resuming from the newest savepoint" in announced, announced
    assert outcome.matches, outcome
