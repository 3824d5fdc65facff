"""InterBrokerClients: pooled connections to other brokers, reconnects, bounded waits, errors as codes."""

from __future__ import annotations

import asyncio
import functools

import pytest

from odradek import Broker
from odradek.broker.inter_broker import InterBrokerClients, InterBrokerError
from odradek.client.connection import payload_class
from odradek.protocol.errors import ErrorCode


def async_test(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))
    return run


def api_versions(version: int = 3):
    return payload_class(18, version, True)(**({"client_software_name": "t", "client_software_version": "1"}
                                               if version >= 3 else {}))


def metadata_request():
    return payload_class(3, 12, True)(topics=None, allow_auto_topic_creation=False,
                                      include_topic_authorized_operations=False)


@async_test
async def test_requests_share_one_connection_per_broker_and_channel():
    async with Broker() as broker:
        clients = InterBrokerClients(None, resolve_endpoint=lambda node: ("127.0.0.1", broker.port))
        try:
            first = await clients.request(1, 3, 12, metadata_request(), 5)
            assert [b.port for b in first.brokers] == [broker.port]
            connection = clients._channels[(1, "control")].connection
            results = await asyncio.gather(*(clients.request(1, 18, 3, api_versions(), 5) for _ in range(5)))
            assert all(r.error_code is ErrorCode.none for r in results)
            assert clients._channels[(1, "control")].connection is connection
            await clients.request(1, 18, 3, api_versions(), 5, channel="replica-fetcher")
            assert clients._channels[(1, "replica-fetcher")].connection is not connection
            assert clients.connected_nodes() == {1}
        finally:
            await clients.close()
        with pytest.raises(InterBrokerError) as closed:
            await clients.request(1, 18, 3, api_versions(), 5)
        assert closed.value.error_code is ErrorCode.broker_not_available


@async_test
async def test_a_broken_connection_is_replaced_at_the_next_request_and_endpoints_are_followed():
    first, second = Broker(), Broker()
    await first.start()
    await second.start()
    endpoint = {"port": first.port}
    clients = InterBrokerClients(None, resolve_endpoint=lambda node: ("127.0.0.1", endpoint["port"]))
    try:
        await clients.request(1, 18, 3, api_versions(), 5)
        await first.stop()
        with pytest.raises(InterBrokerError) as failed:
            await clients.request(1, 3, 12, metadata_request(), 5)
        assert failed.value.error_code in (ErrorCode.network_exception, ErrorCode.broker_not_available)
        endpoint["port"] = second.port  # the broker came back elsewhere
        response = await clients.request(1, 3, 12, metadata_request(), 5)
        assert [b.port for b in response.brokers] == [second.port]
    finally:
        await clients.close()
        await second.stop()


@async_test
async def test_unknown_endpoint_unreachable_and_unsupported_version_are_error_codes():
    clients = InterBrokerClients(None, resolve_endpoint=lambda node: None)
    with pytest.raises(InterBrokerError) as unknown:
        await clients.request(9, 18, 3, api_versions(), 1)
    assert unknown.value.error_code is ErrorCode.broker_not_available
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    refused = InterBrokerClients(None, resolve_endpoint=lambda node: ("127.0.0.1", port))
    with pytest.raises(InterBrokerError) as down:
        await refused.request(1, 18, 3, api_versions(), 1)
    assert down.value.error_code is ErrorCode.broker_not_available
    with pytest.raises(ValueError):
        await refused.request(1, 18, 2, api_versions(3), 1)  # the object is v3, not v2
    async with Broker() as broker:
        clients = InterBrokerClients(None, resolve_endpoint=lambda node: ("127.0.0.1", broker.port))
        try:
            # Vote (KRaft's election, API 52): odradek's quorum is etcd, so no broker serves it.
            vote = payload_class(52, 0, True)(cluster_id=None, topics=())
            with pytest.raises(InterBrokerError) as unsupported:
                await clients.request(1, 52, 0, vote, 5)
            assert unsupported.value.error_code is ErrorCode.unsupported_version
        finally:
            await clients.close()


@async_test
async def test_a_silent_broker_times_out_within_the_bound():
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)
        await reader.read()  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = InterBrokerClients(None, resolve_endpoint=lambda node: ("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(InterBrokerError) as timed_out:
            await clients.request(1, 18, 3, api_versions(), 0.3)  # stuck in the ApiVersions handshake
        assert timed_out.value.error_code is ErrorCode.request_timed_out
        assert loop.time() - started < 2
    finally:
        await clients.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
