"""DescribeGroups (API key 15), versions 0-6.

Describes groups: state, protocol type and name, and members with their client id, host,
metadata and assignment (v4+ with group.instance.id; v3+ authorized operations when asked).
An unknown group is reported as state "Dead" with error 0 in v0-5 and GROUP_ID_NOT_FOUND in v6
(KIP-1043), as Kafka does.
Errors per group: COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, GROUP_ID_NOT_FOUND (v6).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.broker.authz import AUTHORIZED_OPERATIONS_OMITTED, GROUP_OPERATIONS
from odradek.protocol.errors import ErrorCode

GROUP_ID_NOT_FOUND_MIN_VERSION = 6


async def handle(request, ctx):
    described = ctx.broker.groups.coordinator.describe_groups(request.groups)
    include_ops = getattr(request, "include_authorized_operations", False)
    groups = []
    for g in described:
        error = ErrorCode(g.error_code)
        if (
            error is ErrorCode.group_id_not_found
            and ctx.api_version < GROUP_ID_NOT_FOUND_MIN_VERSION
        ):
            error = ErrorCode.none
        groups.append(
            ctx.entity(
                "DescribedGroup",
                error_code=error,
                error_message=None,
                group_id=g.group_id,
                group_state=g.group_state,
                protocol_type=g.protocol_type,
                protocol_data=g.protocol_data,
                members=tuple(
                    ctx.entity(
                        "DescribedGroupMember",
                        member_id=m.member_id,
                        group_instance_id=m.group_instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.member_metadata,
                        member_assignment=m.member_assignment,
                    )
                    for m in g.members
                ),
                authorized_operations=GROUP_OPERATIONS
                if include_ops
                else AUTHORIZED_OPERATIONS_OMITTED,
            )
        )
    return ctx.response(throttle_time=timedelta(0), groups=tuple(groups))
