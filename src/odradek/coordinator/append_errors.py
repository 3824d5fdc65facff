"""How a coordinator maps a failed append to its internal topic onto the error its client sees.

Kafka's coordinators share the first two rules (the partition is unavailable: retry elsewhere
later; this broker no longer leads it: find the coordinator again) and differ in how they
report a write that was too large.
"""

from __future__ import annotations

from odradek.protocol.errors import ErrorCode

_UNAVAILABLE = frozenset(e.value for e in (
    ErrorCode.unknown_topic_or_partition,
    ErrorCode.not_enough_replicas,
    ErrorCode.not_enough_replicas_after_append,
    ErrorCode.request_timed_out,
))
_NOT_LEADER = frozenset(e.value for e in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error))


def coordinator_append_error(error: int, too_large: frozenset[int], too_large_as: int) -> int:
    """The client-facing error for a failed append: COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
    `too_large_as` for the codes in `too_large`, else the error itself."""
    if error in _UNAVAILABLE:
        return ErrorCode.coordinator_not_available.value
    if error in _NOT_LEADER:
        return ErrorCode.not_coordinator.value
    if error in too_large:
        return too_large_as
    return error
