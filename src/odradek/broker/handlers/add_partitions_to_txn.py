"""AddPartitionsToTxn (API key 24), versions 0-5.

Adds partitions to the producer's open transaction (starting it), before the producer sends
transactional data to them. v0-3 carry one transaction; v4+ a batch of transactions, each
possibly `verify_only` (KIP-890: a partition leader asking whether a partition is already in the
transaction; nothing is written). As in Kafka, a request naming a partition that does not exist
is refused as a whole: those partitions get UNKNOWN_TOPIC_OR_PARTITION, the others
OPERATION_NOT_ATTEMPTED.
Errors per partition: INVALID_REQUEST, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v2),
CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE, TRANSACTION_ABORTABLE (verify-only: not added),
UNKNOWN_TOPIC_OR_PARTITION, OPERATION_NOT_ATTEMPTED.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.txn_messages import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnTransaction,
)
from odradek.protocol.errors import ErrorCode

BATCHED_MIN_VERSION = 4


async def handle(request, ctx):
    if ctx.api_version >= BATCHED_MIN_VERSION:
        entries = [
            (t.transactional_id, t.producer_id, t.producer_epoch, t.verify_only, t.topics)
            for t in request.transactions
        ]
    else:
        entries = [(request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                    request.v3_and_below_producer_epoch, False, request.v3_and_below_topics)]
    results: list[dict[tuple[str, int], int]] = [{} for _ in entries]
    to_coordinator: list[tuple[int, AddPartitionsToTxnTransaction]] = []
    topics_image = ctx.broker.image.topics_by_name
    for i, (tid, producer_id, producer_epoch, verify_only, topics) in enumerate(entries):
        partitions = [(t.name, p) for t in topics for p in t.partitions]
        unknown = {(name, p) for name, p in partitions
                   if name not in topics_image or p not in topics_image[name].partitions}
        if unknown:
            results[i] = {tp: (ErrorCode.unknown_topic_or_partition if tp in unknown
                               else ErrorCode.operation_not_attempted).value for tp in partitions}
            continue
        to_coordinator.append((i, AddPartitionsToTxnTransaction(
            tid, producer_id, producer_epoch, tuple(dict.fromkeys(partitions)), verify_only)))
    if to_coordinator:
        answer = await ctx.broker.txns.call("add_partitions_to_txn", AddPartitionsToTxnRequest(
            tuple(t for _, t in to_coordinator), api_version=ctx.api_version))
        for (i, _), result in zip(to_coordinator, answer.results):
            results[i] = dict(result.partition_errors)

    def topic_results(topics, errors):
        return tuple(
            ctx.entity(
                "AddPartitionsToTxnTopicResult",
                name=t.name,
                results_by_partition=tuple(
                    ctx.entity("AddPartitionsToTxnPartitionResult", partition_index=p,
                               partition_error_code=ErrorCode(errors[(t.name, p)]))
                    for p in t.partitions
                ),
            )
            for t in topics
        )

    if ctx.api_version >= BATCHED_MIN_VERSION:
        return ctx.response(
            throttle_time=timedelta(0),
            error_code=ErrorCode.none,
            results_by_transaction=tuple(
                ctx.entity("AddPartitionsToTxnResult", transactional_id=entry[0],
                           topic_results=topic_results(entry[4], results[i]))
                for i, entry in enumerate(entries)
            ),
        )
    return ctx.response(throttle_time=timedelta(0),
                        results_by_topic_v3_and_below=topic_results(entries[0][4], results[0]))
