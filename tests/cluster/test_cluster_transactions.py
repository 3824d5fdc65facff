"""Transactions in cluster mode: etcd + 3 broker processes, a confluent transactional producer
whose partitions (and whose transaction coordinator) are led by different brokers. KIP-890
verification then goes to the coordinator's broker (AddPartitionsToTxn v4, verify only) and the
markers to each partition's leader (WriteTxnMarkers); read_committed consumers must see the
committed transaction whole and the aborted one never, also after the coordinator is killed."""

from __future__ import annotations

import time
import uuid

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition

from odradek.testing.cluster import ETCD_BINARY, ClusterProcess

pytestmark = [
    pytest.mark.skipif(ETCD_BINARY is None, reason="etcd is not installed (Debian: etcd-server)"),
    pytest.mark.timeout(240),
]

ALL = {1, 2, 3}
PARTITIONS = 3
OVERRIDES = {
    "broker.session.timeout.ms": "2000",
    "replica.fetch.backoff.ms": "100",
    "auto.create.topics.enable": "false",
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
}


def read_committed(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        values, at_end = [], set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(at_end) < PARTITIONS:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            values.append(message.value())
        assert len(at_end) == PARTITIONS, "read_committed did not reach the end of every partition"
        return sorted(values)
    finally:
        consumer.close()


def test_transactions_across_brokers_commit_abort_and_survive_a_coordinator_kill(tmp_path):
    with ClusterProcess(tmp_path, overrides=OVERRIDES) as cluster:
        cluster.wait_for_brokers(ALL)
        cluster.wait_for_controller()
        topic = f"t-{uuid.uuid4().hex[:8]}"
        cluster.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
        leaders = {cluster.leader_of(topic, p) for p in range(PARTITIONS)}
        assert len(leaders) > 1, f"the test needs partitions led by different brokers: {leaders}"

        tid = f"tx-{uuid.uuid4().hex[:8]}"
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid})
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(30):
            producer.produce(topic, value=b"c%d" % i, partition=i % PARTITIONS)
        producer.commit_transaction(30)
        producer.begin_transaction()
        for i in range(30):
            producer.produce(topic, value=b"a%d" % i, partition=i % PARTITIONS)
        producer.flush(30)
        producer.abort_transaction(30)
        committed = sorted(b"c%d" % i for i in range(30))
        assert read_committed(cluster.bootstrap, topic) == committed

        # Kill the transaction coordinator's broker: a new one takes over __transaction_state
        # and the producer commits its next transaction through it.
        coordinator = _transaction_coordinator(cluster, tid)
        cluster.kill(coordinator)
        producer.begin_transaction()
        for i in range(30):
            producer.produce(topic, value=b"k%d" % i, partition=i % PARTITIONS)
        producer.commit_transaction(60)
        cluster.start(coordinator)
        assert read_committed(cluster.bootstrap, topic) == sorted(committed + [b"k%d" % i for i in range(30)])


def _transaction_coordinator(cluster: ClusterProcess, transactional_id: str) -> int:
    """The broker FindCoordinator (key type 1) names for a transactional id."""
    with cluster.connect(next(iter(cluster.running_nodes()))) as conn:
        m = conn.module("find_coordinator", 4)
        response = conn.request(m.FindCoordinatorRequest(key_type=1, coordinator_keys=(transactional_id,)))
    [entry] = response.coordinators
    assert entry.node_id in ALL, entry
    return entry.node_id
