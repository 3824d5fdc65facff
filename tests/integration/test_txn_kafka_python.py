"""Transactions with kafka-python (3.x has a transactional producer) against a real broker
process: commit and abort across partitions with the group's offsets, read by kafka-python's
read_committed and read_uncommitted consumers, and fencing by a second producer."""

from __future__ import annotations

import pytest

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from odradek.testing.process import BrokerProcess

from .txn_helpers import TXN_OVERRIDES, create_topic, group_offsets, unique

PARTITIONS = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("txn-kp")), overrides=TXN_OVERRIDES) as process:
        yield process


def read(bootstrap: str, topic: str, isolation_level: str) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        return sorted(m.value for m in consumer)
    finally:
        consumer.close()


def test_kafka_python_commit_and_abort_with_group_offsets(broker):
    topic, group = unique("kp-txn"), unique("kp-group")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique("kp-tid"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(9):
            producer.send(topic, value=b"committed-%d" % i, partition=i % PARTITIONS)
        producer.send_offsets_to_transaction(
            {TopicPartition(topic, p): OffsetAndMetadata(7, "", -1) for p in range(PARTITIONS)}, group)
        producer.commit_transaction()

        producer.begin_transaction()
        for i in range(9):
            producer.send(topic, value=b"aborted-%d" % i, partition=i % PARTITIONS)
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()

    committed = [b"committed-%d" % i for i in range(9)]
    assert read(broker.bootstrap, topic, "read_committed") == sorted(committed)
    assert read(broker.bootstrap, topic, "read_uncommitted") == sorted(
        committed + [b"aborted-%d" % i for i in range(9)])
    assert group_offsets(broker.bootstrap, group, topic, PARTITIONS, require_stable=True) == [7] * PARTITIONS


def test_kafka_python_second_producer_fences_the_first(broker):
    topic, tid = unique("kp-fence"), unique("kp-tid")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    first = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=tid)
    second = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=tid)
    try:
        first.init_transactions()
        first.begin_transaction()
        first.send(topic, value=b"zombie", partition=0).get(timeout=10)
        second.init_transactions()  # bumps the epoch: the first producer is fenced
        with pytest.raises(KafkaError):
            first.commit_transaction()
        second.begin_transaction()
        second.send(topic, value=b"live", partition=0)
        second.commit_transaction()
    finally:
        first.close(timeout=1)
        second.close()
    assert read(broker.bootstrap, topic, "read_committed") == [b"live"]
