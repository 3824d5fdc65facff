"""What OffsetCommit and TxnOffsetCommit share: splitting the request's partitions into those
of known topics (for the group coordinator) and those answered at once, and building the
per-partition answer in request order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from odradek.protocol.errors import ErrorCode


def split_partitions(
    request_topics: Any, topics_image: Any, make_partition: Callable[[Any], Any],
    refuse: int | None = None,
) -> tuple[dict[tuple[str, int], int], dict[str, tuple[Any, ...]]]:
    """(errors answered now, topic -> coordinator partitions). Every partition gets `refuse`
    when it is set, a partition of an unknown topic UNKNOWN_TOPIC_OR_PARTITION."""
    errors: dict[tuple[str, int], int] = {}
    known: dict[str, list[Any]] = {}
    for topic in request_topics:
        for p in topic.partitions:
            if refuse is not None:
                errors[(topic.name, p.partition_index)] = refuse
            elif topic.name not in topics_image:
                errors[(topic.name, p.partition_index)] = ErrorCode.unknown_topic_or_partition.value
            else:
                known.setdefault(topic.name, []).append(make_partition(p))
    return errors, {name: tuple(ps) for name, ps in known.items()}


def merge_answer(errors: dict[tuple[str, int], int], answer_topics: dict) -> None:
    """Add the coordinator's (topic -> ((partition, error), ...)) answer to `errors`."""
    for name, partitions in answer_topics.items():
        for index, error in partitions:
            errors[(name, index)] = error


def topics_response(ctx: Any, request_topics: Any, errors: dict[tuple[str, int], int],
                    topic_entity: str, partition_entity: str) -> tuple[Any, ...]:
    """The response's topics, in request order, with each partition's error code."""
    return tuple(
        ctx.entity(
            topic_entity,
            name=topic.name,
            partitions=tuple(
                ctx.entity(partition_entity, partition_index=p.partition_index,
                           error_code=ErrorCode(errors[(topic.name, p.partition_index)]))
                for p in topic.partitions
            ),
        )
        for topic in request_topics
    )
