"""AlterPartition (API key 56), versions 2-3 (v0-1, by topic name, are gone from Kafka 4 and kio).

A partition leader's ISR change, sent to the controller: each partition is a compare-and-swap on
its partition epoch, decided by `ClusterController.alter_partition` and written to the metadata
quorum before the answer. v3 (KIP-903) carries each proposed member's broker epoch: a member
whose epoch is not its current registration's (a restarted broker) is INELIGIBLE_REPLICA.
Top-level errors: NOT_CONTROLLER (this broker is not the controller, or a single node, which has
no replicas to report), STALE_BROKER_EPOCH (the sender's broker epoch is not current),
REQUEST_TIMED_OUT (the quorum could not be written).
Per partition: UNKNOWN_TOPIC_OR_PARTITION, FENCED_LEADER_EPOCH, INVALID_REQUEST,
INVALID_UPDATE_VERSION, INELIGIBLE_REPLICA, each with the controller's current state.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata.election import AlterPartitionRequest
from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.protocol.errors import ErrorCode


def _answer(ctx, error: ErrorCode, topics=()):
    return ctx.response(throttle_time=timedelta(0), error_code=error, topics=tuple(topics))


async def handle(request, ctx):
    cluster = ctx.broker.cluster
    controller = cluster.controller if cluster is not None else None
    if controller is None or not controller.active:
        return _answer(ctx, ErrorCode.not_controller)
    registration = controller.store.image.brokers.get(request.broker_id)
    if request.broker_epoch >= 0 and (registration is None or registration.broker_epoch != request.broker_epoch):
        return _answer(ctx, ErrorCode.stale_broker_epoch)
    requests: list[AlterPartitionRequest] = []
    member_epochs: list[dict[int, int] | None] = []
    for topic in request.topics:
        for p in topic.partitions:
            states = getattr(p, "new_isr_with_epochs", None)
            if states is not None:  # v3
                isr = tuple(int(s.broker_id) for s in states)
                member_epochs.append({int(s.broker_id): int(s.broker_epoch) for s in states})
            else:
                isr = tuple(int(b) for b in p.new_isr)
                member_epochs.append(None)
            requests.append(AlterPartitionRequest(topic.topic_id, p.partition_index, request.broker_id,
                                                  p.leader_epoch, p.partition_epoch, isr))
    try:
        results = await controller.alter_partition(requests, member_epochs)
    except MetadataQuorumError as exc:
        return _answer(ctx, exc.error_code)
    answers = iter(zip(requests, results))
    topics = []
    for topic in request.topics:
        partitions = []
        for _ in topic.partitions:
            req, result = next(answers)
            partitions.append(ctx.entity("PartitionData", partition_index=req.partition, error_code=result.error,
                                         leader_id=result.leader, leader_epoch=result.leader_epoch,
                                         isr=result.isr, partition_epoch=result.partition_epoch))
        topics.append(ctx.entity("TopicData", topic_id=topic.topic_id, partitions=tuple(partitions)))
    return _answer(ctx, ErrorCode.none, topics)
