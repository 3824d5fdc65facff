"""Frames and request headers: bounds are enforced before memory is spent."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from odradek.protocol import framing


def frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def test_frames_split_across_reads_are_reassembled():
    reader = framing.FrameReader(1024)
    data = frame(b"a" * 10) + frame(b"b" * 20) + frame(b"c" * 5)
    out = []
    for i in range(0, len(data), 3):
        out += reader.feed(data[i : i + 3])
    assert out == [b"a" * 10, b"b" * 20, b"c" * 5]
    assert reader.buffered_bytes == 0


def test_an_oversized_frame_is_refused_from_its_size_prefix_alone():
    reader = framing.FrameReader(1000)
    with pytest.raises(framing.FrameError, match="socket.request.max.bytes"):
        reader.feed(struct.pack(">i", 2**31 - 1))
    assert reader.buffered_bytes == 0


def test_a_negative_frame_size_is_refused():
    with pytest.raises(framing.FrameError):
        framing.FrameReader(1000).feed(struct.pack(">i", -1))


def test_request_header_v1_and_v2():
    fixed = struct.pack(">hhih", 3, 12, 99, 6) + b"client"
    header = framing.parse_request_header(fixed, flexible=False)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (3, 12, 99, "client")
    assert header.body_offset == len(fixed)
    flexible = fixed + b"\x01\x05\x02ab" + b"BODY"
    header = framing.parse_request_header(flexible, flexible=True)
    assert flexible[header.body_offset:] == b"BODY"
    null_client = struct.pack(">hhih", 18, 3, 1, -1) + b"\x00"
    assert framing.parse_request_header(null_client, flexible=True).client_id is None


def test_response_headers():
    assert framing.response_header(7, False, 10) == struct.pack(">ii", 14, 7)
    assert framing.response_header(7, True, 10) == struct.pack(">ii", 15, 7) + b"\x00"


@given(st.binary(max_size=64))
@settings(max_examples=2000, deadline=None)
def test_garbage_headers_raise_frame_error_or_parse(data):
    for flexible in (False, True):
        try:
            header = framing.parse_request_header(data, flexible)
        except framing.FrameError:
            continue
        assert 0 <= header.body_offset <= len(data)


@given(bodies=st.lists(st.binary(max_size=50), max_size=8), cuts=st.lists(st.integers(0, 500), max_size=10))
@settings(max_examples=500, deadline=None)
def test_any_split_of_a_stream_yields_the_same_frames(bodies, cuts):
    stream = b"".join(frame(b) for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = framing.FrameReader(1024)
    out = []
    for a, b in zip(points, points[1:]):
        out += reader.feed(stream[a:b])
    assert out == bodies and reader.buffered_bytes == 0
