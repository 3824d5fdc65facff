"""RecordBatch v2: header view, CRC validation, in-place patching, codecs, record iteration."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from odradek.protocol import records
from odradek.protocol.compression import DecompressionError, compress, decompress
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import Compression

CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]


def sample(n=3, ts=1_700_000_000_000):
    return [(f"k{i}".encode(), f"value-{i}".encode() * 10, [("h", b"v")], ts + i) for i in range(n)]


@pytest.mark.parametrize("codec", CODECS)
def test_built_batch_validates_and_iterates_back(codec):
    batch = records.build_batch(sample(5), compression=codec, producer_id=7, producer_epoch=1, base_sequence=10)
    header = records.validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    assert header.size_bytes == len(batch)
    assert header.records_count == 5 and header.last_offset_delta == 4
    assert header.compression == codec
    assert (header.producer_id, header.producer_epoch, header.base_sequence, header.last_sequence) == (7, 1, 10, 14)
    got = list(records.iter_records(batch))
    assert [(r.key, r.value, r.headers, r.timestamp) for r in got] == [
        (k, v, tuple(h), t) for k, v, h, t in sample(5)
    ]
    assert [r.offset for r in got] == [0, 1, 2, 3, 4]


def test_patching_offset_and_epoch_keeps_the_crc_valid():
    batch = bytearray(records.build_batch(sample()))
    records.patch_base_offset(batch, 0, 1234)
    records.patch_leader_epoch(batch, 0, 9)
    header = records.validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    assert header.base_offset == 1234 and header.partition_leader_epoch == 9
    assert [r.offset for r in records.iter_records(batch)] == [1234, 1235, 1236]


def test_log_append_time_sets_the_attribute_and_rewrites_the_crc():
    batch = bytearray(records.build_batch(sample()))
    records.set_log_append_time(batch, 0, len(batch), 42)
    header = records.validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    assert header.timestamp_type == records.TimestampType.LOG_APPEND_TIME and header.max_timestamp == 42
    assert {r.timestamp for r in records.iter_records(batch)} == {42}


@given(position=st.integers(min_value=records.ATTRIBUTES_OFFSET, max_value=200), flip=st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_any_flipped_byte_in_the_checksummed_region_is_caught(position, flip):
    batch = bytearray(records.build_batch(sample()))
    position %= len(batch)
    if position < records.ATTRIBUTES_OFFSET:
        position = records.ATTRIBUTES_OFFSET
    batch[position] ^= flip
    result = records.validate_batch(batch, 0, len(batch))
    assert isinstance(result, records.BatchError)


def test_validation_errors_use_kafkas_codes():
    batch = bytearray(records.build_batch(sample()))
    assert records.validate_batch(batch[:40], 0, 40).error is ErrorCode.corrupt_message
    short = records.validate_batch(batch[:-1], 0, len(batch) - 1)
    assert short.error is ErrorCode.corrupt_message
    old = bytearray(batch)
    old[records.MAGIC_OFFSET] = 1
    assert records.validate_batch(old, 0, len(old)).error is ErrorCode.unsupported_for_message_format
    negative = bytearray(batch)
    struct.pack_into(">i", negative, records.LENGTH_OFFSET, -5)
    assert records.validate_batch(negative, 0, len(negative)).error is ErrorCode.corrupt_message


def test_iter_headers_stops_at_a_partial_batch():
    one = records.build_batch(sample(2))
    two = records.build_batch(sample(3), base_offset=2)
    data = one + two + two[:30]
    headers = list(records.iter_headers(data))
    assert [h.base_offset for h in headers] == [0, 2]
    assert headers[1].position == len(one)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_decompression_is_bounded(codec):
    blob = compress(codec, b"\0" * 1_000_000)
    assert len(decompress(codec, blob, 1_000_000)) == 1_000_000
    with pytest.raises(DecompressionError):
        decompress(codec, blob, 100_000)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_garbage_does_not_decompress(codec):
    with pytest.raises(DecompressionError):
        decompress(codec, b"\x01\x02garbage" * 10, 1_000_000)


def test_raw_snappy_without_xerial_framing_is_accepted():
    import cramjam

    raw = bytes(cramjam.snappy.compress_raw(b"hello" * 100))
    assert decompress(Compression.SNAPPY, raw, 10_000) == b"hello" * 100


@pytest.mark.parametrize("source", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_recompress_keeps_every_header_field_and_record(source, target):
    original = records.build_batch(
        [(b"k", b"v" * 500, [("h", b"1")], 1_700_000_000_000), (None, None, [], 1_700_000_000_005)],
        compression=source, producer_id=42, producer_epoch=3, base_sequence=7, transactional=True)
    out = records.recompress(original, target, 5 if target != Compression.SNAPPY else None, 1 << 20)
    header = records.validate_batch(out, 0, len(out))
    assert isinstance(header, records.BatchHeader) and header.size_bytes == len(out)
    before = records.read_header(original, 0)
    assert header.compression == target
    for field in ("base_offset", "partition_leader_epoch", "last_offset_delta", "base_timestamp", "max_timestamp",
                  "producer_id", "producer_epoch", "base_sequence", "records_count", "is_transactional",
                  "timestamp_type"):
        assert getattr(header, field) == getattr(before, field), field
    assert list(records.iter_records(out)) == list(records.iter_records(original))


def test_recompress_is_bounded_by_the_decompressed_size():
    bomb = records.build_batch([(b"k", b"\0" * 4_000_000, [], 1_700_000_000_000)], compression=Compression.ZSTD)
    assert len(bomb) < 4096
    with pytest.raises(DecompressionError):
        records.recompress(bomb, Compression.LZ4, None, 1 << 20)


@pytest.mark.parametrize("codec,level", [(Compression.GZIP, -1), (Compression.GZIP, 1), (Compression.LZ4, 1),
                                         (Compression.LZ4, 17), (Compression.ZSTD, -5), (Compression.ZSTD, 22)])
def test_compress_takes_kafkas_levels(codec, level):
    data = bytes(range(256)) * 200
    assert decompress(codec, compress(codec, data, level), len(data)) == data
