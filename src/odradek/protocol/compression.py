"""Kafka's compression codecs for record batches, through cramjam (one maintained Rust binding).

Kafka compresses the records section of a batch as one block:
- gzip: a gzip stream.
- snappy: the xerial framing that Kafka's Java client writes (`\\x82SNAPPY\\x00`, version,
  compatible version, then blocks of [int32 length][raw snappy]); librdkafka reads and writes it.
  Raw snappy without the framing is accepted on decompression too.
- lz4: the LZ4 frame format.
- zstd: a zstd frame.

Decompression is bounded by `max_bytes` so a small batch cannot expand without limit in the broker
(compaction, ListOffsets by timestamp are the only broker paths that decompress).
"""

from __future__ import annotations

import struct

import cramjam


class Compression:
    """Codec ids: bits 0-2 of a RecordBatch's attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_BYTES = 32 * 1024
_INT32 = struct.Struct(">i")

# Topic-config names (compression.type); "producer" keeps the producer's codec.
TOPIC_CODECS = {"uncompressed": Compression.NONE, "gzip": Compression.GZIP, "snappy": Compression.SNAPPY,
                "lz4": Compression.LZ4, "zstd": Compression.ZSTD}

NAMES = {"none": Compression.NONE, "gzip": Compression.GZIP, "snappy": Compression.SNAPPY,
         "lz4": Compression.LZ4, "zstd": Compression.ZSTD}


class DecompressionError(ValueError):
    """The compressed block is malformed or would expand past the allowed size."""


# Kafka's compression.*.level defaults (KIP-390); gzip's -1 is zlib's default, 6.
DEFAULT_LEVELS = {Compression.GZIP: 6, Compression.LZ4: 9, Compression.ZSTD: 3}


def compress(codec: int, data: bytes | memoryview, level: int | None = None) -> bytes:
    """Compress one records section. `level` (gzip, lz4, zstd; -1 for gzip's default) as
    Kafka's compression.*.level; None keeps cramjam's own defaults."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        if level is not None and level < 0:
            level = DEFAULT_LEVELS[Compression.GZIP]
        return bytes(cramjam.gzip.compress(data) if level is None else cramjam.gzip.compress(data, level=level))
    if codec == Compression.SNAPPY:
        out = bytearray(_XERIAL_HEADER)
        view = memoryview(data)
        for start in range(0, len(view), _XERIAL_BLOCK_BYTES):
            block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_BYTES]))
            out += _INT32.pack(len(block)) + block
        return bytes(out)
    if codec == Compression.LZ4:
        return bytes(cramjam.lz4.compress(data) if level is None else cramjam.lz4.compress(data, level=level))
    if codec == Compression.ZSTD:
        return bytes(cramjam.zstd.compress(data) if level is None else cramjam.zstd.compress(data, level=level))
    raise ValueError(f"unknown compression codec {codec}")


def decompress(codec: int, data: bytes | memoryview, max_bytes: int) -> bytes:
    """Decompress one block; raise DecompressionError if malformed or larger than `max_bytes`."""
    try:
        if codec == Compression.NONE:
            out = bytes(data)
        elif codec == Compression.GZIP:
            out = _bounded_stream(cramjam.gzip.Decompressor(), data, max_bytes)
        elif codec == Compression.SNAPPY:
            out = _snappy_decompress(bytes(data), max_bytes)
        elif codec == Compression.LZ4:
            out = _bounded_stream(cramjam.lz4.Decompressor(), data, max_bytes)
        elif codec == Compression.ZSTD:
            out = _bounded_stream(cramjam.zstd.Decompressor(), data, max_bytes)
        else:
            raise DecompressionError(f"unknown compression codec {codec}")
    except DecompressionError:
        raise
    except Exception as exc:  # cramjam raises its own error types per codec
        raise DecompressionError(str(exc)) from exc
    if len(out) > max_bytes:
        raise DecompressionError(f"decompressed size exceeds {max_bytes} bytes")
    return out


def _bounded_stream(decompressor, data: bytes | memoryview, max_bytes: int) -> bytes:
    # Feed in slices so that a bomb is noticed after at most one slice's expansion.
    view = memoryview(data)
    total = 0
    for start in range(0, len(view), 64 * 1024):
        decompressor.decompress(bytes(view[start : start + 64 * 1024]))
        total = len(decompressor)
        if total > max_bytes:
            raise DecompressionError(f"decompressed size exceeds {max_bytes} bytes")
    return bytes(decompressor.finish())


def _snappy_decompress(data: bytes, max_bytes: int) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        if cramjam.snappy.decompress_raw_len(data) > max_bytes:
            raise DecompressionError(f"decompressed size exceeds {max_bytes} bytes")
        return bytes(cramjam.snappy.decompress_raw(data))
    position = len(_XERIAL_HEADER)
    parts: list[bytes] = []
    total = 0
    while position < len(data):
        if position + 4 > len(data):
            raise DecompressionError("truncated xerial snappy block header")
        (length,) = _INT32.unpack_from(data, position)
        position += 4
        if length < 0 or position + length > len(data):
            raise DecompressionError("truncated xerial snappy block")
        block = data[position : position + length]
        total += cramjam.snappy.decompress_raw_len(block)
        if total > max_bytes:
            raise DecompressionError(f"decompressed size exceeds {max_bytes} bytes")
        parts.append(bytes(cramjam.snappy.decompress_raw(block)))
        position += length
    return b"".join(parts)
