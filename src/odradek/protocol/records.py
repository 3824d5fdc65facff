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

The broker does not parse records on the produce or fetch path: it validates the header and the
CRC, patches `base_offset` and `partition_leader_epoch` in place (neither is covered by the CRC),
and writes the batch as received. Only a topic's own settings make it look inside: a compacted
topic checks that every record has a key, and a topic `compression.type` other than the
producer's recompresses the records section (`recompress`). This module is pure: bytes in, values out; no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c as _crc32c

from odradek.protocol.compression import Compression, compress, decompress
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


def recompress(batch: bytes | bytearray | memoryview, codec: int, level: int | None,
               max_decompressed_bytes: int) -> bytearray:
    """The batch with its records section recompressed with `codec` (a topic's compression.type
    other than the producer's): every header field is kept but the codec bits of the
    attributes, the length and the CRC; the records are the same bytes once decompressed.
    Raises DecompressionError (a ValueError) when the records do not decompress within
    `max_decompressed_bytes`."""
    header = read_header(batch, 0)
    section = memoryview(batch)[RECORDS_OFFSET:header.size_bytes]
    payload = compress(codec, decompress(header.compression, section, max_decompressed_bytes), level)
    out = bytearray(batch[:RECORDS_OFFSET]) + payload
    _INT16.pack_into(out, ATTRIBUTES_OFFSET, (header.attributes & ~COMPRESSION_MASK) | codec)
    _INT32.pack_into(out, LENGTH_OFFSET, len(out) - LOG_OVERHEAD)
    _UINT32.pack_into(out, CRC_OFFSET, compute_crc(out, 0, len(out)))
    return out


# --- Records inside a batch ------------------------------------------------------------------
# Only for the places that must look at records (the CLI, ListOffsets by timestamp, compaction,
# tests); never on the produce or fetch path.
#
# One record (v2), all varints zigzag-encoded:
#   length varint | attributes int8 | timestamp_delta varlong | offset_delta varint
#   | key_length varint (-1 = null) | key | value_length varint (-1 = null) | value
#   | header_count varint | per header: key_length varint, key (utf-8), value_length varint, value


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _write_varint(out: bytearray, value: int) -> None:
    value = (value << 1) ^ (value >> 63)  # zigzag
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(buf: bytes | memoryview, position: int, end: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        if position >= end or shift > 63:
            raise ValueError("malformed varint")
        byte = buf[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7


def _read_bytes(buf: bytes | memoryview, position: int, end: int) -> tuple[bytes | None, int]:
    length, position = _read_varint(buf, position, end)
    if length < 0:
        return None, position
    if position + length > end:
        raise ValueError("record field runs past the end of the record")
    return bytes(buf[position : position + length]), position + length


def encode_records(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    base_timestamp: int,
) -> bytes:
    """Encode (key, value, headers, timestamp) tuples as the records section of a batch."""
    out = bytearray()
    body = bytearray()
    for offset_delta, (key, value, headers, timestamp) in enumerate(records):
        body.clear()
        body.append(0)  # attributes: unused
        _write_varint(body, timestamp - base_timestamp)
        _write_varint(body, offset_delta)
        for field in (key, value):
            if field is None:
                _write_varint(body, -1)
            else:
                _write_varint(body, len(field))
                body += field
        _write_varint(body, len(headers))
        for header_key, header_value in headers:
            encoded_key = header_key.encode()
            _write_varint(body, len(encoded_key))
            body += encoded_key
            if header_value is None:
                _write_varint(body, -1)
            else:
                _write_varint(body, len(header_value))
                body += header_value
        _write_varint(out, len(body))
        out += body
    return bytes(out)


def build_batch(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    *,
    base_offset: int = 0,
    compression: int = Compression.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    transactional: bool = False,
    log_append_time: bool = False,
) -> bytes:
    """Build one RecordBatch v2 from (key, value, headers, timestamp_ms) tuples, CRC included."""
    if not records:
        raise ValueError("a batch holds at least one record")
    timestamps = [r[3] for r in records]
    base_timestamp = min(timestamps)
    max_timestamp = max(timestamps)
    payload = compress(compression, encode_records(records, base_timestamp))
    attributes = compression | (TRANSACTIONAL_MASK if transactional else 0)
    attributes |= TIMESTAMP_TYPE_MASK if log_append_time else 0
    batch = bytearray(RECORDS_OFFSET) + payload
    _HEADER.pack_into(
        batch, 0, base_offset, len(batch) - LOG_OVERHEAD, partition_leader_epoch, CURRENT_MAGIC, 0,
        attributes, len(records) - 1, base_timestamp, max_timestamp, producer_id, producer_epoch,
        base_sequence, len(records),
    )
    _UINT32.pack_into(batch, CRC_OFFSET, compute_crc(batch, 0, len(batch)))
    return bytes(batch)


# A batch's records may not expand beyond this when the broker decompresses them.
MAX_DECOMPRESSED_BATCH_BYTES = 256 * 1024 * 1024


def iter_records(
    batch: bytes | memoryview, max_decompressed_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES
) -> Iterator[Record]:
    """The records of one complete batch (any codec). Raises ValueError on malformed data."""
    header = read_header(batch, 0)
    size = header.size_bytes
    if header.magic != CURRENT_MAGIC or size > len(batch):
        raise ValueError("not a complete magic-2 record batch")
    section = memoryview(batch)[RECORDS_OFFSET:size]
    if header.compression != Compression.NONE:
        section = memoryview(decompress(header.compression, section, max_decompressed_bytes))
    log_append_time = header.timestamp_type == TimestampType.LOG_APPEND_TIME
    position, end = 0, len(section)
    for _ in range(header.records_count):
        length, position = _read_varint(section, position, end)
        record_end = position + length
        if length < 0 or record_end > end:
            raise ValueError("record runs past the end of the batch")
        position += 1  # attributes
        timestamp_delta, position = _read_varint(section, position, record_end)
        offset_delta, position = _read_varint(section, position, record_end)
        key, position = _read_bytes(section, position, record_end)
        value, position = _read_bytes(section, position, record_end)
        header_count, position = _read_varint(section, position, record_end)
        if header_count < 0 or header_count > length:
            raise ValueError("invalid header count")
        headers = []
        for _ in range(header_count):
            header_key, position = _read_bytes(section, position, record_end)
            header_value, position = _read_bytes(section, position, record_end)
            if header_key is None:
                raise ValueError("null header key")
            headers.append((header_key.decode("utf-8", "replace"), header_value))
        timestamp = header.max_timestamp if log_append_time else header.base_timestamp + timestamp_delta
        yield Record(header.base_offset + offset_delta, timestamp, key, value, tuple(headers))
        position = record_end


# --- Control records: end-transaction markers ------------------------------------------------
# A control batch (attributes: transactional | control) holds exactly one record whose key and
# value are (Kafka's ControlRecordType / EndTransactionMarker):
#   key    version int16 (0) | type int16 (0 = ABORT, 1 = COMMIT)
#   value  version int16 (0) | coordinator_epoch int32
# Only the transaction coordinator's WriteTxnMarkers path writes them (Log.append_control_marker);
# clients may not produce control batches.

CONTROL_RECORD_KEY_VERSION = 0
END_TXN_MARKER_VALUE_VERSION = 0


class ControlRecordType:
    ABORT = 0
    COMMIT = 1


_CONTROL_KEY = struct.Struct(">hh")
_END_TXN_VALUE = struct.Struct(">hi")


@dataclass(frozen=True, slots=True)
class EndTransactionMarker:
    """The decoded record of an end-transaction control batch."""

    commit: bool
    coordinator_epoch: int


def build_end_txn_marker(
    *,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    timestamp_ms: int,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
) -> bytes:
    """One control batch holding an end-transaction marker, CRC included (Kafka's
    MemoryRecords.withEndTransactionMarker: base sequence -1, one record at offset delta 0)."""
    key = _CONTROL_KEY.pack(CONTROL_RECORD_KEY_VERSION, ControlRecordType.COMMIT if commit else ControlRecordType.ABORT)
    value = _END_TXN_VALUE.pack(END_TXN_MARKER_VALUE_VERSION, coordinator_epoch)
    payload = encode_records([(key, value, [], timestamp_ms)], timestamp_ms)
    batch = bytearray(RECORDS_OFFSET) + payload
    _HEADER.pack_into(
        batch, 0, base_offset, len(batch) - LOG_OVERHEAD, partition_leader_epoch, CURRENT_MAGIC, 0,
        TRANSACTIONAL_MASK | CONTROL_MASK, 0, timestamp_ms, timestamp_ms, producer_id, producer_epoch,
        NO_SEQUENCE, 1,
    )
    _UINT32.pack_into(batch, CRC_OFFSET, compute_crc(batch, 0, len(batch)))
    return bytes(batch)


def control_record_type(key: bytes | None) -> int | None:
    """The type of a control record from its key (None when the key is too short to hold one)."""
    if key is None or len(key) < _CONTROL_KEY.size:
        return None
    return _CONTROL_KEY.unpack_from(key, 0)[1]


def parse_end_txn_marker(batch: bytes | memoryview) -> EndTransactionMarker | None:
    """The marker of a complete control batch, or None when it is not an end-transaction marker.

    Raises ValueError on malformed records (the caller validated the batch's CRC)."""
    header = read_header(batch, 0)
    if not header.is_control:
        return None
    for record in iter_records(batch):
        record_type = control_record_type(record.key)
        if record_type not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
            return None
        if record.value is None or len(record.value) < _END_TXN_VALUE.size:
            raise ValueError("end-transaction marker value too short")
        _, coordinator_epoch = _END_TXN_VALUE.unpack_from(record.value, 0)
        return EndTransactionMarker(record_type == ControlRecordType.COMMIT, coordinator_epoch)
    return None
