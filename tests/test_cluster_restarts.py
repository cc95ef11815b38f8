"""The job on the standalone cluster resumes after the cluster loses it, across a SQL change and
across a change of parallelism.

Without HA services a standalone cluster forgets its jobs when its JobManager goes away, by a
crash or a stop. The recovery is the one every start of the job has: start the cluster again
and resubmit, and the job resumes its pipeline's newest savepoint or retained checkpoint. Live
traffic (with duplicates) runs through each fault, 150 earlier clicks are resent after each
restart, and every per-minute, per-ad, per-attribute count must equal the truth.
"""

import json
import time
import urllib.request

import pytest

from adclick import config
from adclick.testing.processes import flink_cli
from adclick.testing.processes import run_script
from adclick.testing.processes import run_script_for_both
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for
from adclick.testing.traffic import FirstFreshAnswer
from adclick.testing.traffic import LiveTraffic
from adclick.testing.traffic import settle_and_compare
from tests.sql_change import changed_sql_dir

pytestmark = pytest.mark.integration

RESENDS = 150



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
        self.server, self.api = start_server(tmp_path, bootstrap, prefix, tmp_path / "store")
        self.traffic = LiveTraffic(bootstrap, config.Topics.with_prefix(prefix)["clicks"],
                                   rate=150)

    def submit(self, *extra):
        """Submit the job; returns what it announced (which state it resumed)."""
        out, announced = run_script_for_both("submit-job.sh", *self.flags, *extra,
                                             env=self.flink, timeout=360)
        self.job_id = out.strip().splitlines()[-1]
        assert len(self.job_id) == 32, out
        return announced

    def plan(self):
        """The running job's plan, as the cluster's REST API shows it."""
        return self.rest(f"/jobs/{self.job_id}/plan").decode()

    def vertices(self):
        """The running job's tasks (operator chains): their names and parallelism."""
        return json.loads(self.rest(f"/jobs/{self.job_id}"))["vertices"]

    def rest(self, path):
        url = f"http://127.0.0.1:{self.flink['FLINK_REST_PORT']}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read()

    def wait_for_a_checkpoint(self):
        """Until the running job has completed a checkpoint: its tasks (the Python one starts
        last) are all running, and there is a state to resume or stop with a savepoint."""
        url = (f"http://127.0.0.1:{self.flink['FLINK_REST_PORT']}/jobs/{self.job_id}"
               "/checkpoints")

        def completed():
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())["counts"]["completed"]
        wait_for(completed, 180, f"a checkpoint of job {self.job_id}", [self.server])

    def cancel(self):
        if self.job_id:
            try:
                flink_cli(self.flink, "cancel", "-m",
                          f"127.0.0.1:{self.flink['FLINK_REST_PORT']}", self.job_id)
            except AssertionError:
                pass  # already ended

    def run_through(self, steps):
        """Traffic; then for each (fault, restart) step: the fault, the restart (which returns
        what the job announced), 150 resends and more traffic; then the comparison with the
        truth. Returns the announcements, the outcome and a FirstFreshAnswer per restart."""
        announced, fresh = [], []
        try:
            try:
                self.traffic.start()
                time.sleep(20)
                for fault, restart in steps:
                    self.wait_for_a_checkpoint()
                    fault()
                    restarted = time.time()
                    announced.append(restart())
                    fresh.append(FirstFreshAnswer(self.api, restarted))
                    self.traffic.resend(RESENDS)
                    time.sleep(20)
            finally:
                self.traffic.stopping.set()
                self.traffic.join(60)
            outcome = settle_and_compare(self.traffic, self.api, [self.server])
        finally:  # also when a fault or a restart failed: nothing of this test lives on
            self.cancel()
            self.server.stop()
        return announced, outcome, fresh


@pytest.fixture
def pipeline(flink, tmp_path, kafka_bootstrap, topic_prefix):
    return Pipeline(flink, tmp_path, kafka_bootstrap, topic_prefix)


def test_the_job_resumes_after_a_jobmanager_crash_a_cluster_restart_a_sql_change_and_rescaling(
        pipeline, flink, tmp_path):
    # One stream through four faults (one comparison at the end keeps the suite short; any
    # click lost or doubled at any of them shows there, per minute, ad and attribute).
    changed = changed_sql_dir(tmp_path)
    pipeline.submit()

    def crash_the_jobmanager():
        run_script("flink-cluster.sh", "jobmanager-kill", env=flink)
        time.sleep(3)

    def start_the_cluster_and_resubmit():
        run_script("flink-cluster.sh", "start", env=flink, timeout=240)
        return pipeline.submit()

    def stop_the_cluster():
        stopped = run_script("flink-cluster.sh", "stop", env=flink, timeout=300)
        assert f"stopped job {pipeline.job_id} with a savepoint" in stopped, stopped

    def stop_with_a_savepoint():
        run_script("stop-job-with-savepoint.sh", pipeline.job_id, env=flink, timeout=180)

    def submit_the_changed_sql():
        announced = pipeline.submit("--sql-dir", str(changed))
        assert "country_minute_sink" in pipeline.plan()  # the change is really running
        return announced

    def submit_at_parallelism_3():
        # Rescaled from 2 subtasks to 3: key groups move between subtasks, and with them the
        # ids the compact dedup remembers (its raw keyed state). The resends that follow are
        # repeats of clicks seen before the stop: a forgotten id would count one twice.
        announced = pipeline.submit("--sql-dir", str(changed), "--parallelism", "3")
        dedups = [(vertex["name"], vertex["parallelism"]) for vertex in pipeline.vertices()
                  if vertex["name"].startswith("CompactDeduplicate[")]
        assert len(dedups) == 2 and all(parallelism == 3 for _, parallelism in dedups), dedups
        return announced

    announced, outcome, fresh = pipeline.run_through([
        (crash_the_jobmanager, start_the_cluster_and_resubmit),
        (stop_the_cluster, start_the_cluster_and_resubmit),
        (stop_with_a_savepoint, submit_the_changed_sql),
        (stop_with_a_savepoint, submit_at_parallelism_3),
    ])
    faults = ["JobManager SIGKILL, cluster start, resubmit",
              "cluster stop (job stopped with a savepoint) and start, resubmit",
              "stop with a savepoint, resubmit with one more stateful statement and sink",
              "stop with a savepoint, resubmit at parallelism 3 (from 2)"]
    for fault, answer in zip(faults, fresh):
        seconds = answer.result()
        print(f"\n{fault}: first fresh answer "
              + (f"{seconds:.0f} s after the restart" if seconds is not None else "not seen"))
    print(outcome.line("all four"))
    assert "resuming from the newest checkpoint" in announced[0], announced[0]
    for later in announced[1:]:
        assert "resuming from the newest savepoint" in later, later
    assert outcome.matches, outcome
