"""Size-prefixed frames and the request/response headers, sans I/O.

A frame on the wire is `[int32 size][size bytes]`. A request frame's bytes start with the
request header:

    v1 (non-flexible request versions)       v2 (flexible versions)
    api_key         int16                    api_key         int16
    api_version     int16                    api_version     int16
    correlation_id  int32                    correlation_id  int32
    client_id       nullable string (int16)  client_id       nullable string (int16, not compact)
                                             tagged fields   uvarint count, (tag, size, bytes)*

A response frame starts with the response header: v0 is `correlation_id int32`; v1 adds an empty
tagged-field section (one zero byte). ApiVersions responses always use header v0, so that a client
of any version can read the error.

`FrameReader` splits a byte stream into frames and refuses, before buffering its body, any frame
whose declared size exceeds the limit (`socket.request.max.bytes`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SIZE = struct.Struct(">i")
_HEADER_FIXED = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length
_CORRELATION = struct.Struct(">ii")  # frame size, correlation_id

MAX_TAGGED_FIELDS = 1024  # bound on the tagged-field count of a request header


class FrameError(Exception):
    """The byte stream is not a valid Kafka request stream; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the request body starts in the frame


def peek_api(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame; FrameError if too short."""
    if len(frame) < 8:
        raise FrameError(f"request frame of {len(frame)} bytes is shorter than a request header")
    api_key, api_version, correlation_id, _ = _HEADER_FIXED.unpack_from(frame, 0)
    return api_key, api_version, correlation_id


def parse_request_header(frame: bytes | memoryview, flexible: bool) -> RequestHeader:
    """Decode a request header (v1, or v2 when `flexible`); FrameError on malformed input."""
    if len(frame) < _HEADER_FIXED.size:
        raise FrameError("request frame is shorter than a request header")
    api_key, api_version, correlation_id, client_id_length = _HEADER_FIXED.unpack_from(frame, 0)
    position = _HEADER_FIXED.size
    client_id: str | None = None
    if client_id_length >= 0:
        end = position + client_id_length
        if end > len(frame):
            raise FrameError("client id runs past the end of the frame")
        client_id = bytes(frame[position:end]).decode("utf-8", "replace")
        position = end
    elif client_id_length != -1:
        raise FrameError(f"invalid client id length {client_id_length}")
    if flexible:
        position = skip_tagged_fields(frame, position)
    return RequestHeader(api_key, api_version, correlation_id, client_id, position)


def read_uvarint(buf: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned varint at `position`: (value, next position). FrameError when malformed."""
    result = 0
    shift = 0
    while True:
        if position >= len(buf):
            raise FrameError("truncated varint")
        byte = buf[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 28:
            raise FrameError("varint longer than 5 bytes")


def skip_tagged_fields(buf: bytes | memoryview, position: int) -> int:
    count, position = read_uvarint(buf, position)
    if count > MAX_TAGGED_FIELDS:
        raise FrameError(f"{count} tagged fields exceed the bound of {MAX_TAGGED_FIELDS}")
    for _ in range(count):
        _, position = read_uvarint(buf, position)
        size, position = read_uvarint(buf, position)
        position += size
        if position > len(buf):
            raise FrameError("tagged field runs past the end of the frame")
    return position


def response_header(correlation_id: int, flexible: bool, body_size: int) -> bytes:
    """The size prefix and response header (v1 when `flexible`, else v0) for a body of `body_size`."""
    if flexible:
        return _CORRELATION.pack(body_size + 5, correlation_id) + b"\x00"
    return _CORRELATION.pack(body_size + 4, correlation_id)


class FrameReader:
    """Splits a stream of bytes into request frames, bounded by `max_frame_bytes`.

    Holds at most one partial frame. `feed()` returns the complete frames (each a `bytes` of the
    frame's content, without the size prefix) and raises FrameError for a negative size or a size
    above the limit, as soon as the 4-byte prefix arrives and before any of the body is kept.
    Owned by one connection, called from the event loop.
    """

    __slots__ = ("_buffer", "_max_frame_bytes")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._max_frame_bytes = max_frame_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            # Common case: nothing partial is held, so frames are sliced straight out of `data`
            # (one copy each) and only a trailing partial frame is kept.
            source = data
        frames: list[bytes] = []
        position = 0
        available = len(source)
        with memoryview(source) as view:
            while available - position >= 4:
                (size,) = _SIZE.unpack_from(view, position)
                if size < 0 or size > self._max_frame_bytes:
                    self._buffer.clear()
                    raise FrameError(
                        f"request of {size} bytes exceeds socket.request.max.bytes "
                        f"({self._max_frame_bytes})" if size > 0 else f"invalid frame size {size}"
                    )
                end = position + 4 + size
                if end > available:
                    break
                frames.append(bytes(view[position + 4 : end]))
                position = end
            if source is data:
                if position < available:
                    self._buffer += view[position:]
                return frames
        if position:
            del self._buffer[:position]
        return frames
