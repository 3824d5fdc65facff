"""TransactionCoordinator: the transaction coordinator of the `__transaction_state` partitions
this broker leads. Deterministic and synchronous: no I/O, no event loop, no clock reads.

Contract with the caller (the broker's handlers and its housekeeping), as GroupCoordinator's:

* Every request method takes the request (txn_messages.py), `now_ms` and a caller `token`, and
  returns a `TxnResult`: `responses` (token, response) to send now - possibly for earlier
  tokens -, `appends` (PendingAppend: records for one `__transaction_state` partition) and
  `markers` (MarkerRequest: end-transaction markers to write to data partitions).
* For every PendingAppend the caller appends its records as one batch to partition
  `append.partition` of `__transaction_state`, then calls `on_append_complete(append_id,
  error_code, now_ms)`. Answers that Kafka gives after the write (InitProducerId,
  AddPartitionsToTxn, AddOffsetsToTxn, EndTxn) are released by that call.
* For every MarkerRequest the caller writes a commit/abort control batch to each partition
  (retrying retriable errors itself; a deleted partition counts as written, as in Kafka) and
  reports finished partitions with `on_markers_written(transactional_id, producer_epoch,
  partitions, now_ms)`. When the last partition is reported the coordinator writes
  CompleteCommit / CompleteAbort. Reports for a transaction that is no longer waiting are
  ignored (stale after a restart or unload).
* Timers are data: call `tick(now_ms)` at or after `next_deadline_ms()`. tick aborts
  transactions open longer than their timeout (checked every
  transaction.abort.timed.out.transaction.cleanup.interval.ms; the abort bumps the epoch, so the
  timed-out producer is fenced) and expires idle transactional ids (transactional.id.expiration.ms,
  checked every transaction.remove.expired.transaction.cleanup.interval.ms).
* Loading: `begin_loading(p, coordinator_epoch)`, `replay(key, value)` for every record of
  partition p in log order, then `finish_loading(p, now_ms)`, which returns MarkerRequests for
  transactions found in PrepareCommit/PrepareAbort. Requests for ids of a loading partition get
  COORDINATOR_LOAD_IN_PROGRESS, of a partition not owned NOT_COORDINATOR. `unload(p)` drops the
  partition's ids; appends still in flight for them are answered NOT_COORDINATOR when they
  complete.

Owner: one per broker, called from the event loop only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from odradek.coordinator.append_errors import coordinator_append_error
from odradek.coordinator.group_coordinator import PendingAppend
from odradek.coordinator.transaction import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    Event,
    Go,
    Refuse,
    TransactionMetadata,
    TransactionState,
    Transit,
    is_epoch_exhausted,
    transition,
)
from odradek.coordinator.txn_messages import (
    NONE,
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnResult,
    AddPartitionsToTxnTransaction,
    EndTxnRequest,
    EndTxnResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListedTransaction,
    ListTransactionsResponse,
    MarkerRequest,
    TransactionDescription,
)
from odradek.coordinator.txn_records import (
    TopicPartition,
    decode_transaction_log_key,
    decode_transaction_log_value,
    encode_transaction_log_key,
    encode_transaction_log_value,
    partition_for_transactional_id,
)
from odradek.protocol.errors import ErrorCode

S = TransactionState
OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True, slots=True)
class TransactionConfig:
    transaction_max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    transactional_id_expiration_ms: int = 604_800_000  # transactional.id.expiration.ms
    # transaction.abort.timed.out.transaction.cleanup.interval.ms
    abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    # transaction.remove.expired.transaction.cleanup.interval.ms
    remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    transaction_state_log_num_partitions: int = 50  # transaction.state.log.num.partitions


@dataclass(slots=True)
class TxnResult:
    responses: list[tuple[Any, Any]] = field(default_factory=list)
    appends: list[PendingAppend] = field(default_factory=list)
    markers: list[MarkerRequest] = field(default_factory=list)

    def response_for(self, token: Any) -> Any:
        for t, r in self.responses:
            if t == token:
                return r
        return None

    def extend(self, other: TxnResult) -> TxnResult:
        self.responses.extend(other.responses)
        self.appends.extend(other.appends)
        self.markers.extend(other.markers)
        return self


@dataclass(slots=True)
class _InFlight:
    """One append of a Transit: what to do when it completes."""

    txn: TransactionMetadata
    transit: Transit
    actions: tuple[str, ...]
    on_done: Callable[[int, TxnResult], None] | None  # (final error, where to answer)


_STATE_TOO_LARGE = frozenset(e.value for e in (ErrorCode.message_too_large, ErrorCode.record_list_too_large))


def _append_error(error: int) -> int:
    """Kafka's mapping of a failed `__transaction_state` append (appendTransactionToLog)."""
    return coordinator_append_error(error, _STATE_TOO_LARGE, ErrorCode.unknown_server_error.value)


def _fenced(api_version: int, first_version_with_producer_fenced: int) -> int:
    """PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH for versions before it existed."""
    if api_version < first_version_with_producer_fenced:
        return ErrorCode.invalid_producer_epoch.value
    return ErrorCode.producer_fenced.value


def _map_fenced(error: int, api_version: int, first: int) -> int:
    return _fenced(api_version, first) if error == ErrorCode.producer_fenced.value else error


class TransactionCoordinator:
    """All transactional ids of the `__transaction_state` partitions this broker leads.

    Holds: `transactions` (transactional id -> TransactionMetadata), the partitions owned and
    loading with their coordinator epochs, the appends in flight, the two cleanup timers.
    Invariants: every id in `transactions` belongs to an owned or loading partition; at most
    one transit in flight per id; append ids are unique and complete at most once.
    `allocate_producer_id()` returns a fresh producer id on every call (the caller's producer
    id block: Kafka's ProducerIdManager).
    """

    def __init__(
        self,
        allocate_producer_id: Callable[[], int],
        config: TransactionConfig | None = None,
        *,
        owned_partitions: Iterable[int] = (),
        coordinator_epoch: int = 0,
    ) -> None:
        self.config = config or TransactionConfig()
        self.allocate_producer_id = allocate_producer_id
        self.transactions: dict[str, TransactionMetadata] = {}
        self.owned: set[int] = set(owned_partitions)
        self.coordinator_epochs: dict[int, int] = {p: coordinator_epoch for p in self.owned}
        self.loading: set[int] = set()
        self._next_append_id = 1
        self._in_flight: dict[int, _InFlight] = {}
        self._next_abort_check_ms: int | None = None
        self._next_expire_check_ms: int | None = None

    # --- plumbing ------------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return partition_for_transactional_id(
            transactional_id, self.config.transaction_state_log_num_partitions
        )

    def _coordinator_error(self, transactional_id: str) -> int:
        p = self.partition_for(transactional_id)
        if p in self.loading:
            return ErrorCode.coordinator_load_in_progress.value
        if p not in self.owned:
            return ErrorCode.not_coordinator.value
        return NONE

    def _write(
        self,
        txn: TransactionMetadata,
        transit: Transit,
        actions: tuple[str, ...],
        result: TxnResult,
        on_done: Callable[[int, TxnResult], None] | None = None,
    ) -> None:
        """Put `transit` in flight: one PendingAppend of its record."""
        assert txn.pending is None, (txn.transactional_id, txn.pending)
        txn.pending = transit
        value = transit.to_value()
        record = (
            encode_transaction_log_key(txn.transactional_id),
            None if value is None else encode_transaction_log_value(value, transit.value_version),
        )
        append_id = self._next_append_id
        self._next_append_id += 1
        self._in_flight[append_id] = _InFlight(txn, transit, actions, on_done)
        result.appends.append(
            PendingAppend(append_id, self.partition_for(txn.transactional_id), (record,))
        )

    def _start_transition(
        self,
        txn: TransactionMetadata,
        event: Event,
        now_ms: int,
        result: TxnResult,
        on_done: Callable[[int, TxnResult], None] | None = None,
        **extra: Any,
    ) -> int | None:
        """Look (state, event) up in the table and begin it. Returns the error to answer now
        (a Refuse, or an epoch check of `bump_epoch` / `fence_epoch`), or None when a write is
        in flight and `on_done` answers later."""
        entry = transition(txn.state, event)
        if isinstance(entry, Refuse):
            return entry.error
        assert isinstance(entry, Go)
        cur = txn.current
        changes: dict[str, Any] = {"state": entry.state, "last_update_timestamp_ms": now_ms}
        for action in entry.actions:
            if action == "bump_epoch":
                error = self._bump_epoch(cur, changes, extra["expected_epoch"], extra["timeout_ms"])
                if error is not None:
                    return error
            elif action == "fence_epoch":
                # Kafka's prepareFenceProducerEpoch: bump unless the epoch is exhausted (then
                # the retried InitProducerId gets a new producer id).
                epoch = cur.producer_epoch
                changes["producer_epoch"] = epoch if is_epoch_exhausted(epoch) else epoch + 1
                changes["last_producer_epoch"] = NO_PRODUCER_EPOCH
            elif action == "start_transaction":
                changes["start_timestamp_ms"] = now_ms
                changes["partitions"] = frozenset(extra["partitions"])
                changes["client_transaction_version"] = extra["client_transaction_version"]
            elif action == "add_partitions":
                changes["partitions"] = changes.get("partitions", cur.partitions) | frozenset(
                    extra["partitions"]
                )
            elif action == "end_epoch_bump":
                # KIP-890 part 2: an EndTxn v5+ is a transaction version 2 request whatever
                # version added the partitions (Kafka's transactionVersionForEndTxn); an end
                # the coordinator starts itself follows the transaction's recorded version.
                tv2 = extra.get("tv2", cur.client_transaction_version >= 2)
                if tv2:
                    changes["client_transaction_version"] = 2
                    changes["producer_epoch"] = cur.producer_epoch + 1
                    changes["last_producer_epoch"] = cur.producer_epoch
                    if is_epoch_exhausted(cur.producer_epoch + 1):
                        changes["next_producer_id"] = self.allocate_producer_id()
            elif action == "complete_transaction":
                changes["partitions"] = frozenset()
                if cur.next_producer_id != NO_PRODUCER_ID:
                    changes["previous_producer_id"] = cur.producer_id
                    changes["producer_id"] = cur.next_producer_id
                    changes["next_producer_id"] = NO_PRODUCER_ID
                    changes["producer_epoch"] = 0
                    changes["last_producer_epoch"] = NO_PRODUCER_EPOCH
            elif action == "persist":
                transit = txn.prepare(**changes)
                self._write(txn, transit, entry.actions, result, on_done)
                return None
            else:
                assert action.startswith(("answer_", "request_")), action
        # No write: an in-memory step (PrepareEpochFence); the caller chains the next event.
        assert entry.state is S.PREPARE_EPOCH_FENCE, entry
        txn.current = txn.prepare(**changes)
        return None

    def _bump_epoch(
        self, cur: Transit, changes: dict[str, Any], expected_epoch: int | None, timeout_ms: int
    ) -> int | None:
        """Kafka's prepareIncrementProducerEpoch / prepareProducerIdRotation."""
        changes.update(
            transaction_timeout_ms=timeout_ms, partitions=frozenset(), start_timestamp_ms=-1
        )
        if is_epoch_exhausted(cur.producer_epoch) and expected_epoch in (
            None,
            cur.producer_epoch,
        ):
            changes.update(
                producer_id=self.allocate_producer_id(),
                previous_producer_id=cur.producer_id,
                next_producer_id=NO_PRODUCER_ID,
                producer_epoch=0,
                last_producer_epoch=cur.producer_epoch
                if expected_epoch is not None
                else NO_PRODUCER_EPOCH,
            )
            return None
        if expected_epoch is None:
            changes.update(producer_epoch=cur.producer_epoch + 1, last_producer_epoch=-1)
        elif cur.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == cur.producer_epoch:
            changes.update(
                producer_epoch=cur.producer_epoch + 1, last_producer_epoch=cur.producer_epoch
            )
        elif expected_epoch == cur.last_producer_epoch:
            pass  # a retry of a bump whose answer was lost: answer the current epoch
        else:
            return ErrorCode.producer_fenced.value
        return None

    # --- InitProducerId ----------------------------------------------------------------------

    def init_producer_id(self, req: InitProducerIdRequest, now_ms: int, token: Any) -> TxnResult:
        result = TxnResult()
        version = req.api_version

        def answer(
            out: TxnResult, error: int, pid: int = NO_PRODUCER_ID, epoch: int = NO_PRODUCER_EPOCH
        ) -> None:
            error = _map_fenced(error, version, 4)
            if error != NONE:
                pid, epoch = NO_PRODUCER_ID, NO_PRODUCER_EPOCH
            out.responses.append((token, InitProducerIdResponse(error, pid, epoch)))

        if req.transactional_id is None:  # idempotent producer: always a new producer id
            answer(result, NONE, self.allocate_producer_id(), 0)
            return result
        tid = req.transactional_id
        if not tid:
            answer(result, ErrorCode.invalid_request.value)
            return result
        if not 0 < req.transaction_timeout_ms <= self.config.transaction_max_timeout_ms:
            answer(result, ErrorCode.invalid_transaction_timeout.value)
            return result
        error = self._coordinator_error(tid)
        if error != NONE:
            answer(result, error)
            return result
        txn = self.transactions.get(tid)
        if txn is None:
            txn = self.transactions[tid] = TransactionMetadata(
                tid,
                Transit(
                    S.EMPTY,
                    self.allocate_producer_id(),
                    NO_PRODUCER_ID,
                    NO_PRODUCER_ID,
                    NO_PRODUCER_EPOCH,
                    NO_PRODUCER_EPOCH,
                    req.transaction_timeout_ms,
                    frozenset(),
                    -1,
                    now_ms,
                    0,
                ),
            )
        if txn.pending is not None:
            answer(result, ErrorCode.concurrent_transactions.value)
            return result
        expected = req.producer_id != NO_PRODUCER_ID
        cur = txn.current
        if expected and not (  # Kafka's isValidProducerId
            cur.producer_epoch == NO_PRODUCER_EPOCH
            or req.producer_id == cur.producer_id
            or (
                req.producer_id == cur.previous_producer_id
                and is_epoch_exhausted(req.producer_epoch)
            )
        ):
            answer(result, ErrorCode.producer_fenced.value)
            return result

        def released(error: int, out: TxnResult) -> None:
            if error == NONE:
                answer(out, NONE, txn.current.producer_id, txn.current.producer_epoch)
            else:
                answer(out, error)

        before = txn.current
        error = self._start_transition(
            txn,
            Event.INIT_PRODUCER_ID,
            now_ms,
            result,
            released,
            expected_epoch=req.producer_epoch if expected else None,
            timeout_ms=req.transaction_timeout_ms,
        )
        if error is not None:
            answer(result, error)
        elif txn.state is S.PREPARE_EPOCH_FENCE:
            # An ongoing transaction: abort it first; the client retries on
            # CONCURRENT_TRANSACTIONS and then gets the epoch bumped once more.
            self._abort_fenced(txn, before, now_ms, result, answer)
        return result

    def _abort_fenced(
        self,
        txn: TransactionMetadata,
        before: Transit,
        now_ms: int,
        result: TxnResult,
        answer: Callable[..., None] | None,
    ) -> None:
        """Write PrepareAbort for a fenced transaction (state PrepareEpochFence). If the write
        fails the transaction is Ongoing again with its old epoch (`before`); the next timeout
        check or InitProducerId retries."""

        def released(error: int, out: TxnResult) -> None:
            if error != NONE and txn.state is S.PREPARE_EPOCH_FENCE:
                txn.current = before
            if answer is not None:
                answer(out, ErrorCode.concurrent_transactions.value if error == NONE else error)

        error = self._start_transition(txn, Event.ABORT, now_ms, result, released)
        assert error is None

    # --- AddPartitionsToTxn, AddOffsetsToTxn ---------------------------------------------------

    def add_partitions_to_txn(
        self, req: AddPartitionsToTxnRequest, now_ms: int, token: Any
    ) -> TxnResult:
        """AddPartitionsToTxn, every version: one answer once every transaction's write (if
        any) completes. Verify-only entries (v4+, KIP-890) only look."""
        result = TxnResult()
        version = req.api_version
        results: dict[int, AddPartitionsToTxnResult] = {}
        remaining = [0]

        def respond(out: TxnResult) -> None:
            ordered = tuple(results[i] for i in range(len(req.transactions)))
            out.responses.append((token, AddPartitionsToTxnResponse(ordered)))

        for i, t in enumerate(req.transactions):

            def settle(errors: dict[TopicPartition, int], i: int = i, t: Any = t) -> None:
                results[i] = AddPartitionsToTxnResult(
                    t.transactional_id,
                    tuple((tp, _map_fenced(errors[tp], version, 2)) for tp in t.partitions),
                )

            if t.verify_only:
                settle(self.verify(t))
                continue
            error, in_flight = self._add_partitions(
                t.transactional_id,
                t.producer_id,
                t.producer_epoch,
                t.partitions,
                2 if version >= 4 else 0,  # Kafka's transactionVersionForAddPartitionsToTxn
                now_ms,
                result,
            )
            if in_flight is None:
                settle({tp: error for tp in t.partitions})
                continue
            remaining[0] += 1

            def released(error: int, out: TxnResult, settle: Any = settle, t: Any = t) -> None:
                settle({tp: error for tp in t.partitions})
                remaining[0] -= 1
                if remaining[0] == 0:
                    respond(out)

            in_flight.on_done = released
        if remaining[0] == 0:
            respond(result)
        return result

    def verify(self, t: AddPartitionsToTxnTransaction) -> dict[TopicPartition, int]:
        """KIP-890 verification: are the partitions already in the open transaction?"""

        def all_(error: int) -> dict[TopicPartition, int]:
            return {tp: error for tp in t.partitions}

        if not t.transactional_id:
            return all_(ErrorCode.invalid_request.value)
        error = self._coordinator_error(t.transactional_id)
        if error != NONE:
            return all_(error)
        txn = self.transactions.get(t.transactional_id)
        if txn is None or txn.current.producer_id != t.producer_id:
            return all_(ErrorCode.invalid_producer_id_mapping.value)
        if txn.current.producer_epoch != t.producer_epoch:
            return all_(ErrorCode.producer_fenced.value)
        if txn.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            return all_(ErrorCode.concurrent_transactions.value)
        return {
            tp: NONE if tp in txn.current.partitions else ErrorCode.transaction_abortable.value
            for tp in t.partitions
        }

    def _add_partitions(
        self,
        tid: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        client_transaction_version: int,
        now_ms: int,
        result: TxnResult,
    ) -> tuple[int, _InFlight | None]:
        """Kafka's handleAddPartitionsToTransaction: (error, None) to answer now, or
        (NONE, the in-flight append) whose `on_done` the caller sets."""
        partitions = frozenset(partitions)
        if not tid:
            return ErrorCode.invalid_request.value, None
        error = self._coordinator_error(tid)
        if error != NONE:
            return error, None
        txn = self.transactions.get(tid)
        if txn is None or txn.current.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping.value, None
        if txn.current.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced.value, None
        if txn.pending is not None:
            return ErrorCode.concurrent_transactions.value, None
        if txn.state is S.ONGOING and partitions <= txn.current.partitions:
            return NONE, None  # already in the transaction: no write
        appends_before = len(result.appends)
        error = self._start_transition(
            txn,
            Event.ADD_PARTITIONS,
            now_ms,
            result,
            None,
            partitions=partitions,
            client_transaction_version=max(
                client_transaction_version, txn.current.client_transaction_version
            )
            if txn.state is S.ONGOING
            else client_transaction_version,
        )
        if error is not None:
            return error, None
        assert len(result.appends) == appends_before + 1
        return NONE, self._in_flight[result.appends[-1].append_id]

    def add_offsets_to_txn(self, req: AddOffsetsToTxnRequest, now_ms: int, token: Any) -> TxnResult:
        """Adds the group's `__consumer_offsets` partition to the transaction."""
        result = TxnResult()
        version = req.api_version

        def answer(error: int, out: TxnResult) -> None:
            out.responses.append((token, AddOffsetsToTxnResponse(_map_fenced(error, version, 2))))

        error, in_flight = self._add_partitions(
            req.transactional_id,
            req.producer_id,
            req.producer_epoch,
            [(OFFSETS_TOPIC, req.offsets_partition)],
            0,
            now_ms,
            result,
        )
        if in_flight is None:
            answer(error, result)
        else:
            in_flight.on_done = answer
        return result

    # --- EndTxn ------------------------------------------------------------------------------

    def end_txn(self, req: EndTxnRequest, now_ms: int, token: Any) -> TxnResult:
        """EndTxn: answered once PrepareCommit/PrepareAbort is written; markers follow."""
        result = TxnResult()
        version = req.api_version
        tv2 = version >= 5

        def answer(
            out: TxnResult, error: int, pid: int = NO_PRODUCER_ID, epoch: int = NO_PRODUCER_EPOCH
        ) -> None:
            error = _map_fenced(error, version, 2)
            if error != NONE or not tv2:
                pid, epoch = NO_PRODUCER_ID, NO_PRODUCER_EPOCH
            out.responses.append((token, EndTxnResponse(error, pid, epoch)))

        tid = req.transactional_id
        if not tid:
            answer(result, ErrorCode.invalid_request.value)
            return result
        error = self._coordinator_error(tid)
        if error != NONE:
            answer(result, error)
            return result
        txn = self.transactions.get(tid)
        if txn is None or txn.current.producer_id != req.producer_id:
            answer(result, ErrorCode.invalid_producer_id_mapping.value)
            return result
        cur = txn.current
        retry_of_ended = (
            tv2
            and req.producer_epoch == cur.last_producer_epoch
            and cur.producer_epoch == req.producer_epoch + 1
            and txn.state
            in (S.PREPARE_COMMIT, S.PREPARE_ABORT, S.COMPLETE_COMMIT, S.COMPLETE_ABORT)
        )
        if req.producer_epoch != cur.producer_epoch and not retry_of_ended:
            answer(result, ErrorCode.producer_fenced.value)
            return result
        if txn.pending is not None:
            answer(result, ErrorCode.concurrent_transactions.value)
            return result
        if tv2 and not retry_of_ended and txn.state in (S.COMPLETE_COMMIT, S.COMPLETE_ABORT):
            # with TV2 the epoch moved at the end: the current epoch has no transaction
            answer(result, ErrorCode.invalid_txn_state.value)
            return result

        def released(error: int, out: TxnResult) -> None:
            if error != NONE:
                answer(out, error)
                return
            c = txn.current
            if c.next_producer_id != NO_PRODUCER_ID:
                answer(out, NONE, c.next_producer_id, 0)
            else:
                answer(out, NONE, c.producer_id, c.producer_epoch)

        event = Event.COMMIT if req.commit else Event.ABORT
        error = self._start_transition(txn, event, now_ms, result, released, tv2=tv2)
        if error == NONE:  # a retry of an ended transaction
            released(NONE, result)
        elif error is not None:
            answer(result, error)
        return result

    # --- appends and markers completing ---------------------------------------------------------

    def on_append_complete(self, append_id: int, error_code: int, now_ms: int) -> TxnResult:
        flight = self._in_flight.pop(append_id)
        txn, transit = flight.txn, flight.transit
        result = TxnResult()
        owned = self.transactions.get(txn.transactional_id) is txn
        if error_code == NONE and not owned:
            error = ErrorCode.not_coordinator.value  # unloaded meanwhile
        else:
            error = _append_error(error_code) if error_code != NONE else NONE
        if owned:
            assert txn.pending is transit
            txn.pending = None
            if error == NONE:
                txn.complete(transit)
                txn.complete_retry = False
                if transit.state is S.DEAD:
                    del self.transactions[txn.transactional_id]
                elif transit.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                    self._request_markers(txn, now_ms, result)
            elif transit.state in (S.COMPLETE_COMMIT, S.COMPLETE_ABORT):
                txn.complete_retry = True  # markers are written: tick writes Complete again
        if flight.on_done is not None:
            flight.on_done(error, result)
        return result

    def _request_markers(self, txn: TransactionMetadata, now_ms: int, result: TxnResult) -> None:
        cur = txn.current
        assert cur.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT)
        txn.markers_pending = set(cur.partitions)
        txn.markers_requested = True
        if not txn.markers_pending:
            self._start_transition(txn, Event.MARKERS_WRITTEN, now_ms, result)
            return
        result.markers.append(
            MarkerRequest(
                txn.transactional_id,
                cur.producer_id,
                cur.producer_epoch,
                cur.state is S.PREPARE_COMMIT,
                self.coordinator_epochs.get(self.partition_for(txn.transactional_id), 0),
                tuple(sorted(cur.partitions)),
            )
        )

    def on_markers_written(
        self,
        transactional_id: str,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        now_ms: int,
    ) -> TxnResult:
        result = TxnResult()
        txn = self.transactions.get(transactional_id)
        if (
            txn is None
            or txn.state not in (S.PREPARE_COMMIT, S.PREPARE_ABORT)
            or txn.current.producer_epoch != producer_epoch
            or not txn.markers_pending
        ):
            return result  # stale: unloaded, restarted, or already complete
        txn.markers_pending.difference_update(partitions)
        if not txn.markers_pending and txn.pending is None:
            error = self._start_transition(txn, Event.MARKERS_WRITTEN, now_ms, result)
            assert error is None
        return result

    # --- admin ---------------------------------------------------------------------------------

    def describe_transactions(
        self, transactional_ids: Iterable[str]
    ) -> list[TransactionDescription]:
        out = []
        for tid in transactional_ids:
            error = self._coordinator_error(tid)
            txn = self.transactions.get(tid)
            if error == NONE and txn is None:
                error = ErrorCode.transactional_id_not_found.value
            if error != NONE:
                out.append(TransactionDescription(tid, error))
                continue
            assert txn is not None
            c = txn.current
            by_topic: dict[str, list[int]] = {}
            for topic, p in sorted(c.partitions):
                by_topic.setdefault(topic, []).append(p)
            out.append(
                TransactionDescription(
                    tid,
                    NONE,
                    c.state.kafka_name,
                    c.transaction_timeout_ms,
                    c.start_timestamp_ms,
                    c.producer_id,
                    c.producer_epoch,
                    tuple((t, tuple(ps)) for t, ps in by_topic.items()),
                )
            )
        return out

    def list_transactions(
        self,
        state_filters: Iterable[str] = (),
        producer_id_filters: Iterable[int] = (),
        duration_filter_ms: int = -1,
        *,
        now_ms: int = 0,
    ) -> ListTransactionsResponse:
        if self.loading:
            return ListTransactionsResponse(ErrorCode.coordinator_load_in_progress.value)
        states: set[TransactionState] = set()
        unknown: list[str] = []
        state_filters = list(state_filters)
        for name in state_filters:
            state = TransactionState.from_kafka_name(name)
            if state is None:
                unknown.append(name)
            else:
                states.add(state)
        if state_filters and not states:  # only unknown states asked for: nothing matches
            return ListTransactionsResponse(NONE, tuple(unknown))
        pids = set(producer_id_filters)
        listed = []
        for tid, txn in sorted(self.transactions.items()):
            c = txn.current
            if self.partition_for(tid) not in self.owned:
                continue
            if states and c.state not in states:
                continue
            if pids and c.producer_id not in pids:
                continue
            if duration_filter_ms >= 0 and now_ms - c.start_timestamp_ms < duration_filter_ms:
                continue
            listed.append(ListedTransaction(tid, c.producer_id, c.state.kafka_name))
        return ListTransactionsResponse(NONE, tuple(unknown), tuple(listed))

    # --- timers --------------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        deadlines = [
            d for d in (self._next_abort_check_ms, self._next_expire_check_ms) if d is not None
        ]
        return min(deadlines, default=None)

    def _schedule(self, now_ms: int) -> None:
        if self._next_abort_check_ms is None:
            self._next_abort_check_ms = (
                now_ms + self.config.abort_timed_out_transaction_cleanup_interval_ms
            )
        if self._next_expire_check_ms is None:
            self._next_expire_check_ms = (
                now_ms + self.config.remove_expired_transaction_cleanup_interval_ms
            )

    def tick(self, now_ms: int) -> TxnResult:
        """Abort timed-out transactions, expire idle ids, and rewrite failed Complete records."""
        result = TxnResult()
        self._schedule(now_ms)
        for tid in sorted(self.transactions):
            txn = self.transactions[tid]
            if txn.complete_retry and txn.pending is None and not txn.markers_pending:
                txn.complete_retry = False
                self._start_transition(txn, Event.MARKERS_WRITTEN, now_ms, result)
        assert self._next_abort_check_ms is not None and self._next_expire_check_ms is not None
        if now_ms >= self._next_abort_check_ms:
            self._next_abort_check_ms = (
                now_ms + self.config.abort_timed_out_transaction_cleanup_interval_ms
            )
            result.extend(self.abort_timed_out_transactions(now_ms))
        if now_ms >= self._next_expire_check_ms:
            self._next_expire_check_ms = (
                now_ms + self.config.remove_expired_transaction_cleanup_interval_ms
            )
            result.extend(self.expire_transactional_ids(now_ms))
        return result

    def abort_timed_out_transactions(self, now_ms: int) -> TxnResult:
        """Kafka's abortTimedOutTransactions: fence (epoch bump) and abort."""
        result = TxnResult()
        for tid in sorted(self.transactions):
            txn = self.transactions[tid]
            c = txn.current
            if (
                self._coordinator_error(tid) == NONE
                and txn.pending is None
                and c.state is S.ONGOING
                and c.start_timestamp_ms + c.transaction_timeout_ms < now_ms
            ):
                self._fence_and_abort(txn, now_ms, result)
        return result

    def _fence_and_abort(self, txn: TransactionMetadata, now_ms: int, result: TxnResult) -> None:
        before = txn.current
        error = self._start_transition(txn, Event.FENCE, now_ms, result)
        assert error is None and txn.state is S.PREPARE_EPOCH_FENCE
        self._abort_fenced(txn, before, now_ms, result, None)

    def expire_transactional_ids(self, now_ms: int) -> TxnResult:
        """Kafka's removeExpiredTransactionalIds: tombstones for ids idle too long."""
        result = TxnResult()
        for tid in sorted(self.transactions):
            txn = self.transactions[tid]
            c = txn.current
            if (
                self._coordinator_error(tid) == NONE
                and txn.pending is None
                and c.state in (S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT)
                and c.last_update_timestamp_ms + self.config.transactional_id_expiration_ms
                <= now_ms
            ):
                self._start_transition(txn, Event.EXPIRE, now_ms, result)
        return result

    # --- loading and unloading ------------------------------------------------------------------

    def begin_loading(self, partition: int, coordinator_epoch: int = 0) -> None:
        self._drop_partition(partition)
        self.owned.discard(partition)
        self.loading.add(partition)
        self.coordinator_epochs[partition] = coordinator_epoch

    def replay(self, key_bytes: bytes, value_bytes: bytes | None) -> None:
        """Apply one `__transaction_state` record (in log order) while its partition loads."""
        tid = decode_transaction_log_key(key_bytes)
        assert self.partition_for(tid) in self.loading, tid
        if value_bytes is None:
            self.transactions.pop(tid, None)
            return
        _, value = decode_transaction_log_value(value_bytes)
        self.transactions[tid] = TransactionMetadata.from_value(tid, value)

    def finish_loading(self, partition: int, now_ms: int) -> TxnResult:
        """The partition is loaded: transactions in PrepareCommit/PrepareAbort resume writing
        their markers."""
        result = TxnResult()
        self.loading.discard(partition)
        self.owned.add(partition)
        self._schedule(now_ms)
        for tid in sorted(self.transactions):
            txn = self.transactions[tid]
            if self.partition_for(tid) == partition and txn.state in (
                S.PREPARE_COMMIT,
                S.PREPARE_ABORT,
            ):
                self._request_markers(txn, now_ms, result)
        return result

    def unload(self, partition: int) -> None:
        self._drop_partition(partition)
        self.owned.discard(partition)
        self.loading.discard(partition)

    def _drop_partition(self, partition: int) -> None:
        for tid in [t for t in self.transactions if self.partition_for(t) == partition]:
            del self.transactions[tid]
