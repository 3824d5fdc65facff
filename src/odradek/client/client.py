"""`Client`: a small asyncio Kafka client for the CLI and our tools.

    async with Client("127.0.0.1:9092") as client:
        await client.create_topic("events", num_partitions=3)
        await client.produce("events", 0, [(b"key", b"value", [], now_ms)], compression=Compression.ZSTD)
        result = await client.fetch("events", 0, offset=0)

It keeps one `BrokerConnection` per broker (the bootstrap connection, then one per node id
learned from Metadata) and a cache of topic metadata that `metadata()` refreshes. Produce and
Fetch go to the partition's leader. Errors in responses become `KafkaError` with the Kafka error
code; connection problems become `KafkaConnectionError`. One line of text each, for users.

Consumer groups (JoinGroup/SyncGroup/OffsetCommit) come later; `consume --group` will plug an
offset committer into the CLI's consume loop (see `odradek.cli.OffsetCommitter`).
Owned by one task on one event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Self

from odradek.client.connection import (
    BrokerConnection,
    KafkaClientError,
    KafkaConnectionError,
    KafkaError,
    make,
)
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import Compression, Record, build_batch, iter_headers, iter_records

PRODUCE, FETCH, LIST_OFFSETS, METADATA, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS = (
    0,
    1,
    2,
    3,
    19,
    20,
    32,
)

EARLIEST_TIMESTAMP = -2  # ListOffsets: the log start offset
LATEST_TIMESTAMP = -1  # ListOffsets: the log end offset (high watermark for consumers)
DEFAULT_FETCH_MAX_BYTES = 50 * 1024 * 1024  # fetch.max.bytes
DEFAULT_PARTITION_MAX_BYTES = 1024 * 1024  # max.partition.fetch.bytes
DEFAULT_ADMIN_TIMEOUT_MS = 30_000
TOPIC_RESOURCE_TYPE = 2  # DescribeConfigs resource type for topics
DEFAULT_PORT = 9092
PRODUCE_ATTEMPTS = 3
RETRY_BACKOFF_MS = 100  # retry.backoff.ms
# Produce errors that mean the leader did not append the batch: safe to send again.
NOT_APPENDED_RETRIABLE = frozenset(
    {
        ErrorCode.not_leader_or_follower,
        ErrorCode.leader_not_available,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.not_enough_replicas,
    }
)


@dataclass(frozen=True, slots=True)
class BrokerNode:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    partition: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error_code: ErrorCode = ErrorCode.none


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    error_code: ErrorCode
    partitions: tuple[PartitionMetadata, ...]
    topic_id: Any = None
    is_internal: bool = False


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    cluster_id: str | None
    controller_id: int
    brokers: dict[int, BrokerNode]
    topics: dict[str, TopicMetadata]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str | None
    read_only: bool = False
    is_default: bool = False
    is_sensitive: bool = False


@dataclass(slots=True)
class FetchResult:
    """Records at or after the fetch offset, from complete batches only.

    `next_offset` is where the next fetch starts: after the last complete batch returned (control
    batches included), or the fetch offset again when nothing complete arrived.
    """

    records: list[Record]
    next_offset: int
    high_watermark: int
    log_start_offset: int
    reset_from: int | None = None  # the offset that was out of range when the client reset
    control_batches: int = 0


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]` (a bare host means port 9092; `[v6]:port` for IPv6)."""
    servers = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":") or str(DEFAULT_PORT)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, str(DEFAULT_PORT)
        try:
            port = int(port_text)
        except ValueError:
            raise KafkaClientError(
                f"invalid bootstrap server {item!r}: port is not a number"
            ) from None
        if not host or not 0 < port < 65536:
            raise KafkaClientError(f"invalid bootstrap server {item!r}")
        servers.append((host, port))
    if not servers:
        raise KafkaClientError("no bootstrap server given")
    return servers


def _check(error_code: ErrorCode, message: str | None = None, *, context: str = "") -> None:
    if error_code != ErrorCode.none:
        raise KafkaError(error_code, message, context=context)


class Client:
    """A Kafka client over one connection per broker; see the module docstring."""

    def __init__(
        self, bootstrap: str, *, client_id: str = "odradek", request_timeout_ms: int = 30_000
    ) -> None:
        self.bootstrap_servers = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self._bootstrap: BrokerConnection | None = None
        self._nodes: dict[int, BrokerConnection] = {}
        self._metadata: ClusterMetadata | None = None

    # -- connections ------------------------------------------------------------------------
    async def connect(self) -> Self:
        failures = []
        for host, port in self.bootstrap_servers:
            connection = BrokerConnection(
                host, port, client_id=self.client_id, request_timeout_ms=self.request_timeout_ms
            )
            try:
                self._bootstrap = await connection.connect()
                return self
            except KafkaConnectionError as exc:
                failures.append(str(exc))
        raise KafkaConnectionError("; ".join(failures))

    async def close(self) -> None:
        connections = {id(c): c for c in [self._bootstrap, *self._nodes.values()] if c is not None}
        for connection in connections.values():
            await connection.close()
        self._nodes.clear()
        self._bootstrap = None

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connection(self) -> BrokerConnection:
        if self._bootstrap is None:
            raise KafkaClientError("client is not connected")
        return self._bootstrap

    async def _any_connection(self) -> BrokerConnection:
        """The bootstrap connection, reconnected once if the broker closed it."""
        connection = self.connection
        if connection.closed:
            stale = connection
            self._nodes = {k: c for k, c in self._nodes.items() if c is not stale}
            await self.connect()
            connection = self.connection
        return connection

    async def _node(self, node_id: int) -> BrokerConnection:
        """The connection to one broker by node id (the bootstrap one when it is that broker)."""
        connection = self._nodes.get(node_id)
        if connection is not None and not connection.closed:
            return connection
        self._nodes.pop(node_id, None)
        metadata = self._metadata or await self.metadata()
        node = metadata.brokers.get(node_id)
        if node is None:
            raise KafkaClientError(f"broker {node_id} is not in the cluster metadata")
        bootstrap = await self._any_connection()
        if (node.host, node.port) == (bootstrap.host, bootstrap.port) or len(metadata.brokers) == 1:
            # A single broker is the one we are connected to, whatever address it advertises.
            connection = bootstrap
        else:
            connection = await BrokerConnection(
                node.host,
                node.port,
                client_id=self.client_id,
                request_timeout_ms=self.request_timeout_ms,
            ).connect()
        self._nodes[node_id] = connection
        return connection

    async def _leader(self, topic: str, partition: int) -> BrokerConnection:
        metadata = self._metadata
        if metadata is None or topic not in metadata.topics:
            metadata = await self.metadata([topic])
        partition_metadata = self._partition(metadata, topic, partition)
        if partition_metadata.leader_id < 0:
            metadata = await self.metadata([topic])
            partition_metadata = self._partition(metadata, topic, partition)
            if partition_metadata.leader_id < 0:
                raise KafkaError(ErrorCode.leader_not_available, context=f"{topic}-{partition}")
        return await self._node(partition_metadata.leader_id)

    @staticmethod
    def _partition(metadata: ClusterMetadata, topic: str, partition: int) -> PartitionMetadata:
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, context=f"topic {topic!r}")
        _check(topic_metadata.error_code, context=f"topic {topic!r}")
        for p in topic_metadata.partitions:
            if p.partition == partition:
                return p
        raise KafkaError(
            ErrorCode.unknown_topic_or_partition,
            f"topic has {len(topic_metadata.partitions)} partitions",
            context=f"partition {topic}-{partition}",
        )

    # -- metadata and admin -----------------------------------------------------------------
    async def metadata(
        self, topics: Sequence[str] | None = None, *, allow_auto_topic_creation: bool = False
    ) -> ClusterMetadata:
        """Brokers and topics (all topics when `topics` is None). Per-topic errors are kept in
        `TopicMetadata.error_code`, not raised."""
        connection = await self._any_connection()
        module = connection.request_module(METADATA)
        requested = (
            None
            if topics is None
            else tuple(
                make(module.MetadataRequestTopic, name=name, topic_id=None) for name in topics
            )
        )
        response = await connection.send(
            make(
                module.MetadataRequest,
                topics=requested,
                allow_auto_topic_creation=allow_auto_topic_creation,
                include_topic_authorized_operations=False,
                include_cluster_authorized_operations=False,
            )
        )
        brokers = {
            int(b.node_id): BrokerNode(
                int(b.node_id), b.host, int(b.port), getattr(b, "rack", None)
            )
            for b in response.brokers
        }
        found = {}
        for t in response.topics:
            partitions = tuple(
                sorted(
                    (
                        PartitionMetadata(
                            int(p.partition_index),
                            int(p.leader_id),
                            int(getattr(p, "leader_epoch", -1)),
                            tuple(int(r) for r in p.replica_nodes),
                            tuple(int(r) for r in p.isr_nodes),
                            p.error_code,
                        )
                        for p in t.partitions
                    ),
                    key=lambda p: p.partition,
                )
            )
            found[t.name] = TopicMetadata(
                t.name,
                t.error_code,
                partitions,
                getattr(t, "topic_id", None),
                bool(getattr(t, "is_internal", False)),
            )
        metadata = ClusterMetadata(
            getattr(response, "cluster_id", None),
            int(getattr(response, "controller_id", -1)),
            brokers,
            found,
        )
        if topics is None or self._metadata is None:
            self._metadata = metadata
        else:
            self._metadata = ClusterMetadata(
                metadata.cluster_id,
                metadata.controller_id,
                brokers,
                {**self._metadata.topics, **found},
            )
        return metadata

    async def _controller(self) -> BrokerConnection:
        metadata = self._metadata or await self.metadata([])
        if metadata.controller_id >= 0 and metadata.controller_id in metadata.brokers:
            return await self._node(metadata.controller_id)
        return await self._any_connection()

    async def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str] | None = None,
        *,
        timeout_ms: int = DEFAULT_ADMIN_TIMEOUT_MS,
        validate_only: bool = False,
    ) -> None:
        """Create one topic; -1 takes the broker's `num.partitions` / `default.replication.factor`."""
        connection = await self._controller()
        module = connection.request_module(CREATE_TOPICS)
        topic = make(
            module.CreatableTopic,
            name=name,
            num_partitions=num_partitions,
            replication_factor=replication_factor,
            assignments=(),
            configs=tuple(
                make(module.CreatableTopicConfig, name=k, value=v)
                for k, v in (configs or {}).items()
            ),
        )
        response = await connection.send(
            make(
                module.CreateTopicsRequest,
                topics=(topic,),
                timeout=timedelta(milliseconds=timeout_ms),
                validate_only=validate_only,
            )
        )
        for result in response.topics:
            _check(
                result.error_code, getattr(result, "error_message", None), context=f"topic {name!r}"
            )
        if self._metadata is not None:
            self._metadata.topics.pop(name, None)

    async def delete_topic(self, name: str, *, timeout_ms: int = DEFAULT_ADMIN_TIMEOUT_MS) -> None:
        connection = await self._controller()
        module = connection.request_module(DELETE_TOPICS)
        timeout = timedelta(milliseconds=timeout_ms)
        if hasattr(module, "DeleteTopicState"):
            request = make(
                module.DeleteTopicsRequest,
                timeout=timeout,
                topics=(make(module.DeleteTopicState, name=name, topic_id=None),),
            )
        else:
            request = make(module.DeleteTopicsRequest, topic_names=(name,), timeout=timeout)
        response = await connection.send(request)
        for result in response.responses:
            _check(
                result.error_code, getattr(result, "error_message", None), context=f"topic {name!r}"
            )
        if self._metadata is not None:
            self._metadata.topics.pop(name, None)

    async def describe_topic_configs(self, name: str) -> list[ConfigEntry]:
        connection = await self._any_connection()
        module = connection.request_module(DESCRIBE_CONFIGS)
        resource = make(
            module.DescribeConfigsResource,
            resource_type=TOPIC_RESOURCE_TYPE,
            resource_name=name,
            configuration_keys=None,
        )
        response = await connection.send(
            make(
                module.DescribeConfigsRequest,
                resources=(resource,),
                include_synonyms=False,
                include_documentation=False,
            )
        )
        entries = []
        for result in response.results:
            _check(result.error_code, result.error_message, context=f"configs of topic {name!r}")
            for c in result.configs:
                source = getattr(c, "config_source", None)
                is_default = bool(getattr(c, "is_default", False)) or source == 5  # DEFAULT_CONFIG
                entries.append(
                    ConfigEntry(
                        c.name, c.value, bool(c.read_only), is_default, bool(c.is_sensitive)
                    )
                )
        return entries

    # -- produce, fetch, list offsets -------------------------------------------------------
    async def produce(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
        *,
        compression: int = Compression.NONE,
        acks: int = -1,
        timeout_ms: int = 30_000,
    ) -> int | None:
        """Append one batch of (key, value, headers, timestamp_ms) to a partition; returns the
        base offset the leader assigned (None with acks=0)."""
        if acks not in (-1, 0, 1):
            raise KafkaClientError(f"acks must be -1 (all), 0 or 1, not {acks}")
        batch = build_batch(list(records), compression=compression)
        for attempt in range(PRODUCE_ATTEMPTS):
            try:
                return await self._produce_batch(topic, partition, batch, acks, timeout_ms)
            except KafkaError as exc:
                # Only errors that say the batch was not appended are retried, so no duplicates.
                if exc.error_code not in NOT_APPENDED_RETRIABLE or attempt == PRODUCE_ATTEMPTS - 1:
                    raise
                self._metadata = None
                await asyncio.sleep(RETRY_BACKOFF_MS / 1000)
        raise AssertionError("unreachable")

    async def _produce_batch(
        self, topic: str, partition: int, batch: bytes, acks: int, timeout_ms: int
    ) -> int | None:
        connection = await self._leader(topic, partition)
        module = connection.request_module(PRODUCE)
        request = make(
            module.ProduceRequest,
            transactional_id=None,
            acks=acks,
            timeout=timedelta(milliseconds=timeout_ms),
            topic_data=(
                make(
                    module.TopicProduceData,
                    name=topic,
                    partition_data=(
                        make(module.PartitionProduceData, index=partition, records=batch),
                    ),
                ),
            ),
        )
        response = await connection.send(
            request, expect_response=acks != 0, timeout_ms=timeout_ms + self.request_timeout_ms
        )
        if response is None:
            return None
        for topic_response in response.responses:
            for p in topic_response.partition_responses:
                if p.error_code in (
                    ErrorCode.not_leader_or_follower,
                    ErrorCode.unknown_topic_or_partition,
                ):
                    self._metadata = None  # stale; the next call refreshes
                _check(
                    p.error_code,
                    getattr(p, "error_message", None),
                    context=f"produce to {topic}-{partition}",
                )
                return int(p.base_offset)
        raise KafkaClientError(f"produce response for {topic}-{partition} has no partition")

    async def fetch(self, topic: str, partition: int, offset: int, **options: Any) -> FetchResult:
        """Records of one partition from `offset`; see `fetch_partitions` for the options."""
        return (await self.fetch_partitions(topic, {partition: offset}, **options))[partition]

    async def fetch_partitions(
        self,
        topic: str,
        offsets: dict[int, int],
        *,
        max_wait_ms: int = 500,
        min_bytes: int = 1,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        partition_max_bytes: int = DEFAULT_PARTITION_MAX_BYTES,
        isolation_level: int = 0,
        on_out_of_range: str = "raise",
    ) -> dict[int, FetchResult]:
        """Records of several partitions of one topic, each from its offset, in one Fetch per
        leader (sessionless, so each request names every partition).

        Records before the fetch offset inside the first batch are skipped (a fetch inside a
        batch returns the whole batch); a partial trailing batch is dropped. On
        OFFSET_OUT_OF_RANGE: raise (`"raise"`), or restart from the log start (`"earliest"`) or
        end (`"latest"`) as `auto.offset.reset` does; `reset_from` then holds the old offset and
        the result is empty, positioned at the new offset.
        """
        if on_out_of_range not in ("raise", "earliest", "latest"):
            raise ValueError(
                f"on_out_of_range must be raise, earliest or latest, not {on_out_of_range!r}"
            )
        by_leader: dict[int, tuple[BrokerConnection, dict[int, int]]] = {}
        for partition, offset in offsets.items():
            connection = await self._leader(topic, partition)
            by_leader.setdefault(id(connection), (connection, {}))[1][partition] = offset
        results: dict[int, FetchResult] = {}
        for connection, partition_offsets in by_leader.values():
            module = connection.request_module(FETCH)
            request = make(
                module.FetchRequest,
                cluster_id=None,
                replica_id=-1,
                max_wait=timedelta(milliseconds=max_wait_ms),
                min_bytes=min_bytes,
                max_bytes=max_bytes,
                isolation_level=isolation_level,
                session_id=0,
                session_epoch=-1,
                topics=(
                    make(
                        module.FetchTopic,
                        topic=topic,
                        partitions=tuple(
                            make(
                                module.FetchPartition,
                                partition=partition,
                                current_leader_epoch=-1,
                                fetch_offset=offset,
                                last_fetched_epoch=-1,
                                log_start_offset=-1,
                                partition_max_bytes=partition_max_bytes,
                            )
                            for partition, offset in partition_offsets.items()
                        ),
                    ),
                ),
                forgotten_topics_data=(),
                rack_id="",
            )
            response = await connection.send(
                request, timeout_ms=max_wait_ms + self.request_timeout_ms
            )
            _check(response.error_code, context=f"fetch from {topic}")
            for topic_response in response.responses:
                for data in topic_response.partitions:
                    partition = int(data.partition_index)
                    offset = partition_offsets.get(partition)
                    if offset is None:
                        continue
                    if (
                        data.error_code == ErrorCode.offset_out_of_range
                        and on_out_of_range != "raise"
                    ):
                        target = (
                            EARLIEST_TIMESTAMP
                            if on_out_of_range == "earliest"
                            else LATEST_TIMESTAMP
                        )
                        new_offset, _ = await self.list_offset(topic, partition, target)
                        results[partition] = FetchResult(
                            [],
                            new_offset,
                            int(data.high_watermark),
                            int(getattr(data, "log_start_offset", -1)),
                            offset,
                        )
                        continue
                    if data.error_code in (
                        ErrorCode.not_leader_or_follower,
                        ErrorCode.unknown_topic_or_partition,
                    ):
                        self._metadata = None  # stale; the next call refreshes
                    _check(
                        data.error_code,
                        context=f"fetch from {topic}-{partition} at offset {offset}",
                    )
                    result = decode_fetched(bytes(data.records or b""), offset)
                    result.high_watermark = int(data.high_watermark)
                    result.log_start_offset = int(getattr(data, "log_start_offset", -1))
                    results[partition] = result
        missing = set(offsets) - set(results)
        if missing:
            raise KafkaClientError(f"fetch response for {topic} lacks partitions {sorted(missing)}")
        return results

    async def list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
        """(offset, timestamp) for EARLIEST_TIMESTAMP, LATEST_TIMESTAMP or a time in ms: the first
        offset whose timestamp is at or after it (-1 when there is none)."""
        connection = await self._leader(topic, partition)
        module = connection.request_module(LIST_OFFSETS)
        request = make(
            module.ListOffsetsRequest,
            replica_id=-1,
            isolation_level=0,
            timeout=0,
            topics=(
                make(
                    module.ListOffsetsTopic,
                    name=topic,
                    partitions=(
                        make(
                            module.ListOffsetsPartition,
                            partition_index=partition,
                            current_leader_epoch=-1,
                            timestamp=timestamp,
                        ),
                    ),
                ),
            ),
        )
        response = await connection.send(request)
        p = response.topics[0].partitions[0]
        _check(p.error_code, context=f"list offsets of {topic}-{partition}")
        return int(p.offset), int(p.timestamp)


def decode_fetched(records: bytes, fetch_offset: int) -> FetchResult:
    """Records at or after `fetch_offset` from the complete batches in `records`."""
    out: list[Record] = []
    next_offset = fetch_offset
    control_batches = 0
    for header in iter_headers(records):
        if header.magic != 2:
            raise KafkaClientError(
                f"record batch of magic {header.magic} at offset {header.base_offset}: "
                "only magic 2 is supported"
            )
        if header.next_offset <= fetch_offset:
            continue
        next_offset = header.next_offset
        if header.is_control:
            control_batches += 1
            continue
        view = memoryview(records)[header.position : header.position + header.size_bytes]
        out.extend(r for r in iter_records(view) if r.offset >= fetch_offset)
    return FetchResult(out, next_offset, -1, -1, None, control_batches)


def now_ms() -> int:
    return int(time.time() * 1000)
