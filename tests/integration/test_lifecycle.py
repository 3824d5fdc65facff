"""The log lifecycle against a real broker process: retention, DeleteRecords, compaction and
configs altered through confluent-kafka's and kafka-python's admin clients."""

from __future__ import annotations

import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from odradek.testing.process import BrokerProcess

SEGMENT_BYTES = 1024 * 1024  # the smallest segment.bytes Kafka allows
VALUE = b"x" * 20_000
FAST_LIFECYCLE = {"log.retention.check.interval.ms": "100", "log.segment.delete.delay.ms": "0",
                  "log.cleaner.backoff.ms": "100"}


@pytest.fixture
def lifecycle_broker(tmp_path):
    process = BrokerProcess(str(tmp_path / "data"), overrides=FAST_LIFECYCLE).start()
    yield process
    process.stop()


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, name, **configs):
    client = admin(bootstrap)  # kept referenced until the result is in
    client.create_topics([NewTopic(name, num_partitions=1, replication_factor=1,
                                   config={k: str(v) for k, v in configs.items()})])[name].result(10)


def produce(bootstrap, topic, records):
    """Produce (key, value, timestamp_ms or 0) in order to partition 0."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    for key, value, timestamp_ms in records:
        producer.produce(topic, key=key, value=value, partition=0, timestamp=timestamp_ms)
        producer.poll(0)
    assert producer.flush(30) == 0


def watermarks(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()


def wait_until(predicate, timeout_s=20.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def consume_from(bootstrap, topic, offset, reset, *, until_offset, timeout_s=20.0):
    """(offset, key, value) from `offset` with auto.offset.reset=`reset` until `until_offset`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "lifecycle", "enable.auto.commit": False,
                         "auto.offset.reset": reset})
    consumer.assign([TopicPartition(topic, 0, offset)])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (not got or got[-1][0] < until_offset - 1):
            for msg in consumer.consume(500, 0.3):
                assert msg.error() is None, msg.error()
                got.append((msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def test_confluent_retention_ms_deletes_old_segments_never_the_active_one_and_consumers_reset(
        lifecycle_broker, topic_name):
    bootstrap = lifecycle_broker.bootstrap
    create_topic(bootstrap, topic_name, **{"segment.bytes": SEGMENT_BYTES, "retention.ms": 60_000})
    old_ms = int(time.time() * 1000) - 3_600_000
    produce(bootstrap, topic_name, [(b"%d" % i, VALUE, old_ms) for i in range(160)])  # ~3 segments, all old
    low, high = wait_until(lambda: (w := watermarks(bootstrap, topic_name))[0] > 0 and w, what="retention")
    assert high == 160 and 0 < low < 160  # the active segment (old records too) stays
    got = consume_from(bootstrap, topic_name, 0, "earliest", until_offset=high)
    assert got[0][0] == low and [o for o, _, _ in got] == list(range(low, high))
    # Below the log start with auto.offset.reset=latest: reset to the end, nothing consumed.
    assert consume_from(bootstrap, topic_name, 0, "latest", until_offset=0, timeout_s=2) == []


def test_confluent_retention_bytes_bounds_a_partition_to_within_one_segment(lifecycle_broker, topic_name):
    from kafka.admin import KafkaAdminClient

    bootstrap = lifecycle_broker.bootstrap
    create_topic(bootstrap, topic_name, **{"segment.bytes": SEGMENT_BYTES, "retention.bytes": 2 * SEGMENT_BYTES})
    produce(bootstrap, topic_name, [(None, VALUE, 0) for _ in range(300)])  # ~6 MB
    wait_until(lambda: watermarks(bootstrap, topic_name)[0] > 0, what="retention.bytes")
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        size = wait_until(lambda: _partition_size(client, topic_name) <= 3 * SEGMENT_BYTES and
                          _partition_size(client, topic_name), what="size within bound")
    finally:
        client.close()
    assert 2 * SEGMENT_BYTES - SEGMENT_BYTES <= size <= 3 * SEGMENT_BYTES


def _partition_size(client, topic):
    """The partition's size from kafka-python's DescribeLogDirs (one broker, one dir)."""
    sizes = [p["partition_size"]
             for per_broker in client.describe_log_dirs()
             for log_dir in per_broker["log_dirs"]
             for t in log_dir["topics"] if t["name"] == topic
             for p in t["partitions"]]
    assert len(sizes) == 1
    return sizes[0]


def test_confluent_compacted_topic_yields_the_latest_value_of_every_live_key_also_after_restart(
        lifecycle_broker, topic_name):
    bootstrap = lifecycle_broker.bootstrap
    create_topic(bootstrap, topic_name, **{"cleanup.policy": "compact", "segment.bytes": SEGMENT_BYTES,
                                           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": 0})
    records, expected = [], {}
    for round_ in range(6):
        for k in range(40):
            value = b"%d-%d-" % (k, round_) + VALUE
            records.append((b"k%d" % k, value, 0))
            expected[b"k%d" % k] = value
    for k in range(0, 40, 4):  # tombstones for every fourth key
        records.append((b"k%d" % k, None, 0))
        expected.pop(b"k%d" % k)
    records += [(b"filler", VALUE, 0)] * 60  # roll past the tombstones
    expected[b"filler"] = VALUE
    produce(bootstrap, topic_name, records)
    total = len(records)

    def compacted_view():
        got = consume_from(bootstrap, topic_name, 0, "earliest", until_offset=total)
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets))
        view = {}
        for _, key, value in got:
            view[key] = value
        cleaned = not any(value is None for _, _, value in got) and \
            sum(1 for _, key, _ in got if key != b"filler") == len(expected) - 1
        return cleaned and view

    view = wait_until(compacted_view, timeout_s=30, what="compaction")
    assert view == expected
    lifecycle_broker.restart()
    assert wait_until(compacted_view, what="compacted view after restart") == expected


def test_confluent_configs_altered_take_effect_at_once_and_survive_restart(lifecycle_broker, topic_name):
    bootstrap = lifecycle_broker.bootstrap
    create_topic(bootstrap, topic_name, **{"segment.bytes": SEGMENT_BYTES})
    old_ms = int(time.time() * 1000) - 3_600_000
    produce(bootstrap, topic_name, [(None, VALUE, old_ms) for _ in range(120)])
    time.sleep(0.5)
    assert watermarks(bootstrap, topic_name)[0] == 0  # default retention: a week
    client = admin(bootstrap)
    resource = ConfigResource("TOPIC", topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    client.incremental_alter_configs([resource])[resource].result(10)
    wait_until(lambda: watermarks(bootstrap, topic_name)[0] > 0, what="retention after the change")

    bad = ConfigResource("TOPIC", topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "-7", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(confluent_kafka.KafkaException) as failure:
        client.incremental_alter_configs([bad])[bad].result(10)
    assert failure.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG

    broker_default = ConfigResource("BROKER", "1", incremental_configs=[
        ConfigEntry("log.retention.bytes", "123456789", incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([broker_default])[broker_default].result(10)

    def described():
        topic = ConfigResource("TOPIC", topic_name)
        client = admin(bootstrap)
        return client.describe_configs([topic])[topic].result(10)

    lifecycle_broker.restart()
    configs = described()
    assert configs["retention.ms"].value == "60000"
    assert configs["retention.ms"].source == confluent_kafka.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["retention.bytes"].value == "123456789"
    assert configs["retention.bytes"].source == \
        confluent_kafka.admin.ConfigSource.DYNAMIC_BROKER_CONFIG.value


def test_kafka_python_alter_configs_and_delete_records_agree_with_list_offsets(lifecycle_broker, topic_name):
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.structs import TopicPartition as KTopicPartition

    bootstrap = lifecycle_broker.bootstrap
    create_topic(bootstrap, topic_name)
    produce(bootstrap, topic_name, [(None, b"v%d" % i, 0) for i in range(50)])
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        client.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic_name,
                                              configs={"retention.ms": "3600000"})])
        client.delete_records({KTopicPartition(topic_name, 0): 20})
        with pytest.raises(Exception, match="OffsetOutOfRange"):
            client.delete_records({KTopicPartition(topic_name, 0): 51})
    finally:
        client.close()
    confluent = admin(bootstrap)
    tp = TopicPartition(topic_name, 0)
    earliest = confluent.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10)
    assert earliest.offset == 20 == watermarks(bootstrap, topic_name)[0]
    topic = ConfigResource("TOPIC", topic_name)
    assert confluent.describe_configs([topic])[topic].result(10)["retention.ms"].value == "3600000"
    lifecycle_broker.restart()
    assert watermarks(bootstrap, topic_name)[0] == 20
    confluent = admin(bootstrap)
    assert confluent.describe_configs([topic])[topic].result(10)["retention.ms"].value == "3600000"
    assert consume_from(bootstrap, topic_name, 0, "earliest", until_offset=50)[0][0] == 20
