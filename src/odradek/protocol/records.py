"""RecordBatch v2 (magic 2): a view over the bytes of a batch, exactly as on the wire and on disk.

Layout of one batch (big-endian), offsets in bytes from the batch start:

    0   base_offset             int64   offset of the first record
    8   batch_length            int32   bytes after this field (so the batch is batch_length + 12)
    12  partition_leader_epoch  int32   set by the leader on append
    16  magic                   int8    2
    17  crc                     uint32  CRC-32C of bytes [21, end)
    21  attributes              int16   bits 0-2 compression, 3 timestamp type (1 = LogAppendTime),
                                        4 transactional, 5 control, 6 has delete horizon
    23  last_offset_delta       int32   last record's offset minus base_offset
    27  base_timestamp          int64
    35  max_timestamp           int64
    43  producer_id             int64   -1 when not idempotent
    51  producer_epoch          int16
    53  base_sequence           int32   -1 when not idempotent
    57  records_count           int32
    61  records                         varint-encoded records, possibly compressed as one block

The broker never parses records on the produce or fetch path: it validates the header and the CRC,
patches `base_offset` and `partition_leader_epoch` in place (neither is covered by the CRC), and
writes the batch as received. This module is pure: bytes in, values out; no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

import crc32c as _crc32c

from odradek.protocol.errors import ErrorCode

# Byte offsets of the header fields.
BASE_OFFSET_OFFSET = 0
LENGTH_OFFSET = 8
LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
LAST_OFFSET_DELTA_OFFSET = 23
BASE_TIMESTAMP_OFFSET = 27
MAX_TIMESTAMP_OFFSET = 35
PRODUCER_ID_OFFSET = 43
PRODUCER_EPOCH_OFFSET = 51
BASE_SEQUENCE_OFFSET = 53
RECORDS_COUNT_OFFSET = 57
RECORDS_OFFSET = 61

BATCH_HEADER_SIZE = RECORDS_OFFSET
LOG_OVERHEAD = 12  # base_offset + batch_length: the part of a batch that batch_length excludes
CURRENT_MAGIC = 2

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1
NO_PARTITION_LEADER_EPOCH = -1


class Compression:
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class TimestampType:
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


# The fixed header read in one call: from base_offset through records_count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The decoded fixed header of one RecordBatch; `position` is where the batch starts in its buffer."""

    position: int
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size_bytes(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return TimestampType.LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_MASK else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        # Sequences wrap at int32 max, as Kafka's DefaultRecordBatch.incrementSequence.
        return (self.base_sequence + self.last_offset_delta) % (2**31)


def read_header(buf: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Decode the header of the batch at `position`. The caller guarantees 61 bytes are there."""
    return BatchHeader(position, *_HEADER.unpack_from(buf, position))


def compute_crc(buf: bytes | bytearray | memoryview, position: int, size_bytes: int) -> int:
    """CRC-32C of a batch's checksummed region: from attributes to the end of the batch."""
    view = memoryview(buf)[position + ATTRIBUTES_OFFSET : position + size_bytes]
    return _crc32c.crc32c(view)


@dataclass(frozen=True, slots=True)
class BatchError:
    """Why a batch was refused: a Kafka error code and a message for the log and the client."""

    error: ErrorCode
    message: str


def validate_batch(
    buf: bytes | bytearray | memoryview, position: int, available: int
) -> BatchHeader | BatchError:
    """Check one client-sent batch at `position` with `available` bytes from there to the end.

    Checks what the broker can check without touching records: the size fits, magic is 2,
    the CRC matches, the record count agrees with the offset delta. Returns the header or an error.
    """
    if available < BATCH_HEADER_SIZE:
        return BatchError(ErrorCode.corrupt_message, "record batch shorter than its header")
    header = read_header(buf, position)
    if header.magic != CURRENT_MAGIC:
        return BatchError(
            ErrorCode.unsupported_for_message_format,
            f"record batch magic {header.magic} is not supported; only magic 2",
        )
    size = header.size_bytes
    if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD or size > available:
        return BatchError(ErrorCode.corrupt_message, f"record batch length {header.batch_length} is invalid")
    if compute_crc(buf, position, size) != header.crc:
        return BatchError(ErrorCode.corrupt_message, "record batch CRC-32C mismatch")
    if header.last_offset_delta < 0 or header.records_count < 0:
        return BatchError(ErrorCode.corrupt_message, "negative offset delta or record count")
    if header.records_count != header.last_offset_delta + 1 and not header.is_control:
        return BatchError(
            ErrorCode.invalid_record,
            f"record count {header.records_count} disagrees with last offset delta "
            f"{header.last_offset_delta}",
        )
    return header


def iter_headers(buf: bytes | bytearray | memoryview, position: int = 0, end: int | None = None) -> Iterator[BatchHeader]:
    """Headers of the complete batches in `buf[position:end]`; stops at the first incomplete one.

    Does not check CRCs (see `validate_batch`); used on data the log already validated.
    """
    if end is None:
        end = len(buf)
    while end - position >= BATCH_HEADER_SIZE:
        header = read_header(buf, position)
        size = header.size_bytes
        if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD or position + size > end:
            return
        yield header
        position += size


def patch_base_offset(buf: bytearray | memoryview, position: int, base_offset: int) -> None:
    """Set the batch's base offset in place (not covered by the CRC)."""
    _INT64.pack_into(buf, position + BASE_OFFSET_OFFSET, base_offset)


def patch_leader_epoch(buf: bytearray | memoryview, position: int, leader_epoch: int) -> None:
    """Set the batch's partition leader epoch in place (not covered by the CRC)."""
    _INT32.pack_into(buf, position + LEADER_EPOCH_OFFSET, leader_epoch)


def set_log_append_time(buf: bytearray | memoryview, position: int, size_bytes: int, now_ms: int) -> None:
    """Mark the batch LogAppendTime with max_timestamp = now and recompute its CRC.

    Kafka sets the timestamp-type attribute and max timestamp on the batch only; the records keep
    their deltas and clients read every record's timestamp as the batch's max timestamp.
    """
    attributes = _INT16.unpack_from(buf, position + ATTRIBUTES_OFFSET)[0]
    _INT16.pack_into(buf, position + ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_MASK)
    _INT64.pack_into(buf, position + MAX_TIMESTAMP_OFFSET, now_ms)
    _UINT32.pack_into(buf, position + CRC_OFFSET, compute_crc(buf, position, size_bytes))
