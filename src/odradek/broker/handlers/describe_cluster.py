"""DescribeCluster (API key 60), versions 0-2.

Describes the cluster: its id, the controller and the brokers for the requested endpoint type
(v1: 1 = brokers; 2 = controllers, which a combined single node also is).
Errors: UNSUPPORTED_ENDPOINT_TYPE for an unknown endpoint type.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.broker.authz import AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS
from odradek.protocol.errors import ErrorCode

BROKERS_ENDPOINT = 1
CONTROLLERS_ENDPOINT = 2


async def handle(request, ctx):
    core = ctx.broker
    endpoint_type = getattr(request, "endpoint_type", BROKERS_ENDPOINT)
    error, message, brokers = ErrorCode.none, None, ()
    if endpoint_type not in (BROKERS_ENDPOINT, CONTROLLERS_ENDPOINT):
        error, message = ErrorCode.unsupported_endpoint_type, f"unknown endpoint type {endpoint_type}"
    else:
        brokers = tuple(ctx.entity("DescribeClusterBroker", broker_id=node_id, host=host, port=port,
                                   rack=rack, is_fenced=False)
                        for node_id, host, port, rack in core.described_brokers(ctx.client.listener_name))
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=error,
        error_message=message,
        endpoint_type=endpoint_type,
        cluster_id=core.cluster_id,
        controller_id=-1 if core.controller_id() is None else core.controller_id(),
        brokers=brokers,
        cluster_authorized_operations=(
            CLUSTER_OPERATIONS if request.include_cluster_authorized_operations
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
    )
