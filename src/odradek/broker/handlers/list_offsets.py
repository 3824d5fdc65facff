"""ListOffsets (API key 2), versions 1-10.

Answers, per partition, the offset for a timestamp: -2 earliest (log start offset), -1 latest
(the high watermark, or the last stable offset for read_committed), -3 the record with the largest
timestamp (KIP-734), -4 earliest local (KIP-405; equals earliest without tiered storage), -5
latest tiered (KIP-1005; -1 without tiered storage), otherwise the first record whose timestamp is
at or after the target (-1/-1 when there is none).
Errors: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
UNKNOWN_LEADER_EPOCH, INVALID_REQUEST (a partition named twice), KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode

LATEST = -1
READ_COMMITTED = 1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
READ_COMMITTED = 1


async def handle(request, ctx):
    manager = ctx.broker.replica_manager
    isolation_level = getattr(request, "isolation_level", 0)
    topics = []
    for topic in request.topics:
        seen: set[int] = set()
        duplicates = {p.partition_index for p in topic.partitions if p.partition_index in seen or seen.add(p.partition_index)}
        results = []
        for p in topic.partitions:
            if p.partition_index in duplicates:
                results.append(_answer(ctx, p.partition_index, ErrorCode.invalid_request))
                continue
            partition = manager.leader_partition(topic.name, p.partition_index, getattr(p, "current_leader_epoch", -1))
            if isinstance(partition, ErrorCode):
                results.append(_answer(ctx, p.partition_index, partition))
                continue
            try:
                offset, timestamp = _lookup(partition.log, p.timestamp, isolation_level)
            except OSError as exc:
                ctx.broker.storage_error(partition, exc)
                results.append(_answer(ctx, p.partition_index, ErrorCode.kafka_storage_error))
                continue
            epoch = partition.log.epoch_for_offset(offset) if offset >= 0 else -1
            results.append(_answer(ctx, p.partition_index, ErrorCode.none, offset, timestamp, epoch))
        topics.append(ctx.entity("ListOffsetsTopicResponse", name=topic.name, partitions=tuple(results)))
    return ctx.response(throttle_time=timedelta(0), topics=tuple(topics))


def _lookup(log, timestamp: int, isolation_level: int) -> tuple[int, int]:
    last_fetchable = log.last_stable_offset if isolation_level == READ_COMMITTED else log.high_watermark
    if timestamp == LATEST:
        return last_fetchable, -1
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return log.log_start_offset, -1
    if timestamp == LATEST_TIERED:
        return -1, -1
    if timestamp == MAX_TIMESTAMP:
        found = log.max_timestamp_offset()
    else:
        found = log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= last_fetchable:
        return -1, -1
    return found


def _answer(ctx, index: int, error: ErrorCode, offset: int = -1, timestamp: int = -1, epoch: int = -1):
    return ctx.entity("ListOffsetsPartitionResponse", partition_index=index, error_code=error,
                      timestamp=timestamp, offset=offset, leader_epoch=epoch, old_style_offsets=())
