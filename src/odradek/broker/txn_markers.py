"""Writing end-transaction markers: Kafka's WriteTxnMarkers, for the partitions this broker leads.

Both the transaction coordinator (in process, when a transaction ends) and the WriteTxnMarkers
handler (a request from another broker's coordinator, or from `odradek transactions abort`)
come here. In cluster mode, partitions led by another broker get a WriteTxnMarkers request to
that leader. For each partition the COMMIT or ABORT control batch is appended as leader; for a
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

from odradek.protocol.apis import request_module
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore

OFFSETS_TOPIC = "__consumer_offsets"
WRITE_TXN_MARKERS_KEY = 27
REMOTE_MARKERS_TIMEOUT_S = 10.0


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
    remote: dict[int, list[tuple[str, int]]] = {}  # leader broker -> its partitions (cluster mode)
    for topic, index in partitions:
        found = core.replica_manager.leader_partition(topic, index)
        if found is ErrorCode.not_leader_or_follower and core.cluster is not None:
            leader = _leader_of(core, topic, index)
            if leader is not None and leader != core.config.node_id:
                remote.setdefault(leader, []).append((topic, index))
                continue
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
    for leader, led in remote.items():
        errors.update(await _write_remote(core, leader, producer_id, producer_epoch, commit,
                                          coordinator_epoch, led))
    return errors


def _leader_of(core: BrokerCore, topic: str, index: int) -> int | None:
    image_topic = core.image.topics_by_name.get(topic)
    if image_topic is None or index not in image_topic.partitions:
        return None
    leader = image_topic.partitions[index].leader
    return leader if leader >= 0 else None


async def _write_remote(core: BrokerCore, leader: int, producer_id: int, producer_epoch: int,
                        commit: bool, coordinator_epoch: int, partitions: list[tuple[str, int]]
                        ) -> dict[tuple[str, int], ErrorCode]:
    """WriteTxnMarkers (v1) to the broker leading `partitions`; its errors, or
    NOT_LEADER_OR_FOLLOWER for all when it cannot be reached (the caller retries)."""
    m = request_module(WRITE_TXN_MARKERS_KEY, 1)
    by_topic: dict[str, list[int]] = {}
    for topic, index in partitions:
        by_topic.setdefault(topic, []).append(index)
    request = m.WriteTxnMarkersRequest(markers=(m.WritableTxnMarker(
        producer_id=producer_id, producer_epoch=producer_epoch, transaction_result=commit,
        topics=tuple(m.WritableTxnMarkerTopic(name=t, partition_indexes=tuple(ps))
                     for t, ps in by_topic.items()),
        coordinator_epoch=coordinator_epoch),))
    try:
        response = await core.cluster.inter_broker.request(leader, WRITE_TXN_MARKERS_KEY, 1, request,
                                                           REMOTE_MARKERS_TIMEOUT_S)
    except Exception:  # unreachable or timed out: retried by the transaction coordinator
        return {tp: ErrorCode.not_leader_or_follower for tp in partitions}
    errors = {tp: ErrorCode.not_leader_or_follower for tp in partitions}
    for marker in response.markers:
        for topic in marker.topics:
            for p in topic.partitions:
                errors[(topic.name, p.partition_index)] = p.error_code
    return errors
