"""DeleteRecords (API key 21), versions 0-2.

Advances each partition's log start offset to the given offset (-1: the high watermark) and
answers the new low watermark. Records below it are no longer readable (OFFSET_OUT_OF_RANGE,
ListOffsets earliest moves); retention removes the whole segments below it at its next check.
The log start offsets are checkpointed before the response, so a restart keeps them.
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, OFFSET_OUT_OF_RANGE
(beyond the high watermark), KAFKA_STORAGE_ERROR (the checkpoint could not be written).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    core = ctx.broker
    answers: list[tuple[str, list[tuple[int, int, ErrorCode]]]] = []
    changed = False
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            partition = core.replica_manager.leader_partition(topic.name, p.partition_index)
            if isinstance(partition, ErrorCode):
                partitions.append((p.partition_index, -1, partition))
                continue
            before = partition.log.log_start_offset
            error, low_watermark = partition.log.delete_records(p.offset)
            changed |= low_watermark != before
            partitions.append((p.partition_index, low_watermark, error))
        answers.append((topic.name, partitions))
    if changed:
        try:
            await core.checkpoint()
        except OSError:
            answers = [(name, [(i, -1, ErrorCode.kafka_storage_error if e is ErrorCode.none else e)
                               for i, _, e in partitions]) for name, partitions in answers]
    return ctx.response(throttle_time=timedelta(0), topics=tuple(
        ctx.entity("DeleteRecordsTopicResult", name=name, partitions=tuple(
            ctx.entity("DeleteRecordsPartitionResult", partition_index=i, low_watermark=low, error_code=e)
            for i, low, e in partitions))
        for name, partitions in answers))
