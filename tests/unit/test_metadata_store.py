"""The embedded metadata log: durability, replay, torn-tail recovery, compaction, meta.properties."""

from __future__ import annotations

import os
import struct
import tempfile
import uuid
from pathlib import Path

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odradek.config import BrokerConfig
from odradek.metadata import controller, store as store_module
from odradek.metadata.image import InvalidMetadataRecord
from odradek.metadata.records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionChangeRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from odradek.metadata.store import MetadataStore, MetadataStoreError, encode_frame, generate_cluster_id
from odradek.storage.fs import RealFileSystem
from tests.storage.fakefs import FakeFileSystem

CONFIG = BrokerConfig()
T1 = uuid.UUID("11111111-1111-4111-8111-111111111111")


def open_store(data_dir: Path, **kwargs) -> MetadataStore:
    return MetadataStore.open(data_dir / "__cluster_metadata-0", **kwargs)


def create(store: MetadataStore, name: str, partitions: int = 1, **configs: str) -> None:
    records, results = controller.create_topics(
        store.image, [controller.CreatableTopic(name, partitions, configs=configs)], CONFIG, False)
    assert results[0].error == 0, results[0].error_message
    store.append(records)


def test_append_is_durable_and_replayed(tmp_path):
    store = open_store(tmp_path)
    create(store, "orders", 3, **{"retention.ms": "1000"})
    store.append([ProducerIdsRecord(1, 1000)])
    image = store.image
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.image == image
    assert reopened.image.topics_by_name["orders"].configs == {"retention.ms": "1000"}
    assert len(reopened.image.topics_by_name["orders"].partitions) == 3
    assert reopened.image.producer_ids_next == 1000
    reopened.close()


class RecordingFileSystem(RealFileSystem):
    """The real filesystem, noting which image was published at each fsync; can fail one fsync."""

    def __init__(self) -> None:
        self.store: MetadataStore | None = None
        self.published_at_fsync: list = []
        self.fail_next_fsync = False

    def fsync(self, fd: int) -> None:
        if self.store is not None:
            self.published_at_fsync.append(self.store.image)
        if self.fail_next_fsync:
            self.fail_next_fsync = False
            raise OSError(5, "Input/output error")
        super().fsync(fd)


def test_append_fsyncs_before_publishing(tmp_path):
    fs = RecordingFileSystem()
    store = open_store(tmp_path, fs=fs)
    fs.store = store
    before = store.image
    store.append([RegisterBrokerRecord(1, "h", 9092, None)])
    assert fs.published_at_fsync == [before]  # fsync ran while the old image was still published
    assert store.image is not before and 1 in store.image.brokers
    store.close()


def test_append_publishes_a_new_image_and_leaves_the_old_one_alone(tmp_path):
    store = open_store(tmp_path)
    old = store.image
    create(store, "orders")
    assert "orders" not in old.topics_by_name
    assert "orders" in store.image.topics_by_name
    store.close()


def test_listeners_get_old_image_new_image_and_changes(tmp_path):
    store = open_store(tmp_path)
    seen = []
    store.listeners.append(lambda old, new, changes: seen.append((old, new, changes)))
    create(store, "orders", 2)
    [(old, new, changes)] = seen
    assert "orders" not in old.topics_by_name and new is store.image
    assert changes[0].topics_created == ("orders",)
    assert [c.partitions_changed for c in changes[1:]] == [(("orders", 0),), (("orders", 1),)]
    store.close()


def test_an_invalid_record_is_refused_before_anything_is_written(tmp_path):
    store = open_store(tmp_path)
    create(store, "orders")
    size = Path(store.log_path).stat().st_size
    image = store.image
    with pytest.raises(InvalidMetadataRecord):
        store.append([ConfigRecord(RESOURCE_TOPIC, "orders", "a", "b"), RemoveTopicRecord(T1)])
    assert Path(store.log_path).stat().st_size == size and store.image is image
    store.close()


def test_a_failed_fsync_leaves_image_and_log_as_they_were(tmp_path):
    fs = RecordingFileSystem()
    store = open_store(tmp_path, fs=fs)
    create(store, "orders")
    size, image = store.size_bytes, store.image
    fs.fail_next_fsync = True
    with pytest.raises(OSError):
        create(store, "payments")
    assert store.image is image
    assert Path(store.log_path).stat().st_size == size
    create(store, "payments")
    store.close()
    assert set(open_store(tmp_path).image.topics_by_name) == {"orders", "payments"}


# -- power loss (storage's FakeFileSystem: unsynced writes are lost or torn) ---------------------
def fake_store(fs: FakeFileSystem) -> MetadataStore:
    return MetadataStore.open("/data/__cluster_metadata-0", fs=fs)


def test_every_acknowledged_append_survives_power_loss():
    fs = FakeFileSystem()
    store = fake_store(fs)
    create(store, "orders", 2)
    store.append([ProducerIdsRecord(1, 1000)])
    image = store.image
    assert fs.unsynced_bytes() == 0
    fs.crash()
    assert fake_store(fs).image == image


def test_power_loss_after_a_failed_fsync_keeps_the_previous_image():
    fs = FakeFileSystem()
    store = fake_store(fs)
    create(store, "orders")
    image = store.image
    fs.fail_next_fsync()
    with pytest.raises(OSError):
        create(store, "payments")
    fs.crash(tear_last_write_at=17)
    assert fake_store(fs).image == image


@settings(max_examples=40, deadline=None)
@given(tear_at=st.integers(0, 400))
def test_power_loss_mid_append_recovers_a_whole_frame_prefix(tear_at):
    """The process dies after writing an append but before its fsync; the disk keeps a torn prefix."""
    fs = FakeFileSystem()
    store = fake_store(fs)
    create(store, "orders")
    base_image, base_size = store.image, store.size_bytes
    records, _ = controller.create_topics(store.image, [controller.CreatableTopic("payments", 3)], CONFIG, False)
    frames = [encode_frame(r) for r in records]
    fs.pwrite(store._fd, b"".join(frames), base_size)  # written, never fsynced: then the power goes
    fs.crash(tear_last_write_at=tear_at)
    survivors, end = [], 0
    for record, frame in zip(records, frames):
        end += len(frame)
        if end <= tear_at:
            survivors.append(record)
    expected = base_image.copy()
    for record in survivors:
        expected.apply(record)
    recovered = fake_store(fs)
    assert recovered.image == expected
    assert recovered.size_bytes == base_size + sum(len(f) for f in frames[:len(survivors)])
    recovered.append([ProducerIdsRecord(1, 10)])  # and the log is writable after recovery


# -- torn and corrupt tails --------------------------------------------------------------------
def _two_appends(tmp_path) -> tuple[int, int, object]:
    store = open_store(tmp_path)
    create(store, "first")
    first_size, first_image = store.size_bytes, store.image
    create(store, "second", 2)
    total = store.size_bytes
    store.close()
    return first_size, total, first_image


def test_every_torn_tail_is_cut_back_to_the_last_whole_frame(tmp_path):
    first_size, total, _ = _two_appends(tmp_path)
    log_path = tmp_path / "__cluster_metadata-0" / "metadata.log"
    full = log_path.read_bytes()
    frame_ends = []
    position = 0
    while position < len(full):
        length = struct.unpack_from(">i", full, position)[0]
        position += 8 + length
        frame_ends.append(position)
    for cut in range(first_size, total):
        log_path.write_bytes(full[:cut])
        store = open_store(tmp_path)
        valid = max(end for end in [0] + frame_ends if end <= cut)
        assert store.size_bytes == valid == log_path.stat().st_size
        assert "first" in store.image.topics_by_name
        if valid > first_size:
            # a whole TopicRecord survived, and perhaps some of its partitions
            assert "second" in store.image.topics_by_name
        else:
            assert "second" not in store.image.topics_by_name
        store.close()


def test_after_truncation_new_appends_are_readable(tmp_path):
    first_size, total, first_image = _two_appends(tmp_path)
    log_path = tmp_path / "__cluster_metadata-0" / "metadata.log"
    with open(log_path, "r+b") as f:
        f.truncate(first_size + 5)
    store = open_store(tmp_path)
    assert store.image == first_image
    create(store, "third")
    store.close()
    assert set(open_store(tmp_path).image.topics_by_name) == {"first", "third"}


@pytest.mark.parametrize("damage", ["flip_payload", "flip_crc", "huge_length", "negative_length",
                                    "zero_length", "garbage"])
def test_corrupt_tail_is_truncated(tmp_path, damage):
    first_size, total, first_image = _two_appends(tmp_path)
    log_path = tmp_path / "__cluster_metadata-0" / "metadata.log"
    data = bytearray(log_path.read_bytes())
    if damage == "flip_payload":
        data[first_size + 10] ^= 0x40
    elif damage == "flip_crc":
        data[first_size + 5] ^= 0x01
    elif damage == "huge_length":
        struct.pack_into(">i", data, first_size, 2**31 - 1)
    elif damage == "negative_length":
        struct.pack_into(">i", data, first_size, -5)
    elif damage == "zero_length":
        struct.pack_into(">i", data, first_size, 0)
    else:
        data = data[:first_size] + os.urandom(37)
    log_path.write_bytes(bytes(data))
    store = open_store(tmp_path)
    assert store.image == first_image
    assert log_path.stat().st_size == first_size
    store.close()


def test_a_frame_with_good_crc_that_does_not_decode_is_an_error_not_a_truncation(tmp_path):
    _two_appends(tmp_path)
    log_path = tmp_path / "__cluster_metadata-0" / "metadata.log"
    payload = b'{"t":"RecordFromTheFuture","v":0}'
    size = log_path.stat().st_size
    with open(log_path, "ab") as f:
        f.write(struct.pack(">iI", len(payload), crc32c.crc32c(payload)) + payload)
    with pytest.raises(MetadataStoreError, match="cannot be read"):
        open_store(tmp_path)
    assert log_path.stat().st_size == size + 8 + len(payload)


def test_an_empty_or_missing_log_is_an_empty_image(tmp_path):
    store = open_store(tmp_path)
    assert store.image.topics_by_name == {} and store.size_bytes == 0
    store.close()


# -- compaction --------------------------------------------------------------------------------
def test_log_is_compacted_into_the_images_records(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "COMPACT_MIN_RECORDS", 10)
    store = open_store(tmp_path)
    create(store, "keep", 2)
    for i in range(10):
        create(store, f"temp{i}")
        store.append([RemoveTopicRecord(store.image.topics_by_name[f"temp{i}"].topic_id)])
    assert store.records_in_log <= 10
    assert Path(store.log_path).stat().st_size == store.size_bytes
    image = store.image
    store.close()
    assert not (tmp_path / "__cluster_metadata-0" / "metadata.log.tmp").exists()
    reopened = open_store(tmp_path)
    assert reopened.image == image and set(image.topics_by_name) == {"keep"}
    create(reopened, "after")
    reopened.close()
    assert set(open_store(tmp_path).image.topics_by_name) == {"keep", "after"}


# -- meta.properties ---------------------------------------------------------------------------
def test_cluster_id_is_generated_once_and_kept(tmp_path):
    store = open_store(tmp_path, node_id=3)
    cluster_id = store.image.cluster_id
    store.close()
    assert len(cluster_id) == 22
    text = (tmp_path / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in text and "node.id=3" in text and "version=1" in text
    assert open_store(tmp_path, node_id=3).image.cluster_id == cluster_id


def test_configured_cluster_id_is_used_and_must_match(tmp_path):
    assert open_store(tmp_path, cluster_id="my-cluster").image.cluster_id == "my-cluster"
    assert open_store(tmp_path).image.cluster_id == "my-cluster"
    with pytest.raises(MetadataStoreError, match="does not match"):
        open_store(tmp_path, cluster_id="other")
    with pytest.raises(MetadataStoreError, match="node id"):
        open_store(tmp_path, node_id=2)


def test_generated_cluster_ids_look_like_kafkas():
    ids = {generate_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_frames_are_length_crc_payload():
    frame = encode_frame(RemoveTopicRecord(T1))
    length, crc = struct.unpack_from(">iI", frame)
    assert length == len(frame) - 8 and crc == crc32c.crc32c(frame[8:])


# -- property: whatever was appended, replay yields the same image ------------------------------
NAMES = ["a", "b.c", "d_e", "orders", "x-y"]
operations = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.integers(1, 4)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("config"), st.sampled_from(NAMES), st.sampled_from(["retention.ms", "segment.ms"]),
              st.one_of(st.none(), st.integers(1, 10**9).map(str))),
    st.tuples(st.just("leader"), st.sampled_from(NAMES), st.integers(-1, 2)),
    st.tuples(st.just("grow"), st.sampled_from(NAMES), st.integers(1, 3)),
    st.tuples(st.just("pids"), st.integers(1, 5000)),
    st.tuples(st.just("broker"), st.integers(1, 3)),
), max_size=40)


def _records_for(op, image):
    kind = op[0]
    if kind == "create":
        records, _ = controller.create_topics(image, [controller.CreatableTopic(op[1], op[2])], CONFIG, False)
        return records
    topic = image.topics_by_name.get(op[1]) if kind in ("delete", "config", "leader", "grow") else None
    if kind in ("delete", "config", "leader", "grow") and topic is None:
        return []
    if kind == "delete":
        return controller.delete_topics(image, [op[1]], CONFIG)[0]
    if kind == "config":
        return [ConfigRecord(RESOURCE_TOPIC, op[1], op[2], op[3])]
    if kind == "leader":
        return [PartitionChangeRecord(0, topic.topic_id, leader=op[2])]
    if kind == "grow":
        request = controller.CreatePartitionsTopic(op[1], len(topic.partitions) + op[2])
        return controller.create_partitions(image, [request], CONFIG, False)[0]
    if kind == "pids":
        return [ProducerIdsRecord(1, image.producer_ids_next + op[1])]
    return [RegisterBrokerRecord(op[1], "host", 9000 + op[1], None)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, compact_after=st.sampled_from([3, 10, 1000]))
def test_replayed_store_yields_the_same_image(ops, compact_after):
    original = store_module.COMPACT_MIN_RECORDS
    store_module.COMPACT_MIN_RECORDS = compact_after
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            store = open_store(data_dir)
            for op in ops:
                records = _records_for(op, store.image)
                if records:
                    store.append(records)
            image = store.image
            store.close()
            reopened = open_store(data_dir)
            assert reopened.image == image
            reopened.close()
    finally:
        store_module.COMPACT_MIN_RECORDS = original


@pytest.mark.parametrize("cut_from_end", [1, 10, 100, 400])
def test_a_torn_append_loses_all_of_its_records_never_part(tmp_path, cut_from_end):
    # One CreateTopics is a TopicRecord, PartitionRecords and ConfigRecords: a cut anywhere in
    # it must not leave a topic without its partitions.
    store = open_store(tmp_path)
    create(store, "kept", 2)
    create(store, "torn", 8, **{"retention.ms": "1000"})
    path = store.log_path
    store.close()
    size = os.path.getsize(path)
    os.truncate(path, size - cut_from_end)
    reopened = open_store(tmp_path)
    assert set(reopened.image.topics_by_name) == {"kept"}
    assert len(reopened.image.topics_by_name["kept"].partitions) == 2
    reopened.close()
