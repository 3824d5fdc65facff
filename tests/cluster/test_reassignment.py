"""Partition reassignment in a real cluster (issue #7): etcd and brokers as subprocesses, a
confluent-kafka idempotent acks=all producer writing throughout, AlterPartitionReassignments /
ListPartitionReassignments over the wire and through `odradek cluster`.

- a partition of a replication-factor-2 topic moves off its leader onto the third broker while
  the producer writes: the new replica catches up, joins the ISR, leads; the old replica's log is
  gone from its broker; every acknowledged record is in the log read back from the new leader,
  none twice;
- scale-out: a fourth broker joins a three-broker cluster and partitions move onto it with
  `odradek cluster reassign --wait`; `odradek cluster status` shows it.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.testing.cluster import (
    ETCD_BINARY,
    ClusterProcess,
    ContinuousProducer,
    read_partitions,
    wait_until,
)
from tests.unit.test_cli import run_cli

pytestmark = [
    pytest.mark.skipif(ETCD_BINARY is None, reason="etcd is not installed (Debian: etcd-server)"),
    pytest.mark.timeout(180),
]

OVERRIDES = {
    "broker.session.timeout.ms": "2000",
    "replica.fetch.backoff.ms": "100",
    "replica.lag.time.max.ms": "5000",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
}
MOVE_TIMEOUT_S = 60.0  # a new replica copies a few thousand records and joins the ISR


def topic_name() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


def alter(cluster: ClusterProcess, topic: str, targets: dict[int, tuple[int, ...] | None], *, via: int) -> dict:
    """AlterPartitionReassignments v1 sent to broker `via`: {partition: error code}."""
    with cluster.connect(via) as conn:
        m = conn.module("alter_partition_reassignments", 1)
        response = conn.request(m.AlterPartitionReassignmentsRequest(
            timeout=timedelta(seconds=30), allow_replication_factor_change=True,
            topics=(m.ReassignableTopic(name=topic, partitions=tuple(
                m.ReassignablePartition(partition_index=p, replicas=r) for p, r in targets.items())),)),
            timeout_s=40)
    assert response.error_code == ErrorCode.none, response
    return {p.partition_index: p.error_code for t in response.responses for p in t.partitions}


def ongoing(cluster: ClusterProcess, via: int) -> dict[tuple[str, int], tuple]:
    """ListPartitionReassignments from broker `via`: {(topic, partition): (replicas, adding, removing)}."""
    with cluster.connect(via) as conn:
        m = conn.module("list_partition_reassignments", 0)
        response = conn.request(m.ListPartitionReassignmentsRequest(timeout=timedelta(seconds=30), topics=None))
    assert response.error_code == ErrorCode.none
    return {(t.name, p.partition_index): (tuple(p.replicas), tuple(p.adding_replicas), tuple(p.removing_replicas))
            for t in response.topics for p in t.partitions}


def replicas_of(cluster: ClusterProcess, topic: str, partition: int, via: int | None = None) -> tuple[int, ...]:
    p = cluster.partition_metadata(topic, partition, via=via)
    return () if p is None else tuple(int(r) for r in p.replica_nodes)


def check_log_against_acks(bootstrap: str, topic: str, producer: ContinuousProducer, partitions: int) -> int:
    records = read_partitions(bootstrap, topic, range(partitions))
    at = {(p, o): v for p, o, v in records}
    lost = [(seq, p, o) for seq, (p, o, _) in sorted(producer.acked.items()) if at.get((p, o)) != str(seq).encode()]
    values = [v for _, _, v in records]
    assert not lost, f"{len(lost)} acknowledged records lost or moved, first {lost[:10]}"
    assert len(values) == len(set(values)), "a value is stored twice"
    return len(records)


def cli(cluster: ClusterProcess, *argv: str) -> tuple[int, str, str]:
    code, out, err = run_cli(["cluster", *argv, "--bootstrap-server", cluster.bootstrap])
    return code, out.decode(), err


def test_moving_a_partition_off_its_leader_onto_the_third_broker_while_producing(tmp_path):
    with ClusterProcess(tmp_path / "c", 3, overrides=OVERRIDES) as cluster:
        cluster.wait_for_brokers({1, 2, 3})
        controller = cluster.wait_for_controller()
        topic = topic_name()
        cluster.create_topic(topic, partitions=1, replication_factor=2)
        old = replicas_of(cluster, topic, 0)
        leader = cluster.wait_for_leader(topic, 0)
        (third,) = {1, 2, 3} - set(old)
        (kept,) = set(old) - {leader}
        producer = ContinuousProducer(cluster.bootstrap, topic, records_per_s=300)
        producer.start()
        try:
            wait_until(lambda: len(producer.acked) >= 300, 30, message="300 records acknowledged before the move")
            via = next(n for n in (1, 2, 3) if n != controller)  # forwarded to the controller
            started = time.monotonic()
            assert alter(cluster, topic, {0: (third, kept)}, via=via) == {0: ErrorCode.none}
            wait_until(lambda: not ongoing(cluster, controller), MOVE_TIMEOUT_S,
                       message=lambda: f"the move to finish: {ongoing(cluster, controller)} "
                                       f"{cluster.diagnostics([topic])}")
            moved_s = time.monotonic() - started
            wait_until(lambda: all(replicas_of(cluster, topic, 0, via=n) == (third, kept) for n in (1, 2, 3)),
                       20, message="every broker to see the new replicas")
            assert cluster.wait_for_leader(topic, 0) == third  # the leader was removed: the target's first leads
            assert cluster.isr_of(topic, 0) == {third, kept}
            acked_at_move = len(producer.acked)
            wait_until(lambda: len(producer.acked) >= acked_at_move + 300, 30,
                       message="produce to continue after the move")
        finally:
            left = producer.stop_and_flush()
        assert left == 0 and not producer.fatal, (left, producer.fatal)
        # The old leader no longer hosts the partition; the new one holds every acknowledged record.
        wait_until(lambda: not os.path.exists(os.path.join(cluster.brokers[leader].data_dir, f"{topic}-0")), 20,
                   message="the removed replica's log to be deleted")
        assert os.path.isdir(os.path.join(cluster.brokers[third].data_dir, f"{topic}-0"))
        count = check_log_against_acks(cluster.bootstrap_of(third), topic, producer, 1)
        assert count >= len(producer.acked)
        print(f"moved {topic}-0 {old} -> {(third, kept)} in {moved_s:.2f} s; {count} records")


def test_scale_out_from_three_to_four_brokers_with_the_cli(tmp_path):
    cluster = ClusterProcess(tmp_path / "c", 4, overrides=OVERRIDES)
    try:
        cluster.etcd.start()
        cluster.start_many([1, 2, 3])
        cluster.wait_for_brokers({1, 2, 3})
        cluster.wait_for_controller()
        topic = topic_name()
        cluster.create_topic(topic, partitions=3, replication_factor=2)
        producer = ContinuousProducer(cluster.bootstrap, topic, partitions=3, records_per_s=300)
        producer.start()
        try:
            wait_until(lambda: len(producer.acked) >= 300, 30, message="records acknowledged before scale-out")
            # Broker 4 is not registered yet: a move onto it is refused.
            code, _, err = cli(cluster, "reassign", "--topic", topic, "--partition", "0", "--replicas", "4,1")
            assert code == 1 and "INVALID_REPLICA_ASSIGNMENT" in err, err
            cluster.start(4)
            cluster.wait_for_brokers({1, 2, 3, 4})
            for index in range(3):  # broker 4 takes one replica of each partition, as preferred leader
                current = replicas_of(cluster, topic, index)
                target = ",".join(map(str, (4, current[1])))
                code, out, err = cli(cluster, "reassign", "--topic", topic, "--partition", str(index),
                                     "--replicas", target, "--wait", "--timeout-s", str(MOVE_TIMEOUT_S))
                assert code == 0, (err, cluster.diagnostics([topic]))
                assert "completed" in out
            wait_until(lambda: all(replicas_of(cluster, topic, i)[0] == 4 for i in range(3)), 20,
                       message="metadata to show broker 4 first in every partition")
            # A partition whose leader was the kept replica moves leadership with a preferred election.
            code, out, err = cli(cluster, "elect-leaders", "--topic", topic)
            assert code == 0, (out, err)
            wait_until(lambda: all(cluster.leader_of(topic, i) == 4 for i in range(3)), 20,
                       message="broker 4 to lead every partition")
            code, out, err = cli(cluster, "elect-leaders", "--topic", topic)
            assert (code, out.strip()) == (0, "Valid replica already elected for all partitions."), err
            acked = len(producer.acked)
            wait_until(lambda: len(producer.acked) >= acked + 300, 30, message="produce to continue")
        finally:
            left = producer.stop_and_flush()
        assert left == 0 and not producer.fatal, (left, producer.fatal)
        check_log_against_acks(cluster.bootstrap, topic, producer, 3)
        code, out, err = cli(cluster, "status", "--topic", topic)
        assert code == 0, err
        assert "Brokers: 4" in out and "\tBroker: 4\t" in out
        assert "Under-replicated: 0\tOffline: 0\tReassigning: 0" in out
        for index in range(3):
            assert f"\tTopic: {topic}\tPartition: {index}\tLeader: 4\tReplicas: 4," in out
        code, out, err = cli(cluster, "reassign", "--list")
        assert (code, out.strip()) == (0, "No partition reassignments in progress.")
    finally:
        cluster.close()
