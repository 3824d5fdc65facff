"""Heartbeat (API key 12), versions 0-4.

Keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin. v3+ carry
group.instance.id.
Errors: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import HeartbeatRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    req = HeartbeatRequest(
        group_id=request.group_id,
        generation_id=request.generation_id,
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
    )
    r = await ctx.broker.groups.call("heartbeat", req)
    return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(r.error_code))
