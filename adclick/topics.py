"""Create adclick's five Kafka topics (idempotent).

The broker would auto-create them on first use, but with the broker's defaults and only when
someone writes; creating them up front fixes the partition count before the job starts, so the
job's source sees every partition from the beginning.

Each partition gets a replica on min(3, brokers) brokers: one on a single broker (the default
scripts/kafka.sh), three on a cluster (KAFKA_BROKERS=3), where min.insync.replicas=2 then makes
an acknowledged write (acks=all, and the job's transactional sinks) survive any one broker's loss.

    python -m adclick.topics [--bootstrap-servers HOST:PORT] [--prefix P] [--partitions N]
"""

import argparse

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError
from kafka.errors import for_code

from adclick import config


def replication_factor(admin):
    """min(3, brokers in the cluster): 3 copies survive one broker's loss with two left in sync.

    Fenced brokers (registered but down) count too: with one of three away, the controller still
    gives each partition a replica on it (out of sync until it is back) rather than the topic
    getting fewer copies for good.
    """
    return min(3, len(admin.describe_cluster()["brokers"]))


def create_topics(bootstrap, prefix="", partitions=config.PARTITIONS):
    """Create the topics named by config.Topics.with_prefix(prefix); return {role: name}.

    Topics that already exist are left as they are. Returns once every topic has a leader
    for each partition, so producers and consumers can use them right away.
    """
    topics = config.Topics.with_prefix(prefix)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="adclick-topics")
    try:
        replicas = replication_factor(admin)
        options = {"num_partitions": partitions, "replication_factor": replicas}
        if replicas >= 3:
            # acks=all then waits for two copies at least, and a write is refused rather than
            # kept on a single broker whose loss would lose it.
            options["configs"] = {"min.insync.replicas": "2"}
        request = {name: dict(options) for name in topics.values()}
        response = admin.create_topics(request, timeout_ms=30000, raise_errors=False)
        for result in response["topics"]:
            error = for_code(result["error_code"])
            if result["error_code"] and error is not TopicAlreadyExistsError:
                raise error(f"creating topic {result['name']}: {result.get('error_message')}")
        admin.wait_for_topics(list(topics.values()), timeout_ms=30000)
    finally:
        admin.close()
    return topics


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create adclick's Kafka topics (idempotent).")
    parser.add_argument("--bootstrap-servers", default=config.KAFKA_BOOTSTRAP)
    parser.add_argument("--prefix", default="", help="prefix of all five topic names")
    parser.add_argument("--partitions", type=int, default=config.PARTITIONS)
    args = parser.parse_args(argv)
    if args.partitions <= 0:
        parser.error("--partitions must be positive")
    for role, name in create_topics(args.bootstrap_servers, args.prefix, args.partitions).items():
        print(f"{role:7} {name}")


if __name__ == "__main__":
    main()
