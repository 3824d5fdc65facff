"""AlterConfigs (API key 33), versions 0-2.

The legacy, non-incremental form: a topic's (resource type 2) or the dynamic broker configs'
(type 4; "" = cluster default, else this broker's id) overrides become exactly the ones given,
as in Kafka (keys not named are removed). Validated, written as ConfigRecords to the metadata
log (durable, applied at once); `validate_only` decides without writing.
Errors per resource: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG (with Kafka's message),
INVALID_REQUEST (null values, unknown resource type, another broker id).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.broker.handlers.incremental_alter_configs import broker_resource_error
from odradek.metadata import controller
from odradek.metadata.records import RESOURCE_BROKER, RESOURCE_TOPIC
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    core = ctx.broker
    results = []
    for resource in request.resources:
        configs = {c.name: c.value for c in resource.configs}
        name, kind = resource.resource_name, int(resource.resource_type)
        message = broker_resource_error(core, name) if kind == RESOURCE_BROKER else None
        if kind not in (RESOURCE_TOPIC, RESOURCE_BROKER):
            error, message = ErrorCode.invalid_request, f"Unsupported resource type {kind}"
        elif message is not None:
            error = ErrorCode.invalid_request
        else:
            def decide(image, kind=kind, name=name, configs=configs):
                records, error, message = controller.alter_configs(image, kind, name, configs, request.validate_only)
                return records, (error, message)
            error, message = await core.decide_and_apply(decide)
        results.append(ctx.entity("AlterConfigsResourceResponse", error_code=error, error_message=message,
                                  resource_type=resource.resource_type, resource_name=name))
    return ctx.response(throttle_time=timedelta(0), responses=tuple(results))
