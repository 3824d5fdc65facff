"""`__transaction_state` record formats: keys and values exactly as Kafka writes them.

Key (TransactionLogKey, key version 0, not flexible):
    version             int16   0
    transactional_id    string  int16 length + UTF-8
Value (TransactionLogValue, versions 0-1; v1 is flexible). Null value: tombstone (the
transactional id expired and is gone).
    version                         int16   0, or 1 when the client uses transaction version 2
    producer_id                     int64
    producer_epoch                  int16
    transaction_timeout_ms          int32
    transaction_status              int8    TransactionState id (Empty 0 ... PrepareEpochFence 7)
    transaction_partitions          nullable array (null for Empty) of:
        topic                       string
        partition_ids               array of int32
        (v1: struct tagged fields)
    transaction_last_update_timestamp_ms  int64
    transaction_start_timestamp_ms        int64   -1 when no transaction is open
    (v1: tagged fields, written only when not default, in tag order:
        tag 0 previous_producer_id int64 (default -1)
        tag 1 next_producer_id int64 (default -1)
        tag 2 client_transaction_version int16 (default 0))
v0 strings: int16 length; arrays: int32 count. v1 (flexible): unsigned-varint length + 1
(0 = null), arrays count + 1, each struct ends with its tagged fields.

Kafka groups the partitions by topic in hash order; we write topics sorted by name and each
topic's partitions ascending (any order decodes the same).
`partition_for_transactional_id` is Kafka's `Utils.abs(transactionalId.hashCode) % n`.
All functions here are pure; any caller may use them. Decoding raises `RecordFormatError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from odradek.coordinator.records import (
    RecordFormatError,
    _Reader,
    _Writer,
    partition_for_group,
)

TRANSACTION_LOG_KEY_VERSION = 0
MAX_TRANSACTION_LOG_VALUE_VERSION = 1
FIRST_FLEXIBLE_VALUE_VERSION = 1

TAG_PREVIOUS_PRODUCER_ID = 0
TAG_NEXT_PRODUCER_ID = 1
TAG_CLIENT_TRANSACTION_VERSION = 2

TopicPartition = tuple[str, int]


def partition_for_transactional_id(transactional_id: str, num_partitions: int) -> int:
    """The `__transaction_state` partition that holds `transactional_id`."""
    return partition_for_group(transactional_id, num_partitions)


@dataclass(frozen=True, slots=True)
class TransactionLogValue:
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_status: int
    # ((topic, (partition, ...)), ...) or None (Kafka writes null for Empty)
    transaction_partitions: tuple[tuple[str, tuple[int, ...]], ...] | None
    last_update_timestamp_ms: int
    start_timestamp_ms: int
    previous_producer_id: int = -1
    next_producer_id: int = -1
    client_transaction_version: int = 0

    @staticmethod
    def group_partitions(
        partitions: Iterable[TopicPartition],
    ) -> tuple[tuple[str, tuple[int, ...]], ...]:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        return tuple((t, tuple(sorted(ps))) for t, ps in sorted(by_topic.items()))

    def topic_partitions(self) -> frozenset[TopicPartition]:
        return frozenset((t, p) for t, ps in (self.transaction_partitions or ()) for p in ps)


def encode_transaction_log_key(transactional_id: str) -> bytes:
    w = _Writer()
    w.int16(TRANSACTION_LOG_KEY_VERSION)
    w.string(transactional_id)
    return bytes(w.buf)


def decode_transaction_log_key(key: bytes) -> str:
    r = _Reader(key)
    version = r.int16()
    if version != TRANSACTION_LOG_KEY_VERSION:
        raise RecordFormatError(f"unknown __transaction_state key version {version}")
    transactional_id = r.string()
    r.done()
    return transactional_id


def encode_transaction_log_value(value: TransactionLogValue, version: int) -> bytes:
    if not 0 <= version <= MAX_TRANSACTION_LOG_VALUE_VERSION:
        raise RecordFormatError(f"TransactionLogValue version {version}")
    flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION
    w = _Writer(flexible=flexible)
    w.int16(version)
    w.int64(value.producer_id)
    w.int16(value.producer_epoch)
    w.int32(value.transaction_timeout_ms)
    w.buf += struct.pack(">b", value.transaction_status)
    if value.transaction_partitions is None:
        if flexible:
            w.uvarint(0)
        else:
            w.int32(-1)
    else:
        w.array_len(len(value.transaction_partitions))
        for topic, partition_ids in value.transaction_partitions:
            w.string(topic)
            w.array_len(len(partition_ids))
            for p in partition_ids:
                w.int32(p)
            w.tagged_fields()
    w.int64(value.last_update_timestamp_ms)
    w.int64(value.start_timestamp_ms)
    if flexible:
        tagged: list[tuple[int, bytes]] = []
        if value.previous_producer_id != -1:
            tagged.append((TAG_PREVIOUS_PRODUCER_ID, struct.pack(">q", value.previous_producer_id)))
        if value.next_producer_id != -1:
            tagged.append((TAG_NEXT_PRODUCER_ID, struct.pack(">q", value.next_producer_id)))
        if value.client_transaction_version != 0:
            tagged.append(
                (
                    TAG_CLIENT_TRANSACTION_VERSION,
                    struct.pack(">h", value.client_transaction_version),
                )
            )
        w.uvarint(len(tagged))
        for tag, data in tagged:
            w.uvarint(tag)
            w.uvarint(len(data))
            w.buf += data
    return bytes(w.buf)


def decode_transaction_log_value(value: bytes) -> tuple[int, TransactionLogValue]:
    """Returns (version, value)."""
    version = _Reader(value).int16()
    if not 0 <= version <= MAX_TRANSACTION_LOG_VALUE_VERSION:
        raise RecordFormatError(f"TransactionLogValue version {version}")
    flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION
    r = _Reader(value, flexible=flexible)
    r.int16()
    producer_id = r.int64()
    producer_epoch = r.int16()
    timeout_ms = r.int32()
    status = struct.unpack(">b", r._take(1))[0]
    count = r.uvarint() - 1 if flexible else r.int32()
    partitions: tuple[tuple[str, tuple[int, ...]], ...] | None
    if count < 0:
        partitions = None
    else:
        if count > len(r.data) - r.pos:
            raise RecordFormatError("bad array length")
        topics = []
        for _ in range(count):
            topic = r.string()
            ids = tuple(r.int32() for _ in range(r.array_len()))
            r.skip_tagged_fields()
            topics.append((topic, ids))
        partitions = tuple(topics)
    last_update_ms = r.int64()
    start_ms = r.int64()
    previous_producer_id = next_producer_id = -1
    client_version = 0
    if flexible:
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            data = bytes(r._take(r.uvarint()))
            if tag == TAG_PREVIOUS_PRODUCER_ID and len(data) == 8:
                previous_producer_id = struct.unpack(">q", data)[0]
            elif tag == TAG_NEXT_PRODUCER_ID and len(data) == 8:
                next_producer_id = struct.unpack(">q", data)[0]
            elif tag == TAG_CLIENT_TRANSACTION_VERSION and len(data) == 2:
                client_version = struct.unpack(">h", data)[0]
            elif tag in (
                TAG_PREVIOUS_PRODUCER_ID,
                TAG_NEXT_PRODUCER_ID,
                TAG_CLIENT_TRANSACTION_VERSION,
            ):
                raise RecordFormatError(f"tagged field {tag} has {len(data)} bytes")
            # unknown tags are skipped, as Kafka does
    r.done()
    return version, TransactionLogValue(
        producer_id,
        producer_epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms,
        start_ms,
        previous_producer_id,
        next_producer_id,
        client_version,
    )
