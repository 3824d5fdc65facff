"""DeleteTopics (API key 20), versions 1-6.

Deletes topics by name (v1-5) or by name or id (v6+); their partition directories are renamed
`-delete` and removed. Errors per topic: UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID,
TOPIC_DELETION_DISABLED (`delete.topic.enable=false`), INVALID_REQUEST, and a refusal for
internal topics.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata.controller import DeletableTopic


async def handle(request, ctx):
    if ctx.api_version >= 6:
        wanted = [DeletableTopic(name=t.name, topic_id=t.topic_id if t.name is None else None) for t in request.topics]
    else:
        wanted = [DeletableTopic(name=name) for name in request.topic_names]
    results = await ctx.broker.delete_topics(wanted)
    return ctx.response(
        throttle_time=timedelta(0),
        responses=tuple(
            ctx.entity("DeletableTopicResult", name=r.name, topic_id=r.topic_id, error_code=r.error,
                       error_message=r.error_message)
            for r in results
        ),
    )
