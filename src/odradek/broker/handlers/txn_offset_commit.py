"""TxnOffsetCommit (API key 28), versions 0-5.

Commits consumed offsets inside the producer's transaction: the group coordinator writes them to
`__consumer_offsets` as a transactional batch of the producer, and they become the group's
committed offsets only when the transaction commits (its COMMIT marker reaches that partition);
an abort drops them. v3+ carry the member's generation, member id and group.instance.id, checked
as for OffsetCommit (KIP-447).
Errors per partition: INVALID_GROUP_ID, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS
(COORDINATOR_NOT_AVAILABLE before v2), COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, INVALID_PRODUCER_ID_MAPPING, OFFSET_METADATA_TOO_LARGE,
UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import TxnOffsetCommitPartition, TxnOffsetCommitRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    topics_image = ctx.broker.image.topics_by_name
    errors: dict[tuple[str, int], int] = {}
    known: dict[str, list[TxnOffsetCommitPartition]] = {}
    for topic in request.topics:
        for p in topic.partitions:
            if topic.name not in topics_image:
                errors[(topic.name, p.partition_index)] = ErrorCode.unknown_topic_or_partition.value
            else:
                known.setdefault(topic.name, []).append(TxnOffsetCommitPartition(
                    partition=p.partition_index,
                    offset=p.committed_offset,
                    leader_epoch=getattr(p, "committed_leader_epoch", -1),
                    metadata=p.committed_metadata,
                ))
    if known:
        answer = await ctx.broker.groups.call("txn_offset_commit", TxnOffsetCommitRequest(
            transactional_id=request.transactional_id,
            group_id=request.group_id,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            topics={name: tuple(ps) for name, ps in known.items()},
            generation_id=getattr(request, "generation_id", -1),
            member_id=getattr(request, "member_id", ""),
            group_instance_id=getattr(request, "group_instance_id", None),
            api_version=ctx.api_version,
        ))
        for name, partitions in answer.topics.items():
            for index, error in partitions:
                errors[(name, index)] = error
    return ctx.response(
        throttle_time=timedelta(0),
        topics=tuple(
            ctx.entity(
                "TxnOffsetCommitResponseTopic",
                name=topic.name,
                partitions=tuple(
                    ctx.entity("TxnOffsetCommitResponsePartition", partition_index=p.partition_index,
                               error_code=ErrorCode(errors[(topic.name, p.partition_index)]))
                    for p in topic.partitions
                ),
            )
            for topic in request.topics
        ),
    )
