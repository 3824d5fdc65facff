"""A raw Kafka-protocol client for tests: exact requests over a plain blocking socket.

    with RawConnection(bootstrap) as conn:
        m = conn.module("metadata", 12)                    # kio's request module for that version
        response = conn.request(m.MetadataRequest(topics=None, ...))
        conn.send_bytes(b"\\x00\\x00\\x00\\x04garbage")   # anything at all
        assert conn.wait_closed()

Requests are kio entities of any API and version; the helper writes the request header (v1 for
classic versions, v2 for flexible ones), prefixes the frame size, and decodes the response with
kio after its header (v0, or v1 for flexible versions; ApiVersions responses always use v0).
`send_frame` / `send_bytes` send arbitrary bytes, for malformed input. No retries, no pipelining
rules: what you send is what the broker gets.

One RawConnection belongs to one test thread; it is not thread-safe.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from types import ModuleType
from typing import Any, Self

from kio.index import load_entity_module, load_payload_module
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from odradek.protocol import framing

API_VERSIONS_KEY = 18
DEFAULT_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # a response frame larger than this is a broker bug

_SIZE = struct.Struct(">i")
_CORRELATION = struct.Struct(">i")


class ConnectionClosed(Exception):
    """The broker closed the connection before a whole response frame arrived."""


def request_module(api_key: int, api_version: int) -> ModuleType:
    """kio's request module for one API version (e.g. `kio.schema.metadata.v12.request`)."""
    return load_payload_module(api_key, api_version, EntityType.request)


def response_module(api_key: int, api_version: int) -> ModuleType:
    return load_payload_module(api_key, api_version, EntityType.response)


def _payload_class(module: ModuleType, entity_type: EntityType) -> type:
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is entity_type:
            return value
    raise LookupError(f"no {entity_type.name} class in {module.__name__}")


def encode_request(
    request: Any, correlation_id: int, client_id: str | None = "odradek-raw"
) -> bytes:
    """The frame (size prefix included) of a kio request entity with its request header."""
    header_version = 2 if request.__flexible__ else 1
    header_class = load_entity_module(
        "request_header", header_version, EntityType.header
    ).RequestHeader
    header = header_class(
        request_api_key=request.__api_key__,
        request_api_version=request.__version__,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    buffer = io.BytesIO()
    entity_writer(header_class)(buffer, header)
    entity_writer(type(request))(buffer, request)
    body = buffer.getvalue()
    return _SIZE.pack(len(body)) + body


def decode_response(api_key: int, api_version: int, frame: bytes) -> tuple[int, Any]:
    """(correlation_id, kio response) of a response frame without its size prefix."""
    response_class = _payload_class(response_module(api_key, api_version), EntityType.response)
    (correlation_id,) = _CORRELATION.unpack_from(frame, 0)
    position = 4
    if response_class.__flexible__ and api_key != API_VERSIONS_KEY:
        position = framing.skip_tagged_fields(frame, position)
    response, size = entity_reader(response_class)(frame, position)
    if position + size != len(frame):
        raise ValueError(f"{len(frame) - position - size} bytes left after the response body")
    return correlation_id, response


class RawConnection:
    """One TCP connection to a broker, speaking exactly the bytes a test asks for."""

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client_id: str | None = "odradek-raw",
    ) -> None:
        host, _, port = bootstrap.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout_s = timeout_s
        self.client_id = client_id
        self._next_correlation_id = 1
        self._buffer = bytearray()

    # -- kio requests ---------------------------------------------------------------------------
    @staticmethod
    def module(api: int | str, api_version: int) -> ModuleType:
        """kio's request module for an API given by key or by kio name ("fetch")."""
        if isinstance(api, str):
            return load_entity_module(api, api_version, EntityType.request)
        return request_module(api, api_version)

    def send(self, request: Any, correlation_id: int | None = None) -> int:
        """Send a kio request; returns the correlation id used."""
        if correlation_id is None:
            correlation_id = self._next_correlation_id
            self._next_correlation_id += 1
        self.sock.sendall(encode_request(request, correlation_id, self.client_id))
        return correlation_id

    def receive(
        self, api_key: int, api_version: int, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        """(correlation_id, response) of the next response frame, decoded as that API version."""
        return decode_response(api_key, api_version, self.receive_frame(timeout_s))

    def request(self, request: Any, timeout_s: float | None = None) -> Any:
        """Send a kio request and return the decoded response; checks the correlation id."""
        correlation_id = self.send(request)
        got, response = self.receive(request.__api_key__, request.__version__, timeout_s)
        if got != correlation_id:
            raise AssertionError(f"response for correlation id {got}, expected {correlation_id}")
        return response

    # -- raw bytes ------------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, body: bytes) -> None:
        """Send `body` with a correct size prefix."""
        self.sock.sendall(_SIZE.pack(len(body)) + body)

    def receive_frame(self, timeout_s: float | None = None) -> bytes:
        """The next response frame's bytes (without the size prefix); ConnectionClosed at EOF."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            if len(self._buffer) >= 4:
                (size,) = _SIZE.unpack_from(self._buffer, 0)
                if not 0 <= size <= MAX_RESPONSE_BYTES:
                    raise ValueError(f"response frame size {size}")
                if len(self._buffer) >= 4 + size:
                    frame = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return frame
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError("no whole response frame in time")
            self.sock.settimeout(remaining_s)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed(
                    f"connection closed with {len(self._buffer)} bytes of a frame"
                )
            self._buffer += chunk

    def wait_closed(self, timeout_s: float = 5.0) -> bool:
        """True when the broker closes the connection within `timeout_s` (unread bytes dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return False
            self.sock.settimeout(remaining_s)
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
            if not chunk:
                return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
