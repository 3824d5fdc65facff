"""OffsetForLeaderEpoch (API key 23), versions 2-4.

For each partition and leader epoch, answers the largest epoch at or below the requested one and
the end offset of that epoch (the start offset of the next epoch, or the log end offset for the
current epoch), so a consumer or follower can detect and truncate a diverged log. A follower
(replica id >= 0) asking about an epoch above the leader's latest is answered the latest epoch.
Errors: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
UNKNOWN_LEADER_EPOCH.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    manager = ctx.broker.replica_manager
    replica_id = getattr(request, "replica_id", -1)
    topics = []
    for topic in request.topics:
        results = []
        for p in topic.partitions:
            partition = manager.leader_partition(topic.topic, p.partition, p.current_leader_epoch)
            if isinstance(partition, ErrorCode):
                results.append(ctx.entity("EpochEndOffset", error_code=partition, partition=p.partition,
                                          leader_epoch=-1, end_offset=-1))
                continue
            requested = p.leader_epoch
            if replica_id >= 0:
                # A follower asking about an epoch above ours (Kafka's follower then falls back
                # to its high watermark): answer our latest epoch, so it keeps what agrees.
                latest = partition.log.leader_epoch_cache.entries
                if latest and requested > latest[-1][0]:
                    requested = latest[-1][0]
            epoch, end_offset = partition.log.end_offset_for_epoch(requested)
            results.append(ctx.entity("EpochEndOffset", error_code=ErrorCode.none, partition=p.partition,
                                      leader_epoch=epoch, end_offset=end_offset))
        topics.append(ctx.entity("OffsetForLeaderTopicResult", topic=topic.topic, partitions=tuple(results)))
    return ctx.response(throttle_time=timedelta(0), topics=tuple(topics))
