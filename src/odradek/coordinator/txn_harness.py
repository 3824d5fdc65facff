"""A test harness around `TransactionCoordinator`: an in-memory `__transaction_state` log, a
simulated clock, a producer id counter, and a mailbox of answers and marker requests.

Public so that tests elsewhere (handlers, simulations, users' own tests) can drive the core the
way the broker does. Every PendingAppend is appended and completed at once (or failed, when
`fail_next_appends` says so); MarkerRequests are collected in `markers` and completed only when
the test calls `write_markers` (or automatically when `auto_markers` is True).
Nothing here is used by the broker itself.
"""

from __future__ import annotations

import itertools
from typing import Any

from odradek.coordinator.transaction import TransactionMetadata
from odradek.coordinator.txn_coordinator import TransactionConfig, TransactionCoordinator, TxnResult
from odradek.coordinator.txn_messages import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnTransaction,
    EndTxnRequest,
    InitProducerIdRequest,
    MarkerRequest,
)


class TxnHarness:
    """Drives one TransactionCoordinator that owns every `__transaction_state` partition."""

    def __init__(
        self,
        config: TransactionConfig | None = None,
        now_ms: int = 0,
        auto_markers: bool = False,
    ) -> None:
        self.config = config or TransactionConfig(transaction_state_log_num_partitions=4)
        self.now_ms = now_ms
        self.auto_markers = auto_markers
        self.log: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.answers: dict[Any, Any] = {}
        self.markers: list[MarkerRequest] = []  # every request, in order
        self.open_markers: list[MarkerRequest] = []  # requested, not yet written
        self.fail_next_appends: list[int] = []
        self.coordinator_epoch = 0
        self._tokens = itertools.count(1)
        self._producer_ids = itertools.count(1000)
        self.coordinator = self._new_coordinator()

    def _new_coordinator(self) -> TransactionCoordinator:
        return TransactionCoordinator(
            lambda: next(self._producer_ids),
            self.config,
            owned_partitions=range(self.config.transaction_state_log_num_partitions),
            coordinator_epoch=self.coordinator_epoch,
        )

    # --- plumbing --------------------------------------------------------------------------

    def run(self, result: TxnResult) -> TxnResult:
        for token, response in result.responses:
            assert token not in self.answers, f"token {token} answered twice"
            self.answers[token] = response
        self.markers.extend(result.markers)
        self.open_markers.extend(result.markers)
        for append in result.appends:
            error = self.fail_next_appends.pop(0) if self.fail_next_appends else 0
            if error == 0:
                self.log.setdefault(append.partition, []).extend(append.records)
            self.run(self.coordinator.on_append_complete(append.append_id, error, self.now_ms))
        if self.auto_markers and result.markers:
            self.write_markers()
        return result

    def txn(self, transactional_id: str) -> TransactionMetadata:
        return self.coordinator.transactions[transactional_id]

    def _send(self, method: Any, req: Any) -> Any:
        token = next(self._tokens)
        self.run(method(req, self.now_ms, token))
        return self.answers.get(token)

    # --- requests ----------------------------------------------------------------------------

    def init(
        self,
        transactional_id: str | None,
        timeout_ms: int = 60_000,
        producer_id: int = -1,
        producer_epoch: int = -1,
        version: int = 5,
    ) -> Any:
        req = InitProducerIdRequest(
            transactional_id, timeout_ms, producer_id, producer_epoch, version
        )
        return self._send(self.coordinator.init_producer_id, req)

    def add(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        *partitions: tuple[str, int],
        version: int = 3,
        verify_only: bool = False,
    ) -> dict[tuple[str, int], int]:
        req = AddPartitionsToTxnRequest(
            (
                AddPartitionsToTxnTransaction(
                    transactional_id, producer_id, producer_epoch, tuple(partitions), verify_only
                ),
            ),
            version,
        )
        response = self._send(self.coordinator.add_partitions_to_txn, req)
        return response.errors_of(transactional_id)

    def add_offsets(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partition: int = 0,
        version: int = 3,
    ) -> int:
        req = AddOffsetsToTxnRequest(
            transactional_id, producer_id, producer_epoch, partition, version
        )
        return self._send(self.coordinator.add_offsets_to_txn, req).error_code

    def end(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        version: int = 4,
    ) -> Any:
        req = EndTxnRequest(transactional_id, producer_id, producer_epoch, commit, version)
        return self._send(self.coordinator.end_txn, req)

    def write_markers(self, transactional_id: str | None = None) -> None:
        """Complete every open marker request (of one id, or all)."""
        keep, done = [], []
        for m in self.open_markers:
            (done if transactional_id in (None, m.transactional_id) else keep).append(m)
        self.open_markers = keep
        for m in done:
            self.run(
                self.coordinator.on_markers_written(
                    m.transactional_id, m.producer_epoch, m.partitions, self.now_ms
                )
            )

    def advance(self, ms: int) -> TxnResult:
        self.now_ms += ms
        return self.run(self.coordinator.tick(self.now_ms))

    def restart(self) -> None:
        """A new coordinator (next coordinator epoch) loads every partition from the log."""
        self.coordinator_epoch += 1
        self.open_markers = []
        self.coordinator = TransactionCoordinator(lambda: next(self._producer_ids), self.config)
        for p in range(self.config.transaction_state_log_num_partitions):
            self.coordinator.begin_loading(p, self.coordinator_epoch)
            for key, value in self.log.get(p, []):
                self.coordinator.replay(key, value)
            self.run(self.coordinator.finish_loading(p, self.now_ms))
