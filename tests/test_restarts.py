"""Every start resumes: `make demo` stopped and started mid-minute, the local job SIGKILLed.

Live traffic (with duplicates) flows through each fault and on while the job is down; after the
restart 150 clicks sent before it go out again, as a producer recovering from an outage resends.
Afterwards every per-minute, per-ad, per-attribute count must equal the truth: zero lost (the
minutes open at the stop are in the restored state), zero doubled (so is the dedup memory).
The killed job's traffic carries all three streams, so the conversions waiting in the
attribution join, and the clicks it keeps, come back from the checkpoint as well.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from adclick import config
from adclick.testing.api import Api
from adclick.testing.api import iso
from adclick.testing.processes import PYTHON
from adclick.testing.processes import REPO
from adclick.testing.processes import free_port
from adclick.testing.processes import start_job
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for
from adclick.testing.traffic import FirstFreshAnswer
from adclick.testing.traffic import LiveTraffic
from adclick.testing.traffic import settle_and_compare

pytestmark = pytest.mark.integration

RESENDS = 150
LATE_CLICKS = 100


def completed_checkpoints(checkpoint_dir):
    """The completed checkpoints under a job's --checkpoint-dir (<pipeline>/<job id>/chk-n)."""
    return list(checkpoint_dir.glob("*/*/chk-*/_metadata"))


class Demo:
    """`python -m apps.demo` (what `make demo` runs) on the test's broker, ports and folder."""

    def __init__(self, tmp_path, bootstrap, prefix, port):
        self.stack = tmp_path / "stack"
        self.port = port
        topics = config.Topics.with_prefix(prefix)
        self.env = dict(
            os.environ, ADCLICK_STACK_DIR=str(self.stack), ADCLICK_KAFKA=bootstrap,
            ADCLICK_API_PORT=str(port), ADCLICK_DEMO_FLINK_REST_PORT=str(free_port()),
            # config.Topics reads each name from ADCLICK_TOPIC_<ROLE>.
            **{f"ADCLICK_TOPIC_{role.upper()}": name for role, name in topics.items()})
        self.runs = 0
        self.popen = None
        self.output = None

    def start(self):
        """Start a run and wait until its job has been submitted; returns the run's output."""
        self.runs += 1
        self.output = self.stack.parent / f"demo-{self.runs}.out"
        self.popen = subprocess.Popen(
            [PYTHON, "-m", "apps.demo", "--rate", "0", "--port", str(self.port)],
            cwd=REPO, env=self.env, stdout=open(self.output, "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: "job: submitted job" in self.text(), 180, "the demo's job to start",
                 [self])
        return self.text()

    def text(self):
        return self.output.read_text(errors="replace")

    def api(self):
        return Api(f"http://127.0.0.1:{self.port}",
                   (self.stack / "api-key").read_text().strip())

    # The Process interface wait_for() checks
    name = "demo"

    def assert_running(self):
        assert self.popen.poll() is None, f"demo exited:\n{self.text()[-3000:]}"

    def tail(self):
        return self.text()[-3000:]

    def stop(self, sig=signal.SIGTERM, timeout=120):
        """Stop the run as Ctrl-C or a service manager does; returns its exit code."""
        if self.popen is None:
            return None
        self.popen.send_signal(sig)  # nothing when it has exited already
        return self.popen.wait(timeout)


def test_demo_stopped_and_started_mid_minute_keeps_every_count(tmp_path, kafka_bootstrap,
                                                                 topic_prefix):
    demo = Demo(tmp_path, kafka_bootstrap, topic_prefix, free_port())
    traffic = LiveTraffic(kafka_bootstrap, demo.env["ADCLICK_TOPIC_CLICKS"], rate=150,
                          seed=11)
    try:
        first = demo.start()
        assert "starting empty: no savepoint or checkpoint yet" in first
        try:
            traffic.start()
            time.sleep(20)
            wait_for(lambda: completed_checkpoints(demo.stack / "checkpoints"), 180,
                     "a checkpoint (every task running)", [demo])
            stopped_at = time.time()
            assert demo.stop() == 0  # SIGTERM, as Ctrl-C or a service manager stops it
            stop_s = time.time() - stopped_at
            assert "job: stopped with savepoint" in demo.text(), demo.text()[-3000:]
            time.sleep(15)  # down for a while: the traffic goes on into Kafka
            restarted = time.time()
            second = demo.start()
            assert "job: resuming from the newest savepoint" in second, second[-3000:]
            fresh = FirstFreshAnswer(demo.api(), restarted)
            traffic.resend(RESENDS)
            time.sleep(20)
        finally:
            traffic.stopping.set()
            traffic.join(60)
        outcome = settle_and_compare(traffic, demo.api(), [demo])
        print(f"\n{outcome.line('make demo SIGTERM + start', fresh)}; stop took {stop_s:.1f} s,"
              f" down {restarted - stopped_at:.1f} s, {traffic.resent} resends")
        assert outcome.matches, outcome
    finally:
        demo.stop()


def test_job_killed_and_started_again_keeps_every_count(tmp_path, kafka_bootstrap, topic_prefix):
    checkpoints = tmp_path / "checkpoints"
    job = start_job(tmp_path, kafka_bootstrap, topic_prefix, checkpoints)
    server = None
    topics = config.Topics.with_prefix(topic_prefix)
    traffic = LiveTraffic(kafka_bootstrap, topics["clicks"], rate=100, seed=12,
                          funnel=(topics["impressions"], topics["conversions"]))
    try:
        server, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "store")
        wait_for(lambda: "adclick: running" in job.tail(200), 180, "the job to run", [job])
        try:
            traffic.start()
            time.sleep(20)
            wait_for(lambda: completed_checkpoints(checkpoints), 180, "a checkpoint", [job])
            job.popen.kill()  # SIGKILL: no savepoint, no clean shutdown
            job.popen.wait()
            # A late delivery for a minute whose window had fired before the last checkpoint
            # (it ended 20 s before the kill): read first after the restore, before any new
            # watermark, it is late, and must be counted as such, not dropped by the window.
            fired_end = (int(time.time() * 1000) - 20_000) // config.WINDOW_MS * config.WINDOW_MS
            traffic.send_dated(LATE_CLICKS, fired_end - 3000)
            restarted = time.time()
            # Started at once: it waits for the killed run's JVM to end before it reads the
            # state.
            job = start_job(tmp_path, kafka_bootstrap, topic_prefix, checkpoints, name="job-2")
            wait_for(lambda: "adclick: resuming from the newest checkpoint" in job.tail(200), 120,
                     "the restarted job to resume its newest checkpoint", [job])
            fresh = FirstFreshAnswer(api, restarted)
            traffic.resend(RESENDS)
            time.sleep(20)
        finally:
            traffic.stopping.set()
            traffic.join(60)
        outcome = settle_and_compare(traffic, api, [job, server])
        print(f"\n{outcome.line('job SIGKILL + start', fresh)}; {traffic.resent} resends,"
              f" {LATE_CLICKS} late clicks")
        assert outcome.matches, outcome
        # The job's pipeline in batch over the raw store gives the live job's numbers for
        # those minutes (no event was too late): a recalculation's dry run finds no count that
        # differs, the crash, the resends and the late delivery notwithstanding. Only the
        # top lists of minutes with late clicks differ, the late delivery's first: the job
        # ranks a minute once, when it closes (late clicks correct its counts, not that list),
        # the batch with them.
        minutes = sorted({key[0] for key in traffic.truth})[:-1]  # the last: close_windows'
        recalculated = subprocess.run(
            [PYTHON, "-m", "apps.cli", "recalculate", "--from", iso(minutes[0]),
             "--to", iso(minutes[-1] + config.WINDOW_MS), "--dry-run", "--format", "json",
             "--api-url", api.base, "--api-key", api.key, "--reason", "batch against live"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        # Exit 3: a dry run found cells that differ (the top lists).
        assert recalculated.returncode == 3, recalculated.stdout[-3000:] + recalculated.stderr
        result = json.loads(recalculated.stdout)
        assert result["totals"]["clicks"]["new"] > 0
        assert {cell["metric"] for cell in result["changed"]} == {"rank"}, result["changed"]
        assert iso(fired_end - config.WINDOW_MS) in {cell["minute"] for cell in result["changed"]}
    finally:
        job.stop()
        if server is not None:
            server.stop()


def test_a_downtime_longer_than_the_dedup_horizon_counts_resends_once(tmp_path, kafka_bootstrap,
                                                                      topic_prefix):
    """The dedup's horizon runs on event time: clicks resent while the job is down for longer
    than the horizon (20 s here) wait in Kafka, and are still dropped after the restart (a wall
    clock would have forgotten every id seen before the outage, and counted them again)."""
    checkpoints = tmp_path / "checkpoints"
    horizon = ("--dedup-horizon-s", "20")
    job = start_job(tmp_path, kafka_bootstrap, topic_prefix, checkpoints, *horizon)
    server = None
    topics = config.Topics.with_prefix(topic_prefix)
    traffic = LiveTraffic(kafka_bootstrap, topics["clicks"], rate=100, seed=13)
    try:
        server, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, tmp_path / "store")
        wait_for(lambda: "adclick: running" in job.tail(200), 180, "the job to run", [job])
        try:
            traffic.start()
            time.sleep(15)
            wait_for(lambda: completed_checkpoints(checkpoints), 180, "a checkpoint", [job])
            job.popen.kill()
            job.popen.wait()
            stopped = time.time()
            # Clicks of the last 5 s before the stop, sent again while the job is down.
            traffic.resend(RESENDS, newest=5 * traffic.rate)
            time.sleep(35)  # down well past the horizon
            job = start_job(tmp_path, kafka_bootstrap, topic_prefix, checkpoints, *horizon,
                            name="job-2")
            wait_for(lambda: "adclick: resuming from the newest checkpoint" in job.tail(200), 120,
                     "the restarted job to resume its newest checkpoint", [job])
            down = time.time() - stopped
            time.sleep(15)
        finally:
            traffic.stopping.set()
            traffic.join(60)
        outcome = settle_and_compare(traffic, api, [job, server])
        print(f"\n{outcome.line('down past the dedup horizon', None)}; down {down:.0f} s,"
              f" horizon 20 s, {traffic.resent} resends")
        assert outcome.matches, outcome
    finally:
        job.stop()
        if server is not None:
            server.stop()
