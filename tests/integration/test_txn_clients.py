"""Transactions with real clients (confluent-kafka and aiokafka) against a real broker process
(issue #8): a committed transaction over three partitions with its group offsets, aborted
transactions filtered for read_committed consumers, fencing by a second producer with the same
transactional.id, a transaction left open blocking read_committed consumers only until its
timeout, and aiokafka's transactional producer and read_committed consumer."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import ProducerFenced
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from odradek.testing.process import BrokerProcess

from .txn_helpers import (
    CLIENT_TIMEOUT_S,
    TXN_OVERRIDES,
    GroupOffsetError,
    create_topic,
    drain,
    group_offsets,
    list_offsets,
    plain_producer,
    raw_read_committed_offsets,
    txn_producer,
    unique,
    wait_until,
)

OPEN_TXN_TIMEOUT_MS = 5000  # transaction.timeout.ms of the producer that leaves its transaction open


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("txn")), overrides=TXN_OVERRIDES) as process:
        yield process


def values(records) -> list[bytes]:
    return [r.value for r in records]


def assert_offsets_increase_per_partition(records) -> None:
    last: dict[int, int] = {}
    for r in records:
        assert r.offset > last.get(r.partition, -1), f"offsets go back in partition {r.partition}: {records}"
        last[r.partition] = r.offset


def consume_group(bootstrap: str, group: str, topic: str, count: int):
    """A read_committed group member subscribed to `topic` that has consumed `count` records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None:
            assert msg.error() is None, msg.error()
            got.append(msg)
    assert len(got) == count, f"group member consumed {len(got)} of {count}"
    return consumer, got


def test_confluent_committed_transaction_over_three_partitions_with_group_offsets_is_visible_at_once_and_once(
        broker):
    source, output = unique("src"), unique("out")
    create_topic(broker.bootstrap, source, 1)
    create_topic(broker.bootstrap, output, 3)
    feeder = plain_producer(broker.bootstrap)
    for i in range(30):
        feeder.produce(source, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
    assert feeder.flush(CLIENT_TIMEOUT_S) == 0

    group = unique("g")
    consumer, inputs = consume_group(broker.bootstrap, group, source, 30)
    producer = txn_producer(broker.bootstrap, unique("tx"))
    try:
        producer.begin_transaction()
        for i, msg in enumerate(inputs):
            producer.produce(output, key=msg.key(), value=b"out:" + msg.value(), partition=i % 3)
        assert producer.flush(CLIENT_TIMEOUT_S) == 0  # in the log, not committed
        producer.send_offsets_to_transaction([TopicPartition(source, 0, inputs[-1].offset() + 1)],
                                             consumer.consumer_group_metadata(), CLIENT_TIMEOUT_S)

        # Open: nothing for read_committed, everything for read_uncommitted, offsets pending.
        assert drain(broker.bootstrap, output, 3, read_committed=True) == []
        assert [raw_read_committed_offsets(broker.bootstrap, output, p) for p in range(3)] == [[], [], []]
        assert len(drain(broker.bootstrap, output, 3, read_committed=False)) == 30
        assert list_offsets(broker.bootstrap, output, 3, read_committed=True) == [0, 0, 0]  # the LSO
        assert list_offsets(broker.bootstrap, output, 3, read_committed=False) == [10, 10, 10]
        assert group_offsets(broker.bootstrap, group, source, 1) == [None]
        with pytest.raises(GroupOffsetError) as unstable:  # KIP-447: a pending offset is unstable
            group_offsets(broker.bootstrap, group, source, 1, require_stable=True)
        assert unstable.value.args[0].code() == KafkaError.UNSTABLE_OFFSET_COMMIT

        producer.commit_transaction(CLIENT_TIMEOUT_S)
    finally:
        consumer.close()

    # Committed: all thirty at once for read_committed, each once, and the group's offset.
    committed = drain(broker.bootstrap, output, 3, read_committed=True)
    assert sorted(values(committed)) == sorted(f"out:v{i}".encode() for i in range(30))
    assert len(committed) == len(set(values(committed))) == 30
    assert sorted((r.partition, r.offset) for r in committed) == [(p, o) for p in range(3) for o in range(10)]
    # One commit marker per partition after the ten records; LSO = high watermark.
    assert list_offsets(broker.bootstrap, output, 3, read_committed=True) == [11, 11, 11]
    assert list_offsets(broker.bootstrap, output, 3, read_committed=False) == [11, 11, 11]
    assert group_offsets(broker.bootstrap, group, source, 1) == [30]
    assert group_offsets(broker.bootstrap, group, source, 1, require_stable=True) == [30]


def test_confluent_aborted_transactions_are_invisible_to_read_committed_but_visible_to_read_uncommitted(broker):
    topic = unique("abort")
    create_topic(broker.bootstrap, topic, 2)
    producer = txn_producer(broker.bootstrap, unique("tx"))
    plain = plain_producer(broker.bootstrap)

    # An aborted transaction on both partitions, then a committed one.
    producer.begin_transaction()
    for p in range(2):
        for i in range(10):
            producer.produce(topic, value=f"aborted-{p}-{i}".encode(), partition=p)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    producer.abort_transaction(CLIENT_TIMEOUT_S)
    producer.begin_transaction()
    for p in range(2):
        for i in range(5):
            producer.produce(topic, value=f"committed-{p}-{i}".encode(), partition=p)
    producer.commit_transaction(CLIENT_TIMEOUT_S)

    # Interleaved on partition 0: A's aborted records around B's committed one.
    a = txn_producer(broker.bootstrap, unique("txa"))
    b = txn_producer(broker.bootstrap, unique("txb"))
    a.begin_transaction()
    b.begin_transaction()
    a.produce(topic, value=b"a-aborted-1", partition=0)
    assert a.flush(CLIENT_TIMEOUT_S) == 0
    b.produce(topic, value=b"b-committed", partition=0)
    assert b.flush(CLIENT_TIMEOUT_S) == 0
    a.produce(topic, value=b"a-aborted-2", partition=0)
    assert a.flush(CLIENT_TIMEOUT_S) == 0
    b.commit_transaction(CLIENT_TIMEOUT_S)
    a.abort_transaction(CLIENT_TIMEOUT_S)
    # A non-transactional record after all of it.
    plain.produce(topic, value=b"plain-after", partition=0)
    plain.produce(topic, value=b"plain-after", partition=1)
    assert plain.flush(CLIENT_TIMEOUT_S) == 0

    committed = drain(broker.bootstrap, topic, 2, read_committed=True, expect=13)
    assert_offsets_increase_per_partition(committed)
    by_partition = {p: [r.value for r in committed if r.partition == p] for p in range(2)}
    assert by_partition[0] == [f"committed-0-{i}".encode() for i in range(5)] + [b"b-committed", b"plain-after"]
    assert by_partition[1] == [f"committed-1-{i}".encode() for i in range(5)] + [b"plain-after"]

    uncommitted = drain(broker.bootstrap, topic, 2, read_committed=False, expect=35)
    assert_offsets_increase_per_partition(uncommitted)
    assert sorted(values(uncommitted)) == sorted(
        [f"aborted-{p}-{i}".encode() for p in range(2) for i in range(10)]
        + [f"committed-{p}-{i}".encode() for p in range(2) for i in range(5)]
        + [b"a-aborted-1", b"a-aborted-2", b"b-committed", b"plain-after", b"plain-after"])
    # Control records are skipped, never delivered: partition 0 holds 10 + 5 + 3 data records,
    # 4 markers (abort, commit, B's commit, A's abort) and 1 plain record.
    assert list_offsets(broker.bootstrap, topic, 2, read_committed=False) == [23, 18]
    assert list_offsets(broker.bootstrap, topic, 2, read_committed=True) == [23, 18]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_confluent_read_committed_consumer_polling_through_commits_and_aborts_gets_only_committed(
        broker, compression):
    topic = unique("live")
    create_topic(broker.bootstrap, topic, 2)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("live-g"),
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(2)])
    producer = txn_producer(broker.bootstrap, unique("tx"), **{"compression.type": compression})
    got: list[bytes] = []

    def poll_some(duration_s: float) -> None:
        until = time.monotonic() + duration_s
        while time.monotonic() < until:
            msg = consumer.poll(0.02)
            if msg is not None:
                assert msg.error() is None, msg.error()
                got.append(msg.value())

    expected = []
    try:
        for t in range(16):
            producer.begin_transaction()
            for p in range(2):
                for i in range(3):
                    producer.produce(topic, value=f"t{t}-p{p}-{i}".encode(), partition=p)
            poll_some(0.05)  # the consumer fetches while the transaction is open
            assert producer.flush(CLIENT_TIMEOUT_S) == 0
            poll_some(0.05)
            if t % 4 == 1:
                producer.abort_transaction(CLIENT_TIMEOUT_S)
            else:
                producer.commit_transaction(CLIENT_TIMEOUT_S)
                expected += [f"t{t}-p{p}-{i}".encode() for p in range(2) for i in range(3)]
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(got) < len(expected) and time.monotonic() < deadline:
            poll_some(0.2)
        poll_some(0.5)  # anything extra would arrive now
    finally:
        consumer.close()
    assert sorted(got) == sorted(expected)
    for p in range(2):  # in order within a partition
        mine = [v for v in got if f"-p{p}-".encode() in v]
        assert mine == [v for v in expected if f"-p{p}-".encode() in v]


@pytest.mark.parametrize("next_operation", ["commit", "produce_to_new_partition"])
def test_confluent_second_producer_with_same_transactional_id_fences_the_first(broker, next_operation):
    topic = unique("fence")
    create_topic(broker.bootstrap, topic, 2)
    transactional_id = unique("tx")
    first = txn_producer(broker.bootstrap, transactional_id)
    first.begin_transaction()
    first.produce(topic, value=b"zombie-1", partition=0)
    assert first.flush(CLIENT_TIMEOUT_S) == 0

    second = txn_producer(broker.bootstrap, transactional_id)  # bumps the epoch, aborts first's
    second.begin_transaction()
    second.produce(topic, value=b"second", partition=0)
    second.commit_transaction(CLIENT_TIMEOUT_S)

    with pytest.raises(KafkaException) as raised:
        if next_operation == "produce_to_new_partition":
            first.produce(topic, value=b"zombie-2", partition=1)  # AddPartitionsToTxn, old epoch
            first.flush(CLIENT_TIMEOUT_S)
        first.commit_transaction(CLIENT_TIMEOUT_S)
    error = raised.value.args[0]
    assert error.fatal(), error
    assert error.code() == KafkaError._FENCED, error

    committed = drain(broker.bootstrap, topic, 2, read_committed=True, expect=1)
    assert values(committed) == [b"second"]
    assert b"zombie-1" in values(drain(broker.bootstrap, topic, 2, read_committed=False, expect=2))


def test_confluent_open_transaction_blocks_read_committed_only_until_its_timeout(broker):
    topic = unique("open")
    create_topic(broker.bootstrap, topic, 1)
    stalled = txn_producer(broker.bootstrap, unique("tx"), **{"transaction.timeout.ms": OPEN_TXN_TIMEOUT_MS})
    stalled.begin_transaction()
    stalled.produce(topic, value=b"stalled", partition=0)
    assert stalled.flush(CLIENT_TIMEOUT_S) == 0
    opened_at = time.monotonic()

    later = plain_producer(broker.bootstrap)
    for i in range(5):
        later.produce(topic, value=f"later-{i}".encode(), partition=0)
    assert later.flush(CLIENT_TIMEOUT_S) == 0

    # While the transaction is open the LSO stays at its first offset.
    blocked_lso = list_offsets(broker.bootstrap, topic, 1, read_committed=True)
    blocked_view = drain(broker.bootstrap, topic, 1, read_committed=True)
    blocked_wire = raw_read_committed_offsets(broker.bootstrap, topic, 0)
    if time.monotonic() - opened_at < OPEN_TXN_TIMEOUT_MS / 1000 - 0.5:  # certainly not yet timed out
        assert blocked_lso == [0]
        assert blocked_view == []
        assert blocked_wire == []
    else:
        warnings.warn("too slow to check the LSO while the transaction was certainly open", stacklevel=1)

    def later_records_visible():
        seen = drain(broker.bootstrap, topic, 1, read_committed=True)
        return seen if len(seen) >= 5 else None

    seen = wait_until(later_records_visible, OPEN_TXN_TIMEOUT_MS / 1000 + 20, "the coordinator's abort",
                      interval_s=0.2)
    waited_s = time.monotonic() - opened_at
    assert waited_s >= OPEN_TXN_TIMEOUT_MS / 1000 - 0.2, f"visible after {waited_s:.1f} s, before the timeout"
    assert values(seen) == [f"later-{i}".encode() for i in range(5)]
    # Stalled record, five later ones, the coordinator's abort marker.
    assert list_offsets(broker.bootstrap, topic, 1, read_committed=True) == [7]
    assert values(drain(broker.bootstrap, topic, 1, read_committed=False, expect=6))[0] == b"stalled"

    # The coordinator aborted it: committing now must fail, never commit the stalled record.
    with pytest.raises(KafkaException):
        stalled.commit_transaction(CLIENT_TIMEOUT_S)
    assert b"stalled" not in values(drain(broker.bootstrap, topic, 1, read_committed=True))


# --- aiokafka -----------------------------------------------------------------------------------

async def aio_drain(bootstrap: str, topic: str, partitions: int, *, isolation_level: str, expect: int,
                    settle_s: float = 1.0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) an aiokafka consumer sees from the beginning: waits for `expect`
    records, then for `settle_s` more to catch any extra."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level=isolation_level, fetch_max_wait_ms=100)
    await consumer.start()
    got: list[tuple[int, int, bytes]] = []
    try:
        consumer.assign([AioTopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLIENT_TIMEOUT_S
        settle_until = None
        while loop.time() < deadline:
            if len(got) >= expect:
                settle_until = settle_until or loop.time() + settle_s
                if loop.time() > settle_until:
                    break
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend((r.partition, r.offset, r.value) for r in records)
    finally:
        await consumer.stop()
    return got


def test_aiokafka_transactional_producer_commit_and_abort_with_read_committed_consumer(broker):
    source, output = unique("aio-src"), unique("aio-out")
    create_topic(broker.bootstrap, source, 1)
    create_topic(broker.bootstrap, output, 2)
    group = unique("aio-g")

    async def scenario():
        feeder = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await feeder.start()
        try:
            for i in range(20):
                await feeder.send_and_wait(source, value=f"v{i}".encode(), partition=0)
        finally:
            await feeder.stop()

        consumer = AIOKafkaConsumer(source, bootstrap_servers=broker.bootstrap, group_id=group,
                                    isolation_level="read_committed", enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique("aio-tx"))
        await consumer.start()
        await producer.start()
        try:
            inputs = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLIENT_TIMEOUT_S
            while len(inputs) < 20 and loop.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    inputs.extend(records)
            assert len(inputs) == 20

            # Commit the first ten, with their offsets.
            async with producer.transaction():
                for i, r in enumerate(inputs[:10]):
                    await producer.send(output, value=b"out:" + r.value, partition=i % 2)
                await producer.send_offsets_to_transaction({AioTopicPartition(source, 0): inputs[9].offset + 1},
                                                           group)
            committed_after_first = await consumer.committed(AioTopicPartition(source, 0))

            # Abort the next ten, offsets too.
            with pytest.raises(RuntimeError, match="abort on purpose"):
                async with producer.transaction():
                    for i, r in enumerate(inputs[10:]):
                        await producer.send(output, value=b"aborted:" + r.value, partition=i % 2)
                    await producer.send_offsets_to_transaction(
                        {AioTopicPartition(source, 0): inputs[19].offset + 1}, group)
                    await producer.flush()  # the records reach the log before the abort
                    raise RuntimeError("abort on purpose")
            committed_after_abort = await consumer.committed(AioTopicPartition(source, 0))

            # A later committed transaction is visible past the aborted one.
            async with producer.transaction():
                await producer.send(output, value=b"final", partition=0)
                await producer.send(output, value=b"final", partition=1)
        finally:
            await producer.stop()
            await consumer.stop()

        read_committed = await aio_drain(broker.bootstrap, output, 2, isolation_level="read_committed", expect=12)
        read_uncommitted = await aio_drain(broker.bootstrap, output, 2, isolation_level="read_uncommitted",
                                           expect=22)
        return committed_after_first, committed_after_abort, read_committed, read_uncommitted

    committed_after_first, committed_after_abort, read_committed, read_uncommitted = asyncio.run(scenario())
    assert committed_after_first == 10
    assert committed_after_abort == 10  # the aborted transaction's offsets were discarded
    assert sorted(v for _, _, v in read_committed) == sorted(
        [f"out:v{i}".encode() for i in range(10)] + [b"final", b"final"])
    assert sorted(v for _, _, v in read_uncommitted) == sorted(
        [f"out:v{i}".encode() for i in range(10)] + [f"aborted:v{i}".encode() for i in range(10, 20)]
        + [b"final", b"final"])
    # Per partition: 5 committed, marker, 5 aborted, marker, 1 final, marker.
    assert list_offsets(broker.bootstrap, output, 2, read_committed=True) == [14, 14]


def test_aiokafka_second_producer_with_same_transactional_id_fences_the_first(broker):
    topic = unique("aio-fence")
    create_topic(broker.bootstrap, topic, 1)
    transactional_id = unique("aio-tx")

    async def scenario():
        first = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id)
        second = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id)
        await first.start()
        try:
            await first.begin_transaction()
            await first.send_and_wait(topic, value=b"zombie", partition=0)
            await second.start()  # InitProducerId: bumps the epoch, aborts first's transaction
            async with second.transaction():
                await second.send_and_wait(topic, value=b"second", partition=0)
            with pytest.raises(ProducerFenced):
                await first.commit_transaction()
        finally:
            await second.stop()
            try:
                await first.stop()
            except ProducerFenced:
                pass
        return await aio_drain(broker.bootstrap, topic, 1, isolation_level="read_committed", expect=1)

    assert [v for _, _, v in asyncio.run(scenario())] == [b"second"]
