"""ListGroups (API key 16), versions 0-5.

Lists the groups this broker coordinates, with protocol type and (v4+) state; v4+ may filter by
state (KIP-518), v5+ by group type (KIP-848: only "classic" groups exist here).
Errors: COORDINATOR_LOAD_IN_PROGRESS (some `__consumer_offsets` partition is still loading; the
groups already loaded are listed).
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode

CLASSIC = "classic"


async def handle(request, ctx):
    coordinator = ctx.broker.groups.coordinator
    types_filter = {t.lower() for t in getattr(request, "types_filter", ())}
    groups = []
    if not types_filter or CLASSIC in types_filter:
        groups = coordinator.list_groups(getattr(request, "states_filter", ()))
    error = ErrorCode.coordinator_load_in_progress if coordinator.loading else ErrorCode.none
    return ctx.response(
        throttle_time=timedelta(0),
        error_code=error,
        groups=tuple(
            ctx.entity(
                "ListedGroup",
                group_id=g.group_id,
                protocol_type=g.protocol_type,
                group_state=g.group_state,
                group_type=g.group_type,
            )
            for g in groups
        ),
    )
