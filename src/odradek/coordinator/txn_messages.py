"""Version-independent requests and responses of the transaction coordinator core.

The handler layer converts kio's per-version objects into these and back. Field mapping where
it is not the same name or needs a word:
    InitProducerIdRequest.transaction_timeout (timedelta)  -> transaction_timeout_ms
    InitProducerId v3+ producer_id / producer_epoch         -> producer_id / producer_epoch
                                                               (-1 / -1 when absent: KIP-360)
    AddPartitionsToTxn v0-3 (one transactional id)          -> one AddPartitionsToTxnTransaction,
                                                               verify_only False
    AddPartitionsToTxn v4+ transactions[]                   -> the list, verify_only per entry
    AddOffsetsToTxn group_id                                -> the caller passes the
                                                               `__consumer_offsets` partition
    EndTxn committed                                        -> commit
    ListTransactions v1+ duration_filter                    -> duration_filter_ms (-1: none)
Every request carries `api_version`: Kafka answers PRODUCER_FENCED as INVALID_PRODUCER_EPOCH to
InitProducerId v0-3, AddPartitionsToTxn v0-1, AddOffsetsToTxn v0-1 and EndTxn v0-1; EndTxn v5+
and AddPartitionsToTxn v5+ mean the client uses transaction version 2 (KIP-890 part 2: the epoch
is bumped at the end of every transaction and EndTxn answers the new producer id and epoch).
Responses carry plain ints for error codes (`ErrorCode.x.value`).
"""

from __future__ import annotations

from dataclasses import dataclass

from odradek.protocol.errors import ErrorCode

NONE = ErrorCode.none.value
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class InitProducerIdRequest:
    transactional_id: str | None
    transaction_timeout_ms: int
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    api_version: int = 5


@dataclass(frozen=True, slots=True)
class InitProducerIdResponse:
    error_code: int
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclass(frozen=True, slots=True)
class AddPartitionsToTxnTransaction:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    partitions: tuple[TopicPartition, ...]
    verify_only: bool = False


@dataclass(frozen=True, slots=True)
class AddPartitionsToTxnRequest:
    transactions: tuple[AddPartitionsToTxnTransaction, ...]
    api_version: int = 3


@dataclass(frozen=True, slots=True)
class AddPartitionsToTxnResult:
    transactional_id: str
    # ((topic, partition), error_code), in request order
    partition_errors: tuple[tuple[TopicPartition, int], ...]


@dataclass(frozen=True, slots=True)
class AddPartitionsToTxnResponse:
    # v0-3: the handler answers results[0]'s partition errors
    results: tuple[AddPartitionsToTxnResult, ...]

    def errors_of(self, transactional_id: str) -> dict[TopicPartition, int]:
        for r in self.results:
            if r.transactional_id == transactional_id:
                return dict(r.partition_errors)
        raise KeyError(transactional_id)


@dataclass(frozen=True, slots=True)
class AddOffsetsToTxnRequest:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    offsets_partition: int  # partition_for_group(group_id, offsets.topic.num.partitions)
    api_version: int = 3


@dataclass(frozen=True, slots=True)
class AddOffsetsToTxnResponse:
    error_code: int


@dataclass(frozen=True, slots=True)
class EndTxnRequest:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    api_version: int = 4


@dataclass(frozen=True, slots=True)
class EndTxnResponse:
    error_code: int
    producer_id: int = NO_PRODUCER_ID  # v5+
    producer_epoch: int = NO_PRODUCER_EPOCH  # v5+


@dataclass(frozen=True, slots=True)
class TransactionDescription:
    transactional_id: str
    error_code: int
    transaction_state: str = ""
    transaction_timeout_ms: int = 0
    transaction_start_time_ms: int = -1
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    topics: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class ListedTransaction:
    transactional_id: str
    producer_id: int
    transaction_state: str


@dataclass(frozen=True, slots=True)
class ListTransactionsResponse:
    error_code: int
    unknown_state_filters: tuple[str, ...] = ()
    transactions: tuple[ListedTransaction, ...] = ()


@dataclass(frozen=True, slots=True)
class MarkerRequest:
    """Write end-transaction markers (commit or abort) for `producer_id`/`producer_epoch` to
    each of `partitions`, as the coordinator of epoch `coordinator_epoch` (the leader epoch of
    the `__transaction_state` partition). The caller reports each partition it finished with
    `TransactionCoordinator.on_markers_written`."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int
    partitions: tuple[TopicPartition, ...]
