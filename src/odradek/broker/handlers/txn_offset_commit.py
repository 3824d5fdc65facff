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

from odradek.broker.handlers._commits import merge_answer, split_partitions, topics_response
from odradek.coordinator.messages import TxnOffsetCommitPartition, TxnOffsetCommitRequest


async def handle(request, ctx):
    errors, known = split_partitions(
        request.topics, ctx.broker.image.topics_by_name,
        lambda p: TxnOffsetCommitPartition(
            partition=p.partition_index,
            offset=p.committed_offset,
            leader_epoch=getattr(p, "committed_leader_epoch", -1),
            metadata=p.committed_metadata,
        ),
    )
    if known:
        answer = await ctx.broker.groups.call("txn_offset_commit", TxnOffsetCommitRequest(
            transactional_id=request.transactional_id,
            group_id=request.group_id,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            topics=known,
            generation_id=getattr(request, "generation_id", -1),
            member_id=getattr(request, "member_id", ""),
            group_instance_id=getattr(request, "group_instance_id", None),
            api_version=ctx.api_version,
        ))
        merge_answer(errors, answer.topics)
    return ctx.response(
        throttle_time=timedelta(0),
        topics=topics_response(ctx, request.topics, errors, "TxnOffsetCommitResponseTopic",
                               "TxnOffsetCommitResponsePartition"),
    )
