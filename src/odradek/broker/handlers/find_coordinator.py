"""FindCoordinator (API key 10), versions 0-6.

Names the broker that coordinates a group: on a single node, this broker (its advertised host and
port on the request's listener). v0-3 ask for one key; v4+ carry a batch of coordinator keys and
get one answer per key (KIP-699). The first lookup of a group creates the internal topic
`__consumer_offsets` (compacted, `offsets.topic.num.partitions` partitions), as Kafka does.
Key type 1 (transaction) is answered COORDINATOR_NOT_AVAILABLE until transactions land (#8).
Errors: INVALID_REQUEST (unknown key type, empty group id), COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from odradek.broker.group_service import OFFSETS_TOPIC
from odradek.protocol.errors import ErrorCode

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1
BATCHED_MIN_VERSION = 4


async def handle(request, ctx):
    key_type = getattr(request, "key_type", GROUP_KEY_TYPE)
    if ctx.api_version >= BATCHED_MIN_VERSION:
        coordinators = []
        for key in request.coordinator_keys:
            error, message, (node_id, host, port) = await _find(ctx, key_type, key)
            coordinators.append(
                ctx.entity(
                    "Coordinator",
                    key=key,
                    node_id=node_id,
                    host=host,
                    port=port,
                    error_code=error,
                    error_message=message,
                )
            )
        return ctx.response(throttle_time=timedelta(0), coordinators=tuple(coordinators))
    error, message, (node_id, host, port) = await _find(ctx, key_type, request.key)
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=error,
        error_message=message,
        node_id=node_id,
        host=host,
        port=port,
    )


async def _find(ctx, key_type: int, key: str):
    core = ctx.broker
    no_node = (-1, "", -1)
    if key_type == TRANSACTION_KEY_TYPE:
        return ErrorCode.coordinator_not_available, "transactions are not supported yet", no_node
    if key_type != GROUP_KEY_TYPE:
        return ErrorCode.invalid_request, f"unknown coordinator key type {key_type}", no_node
    if not key:
        return ErrorCode.invalid_request, "empty group id", no_node
    # Not hosted yet (absent, or a creation in flight has published the image but not yet
    # hosted the partitions): create it, which waits for a creation in flight to finish.
    if core.replica_manager.get(OFFSETS_TOPIC, 0) is None:
        # Shielded: a client that hangs up mid-creation (librdkafka drops its bootstrap
        # connection early) must not cancel the creation between the metadata append and
        # hosting the partitions.
        error = await asyncio.shield(core.auto_create_topic(OFFSETS_TOPIC))
        if error is not ErrorCode.none:
            return (
                ErrorCode.coordinator_not_available,
                f"cannot create {OFFSETS_TOPIC}: {error.name}",
                no_node,
            )
    host, port = core.advertised_endpoint(ctx.client.listener_name)
    return ErrorCode.none, None, (core.config.node_id, host, port)
