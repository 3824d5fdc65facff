"""Bounds check of a request body before kio decodes it.

kio's native reader sizes an array from its declared count before reading the elements, and a
compact count is an unsigned varint it reads up to 35 bits: a 30-byte frame declaring 2^33
elements makes it ask for tens of GiB, and a failed allocation aborts the whole process (Rust
cannot recover from it). So every length and count in a request is checked against the bytes
left in the frame, by walking kio's schema, before kio sees the frame. Python runs per field
here, never per byte: strings, bytes and records are skipped by their length.

Uses kio's schema introspection (`kio.serial._introspect`), which is why kio is pinned below 0.7.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from functools import cache

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)

from odradek.protocol.framing import FrameError

_FIXED_SIZE_BYTES = {
    "bool": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "int64": 8, "float64": 8,
    "uuid": 16, "error_code": 2, "datetime_i64": 8, "timedelta_i32": 4, "timedelta_i64": 8,
}
_VARIABLE_TYPES = {"string", "bytes", "records"}
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_MAX_UVARINT = 2**32 - 1  # Kafka's unsigned varints are 32-bit


def check_request_bounds(request_class: type, frame: bytes, position: int) -> None:
    """Raise FrameError unless every length and count in the body fits in the frame.

    A passing frame may still be malformed (kio then raises); what this rules out is a declared
    size that would make the decoder allocate beyond the frame's own size.
    """
    _check_entity(request_class, frame, position, len(frame))


@cache
def _plan(entity_type: type) -> tuple[tuple, dict]:
    """(fields in wire order, tagged fields by tag), each as (kind, kafka type, nested, optional);
    runs of fixed-size fields are merged into one ("skip", size_bytes) step."""
    ordered: list[tuple] = []
    tagged = {}
    for field in fields(entity_type):
        tag = get_field_tag(field)
        field_class = classify_field(field)
        nested = field_class.type_ if isinstance(field_class, (EntityField, EntityTupleField)) else None
        kafka_type = field.metadata.get("kafka_type")
        kind = "array" if field_class.is_array else "one"
        step = (kind, kafka_type, nested,
                tag is None and is_optional(field) and not isinstance(field_class, PrimitiveTupleField))
        if tag is not None:
            tagged[int(tag)] = step
        elif kind == "one" and nested is None and kafka_type in _FIXED_SIZE_BYTES:
            size = _FIXED_SIZE_BYTES[kafka_type]
            if ordered and ordered[-1][0] == "skip":
                size += ordered.pop()[1]
            ordered.append(("skip", size))
        else:
            ordered.append(step)
    return tuple(ordered), tagged


def _check_entity(entity_type: type, buf: bytes, position: int, end: int) -> int:
    flexible = entity_type.__flexible__
    ordered, tagged = _plan(entity_type)
    for step in ordered:
        if step[0] == "skip":
            position += step[1]
            if position > end:
                raise FrameError("request body runs past the end of the frame")
        else:
            position = _check_field(step, flexible, buf, position, end)
    if flexible:
        if position < end and buf[position] == 0:  # the common case: no tagged fields
            return position + 1
        count, position = _uvarint(buf, position, end)
        if count > end - position:
            raise FrameError(f"{count} tagged fields in {end - position} bytes")
        for _ in range(count):
            tag, position = _uvarint(buf, position, end)
            size, position = _uvarint(buf, position, end)
            if size > end - position:
                raise FrameError(f"tagged field of {size} bytes in {end - position}")
            if tag in tagged:
                kind, kafka_type, nested, _ = tagged[tag]
                _check_field((kind, kafka_type, nested, False), flexible, buf, position, position + size)
            position += size
    return position


def _check_field(step: tuple, flexible: bool, buf: bytes, position: int, end: int) -> int:
    kind, kafka_type, nested, optional = step
    if kind == "array":
        count, position = _length(flexible, 4, buf, position, end)
        if count > end - position:  # every element takes at least one byte
            raise FrameError(f"array of {count} elements in {end - position} bytes")
        if nested is None and kafka_type in _FIXED_SIZE_BYTES:
            position += max(count, 0) * _FIXED_SIZE_BYTES[kafka_type]
        else:
            for _ in range(max(count, 0)):
                position = _check_one(kafka_type, nested, False, flexible, buf, position, end)
    else:
        position = _check_one(kafka_type, nested, optional, flexible, buf, position, end)
    if position > end:
        raise FrameError("request body runs past the end of the frame")
    return position


def _check_one(kafka_type, nested, optional: bool, flexible: bool, buf: bytes, position: int, end: int) -> int:
    if nested is not None:
        if optional:  # KIP-893 nullable struct: int8 marker, -1 for null
            if position + 1 > end:
                raise FrameError("request body runs past the end of the frame")
            (marker,) = _I8.unpack_from(buf, position)
            position += 1
            if marker < 0:
                return position
        return _check_entity(nested, buf, position, end)
    if kafka_type in _VARIABLE_TYPES:
        size, position = _length(flexible, 2 if kafka_type == "string" else 4, buf, position, end)
        if size > end - position:
            raise FrameError(f"{kafka_type} of {size} bytes in {end - position}")
        return position + max(size, 0)
    return position + _FIXED_SIZE_BYTES[kafka_type]


def _length(flexible: bool, legacy_width: int, buf: bytes, position: int, end: int) -> tuple[int, int]:
    """A length or count: compact (uvarint n, meaning n - 1) or legacy int16/int32; -1 is null."""
    if flexible:
        value, position = _uvarint(buf, position, end)
        return value - 1, position
    if position + legacy_width > end:
        raise FrameError("request body runs past the end of the frame")
    (value,) = (_I16 if legacy_width == 2 else _I32).unpack_from(buf, position)
    if value < -1:
        raise FrameError(f"negative length {value}")
    return value, position + legacy_width


def _uvarint(buf: bytes, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(5):
        if position >= end:
            raise FrameError("truncated varint")
        byte = buf[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _MAX_UVARINT:
                raise FrameError(f"unsigned varint {value} exceeds 32 bits")
            return value, position
        shift += 7
    raise FrameError("varint longer than 5 bytes")
