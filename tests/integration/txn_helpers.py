"""Helpers for the transaction integration tests: broker configs, topic set-up, reading a topic
to its end at either isolation level, ListOffsets at either isolation level, group offsets, and
the scripts run as killable subprocesses.

Run as a script it is one of those subprocesses (it imports only confluent_kafka then):

    python txn_helpers.py transform <bootstrap> <input> <output> <group> <transactional.id> <batch>
        a consume-transform-produce loop: reads <input> read_committed in <group> (static member),
        writes b"out:" + value to the same partition of <output> in one transaction per batch,
        with the batch's offsets (send_offsets_to_transaction). Prints "open" once half of a
        transaction's records are in the log and "committed <n>" after each commit.
    python txn_helpers.py open <bootstrap> <topic> <partitions> <transactional.id> <timeout_ms> <group>
        begins a transaction, writes 3 records to each partition, adds offsets for <group>
        (<topic> partition 0 at offset 1), flushes, prints "open" and sleeps until killed.
    python txn_helpers.py commit_loop <bootstrap> <topic> <partitions> <transactional.id>
        numbered transactions with one record per partition, committed one after another,
        retrying commits while the broker is down; prints "committed <i>" or "aborted <i>".

Owned by the tests of this directory; nothing here is part of the broker.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import dataclass

# Broker configs for transaction tests: few internal partitions (start-up and coordinator loading
# stay fast), the timed-out-transaction sweep every 500 ms instead of 10 s.
TXN_OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "100",
    "group.min.session.timeout.ms": "1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}
CLIENT_TIMEOUT_S = 30.0  # bound on one client call (init/commit/abort/flush)
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Rec:
    """One record as a consumer saw it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def create_topic(bootstrap: str, name: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(
        CLIENT_TIMEOUT_S)
    return name


def txn_producer(bootstrap: str, transactional_id: str, **config):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "linger.ms": 5, **config})
    producer.init_transactions(CLIENT_TIMEOUT_S)
    return producer


def plain_producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})


def drain(bootstrap: str, topic: str, partitions: int, *, read_committed: bool, expect: int | None = None,
          timeout_s: float = DRAIN_TIMEOUT_S) -> list[Rec]:
    """Every record a consumer at the given isolation level sees from offset 0 up to the end
    (the last stable offset for read_committed, the high watermark otherwise), in order per
    partition. With `expect`, keeps reading until that many records arrived (or the timeout).
    Raises on a consumer error."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("drain"),  # never joins: assign() only, no commits
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "fetch.wait.max.ms": 100,
    })
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got: list[Rec] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    if len(at_end) == partitions and (expect is None or len(got) >= expect):
                        break
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            at_end.discard(msg.partition())
            got.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))
        else:
            raise AssertionError(f"drain of {topic} did not reach the end in {timeout_s} s: "
                                 f"{len(got)} records (expected {expect}), at end: {sorted(at_end)}")
        return got
    finally:
        consumer.close()


def list_offsets(bootstrap: str, topic: str, partitions: int, *, read_committed: bool) -> list[int]:
    """ListOffsets LATEST per partition: the last stable offset for read_committed, the high
    watermark for read_uncommitted."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap})
    level = IsolationLevel.READ_COMMITTED if read_committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
                                 isolation_level=level, request_timeout=CLIENT_TIMEOUT_S)
    by_partition = {tp.partition: f.result(CLIENT_TIMEOUT_S).offset for tp, f in futures.items()}
    return [by_partition[p] for p in range(partitions)]


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int, *,
                  require_stable: bool = False) -> list[int | None]:
    """The group's committed offsets (OffsetFetch); None where none. A partition error raises
    `GroupOffsetError`."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request], require_stable=require_stable,
                                               request_timeout=CLIENT_TIMEOUT_S)[group].result(CLIENT_TIMEOUT_S)
    by_partition = {}
    for tp in result.topic_partitions:
        if tp.error is not None:
            raise GroupOffsetError(tp.error)
        by_partition[tp.partition] = tp.offset if tp.offset >= 0 else None
    return [by_partition.get(p) for p in range(partitions)]


def raw_read_committed_offsets(bootstrap: str, topic: str, partition: int) -> list[int]:
    """Offsets of the data records one read_committed Fetch from offset 0 returns, as sent on
    the wire (no client-side filtering): Kafka never sends a batch at or past the LSO."""
    import asyncio

    from odradek.client.client import Client

    async def fetch() -> list[int]:
        async with Client(bootstrap) as client:
            result = await client.fetch(topic, partition, 0, isolation_level=1, max_wait_ms=100)
            return [r.offset for r in result.records]

    return asyncio.run(fetch())


class GroupOffsetError(Exception):
    """A per-partition OffsetFetch error; args[0] is confluent's KafkaError."""


class ScriptProcess:
    """This file run as a subprocess in one of its modes; its stdout lines are collected by a
    thread so the test can wait for them, and it can be SIGKILLed."""

    def __init__(self, *args: str) -> None:
        import subprocess

        self.args = [str(a) for a in args]
        self.process = subprocess.Popen([sys.executable, __file__, *self.args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.errors), daemon=True).start()

    def _pump(self, stream, into: list[str]) -> None:
        for line in stream:
            with self._lock:
                into.append(line.rstrip("\n"))

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for line in self.lines if line.startswith(prefix))

    def wait_for(self, prefix: str, count: int, timeout_s: float) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and self.count(prefix) < count:
                raise AssertionError(f"{self.args[0]} exited with {self.process.returncode}:\n"
                                     + "\n".join(self.errors[-30:]))
            return self.count(prefix) >= count

        try:
            wait_until(seen, timeout_s, f"{count} {prefix!r} lines from {self.args[0]}", interval_s=0.005)
        except AssertionError as exc:
            with self._lock:
                tail = "\n".join(self.lines[-10:] + self.errors[-80:])
            raise AssertionError(f"{exc}; its last output:\n{tail}") from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


# --- the subprocess modes ---------------------------------------------------------------------

def _transform(bootstrap: str, source: str, output: str, group: str, transactional_id: str,
               batch: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    producer = txn_producer(bootstrap, transactional_id, **{"transaction.timeout.ms": 10_000, "linger.ms": 0})
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.instance.id": "transformer",  # a restart takes the killed member's place at once
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    })
    consumer.subscribe([source])
    committed = 0
    while True:
        messages = consumer.consume(int(batch), 0.5)
        for m in messages:
            if m.error() is not None:
                raise SystemExit(f"consumer error: {m.error()}")
        if not messages:
            continue
        producer.begin_transaction()
        half = len(messages) // 2
        for i, m in enumerate(messages):
            producer.produce(output, key=m.key(), value=b"out:" + m.value(), partition=m.partition())
            if i + 1 == max(half, 1):
                producer.flush(CLIENT_TIMEOUT_S)  # these records are in the log, uncommitted
                print("open", flush=True)
                time.sleep(0.15)  # a kill now lands in the open transaction
        next_offsets: dict[int, int] = {}
        for m in messages:
            next_offsets[m.partition()] = m.offset() + 1
        producer.send_offsets_to_transaction([TopicPartition(source, p, o) for p, o in next_offsets.items()],
                                             consumer.consumer_group_metadata(), CLIENT_TIMEOUT_S)
        producer.commit_transaction(CLIENT_TIMEOUT_S)
        committed += len(messages)
        print("committed", committed, flush=True)


def _open(bootstrap: str, topic: str, partitions: str, transactional_id: str, timeout_ms: str,
          group: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    producer = txn_producer(bootstrap, transactional_id, **{"transaction.timeout.ms": int(timeout_ms)})
    producer.begin_transaction()
    for p in range(int(partitions)):
        for i in range(3):
            producer.produce(topic, value=f"open-{transactional_id}-{p}-{i}".encode(), partition=p)
    producer.flush(CLIENT_TIMEOUT_S)
    group_consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], group_consumer.consumer_group_metadata(),
                                         CLIENT_TIMEOUT_S)
    print("open", flush=True)
    while True:
        time.sleep(1)


def _commit_loop(bootstrap: str, topic: str, partitions: str, transactional_id: str) -> None:
    """Transactions numbered from 0, each with one record per partition, committed one after
    another; a commit that fails retriably (the broker is down) is retried, one that needs an
    abort is aborted. Prints "committed <i>" / "aborted <i>" once the outcome is known."""
    from confluent_kafka import KafkaException

    # A timeout well above the broker's downtime: the coordinator must not abort on its own.
    producer = txn_producer(bootstrap, transactional_id, **{"transaction.timeout.ms": 20_000,
                                                            "debug": "eos", "log_level": 7})
    i = 0
    while True:
        producer.begin_transaction()
        for p in range(int(partitions)):
            producer.produce(topic, value=f"t{i}-p{p}".encode(), partition=p)
        while True:
            try:
                producer.commit_transaction(CLIENT_TIMEOUT_S)
                print("committed", i, flush=True)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable():
                    continue
                if not error.txn_requires_abort():
                    raise
                while True:
                    try:
                        producer.abort_transaction(CLIENT_TIMEOUT_S)
                        break
                    except KafkaException as abort_exc:
                        if not abort_exc.args[0].retriable():
                            raise
                print("aborted", i, flush=True)
                break
        i += 1


if __name__ == "__main__":
    modes = {"transform": _transform, "open": _open, "commit_loop": _commit_loop}
    modes[sys.argv[1]](*sys.argv[2:])
