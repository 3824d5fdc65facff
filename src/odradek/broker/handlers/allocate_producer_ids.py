"""AllocateProducerIds (API key 67), version 0: a broker asks the controller for a block of
producer ids (cluster mode; Kafka's broker-to-controller API).

The controller records the block in the metadata log (ProducerIdsRecord), so no id is handed
out twice, across controller changes included.
Errors: NOT_CONTROLLER (this broker is not the controller, or a single node), UNKNOWN_SERVER_ERROR.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    core = ctx.broker
    from odradek.broker.core import PRODUCER_ID_BLOCK_SIZE

    if core.cluster is None or core.cluster.controller is None:
        return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.not_controller,
                            producer_id_start=-1, producer_id_len=0)
    from odradek.broker.cluster import NotControllerError

    try:
        start = await core.allocate_producer_id_block(request.broker_id)
    except NotControllerError:
        return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.not_controller,
                            producer_id_start=-1, producer_id_len=0)
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode.none,
                        producer_id_start=start, producer_id_len=PRODUCER_ID_BLOCK_SIZE)
