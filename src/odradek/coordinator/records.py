"""`__consumer_offsets` record formats: keys and values exactly as Kafka writes them.

Every record on `__consumer_offsets` has a key that starts with an int16 *key version*, which
says what the record is, followed by that key's fields; the value starts with an int16 *value
version* followed by the value's fields. A null value is a tombstone (the offset or the group
was deleted). Strings are int16 length + UTF-8 bytes (nullable strings: length -1 for null),
bytes are int32 length + bytes, arrays int32 count + elements; flexible versions (value v4)
use unsigned-varint lengths plus one (compact) and end every struct with tagged fields.

Keys
    OffsetCommitKey    key version 0 or 1 (Kafka writes 1):  group string, topic string,
                       partition int32
    GroupMetadataKey   key version 2:                        group string
Values
    OffsetCommitValue  v0: offset int64, metadata string, commit_timestamp int64
                       v1: v0 + expire_timestamp int64 (after commit_timestamp)
                       v2: as v0
                       v3: offset int64, leader_epoch int32, metadata string, commit_timestamp
                       v4: v3, flexible
                       Kafka writes v1 when the commit carries an explicit retention
                       (expire timestamp), otherwise v3; so do we.
    GroupMetadataValue protocol_type string, generation int32, protocol string?, leader string?,
                       current_state_timestamp int64 (v2+), members array of:
                         member_id string, group_instance_id string? (v3+), client_id string,
                         client_host string, rebalance_timeout int32 (v1+),
                         session_timeout int32, subscription bytes, assignment bytes
                       v4 is the flexible form of v3. Kafka writes v3; so do we.

`partition_for_group` is Kafka's `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`.
All functions here are pure; any caller may use them. Decoding raises `RecordFormatError` on
malformed input, which stays inside the coordinator layer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY = 1
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3
MAX_OFFSET_COMMIT_VALUE_VERSION = 4
MAX_GROUP_METADATA_VALUE_VERSION = 4
FIRST_FLEXIBLE_VALUE_VERSION = 4


class RecordFormatError(ValueError):
    """A `__consumer_offsets` key or value that does not parse."""


def java_string_hash(s: str) -> int:
    """Java's `String.hashCode` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, num_partitions: int) -> int:
    """The `__consumer_offsets` partition that holds `group_id`.

    Kafka's `Utils.abs(groupId.hashCode) % n`, where `Utils.abs(h)` is `h & 0x7fffffff`."""
    return (java_string_hash(group_id) & 0x7FFFFFFF) % num_partitions


# --- keys and values --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    offset: int
    metadata: str
    commit_timestamp_ms: int
    leader_epoch: int = -1
    expire_timestamp_ms: int = -1  # -1: none (only v1 stores it)


@dataclass(frozen=True, slots=True)
class MemberMetadataValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp_ms: int = -1
    members: tuple[MemberMetadataValue, ...] = field(default_factory=tuple)


# --- primitive writer and reader ---------------------------------------------------------------


class _Writer:
    __slots__ = ("buf", "flexible")

    def __init__(self, flexible: bool = False) -> None:
        self.buf = bytearray()
        self.flexible = flexible

    def int16(self, v: int) -> None:
        self.buf += struct.pack(">h", v)

    def int32(self, v: int) -> None:
        self.buf += struct.pack(">i", v)

    def int64(self, v: int) -> None:
        self.buf += struct.pack(">q", v)

    def uvarint(self, v: int) -> None:
        while v >= 0x80:
            self.buf.append((v & 0x7F) | 0x80)
            v >>= 7
        self.buf.append(v)

    def string(self, s: str | None) -> None:
        if s is None:
            if self.flexible:
                self.uvarint(0)
            else:
                self.int16(-1)
            return
        b = s.encode("utf-8")
        if self.flexible:
            self.uvarint(len(b) + 1)
        else:
            if len(b) > 0x7FFF:
                raise RecordFormatError("string longer than 32767 bytes")
            self.int16(len(b))
        self.buf += b

    def bytes_(self, b: bytes) -> None:
        if self.flexible:
            self.uvarint(len(b) + 1)
        else:
            self.int32(len(b))
        self.buf += b

    def array_len(self, n: int) -> None:
        if self.flexible:
            self.uvarint(n + 1)
        else:
            self.int32(n)

    def tagged_fields(self) -> None:
        if self.flexible:
            self.uvarint(0)


class _Reader:
    __slots__ = ("data", "flexible", "pos")

    def __init__(self, data: bytes, flexible: bool = False) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.flexible = flexible

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise RecordFormatError("truncated record")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self._take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise RecordFormatError("varint too long")

    def nullable_string(self) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        if n < 0:
            return None
        return bytes(self._take(n)).decode("utf-8")

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise RecordFormatError("null in a non-nullable string")
        return s

    def bytes_(self) -> bytes:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n < 0:
            raise RecordFormatError("null bytes")
        return bytes(self._take(n))

    def array_len(self) -> int:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n < 0 or n > len(self.data) - self.pos:  # every element takes at least one byte
            raise RecordFormatError("bad array length")
        return n

    def skip_tagged_fields(self) -> None:
        if not self.flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise RecordFormatError("trailing bytes")


# --- encoders ------------------------------------------------------------------------------


def encode_offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    w = _Writer()
    w.int16(OFFSET_COMMIT_KEY_VERSION)
    w.string(group)
    w.string(topic)
    w.int32(partition)
    return bytes(w.buf)


def encode_group_metadata_key(group: str) -> bytes:
    w = _Writer()
    w.int16(GROUP_METADATA_KEY_VERSION)
    w.string(group)
    return bytes(w.buf)


def encode_offset_commit_value(value: OffsetCommitValue, version: int | None = None) -> bytes:
    """Kafka's choice when `version` is None: v1 if an expire timestamp is set, else v3."""
    if version is None:
        version = (
            OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY
            if value.expire_timestamp_ms >= 0
            else OFFSET_COMMIT_VALUE_VERSION
        )
    if not 0 <= version <= MAX_OFFSET_COMMIT_VALUE_VERSION:
        raise RecordFormatError(f"OffsetCommitValue version {version}")
    w = _Writer(flexible=version >= FIRST_FLEXIBLE_VALUE_VERSION)
    w.int16(version)
    w.int64(value.offset)
    if version >= 3:
        w.int32(value.leader_epoch)
    w.string(value.metadata)
    w.int64(value.commit_timestamp_ms)
    if version == 1:
        w.int64(value.expire_timestamp_ms)
    w.tagged_fields()
    return bytes(w.buf)


def encode_group_metadata_value(
    value: GroupMetadataValue, version: int = GROUP_METADATA_VALUE_VERSION
) -> bytes:
    if not 0 <= version <= MAX_GROUP_METADATA_VALUE_VERSION:
        raise RecordFormatError(f"GroupMetadataValue version {version}")
    w = _Writer(flexible=version >= FIRST_FLEXIBLE_VALUE_VERSION)
    w.int16(version)
    w.string(value.protocol_type)
    w.int32(value.generation)
    w.string(value.protocol)
    w.string(value.leader)
    if version >= 2:
        w.int64(value.current_state_timestamp_ms)
    w.array_len(len(value.members))
    for m in value.members:
        w.string(m.member_id)
        if version >= 3:
            w.string(m.group_instance_id)
        w.string(m.client_id)
        w.string(m.client_host)
        if version >= 1:
            w.int32(m.rebalance_timeout_ms)
        w.int32(m.session_timeout_ms)
        w.bytes_(m.subscription)
        w.bytes_(m.assignment)
        w.tagged_fields()
    w.tagged_fields()
    return bytes(w.buf)


# --- decoders ------------------------------------------------------------------------------


def decode_key(key: bytes) -> OffsetCommitKey | GroupMetadataKey:
    r = _Reader(key)
    version = r.int16()
    if version in (0, 1):
        k: OffsetCommitKey | GroupMetadataKey = OffsetCommitKey(r.string(), r.string(), r.int32())
    elif version == GROUP_METADATA_KEY_VERSION:
        k = GroupMetadataKey(r.string())
    else:
        raise RecordFormatError(f"unknown __consumer_offsets key version {version}")
    r.done()
    return k


def decode_offset_commit_value(value: bytes) -> OffsetCommitValue:
    version = _Reader(value).int16()
    if not 0 <= version <= MAX_OFFSET_COMMIT_VALUE_VERSION:
        raise RecordFormatError(f"OffsetCommitValue version {version}")
    r = _Reader(value, flexible=version >= FIRST_FLEXIBLE_VALUE_VERSION)
    r.int16()
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.string()
    commit_ts = r.int64()
    expire_ts = r.int64() if version == 1 else -1
    r.skip_tagged_fields()
    r.done()
    return OffsetCommitValue(offset, metadata, commit_ts, leader_epoch, expire_ts)


def decode_group_metadata_value(value: bytes) -> GroupMetadataValue:
    version = _Reader(value).int16()
    if not 0 <= version <= MAX_GROUP_METADATA_VALUE_VERSION:
        raise RecordFormatError(f"GroupMetadataValue version {version}")
    r = _Reader(value, flexible=version >= FIRST_FLEXIBLE_VALUE_VERSION)
    r.int16()
    protocol_type = r.string()
    generation = r.int32()
    protocol = r.nullable_string()
    leader = r.nullable_string()
    state_ts = r.int64() if version >= 2 else -1
    members = []
    for _ in range(r.array_len()):
        member_id = r.string()
        instance_id = r.nullable_string() if version >= 3 else None
        client_id = r.string()
        client_host = r.string()
        rebalance_timeout = r.int32() if version >= 1 else -1
        session_timeout = r.int32()
        subscription = r.bytes_()
        assignment = r.bytes_()
        r.skip_tagged_fields()
        if version == 0:
            rebalance_timeout = session_timeout  # as Kafka: v0 had no rebalance timeout
        members.append(
            MemberMetadataValue(
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            )
        )
    r.skip_tagged_fields()
    r.done()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, state_ts, tuple(members))


def parse_consumer_subscription_topics(metadata: bytes) -> frozenset[str] | None:
    """Topics of a `consumer` protocol subscription (ConsumerProtocolSubscription, any version:
    int16 version, then an array of topic strings first), or None when it does not parse."""
    try:
        r = _Reader(metadata)
        r.int16()
        return frozenset(r.string() for _ in range(r.array_len()))
    except (RecordFormatError, UnicodeDecodeError, struct.error):
        return None
