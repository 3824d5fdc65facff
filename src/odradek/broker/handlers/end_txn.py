"""EndTxn (API key 26), versions 0-5.

Commits or aborts the producer's transaction: answered once PrepareCommit / PrepareAbort is
written to `__transaction_state`; the coordinator then writes the markers to every partition of
the transaction and records CompleteCommit / CompleteAbort. v5 (transaction version 2, KIP-890)
bumps the producer epoch at every end and answers the new producer id and epoch.
Errors: INVALID_REQUEST, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v2),
CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.txn_messages import EndTxnRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    answer = await ctx.broker.txns.call("end_txn", EndTxnRequest(
        transactional_id=request.transactional_id,
        producer_id=request.producer_id,
        producer_epoch=request.producer_epoch,
        commit=request.committed,
        api_version=ctx.api_version,
    ))
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(answer.error_code),
                        producer_id=answer.producer_id, producer_epoch=answer.producer_epoch)
