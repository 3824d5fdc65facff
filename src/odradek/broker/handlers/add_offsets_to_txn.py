"""AddOffsetsToTxn (API key 25), versions 0-4.

Adds the group's `__consumer_offsets` partition to the producer's transaction, so that the
offsets it then commits with TxnOffsetCommit are committed or aborted with the transaction.
Errors: INVALID_REQUEST, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v2),
CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.txn_messages import AddOffsetsToTxnRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    offsets_partition = ctx.broker.groups.coordinator.partition_for(request.group_id)
    answer = await ctx.broker.txns.call("add_offsets_to_txn", AddOffsetsToTxnRequest(
        transactional_id=request.transactional_id,
        producer_id=request.producer_id,
        producer_epoch=request.producer_epoch,
        offsets_partition=offsets_partition,
        api_version=ctx.api_version,
    ))
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(answer.error_code))
