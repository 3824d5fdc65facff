"""confluent-kafka (librdkafka) consumer groups against a real broker process: partitions shared
among members, survivors taking over after a clean close and after a SIGKILL (session timeout),
static membership surviving a restart without a rebalance, and committed offsets surviving broker
restarts (SIGTERM and kill -9)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.testing.process import BrokerProcess

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
OVERRIDES = {
    "group.initial.rebalance.delay.ms": "300",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "4",
}
CONSUMER_CONFIG = {
    "session.timeout.ms": SESSION_TIMEOUT_MS,
    "heartbeat.interval.ms": 300,
    "auto.offset.reset": "earliest",
    "topic.metadata.refresh.interval.ms": 1000,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("groups")), overrides=OVERRIDES) as process:
        yield process


@pytest.fixture
def topic(broker):
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[
        name
    ].result(10)
    return name


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Member:
    """One confluent-kafka group consumer polled by its own thread; tracks its assignment."""

    def __init__(self, bootstrap: str, group: str, topic: str, **config) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, **CONSUMER_CONFIG, **config}
        )
        self.assignment: set[int] = set()
        self.rebalances = 0
        self.records: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_assign(self, consumer, partitions) -> None:
        with self.lock:
            self.assignment |= {p.partition for p in partitions}
            self.rebalances += 1

    def _on_revoke(self, consumer, partitions) -> None:
        with self.lock:
            self.assignment -= {p.partition for p in partitions}

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                with self.lock:
                    self.records.append((msg.partition(), msg.offset()))

    def owned(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self.assignment)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def assert_disjoint_cover(assignments: list[frozenset[int]]) -> None:
    """Every partition is owned by exactly one member."""
    seen: list[int] = sorted(p for a in assignments for p in a)
    assert seen == list(range(PARTITIONS)), assignments


def balanced(members: list, per_member: int) -> bool:
    owned = [m.owned() for m in members]
    return all(len(a) == per_member for a in owned) and sorted(p for a in owned for p in a) == list(
        range(PARTITIONS)
    )


def describe(bootstrap: str, group: str):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(10)


def assert_described_assignments_disjoint(bootstrap: str, group: str) -> None:
    """DescribeGroups shows one generation's assignments: no partition twice."""
    described = describe(bootstrap, group)
    partitions = [tp.partition for m in described.members for tp in m.assignment.topic_partitions]
    assert len(partitions) == len(set(partitions)), partitions


def test_confluent_three_members_share_partitions_and_survivors_take_over_after_close(
    broker, topic
):
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [Member(broker.bootstrap, group, topic) for _ in range(3)]
    try:
        wait_until(lambda: balanced(members, 2), 30, "three members with two partitions each")
        assert_disjoint_cover([m.owned() for m in members])
        assert_described_assignments_disjoint(broker.bootstrap, group)
        described = describe(broker.bootstrap, group)
        assert len(described.members) == 3 and str(described.state).endswith("STABLE")

        members.pop().close()  # a clean close sends LeaveGroup: the rebalance starts at once
        wait_until(lambda: balanced(members, 3), 20, "two survivors with three partitions each")
        assert_disjoint_cover([m.owned() for m in members])
        assert_described_assignments_disjoint(broker.bootstrap, group)
    finally:
        for m in members:
            m.close()


KILLABLE_CONSUMER = textwrap.dedent("""
    import sys
    from confluent_kafka import Consumer
    bootstrap, group, topic, session_timeout_ms = sys.argv[1:5]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "session.timeout.ms": int(session_timeout_ms), "heartbeat.interval.ms": 300,
                         "auto.offset.reset": "earliest"})
    owned = set()
    def on_assign(c, ps):
        owned.update(p.partition for p in ps)
        print("owned", ",".join(map(str, sorted(owned))), flush=True)
    def on_revoke(c, ps):
        owned.difference_update(p.partition for p in ps)
        print("owned", ",".join(map(str, sorted(owned))), flush=True)
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        consumer.poll(0.1)
""")


class KillableMember:
    """A group consumer in a subprocess, to be SIGKILLed: it never sends LeaveGroup."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                KILLABLE_CONSUMER,
                bootstrap,
                group,
                topic,
                str(SESSION_TIMEOUT_MS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.assignment: frozenset[int] = frozenset()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("owned"):
                parts = line.split()[1:]
                self.assignment = (
                    frozenset(int(p) for p in parts[0].split(",")) if parts else frozenset()
                )

    def owned(self) -> frozenset[int]:
        return self.assignment

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def test_confluent_survivors_take_over_after_a_member_is_killed(broker, topic):
    group = f"g-{uuid.uuid4().hex[:8]}"
    killable = KillableMember(broker.bootstrap, group, topic)
    members = [Member(broker.bootstrap, group, topic) for _ in range(2)]
    try:
        wait_until(
            lambda: balanced([killable, *members], 2), 30, "three members with two partitions each"
        )
        assert_described_assignments_disjoint(broker.bootstrap, group)
        killed_at = time.monotonic()
        killable.kill()
        wait_until(lambda: balanced(members, 3), 25, "two survivors with three partitions each")
        # The survivors waited for the killed member's session to expire.
        assert time.monotonic() - killed_at >= SESSION_TIMEOUT_MS / 1000 - 1.5
        assert_disjoint_cover([m.owned() for m in members])
        assert len(describe(broker.bootstrap, group).members) == 2
    finally:
        killable.kill()
        for m in members:
            m.close()


def test_confluent_static_member_restart_within_session_timeout_keeps_partitions_without_rebalance(
    broker, topic
):
    group = f"g-{uuid.uuid4().hex[:8]}"
    static = {"group.instance.id": "static-a", "session.timeout.ms": 10_000}
    first = Member(broker.bootstrap, group, topic, **static)
    other = Member(
        broker.bootstrap,
        group,
        topic,
        **{"group.instance.id": "static-b", "session.timeout.ms": 10_000},
    )
    try:
        wait_until(
            lambda: balanced([first, other], 3), 30, "two static members with three partitions each"
        )
        time.sleep(1)  # let both settle in Stable
        owned_before, other_rebalances = first.owned(), other.rebalances
        first.close()  # a static member does not send LeaveGroup on close
        restarted = Member(broker.bootstrap, group, topic, **static)
        wait_until(
            lambda: restarted.owned() == owned_before,
            15,
            "the restarted static member's old partitions",
        )
        time.sleep(2)  # several heartbeat intervals: a rebalance would show now
        assert other.rebalances == other_rebalances and len(other.owned()) == 3
        described = describe(broker.bootstrap, group)
        assert str(described.state).endswith("STABLE") and len(described.members) == 2
        restarted.close()
    finally:
        other.close()


def test_confluent_committed_offsets_survive_sigterm_and_kill_9(tmp_path):
    with BrokerProcess(str(tmp_path / "data"), overrides=OVERRIDES) as broker:
        name = "restart-topic"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(
            10
        )
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(100):
            producer.produce(name, value=str(i).encode(), partition=i % 2)
        assert producer.flush(10) == 0

        def consume(n: int) -> list[tuple[int, int]]:
            consumer = Consumer(
                {
                    "bootstrap.servers": broker.bootstrap,
                    "group.id": "resumer",
                    "enable.auto.commit": False,
                    **CONSUMER_CONFIG,
                }
            )
            consumer.subscribe([name])
            got: list[tuple[int, int]] = []
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    got.append((msg.partition(), msg.offset()))
                    consumer.commit(message=msg, asynchronous=False)
            consumer.close()
            return got

        first = consume(30)
        assert len(first) == 30
        broker.restart()  # SIGTERM, clean shutdown
        second = consume(30)
        assert len(second) == 30
        broker.kill()  # kill -9: the commits must be in the log already
        broker.start()
        third = consume(40)
        assert len(third) == 40
        consumed = sorted(first + second + third)
        assert consumed == sorted((i % 2, i // 2) for i in range(100))  # each record once

        checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "resumer"})
        committed = checker.committed([TopicPartition(name, 0), TopicPartition(name, 1)], 10)
        checker.close()
        assert [tp.offset for tp in committed] == [50, 50]
