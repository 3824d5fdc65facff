"""One client connection: frames in, requests handled strictly in order, responses out.

Kafka's ordering contract: a client may pipeline many requests on a connection, and the broker
answers them in the order they were sent. We process one request at a time per connection (as
Kafka mutes a channel while its request is in flight), so a long-polling Fetch holds back later
requests on its own connection and nothing else.

Bounds, all per connection:
- a frame is refused when its size prefix exceeds `socket.request.max.bytes`, before its body
  is buffered (the connection is closed);
- every length and count inside a request is checked against the bytes left in its frame before
  kio decodes it (`check_request_bounds`: kio would otherwise size arrays from the declared
  count, and a failed native allocation aborts the process);
- at most `queued.max.requests` complete frames wait; past that the socket stops being read;
- when the transport's write buffer passes its high-water mark (a client that does not read its
  responses), request processing pauses until it drains, so memory stays bounded.

An unknown API key, an unsupported version (other than ApiVersions, which is answered with
UNSUPPORTED_VERSION as Kafka does), a malformed header or body, or a handler bug closes this
connection only. Owned by the server; runs on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from odradek.broker.context import ClientInfo, RequestContext
from odradek.protocol import apis, framing
from odradek.protocol.errors import ErrorCode
from odradek.protocol.request_bounds import check_request_bounds

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore


log = logging.getLogger(__name__)

# Requests that change metadata: in cluster mode a broker that is not the controller forwards
# them to the controller and relays its answer (CreateTopics, DeleteTopics, AlterConfigs,
# CreatePartitions, ElectLeaders, IncrementalAlterConfigs, AlterPartitionReassignments).
FORWARDED_APIS = frozenset({19, 20, 33, 37, 43, 44, 45})

API_VERSIONS_KEY = 18
WRITE_HIGH_WATER_BYTES = 4 * 1024 * 1024
WRITE_LOW_WATER_BYTES = 1024 * 1024


class EncodedResponse:
    """A response body that a handler already encoded, as a list of byte strings and file regions.

    Lets the Fetch handler splice segment-file regions into its response without copying them
    through kio. Each part is `bytes` or a file region with `fd`, `position` and `size_bytes`.
    """

    __slots__ = ("parts", "size_bytes")

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.size_bytes = sum(len(p) if isinstance(p, (bytes, bytearray, memoryview)) else p.size_bytes for p in parts)


class CloseConnection:
    """A handler's answer that is no response at all but closing the connection.

    Produce with acks=0 answers an error this way, as Kafka does: the client gets no response to
    read the error from, so the closed connection makes it refresh metadata and reconnect.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class KafkaConnection(asyncio.Protocol):
    _next_id = 0

    def __init__(self, core: BrokerCore, listener_name: str) -> None:
        self.core = core
        self.listener_name = listener_name
        self.transport: asyncio.Transport | None = None
        self.client: ClientInfo | None = None
        self._reader = framing.FrameReader(core.config.socket_request_max_bytes)
        self._queue: deque[bytes] = deque()
        self._max_queued = max(1, core.config.queued_max_requests)
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._sock_fd = -1
        self._watch_fd = -1  # a dup of the socket fd, to wait until writable (`_socket_writable`)
        self._writable_waiter: asyncio.Future | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        KafkaConnection._next_id += 1
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Plaintext TCP connections get zero-copy fetches (see `_send_region`).
        self._sock_fd = sock.fileno() if sock is not None and transport.get_extra_info("sslcontext") is None else -1
        self.client = ClientInfo(
            connection_id=f"{self.listener_name}-{KafkaConnection._next_id}",
            listener_name=self.listener_name,
            host=str(peer[0]),
            port=int(peer[1]),
        )
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
        if not self.core.connections.admit(self):
            transport.abort()
            return
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self.core.connections.track_worker(self._worker)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except framing.FrameError as exc:
            self._close(f"framing error: {exc}")
            return
        if frames:
            self._queue.extend(frames)
            self._wakeup.set()
            if len(self._queue) >= self._max_queued and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        # The request in flight, if any, runs to completion (its answer is dropped): a produce
        # or a metadata change is never cut off halfway. The worker then stops; queued
        # requests are not started.
        self._closed = True
        self.core.connections.release(self)
        self._wakeup.set()
        self._writable.set()
        if self._writable_waiter is not None:
            _wake(self._writable_waiter)  # the waiting task removes its writer, then closes the dup
        else:
            self._close_watch_fd()

    # -- request processing -----------------------------------------------------------------
    async def _run(self) -> None:
        queue = self._queue
        try:
            while not self._closed:
                if not queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame = queue.popleft()
                if self._reading_paused and len(queue) < self._max_queued // 2 + 1:
                    self._reading_paused = False
                    self.transport.resume_reading()
                if not self._writable.is_set():
                    await self._writable.wait()
                await self._handle_frame(frame)
        except asyncio.CancelledError:
            pass

    async def _handle_frame(self, frame: bytes) -> None:
        self.core.connections.touch(self)
        try:
            api_key, api_version, correlation_id = framing.peek_api(frame)
        except framing.FrameError as exc:
            self._close(str(exc))
            return
        api = apis.APIS.get(api_key)
        if api is None:
            self._close(f"unknown api key {api_key}")
            return
        if not api.min_version <= api_version <= api.max_version:
            if api_key == API_VERSIONS_KEY:
                self._answer_unsupported_api_versions(correlation_id)
            else:
                self._close(f"unsupported version {api_version} of api {api.name}")
            return
        if api_version < api.min_usable_version:
            self._close(f"{api.name} v{api_version} is advertised for compatibility but not served")
            return
        try:
            request_class, reader, flexible = apis.request_codec(api_key, api_version)
            header = framing.parse_request_header(frame, flexible)
            check_request_bounds(request_class, frame, header.body_offset)
            request, _ = reader(frame, header.body_offset)
        except Exception as exc:  # kio's reader raises several types on malformed input
            self._close(f"malformed {api.name} v{api_version} request: {exc!r}")
            return
        ctx = RequestContext(
            api_key=api_key,
            api_version=api_version,
            correlation_id=correlation_id,
            client_id=header.client_id,
            client=self.client,
            broker=self.core,
        )
        try:
            if api_key in FORWARDED_APIS and self.core.cluster is not None \
                    and self.core.cluster.controller is None:
                # Cluster mode: metadata changes are the controller's (Kafka's forwarding).
                response = await self.core.cluster.forward(api_key, api_version, request)
            else:
                response = await apis.handler(api_key)(request, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for %s v%d failed; closing %s", api.name, api_version,
                          self.client.connection_id)
            self._close("handler error")
            return
        if isinstance(response, CloseConnection):
            self._close(response.reason)
            return
        if response is None or self._closed:
            return
        try:
            if isinstance(response, EncodedResponse):
                await self._send_encoded(api_key, api_version, correlation_id, response)
            else:
                self._send(api_key, api_version, correlation_id, response)
        except asyncio.CancelledError:
            raise
        except Exception:  # a response kio cannot encode is a broker bug: say so and close
            log.exception("encoding the %s v%d response failed; closing %s", api.name, api_version,
                          self.client.connection_id)
            self._close("handler error")

    def _send(self, api_key: int, api_version: int, correlation_id: int, response: Any) -> None:
        _, writer, flexible = apis.response_codec(api_key, api_version)
        buffer = io.BytesIO()
        writer(buffer, response)
        body = buffer.getbuffer()
        self.transport.writelines((_response_head(api_key, flexible, correlation_id, len(body)), body))

    async def _send_encoded(self, api_key: int, api_version: int, correlation_id: int,
                            response: EncodedResponse) -> None:
        flexible = apis.response_codec(api_key, api_version)[2]
        self.transport.write(_response_head(api_key, flexible, correlation_id, response.size_bytes))
        for part in response.parts:
            if self._closed:
                return  # lost while a region waited for the socket
            if isinstance(part, (bytes, bytearray, memoryview)):
                if part:
                    self.transport.write(part)
            else:
                await self._send_region(part)

    async def _send_region(self, region: Any) -> None:
        """Send a file region with `sendfile`, straight from the page cache to the socket.

        `sendfile` writes to the socket itself, so it runs only while the transport has nothing
        queued (bytes stay in order); when the socket is full, or the transport still holds bytes
        written before the region, this waits until the socket is writable again and goes on.
        The region pins its file descriptor while it waits (see `FileRegion`). Only what
        `sendfile` cannot send (TLS, a socket type without it) is copied, with `pread`, through
        the transport. Works under the stock loop and uvloop alike.
        """
        position, remaining = region.position, region.size_bytes
        while remaining and self._sock_fd >= 0 and not self._closed:
            if self.transport.get_write_buffer_size():
                await self._socket_writable()
                continue
            try:
                sent = os.sendfile(self._sock_fd, region.fd, position, remaining)
            except (BlockingIOError, InterruptedError):
                await self._socket_writable()
                continue
            except (BrokenPipeError, ConnectionResetError):
                return  # the peer is gone; the transport reports it and closes
            except OSError:
                self._sock_fd = -1  # not a plain socket (or sendfile unsupported): copy from now on
                break
            if sent == 0:
                break  # the file ends before the region (cannot happen for a pinned region)
            position += sent
            remaining -= sent
        if remaining and not self._closed:
            self.transport.write(os.pread(region.fd, remaining, position))

    async def _socket_writable(self) -> None:
        """Until the socket can take more bytes (or the connection is lost).

        Watches a duplicate of the socket's descriptor: the loop refuses a writer on a descriptor
        that its transport owns, and the duplicate names the same socket."""
        loop = asyncio.get_running_loop()
        if self._watch_fd < 0:
            self._watch_fd = os.dup(self._sock_fd)
        waiter = self._writable_waiter = loop.create_future()
        loop.add_writer(self._watch_fd, _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(self._watch_fd)
            self._writable_waiter = None
            if self._closed:
                self._close_watch_fd()

    def _answer_unsupported_api_versions(self, correlation_id: int) -> None:
        # Kafka answers an ApiVersions request of an unknown version with a v0 response that
        # carries UNSUPPORTED_VERSION and the supported ranges, so the client can retry lower.
        from odradek.broker.handlers.api_versions import api_keys_for

        module = apis.response_module(API_VERSIONS_KEY, 0)
        response = apis.make(module.ApiVersionsResponse, error_code=ErrorCode.unsupported_version,
                             api_keys=api_keys_for(module))
        self._send(API_VERSIONS_KEY, 0, correlation_id, response)

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        log.info("closing connection %s: %s", self.client.connection_id if self.client else "?", reason)
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def _close_watch_fd(self) -> None:
        if self._watch_fd >= 0:
            os.close(self._watch_fd)
            self._watch_fd = -1

    def close(self) -> None:
        """Close from the broker's side (shutdown, idle): the request in flight is cancelled."""
        self._close("closed by the broker")
        if self._worker is not None:
            self._worker.cancel()


def _wake(waiter: asyncio.Future | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _response_head(api_key: int, flexible: bool, correlation_id: int, body_size: int) -> bytes:
    # ApiVersions answers with header v0 even at flexible versions (KIP-511), as Kafka does.
    return framing.response_header(correlation_id, flexible and api_key != API_VERSIONS_KEY, body_size)
