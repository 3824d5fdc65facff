"""CreateTopics (API key 19), versions 2-7.

Creates topics with a partition count, replication factor (or explicit replica assignments) and
config overrides, or with `validate_only` checks what would happen. v5+ answers with the
topic's partitions, replication factor and configs; v7 with its topic id.
Errors per topic: TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS,
INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT, INVALID_CONFIG, INVALID_REQUEST
(a topic named twice), POLICY_VIOLATION is never returned (no create-topic policy).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


INTER_BROKER_CLIENT_PREFIX = "odradek-broker"


async def handle(request, ctx):
    # In cluster mode a broker auto-creating an internal topic asks the controller through
    # CreateTopics (Kafka's forwarding); only brokers may create internal topics.
    from_broker = ctx.broker.cluster is not None and (ctx.client_id or "").startswith(
        INTER_BROKER_CLIENT_PREFIX)
    results = await ctx.broker.create_topics(list(request.topics), request.validate_only,
                                             allow_internal=from_broker)
    with_configs = ctx.api_version >= 5
    topics = []
    for result in results:
        ok = result.error is ErrorCode.none
        topics.append(ctx.entity(
            "CreatableTopicResult",
            name=result.name,
            topic_id=result.topic_id,
            error_code=result.error,
            error_message=result.error_message,
            topic_config_error_code=ErrorCode.none,
            num_partitions=result.num_partitions if ok else -1,
            replication_factor=result.replication_factor if ok else -1,
            configs=tuple(
                ctx.entity("CreatableTopicConfigs", name=entry.name, value=entry.value,
                           read_only=entry.read_only, config_source=entry.source,
                           is_sensitive=entry.is_sensitive)
                for entry in result.configs
            ) if ok and with_configs else None,
        ))
    return ctx.response(throttle_time=timedelta(0), topics=tuple(topics))
