"""Connections from this broker to the other brokers of the cluster (Kafka's NetworkClient for
the replica fetchers and the controller channel).

`await request(node_id, api_key, api_version, request_obj, timeout_s)` sends one kio request to a
broker over a pooled `client.connection.BrokerConnection` and returns the kio response. One
connection per (broker, channel): the default channel carries the short control requests
(AlterPartition, ControlledShutdown, WriteTxnMarkers); the replica fetchers pass their own
channel so that their long-polling Fetch requests never hold a control request back behind
them (a broker answers one connection's requests in order), as Kafka gives its fetcher
threads their own connections.

Endpoints come from a resolver: `core.broker_endpoint(node_id)` in the broker, any callable
`node_id -> (host, port) | None` in tests. The resolver is asked before every request, so a
broker that came back on another address is reached there. A failed connection is dropped and
the next request reconnects; a request is never retried here (the callers' protocols retry).
Every failure crosses to the caller as `InterBrokerError(error_code)`:
BROKER_NOT_AVAILABLE (no endpoint known, cannot connect), NETWORK_EXCEPTION (the connection
broke), REQUEST_TIMED_OUT (no answer within `timeout_s`), UNSUPPORTED_VERSION (the broker does
not serve that version of the API).

Owned by the BrokerCore (`core.inter_broker`); used on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from odradek.client.connection import (
    BrokerConnection,
    KafkaClientError,
    KafkaConnectionError,
    RequestTimeoutError,
)
from odradek.protocol.errors import ErrorCode

__all__ = ["DEFAULT_CHANNEL", "InterBrokerClients", "InterBrokerError"]

log = logging.getLogger(__name__)

DEFAULT_CHANNEL = "control"
# Bounds: a connection attempt (Kafka's socket.connection.setup.timeout.ms default is 10 s; a
# peer in the same cluster answers in far less, and a shorter bound lets fetchers back off and
# retry sooner), the largest response frame (replica.fetch.response.max.bytes is 10 MiB by
# default; a response may exceed it by one batch per partition, KIP-74).
CONNECT_TIMEOUT_MS = 5_000
MAX_RESPONSE_BYTES = 128 * 1024 * 1024
MAX_CHANNELS = 4096  # brokers x channels; a bound, not an expected size


class InterBrokerError(Exception):
    """A request to another broker failed; `error_code` is the Kafka error to act on."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(f"{error_code.name}: {message}")
        self.error_code = error_code
        self.message = message


@dataclass(slots=True)
class _Channel:
    """One pooled connection: the endpoint it was opened to, and a lock held while (re)connecting."""

    node_id: int
    name: str
    connection: BrokerConnection | None = None
    endpoint: tuple[str, int] | None = None
    connecting: asyncio.Lock = field(default_factory=asyncio.Lock)


class InterBrokerClients:
    """Pooled connections to the other brokers, by (node id, channel).

    Holds one `_Channel` per (node id, channel name) that was ever used, each with at most one
    open BrokerConnection. Invariants: a channel's connection, when set and not closed, is
    connected to the endpoint the resolver gave when it was opened; after `close()` every
    request fails with BROKER_NOT_AVAILABLE and no connection is opened.
    Owned by the BrokerCore; called on the event loop by the replica fetchers, the partition
    leaders' AlterPartition path and the controller.
    """

    def __init__(self, core: Any = None, *, resolve_endpoint: Callable[[int], tuple[str, int] | None] | None = None,
                 client_id: str | None = None, connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        if resolve_endpoint is None:
            if core is None:
                raise ValueError("InterBrokerClients needs a core or a resolve_endpoint")
            resolve_endpoint = core.broker_endpoint
        self._resolve = resolve_endpoint
        if client_id is None:
            node_id = getattr(core, "node_id", None)
            client_id = f"odradek-broker-{node_id}" if node_id is not None else "odradek-broker"
        self.client_id = client_id
        self.connect_timeout_ms = connect_timeout_ms
        self.max_response_bytes = max_response_bytes
        self._channels: dict[tuple[int, str], _Channel] = {}
        self._closed = False

    async def request(self, node_id: int, api_key: int, api_version: int, request_obj: Any, timeout_s: float,
                      *, channel: str = DEFAULT_CHANNEL) -> Any:
        """Send `request_obj` (a kio request of `api_key` v`api_version`) to broker `node_id` and
        return its kio response; the whole call (connecting included) is bounded by `timeout_s`.
        Raises InterBrokerError (see the module docs)."""
        cls = type(request_obj)
        if int(cls.__api_key__) != api_key or int(cls.__version__) != api_version:
            raise ValueError(f"{cls.__name__} is api {cls.__api_key__} v{cls.__version__}, "
                             f"not api {api_key} v{api_version}")
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + timeout_s
        connection = await self._connection(node_id, channel, timeout_s)
        supported = connection.broker_versions.get(api_key)
        if supported is None or not supported[0] <= api_version <= supported[1]:
            raise InterBrokerError(ErrorCode.unsupported_version,
                                   f"broker {node_id} serves api {api_key} versions {supported}, not {api_version}")
        remaining_ms = max(int((deadline_s - loop.time()) * 1000), 1)
        try:
            return await connection.send(request_obj, timeout_ms=remaining_ms)
        except RequestTimeoutError as exc:
            self._drop(node_id, channel, connection)
            raise InterBrokerError(ErrorCode.request_timed_out, f"broker {node_id}: {exc}") from None
        except KafkaClientError as exc:
            self._drop(node_id, channel, connection)
            raise InterBrokerError(ErrorCode.network_exception, f"broker {node_id}: {exc}") from None

    async def _connection(self, node_id: int, name: str, timeout_s: float) -> BrokerConnection:
        if self._closed:
            raise InterBrokerError(ErrorCode.broker_not_available, "inter-broker clients are closed")
        key = (node_id, name)
        channel = self._channels.get(key)
        if channel is None:
            if len(self._channels) >= MAX_CHANNELS:
                raise InterBrokerError(ErrorCode.broker_not_available,
                                       f"more than {MAX_CHANNELS} inter-broker channels")
            channel = self._channels[key] = _Channel(node_id, name)
        try:
            async with asyncio.timeout(timeout_s):
                async with channel.connecting:
                    return await self._connected(channel)
        except TimeoutError:
            raise InterBrokerError(ErrorCode.request_timed_out,
                                   f"broker {node_id}: no connection within {timeout_s * 1000:.0f} ms") from None

    async def _connected(self, channel: _Channel) -> BrokerConnection:
        endpoint = self._resolve(channel.node_id)
        if endpoint is None:
            self._close_channel_connection(channel)
            raise InterBrokerError(ErrorCode.broker_not_available, f"broker {channel.node_id} has no known endpoint")
        endpoint = (endpoint[0], int(endpoint[1]))
        connection = channel.connection
        if connection is not None and not connection.closed and channel.endpoint == endpoint:
            return connection
        self._close_channel_connection(channel)
        connection = BrokerConnection(endpoint[0], endpoint[1], client_id=self.client_id,
                                      max_response_bytes=self.max_response_bytes,
                                      connect_timeout_ms=self.connect_timeout_ms)
        try:
            await connection.connect()
        except KafkaConnectionError as exc:
            raise InterBrokerError(ErrorCode.broker_not_available, f"broker {channel.node_id}: {exc}") from None
        except KafkaClientError as exc:
            raise InterBrokerError(ErrorCode.network_exception, f"broker {channel.node_id}: {exc}") from None
        if self._closed:  # close() ran while we connected
            await connection.close()
            raise InterBrokerError(ErrorCode.broker_not_available, "inter-broker clients are closed")
        log.debug("connected to broker %d at %s:%d (%s)", channel.node_id, *endpoint, channel.name)
        channel.connection, channel.endpoint = connection, endpoint
        return connection

    def _drop(self, node_id: int, name: str, connection: BrokerConnection) -> None:
        channel = self._channels.get((node_id, name))
        if channel is not None and channel.connection is connection:
            self._close_channel_connection(channel)

    @staticmethod
    def _close_channel_connection(channel: _Channel) -> None:
        connection, channel.connection, channel.endpoint = channel.connection, None, None
        if connection is not None:
            # Fails its in-flight requests at once; the socket closes in the background.
            task = asyncio.get_running_loop().create_task(connection.close())
            task.add_done_callback(_ignore_result)

    def connected_nodes(self) -> set[int]:
        """Node ids with an open connection on some channel (for tests and status)."""
        return {c.node_id for c in self._channels.values() if c.connection is not None and not c.connection.closed}

    async def close(self) -> None:
        """Close every connection; later requests fail with BROKER_NOT_AVAILABLE."""
        self._closed = True
        connections = [c.connection for c in self._channels.values() if c.connection is not None]
        for channel in self._channels.values():
            channel.connection = channel.endpoint = None
        self._channels.clear()
        for connection in connections:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_MS / 1000):
                    await connection.close()
            except (TimeoutError, OSError):
                pass


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
