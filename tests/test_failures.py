"""Billing-grade recovery: kill and restart every part mid-stream, then compare with the truth.

The job runs on the standalone cluster (submitted with `flink run`). While live traffic of all
three streams flows (clicks, their impressions, conversions of some clicks, some ahead of their
click), the test SIGKILLs the TaskManager twice, SIGKILLs the store-owning server (loader + API)
and restarts it, restarts the Kafka broker, and finally stops the job with a savepoint and
starts it again from that savepoint, as an upgrade would. Afterwards every per-minute, per-ad,
per-attribute count of clicks, of impressions and of attributed conversions must equal the
truth: zero lost, zero double-counted.
"""

import subprocess
import time

import pytest

from adclick import config
from adclick.testing.processes import REPO
from adclick.testing.processes import free_port
from adclick.testing.processes import start_server
from adclick.testing.traffic import LiveTraffic
from adclick.testing.traffic import settle_and_compare

pytestmark = pytest.mark.integration

CLUSTER = str(REPO / "scripts" / "flink-cluster.sh")
SUBMIT = str(REPO / "scripts" / "submit-job.sh")
STOP_WITH_SAVEPOINT = str(REPO / "scripts" / "stop-job-with-savepoint.sh")


def run(*argv, env=None, timeout=300):
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def job_id_of(output):
    ids = [word for word in output.split() if len(word) == 32 and word.isalnum()]
    assert ids, output
    return ids[-1]


@pytest.fixture
def flink_cluster():
    run(CLUSTER, "start")
    try:
        yield
    finally:
        run(CLUSTER, "stop")


def test_faults_and_upgrade_lose_and_double_nothing(tmp_path, kafka_bootstrap, kafka_control,
                                                    topic_prefix, flink_cluster):
    job_flags = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
                 "--group-id", topic_prefix + "job", "--checkpoint-interval-ms", "2000",
                 "--watermark-delay-ms", "1000", "--allowed-lateness-s", "120",
                 "--idle-timeout-ms", "3000", "--top-n", "5",
                 "--checkpoint-dir", (tmp_path / "checkpoints").as_uri()]
    job_id = job_id_of(run(SUBMIT, *job_flags))
    port = free_port()
    store = tmp_path / "store"
    server, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, store, port)
    topics = config.Topics.with_prefix(topic_prefix)
    traffic = LiveTraffic(kafka_bootstrap, topics["clicks"], rate=150,
                          funnel=(topics["impressions"], topics["conversions"]))
    faults = []
    try:
        try:
            traffic.start()
            time.sleep(15)
            for round_ in (1, 2):
                run(CLUSTER, "taskmanager-kill")
                faults.append(f"TaskManager SIGKILL #{round_}")
                time.sleep(3)
                run(CLUSTER, "taskmanager-start")
                time.sleep(12)
                if round_ == 1:
                    server.popen.kill()
                    server.popen.wait()
                    faults.append("server (loader + API) SIGKILL")
                    server, api = start_server(tmp_path, kafka_bootstrap, topic_prefix, store,
                                               port, name="server-2")
                    time.sleep(8)
            kafka_control("restart")
            faults.append("Kafka broker restart")
            time.sleep(12)
            savepoint = run(STOP_WITH_SAVEPOINT, job_id).strip().splitlines()[-1]
            faults.append(f"stop with savepoint, resubmit from {savepoint}")
            job_id = job_id_of(run(SUBMIT, "--from-savepoint", savepoint, *job_flags))
            time.sleep(15)
        finally:
            traffic.stopping.set()
            traffic.join(60)
        outcome = settle_and_compare(traffic, api, [server])
        print(f"\nfaults: {faults}\n{outcome.line('all of them')} (send retries "
              f"{traffic.send_errors})")
        assert outcome.matches, outcome
    finally:
        server.stop()  # also after a failed step; the cluster fixture's stop ends the job
