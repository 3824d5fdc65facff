"""DescribeTransactions (API key 65), version 0 (KIP-664).

Describes transactional ids this broker coordinates: state (Kafka's names: Empty, Ongoing,
PrepareCommit, ...), timeout, start time (-1 when no transaction is open), producer id and epoch,
and the partitions of the open transaction by topic. Answers from the transaction coordinator's
memory (`ctx.broker.txns.coordinator`); nothing is written.

Kafka authorizes DESCRIBE on each transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); we
have no ACLs yet, so every id is described.
Errors per id: NOT_COORDINATOR (another broker's `__transaction_state` partition),
COORDINATOR_LOAD_IN_PROGRESS, TRANSACTIONAL_ID_NOT_FOUND (no such id).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from odradek.protocol.errors import ErrorCode


def _datetime_ms(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


async def handle(request, ctx):
    coordinator = ctx.broker.txns.coordinator
    described = coordinator.describe_transactions(request.transactional_ids)
    return ctx.response(
        throttle_time=timedelta(0),
        transaction_states=tuple(
            ctx.entity(
                "TransactionState",
                error_code=ErrorCode(d.error_code),
                transactional_id=d.transactional_id,
                transaction_state=d.transaction_state,
                transaction_timeout=timedelta(milliseconds=d.transaction_timeout_ms),
                transaction_start_time=_datetime_ms(d.transaction_start_time_ms),
                producer_id=d.producer_id,
                producer_epoch=d.producer_epoch,
                topics=tuple(
                    ctx.entity("TopicData", topic=topic, partitions=partitions)
                    for topic, partitions in d.topics
                ),
            )
            for d in described
        ),
    )
