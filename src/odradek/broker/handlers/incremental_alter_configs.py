"""IncrementalAlterConfigs (API key 44), versions 0-1.

Changes topic (resource type 2) and dynamic broker (type 4; name "" is the cluster-wide default,
else this broker's id) configs by operations: SET (0), DELETE (1), APPEND (2) and SUBTRACT (3),
the last two for list configs only. Valid changes are ConfigRecords in the metadata log, so they
survive restarts, and take effect at once (logs get their new LogConfig when the records apply).
`validate_only` decides without writing.
Errors per resource: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG (with Kafka's message),
INVALID_REQUEST (duplicate keys, null SET, unknown operation or resource type, another broker id).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.metadata import controller
from odradek.metadata.records import RESOURCE_BROKER, RESOURCE_TOPIC
from odradek.protocol.errors import ErrorCode


def broker_resource_error(core, resource_name: str) -> str | None:
    """None when a broker resource names the cluster default ("") or this broker."""
    if resource_name in ("", str(core.config.node_id)):
        return None
    return f"Unexpected broker id {resource_name}"


async def handle(request, ctx):
    core = ctx.broker
    results = []
    for resource in request.resources:
        operations = [(c.name, int(c.config_operation), c.value) for c in resource.configs]
        name, kind = resource.resource_name, int(resource.resource_type)
        if kind == RESOURCE_TOPIC:
            error, message = await core.decide_and_apply(lambda image, name=name, ops=operations: _split(
                controller.incremental_alter_topic_configs(image, name, ops, request.validate_only)))
        elif kind == RESOURCE_BROKER and (message := broker_resource_error(core, name)) is None:
            error, message = await core.decide_and_apply(lambda image, name=name, ops=operations: _split(
                controller.incremental_alter_broker_configs(image, name, ops, request.validate_only)))
        elif kind == RESOURCE_BROKER:
            error = ErrorCode.invalid_request
        else:
            error, message = ErrorCode.invalid_request, f"Unsupported resource type {kind}"
        results.append(ctx.entity("AlterConfigsResourceResponse", error_code=error, error_message=message,
                                  resource_type=resource.resource_type, resource_name=name))
    return ctx.response(throttle_time=timedelta(0), responses=tuple(results))


def _split(decision):
    records, error, message = decision
    return records, (error, message)
