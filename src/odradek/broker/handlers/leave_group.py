"""LeaveGroup (API key 13), versions 0-5.

Members leave a group, which then rebalances. v0-2 name one member by id and get its error as
the top-level error; v3+ name a batch of members (by member id and/or group.instance.id,
KIP-345) and get one answer per member; v5+ carry a reason (KIP-800).
Errors: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR; per member
UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import NONE, LeaveGroupRequest, LeaveMember
from odradek.protocol.errors import ErrorCode

BATCHED_MIN_VERSION = 3


async def handle(request, ctx):
    batched = ctx.api_version >= BATCHED_MIN_VERSION
    if batched:
        members = tuple(
            LeaveMember(m.member_id, m.group_instance_id, getattr(m, "reason", None))
            for m in request.members
        )
    else:
        members = (LeaveMember(request.member_id),)
    r = await ctx.broker.groups.call("leave_group", LeaveGroupRequest(request.group_id, members))
    error = r.error_code
    if not batched and error == NONE and r.members:
        error = r.members[0].error_code
    if not batched:
        return ctx.response(throttle_time=timedelta(0), error_code=ErrorCode(error))
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=ErrorCode(error),
        members=tuple(
            ctx.entity(
                "MemberResponse",
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                error_code=ErrorCode(m.error_code),
            )
            for m in r.members
        ),
    )
