"""GroupService: the broker's side of the group coordinator (classic groups, committed offsets).

The coordinator core (`odradek.coordinator.group_coordinator.GroupCoordinator`) is synchronous
and deterministic; `CoordinatorRuntime` gives it the event loop, the clock and the
`__consumer_offsets` log (appends in order per partition, one timer, loading at start). Commit
timestamps are stored, so the core's clock is `runtime.clock.now_ms`, one consistent clock.

What is particular to groups:
* a transactional offset commit (TxnOffsetCommit) is appended as a transactional batch of the
  producer (its producer id and epoch, no sequence), so the log's producer state holds the
  transaction open until the transaction coordinator's marker ends it;
* loading replays offset commits with the producer id of their batch, and COMMIT / ABORT control
  batches (`replay_marker`), so pending transactional offsets survive a restart;
* when a marker is written to a `__consumer_offsets` partition (`txn_markers.write_markers`),
  `complete_transaction` makes the producer's pending offsets committed or drops them.

Owner: the BrokerCore (`core.groups`); every method runs on the event loop.
"""

from __future__ import annotations

from typing import Any

from odradek.broker.coordinator_runtime import CoordinatorRuntime
from odradek.coordinator.group import GroupConfig
from odradek.coordinator.group_coordinator import GroupCoordinator, PendingAppend
from odradek.protocol import records
from odradek.runtime.clock import now_ms

OFFSETS_TOPIC = "__consumer_offsets"


def group_config(config: Any, offsets_topic_num_partitions: int | None = None) -> GroupConfig:
    """GroupConfig from the broker's config (Kafka's names, the broker's values)."""
    return GroupConfig(
        group_min_session_timeout_ms=config.group_min_session_timeout_ms,
        group_max_session_timeout_ms=config.group_max_session_timeout_ms,
        group_initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        group_max_size=config.group_max_size,
        offsets_retention_minutes=config.offsets_retention_minutes,
        offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
        offset_metadata_max_bytes=getattr(config, "offset_metadata_max_bytes", 4096),
        offsets_topic_num_partitions=offsets_topic_num_partitions
        or config.offsets_topic_num_partitions,
    )


class GroupService(CoordinatorRuntime):
    """Runs this broker's GroupCoordinator on the event loop (see CoordinatorRuntime).

    Called by the group handlers (`call`, `coordinator` for reads), by the marker writer
    (`complete_transaction`) and by BrokerCore (`open`, `sync_partitions`, `close`).
    """

    topic = OFFSETS_TOPIC

    def _new_coordinator(self, num_partitions: int | None) -> GroupCoordinator:
        return GroupCoordinator(group_config(self._core.config, num_partitions))

    def _configured_partitions(self) -> int:
        return self.coordinator.config.offsets_topic_num_partitions

    def _finish_loading(self, p: int) -> None:
        self.coordinator.finish_loading(p, now_ms())

    def _batch_for(self, append: PendingAppend, timestamp_ms: int) -> bytes:
        return records.build_batch(
            [(key, value, [], timestamp_ms) for key, value in append.records],
            producer_id=append.producer_id,
            producer_epoch=append.producer_epoch,
            base_sequence=append.base_sequence,
            transactional=append.transactional,
        )

    def _replay_batch(self, p: int, header: Any, batch: memoryview, from_offset: int,
                      load_ms: int) -> None:
        if header.is_control:
            marker = records.parse_end_txn_marker(batch)
            if marker is not None:
                self.coordinator.replay_marker(header.producer_id, marker.commit, p)
            return
        producer_id, transactional = header.producer_id, header.is_transactional
        self._replay_records(p, batch, from_offset, lambda record: self.coordinator.replay(
            record.key, record.value, load_ms, producer_id=producer_id, transactional=transactional))

    def complete_transaction(self, producer_id: int, commit: bool, partitions: list[int]) -> None:
        """The producer's marker is in these `__consumer_offsets` partitions: its pending
        transactional offsets become committed (COMMIT) or are dropped (ABORT)."""
        self.coordinator.complete_transaction(producer_id, commit, now_ms(), partitions)
        self._after_call()
