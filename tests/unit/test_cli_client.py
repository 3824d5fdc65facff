"""The CLI's Kafka client against a small in-process fake broker that speaks the real protocol.

`FakeBroker` answers with kio-encoded responses over a real socket, so framing, header versions,
ApiVersions negotiation, pipelining and the record batch handling of `odradek.client` are all
exercised without the real broker. It is deliberately tiny: one node, logs as bytearrays.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from datetime import timedelta

import pytest

from odradek.client.client import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    Client,
    decode_fetched,
    parse_bootstrap,
)
from odradek.client.connection import (
    CLIENT_VERSIONS,
    BrokerConnection,
    KafkaClientError,
    KafkaConnectionError,
    KafkaError,
    RequestTimeoutError,
    make,
    payload_class,
    payload_module,
)
from odradek.protocol import framing
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import (
    Compression,
    build_batch,
    iter_headers,
    patch_base_offset,
    validate_batch,
)


class FakeBroker:
    """One fake node (id 1) serving ApiVersions, Metadata, CreateTopics, DeleteTopics,
    DescribeConfigs, Produce, Fetch and ListOffsets from in-memory logs."""

    def __init__(
        self,
        *,
        api_versions_max: int = 3,
        advertised: dict[int, tuple[int, int]] | None = None,
        silent_api_keys: set[int] = frozenset(),
        huge_response: bool = False,
        garbage_api_keys: set[int] = frozenset(),
    ) -> None:
        self.garbage_api_keys = set(garbage_api_keys)
        self.api_versions_max = api_versions_max
        self.advertised = dict(advertised or CLIENT_VERSIONS)
        self.silent_api_keys = set(silent_api_keys)
        self.huge_response = huge_response
        self.topics: dict[str, list[bytearray]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[int, int]] = []  # (api key, version) as received
        self.truncate_fetch_tail_bytes = 0
        self.fail_next_produces: list[
            ErrorCode
        ] = []  # test hook: answer the next produces with these
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # -- log helpers ---------------------------------------------------------------------------
    def log_end_offset(self, topic: str, partition: int) -> int:
        headers = list(iter_headers(self.topics[topic][partition]))
        return headers[-1].next_offset if headers else 0

    def append(self, topic: str, partition: int, batch: bytes) -> int:
        log = self.topics[topic][partition]
        base = self.log_end_offset(topic, partition)
        data = bytearray(batch)
        patch_base_offset(data, 0, base)
        log += data
        return base

    # -- protocol ------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                frame = await reader.readexactly(size)
                api_key, api_version, correlation_id = framing.peek_api(frame)
                self.requests.append((api_key, api_version))
                if api_key == 18 and api_version > self.api_versions_max:
                    response = make(
                        payload_class(18, 0, False),
                        error_code=ErrorCode.unsupported_version,
                        api_keys=(),
                    )
                    self._write(writer, 18, 0, correlation_id, response)
                    continue
                request_cls = payload_class(api_key, api_version, True)
                header = framing.parse_request_header(frame, request_cls.__flexible__)
                from kio.serial import entity_reader

                request, _ = entity_reader(request_cls)(frame, header.body_offset)
                if api_key in self.silent_api_keys:
                    continue
                if api_key in self.garbage_api_keys:
                    writer.write(struct.pack(">ii", 6, correlation_id) + b"\xff\xff")
                    await writer.drain()
                    continue
                if self.huge_response:
                    writer.write(struct.pack(">ii", 1 << 30, correlation_id))
                    await writer.drain()
                    continue
                response = self._handle(api_key, api_version, request)
                if response is None:  # Produce with acks=0
                    continue
                self._write(writer, api_key, api_version, correlation_id, response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _write(self, writer, api_key, api_version, correlation_id, response) -> None:
        from kio.serial import entity_writer

        cls = type(response)
        body = io.BytesIO()
        entity_writer(cls)(body, response)
        flexible = cls.__flexible__ and api_key != 18
        writer.write(
            framing.response_header(correlation_id, flexible, len(body.getvalue()))
            + body.getvalue()
        )

    def _handle(self, api_key: int, version: int, request):
        m = payload_module(api_key, version, False)
        if api_key == 18:
            keys = tuple(
                make(m.ApiVersion, api_key=k, min_version=lo, max_version=hi)
                for k, (lo, hi) in sorted(self.advertised.items())
            )
            return make(
                m.ApiVersionsResponse,
                error_code=ErrorCode.none,
                api_keys=keys,
                throttle_time=timedelta(0),
            )
        if api_key == 3:
            names = (
                sorted(self.topics) if request.topics is None else [t.name for t in request.topics]
            )
            topics = []
            for name in names:
                if name not in self.topics and getattr(request, "allow_auto_topic_creation", False):
                    self.topics[name] = [bytearray()]
                if name not in self.topics:
                    topics.append(
                        make(
                            m.MetadataResponseTopic,
                            error_code=ErrorCode.unknown_topic_or_partition,
                            name=name,
                            topic_id=None,
                            partitions=(),
                        )
                    )
                    continue
                partitions = tuple(
                    make(
                        m.MetadataResponsePartition,
                        error_code=ErrorCode.none,
                        partition_index=i,
                        leader_id=1,
                        leader_epoch=0,
                        replica_nodes=(1,),
                        isr_nodes=(1,),
                        offline_replicas=(),
                    )
                    for i in range(len(self.topics[name]))
                )
                topics.append(
                    make(
                        m.MetadataResponseTopic,
                        error_code=ErrorCode.none,
                        name=name,
                        topic_id=None,
                        partitions=partitions,
                    )
                )
            return make(
                m.MetadataResponse,
                throttle_time=timedelta(0),
                brokers=(
                    make(m.MetadataResponseBroker, node_id=1, host="localhost", port=self.port),
                ),
                cluster_id="fake",
                controller_id=1,
                topics=tuple(topics),
            )
        if api_key == 19:
            results = []
            for t in request.topics:
                if t.name in self.topics:
                    error, message = (
                        ErrorCode.topic_already_exists,
                        f"Topic '{t.name}' already exists.",
                    )
                else:
                    error, message = ErrorCode.none, None
                    self.topics[t.name] = [
                        bytearray() for _ in range(t.num_partitions if t.num_partitions > 0 else 1)
                    ]
                    self.configs[t.name] = {c.name: c.value for c in t.configs}
                results.append(
                    make(
                        m.CreatableTopicResult,
                        name=t.name,
                        topic_id=None,
                        error_code=error,
                        error_message=message,
                        num_partitions=-1,
                        replication_factor=-1,
                        configs=(),
                    )
                )
            return make(m.CreateTopicsResponse, throttle_time=timedelta(0), topics=tuple(results))
        if api_key == 20:
            names = (
                [t.name for t in request.topics]
                if hasattr(request, "topics")
                else list(request.topic_names)
            )
            results = []
            for name in names:
                error = (
                    ErrorCode.none
                    if self.topics.pop(name, None) is not None
                    else ErrorCode.unknown_topic_or_partition
                )
                results.append(
                    make(
                        m.DeletableTopicResult,
                        name=name,
                        topic_id=None,
                        error_code=error,
                        error_message=None,
                    )
                )
            return make(
                m.DeleteTopicsResponse, throttle_time=timedelta(0), responses=tuple(results)
            )
        if api_key == 32:
            results = []
            for r in request.resources:
                configs = {
                    "cleanup.policy": ("delete", True),
                    **{k: (v, False) for k, v in self.configs.get(r.resource_name, {}).items()},
                }
                results.append(
                    make(
                        m.DescribeConfigsResult,
                        error_code=ErrorCode.none,
                        error_message=None,
                        resource_type=r.resource_type,
                        resource_name=r.resource_name,
                        configs=tuple(
                            make(
                                m.DescribeConfigsResourceResult,
                                name=k,
                                value=v,
                                read_only=False,
                                is_default=default,
                                config_source=5 if default else 1,
                                is_sensitive=False,
                                synonyms=(),
                                config_type=0,
                                documentation=None,
                            )
                            for k, (v, default) in configs.items()
                        ),
                    )
                )
            return make(
                m.DescribeConfigsResponse, throttle_time=timedelta(0), results=tuple(results)
            )
        if api_key == 0:
            topics = []
            for t in request.topic_data:
                partitions = []
                for p in t.partition_data:
                    checked = validate_batch(p.records, 0, len(p.records))
                    if self.fail_next_produces:
                        error, base = self.fail_next_produces.pop(0), -1
                    elif t.name not in self.topics or p.index >= len(self.topics[t.name]):
                        error, base = ErrorCode.unknown_topic_or_partition, -1
                    elif not hasattr(checked, "base_offset"):
                        error, base = checked.error, -1
                    else:
                        error, base = ErrorCode.none, self.append(t.name, p.index, bytes(p.records))
                    partitions.append(
                        make(
                            m.PartitionProduceResponse,
                            index=p.index,
                            error_code=error,
                            base_offset=base,
                            log_append_time=None,
                            log_start_offset=0,
                            record_errors=(),
                            error_message=None,
                        )
                    )
                topics.append(
                    make(m.TopicProduceResponse, name=t.name, partition_responses=tuple(partitions))
                )
            if request.acks == 0:
                return None
            return make(m.ProduceResponse, responses=tuple(topics), throttle_time=timedelta(0))
        if api_key == 1:
            topics = []
            for t in request.topics:
                partitions = []
                for p in t.partitions:
                    records = b""
                    if t.topic not in self.topics:
                        error, hw = ErrorCode.unknown_topic_or_partition, -1
                    else:
                        hw = self.log_end_offset(t.topic, p.partition)
                        if p.fetch_offset > hw:
                            error = ErrorCode.offset_out_of_range
                        else:
                            error = ErrorCode.none
                            log = self.topics[t.topic][p.partition]
                            start = next(
                                (
                                    h.position
                                    for h in iter_headers(log)
                                    if h.next_offset > p.fetch_offset
                                ),
                                len(log),
                            )
                            records = bytes(log[start:])
                            if self.truncate_fetch_tail_bytes and records:
                                records = records[: len(records) - self.truncate_fetch_tail_bytes]
                    partitions.append(
                        make(
                            m.PartitionData,
                            partition_index=p.partition,
                            error_code=error,
                            high_watermark=hw,
                            last_stable_offset=hw,
                            log_start_offset=0,
                            aborted_transactions=None,
                            preferred_read_replica=-1,
                            records=records,
                        )
                    )
                topics.append(
                    make(m.FetchableTopicResponse, topic=t.topic, partitions=tuple(partitions))
                )
            return make(
                m.FetchResponse,
                throttle_time=timedelta(0),
                error_code=ErrorCode.none,
                session_id=0,
                responses=tuple(topics),
            )
        if api_key == 2:
            topics = []
            for t in request.topics:
                partitions = []
                for p in t.partitions:
                    log = self.topics[t.name][p.partition_index]
                    if p.timestamp == EARLIEST_TIMESTAMP:
                        offset, ts = 0, -1
                    elif p.timestamp == LATEST_TIMESTAMP:
                        offset, ts = self.log_end_offset(t.name, p.partition_index), -1
                    else:
                        from odradek.protocol.records import iter_records

                        found = [
                            (r.offset, r.timestamp)
                            for h in iter_headers(log)
                            for r in iter_records(
                                bytes(log[h.position : h.position + h.size_bytes])
                            )
                            if r.timestamp >= p.timestamp
                        ]
                        offset, ts = found[0] if found else (-1, -1)
                    partitions.append(
                        make(
                            m.ListOffsetsPartitionResponse,
                            partition_index=p.partition_index,
                            error_code=ErrorCode.none,
                            timestamp=ts,
                            offset=offset,
                            leader_epoch=0,
                        )
                    )
                topics.append(
                    make(m.ListOffsetsTopicResponse, name=t.name, partitions=tuple(partitions))
                )
            return make(m.ListOffsetsResponse, throttle_time=timedelta(0), topics=tuple(topics))
        raise AssertionError(f"fake broker does not serve api {api_key}")


class FakeBrokerThread:
    """A FakeBroker on an event loop of its own, for synchronous callers (the CLI tests)."""

    def __init__(self, **options) -> None:
        self.broker = FakeBroker(**options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeBroker:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(5)
        return self.broker

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


# -- connection ----------------------------------------------------------------------------------


def test_connection_negotiates_highest_common_version_per_api():
    async def scenario():
        advertised = {**CLIENT_VERSIONS, 3: (0, 9), 1: (4, 17)}
        async with (
            FakeBroker(advertised=advertised) as broker,
            BrokerConnection("127.0.0.1", broker.port) as connection,
        ):
            assert connection.versions[3] == 9  # broker's max is lower
            assert connection.versions[1] == CLIENT_VERSIONS[1][1]  # client's max is lower
            assert connection.versions[18] == 3
            assert broker.requests[0] == (18, 3)

    run(scenario())


def test_connection_falls_back_to_api_versions_v0_on_unsupported_version():
    async def scenario():
        async with FakeBroker(
            api_versions_max=0, advertised={**CLIENT_VERSIONS, 18: (0, 0)}
        ) as broker:
            async with BrokerConnection("127.0.0.1", broker.port) as connection:
                assert connection.versions[18] == 0
                assert 3 in connection.versions
            assert broker.requests[:2] == [(18, 3), (18, 0)]

    run(scenario())


def test_api_with_no_common_version_is_a_clear_error():
    async def scenario():
        async with (
            FakeBroker(advertised={**CLIENT_VERSIONS, 32: (5, 9)}) as broker,
            BrokerConnection("127.0.0.1", broker.port) as connection,
        ):
            assert 32 not in connection.versions
            with pytest.raises(KafkaClientError, match="describe_configs"):
                connection.request_class(32)

    run(scenario())


def test_pipelined_requests_get_their_own_responses():
    async def scenario():
        async with FakeBroker() as broker:
            broker.topics = {f"t{i}": [bytearray()] for i in range(20)}
            async with BrokerConnection("127.0.0.1", broker.port) as connection:
                module = connection.request_module(3)

                async def ask(name):
                    response = await connection.send(
                        make(
                            module.MetadataRequest,
                            topics=(make(module.MetadataRequestTopic, name=name, topic_id=None),),
                            allow_auto_topic_creation=False,
                            include_topic_authorized_operations=False,
                        )
                    )
                    return response.topics[0].name

                names = [f"t{i}" for i in range(20)]
                assert await asyncio.gather(*(ask(n) for n in names)) == names

    run(scenario())


def test_cannot_connect_is_one_clear_line():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(
            KafkaConnectionError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"
        ):
            await BrokerConnection("127.0.0.1", port).connect()

    run(scenario())


def test_response_larger_than_the_bound_fails_the_request():
    async def scenario():
        async with FakeBroker() as broker:
            connection = await BrokerConnection(
                "127.0.0.1", broker.port, max_response_bytes=1 << 20
            ).connect()
            broker.huge_response = True
            module = connection.request_module(3)
            with pytest.raises(KafkaConnectionError, match="exceeds the limit"):
                await connection.send(
                    make(
                        module.MetadataRequest,
                        topics=None,
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                )
            await connection.close()

    run(scenario())


def test_malformed_response_fails_the_request_and_closes_the_connection():
    async def scenario():
        async with (
            FakeBroker(garbage_api_keys={3}) as broker,
            BrokerConnection("127.0.0.1", broker.port) as connection,
        ):
            module = connection.request_module(3)
            with pytest.raises(KafkaConnectionError, match="malformed MetadataResponse"):
                await connection.send(
                    make(
                        module.MetadataRequest,
                        topics=None,
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                )
            with pytest.raises(KafkaConnectionError, match="closed"):
                await connection.send(
                    make(
                        module.MetadataRequest,
                        topics=None,
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                )

    run(scenario())


def test_request_without_answer_times_out():
    async def scenario():
        async with (
            FakeBroker(silent_api_keys={3}) as broker,
            BrokerConnection("127.0.0.1", broker.port, request_timeout_ms=200) as connection,
        ):
            module = connection.request_module(3)
            with pytest.raises(RequestTimeoutError, match="timed out after 200 ms"):
                await connection.send(
                    make(
                        module.MetadataRequest,
                        topics=None,
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                )

    run(scenario())


def test_broker_closing_the_connection_fails_pending_requests():
    async def scenario():
        async with (
            FakeBroker(silent_api_keys={3}) as broker,
            BrokerConnection("127.0.0.1", broker.port) as connection,
        ):
            module = connection.request_module(3)
            pending = asyncio.ensure_future(
                connection.send(
                    make(
                        module.MetadataRequest,
                        topics=None,
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                )
            )
            await asyncio.sleep(0.05)
            connection._writer.transport.abort()  # the socket breaks under the request
            with pytest.raises(KafkaConnectionError):
                await pending

    run(scenario())


# -- client --------------------------------------------------------------------------------------


def test_parse_bootstrap():
    assert parse_bootstrap("a:1,b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap("host") == [("host", 9092)]
    assert parse_bootstrap("[::1]:9093") == [("::1", 9093)]
    with pytest.raises(KafkaClientError):
        parse_bootstrap("a:notaport")
    with pytest.raises(KafkaClientError):
        parse_bootstrap("")


def test_client_creates_describes_and_deletes_topics():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            await client.create_topic("events", 3, 1, {"retention.ms": "1000"})
            with pytest.raises(KafkaError) as info:
                await client.create_topic("events", 3)
            assert info.value.error_code == ErrorCode.topic_already_exists
            metadata = await client.metadata()
            assert [p.partition for p in metadata.topics["events"].partitions] == [0, 1, 2]
            assert metadata.topics["events"].partitions[0].isr == (1,)
            configs = {c.name: c for c in await client.describe_topic_configs("events")}
            assert (
                configs["retention.ms"].value == "1000" and not configs["retention.ms"].is_default
            )
            assert configs["cleanup.policy"].is_default
            await client.delete_topic("events")
            with pytest.raises(KafkaError) as info:
                await client.delete_topic("events")
            assert info.value.error_code == ErrorCode.unknown_topic_or_partition

    run(scenario())


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_then_fetch_round_trips_every_codec(codec):
    from odradek.protocol.compression import NAMES

    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray(), bytearray()]
            records = [
                (f"k{i}".encode(), f"v{i}".encode() * 10, [("h", b"x")], 1_700_000_000_000 + i)
                for i in range(50)
            ]
            assert await client.produce("t", 1, records[:20], compression=NAMES[codec]) == 0
            assert await client.produce("t", 1, records[20:], compression=NAMES[codec]) == 20
            result = await client.fetch("t", 1, 0)
            assert [(r.key, r.value, r.timestamp) for r in result.records] == [
                (k, v, ts) for k, v, _, ts in records
            ]
            assert result.records[0].headers == (("h", b"x"),)
            assert result.next_offset == 50 and result.high_watermark == 50

    run(scenario())


def test_fetch_inside_a_batch_skips_earlier_records():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            await client.produce("t", 0, [(None, str(i).encode(), [], 0) for i in range(10)])
            result = await client.fetch("t", 0, 7)
            assert [r.offset for r in result.records] == [7, 8, 9]
            assert result.next_offset == 10

    run(scenario())


def test_fetch_drops_a_partial_trailing_batch_and_resumes_there():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            await client.produce("t", 0, [(None, b"a", [], 0), (None, b"b", [], 0)])
            await client.produce("t", 0, [(None, b"c", [], 0)])
            broker.truncate_fetch_tail_bytes = 5
            result = await client.fetch("t", 0, 0)
            assert [r.value for r in result.records] == [b"a", b"b"]
            assert result.next_offset == 2
            broker.truncate_fetch_tail_bytes = 0
            assert [r.value for r in (await client.fetch("t", 0, 2)).records] == [b"c"]

    run(scenario())


def test_fetch_out_of_range_raises_or_resets():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            await client.produce("t", 0, [(None, b"a", [], 0)])
            with pytest.raises(KafkaError) as info:
                await client.fetch("t", 0, 99)
            assert info.value.error_code == ErrorCode.offset_out_of_range
            reset = await client.fetch("t", 0, 99, on_out_of_range="earliest")
            assert reset.reset_from == 99 and reset.next_offset == 0 and reset.records == []
            latest = await client.fetch("t", 0, 99, on_out_of_range="latest")
            assert latest.next_offset == 1

    run(scenario())


def test_list_offsets_earliest_latest_and_by_timestamp():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            await client.produce("t", 0, [(None, b"a", [], 1000), (None, b"b", [], 2000)])
            await client.produce("t", 0, [(None, b"c", [], 3000)])
            assert (await client.list_offset("t", 0, EARLIEST_TIMESTAMP))[0] == 0
            assert (await client.list_offset("t", 0, LATEST_TIMESTAMP))[0] == 3
            assert await client.list_offset("t", 0, 1500) == (1, 2000)
            assert (await client.list_offset("t", 0, 9999))[0] == -1

    run(scenario())


def test_unknown_topic_and_partition_are_kafka_errors():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            with pytest.raises(KafkaError, match="UNKNOWN_TOPIC_OR_PARTITION"):
                await client.fetch("missing", 0, 0)
            broker.topics["t"] = [bytearray()]
            with pytest.raises(KafkaError, match="partition t-5"):
                await client.produce("t", 5, [(None, b"a", [], 0)])

    run(scenario())


def test_produce_with_acks_zero_returns_none_and_the_connection_stays_usable():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            assert await client.produce("t", 0, [(None, b"a", [], 0)], acks=0) is None
            assert await client.produce("t", 0, [(None, b"b", [], 0)]) == 1

    run(scenario())


def test_decode_fetched_skips_control_batches():
    data = bytearray(build_batch([(None, b"a", [], 0)]))
    control = bytearray(
        build_batch([(b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00", [], 0)], base_offset=1)
    )
    control[22] |= 0x20  # control bit in the attributes' low byte
    from odradek.protocol.records import compute_crc

    struct.pack_into(">I", control, 17, compute_crc(control, 0, len(control)))
    data += control + build_batch(
        [(None, b"c", [], 0)], base_offset=2, compression=Compression.GZIP
    )
    result = decode_fetched(bytes(data), 0)
    assert [r.value for r in result.records] == [b"a", b"c"]
    assert result.next_offset == 3 and result.control_batches == 1


def test_produce_retries_errors_that_mean_nothing_was_appended():
    async def scenario():
        async with FakeBroker() as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            broker.fail_next_produces = [
                ErrorCode.not_leader_or_follower,
                ErrorCode.leader_not_available,
            ]
            assert await client.produce("t", 0, [(None, b"a", [], 0)]) == 0
            assert broker.log_end_offset("t", 0) == 1  # appended once, not duplicated
            broker.fail_next_produces = [ErrorCode.corrupt_message]
            with pytest.raises(KafkaError, match="CORRUPT_MESSAGE"):
                await client.produce("t", 0, [(None, b"b", [], 0)])
            broker.fail_next_produces = [ErrorCode.not_leader_or_follower] * 3
            with pytest.raises(KafkaError, match="NOT_LEADER_OR_FOLLOWER"):
                await client.produce("t", 0, [(None, b"c", [], 0)])

    run(scenario())


def test_client_reconnects_after_the_broker_closed_its_connection():
    async def scenario():
        async with FakeBroker(garbage_api_keys={32}) as broker, Client(broker.bootstrap) as client:
            broker.topics["t"] = [bytearray()]
            with pytest.raises(KafkaConnectionError):
                await client.describe_topic_configs("t")
            assert client.connection.closed
            assert "t" in (await client.metadata()).topics  # a fresh connection
            assert await client.produce("t", 0, [(None, b"a", [], 0)]) == 0

    run(scenario())
