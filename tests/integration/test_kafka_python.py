"""kafka-python against a real broker process: produce per codec, consume, admin, timestamps."""

from __future__ import annotations

import time

import pytest

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic  # noqa: E402
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError  # noqa: E402

from odradek.client.partitioner import partition_for_key  # noqa: E402

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def admin_for(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)


def consume(broker, topic, partitions, expected, timeout_s=30):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_produce_and_consume_per_codec(broker, topic_name, codec):
    admin = admin_for(broker)
    admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                             enable_idempotence=True, linger_ms=5)
    futures = [producer.send(topic_name, key=f"key-{i % 31}".encode(), value=f"v{i}".encode(),
                             headers=[("n", str(i).encode())]) for i in range(3000)]
    producer.flush(30)
    metadata = [f.get(10) for f in futures]
    producer.close()
    for i, md in enumerate(metadata):
        # kafka-python's default partitioner is Kafka's murmur2, as is ours.
        assert md.partition == partition_for_key(f"key-{i % 31}".encode(), 3)

    got = consume(broker, topic_name, 3, 3000)
    assert len(got) == 3000
    assert sorted(int(r.value[1:]) for r in got) == list(range(3000))
    for r in got:
        assert r.headers == [("n", r.value[1:])]
    per_partition = {}
    for r in got:
        per_partition.setdefault(r.partition, []).append(r.offset)
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))


def test_kafka_python_admin_create_describe_delete(broker, topic_name):
    admin = admin_for(broker)
    try:
        admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1,
                                      topic_configs={"retention.ms": "60000"})])
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic(topic_name + "x", num_partitions=1, replication_factor=2)])
        assert topic_name in admin.list_topics()
        described = admin.describe_topics([topic_name])
        assert len(described[0]["partitions"]) == 2
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
        # kafka-python 3.x returns {"topic": {name: {config: {"value": ..., "config_source": ...}}}}
        retention = configs["topic"][topic_name]["retention.ms"]
        assert (retention["value"], retention["config_source"]) == ("60000", "DYNAMIC_TOPIC_CONFIG")
        admin.create_partitions({topic_name: NewPartitions(total_count=4)})
        assert len(admin.describe_topics([topic_name])[0]["partitions"]) == 4
        admin.delete_topics([topic_name])
        deadline = time.monotonic() + 10
        while topic_name in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert topic_name not in admin.list_topics()
    finally:
        admin.close()


def test_kafka_python_offsets_for_times_and_end_offsets(broker, topic_name):
    admin = admin_for(broker)
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    base = 1_700_000_000_000
    for i in range(5):
        producer.send(topic_name, value=b"x", timestamp_ms=base + i * 10).get(10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = TopicPartition(topic_name, 0)
        found = consumer.offsets_for_times({tp: base + 15})[tp]
        assert (found.offset, found.timestamp) == (2, base + 20)
        assert consumer.end_offsets([tp])[tp] == 5
        assert consumer.beginning_offsets([tp])[tp] == 0
    finally:
        consumer.close()
