"""aiokafka against a real broker process: produce per codec, consume, admin, idempotence."""

from __future__ import annotations

import asyncio

import pytest

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


async def create(bootstrap, topic, partitions):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def consume(bootstrap, topic, partitions, expected, timeout_s=30):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    got = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(got) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_produce_and_consume_per_codec(broker, topic_name, codec):
    async def scenario():
        await create(broker.bootstrap, topic_name, 2)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic_name, key=f"k{i % 13}".encode(), value=f"v{i}".encode())
                       for i in range(2000)]
            results = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        got = await consume(broker.bootstrap, topic_name, 2, 2000)
        return results, got

    results, got = asyncio.run(scenario())
    assert len(results) == 2000
    assert sorted(int(r.value[1:]) for r in got) == list(range(2000))
    key_partitions = {}
    for r in got:
        assert key_partitions.setdefault(r.key, r.partition) == r.partition


def test_aiokafka_admin_lists_created_topics(broker, topic_name):
    async def scenario():
        await create(broker.bootstrap, topic_name, 3)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            topics = await admin.list_topics()
            described = await admin.describe_topics([topic_name])
            await admin.delete_topics([topic_name])
            after = await admin.list_topics()
        finally:
            await admin.close()
        return topics, described, after

    topics, described, after = asyncio.run(scenario())
    assert topic_name in topics
    assert len(described[0]["partitions"]) == 3
    assert topic_name not in after
