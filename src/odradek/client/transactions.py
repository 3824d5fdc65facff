"""`TransactionAdmin`: the transaction admin requests of Kafka's Admin client, over our `Client`.

    admin = TransactionAdmin(client)
    await admin.list_transactions(states=["Ongoing"])        # ListTransactions, every broker
    await admin.describe_transaction("payments-1")           # FindCoordinator + DescribeTransactions
    await admin.describe_producers("orders", 0)              # DescribeProducers to the leader
    await admin.abort_transaction("orders", 0, start_offset=42)   # DescribeProducers + WriteTxnMarkers
    await admin.find_hanging(now_ms=now, broker_id=1)        # DescribeProducers, then the coordinators

As Kafka's Admin: ListTransactions is sent to every broker and the answers merged (each broker
lists only the transactional ids it coordinates); DescribeTransactions goes to the id's
coordinator (FindCoordinator with key type 1); DescribeProducers and WriteTxnMarkers go to the
partition's leader. `abort_transaction` with a start offset finds the producer whose open
transaction starts there, as kafka-transactions.sh `abort --start-offset` does, and writes an
ABORT marker with its producer id, epoch and coordinator epoch (-1, none yet, is sent as 0).

Requests use the highest version both `TXN_CLIENT_VERSIONS` and the broker support. Errors are
`KafkaError` (a Kafka error code) or `NoOpenTransactionError` (nothing to abort there).
Owned by one task on one event loop, like the Client it wraps.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from odradek.client.connection import (
    KafkaClientError,
    KafkaError,
    UnsupportedVersionError,
    make,
    payload_module,
)
from odradek.protocol.errors import ErrorCode

FIND_COORDINATOR, WRITE_TXN_MARKERS = 10, 27
DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 61, 65, 66
# Versions this module builds and reads (one code path per API over the range).
TXN_CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    FIND_COORDINATOR: (1, 3),
    WRITE_TXN_MARKERS: (1, 1),
    DESCRIBE_PRODUCERS: (0, 0),
    DESCRIBE_TRANSACTIONS: (0, 0),
    LIST_TRANSACTIONS: (0, 2),
}
TRANSACTION_KEY_TYPE = 1  # FindCoordinator key type of a transactional id
COORDINATOR_ATTEMPTS = 20  # while the coordinator is not available or loading
COORDINATOR_RETRY_BACKOFF_MS = 200
NO_OFFSET = -1


LIVE_STATES = ("Ongoing", "PrepareCommit", "PrepareAbort")  # the coordinator still owns it
DEFAULT_MAX_TRANSACTION_TIMEOUT_MS = 900_000  # transaction.max.timeout.ms


class NoOpenTransactionError(KafkaClientError):
    """No producer's open transaction on the partition starts at the offset asked for."""


@dataclass(frozen=True, slots=True)
class ListedTransaction:
    transactional_id: str
    producer_id: int
    state: str
    coordinator_id: int


@dataclass(frozen=True, slots=True)
class TransactionDescription:
    transactional_id: str
    coordinator_id: int
    state: str
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_start_time_ms: int  # -1: no transaction open
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ProducerState:
    """One active producer of a partition, as DescribeProducers answers (-1: none)."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp_ms: int
    coordinator_epoch: int
    current_txn_start_offset: int


class _Frame:
    """A bounded cursor over one response frame, for `decode_describe_transactions`."""

    def __init__(self, frame: bytes) -> None:
        self.data = memoryview(frame)
        self.position = 0

    def take(self, fmt: str) -> Any:
        item = struct.Struct(fmt)
        if self.position + item.size > len(self.data):
            raise ValueError("DescribeTransactions response ends early")
        (value,) = item.unpack_from(self.data, self.position)
        self.position += item.size
        return value

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(">B")
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise ValueError("varint too long")

    def count(self) -> int:
        """A compact array length (null read as empty), bounded by the bytes left."""
        n = self.uvarint() - 1
        if n > len(self.data) - self.position:
            raise ValueError(f"array of {n} entries in a frame that cannot hold them")
        return max(n, 0)

    def string(self) -> str:
        n = self.uvarint() - 1
        if n < 0:
            return ""
        if self.position + n > len(self.data):
            raise ValueError("DescribeTransactions response ends early")
        text = bytes(self.data[self.position : self.position + n]).decode("utf-8")
        self.position += n
        return text

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            size = self.uvarint()
            if self.position + size > len(self.data):
                raise ValueError("DescribeTransactions response ends early")
            self.position += size


@dataclass(frozen=True, slots=True)
class DescribedTransactionState:
    """One entry of a DescribeTransactions response (start time -1: no transaction open)."""

    error_code: ErrorCode
    transactional_id: str
    transaction_state: str
    transaction_timeout_ms: int
    transaction_start_time_ms: int
    producer_id: int
    producer_epoch: int
    partitions: tuple[tuple[str, int], ...]


def decode_describe_transactions(frame: bytes) -> list[DescribedTransactionState]:
    """A DescribeTransactions v0 response frame (correlation id first), read by hand.

    kio's reader refuses the start time -1 that Kafka (and we) answer for a transactional id
    with no open transaction ("Cannot parse negative timestamp"), so this one response is read
    here. Layout (flexible): correlation id int32, header tagged fields; throttle ms int32;
    compact array of [error code int16, transactional id, state (compact strings), timeout ms
    int32, start time ms int64, producer id int64, producer epoch int16, compact array of
    [topic, compact array of partition int32, tagged fields], tagged fields]; tagged fields.
    """
    f = _Frame(frame)
    f.take(">i")
    f.skip_tagged_fields()
    f.take(">i")
    states = []
    for _ in range(f.count()):
        error_code = ErrorCode(f.take(">h"))
        transactional_id, state = f.string(), f.string()
        timeout_ms, start_ms = f.take(">i"), f.take(">q")
        producer_id, producer_epoch = f.take(">q"), f.take(">h")
        partitions: list[tuple[str, int]] = []
        for _ in range(f.count()):
            topic = f.string()
            partitions += [(topic, f.take(">i")) for _ in range(f.count())]
            f.skip_tagged_fields()
        f.skip_tagged_fields()
        states.append(
            DescribedTransactionState(
                error_code, transactional_id, state, timeout_ms, start_ms,
                producer_id, producer_epoch, tuple(partitions),
            )
        )
    f.skip_tagged_fields()
    if f.position != len(f.data):
        raise ValueError(f"{len(f.data) - f.position} bytes left after DescribeTransactions")
    return states


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A producer's open transaction on one partition, as DescribeProducers shows it."""

    topic: str
    partition: int
    producer: ProducerState


def is_hanging(candidate: OpenTransaction, coordinator_view: TransactionDescription | None) -> bool:
    """Kafka's test (kafka-transactions.sh find-hanging): an open transaction on a partition is
    hanging unless the coordinator has a live transaction (Ongoing, PrepareCommit, PrepareAbort)
    of the same producer id that includes the partition. `coordinator_view` is None when no
    transactional id of the producer is known to any coordinator."""
    if coordinator_view is None:
        return True
    return not (
        coordinator_view.producer_id == candidate.producer.producer_id
        and coordinator_view.state in LIVE_STATES
        and (candidate.topic, candidate.partition) in coordinator_view.partitions
    )


def _check(error_code: ErrorCode, context: str) -> None:
    if error_code != ErrorCode.none:
        raise KafkaError(error_code, context=context)


def _version(connection: Any, api_key: int) -> int:
    low, high = TXN_CLIENT_VERSIONS[api_key]
    broker = connection.broker_versions.get(api_key)
    if broker is None or min(high, broker[1]) < max(low, broker[0]):
        from kio.schema.index import api_key_map

        raise UnsupportedVersionError(
            f"broker {connection.address} does not serve {api_key_map.get(api_key, api_key)} "
            f"in versions {low}-{high}"
        )
    return min(high, broker[1])


def _request(connection: Any, api_key: int, class_name: str, **fields: Any) -> Any:
    module = payload_module(api_key, _version(connection, api_key), True)
    return make(getattr(module, class_name), **fields)


class TransactionAdmin:
    """Transaction admin calls through a connected `odradek.client.client.Client`."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def list_transactions(
        self,
        states: Iterable[str] = (),
        producer_ids: Iterable[int] = (),
        *,
        duration_ms: int = -1,
        transactional_id_pattern: str | None = None,
    ) -> list[ListedTransaction]:
        """Transactions of every broker, sorted by transactional id. `duration_ms` needs
        ListTransactions v1, a pattern v2 (UnsupportedVersionError from older brokers)."""
        metadata = await self.client.metadata([])
        states, producer_ids = tuple(states), tuple(int(p) for p in producer_ids)
        listed: dict[str, ListedTransaction] = {}
        for node_id in sorted(metadata.brokers):
            connection = await self.client._node(node_id)
            version = _version(connection, LIST_TRANSACTIONS)
            if duration_ms >= 0 and version < 1:
                raise UnsupportedVersionError(
                    f"broker {connection.address} cannot filter transactions by duration"
                )
            if transactional_id_pattern and version < 2:
                raise UnsupportedVersionError(
                    f"broker {connection.address} cannot filter transactional ids by pattern"
                )
            response = await connection.send(
                _request(
                    connection,
                    LIST_TRANSACTIONS,
                    "ListTransactionsRequest",
                    state_filters=states,
                    producer_id_filters=producer_ids,
                    duration_filter=duration_ms,
                    transactional_id_pattern=transactional_id_pattern,
                )
            )
            _check(response.error_code, f"list transactions on broker {node_id}")
            for t in response.transaction_states:
                listed[t.transactional_id] = ListedTransaction(
                    t.transactional_id, int(t.producer_id), t.transaction_state, node_id
                )
        return [listed[tid] for tid in sorted(listed)]

    async def coordinator(self, transactional_id: str) -> tuple[int, Any]:
        """(node id, connection) of the transactional id's coordinator."""
        context = f"find coordinator of transactional id {transactional_id!r}"
        retriable = (ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress)
        error = ErrorCode.coordinator_not_available
        for _ in range(COORDINATOR_ATTEMPTS):
            connection = await self.client._any_connection()
            response = await connection.send(
                _request(
                    connection,
                    FIND_COORDINATOR,
                    "FindCoordinatorRequest",
                    key=transactional_id,
                    key_type=TRANSACTION_KEY_TYPE,
                )
            )
            error = response.error_code
            if error in retriable:
                await asyncio.sleep(COORDINATOR_RETRY_BACKOFF_MS / 1000)
                continue
            _check(error, context)
            node_id = int(response.node_id)
            return node_id, await self.client._node(node_id)
        raise KafkaError(error, context=context)

    async def describe_transaction(self, transactional_id: str) -> TransactionDescription:
        node_id, connection = await self.coordinator(transactional_id)
        response = await connection.send(
            _request(
                connection,
                DESCRIBE_TRANSACTIONS,
                "DescribeTransactionsRequest",
                transactional_ids=(transactional_id,),
            ),
            decode=decode_describe_transactions,
        )
        if len(response) != 1:
            raise KafkaClientError(f"DescribeTransactions answered {len(response)} ids for one")
        t = response[0]
        _check(t.error_code, f"describe transactional id {transactional_id!r}")
        return TransactionDescription(
            t.transactional_id,
            node_id,
            t.transaction_state,
            t.producer_id,
            t.producer_epoch,
            t.transaction_timeout_ms,
            t.transaction_start_time_ms,
            t.partitions,
        )

    async def describe_producers(self, topic: str, partition: int) -> list[ProducerState]:
        """The active producers of one partition, from its leader."""
        connection = await self.client._leader(topic, partition)
        m = payload_module(DESCRIBE_PRODUCERS, _version(connection, DESCRIBE_PRODUCERS), True)
        response = await connection.send(
            make(
                m.DescribeProducersRequest,
                topics=(make(m.TopicRequest, name=topic, partition_indexes=(partition,)),),
            )
        )
        for t in response.topics:
            for p in t.partitions:
                if t.name == topic and int(p.partition_index) == partition:
                    _check(p.error_code, f"describe producers of {topic}-{partition}")
                    return [
                        ProducerState(
                            int(s.producer_id),
                            int(s.producer_epoch),
                            int(s.last_sequence),
                            int(s.last_timestamp),
                            int(s.coordinator_epoch),
                            int(s.current_txn_start_offset),
                        )
                        for s in p.active_producers
                    ]
        raise KafkaClientError(f"DescribeProducers did not answer for {topic}-{partition}")

    async def write_txn_marker(
        self,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        *,
        commit: bool,
    ) -> None:
        """Write one COMMIT or ABORT marker to a partition through its leader."""
        connection = await self.client._leader(topic, partition)
        m = payload_module(WRITE_TXN_MARKERS, _version(connection, WRITE_TXN_MARKERS), True)
        marker = make(
            m.WritableTxnMarker,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transaction_result=commit,
            topics=(make(m.WritableTxnMarkerTopic, name=topic, partition_indexes=(partition,)),),
            coordinator_epoch=coordinator_epoch,
        )
        response = await connection.send(make(m.WriteTxnMarkersRequest, markers=(marker,)))
        for result in response.markers:
            for t in result.topics:
                for p in t.partitions:
                    _check(p.error_code, f"write marker to {t.name}-{p.partition_index}")

    async def find_open_transaction(
        self, topic: str, partition: int, start_offset: int
    ) -> ProducerState:
        """The producer whose open transaction on the partition starts at `start_offset`."""
        producers = await self.describe_producers(topic, partition)
        matching = [p for p in producers if p.current_txn_start_offset == start_offset]
        if not matching:
            open_offsets = sorted(
                p.current_txn_start_offset for p in producers if p.current_txn_start_offset >= 0
            )
            raise NoOpenTransactionError(
                f"no open transaction starts at offset {start_offset} of {topic}-{partition}"
                + (
                    f" (open transactions start at {', '.join(map(str, open_offsets))})"
                    if open_offsets
                    else " (it has no open transaction)"
                )
            )
        if len(matching) > 1:  # cannot happen in a consistent log: one batch, one producer
            raise NoOpenTransactionError(
                f"{len(matching)} producers have a transaction starting at offset {start_offset}"
                f" of {topic}-{partition}: producer ids "
                f"{', '.join(str(p.producer_id) for p in matching)}"
            )
        return matching[0]

    async def abort_transaction(
        self, topic: str, partition: int, start_offset: int
    ) -> ProducerState:
        """Abort the open transaction starting at `start_offset`; returns its producer."""
        producer = await self.find_open_transaction(topic, partition, start_offset)
        await self.write_txn_marker(
            topic,
            partition,
            producer.producer_id,
            producer.producer_epoch,
            max(producer.coordinator_epoch, 0),
            commit=False,
        )
        return producer

    async def find_hanging(
        self,
        *,
        now_ms: int,
        broker_id: int | None = None,
        topic: str | None = None,
        partition: int | None = None,
        max_transaction_timeout_ms: int = DEFAULT_MAX_TRANSACTION_TIMEOUT_MS,
    ) -> list[OpenTransaction]:
        """Open transactions whose producer last wrote more than `max_transaction_timeout_ms`
        ago and that no coordinator holds as live (see `is_hanging`), on the partitions led by
        `broker_id` (all brokers when None) of `topic` (all topics when None)."""
        metadata = await self.client.metadata(None if topic is None else [topic])
        partitions = sorted(
            (t.name, p.partition)
            for t in metadata.topics.values()
            if t.error_code == ErrorCode.none and (topic is None or t.name == topic)
            for p in t.partitions
            if (broker_id is None or p.leader_id == broker_id)
            and (partition is None or p.partition == partition)
        )
        if topic is not None and not partitions and topic not in metadata.topics:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, context=f"topic {topic!r}")
        candidates = []
        for name, index in partitions:
            for producer in await self.describe_producers(name, index):
                if (
                    producer.current_txn_start_offset >= 0
                    and now_ms - producer.last_timestamp_ms > max_transaction_timeout_ms
                ):
                    candidates.append(OpenTransaction(name, index, producer))
        if not candidates:
            return []
        listed = await self.list_transactions(
            producer_ids=sorted({c.producer.producer_id for c in candidates})
        )
        views: dict[int, TransactionDescription] = {}
        for t in listed:
            try:
                views[t.producer_id] = await self.describe_transaction(t.transactional_id)
            except KafkaError as exc:
                if exc.error_code != ErrorCode.transactional_id_not_found:
                    raise
        return [c for c in candidates if is_hanging(c, views.get(c.producer.producer_id))]
