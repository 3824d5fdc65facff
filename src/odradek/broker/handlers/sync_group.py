"""SyncGroup (API key 14), versions 0-5.

After a join phase, the leader sends the assignment of every member; each member gets its own.
The leader's round is answered once the assignment is written to `__consumer_offsets`.
v3+ carry group.instance.id; v5+ the protocol type and name, checked against the group's.
Errors: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL,
COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import SyncGroupRequest
from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    req = SyncGroupRequest(
        group_id=request.group_id,
        generation_id=request.generation_id,
        member_id=request.member_id,
        assignments=tuple((a.member_id, a.assignment) for a in request.assignments),
        group_instance_id=getattr(request, "group_instance_id", None),
        protocol_type=getattr(request, "protocol_type", None),
        protocol_name=getattr(request, "protocol_name", None),
    )
    r = await ctx.broker.groups.call("sync_group", req)
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=ErrorCode(r.error_code),
        protocol_type=r.protocol_type,
        protocol_name=r.protocol_name,
        assignment=r.assignment,
    )
