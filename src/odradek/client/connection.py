"""One TCP connection to one broker: ApiVersions negotiation, framing, pipelined requests.

A request frame is `[int32 size][request header][body]`: request header v1 for non-flexible
request versions, v2 for flexible ones. A response frame is `[int32 size][response header][body]`:
header v0 for non-flexible response versions, v1 (one tagged-field byte) for flexible ones, except
ApiVersions, always v0. kio's classes say which header goes with them (`__header_schema__`), so
none of this is decided here by hand; kio writes and reads every header and body.

On connect the client sends ApiVersions v3 (falling back to v0 when the broker answers
UNSUPPORTED_VERSION) and then uses, per API, the highest version that both the broker and
`CLIENT_VERSIONS` support. Requests may be pipelined: each gets a correlation id and a future,
and one reader task resolves them as responses arrive (in order, as Kafka guarantees; an
unexpected correlation id closes the connection). A response frame larger than
`max_response_bytes` is refused before its body is buffered.

Owned by one `Client` (or a test); used from one event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import struct
from functools import cache
from types import ModuleType
from typing import Any, Self

from odradek.protocol.errors import ErrorCode

# Versions this client knows how to build and read, per API key: (min, max). Chosen so that one
# code path serves every version in the range (`make` drops fields a version lacks); Fetch and
# Produce stop before the versions that name topics by id only.
CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    0: (3, 12),  # Produce
    1: (4, 12),  # Fetch
    2: (1, 8),  # ListOffsets
    3: (1, 12),  # Metadata
    18: (0, 3),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics
    32: (1, 4),  # DescribeConfigs
}
API_VERSIONS_KEY = 18

DEFAULT_MAX_RESPONSE_BYTES = 128 * 1024 * 1024  # above fetch.max.bytes (50 MiB) with headroom
DEFAULT_REQUEST_TIMEOUT_MS = 30_000  # Kafka's request.timeout.ms default
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
MAX_IN_FLIGHT_REQUESTS = 1024

_SIZE = struct.Struct(">i")


class KafkaClientError(Exception):
    """Base of the client's errors; the message is one line, fit for a user."""


class KafkaConnectionError(KafkaClientError):
    """The connection could not be made, was closed, or broke the protocol."""


class RequestTimeoutError(KafkaClientError):
    """No response arrived within the request timeout."""


class KafkaError(KafkaClientError):
    """A broker answered with a Kafka error code."""

    def __init__(
        self, error_code: ErrorCode, message: str | None = None, *, context: str = ""
    ) -> None:
        self.error_code = error_code
        self.message = message
        self.context = context
        name = error_code.name.upper()
        text = f"{context}: {name}" if context else name
        if message:
            text += f" ({message})"
        super().__init__(text)

    @property
    def retriable(self) -> bool:
        return bool(getattr(self.error_code, "retriable", False))


class UnsupportedVersionError(KafkaClientError):
    """The broker and this client share no version of an API."""


@cache
def payload_module(api_key: int, api_version: int, request: bool) -> ModuleType:
    from kio.index import load_payload_module
    from kio.static.constants import EntityType

    return load_payload_module(
        api_key, api_version, EntityType.request if request else EntityType.response
    )


@cache
def payload_class(api_key: int, api_version: int, request: bool) -> type:
    from kio.static.constants import EntityType

    wanted = EntityType.request if request else EntityType.response
    module = payload_module(api_key, api_version, request)
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is wanted:
            return value
    raise LookupError(f"kio has no {wanted.name} class for api {api_key} v{api_version}")


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


def make(cls: type, **values: Any) -> Any:
    """Build a kio entity from a superset of fields; those this version lacks are dropped."""
    names = _field_names(cls)
    return cls(**{name: value for name, value in values.items() if name in names})


def has_field(cls: type, name: str) -> bool:
    return name in _field_names(cls)


@cache
def _writer(cls: type):
    from kio.serial import entity_writer

    return entity_writer(cls)


@cache
def _reader(cls: type):
    from kio.serial import entity_reader

    return entity_reader(cls)


def encode_request(request: Any, correlation_id: int, client_id: str | None) -> bytes:
    """The whole frame (size prefix, header of the version kio names, body) of one request."""
    from kio.static.primitive import i16, i32

    cls = type(request)
    header_cls = cls.__header_schema__
    header = header_cls(
        request_api_key=i16(cls.__api_key__),
        request_api_version=i16(cls.__version__),
        correlation_id=i32(correlation_id),
        client_id=client_id,
    )
    buffer = io.BytesIO()
    buffer.write(b"\x00\x00\x00\x00")
    _writer(header_cls)(buffer, header)
    _writer(cls)(buffer, request)
    frame = buffer.getbuffer()
    _SIZE.pack_into(frame, 0, len(frame) - 4)
    return bytes(frame)


def decode_response(response_cls: type, frame: bytes) -> tuple[int, Any]:
    """(correlation id, response) from a frame without its size prefix."""
    header, position = _reader(response_cls.__header_schema__)(frame, 0)
    response, _ = _reader(response_cls)(frame, position)
    return int(header.correlation_id), response


def _api_versions_v0_fallback(response_cls: type, frame: bytes) -> Any | None:
    """A broker that does not support our ApiVersions version answers with a v0 body carrying
    UNSUPPORTED_VERSION; read it as v0, as Kafka's clients do, so the caller can retry lower."""
    if int(response_cls.__api_key__) != API_VERSIONS_KEY or int(response_cls.__version__) == 0:
        return None
    try:
        return decode_response(payload_class(API_VERSIONS_KEY, 0, False), frame)[1]
    except Exception:  # noqa: BLE001 (kio raises several types on malformed input)
        return None


@dataclasses.dataclass(slots=True)
class _InFlight:
    correlation_id: int
    response_cls: type
    future: asyncio.Future
    decode: Any = None  # frame -> response, instead of kio's reader (see `send`)


class BrokerConnection:
    """A connection to one broker: `await connect()`, then `await send(request)`.

    Holds the socket streams, the negotiated version per API (`versions`), and the in-flight
    requests in send order. Invariants: at most `MAX_IN_FLIGHT_REQUESTS` requests wait for a
    response; responses are matched to requests by correlation id, in order.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "odradek",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
        connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.max_response_bytes = max_response_bytes
        self.request_timeout_ms = request_timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.versions: dict[int, int] = {}
        self.broker_versions: dict[int, tuple[int, int]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._in_flight: dict[int, _InFlight] = {}
        self._order: list[int] = []
        self._correlation_ids = itertools.count(1)
        self._read_task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT_REQUESTS)
        self._closed_reason: str | None = None

    @property
    def closed(self) -> bool:
        """True once the connection failed or was closed; it is never reopened."""
        return self._closed_reason is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> Self:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # (Ctrl-C) that arrives as the awaited future completes.
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise KafkaConnectionError(f"cannot connect to {self.address}: timed out") from None
        except OSError as exc:
            import os

            reason = (
                os.strerror(exc.errno)
                if exc.errno and exc.errno > 0
                else (exc.strerror or str(exc) or type(exc).__name__)
            )
            raise KafkaConnectionError(f"cannot connect to {self.address}: {reason}") from None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            await self._negotiate_versions()
        except BaseException:
            await self.close()
            raise
        return self

    async def _negotiate_versions(self) -> None:
        from odradek import __version__

        # The handshake is bounded by the connect timeout, as Kafka's connection setup timeout.
        response = await self.send(
            make(
                payload_class(API_VERSIONS_KEY, 3, True),
                client_software_name="odradek",
                client_software_version=__version__,
            ),
            timeout_ms=self.connect_timeout_ms,
        )
        if response.error_code == ErrorCode.unsupported_version:
            response = await self.send(
                payload_class(API_VERSIONS_KEY, 0, True)(), timeout_ms=self.connect_timeout_ms
            )
        if response.error_code != ErrorCode.none:
            raise KafkaError(response.error_code, context=f"ApiVersions to {self.address}")
        self.broker_versions = {
            int(a.api_key): (int(a.min_version), int(a.max_version)) for a in response.api_keys
        }
        self.versions = {}
        for api_key, (client_min, client_max) in CLIENT_VERSIONS.items():
            broker = self.broker_versions.get(api_key)
            if broker is None:
                continue
            high = min(client_max, broker[1])
            if high >= max(client_min, broker[0]):
                self.versions[api_key] = high

    def version(self, api_key: int) -> int:
        """The negotiated version of an API; UnsupportedVersionError when there is none."""
        try:
            return self.versions[api_key]
        except KeyError:
            from kio.schema.index import api_key_map

            raise UnsupportedVersionError(
                f"broker {self.address} supports no version of {api_key_map.get(api_key, api_key)} "
                f"that this client knows ({CLIENT_VERSIONS.get(api_key)})"
            ) from None

    def request_class(self, api_key: int) -> type:
        return payload_class(api_key, self.version(api_key), True)

    def request_module(self, api_key: int) -> ModuleType:
        return payload_module(api_key, self.version(api_key), True)

    async def send(
        self,
        request: Any,
        *,
        expect_response: bool = True,
        timeout_ms: int | None = None,
        decode: Any = None,
    ) -> Any:
        """Send one request and wait for its response (None when `expect_response` is False,
        as for Produce with acks=0). `decode(frame)`, when given, reads the response frame
        (correlation id first) instead of kio, for responses kio cannot read."""
        if self._closed_reason is not None:
            raise KafkaConnectionError(
                f"connection to {self.address} is closed: {self._closed_reason}"
            )
        cls = type(request)
        response_cls = payload_class(int(cls.__api_key__), int(cls.__version__), False)
        correlation_id = next(self._correlation_ids) & 0x7FFFFFFF
        frame = encode_request(request, correlation_id, self.client_id)
        if not expect_response:
            self._writer.write(frame)
            await self._drain()
            return None
        async with self._slots:
            future = asyncio.get_running_loop().create_future()
            self._in_flight[correlation_id] = _InFlight(correlation_id, response_cls, future, decode)
            self._order.append(correlation_id)
            self._writer.write(frame)
            await self._drain()
            timeout_s = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000
            try:
                async with asyncio.timeout(timeout_s):
                    return await asyncio.shield(future)
            except TimeoutError:
                self._fail_all(f"request timed out after {timeout_s * 1000:.0f} ms")
                await self._close_transport()
                raise RequestTimeoutError(
                    f"{cls.__name__} to {self.address} timed out after {timeout_s * 1000:.0f} ms"
                ) from None

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._fail_all(f"write failed: {exc}")
            raise KafkaConnectionError(f"connection to {self.address} failed: {exc}") from None

    async def _read_loop(self) -> None:
        reader = self._reader
        try:
            while True:
                prefix = await reader.readexactly(4)
                (size,) = _SIZE.unpack(prefix)
                if size < 4 or size > self.max_response_bytes:
                    self._fail_all(
                        f"response of {size} bytes exceeds the limit of "
                        f"{self.max_response_bytes} bytes"
                    )
                    break
                frame = await reader.readexactly(size)
                (correlation_id,) = _SIZE.unpack_from(frame, 0)
                if not self._order or self._order[0] != correlation_id:
                    self._fail_all(f"unexpected correlation id {correlation_id} in a response")
                    break
                self._order.pop(0)
                entry = self._in_flight.pop(correlation_id)
                if entry.future.done():
                    continue
                try:
                    if entry.decode is not None:
                        response = entry.decode(frame)
                    else:
                        _, response = decode_response(entry.response_cls, frame)
                except Exception as exc:  # noqa: BLE001 (kio raises several types)
                    fallback = _api_versions_v0_fallback(entry.response_cls, frame)
                    if fallback is not None:
                        entry.future.set_result(fallback)
                        continue
                    reason = f"malformed {entry.response_cls.__name__}: {exc!r}"
                    entry.future.set_exception(
                        KafkaConnectionError(f"connection to {self.address} failed: {reason}")
                    )
                    entry.future.exception()
                    self._fail_all(reason)
                    break
                entry.future.set_result(response)
        except asyncio.IncompleteReadError:
            self._fail_all("the broker closed the connection")
        except (ConnectionError, OSError) as exc:
            self._fail_all(f"read failed: {exc}")
        except asyncio.CancelledError:
            self._fail_all("connection closed")
            raise
        await self._close_transport()

    def _fail_all(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for entry in self._in_flight.values():
            if not entry.future.done():
                entry.future.set_exception(
                    KafkaConnectionError(f"connection to {self.address} failed: {reason}")
                )
                # A caller that was cancelled no longer awaits this future; mark the exception
                # retrieved so asyncio does not log it. Callers still awaiting it get it raised.
                entry.future.exception()
        self._in_flight.clear()
        self._order.clear()

    async def _close_transport(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def close(self) -> None:
        self._fail_all("connection closed")
        if self._read_task is not None and not self._read_task.done():
            self._read_task.cancel()
            try:
                await self._read_task
            except asyncio.CancelledError:
                pass
        await self._close_transport()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
