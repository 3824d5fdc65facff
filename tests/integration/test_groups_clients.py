"""kafka-python and aiokafka group consumers against a real broker process: a subscribed consumer
reads a topic with auto commit or manual commit, and a new consumer of the same group resumes at
the committed offsets (every record read exactly once across the two)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from odradek.testing.process import BrokerProcess

OVERRIDES = {
    # Kafka's default is 3000 ms; it lets a new group's members (and their metadata) arrive
    # before the first assignment. With 0, a kafka-python leader once (2 of ~10 runs on a loaded
    # machine) assigned before it had the topic's metadata, got no partitions and never rejoined
    # within the test's 30 s. Kept small, as test_groups_confluent.py does.
    "group.initial.rebalance.delay.ms": "300",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "4",
}
PARTITIONS = 3
RECORDS = 300
FIRST_BATCH = 120
MAX_POLL_RECORDS = 20  # so the first consumer stops part way


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("clients")), overrides=OVERRIDES) as process:
        yield process


@pytest.fixture
def topic(broker):
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    for i in range(RECORDS):
        producer.send(name, value=str(i).encode(), partition=i % PARTITIONS)
    producer.flush(30)
    producer.close()
    return name


ALL = sorted((i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS))


def kafka_python_consume(broker, topic, group, at_least, auto_commit):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=auto_commit,
        auto_commit_interval_ms=200,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=MAX_POLL_RECORDS,
    )
    got = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < at_least and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend((r.partition, r.offset) for r in records)
        if not auto_commit:
            consumer.commit()  # the positions after everything poll returned
    finally:
        consumer.close()  # with auto commit, close commits the positions
    return got


@pytest.mark.parametrize("auto_commit", [True, False], ids=["auto-commit", "manual-commit"])
def test_kafka_python_group_consumer_resumes_at_committed_offsets(broker, topic, auto_commit):
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = kafka_python_consume(broker, topic, group, FIRST_BATCH, auto_commit)
    assert FIRST_BATCH <= len(first) < RECORDS
    second = kafka_python_consume(broker, topic, group, RECORDS - len(first), auto_commit)
    assert sorted(first + second) == ALL  # nothing read twice, nothing skipped
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    from kafka import TopicPartition

    committed = [consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
    consumer.close()
    assert committed == [RECORDS // PARTITIONS] * PARTITIONS


async def aiokafka_consume(bootstrap, topic, group, at_least, auto_commit):
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=auto_commit,
        auto_commit_interval_ms=200,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    got = []
    try:
        async with asyncio.timeout(30):
            while len(got) < at_least:
                for records in (
                    await consumer.getmany(timeout_ms=200, max_records=MAX_POLL_RECORDS)
                ).values():
                    got.extend((r.partition, r.offset) for r in records)
        if not auto_commit:
            await consumer.commit()
    finally:
        await consumer.stop()  # with auto commit, stop commits the positions
    return got


@pytest.mark.parametrize("auto_commit", [True, False], ids=["auto-commit", "manual-commit"])
def test_aiokafka_group_consumer_resumes_at_committed_offsets(broker, topic, auto_commit):
    group = f"g-{uuid.uuid4().hex[:8]}"

    async def scenario():
        first = await aiokafka_consume(broker.bootstrap, topic, group, FIRST_BATCH, auto_commit)
        assert FIRST_BATCH <= len(first) < RECORDS
        second = await aiokafka_consume(
            broker.bootstrap, topic, group, RECORDS - len(first), auto_commit
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            from aiokafka import TopicPartition

            committed = [
                await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)
            ]
        finally:
            await consumer.stop()
        return first, second, committed

    first, second, committed = asyncio.run(scenario())
    assert sorted(first + second) == ALL
    assert committed == [RECORDS // PARTITIONS] * PARTITIONS
