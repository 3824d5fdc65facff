"""OffsetFetch (API key 9), versions 1-9.

Answers a group's committed offsets (-1 where nothing is committed), for the partitions asked or,
when the topic list is null (v2+), for every partition the group committed. v1-7 ask for one
group; v8+ for several groups in one request (KIP-709). v7+ `require_stable` (KIP-447): a partition
with an offset committed in a transaction not yet ended answers UNSTABLE_OFFSET_COMMIT, so that
a consumer starting after a transactional producer's commit never reads stale offsets. v1 has no
top-level error: a group error is reported on every partition asked for.
Errors: COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, INVALID_GROUP_ID (per group),
UNSTABLE_OFFSET_COMMIT (per partition).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import NONE, OffsetFetchGroup, OffsetFetchGroupResponse
from odradek.protocol.errors import ErrorCode

MULTI_GROUP_MIN_VERSION = 8
TOP_LEVEL_ERROR_MIN_VERSION = 2


async def handle(request, ctx):
    coordinator = ctx.broker.groups.coordinator
    if ctx.api_version >= MULTI_GROUP_MIN_VERSION:
        asked = [OffsetFetchGroup(g.group_id, _topics(g.topics)) for g in request.groups]
        results = _fetch(coordinator, asked, getattr(request, "require_stable", False))
        return ctx.response(
            throttle_time=timedelta(0),
            groups=tuple(
                ctx.entity(
                    "OffsetFetchResponseGroup",
                    group_id=r.group_id,
                    error_code=ErrorCode(r.error_code),
                    topics=_response_topics(
                        ctx, r, "OffsetFetchResponseTopics", "OffsetFetchResponsePartitions"
                    ),
                )
                for r in results
            ),
        )
    (r,) = _fetch(coordinator, [OffsetFetchGroup(request.group_id, _topics(request.topics))],
                  getattr(request, "require_stable", False))
    error = r.error_code
    topics = _response_topics(ctx, r, "OffsetFetchResponseTopic", "OffsetFetchResponsePartition")
    if error != NONE and ctx.api_version < TOP_LEVEL_ERROR_MIN_VERSION:
        topics = tuple(
            ctx.entity(
                "OffsetFetchResponseTopic",
                name=t.name,
                partitions=tuple(
                    ctx.entity(
                        "OffsetFetchResponsePartition",
                        partition_index=i,
                        committed_offset=-1,
                        committed_leader_epoch=-1,
                        metadata="",
                        error_code=ErrorCode(error),
                    )
                    for i in t.partition_indexes
                ),
            )
            for t in request.topics or ()
        )
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(error), topics=topics)


def _topics(topics) -> dict[str, tuple[int, ...]] | None:
    if topics is None:
        return None
    return {t.name: tuple(t.partition_indexes) for t in topics}


def _fetch(coordinator, asked: list[OffsetFetchGroup], require_stable: bool):
    results = []
    for g in asked:
        if not g.group_id:
            results.append(OffsetFetchGroupResponse(g.group_id, ErrorCode.invalid_group_id.value))
        else:
            results.extend(coordinator.offset_fetch([g], require_stable=require_stable))
    return results


def _response_topics(ctx, r, topic_class: str, partition_class: str):
    return tuple(
        ctx.entity(
            topic_class,
            name=name,
            partitions=tuple(
                ctx.entity(
                    partition_class,
                    partition_index=p.partition,
                    committed_offset=p.offset,
                    committed_leader_epoch=p.leader_epoch,
                    metadata=p.metadata,
                    error_code=ErrorCode(p.error_code),
                )
                for p in partitions
            ),
        )
        for name, partitions in r.topics.items()
    )
