"""DeleteGroups (API key 42), versions 0-2.

Deletes empty groups and their committed offsets (tombstones on `__consumer_offsets`); each
group is answered once its tombstones are written.
Errors per group: INVALID_GROUP_ID, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR,
GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

from datetime import timedelta

from odradek.protocol.errors import ErrorCode


async def handle(request, ctx):
    names = list(dict.fromkeys(request.groups_names))  # a group named twice is answered once
    errors = {name: ErrorCode.invalid_group_id.value for name in names if not name}
    valid = [name for name in names if name]
    if valid:
        r = await ctx.broker.groups.call("delete_groups", valid)
        errors.update(dict(r.results))
    return ctx.response(
        throttle_time=timedelta(0),
        results=tuple(
            ctx.entity("DeletableGroupResult", group_id=name, error_code=ErrorCode(errors[name]))
            for name in names
        ),
    )
