"""`odradek groups list | describe | delete | reset-offsets` against a real broker process, with a
confluent-kafka group consumer making the group and its offsets."""

from __future__ import annotations

import time
import uuid

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek import cli
from odradek.cli_groups import decode_assignment
from odradek.testing.process import BrokerProcess

OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "2",
}
BASE_TIMESTAMP_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("groups-cli")), overrides=OVERRIDES) as process:
        yield process


def groups_cli(broker, capsys, *argv):
    capsys.readouterr()
    code = cli.main(["groups", *argv, "--bootstrap-server", broker.bootstrap])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


def offsets_table(output: str, group: str) -> dict[tuple[str, int], list[str]]:
    """(topic, partition) -> the offsets table row of `describe` (GROUP TOPIC PARTITION ...)."""
    return {
        (r[1], int(r[2])): r
        for r in rows(output)
        if len(r) == 9 and r[0] == group and r[2].isdigit()
    }


def test_groups_cli_list_describe_reset_delete(broker, capsys):
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        for p in range(2):
            producer.produce(topic, value=b"v", partition=p, timestamp=BASE_TIMESTAMP_MS + i * 1000)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "client.id": "cli-test",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 20
    while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
        consumer.poll(0.1)
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 10)], asynchronous=False
    )
    try:
        code, out, err = groups_cli(broker, capsys, "describe", group)
        assert code == 0, err
        assert f"Consumer group '{group}' is Stable with 1 member(s)." in out
        table = offsets_table(out, group)
        member_id = consumer.memberid()
        assert table[(topic, 0)][3:9] == ["7", "10", "3", member_id, "/127.0.0.1", "cli-test"]
        assert table[(topic, 1)][3:6] == ["10", "10", "0"]
        assert f"{topic}(0,1)" in out  # the member's assignment, decoded

        code, out, err = groups_cli(
            broker, capsys, "reset-offsets", group, "--topic", topic, "--to-earliest"
        )
        assert code == 1 and "inactive" in err  # Kafka refuses to reset an active group
    finally:
        consumer.close()

    code, out, _ = groups_cli(broker, capsys, "list")
    assert code == 0 and group in out.split()
    code, out, _ = groups_cli(broker, capsys, "list", "--state", "Empty")
    assert [group, "Empty"] in rows(out)
    code, out, _ = groups_cli(broker, capsys, "list", "--state", "Stable")
    assert group not in out

    def committed() -> dict[tuple[str, int], str]:
        code, out, err = groups_cli(broker, capsys, "describe", group)
        assert code == 0, err
        return {k: r[3] for k, r in offsets_table(out, group).items()}

    code, out, err = groups_cli(broker, capsys, "describe", group)
    assert f"Consumer group '{group}' has no active members." in out
    code, out, err = groups_cli(
        broker, capsys, "reset-offsets", group, "--topic", topic, "--to-earliest", "--dry-run"
    )
    assert code == 0 and [group, topic, "0", "0"] in rows(out)
    assert committed() == {(topic, 0): "7", (topic, 1): "10"}  # a dry run commits nothing

    assert (
        groups_cli(broker, capsys, "reset-offsets", group, "--topic", topic, "--to-earliest")[0]
        == 0
    )
    assert committed() == {(topic, 0): "0", (topic, 1): "0"}
    assert (
        groups_cli(
            broker, capsys, "reset-offsets", group, "--topic", f"{topic}:1", "--to-offset", "4"
        )[0]
        == 0
    )
    assert committed() == {(topic, 0): "0", (topic, 1): "4"}
    assert (
        groups_cli(
            broker, capsys, "reset-offsets", group, "--topic", f"{topic}:0", "--to-offset", "99"
        )[0]
        == 0
    )
    assert committed() == {(topic, 0): "10", (topic, 1): "4"}  # clamped to the log end offset
    assert (
        groups_cli(
            broker,
            capsys,
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--to-timestamp",
            str(BASE_TIMESTAMP_MS + 6000),
        )[0]
        == 0
    )
    assert committed() == {(topic, 0): "6", (topic, 1): "6"}
    assert (
        groups_cli(broker, capsys, "reset-offsets", group, "--topic", topic, "--to-latest")[0] == 0
    )
    assert committed() == {(topic, 0): "10", (topic, 1): "10"}

    # A consumer of the group starts where the reset put it.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    assert [
        tp.offset
        for tp in consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)
    ] == [10, 10]
    consumer.close()

    code, out, err = groups_cli(broker, capsys, "delete", group)
    assert code == 0 and f"Deleted consumer group '{group}'." in out
    code, out, _ = groups_cli(broker, capsys, "describe", group)
    assert code == 0 and f"Consumer group '{group}' does not exist." in out
    code, out, _ = groups_cli(broker, capsys, "list")
    assert group not in out.split()
    code, out, err = groups_cli(broker, capsys, "delete", group)
    assert code == 1 and "GROUP_ID_NOT_FOUND" in err


def test_decode_assignment_reads_the_consumer_protocol_and_refuses_garbage():
    import struct

    data = (
        struct.pack(">hih", 0, 1, 3) + b"abc" + struct.pack(">iii", 2, 0, 5) + struct.pack(">i", -1)
    )
    assert decode_assignment(data) == [("abc", [0, 5])]
    assert decode_assignment(b"") == []
    assert decode_assignment(struct.pack(">hi", 0, 2**31 - 1)) == []


def test_consume_with_group_resumes_where_the_group_committed(broker):
    import subprocess
    import sys

    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(6):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    producer.flush(10)

    def consume(*extra):
        result = subprocess.run(
            [sys.executable, "-m", "odradek", "consume", topic, "--group", group, "--timeout-ms", "1500",
             "--bootstrap-server", broker.bootstrap, *extra],
            capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        return sorted(result.stdout.decode().split())

    # No committed offsets yet: --from-beginning applies; what was printed is committed.
    assert consume("--from-beginning") == [f"v{i}" for i in range(6)]
    assert consume("--from-beginning") == []  # the committed offsets win over the flag
    for i in range(6, 8):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    producer.flush(10)
    assert consume() == ["v6", "v7"]
