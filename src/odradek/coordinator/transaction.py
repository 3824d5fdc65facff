"""The transaction state machine of one transactional id: states, the one transition table,
and the metadata a transition writes to `__transaction_state`.

Kafka's model (TransactionMetadata): a transition is two-phase. The coordinator computes the
target metadata (a `Transit`), writes it to the log, and only when the append succeeds does the
in-memory state become the target. While a transit is in flight (`pending`), every request for
the id but a marker-verification gets CONCURRENT_TRANSACTIONS.

PrepareEpochFence is never written: it is the in-memory step between an Ongoing transaction that
must be aborted by the coordinator (timeout, or InitProducerId from a new instance) and the
PrepareAbort record carrying the bumped epoch.

Owner: TransactionCoordinator (txn_coordinator.py); the event loop only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from odradek.coordinator.txn_records import TopicPartition, TransactionLogValue
from odradek.protocol.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
# Kafka's TransactionMetadata.isEpochExhausted: epoch >= Short.MaxValue - 1. The last value is
# kept so that a coordinator fence can still bump once past an exhausted epoch.
MAX_PRODUCER_EPOCH = 32767


def is_epoch_exhausted(epoch: int) -> bool:
    return epoch >= MAX_PRODUCER_EPOCH - 1


class TransactionState(enum.IntEnum):
    """Kafka's TransactionState; the value is the id written as `transaction_status`."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        return _NAMES[self]

    @classmethod
    def from_kafka_name(cls, name: str) -> TransactionState | None:
        return _BY_NAME.get(name)


_NAMES = {
    TransactionState.EMPTY: "Empty",
    TransactionState.ONGOING: "Ongoing",
    TransactionState.PREPARE_COMMIT: "PrepareCommit",
    TransactionState.PREPARE_ABORT: "PrepareAbort",
    TransactionState.COMPLETE_COMMIT: "CompleteCommit",
    TransactionState.COMPLETE_ABORT: "CompleteAbort",
    TransactionState.DEAD: "Dead",
    TransactionState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_NAME = {v: k for k, v in _NAMES.items()}


class Event(enum.Enum):
    INIT_PRODUCER_ID = "init_producer_id"  # a (new) producer instance initialises
    ADD_PARTITIONS = "add_partitions"  # AddPartitionsToTxn / AddOffsetsToTxn
    COMMIT = "commit"  # EndTxn(commit)
    ABORT = "abort"  # EndTxn(abort), or the coordinator's abort after a fence
    FENCE = "fence"  # the coordinator aborts: timeout, or InitProducerId while Ongoing
    MARKERS_WRITTEN = "markers_written"  # every partition has its marker
    EXPIRE = "expire"  # transactional.id.expiration.ms passed without use


@dataclass(frozen=True, slots=True)
class Go:
    """Move to `state`; `actions` name what the coordinator does (txn_coordinator.py)."""

    state: TransactionState
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer `error` and change nothing."""

    error: int


RETRY_OK = Refuse(ErrorCode.none.value)  # a retry of something already done: answer NONE
_CONCURRENT = Refuse(ErrorCode.concurrent_transactions.value)
_INVALID = Refuse(ErrorCode.invalid_txn_state.value)

S = TransactionState
E = Event

# (state, event) -> Go(next state, actions) | Refuse(error). Anything missing is a bug: asserts.
# Dead is never looked up (a Dead id leaves the cache when its tombstone is written) and
# PrepareEpochFence only ever meets the coordinator's own ABORT.
TRANSITIONS: dict[tuple[TransactionState, Event], Go | Refuse] = {
    (S.EMPTY, E.INIT_PRODUCER_ID): Go(S.EMPTY, ("bump_epoch", "persist", "answer_producer")),
    (S.COMPLETE_COMMIT, E.INIT_PRODUCER_ID): Go(
        S.EMPTY, ("bump_epoch", "persist", "answer_producer")
    ),
    (S.COMPLETE_ABORT, E.INIT_PRODUCER_ID): Go(
        S.EMPTY, ("bump_epoch", "persist", "answer_producer")
    ),
    (S.ONGOING, E.INIT_PRODUCER_ID): Go(S.PREPARE_EPOCH_FENCE, ("fence_epoch",)),
    (S.PREPARE_COMMIT, E.INIT_PRODUCER_ID): _CONCURRENT,
    (S.PREPARE_ABORT, E.INIT_PRODUCER_ID): _CONCURRENT,
    (S.EMPTY, E.ADD_PARTITIONS): Go(S.ONGOING, ("start_transaction", "add_partitions", "persist")),
    (S.COMPLETE_COMMIT, E.ADD_PARTITIONS): Go(
        S.ONGOING, ("start_transaction", "add_partitions", "persist")
    ),
    (S.COMPLETE_ABORT, E.ADD_PARTITIONS): Go(
        S.ONGOING, ("start_transaction", "add_partitions", "persist")
    ),
    (S.ONGOING, E.ADD_PARTITIONS): Go(S.ONGOING, ("add_partitions", "persist")),
    (S.PREPARE_COMMIT, E.ADD_PARTITIONS): _CONCURRENT,
    (S.PREPARE_ABORT, E.ADD_PARTITIONS): _CONCURRENT,
    (S.ONGOING, E.COMMIT): Go(
        S.PREPARE_COMMIT, ("end_epoch_bump", "persist", "answer_end", "request_markers")
    ),
    (S.ONGOING, E.ABORT): Go(
        S.PREPARE_ABORT, ("end_epoch_bump", "persist", "answer_end", "request_markers")
    ),
    (S.PREPARE_EPOCH_FENCE, E.ABORT): Go(
        S.PREPARE_ABORT, ("persist", "answer_concurrent", "request_markers")
    ),
    (S.EMPTY, E.COMMIT): _INVALID,
    (S.EMPTY, E.ABORT): _INVALID,
    (S.PREPARE_COMMIT, E.COMMIT): _CONCURRENT,
    (S.PREPARE_COMMIT, E.ABORT): _INVALID,
    (S.PREPARE_ABORT, E.ABORT): _CONCURRENT,
    (S.PREPARE_ABORT, E.COMMIT): _INVALID,
    (S.COMPLETE_COMMIT, E.COMMIT): RETRY_OK,
    (S.COMPLETE_COMMIT, E.ABORT): _INVALID,
    (S.COMPLETE_ABORT, E.ABORT): RETRY_OK,
    (S.COMPLETE_ABORT, E.COMMIT): _INVALID,
    (S.ONGOING, E.FENCE): Go(S.PREPARE_EPOCH_FENCE, ("fence_epoch",)),
    (S.PREPARE_COMMIT, E.MARKERS_WRITTEN): Go(
        S.COMPLETE_COMMIT, ("complete_transaction", "persist")
    ),
    (S.PREPARE_ABORT, E.MARKERS_WRITTEN): Go(S.COMPLETE_ABORT, ("complete_transaction", "persist")),
    (S.EMPTY, E.EXPIRE): Go(S.DEAD, ("persist",)),
    (S.COMPLETE_COMMIT, E.EXPIRE): Go(S.DEAD, ("persist",)),
    (S.COMPLETE_ABORT, E.EXPIRE): Go(S.DEAD, ("persist",)),
}


def transition(state: TransactionState, event: Event) -> Go | Refuse:
    entry = TRANSITIONS.get((state, event))
    assert entry is not None, f"no transition for {event} in {state.kafka_name}"
    return entry


@dataclass(frozen=True, slots=True)
class Transit:
    """The metadata of one transactional id as a transition leaves it (Kafka's
    TxnTransitMetadata). It is what gets written; it replaces the in-memory metadata once the
    append succeeds."""

    state: TransactionState
    producer_id: int
    previous_producer_id: int
    next_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    transaction_timeout_ms: int
    partitions: frozenset[TopicPartition]
    start_timestamp_ms: int
    last_update_timestamp_ms: int
    client_transaction_version: int

    def to_value(self) -> TransactionLogValue | None:
        """The record value; None (a tombstone) for Dead."""
        if self.state is S.DEAD:
            return None
        assert self.state is not S.PREPARE_EPOCH_FENCE, "PrepareEpochFence is never written"
        assert self.state is not S.EMPTY or not self.partitions, "Empty holds no partitions"
        return TransactionLogValue(
            self.producer_id,
            self.producer_epoch,
            self.transaction_timeout_ms,
            int(self.state),
            None
            if self.state is S.EMPTY
            else TransactionLogValue.group_partitions(self.partitions),
            self.last_update_timestamp_ms,
            self.start_timestamp_ms,
            self.previous_producer_id,
            self.next_producer_id,
            self.client_transaction_version,
        )

    @property
    def value_version(self) -> int:
        """TransactionLogValue v1 (flexible, with tagged fields) for transaction version 2."""
        return 1 if self.client_transaction_version >= 2 else 0


@dataclass(slots=True)
class TransactionMetadata:
    """One transactional id's current (written) metadata plus what is in flight.

    Invariants: `state` is never Dead (Dead ids leave the cache) and is PrepareEpochFence only
    while the PrepareAbort that follows the fence is in flight;
    at most one `pending` transit; `markers_pending` is non-empty only in PrepareCommit /
    PrepareAbort, and holds the partitions still waiting for their marker;
    `producer_epoch` never decreases while `producer_id` stays the same.
    """

    transactional_id: str
    current: Transit
    pending: Transit | None = None
    markers_pending: set[TopicPartition] = field(default_factory=set)
    markers_requested: bool = False  # PrepareX: the MarkerRequest went out in this incarnation
    complete_retry: bool = False  # the Complete write failed: tick writes it again

    @property
    def state(self) -> TransactionState:
        return self.current.state

    def prepare(self, **changes) -> Transit:
        return replace(self.current, **changes)

    def complete(self, transit: Transit) -> None:
        assert transit.state not in (S.PREPARE_EPOCH_FENCE,), transit
        if transit.producer_id == self.current.producer_id:
            assert transit.producer_epoch >= self.current.producer_epoch, (
                self.transactional_id,
                self.current,
                transit,
            )
        self.current = transit
        self.pending = None

    @classmethod
    def from_value(cls, transactional_id: str, value: TransactionLogValue) -> TransactionMetadata:
        return cls(
            transactional_id,
            Transit(
                TransactionState(value.transaction_status),
                value.producer_id,
                value.previous_producer_id,
                value.next_producer_id,
                value.producer_epoch,
                NO_PRODUCER_EPOCH,
                value.transaction_timeout_ms,
                value.topic_partitions(),
                value.start_timestamp_ms,
                value.last_update_timestamp_ms,
                value.client_transaction_version,
            ),
        )
