"""Version-independent requests and responses of the group coordinator core.

The handler layer converts kio's per-version request objects into these and these into kio's
responses. Field mapping (kio name -> ours) where it is not the same name:
    JoinGroupRequest.session_timeout (timedelta)    -> session_timeout_ms
    JoinGroupRequest.rebalance_timeout              -> rebalance_timeout_ms (v0: -1, we use the
                                                       session timeout, as Kafka does)
    JoinGroupRequest.protocols[(name, metadata)]    -> protocols tuple of (name, metadata)
    request version >= 4                            -> require_known_member_id (KIP-394)
    LeaveGroupRequest v0-2 member_id                -> members=(LeaveMember(member_id, None),)
    OffsetCommitRequest.generation_id_or_member_epoch -> generation_id
    OffsetCommitRequest.retention_time_ms (v2-4)    -> retention_time_ms (-1: broker default)
    OffsetFetch v0-7 single group / v8+ groups      -> OffsetFetchGroup list (topics None = all)
    OffsetFetch v7+ require_stable                  -> `offset_fetch(..., require_stable=True)`
    TxnOffsetCommitRequest v0-5                     -> TxnOffsetCommitRequest; v0-2 have no
                                                       generation_id / member_id /
                                                       group_instance_id (defaults -1, "", None);
                                                       committed_leader_epoch (v2+, else -1) ->
                                                       leader_epoch; committed_offset -> offset;
                                                       committed_metadata -> metadata
Responses carry plain ints for error codes (`ErrorCode.x.value`). Responses for old versions:
LeaveGroup v0-2 answers with the first member's error as the top-level error;
JoinGroupResponse.skip_assignment exists from v9 (`supports_skip_assignment=False` for older
requests: a static leader rejoining a Stable group then gets no members, as Kafka does);
DescribeGroups v0-5 answer an unknown group with error 0 and state "Dead" where we say
GROUP_ID_NOT_FOUND (69).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from odradek.protocol.errors import ErrorCode

NONE = ErrorCode.none.value
UNKNOWN_MEMBER_ID = ""  # JoinGroupRequest.UNKNOWN_MEMBER_ID


@dataclass(frozen=True, slots=True)
class JoinGroupRequest:
    group_id: str
    member_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = True  # JoinGroup v4+
    supports_skip_assignment: bool = True  # JoinGroup v9+
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinGroupResponse:
    error_code: int
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: tuple[JoinGroupMember, ...] = ()
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncGroupRequest:
    group_id: str
    generation_id: int
    member_id: str
    assignments: tuple[tuple[str, bytes], ...] = ()
    group_instance_id: str | None = None
    protocol_type: str | None = None  # v5+
    protocol_name: str | None = None  # v5+


@dataclass(frozen=True, slots=True)
class SyncGroupResponse:
    error_code: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveMember:
    member_id: str
    group_instance_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroupRequest:
    group_id: str
    members: tuple[LeaveMember, ...]


@dataclass(frozen=True, slots=True)
class LeaveMemberResponse:
    member_id: str
    group_instance_id: str | None
    error_code: int


@dataclass(frozen=True, slots=True)
class LeaveGroupResponse:
    error_code: int
    members: tuple[LeaveMemberResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetCommitPartition:
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""
    commit_timestamp_ms: int = -1  # OffsetCommit v1 only; -1: now


@dataclass(frozen=True, slots=True)
class OffsetCommitRequest:
    group_id: str
    topics: dict[str, tuple[OffsetCommitPartition, ...]]
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None
    retention_time_ms: int = -1


@dataclass(frozen=True, slots=True)
class OffsetCommitResponse:
    # topic -> ((partition, error_code), ...), in request order
    topics: dict[str, tuple[tuple[int, int], ...]]


@dataclass(frozen=True, slots=True)
class OffsetFetchGroup:
    group_id: str
    topics: dict[str, tuple[int, ...]] | None  # None: every committed partition


@dataclass(frozen=True, slots=True)
class FetchedOffset:
    partition: int
    offset: int  # -1 when nothing is committed
    leader_epoch: int = -1
    metadata: str = ""
    error_code: int = NONE


@dataclass(frozen=True, slots=True)
class OffsetFetchGroupResponse:
    group_id: str
    error_code: int
    topics: dict[str, tuple[FetchedOffset, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    member_metadata: bytes
    member_assignment: bytes


@dataclass(frozen=True, slots=True)
class DescribedGroup:
    group_id: str
    error_code: int
    group_state: str
    protocol_type: str = ""
    protocol_data: str = ""
    members: tuple[DescribedMember, ...] = ()


@dataclass(frozen=True, slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    group_state: str
    group_type: str = "classic"


@dataclass(frozen=True, slots=True)
class OffsetDeleteRequest:
    group_id: str
    topics: dict[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class OffsetDeleteResponse:
    error_code: int
    topics: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    error_code: int


@dataclass(frozen=True, slots=True)
class DeleteGroupsResponse:
    results: tuple[tuple[str, int], ...]  # (group id, error code), in request order


@dataclass(frozen=True, slots=True)
class TxnOffsetCommitPartition:
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@dataclass(frozen=True, slots=True)
class TxnOffsetCommitRequest:
    """TxnOffsetCommit (API key 28). `api_version` matters once: v0-1 clients get
    COORDINATOR_NOT_AVAILABLE instead of COORDINATOR_LOAD_IN_PROGRESS (KAFKA-7296)."""

    transactional_id: str
    group_id: str
    producer_id: int
    producer_epoch: int
    topics: dict[str, tuple[TxnOffsetCommitPartition, ...]]
    generation_id: int = -1  # v3+
    member_id: str = ""  # v3+
    group_instance_id: str | None = None  # v3+
    api_version: int = 5


@dataclass(frozen=True, slots=True)
class TxnOffsetCommitResponse:
    # topic -> ((partition, error_code), ...), in request order
    topics: dict[str, tuple[tuple[int, int], ...]]
