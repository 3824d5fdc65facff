"""InitProducerId (API key 22), versions 0-5.

For an idempotent producer (no transactional id) allocates a new producer id with epoch 0, as
Kafka does, from blocks reserved durably in the metadata log so that no id is handed out twice,
across restarts included. With a transactional id the transaction coordinator answers: a new
producer id (first use of the id) or the same id with its epoch bumped, fencing an older instance
of the producer; an open transaction of the old instance is aborted first (the client retries on
CONCURRENT_TRANSACTIONS). v3+ carry the producer's current id and epoch (KIP-360) so that an
idempotent or transactional producer can bump its epoch after an error.
Errors: INVALID_REQUEST (empty transactional id), INVALID_TRANSACTION_TIMEOUT,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS, PRODUCER_FENCED
(INVALID_PRODUCER_EPOCH before v4), KAFKA_STORAGE_ERROR (allocation failed).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.txn_messages import InitProducerIdRequest
from odradek.protocol.errors import ErrorCode

ONE_MS = timedelta(milliseconds=1)


async def handle(request, ctx):
    try:
        if request.transactional_id is None:
            producer_id = await ctx.broker.allocate_producer_id()
            return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.none,
                                producer_id=producer_id, producer_epoch=0)
        answer = await ctx.broker.txns.call("init_producer_id", InitProducerIdRequest(
            transactional_id=request.transactional_id,
            transaction_timeout_ms=request.transaction_timeout // ONE_MS,
            producer_id=getattr(request, "producer_id", -1),
            producer_epoch=getattr(request, "producer_epoch", -1),
            api_version=ctx.api_version,
        ))
    except OSError:
        return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.kafka_storage_error,
                            producer_id=-1, producer_epoch=-1)
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(answer.error_code),
                        producer_id=answer.producer_id, producer_epoch=answer.producer_epoch)
