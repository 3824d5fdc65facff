"""__consumer_offsets key/value formats: byte-exact vectors built field by field from Kafka's
schemas (OffsetCommitKey/Value, GroupMetadataKey/Value), round trips, and partition_for_group."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadataValue,
    OffsetCommitKey,
    OffsetCommitValue,
    RecordFormatError,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
    java_string_hash,
    parse_consumer_subscription_topics,
    partition_for_group,
)


def s16(text: str) -> bytes:  # int16-length string
    b = text.encode()
    return struct.pack(">h", len(b)) + b


def test_offset_commit_key_is_version_1_group_topic_partition():
    assert encode_offset_commit_key("g", "orders", 3) == (
        b"\x00\x01" + b"\x00\x01g" + b"\x00\x06orders" + b"\x00\x00\x00\x03"
    )


def test_offset_commit_key_version_0_written_by_old_brokers_decodes():
    assert decode_key(b"\x00\x00" + s16("g") + s16("t") + struct.pack(">i", 9)) == OffsetCommitKey(
        "g", "t", 9
    )


def test_group_metadata_key_is_version_2_and_group():
    assert encode_group_metadata_key("my-group") == b"\x00\x02\x00\x08my-group"
    assert decode_key(b"\x00\x02\x00\x08my-group") == GroupMetadataKey("my-group")


def test_unknown_key_version_is_an_error():
    with pytest.raises(RecordFormatError):
        decode_key(b"\x00\x07\x00\x01g")


def test_offset_commit_value_v3_without_expiry():
    v = OffsetCommitValue(offset=42, metadata="m", commit_timestamp_ms=1000, leader_epoch=5)
    expected = (
        b"\x00\x03"  # version
        + struct.pack(">q", 42)  # offset
        + struct.pack(">i", 5)  # leader epoch
        + b"\x00\x01m"  # metadata
        + struct.pack(">q", 1000)  # commit timestamp
    )
    assert encode_offset_commit_value(v) == expected
    assert decode_offset_commit_value(expected) == v


def test_offset_commit_value_v1_when_the_commit_has_an_expire_timestamp():
    v = OffsetCommitValue(offset=7, metadata="", commit_timestamp_ms=10, expire_timestamp_ms=99)
    expected = (
        b"\x00\x01"
        + struct.pack(">q", 7)
        + b"\x00\x00"
        + struct.pack(">q", 10)
        + struct.pack(">q", 99)
    )
    assert encode_offset_commit_value(v) == expected
    assert decode_offset_commit_value(expected) == v


def test_offset_commit_value_v0_and_v2_have_no_epoch_and_no_expiry():
    body = struct.pack(">q", 7) + b"\x00\x02md" + struct.pack(">q", 10)
    for version in (0, 2):
        assert decode_offset_commit_value(struct.pack(">h", version) + body) == OffsetCommitValue(
            7, "md", 10
        )


def test_offset_commit_value_v4_is_flexible_with_compact_strings_and_tagged_fields():
    v = OffsetCommitValue(offset=1, metadata="ab", commit_timestamp_ms=2, leader_epoch=3)
    expected = (
        b"\x00\x04"
        + struct.pack(">q", 1)
        + struct.pack(">i", 3)
        + b"\x03ab"
        + struct.pack(">q", 2)
        + b"\x00"
    )
    assert encode_offset_commit_value(v, version=4) == expected
    assert decode_offset_commit_value(expected) == v
    # an unknown tagged field (tag 9, 2 bytes) is skipped
    assert decode_offset_commit_value(expected[:-1] + b"\x01\x09\x02zz") == v


def _member(instance_id="i-1"):
    return MemberMetadataValue("m-1", instance_id, "cid", "/10.0.0.1", 30000, 10000, b"sub", b"asg")


def test_group_metadata_value_v3_field_by_field():
    value = GroupMetadataValue("consumer", 4, "range", "m-1", 123, (_member(),))
    expected = (
        b"\x00\x03"
        + s16("consumer")
        + struct.pack(">i", 4)
        + s16("range")
        + s16("m-1")
        + struct.pack(">q", 123)
        + struct.pack(">i", 1)  # members
        + s16("m-1")
        + s16("i-1")
        + s16("cid")
        + s16("/10.0.0.1")
        + struct.pack(">i", 30000)
        + struct.pack(">i", 10000)
        + struct.pack(">i", 3)
        + b"sub"
        + struct.pack(">i", 3)
        + b"asg"
    )
    assert encode_group_metadata_value(value) == expected
    assert decode_group_metadata_value(expected) == value


def test_empty_group_metadata_value_has_null_protocol_and_leader():
    value = GroupMetadataValue("consumer", 2, None, None, 5, ())
    expected = (
        b"\x00\x03"
        + s16("consumer")
        + struct.pack(">i", 2)
        + b"\xff\xff\xff\xff"
        + struct.pack(">q", 5)
        + b"\x00\x00\x00\x00"
    )
    assert encode_group_metadata_value(value) == expected
    assert decode_group_metadata_value(expected) == value


def test_group_metadata_value_v0_uses_session_timeout_as_rebalance_timeout():
    raw = (
        b"\x00\x00"
        + s16("consumer")
        + struct.pack(">i", 1)
        + s16("range")
        + s16("m-1")
        + struct.pack(">i", 1)
        + s16("m-1")
        + s16("cid")
        + s16("h")
        + struct.pack(">i", 10000)
        + struct.pack(">i", 0)
        + struct.pack(">i", 0)
    )
    (m,) = decode_group_metadata_value(raw).members
    assert (m.rebalance_timeout_ms, m.session_timeout_ms, m.group_instance_id) == (
        10000,
        10000,
        None,
    )


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_group_metadata_value_round_trips_in_every_version(version):
    value = GroupMetadataValue(
        "consumer",
        9,
        "sticky",
        "m-1",
        77 if version >= 2 else -1,
        (_member(None if version < 3 else "i-1"),),
    )
    if version == 0:
        value = GroupMetadataValue(
            value.protocol_type,
            9,
            "sticky",
            "m-1",
            -1,
            (MemberMetadataValue("m-1", None, "cid", "/10.0.0.1", 10000, 10000, b"sub", b"asg"),),
        )
    assert decode_group_metadata_value(encode_group_metadata_value(value, version)) == value


def test_truncated_values_are_errors():
    raw = encode_group_metadata_value(
        GroupMetadataValue("consumer", 1, "range", "m-1", 0, (_member(),))
    )
    for cut in (1, 5, len(raw) - 1):
        with pytest.raises(RecordFormatError):
            decode_group_metadata_value(raw[:cut])
    with pytest.raises(RecordFormatError):
        decode_offset_commit_value(b"\x00\x03\x00")


@given(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=50),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.one_of(st.just(-1), st.integers(0, 2**62)),
)
def test_offset_commit_value_round_trip(offset, metadata, commit_ts, epoch, expire_ts):
    v = OffsetCommitValue(offset, metadata, commit_ts, epoch if expire_ts < 0 else -1, expire_ts)
    assert decode_offset_commit_value(encode_offset_commit_value(v)) == v


def test_java_string_hash_matches_java():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001f600") == 0xD83D * 31 + 0xDE00  # hashed as UTF-16 surrogates


def test_partition_for_group_is_kafkas_abs_hash_mod_partitions():
    assert partition_for_group("hello", 50) == 99162322 % 50
    assert partition_for_group("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) == 0
    negative = "zzzzzzzz"
    assert java_string_hash(negative) < 0
    assert partition_for_group(negative, 50) == (java_string_hash(negative) & 0x7FFFFFFF) % 50


def test_consumer_subscription_topics():
    sub = (
        b"\x00\x01"
        + struct.pack(">i", 2)
        + s16("a")
        + s16("b")
        + b"\xff\xff\xff\xff"
        + b"\x00\x00\x00\x00"
    )
    assert parse_consumer_subscription_topics(sub) == {"a", "b"}
    assert parse_consumer_subscription_topics(b"\x00") is None
