"""Metadata records (encoding) and the image they build."""

from __future__ import annotations

import uuid

import pytest

from odradek.metadata.image import Change, InvalidMetadataRecord, MetadataImage, PartitionImage
from odradek.metadata.records import (
    NO_LEADER_CHANGE,
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RecordDecodeError,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    decode_record,
    encode_record,
)

T1 = uuid.UUID("11111111-1111-4111-8111-111111111111")
T2 = uuid.UUID("22222222-2222-4222-8222-222222222222")

EVERY_KIND = [
    TopicRecord("orders", T1),
    PartitionRecord(0, T1, (1, 2), (1,), 1, 3, 4),
    PartitionChangeRecord(0, T1, isr=(1, 2)),
    PartitionChangeRecord(0, T1, leader=2, replicas=(2, 1)),
    RemoveTopicRecord(T1),
    ConfigRecord(RESOURCE_TOPIC, "orders", "retention.ms", "1000"),
    ConfigRecord(RESOURCE_BROKER, "", "log.retention.ms", None),
    RegisterBrokerRecord(1, "localhost", 9092, None),
    RegisterBrokerRecord(2, "h", 9093, "rack-a"),
    ProducerIdsRecord(1, 1000),
]


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_every_record_round_trips(record):
    payload = encode_record(record)
    assert decode_record(payload) == record
    assert b" " not in payload.split(b'"', 1)[0]  # compact


def test_payload_carries_type_tag_and_version():
    assert encode_record(RemoveTopicRecord(T1)).startswith(b'{"t":"RemoveTopicRecord","v":0,')


@pytest.mark.parametrize("payload", [
    b"not json", b"[1,2]", b'{"t":"NoSuchRecord","v":0}', b'{"t":"RemoveTopicRecord","v":99,"topic_id":"' +
    str(T1).encode() + b'"}', b'{"t":"RemoveTopicRecord","v":0,"topic_id":"nope"}',
    b'{"t":"RemoveTopicRecord","v":0,"topic_id":"' + str(T1).encode() + b'","extra":1}',
    b'{"t":"TopicRecord","v":0,"name":"a"}', b"\xff\xfe",
])
def test_undecodable_payloads_are_refused(payload):
    with pytest.raises(RecordDecodeError):
        decode_record(payload)


def build(*records) -> MetadataImage:
    return MetadataImage.from_records(records)


def test_topic_with_partitions_and_configs():
    image = build(TopicRecord("orders", T1), PartitionRecord(0, T1, (1,), (1,), 1),
                  PartitionRecord(1, T1, (1,), (1,), 1), ConfigRecord(RESOURCE_TOPIC, "orders", "retention.ms", "5"))
    topic = image.topics_by_name["orders"]
    assert image.topics_by_id[T1] is topic
    assert topic.partitions[1] == PartitionImage(1, (1,), (1,), 1, 0, 0)
    assert topic.configs == {"retention.ms": "5"}


def test_apply_reports_what_changed():
    image = MetadataImage()
    assert image.apply(TopicRecord("orders", T1)) == Change(topics_created=("orders",))
    assert image.apply(PartitionRecord(0, T1, (1,), (1,), 1)) == Change(partitions_changed=(("orders", 0),))
    assert image.apply(ConfigRecord(RESOURCE_TOPIC, "orders", "a", "b")) == Change(topic_configs_changed=("orders",))
    removed = image.topics_by_name["orders"]
    assert image.apply(RemoveTopicRecord(T1)) == Change(topics_deleted=(removed,))
    assert image.topics_by_name == {} and image.topics_by_id == {}


def test_partition_change_bumps_epochs_as_kafka_does():
    image = build(TopicRecord("t", T1), PartitionRecord(0, T1, (1, 2), (1, 2), 1, leader_epoch=5, partition_epoch=7))
    image.apply(PartitionChangeRecord(0, T1, isr=(1,)))
    p = image.topics_by_name["t"].partitions[0]
    assert (p.isr, p.leader, p.leader_epoch, p.partition_epoch) == ((1,), 1, 5, 8)
    image.apply(PartitionChangeRecord(0, T1, leader=2))
    p = image.topics_by_name["t"].partitions[0]
    assert (p.leader, p.leader_epoch, p.partition_epoch) == (2, 6, 9)
    image.apply(PartitionChangeRecord(0, T1, leader=NO_LEADER_CHANGE, replicas=(2, 1)))
    p = image.topics_by_name["t"].partitions[0]
    assert (p.replicas, p.leader, p.leader_epoch) == ((2, 1), 2, 6)


def test_config_record_with_null_value_deletes_the_override():
    image = build(TopicRecord("t", T1), ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", "5"),
                  ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", None),
                  ConfigRecord(RESOURCE_BROKER, "1", "log.retention.ms", "9"))
    assert image.topics_by_name["t"].configs == {}
    assert image.broker_configs == {"1": {"log.retention.ms": "9"}}
    image.apply(ConfigRecord(RESOURCE_BROKER, "1", "log.retention.ms", None))
    assert image.broker_configs == {}


def test_brokers_and_producer_ids():
    image = build(RegisterBrokerRecord(1, "h", 9092, "r1"), ProducerIdsRecord(1, 1000), ProducerIdsRecord(1, 2000))
    assert image.brokers[1].rack == "r1"
    assert image.producer_ids_next == 2000
    with pytest.raises(InvalidMetadataRecord):
        image.apply(ProducerIdsRecord(1, 1000))


@pytest.mark.parametrize("records", [
    [PartitionRecord(0, T1, (1,), (1,), 1)],
    [TopicRecord("t", T1), TopicRecord("t", T2)],
    [TopicRecord("t", T1), TopicRecord("u", T1)],
    [RemoveTopicRecord(T1)],
    [ConfigRecord(RESOURCE_TOPIC, "missing", "a", "b")],
    [ConfigRecord(7, "x", "a", "b")],
    [TopicRecord("t", T1), PartitionChangeRecord(0, T1, isr=(1,))],
])
def test_records_that_cannot_apply_are_refused(records):
    with pytest.raises(InvalidMetadataRecord):
        build(*records)


def test_copy_is_independent_and_shares_topics_until_changed():
    image = build(TopicRecord("t", T1), PartitionRecord(0, T1, (1,), (1,), 1))
    copy = image.copy()
    copy.apply(PartitionChangeRecord(0, T1, leader=2))
    copy.apply(TopicRecord("u", T2))
    assert image.topics_by_name["t"].partitions[0].leader == 1
    assert "u" not in image.topics_by_name
    assert copy.topics_by_name["t"].partitions[0].leader == 2


def test_to_records_rebuilds_the_same_image():
    image = build(RegisterBrokerRecord(1, "h", 9092, None), TopicRecord("t", T1),
                  PartitionRecord(0, T1, (1,), (1,), 1), PartitionChangeRecord(0, T1, leader=1, isr=(1,)),
                  ConfigRecord(RESOURCE_TOPIC, "t", "a", "b"), ConfigRecord(RESOURCE_BROKER, "", "x", "y"),
                  TopicRecord("gone", T2), RemoveTopicRecord(T2), ProducerIdsRecord(1, 3000))
    assert MetadataImage.from_records(image.to_records()) == image
