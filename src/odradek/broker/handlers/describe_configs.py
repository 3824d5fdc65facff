"""DescribeConfigs (API key 32), versions 1-4.

Describes topic (resource type 2) and broker (resource type 4) configs: every config or the
requested keys, with value, source, read-only and sensitive flags, synonyms (v1+ when asked) in
Kafka's order, config type and documentation (v3+ when asked).
Errors per resource: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST (unknown resource type or a
broker id that is not ours), INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.config import describe_broker_configs, describe_topic_configs
from odradek.metadata.controller import validate_topic_name
from odradek.protocol.errors import ErrorCode

TOPIC = 2
BROKER = 4
BROKER_LOGGER = 8


async def handle(request, ctx):
    core = ctx.broker
    include_synonyms = getattr(request, "include_synonyms", False)
    include_documentation = getattr(request, "include_documentation", False)
    results = []
    for resource in request.resources:
        keys = resource.configuration_keys
        error, message, entries = ErrorCode.none, None, []
        if resource.resource_type == TOPIC:
            topic = core.image.topics_by_name.get(resource.resource_name)
            invalid = validate_topic_name(resource.resource_name) if topic is None else None
            if invalid is not None:
                error, message = ErrorCode.invalid_topic_exception, invalid
            elif topic is None:
                error, message = ErrorCode.unknown_topic_or_partition, f"Topic {resource.resource_name} does not exist"
            else:
                entries = describe_topic_configs(core.config, topic.configs, keys)
        elif resource.resource_type == BROKER:
            if resource.resource_name not in ("", str(core.config.node_id)):
                error, message = ErrorCode.invalid_request, f"Unexpected broker id {resource.resource_name}"
            else:
                entries = describe_broker_configs(core.config, keys)
        else:
            error, message = ErrorCode.invalid_request, f"Unsupported resource type {resource.resource_type}"
        results.append(ctx.entity(
            "DescribeConfigsResult",
            error_code=error,
            error_message=message,
            resource_type=resource.resource_type,
            resource_name=resource.resource_name,
            configs=tuple(_entry(ctx, e, include_synonyms, include_documentation) for e in entries),
        ))
    return ctx.response(throttle_time=timedelta(0), results=tuple(results))


def _entry(ctx, entry, include_synonyms: bool, include_documentation: bool):
    synonyms = tuple(
        ctx.entity("DescribeConfigsSynonym", name=s.name, value=s.value, source=s.source)
        for s in entry.synonyms
    ) if include_synonyms else ()
    return ctx.entity(
        "DescribeConfigsResourceResult",
        name=entry.name,
        value=entry.value,
        read_only=entry.read_only,
        config_source=entry.source,
        is_default=entry.source == 5,  # v0 only: DEFAULT_CONFIG
        is_sensitive=entry.is_sensitive,
        synonyms=synonyms,
        config_type=entry.config_type,
        documentation=entry.documentation if include_documentation else None,
    )
