"""FindCoordinator (API key 10), versions 0-6.

Names the broker that coordinates a group (key type 0) or a transactional id (key type 1): in
cluster mode the leader of the key's partition of the internal topic; on a single node, this broker (its advertised host and port on the request's listener). v0-3 ask for
one key; v4+ carry a batch of coordinator keys and get one answer per key (KIP-699). The first
lookup creates the internal topic, as Kafka does: `__consumer_offsets` (compacted,
`offsets.topic.num.partitions` partitions) or `__transaction_state` (compacted,
`transaction.state.log.num.partitions` partitions).
Errors: INVALID_REQUEST (unknown key type, empty key), COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from odradek.broker.core import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from odradek.coordinator.records import partition_for_group
from odradek.coordinator.txn_records import partition_for_transactional_id
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
    topic = {GROUP_KEY_TYPE: OFFSETS_TOPIC, TRANSACTION_KEY_TYPE: TRANSACTION_STATE_TOPIC}.get(key_type)
    if topic is None:
        return ErrorCode.invalid_request, f"unknown coordinator key type {key_type}", no_node
    if not key:
        kind = "group id" if key_type == GROUP_KEY_TYPE else "transactional id"
        return ErrorCode.invalid_request, f"empty {kind}", no_node
    # Not hosted yet (absent, or a creation in flight has published the image but not yet
    # hosted the partitions): create it, which waits for a creation in flight to finish.
    image_topic = core.image.topics_by_name.get(topic)
    if image_topic is None or (core.cluster is None and core.replica_manager.get(topic, 0) is None):
        # Shielded: a client that hangs up mid-creation (librdkafka drops its bootstrap
        # connection early) must not cancel the creation between the metadata append and
        # hosting the partitions.
        error = await asyncio.shield(core.auto_create_topic(topic))
        if error is not ErrorCode.none:
            return (
                ErrorCode.coordinator_not_available,
                f"cannot create {topic}: {error.name}",
                no_node,
            )
        image_topic = core.image.topics_by_name.get(topic)
    if core.cluster is None:
        host, port = core.advertised_endpoint(ctx.client.listener_name)
        return ErrorCode.none, None, (core.config.node_id, host, port)
    # Cluster mode: the coordinator is the leader of the key's partition.
    if image_topic is None:
        return ErrorCode.coordinator_not_available, f"{topic} is not in the metadata yet", no_node
    count = len(image_topic.partitions)
    index = (partition_for_group(key, count) if key_type == GROUP_KEY_TYPE
             else partition_for_transactional_id(key, count))
    leader = image_topic.partitions[index].leader
    endpoint = core.broker_endpoint(leader, ctx.client.listener_name) if leader >= 0 else None
    if endpoint is None:
        return ErrorCode.coordinator_not_available, f"{topic}-{index} has no live leader", no_node
    return ErrorCode.none, None, (leader, endpoint[0], endpoint[1])
