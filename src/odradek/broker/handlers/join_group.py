"""JoinGroup (API key 11), versions 0-9.

A member joins a classic group (or rejoins for a rebalance); the answer is parked until the
join phase ends (every known member rejoined, or the rebalance timeout / initial delay passed).
v4+ require a known member id (KIP-394: a new member first gets MEMBER_ID_REQUIRED with its id);
v5+ carry group.instance.id (static membership, KIP-345); v9+ may tell a static leader to skip the
assignment (KIP-814). v0 has no rebalance timeout: the session timeout serves, as in Kafka.
Errors: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, INVALID_SESSION_TIMEOUT,
UNKNOWN_MEMBER_ID, MEMBER_ID_REQUIRED, INCONSISTENT_GROUP_PROTOCOL, GROUP_MAX_SIZE_REACHED,
FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.coordinator.messages import JoinGroupRequest
from odradek.protocol.errors import ErrorCode

ONE_MS = timedelta(milliseconds=1)
PROTOCOL_NAME_NULLABLE_VERSION = 7


async def handle(request, ctx):
    version = ctx.api_version
    session_timeout_ms = request.session_timeout // ONE_MS
    rebalance_timeout = getattr(request, "rebalance_timeout", None)
    rebalance_timeout_ms = (
        session_timeout_ms if rebalance_timeout is None else rebalance_timeout // ONE_MS
    )
    req = JoinGroupRequest(
        group_id=request.group_id,
        member_id=request.member_id,
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=rebalance_timeout_ms,
        protocol_type=request.protocol_type,
        protocols=tuple((p.name, p.metadata) for p in request.protocols),
        group_instance_id=getattr(request, "group_instance_id", None),
        client_id=ctx.client_id or "",
        client_host=f"/{ctx.client.host}",
        require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9,
        reason=getattr(request, "reason", None),
    )
    r = await ctx.broker.groups.call("join_group", req)
    nullable = version >= PROTOCOL_NAME_NULLABLE_VERSION
    members = tuple(
        ctx.entity(
            "JoinGroupResponseMember",
            member_id=m.member_id,
            group_instance_id=m.group_instance_id,
            metadata=m.metadata,
        )
        for m in r.members
    )
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=ErrorCode(r.error_code),
        generation_id=r.generation_id,
        protocol_type=r.protocol_type,
        protocol_name=r.protocol_name if nullable else (r.protocol_name or ""),
        leader=r.leader,
        skip_assignment=r.skip_assignment,
        member_id=r.member_id,
        members=members,
    )
