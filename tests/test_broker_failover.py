"""Broker failover: SIGKILL one of three Kafka brokers mid-stream, then compare with the truth.

The module runs its own three-node KRaft cluster (scripts/kafka.sh with KAFKA_BROKERS=3), where
create_topics replicates every partition three ways with min.insync.replicas=2. The job runs on
a local MiniCluster and the server (loader + API) beside it, both given all three addresses.
While live traffic (with duplicates) flows, the test SIGKILLs the broker that coordinates the
job's sink transactions (or leads the input's partition 0), keeps the traffic going on the two
left, starts the node again, resends 150 earlier clicks, and in the end every per-minute,
per-ad, per-attribute count must equal the truth: zero lost, zero double-counted.
"""

import collections
import time
import uuid

import pytest
from kafka import KafkaConsumer
from kafka import KafkaProducer
from kafka import OffsetAndMetadata
from kafka import TopicPartition
from kafka.admin import ConfigResource
from kafka.admin import ConfigResourceType

from adclick import config
from adclick.testing.processes import Broker
from adclick.testing.processes import start_job
from adclick.testing.processes import start_server
from adclick.testing.processes import wait_for
from adclick.testing.traffic import FirstFreshAnswer
from adclick.testing.traffic import LiveTraffic
from adclick.testing.traffic import settle_and_compare
from adclick.topics import create_topics

pytestmark = pytest.mark.integration

NODES = (1, 2, 3)
RESENDS = 150


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    """A three-node cluster run by scripts/kafka.sh (KAFKA_BROKERS=3) on free ports."""
    cluster = Broker(tmp_path_factory.mktemp("kafka3"), brokers=len(NODES))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_topics_and_internal_topics_have_three_replicas(kafka_cluster):
    prefix = f"r{uuid.uuid4().hex[:10]}-"
    topics = create_topics(kafka_cluster.bootstrap, prefix=prefix)
    # The internal topics are created on first use: a committed offset and a transaction.
    consumer = KafkaConsumer(bootstrap_servers=kafka_cluster.bootstrap, group_id=prefix + "group",
                             enable_auto_commit=False)
    partition = TopicPartition(topics["clicks"], 0)
    consumer.assign([partition])
    consumer.commit({partition: OffsetAndMetadata(0, "", -1)})
    consumer.close()
    producer = KafkaProducer(bootstrap_servers=kafka_cluster.bootstrap,
                             transactional_id=prefix + "tx")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topics["clicks"], b"{}")
    producer.commit_transaction()
    producer.close()

    admin = kafka_cluster.admin()
    try:
        assert len(admin.describe_cluster()["brokers"]) == 3
        described = admin.describe_topics(list(topics.values())
                                          + ["__consumer_offsets", "__transaction_state"])
        replicas = {t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]}
                    for t in described}
        in_sync = {t["name"]: {len(p["isr_nodes"]) for p in t["partitions"]} for t in described}
        assert all(len(t["partitions"]) == config.PARTITIONS
                   for t in described if t["name"] in topics.values())
        assert replicas == dict.fromkeys(replicas, {3}), replicas
        assert in_sync == dict.fromkeys(in_sync, {3}), in_sync
        names = list(topics.values()) + ["__transaction_state"]
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, ["min.insync.replicas"])
             for name in names], config_filter="all")["topic"]
        assert {name: configs[name]["min.insync.replicas"]["value"] for name in names} == \
            dict.fromkeys(names, "2")
        wanted = {"default.replication.factor": "3", "min.insync.replicas": "2",
                  "offsets.topic.replication.factor": "3",
                  "transaction.state.log.replication.factor": "3",
                  "transaction.state.log.min.isr": "2", "transaction.max.timeout.ms": "900000"}
        for node in NODES:
            broker = admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, str(node), list(wanted))],
                config_filter="all")["broker"][str(node)]
            assert {key: broker[key]["value"] for key in wanted} == wanted, node
    finally:
        admin.close()


def job_transactions(admin, job_prefix):
    """{broker id: number of the job's transactional ids it coordinates}."""
    return collections.Counter(
        {broker: sum(t.transactional_id.startswith(job_prefix) for t in listings)
         for broker, listings in admin.list_transactions().items()})


def pick_victim(cluster, input_topic, job_prefix):
    """The broker whose loss hits most: coordinator of the job's sink transactions and leader
    of the input's partition 0 if one broker is both, else the busiest coordinator."""
    admin = cluster.admin()
    try:
        leader = next(p["leader_id"] for p in admin.describe_topics([input_topic])[0]["partitions"]
                      if p["partition_index"] == 0)
        coordinated = job_transactions(admin, job_prefix)
    finally:
        admin.close()
    victim = max(NODES, key=lambda n: (coordinated[n] > 0 and n == leader, coordinated[n],
                                       n == leader))
    return victim, leader, coordinated


def test_broker_sigkill_loses_and_doubles_nothing(tmp_path, kafka_cluster):
    cluster = kafka_cluster
    prefix = f"f{uuid.uuid4().hex[:10]}-"
    topics = create_topics(cluster.bootstrap, prefix=prefix)
    job = start_job(tmp_path, cluster.bootstrap, prefix, tmp_path / "checkpoints",
                    "--watermark-delay-ms", "1000", "--allowed-lateness-s", "120",
                    "--top-n", "5")
    server = None
    traffic = LiveTraffic(cluster.bootstrap, topics["clicks"], rate=200)
    try:
        server, api = start_server(tmp_path, cluster.bootstrap, prefix, tmp_path / "store")
        try:
            traffic.start()
            # The job writes once its sinks have registered their transactional ids (they
            # start with its group id, and that with the test's prefix: start_job).
            admin = cluster.admin()
            try:
                wait_for(lambda: sum(job_transactions(admin, prefix).values()), 150,
                         "the job's sink transactions", [job, server])
            finally:
                admin.close()
            time.sleep(15)
            victim, leader, coordinated = pick_victim(cluster, topics["clicks"], prefix)
            cluster.control("kill-node", str(victim))
            time.sleep(20)
            job.assert_running()
            cluster.control("start-node", str(victim))
            back = time.time()
            fresh = FirstFreshAnswer(api, back)
            traffic.resend(RESENDS)
            time.sleep(20)
        finally:
            traffic.stopping.set()
            traffic.join(60)
        outcome = settle_and_compare(traffic, api, [job, server])
        fault = (f"SIGKILL of broker {victim} of 3 (partition 0's leader was {leader}; the "
                 f"job's transactional ids by coordinator: {dict(sorted(coordinated.items()))})"
                 f", 20 s down, started again")
        print(f"\n{outcome.line(fault, fresh)}; send retries {traffic.send_errors}")
        assert outcome.matches, outcome
    finally:
        if server is not None:
            server.stop()
        job.stop()
