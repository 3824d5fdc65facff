"""OffsetDelete (API key 47), version 0.

Deletes a group's committed offsets for some partitions (KIP-496): allowed for an empty group,
and for a consumer group's partitions of topics it is not subscribed to.
Errors: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, GROUP_ID_NOT_FOUND,
NON_EMPTY_GROUP; per partition GROUP_SUBSCRIBED_TO_TOPIC, UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import NONE, OffsetDeleteRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    if not request.group_id:
        return ctx.response(
            throttle_time=timedelta(0), error_code=ErrorCode.invalid_group_id, topics=()
        )
    topics_image = ctx.broker.image.topics_by_name
    errors: dict[tuple[str, int], int] = {}
    known: dict[str, list[int]] = {}
    for topic in request.topics:
        for p in topic.partitions:
            if topic.name in topics_image:
                known.setdefault(topic.name, []).append(p.partition_index)
            else:
                errors[(topic.name, p.partition_index)] = ErrorCode.unknown_topic_or_partition.value
    req = OffsetDeleteRequest(request.group_id, {name: tuple(ps) for name, ps in known.items()})
    r = await ctx.broker.groups.call("offset_delete", req)
    if r.error_code != NONE:
        return ctx.response(
            throttle_time=timedelta(0), error_code=ErrorCode(r.error_code), topics=()
        )
    for name, partitions in r.topics.items():
        for index, error in partitions:
            errors[(name, index)] = error
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=ErrorCode.none,
        topics=tuple(
            ctx.entity(
                "OffsetDeleteResponseTopic",
                name=topic.name,
                partitions=tuple(
                    ctx.entity(
                        "OffsetDeleteResponsePartition",
                        partition_index=p.partition_index,
                        error_code=ErrorCode(errors[(topic.name, p.partition_index)]),
                    )
                    for p in topic.partitions
                ),
            )
            for topic in request.topics
        ),
    )
