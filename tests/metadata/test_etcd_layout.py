"""The etcd key layout and value codecs, and image diffs: pure, no etcd needed."""

import uuid

import pytest

from odradek.metadata import etcd_layout as layout
from odradek.metadata.etcd_layout import (
    BrokerEndpoint,
    ControllerClaim,
    LayoutError,
    LiveBroker,
    SnapshotDescriptor,
    image_changes,
    parse_etcd_url,
)
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
)


def test_log_keys_sort_in_sequence_order_and_parse_back():
    prefix = layout.cluster_prefix("/odradek", "MkU3OEVBNTcwNTJENDM2Qk")
    keys = [layout.log_key(prefix, n) for n in (1, 9, 10, 99, 100, 12345678901234567890)]
    assert keys == sorted(keys)
    assert keys[0] == b"/odradek/MkU3OEVBNTcwNTJENDM2Qk/log/00000000000000000001"
    assert [layout.parse_sequence(k.decode()[len(prefix):]) for k in keys] == [1, 9, 10, 99, 100, 12345678901234567890]
    with pytest.raises(LayoutError):
        layout.parse_sequence("log/12x")
    with pytest.raises(ValueError):
        layout.cluster_prefix("/odradek", "a/b")


def test_prefix_range_end_covers_exactly_the_prefix():
    assert layout.prefix_range_end(b"/a/log/") == b"/a/log0"
    assert layout.prefix_range_end(b"a\xff") == b"b"
    assert layout.prefix_range_end(b"\xff\xff") == b"\0"


def test_records_round_trip_and_unknown_records_are_refused():
    topic_id = uuid.uuid4()
    records = [TopicRecord("t", topic_id), PartitionRecord(0, topic_id, (1, 2), (1,), 1, 3, 4),
               PartitionChangeRecord(0, topic_id, isr=(1, 2)), ConfigRecord(RESOURCE_TOPIC, "t", "k", None)]
    assert layout.decode_records(layout.encode_records(records)) == records
    for bad in (b"{}", b"[{\"t\":\"NoSuchRecord\",\"v\":0}]", b"\xff", b"[{\"t\":\"TopicRecord\",\"v\":9}]"):
        with pytest.raises(LayoutError):
            layout.decode_records(bad)


def test_registration_claim_and_snapshot_descriptor_round_trip_and_are_bounded():
    broker = LiveBroker(3, "inc", (BrokerEndpoint("PLAINTEXT", "h", 9092), BrokerEndpoint("SSL", "h", 9093, "SSL")),
                        "r1")
    assert LiveBroker.decode(broker.encode()) == broker
    assert b"in_controlled_shutdown" not in broker.encode()  # written only when set
    stopping = LiveBroker(3, "inc", (), None, in_controlled_shutdown=True)
    assert LiveBroker.decode(stopping.encode()) == stopping
    claim = ControllerClaim(3, "inc", 7)
    assert ControllerClaim.decode(claim.encode()) == claim
    descriptor = SnapshotDescriptor(10, 2, 1500, 123)
    assert SnapshotDescriptor.decode(descriptor.encode()) == descriptor
    with pytest.raises(LayoutError):
        LiveBroker.decode(b"x" * (layout.MAX_VALUE_BYTES + 1))
    with pytest.raises(LayoutError):
        LiveBroker.decode(LiveBroker(1, "i", tuple(BrokerEndpoint(f"L{i}", "h", i + 1)
                                                   for i in range(layout.MAX_ENDPOINTS + 1))).encode())
    with pytest.raises(LayoutError):
        LiveBroker.decode(b'{"node_id": 1, "incarnation_id": "' + b"i" * 300 + b'"}')
    with pytest.raises(LayoutError):
        SnapshotDescriptor.decode(SnapshotDescriptor(1, layout.MAX_SNAPSHOT_CHUNKS + 1, 10, 0).encode())
    with pytest.raises(LayoutError):
        ControllerClaim.decode(b"[]")


def test_parse_etcd_url():
    assert parse_etcd_url("etcd://a:2379,b:2479") == [("a", 2379), ("b", 2479)]
    assert parse_etcd_url("127.0.0.1:2379/") == [("127.0.0.1", 2379)]
    assert parse_etcd_url("etcd://[::1]:2379") == [("::1", 2379)]
    for bad in ("etcd://a", "etcd://a:0", "etcd://:1", "etcd://a:b"):
        with pytest.raises(ValueError):
            parse_etcd_url(bad)


def test_image_changes_names_every_difference():
    a_id, b_id, c_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old = MetadataImage.from_records([
        TopicRecord("a", a_id), PartitionRecord(0, a_id, (1,), (1,), 1), PartitionRecord(1, a_id, (1,), (1,), 1),
        TopicRecord("b", b_id), RegisterBrokerRecord(1, "h", 1)])
    new = old.copy()
    for record in [PartitionChangeRecord(1, a_id, leader=2), ConfigRecord(RESOURCE_TOPIC, "a", "k", "v"),
                   TopicRecord("c", c_id), PartitionRecord(0, c_id, (2,), (2,), 2), RegisterBrokerRecord(2, "h", 2),
                   ConfigRecord(4, "", "x", "y")]:
        new.apply(record)
    del new.topics_by_name["b"], new.topics_by_id[b_id]
    [change] = image_changes(old, new)
    assert change.topics_created == ("c",)
    assert [t.name for t in change.topics_deleted] == ["b"]
    assert change.partitions_changed == (("a", 1), ("c", 0))
    assert change.topic_configs_changed == ("a",)
    assert change.broker_configs_changed == ("",)
    assert change.brokers_changed == (2,)
    assert image_changes(new, new) == []
