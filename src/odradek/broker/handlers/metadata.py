"""Metadata (API key 3), versions 0-13.

Describes the brokers and the requested topics (all topics when the list is null, or empty for
v0), with partition leaders, replicas, ISR and leader epochs (in cluster mode every live broker,
the active controller, and offline replicas), topic ids (v10+) and, when asked,
authorized operations. A missing topic is created when the request allows it (v4+; always for
v0-3) and `auto.create.topics.enable` is on, with the broker's `num.partitions`. Topics may be
named by id (v10+).
Errors per topic: UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID, INVALID_TOPIC_EXCEPTION,
LEADER_NOT_AVAILABLE (creation failed transiently).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.broker.authz import (
    ALL_TOPIC_OPERATIONS,
    AUTHORIZED_OPERATIONS_OMITTED,
    CLUSTER_OPERATIONS,
)
from odradek.broker.core import INTERNAL_TOPICS
from odradek.metadata import controller
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    core = ctx.broker
    version = ctx.api_version
    allow_auto_create = getattr(request, "allow_auto_topic_creation", True)
    include_ops = getattr(request, "include_topic_authorized_operations", False)

    if request.topics is None or (version == 0 and not request.topics):
        wanted = [(name, None) for name in sorted(core.image.topics_by_name)]
    else:
        # Kafka answers each topic once, however often it was asked for.
        wanted = list(dict.fromkeys((getattr(t, "name", None), getattr(t, "topic_id", None))
                                    for t in request.topics))

    described = core.described_brokers(ctx.client.listener_name)
    brokers = tuple(ctx.entity("MetadataResponseBroker", node_id=node_id, host=host, port=port, rack=rack)
                    for node_id, host, port, rack in described)
    live = frozenset(node_id for node_id, *_ in described)
    topics = []
    for name, topic_id in wanted:
        if name is None and topic_id is not None:
            topic = core.image.topics_by_id.get(topic_id)
            if topic is None:
                topics.append(_error_topic(ctx, None, topic_id, ErrorCode.unknown_topic_id))
                continue
        else:
            topic = core.image.topics_by_name.get(name)
            if topic is None:
                # As Kafka: an illegal name is INVALID_TOPIC_EXCEPTION whether or not it would
                # be created.
                if controller.validate_topic_name(name) is not None:
                    error = ErrorCode.invalid_topic_exception
                else:
                    error = ErrorCode.unknown_topic_or_partition
                if error is ErrorCode.unknown_topic_or_partition and allow_auto_create \
                        and core.config.auto_create_topics_enable:
                    error = await core.auto_create_topic(name)
                    topic = core.image.topics_by_name.get(name)
                if topic is None:
                    topics.append(_error_topic(ctx, name, None, error))
                    continue
        topics.append(_topic(ctx, topic, include_ops, live))

    controller_id = core.controller_id()
    return ctx.response(
        throttle_time=timedelta(0),
        brokers=brokers,
        cluster_id=core.cluster_id,
        controller_id=-1 if controller_id is None else controller_id,
        topics=tuple(topics),
        cluster_authorized_operations=(
            CLUSTER_OPERATIONS if getattr(request, "include_cluster_authorized_operations", False)
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
        error_code=ErrorCode.none,
    )


def _topic(ctx, topic, include_ops: bool, live: frozenset[int]):
    partitions = tuple(
        ctx.entity(
            "MetadataResponsePartition",
            # As Kafka: a partition whose leader is not live has no leader to name.
            error_code=ErrorCode.none if p.leader in live else ErrorCode.leader_not_available,
            partition_index=index,
            leader_id=p.leader if p.leader in live else -1,
            leader_epoch=p.leader_epoch,
            replica_nodes=tuple(p.replicas),
            isr_nodes=tuple(p.isr),
            offline_replicas=tuple(b for b in p.replicas if b not in live),
        )
        for index, p in sorted(topic.partitions.items())
    )
    return ctx.entity(
        "MetadataResponseTopic",
        error_code=ErrorCode.none,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=topic.name in INTERNAL_TOPICS,
        partitions=partitions,
        topic_authorized_operations=ALL_TOPIC_OPERATIONS if include_ops else AUTHORIZED_OPERATIONS_OMITTED,
    )


def _error_topic(ctx, name, topic_id, error):
    from uuid import UUID

    return ctx.entity(
        "MetadataResponseTopic",
        error_code=error,
        name=name,
        topic_id=topic_id or UUID(int=0),
        is_internal=False,
        partitions=(),
        topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
    )
