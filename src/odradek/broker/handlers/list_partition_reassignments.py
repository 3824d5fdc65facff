"""ListPartitionReassignments (API key 46), version 0.

The partitions whose reassignment is in progress, with their (merged) replicas and the replicas
being added and removed; `topics` null lists every partition, else the named ones (partitions
that do not exist or are not moving are left out, as Kafka does).
Single node: nothing ever moves, so the answer is empty.
Cluster mode: answered from the controller's image; another broker answers from its own image,
which follows the controller's (Kafka forwards nothing here either: the request goes to the
controller the admin client finds, and any broker's answer is at most one image behind).
Errors: none per partition; top level NOT_CONTROLLER only when the controller stops meanwhile.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata.reassignment import list_reassignments
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    wanted = None
    if request.topics is not None:
        wanted = [(t.name, int(i)) for t in request.topics for i in t.partition_indexes]
    ongoing = list_reassignments(ctx.broker.image, wanted)
    by_topic: dict[str, list] = {}
    for r in ongoing:
        by_topic.setdefault(r.topic, []).append(ctx.entity(
            "OngoingPartitionReassignment", partition_index=r.partition, replicas=r.replicas,
            adding_replicas=r.adding_replicas, removing_replicas=r.removing_replicas))
    return ctx.response(
        throttle_time=timedelta(0), error_code=ErrorCode.none, error_message=None,
        topics=tuple(ctx.entity("OngoingTopicReassignment", name=name, partitions=tuple(partitions))
                     for name, partitions in by_topic.items()))
