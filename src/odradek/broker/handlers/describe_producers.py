"""DescribeProducers (API key 61), version 0 (KIP-664).

For each requested partition this broker leads, the active producers of its log, from the
partition's producer state (`storage/producer_state.py`): producer id, epoch, last sequence (-1:
none), timestamp of its last batch (-1: none retained), coordinator epoch of its last
end-transaction marker (-1: none) and the first offset of its open transaction (-1: none). This
is how `odradek transactions abort` (kafka-transactions.sh) finds a hanging transaction.

Kafka authorizes READ on each topic (TOPIC_AUTHORIZATION_FAILED); we have no ACLs yet, so every
topic is described.
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION (no such topic or partition),
NOT_LEADER_OR_FOLLOWER (not led here).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import NO_SEQUENCE

NO_TIMESTAMP = -1


def _producer_states(ctx, producer_state):
    states = []
    for pid in sorted(producer_state.producers):
        entry = producer_state.producers[pid]
        last = entry.batches[-1] if entry.batches else None
        states.append(
            ctx.entity(
                "ProducerState",
                producer_id=entry.producer_id,
                producer_epoch=entry.producer_epoch,
                last_sequence=last.last_seq if last is not None else NO_SEQUENCE,
                last_timestamp=last.timestamp_ms if last is not None else NO_TIMESTAMP,
                coordinator_epoch=entry.coordinator_epoch,
                current_txn_start_offset=entry.current_txn_first_offset,
            )
        )
    return tuple(states)


async def handle(request, ctx):
    replica_manager = ctx.broker.replica_manager
    topics = []
    for topic in request.topics:
        partitions = []
        for index in topic.partition_indexes:
            found = replica_manager.leader_partition(topic.name, int(index))
            if isinstance(found, ErrorCode):
                error, producers = found, ()
            else:
                error, producers = ErrorCode.none, _producer_states(ctx, found.log.producer_state)
            partitions.append(
                ctx.entity(
                    "PartitionResponse",
                    partition_index=index,
                    error_code=error,
                    error_message=None,
                    active_producers=producers,
                )
            )
        topics.append(ctx.entity("TopicResponse", name=topic.name, partitions=tuple(partitions)))
    return ctx.response(throttle_time=timedelta(0), topics=tuple(topics))
