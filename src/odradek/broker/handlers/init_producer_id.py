"""InitProducerId (API key 22), versions 0-5.

For an idempotent producer (no transactional id) allocates a new producer id with epoch 0, as
Kafka does, from blocks reserved durably in the metadata log so that no id is handed out twice,
across restarts included. Transactional producers are not served yet (see SKIPPED.md).
Errors: TRANSACTIONAL_ID_AUTHORIZATION_FAILED (transactions), KAFKA_STORAGE_ERROR (allocation failed).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    if request.transactional_id is not None:
        return ctx.response(throttle_time=timedelta(0),
                            error_code=ErrorCode.transactional_id_authorization_failed,
                            producer_id=-1, producer_epoch=-1)
    try:
        producer_id = await ctx.broker.allocate_producer_id()
    except OSError:
        return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.kafka_storage_error,
                            producer_id=-1, producer_epoch=-1)
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.none,
                        producer_id=producer_id, producer_epoch=0)
