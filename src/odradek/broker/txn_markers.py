"""Writing end-transaction markers: Kafka's WriteTxnMarkers, for the partitions this broker leads.

Both the transaction coordinator (in process, when a transaction ends) and the WriteTxnMarkers
handler (a request from another broker's coordinator, or from `odradek transactions abort`)
come here. For each partition the COMMIT or ABORT control batch is appended as leader; for a
`__consumer_offsets` partition the group coordinator then makes the producer's pending
transactional offset commits committed (or drops them), as Kafka's
`GroupCoordinator.onTransactionCompleted`.

Per-partition errors (Kafka's): UNKNOWN_TOPIC_OR_PARTITION (the topic or partition does not
exist), NOT_LEADER_OR_FOLLOWER (not hosted here), INVALID_PRODUCER_EPOCH (an older producer epoch
than the log knows), TRANSACTION_COORDINATOR_FENCED (an older coordinator epoch),
KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore

OFFSETS_TOPIC = "__consumer_offsets"


async def write_markers(
    core: BrokerCore,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    partitions: Iterable[tuple[str, int]],
) -> dict[tuple[str, int], ErrorCode]:
    """Write the marker to each partition in turn; the error of each (ErrorCode.none: written)."""
    errors: dict[tuple[str, int], ErrorCode] = {}
    completed_offsets_partitions: list[int] = []
    for topic, index in partitions:
        found = core.replica_manager.leader_partition(topic, index)
        if isinstance(found, ErrorCode):
            errors[(topic, index)] = found
            continue
        result = await core.replica_manager.write_txn_marker(
            found, producer_id, producer_epoch, commit, coordinator_epoch, now_ms()
        )
        errors[(topic, index)] = result.error
        if result.error is ErrorCode.none and topic == OFFSETS_TOPIC:
            completed_offsets_partitions.append(index)
    if completed_offsets_partitions:
        core.groups.complete_transaction(producer_id, commit, completed_offsets_partitions)
    return errors
