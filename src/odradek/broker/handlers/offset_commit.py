"""OffsetCommit (API key 8), versions 2-9.

Commits a group's consumed offsets; each partition is answered once its record is written to
`__consumer_offsets` (and only then visible to OffsetFetch). A commit with generation -1 and no
member id is a "simple" commit (an `assign()` consumer); otherwise the member and generation must
match the group's. v2-4 carry a retention time (-1: the broker's `offsets.retention.minutes`),
v6+ the leader epoch of the committed offset, v7+ group.instance.id. Topics are named by name
(v10's topic ids are not advertised).
Errors per partition: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS,
FENCED_INSTANCE_ID, OFFSET_METADATA_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION,
INVALID_COMMIT_OFFSET_SIZE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.broker.handlers._commits import merge_answer, split_partitions, topics_response
from odradek.coordinator.messages import OffsetCommitPartition, OffsetCommitRequest
from odradek.protocol.errors import ErrorCode

ONE_MS = timedelta(milliseconds=1)


async def handle(request, ctx):
    errors, known = split_partitions(
        request.topics, ctx.broker.image.topics_by_name,
        lambda p: OffsetCommitPartition(
            partition=p.partition_index,
            offset=p.committed_offset,
            leader_epoch=getattr(p, "committed_leader_epoch", -1),
            metadata=p.committed_metadata,
        ),
        refuse=None if request.group_id else ErrorCode.invalid_group_id.value,
    )
    if known:
        retention = getattr(request, "retention_time", None)
        req = OffsetCommitRequest(
            group_id=request.group_id,
            topics=known,
            generation_id=request.generation_id_or_member_epoch,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            retention_time_ms=-1 if retention is None else retention // ONE_MS,
        )
        merge_answer(errors, (await ctx.broker.groups.call("offset_commit", req)).topics)
    return ctx.response(
        throttle_time=timedelta(0),
        topics=topics_response(ctx, request.topics, errors, "OffsetCommitResponseTopic",
                               "OffsetCommitResponsePartition"),
    )
