"""TxnService: the broker's side of the transaction coordinator (`__transaction_state`).

The core (`odradek.coordinator.txn_coordinator.TransactionCoordinator`) is synchronous and
deterministic; `CoordinatorRuntime` gives it the event loop, the clock and the
`__transaction_state` log. What is particular to transactions:

* producer ids: the core asks for one synchronously (`allocate_producer_id`); ids come from
  the broker's block reserved durably in the metadata log, and `call` makes sure the block has
  ids left before it calls the core (the only calls that allocate are InitProducerId and EndTxn);
* markers: every MarkerRequest of a result becomes a task that writes the COMMIT / ABORT
  marker to each partition of the transaction (`txn_markers.write_markers`, in process: on a
  single node this broker leads them all), retries retriable errors with backoff, counts a
  partition that no longer exists as written (as Kafka), and reports the written partitions
  with `on_markers_written`, after which the core writes CompleteCommit / CompleteAbort;
* KIP-890 verification: the produce path asks `verify_partition` before the first
  transactional batch of a producer on a partition is appended.

Owner: the BrokerCore (`core.txns`); every method runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from odradek.broker.coordinator_runtime import CoordinatorRuntime
from odradek.broker.txn_markers import write_markers
from odradek.coordinator.txn_coordinator import TransactionConfig, TransactionCoordinator, TxnResult
from odradek.coordinator.txn_messages import AddPartitionsToTxnTransaction, MarkerRequest
from odradek.coordinator.txn_records import partition_for_transactional_id
from odradek.protocol.apis import request_module
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
# Calls that may allocate producer ids, and how many one call can take at most.
_ALLOCATING_CALLS = frozenset({"init_producer_id", "end_txn"})
_IDS_PER_CALL = 2
# Marker write errors worth retrying (Kafka's TransactionMarkerRequestCompletionHandler).
_RETRIABLE_MARKER_ERRORS = frozenset({
    ErrorCode.not_leader_or_follower,
    ErrorCode.kafka_storage_error,
    ErrorCode.not_enough_replicas,
    ErrorCode.not_enough_replicas_after_append,
    ErrorCode.request_timed_out,
    ErrorCode.unknown_server_error,
})
MARKER_RETRY_BACKOFF_S = (0.05, 2.0)
ADD_PARTITIONS_TO_TXN_KEY = 24
VERIFY_VERSION = 4  # verify-only entries (KIP-890), sent between brokers
VERIFY_TIMEOUT_S = 10.0  # first and largest pause between marker retries


def transaction_config(config: Any, num_partitions: int | None = None) -> TransactionConfig:
    """TransactionConfig from the broker's config (Kafka's names, the broker's values)."""
    return TransactionConfig(
        transaction_max_timeout_ms=config.transaction_max_timeout_ms,
        transactional_id_expiration_ms=config.transactional_id_expiration_ms,
        abort_timed_out_transaction_cleanup_interval_ms=(
            config.transaction_abort_timed_out_transaction_cleanup_interval_ms),
        remove_expired_transaction_cleanup_interval_ms=(
            config.transaction_remove_expired_transaction_cleanup_interval_ms),
        transaction_state_log_num_partitions=num_partitions
        or config.transaction_state_log_num_partitions,
    )


class TxnService(CoordinatorRuntime):
    """Runs this broker's TransactionCoordinator on the event loop (see CoordinatorRuntime).

    Holds besides the runtime's state: the marker tasks in flight (in the runtime's task set)
    and markers a result asked for before the loop ran (`_deferred_markers`).
    Called by the transaction handlers (`call`, `coordinator` for reads), the produce path
    (`verify_partition`) and BrokerCore (`open`, `sync_partitions`, `close`).
    """

    topic = TRANSACTION_STATE_TOPIC

    def __init__(self, core: Any) -> None:
        self._deferred_markers: list[MarkerRequest] = []
        super().__init__(core)

    def _new_coordinator(self, num_partitions: int | None) -> TransactionCoordinator:
        return TransactionCoordinator(self._core.take_producer_id,
                                      transaction_config(self._core.config, num_partitions))

    def _configured_partitions(self) -> int:
        return self.coordinator.config.transaction_state_log_num_partitions

    def _begin_loading(self, p: int) -> None:
        # The coordinator epoch is the leader epoch of the partition (Kafka's): markers of a
        # newer coordinator fence those of an older one.
        partition = self._core.replica_manager.get(self.topic, p)
        self.coordinator.begin_loading(p, partition.leader_epoch if partition is not None else 0)

    def _unload(self, p: int) -> None:
        self.coordinator.unload(p)

    def _replay_batch(self, p: int, header: Any, batch: memoryview, from_offset: int,
                      load_ms: int) -> None:
        if header.is_control:
            return  # the coordinator's own log holds no transactions
        self._replay_records(p, batch, from_offset,
                             lambda record: self.coordinator.replay(record.key, record.value))

    async def call(self, method_name: str, *args: Any) -> Any:
        if method_name in _ALLOCATING_CALLS:
            await self._core.ensure_producer_ids(_IDS_PER_CALL)
        return await super().call(method_name, *args)

    # -- KIP-890 verification ----------------------------------------------------------------
    async def verify_partition_anywhere(self, transactional_id: str, producer_id: int,
                                        producer_epoch: int, topic: str, partition: int) -> int:
        """`verify_partition`, asking the coordinator's broker with a verify-only
        AddPartitionsToTxn (v4) when the transactional id is coordinated elsewhere (cluster
        mode). NOT_COORDINATOR when no live coordinator is known."""
        local = self.verify_partition(transactional_id, producer_id, producer_epoch, topic, partition)
        cluster = self._core.cluster
        if local != ErrorCode.not_coordinator.value or cluster is None:
            return local
        image_topic = self._core.image.topics_by_name.get(TRANSACTION_STATE_TOPIC)
        if image_topic is None:
            return local
        index = partition_for_transactional_id(transactional_id, len(image_topic.partitions))
        leader = image_topic.partitions[index].leader
        if leader < 0 or leader == self._core.config.node_id:
            return local
        m = request_module(ADD_PARTITIONS_TO_TXN_KEY, VERIFY_VERSION)
        request = m.AddPartitionsToTxnRequest(transactions=(m.AddPartitionsToTxnTransaction(
            transactional_id=transactional_id, producer_id=producer_id, producer_epoch=producer_epoch,
            verify_only=True, topics=(m.AddPartitionsToTxnTopic(name=topic, partitions=(partition,)),)),))
        try:
            response = await cluster.inter_broker.request(leader, ADD_PARTITIONS_TO_TXN_KEY, VERIFY_VERSION,
                                                          request, VERIFY_TIMEOUT_S)
        except Exception:  # unreachable: the producer retries (NOT_ENOUGH_REPLICAS)
            return ErrorCode.coordinator_not_available.value
        if response.error_code is not ErrorCode.none:
            return response.error_code.value
        for result in response.results_by_transaction:
            for topic_result in result.topic_results:
                for p in topic_result.results_by_partition:
                    return p.partition_error_code.value
        return ErrorCode.unknown_server_error.value

    def verify_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                         topic: str, partition: int) -> int:
        """Is (topic, partition) in the producer's open transaction? NONE, or the error of a
        verify-only AddPartitionsToTxn (v4+): TRANSACTION_ABORTABLE when it was not added,
        PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING, CONCURRENT_TRANSACTIONS, NOT_COORDINATOR,
        COORDINATOR_LOAD_IN_PROGRESS."""
        entry = AddPartitionsToTxnTransaction(transactional_id, producer_id, producer_epoch,
                                              ((topic, partition),), verify_only=True)
        return self.coordinator.verify(entry)[(topic, partition)]

    # -- markers -----------------------------------------------------------------------------
    def _process_extra(self, result: TxnResult) -> None:
        if not result.markers and not self._deferred_markers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._deferred_markers.extend(result.markers)  # started by the next call on the loop
            return
        markers, self._deferred_markers = self._deferred_markers + result.markers, []
        for marker in markers:
            self._spawn(loop, self._write_markers(marker))

    async def _write_markers(self, marker: MarkerRequest) -> None:
        pending = list(marker.partitions)
        backoff_s, max_backoff_s = MARKER_RETRY_BACKOFF_S
        while pending and not self._closed:
            errors = await write_markers(self._core, marker.producer_id, marker.producer_epoch,
                                         marker.commit, marker.coordinator_epoch, pending)
            written, retry = [], []
            for tp, error in errors.items():
                if error in _RETRIABLE_MARKER_ERRORS:
                    retry.append(tp)
                    continue
                if error not in (ErrorCode.none, ErrorCode.unknown_topic_or_partition):
                    # A fenced producer or coordinator epoch: the partition already moved on;
                    # waiting would leave the transaction hanging forever.
                    log.warning("%s marker of %s for %s-%d: %s", "commit" if marker.commit else "abort",
                                marker.transactional_id, tp[0], tp[1], error.name)
                written.append(tp)
            if written:
                self._process_result(self.coordinator.on_markers_written(
                    marker.transactional_id, marker.producer_epoch, written, now_ms()))
            pending = retry
            if retry:
                log.info("retrying markers of %s for %d partitions", marker.transactional_id,
                         len(retry))
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, max_backoff_s)
