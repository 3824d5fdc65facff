"""CreatePartitions (API key 37), versions 0-3.

Raises a topic's partition count (never lowers it), optionally with replica assignments for the
new partitions, or with `validate_only` checks what would happen.
Errors per topic: INVALID_PARTITIONS, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT,
INVALID_REQUEST (a topic named twice).
"""

from __future__ import annotations

from datetime import timedelta


async def handle(request, ctx):
    results = await ctx.broker.create_partitions(list(request.topics), request.validate_only)
    return ctx.response(
        throttle_time=timedelta(0),
        results=tuple(
            ctx.entity("CreatePartitionsTopicResult", name=r.name, error_code=r.error, error_message=r.error_message)
            for r in results
        ),
    )
