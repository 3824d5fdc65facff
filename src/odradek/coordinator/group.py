"""The classic consumer group: membership, generations and the rebalance protocol.

One `ClassicGroup` per group id, owned by the `GroupCoordinator` of the `__consumer_offsets`
partition that holds the group. Its state machine is the `TRANSITIONS` table below; the request
methods (join, sync, heartbeat, leave) validate, update members, and fire table events. Nothing
here reads a clock or does I/O: every method takes `now_ms` and an `Effects` accumulator, into
which it puts responses to send (keyed by the caller's request token) and group metadata
writes to append (`GroupStore`). Timers are plain deadlines (`next_deadline_ms`) that `tick`
fires, as Kafka's delayed operations (DelayedJoin, InitialDelayedJoin, DelayedHeartbeat,
pending-sync expiry) would.

Semantics follow Kafka's classic GroupCoordinator, including KIP-345 static membership,
KIP-394 (MEMBER_ID_REQUIRED), KIP-814 (skip_assignment for a static leader's rejoin) and the
initial rebalance delay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from odradek.coordinator.messages import (
    NONE,
    UNKNOWN_MEMBER_ID,
    DescribedGroup,
    DescribedMember,
    HeartbeatRequest,
    JoinGroupMember,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveMemberResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from odradek.coordinator.records import (
    GroupMetadataValue,
    MemberMetadataValue,
    parse_consumer_subscription_topics,
)
from odradek.protocol.errors import ErrorCode

CONSUMER_PROTOCOL_TYPE = "consumer"
# Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a new member that never completes its first
# join (it cannot heartbeat yet) is dropped after this long.
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Broker configs the group coordinator acts on; names and defaults are Kafka's."""

    group_min_session_timeout_ms: int = 6_000  # group.min.session.timeout.ms
    group_max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    group_initial_rebalance_delay_ms: int = 3_000  # group.initial.rebalance.delay.ms
    group_max_size: int = 2**31 - 1  # group.max.size
    offsets_retention_minutes: int = 7 * 24 * 60  # offsets.retention.minutes
    offsets_retention_check_interval_ms: int = 600_000  # offsets.retention.check.interval.ms
    offset_metadata_max_bytes: int = 4096  # offset.metadata.max.bytes
    offsets_topic_num_partitions: int = 50  # offsets.topic.num.partitions

    @property
    def offsets_retention_ms(self) -> int:
        return self.offsets_retention_minutes * 60_000


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class Event(enum.Enum):
    REBALANCE = "rebalance"  # membership or metadata changed: every member must rejoin
    JOIN_COMPLETE = "join_complete"  # all joined (or join timer): members remain
    JOIN_COMPLETE_EMPTY = "join_complete_empty"  # the join phase ended with no members
    ASSIGNMENT_STORED = "assignment_stored"  # the leader's assignment is on the log
    DELETE = "delete"  # DeleteGroups, or the last offsets of an empty group expired
    UNLOAD = "unload"  # the __consumer_offsets partition moved away


S = GroupState
E = Event

# (state, event) -> (next state, actions). Anything missing from the table is a bug and asserts.
TRANSITIONS: dict[tuple[GroupState, Event], tuple[GroupState, tuple[str, ...]]] = {
    (S.EMPTY, E.REBALANCE): (S.PREPARING_REBALANCE, ("schedule_initial_join",)),
    (S.STABLE, E.REBALANCE): (S.PREPARING_REBALANCE, ("schedule_join",)),
    (S.COMPLETING_REBALANCE, E.REBALANCE): (
        S.PREPARING_REBALANCE,
        ("fail_awaiting_syncs", "schedule_join"),
    ),
    (S.PREPARING_REBALANCE, E.REBALANCE): (S.PREPARING_REBALANCE, ()),
    (S.PREPARING_REBALANCE, E.JOIN_COMPLETE): (
        S.COMPLETING_REBALANCE,
        ("init_next_generation", "answer_joins", "schedule_pending_sync"),
    ),
    (S.PREPARING_REBALANCE, E.JOIN_COMPLETE_EMPTY): (
        S.EMPTY,
        ("init_next_generation", "store_empty_group"),
    ),
    (S.COMPLETING_REBALANCE, E.ASSIGNMENT_STORED): (S.STABLE, ("propagate_assignment",)),
    (S.EMPTY, E.DELETE): (S.DEAD, ()),
    (S.EMPTY, E.UNLOAD): (S.DEAD, ()),
    (S.PREPARING_REBALANCE, E.UNLOAD): (S.DEAD, ("fail_parked_not_coordinator",)),
    (S.COMPLETING_REBALANCE, E.UNLOAD): (S.DEAD, ("fail_parked_not_coordinator",)),
    (S.STABLE, E.UNLOAD): (S.DEAD, ("fail_parked_not_coordinator",)),
    (S.DEAD, E.UNLOAD): (S.DEAD, ()),
}


@dataclass(slots=True)
class GroupStore:
    """A group metadata record the coordinator must append; `kind` says what waits on it.

    kind "assignment": the leader's SyncGroup; on success the group becomes Stable.
    kind "empty": the group became Empty; nothing waits.
    kind "static_rejoin": a static member rejoined a Stable group under a new member id;
        its JoinGroup answer waits, and a failure reverts the member id (as Kafka).
    """

    kind: str
    group_id: str
    generation_id: int
    value: GroupMetadataValue
    token: Any = None
    # static_rejoin: (new id, old id, old protocols, old rebalance timeout, old session timeout)
    revert: tuple | None = None
    response: JoinGroupResponse | None = None


@dataclass(slots=True)
class Effects:
    """What one call into the core produced: responses to send now and records to write."""

    responses: list[tuple[Any, Any]] = field(default_factory=list)
    stores: list[GroupStore] = field(default_factory=list)

    def answer(self, token: Any, response: Any) -> None:
        self.responses.append((token, response))


@dataclass(slots=True)
class Member:
    """One member of a classic group.

    Invariants: `awaiting_join` says a JoinGroup of this member is parked under `join_token`
    (None otherwise), `awaiting_sync` likewise for SyncGroup and `sync_token`; `protocols` is
    non-empty; a member with a group instance id is the group's only member with that id.
    `session_deadline_ms` None means no heartbeat is expected (awaiting a rebalance).
    """

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_token: Any = None
    awaiting_join: bool = False
    sync_token: Any = None
    awaiting_sync: bool = False
    is_new: bool = False
    session_deadline_ms: int | None = None

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def vote(self, candidates: set[str]) -> str:
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise AssertionError(f"member {self.member_id} supports none of {candidates}")


def _err(code: ErrorCode) -> int:
    return code.value


class ClassicGroup:
    """A classic consumer group: members, leader, generation, selected protocol, state.

    Layout on the log: one GroupMetadataValue (see records.py) written when the leader's
    assignment is stored, when the group becomes Empty, and when a static member is replaced.
    Invariants: the leader is a member (or None when there are no members); generation_id only
    grows; in CompletingRebalance and Stable `protocol_name` is one every member supports;
    `static_members` maps each group instance id to exactly one member id.
    Owner: the GroupCoordinator of the group's `__consumer_offsets` partition; single-threaded.
    """

    def __init__(
        self, group_id: str, config: GroupConfig, now_ms: int, state: GroupState = S.EMPTY
    ) -> None:
        self.group_id = group_id
        self.config = config
        self.state = state
        self.previous_state = state
        self.state_timestamp_ms = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group instance id -> member id
        self.pending_members: dict[str, int] = {}  # KIP-394 member id -> expiry deadline ms
        self.pending_sync_members: set[str] = set()
        self.pending_sync_deadline_ms: int | None = None
        self.join_deadline_ms: int | None = None
        self.join_is_initial_delay = False
        self.initial_delay_remaining_ms = 0
        self.new_member_added = False
        self.subscribed_topics: frozenset[str] | None = None
        self._sync_error = _err(ErrorCode.rebalance_in_progress)
        self._assignment_store_pending = False

    # --- the table ---------------------------------------------------------------------------

    def _fire(self, event: Event, now_ms: int, fx: Effects) -> None:
        entry = TRANSITIONS.get((self.state, event))
        assert entry is not None, (
            f"group {self.group_id}: no transition for {event} in {self.state}"
        )
        next_state, actions = entry
        if next_state is not self.state:
            self.previous_state = self.state
            self.state = next_state
            self.state_timestamp_ms = now_ms
        for action in actions:
            getattr(self, "_act_" + action)(now_ms, fx)

    def _act_schedule_initial_join(self, now_ms: int, fx: Effects) -> None:
        delay_ms = self.config.group_initial_rebalance_delay_ms
        self.join_is_initial_delay = True
        self.join_deadline_ms = now_ms + delay_ms
        self.initial_delay_remaining_ms = max(self.rebalance_timeout_ms() - delay_ms, 0)
        self.new_member_added = False
        self._clear_pending_sync()

    def _act_schedule_join(self, now_ms: int, fx: Effects) -> None:
        self.join_is_initial_delay = False
        self.join_deadline_ms = now_ms + self.rebalance_timeout_ms()
        self._clear_pending_sync()
        self._try_complete_join(now_ms, fx)  # e.g. the last member left: nobody to wait for

    def _act_fail_awaiting_syncs(self, now_ms: int, fx: Effects) -> None:
        error = self._sync_error
        self._sync_error = _err(ErrorCode.rebalance_in_progress)
        self._assignment_store_pending = False
        for member in self.members.values():
            member.assignment = b""
        self._propagate(now_ms, fx, error)

    def _act_init_next_generation(self, now_ms: int, fx: Effects) -> None:
        self.generation_id += 1
        self.join_deadline_ms = None
        self.join_is_initial_delay = False
        if self.members:
            self.protocol_name = self.select_protocol()
        else:
            self.protocol_name = None
        self.subscribed_topics = self._compute_subscribed_topics()

    def _act_answer_joins(self, now_ms: int, fx: Effects) -> None:
        for member in self.members.values():
            if member.awaiting_join:
                fx.answer(member.join_token, self._join_result(member.member_id))
                member.join_token = None
                member.awaiting_join = False
            member.is_new = False
            member.session_deadline_ms = now_ms + member.session_timeout_ms

    def _act_schedule_pending_sync(self, now_ms: int, fx: Effects) -> None:
        self.pending_sync_members = set(self.members)
        self.pending_sync_deadline_ms = now_ms + self.rebalance_timeout_ms()

    def _act_store_empty_group(self, now_ms: int, fx: Effects) -> None:
        fx.stores.append(
            GroupStore("empty", self.group_id, self.generation_id, self.to_record_value())
        )

    def _act_propagate_assignment(self, now_ms: int, fx: Effects) -> None:
        self._propagate(now_ms, fx, NONE)

    def _act_fail_parked_not_coordinator(self, now_ms: int, fx: Effects) -> None:
        not_coordinator = _err(ErrorCode.not_coordinator)
        for member in self.members.values():
            if member.awaiting_join:
                fx.answer(
                    member.join_token,
                    JoinGroupResponse(not_coordinator, member_id=member.member_id),
                )
                member.join_token, member.awaiting_join = None, False
            if member.awaiting_sync:
                fx.answer(member.sync_token, SyncGroupResponse(not_coordinator))
                member.sync_token, member.awaiting_sync = None, False
        self.join_deadline_ms = None
        self._clear_pending_sync()

    # --- helpers ---------------------------------------------------------------------------

    def _clear_pending_sync(self) -> None:
        self.pending_sync_members = set()
        self.pending_sync_deadline_ms = None

    def _propagate(self, now_ms: int, fx: Effects, error: int) -> None:
        for member in self.members.values():
            if member.awaiting_sync:
                if error == NONE:
                    response = SyncGroupResponse(
                        NONE, member.assignment, self.protocol_type, self.protocol_name
                    )
                else:
                    response = SyncGroupResponse(error)
                fx.answer(member.sync_token, response)
                member.sync_token, member.awaiting_sync = None, False
            member.session_deadline_ms = now_ms + member.session_timeout_ms

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        candidates = {name for name, _ in members[0].protocols}
        for member in members[1:]:
            candidates &= {name for name, _ in member.protocols}
        return candidates

    def select_protocol(self) -> str:
        """Kafka's selectProtocol: each member votes for its most preferred protocol among those
        all members support; most votes wins. Ties (a hash-map order in Kafka) go to the protocol
        that got its first vote earliest in member join order, so the choice is deterministic."""
        candidates = self.candidate_protocols()
        assert candidates, f"group {self.group_id}: no protocol supported by every member"
        votes: dict[str, int] = {}
        for member in self.members.values():
            name = member.vote(candidates)
            votes[name] = votes.get(name, 0) + 1
        best = max(votes.values())
        return next(name for name, count in votes.items() if count == best)

    def supports_protocols(
        self, protocol_type: str, protocols: tuple[tuple[str, bytes], ...]
    ) -> bool:
        names = {name for name, _ in protocols}
        if not self.members:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and bool(names & self.candidate_protocols())

    def _compute_subscribed_topics(self) -> frozenset[str] | None:
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE or self.protocol_name is None:
            return None if self.members else frozenset()
        topics: set[str] = set()
        for member in self.members.values():
            parsed = parse_consumer_subscription_topics(member.metadata_for(self.protocol_name))
            if parsed is None:
                return None
            topics |= parsed
        return frozenset(topics)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        return self.subscribed_topics is not None and topic in self.subscribed_topics

    def _join_result(self, member_id: str, skip_assignment: bool = False) -> JoinGroupResponse:
        is_leader = member_id == self.leader_id
        members: tuple[JoinGroupMember, ...] = ()
        if is_leader:
            members = tuple(
                JoinGroupMember(
                    m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name)
                )
                for m in self.members.values()
            )
        return JoinGroupResponse(
            NONE,
            generation_id=self.generation_id,
            protocol_type=self.protocol_type,
            protocol_name=self.protocol_name,
            leader=self.leader_id or "",
            member_id=member_id,
            members=members,
            skip_assignment=skip_assignment,
        )

    def all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def _add_member(self, member: Member) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        assert member.member_id not in self.members
        self.members[member.member_id] = member
        if self.leader_id is None:
            self.leader_id = member.member_id
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id

    def _remove_member(self, member_id: str, fx: Effects) -> None:
        """Drop a member, answering anything it has parked with UNKNOWN_MEMBER_ID (Kafka answers
        a parked JoinGroup so; a parked SyncGroup would otherwise never be answered)."""
        member = self.members.pop(member_id)
        if member.awaiting_join:
            fx.answer(
                member.join_token,
                JoinGroupResponse(_err(ErrorCode.unknown_member_id), member_id=UNKNOWN_MEMBER_ID),
            )
        if member.awaiting_sync:
            fx.answer(member.sync_token, SyncGroupResponse(_err(ErrorCode.unknown_member_id)))
        if (
            member.group_instance_id is not None
            and self.static_members.get(member.group_instance_id) == member_id
        ):
            del self.static_members[member.group_instance_id]
        self.pending_sync_members.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)

    def _maybe_prepare_rebalance(self, now_ms: int, fx: Effects) -> None:
        if self.state in (S.STABLE, S.COMPLETING_REBALANCE, S.EMPTY):
            self._fire(E.REBALANCE, now_ms, fx)

    def _member_left(self, member_id: str, now_ms: int, fx: Effects) -> None:
        """Kafka's removeMemberAndUpdateGroup."""
        self._remove_member(member_id, fx)
        if self.state in (S.STABLE, S.COMPLETING_REBALANCE):
            self._fire(E.REBALANCE, now_ms, fx)
        elif self.state is S.PREPARING_REBALANCE:
            self._try_complete_join(now_ms, fx)

    def _try_complete_join(self, now_ms: int, fx: Effects) -> None:
        if (
            self.state is S.PREPARING_REBALANCE
            and not self.join_is_initial_delay
            and self.all_members_joined()
        ):
            self._complete_join(now_ms, fx)

    def _complete_join(self, now_ms: int, fx: Effects) -> None:
        """Kafka's onCompleteJoin: dynamic members that did not rejoin are removed, static
        ones stay."""
        for member in [
            m for m in self.members.values() if not m.awaiting_join and m.group_instance_id is None
        ]:
            self._remove_member(member.member_id, fx)
        if self.members and not self._maybe_elect_new_joined_leader():
            # Nobody rejoined (only static members remain): wait another rebalance timeout for
            # session expiry to clear them, as Kafka does.
            self.join_is_initial_delay = False
            self.join_deadline_ms = now_ms + self.rebalance_timeout_ms()
            return
        self._fire(E.JOIN_COMPLETE if self.members else E.JOIN_COMPLETE_EMPTY, now_ms, fx)

    def _maybe_elect_new_joined_leader(self) -> bool:
        if self.leader_id is None:
            return False
        if self.members[self.leader_id].awaiting_join:
            return True
        for member_id, member in self.members.items():
            if member.awaiting_join:
                self.leader_id = member_id
                return True
        return False

    def validate_member(self, member_id: str, group_instance_id: str | None) -> int:
        """Kafka's validateMember: FENCED_INSTANCE_ID for a stale static member id."""
        if group_instance_id is not None:
            existing = self.static_members.get(group_instance_id)
            if existing is None:
                return _err(ErrorCode.unknown_member_id)
            if existing != member_id:
                return _err(ErrorCode.fenced_instance_id)
        if member_id not in self.members:
            return _err(ErrorCode.unknown_member_id)
        return NONE

    def _new_member(
        self, req: JoinGroupRequest, member_id: str, rebalance_timeout_ms: int
    ) -> Member:
        return Member(
            member_id=member_id,
            group_instance_id=req.group_instance_id,
            client_id=req.client_id,
            client_host=req.client_host,
            rebalance_timeout_ms=rebalance_timeout_ms,
            session_timeout_ms=req.session_timeout_ms,
            protocol_type=req.protocol_type,
            protocols=tuple(req.protocols),
        )

    # --- JoinGroup -------------------------------------------------------------------------

    def join(
        self, req: JoinGroupRequest, new_member_id: str, token: Any, now_ms: int, fx: Effects
    ) -> None:
        """Handle a JoinGroup; the answer goes into `fx` now, or later (parked under `token`).
        `new_member_id` is the id to give the member if it has none (client id + "-" + UUID)."""
        rebalance_timeout_ms = (
            req.rebalance_timeout_ms if req.rebalance_timeout_ms >= 0 else req.session_timeout_ms
        )
        if self.state is S.DEAD:
            fx.answer(
                token,
                JoinGroupResponse(
                    _err(ErrorCode.coordinator_not_available), member_id=req.member_id
                ),
            )
            return
        if not self.supports_protocols(req.protocol_type, req.protocols):
            fx.answer(
                token,
                JoinGroupResponse(
                    _err(ErrorCode.inconsistent_group_protocol), member_id=req.member_id
                ),
            )
            return
        if not self._accept_joining_member(req.member_id):
            if req.member_id in self.members:
                self._member_left(req.member_id, now_ms, fx)
            fx.answer(
                token,
                JoinGroupResponse(
                    _err(ErrorCode.group_max_size_reached), member_id=UNKNOWN_MEMBER_ID
                ),
            )
            return
        if req.member_id == UNKNOWN_MEMBER_ID:
            self._join_new_member(req, new_member_id, rebalance_timeout_ms, token, now_ms, fx)
        else:
            self._join_current_member(req, rebalance_timeout_ms, token, now_ms, fx)
        if self.state is S.PREPARING_REBALANCE:
            self._try_complete_join(now_ms, fx)
            self._fire_join_deadline_if_due(now_ms, fx)

    def _accept_joining_member(self, member_id: str) -> bool:
        max_size = self.config.group_max_size
        if self.state in (S.EMPTY, S.DEAD):
            return True
        if self.state is S.PREPARING_REBALANCE:
            member = self.members.get(member_id)
            if member is not None and member.awaiting_join:
                return True
            return sum(1 for m in self.members.values() if m.awaiting_join) < max_size
        return member_id in self.members or len(self.members) < max_size

    def _join_new_member(
        self,
        req: JoinGroupRequest,
        member_id: str,
        rebalance_timeout_ms: int,
        token: Any,
        now_ms: int,
        fx: Effects,
    ) -> None:
        if req.group_instance_id is not None:
            self._join_static_member(req, member_id, rebalance_timeout_ms, token, now_ms, fx)
        elif req.require_known_member_id:
            # KIP-394: hand out the member id first; the member joins again with it.
            self.pending_members[member_id] = now_ms + req.session_timeout_ms
            fx.answer(
                token, JoinGroupResponse(_err(ErrorCode.member_id_required), member_id=member_id)
            )
        else:
            self._add_member_and_rebalance(req, member_id, rebalance_timeout_ms, token, now_ms, fx)

    def _add_member_and_rebalance(
        self,
        req: JoinGroupRequest,
        member_id: str,
        rebalance_timeout_ms: int,
        token: Any,
        now_ms: int,
        fx: Effects,
    ) -> None:
        member = self._new_member(req, member_id, rebalance_timeout_ms)
        member.is_new = True
        member.join_token, member.awaiting_join = token, True
        if self.state is S.PREPARING_REBALANCE and self.previous_state is S.EMPTY:
            self.new_member_added = True  # lets the initial rebalance delay be extended
        self.pending_members.pop(member_id, None)
        self._add_member(member)
        member.session_deadline_ms = now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS
        self._maybe_prepare_rebalance(now_ms, fx)

    def _update_member_and_rebalance(
        self,
        member: Member,
        req: JoinGroupRequest,
        rebalance_timeout_ms: int,
        token: Any,
        now_ms: int,
        fx: Effects,
    ) -> None:
        self._update_member(member, req, rebalance_timeout_ms, token, fx)
        self._maybe_prepare_rebalance(now_ms, fx)

    def _update_member(
        self,
        member: Member,
        req: JoinGroupRequest,
        rebalance_timeout_ms: int,
        token: Any,
        fx: Effects,
    ) -> None:
        member.protocols = tuple(req.protocols)
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        if member.awaiting_join:
            # A duplicate join replaces the older one, which Kafka answers with nothing; we
            # answer it with REBALANCE_IN_PROGRESS so the caller's token is never leaked.
            fx.answer(
                member.join_token,
                JoinGroupResponse(
                    _err(ErrorCode.rebalance_in_progress), member_id=member.member_id
                ),
            )
        member.join_token, member.awaiting_join = token, True

    def _join_static_member(
        self,
        req: JoinGroupRequest,
        new_member_id: str,
        rebalance_timeout_ms: int,
        token: Any,
        now_ms: int,
        fx: Effects,
    ) -> None:
        instance_id = req.group_instance_id
        assert instance_id is not None
        old_member_id = self.static_members.get(instance_id)
        if old_member_id is None:
            self._add_member_and_rebalance(
                req, new_member_id, rebalance_timeout_ms, token, now_ms, fx
            )
            return
        # KIP-345: the new join replaces the old member id; the old id is fenced from now on.
        member = self.members[old_member_id]
        revert = (
            new_member_id,
            old_member_id,
            member.protocols,
            member.rebalance_timeout_ms,
            member.session_timeout_ms,
        )
        self._replace_member_id(old_member_id, new_member_id, fx)
        member.session_deadline_ms = now_ms + member.session_timeout_ms
        if self.state is S.STABLE:
            same_metadata = member.protocols == tuple(req.protocols)
            member.protocols = tuple(req.protocols)
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.session_timeout_ms = req.session_timeout_ms
            if same_metadata and self.select_protocol() == self.protocol_name:
                # Unchanged: persist the new member id and answer without a rebalance. (Kafka
                # only checks the selected protocol; we also rebalance on changed metadata,
                # so a changed subscription is never silently ignored.)
                if req.supports_skip_assignment:  # KIP-814: the leader need not reassign
                    response = self._join_result(
                        new_member_id, skip_assignment=new_member_id == self.leader_id
                    )
                else:
                    response = self._join_result(new_member_id)
                    response = JoinGroupResponse(
                        NONE,
                        response.generation_id,
                        response.protocol_type,
                        response.protocol_name,
                        response.leader,
                        new_member_id,
                    )
                fx.stores.append(
                    GroupStore(
                        "static_rejoin",
                        self.group_id,
                        self.generation_id,
                        self.to_record_value(),
                        token,
                        revert,
                        response,
                    )
                )
                self.subscribed_topics = self._compute_subscribed_topics()
                return
            member.join_token, member.awaiting_join = token, True
            self._fire(E.REBALANCE, now_ms, fx)
            return
        self._update_member(member, req, rebalance_timeout_ms, token, fx)
        if self.state is S.COMPLETING_REBALANCE:
            # The leader may have assigned to the old id: rebalance so the new id gets one.
            self._fire(E.REBALANCE, now_ms, fx)

    def _replace_member_id(self, old_id: str, new_id: str, fx: Effects) -> None:
        member = self.members[old_id]
        fenced = _err(ErrorCode.fenced_instance_id)
        if member.awaiting_join:
            fx.answer(member.join_token, JoinGroupResponse(fenced, member_id=old_id))
            member.join_token, member.awaiting_join = None, False
        if member.awaiting_sync:
            fx.answer(member.sync_token, SyncGroupResponse(fenced))
            member.sync_token, member.awaiting_sync = None, False
        member.member_id = new_id
        # keep the member's position (join order) so leader fallback stays deterministic
        self.members = {(new_id if k == old_id else k): v for k, v in self.members.items()}
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_id)
            self.pending_sync_members.add(new_id)

    def revert_static_rejoin(self, store: GroupStore, error: int, now_ms: int, fx: Effects) -> None:
        """The static_rejoin record failed: restore the old member id (Kafka does the same)."""
        assert store.revert is not None
        new_id, old_id, protocols, rebalance_timeout_ms, session_timeout_ms = store.revert
        member = self.members.get(new_id)
        if member is not None and old_id not in self.members:
            self._replace_member_id(new_id, old_id, fx)
            member.protocols = protocols
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.session_timeout_ms = session_timeout_ms
            member.session_deadline_ms = now_ms + session_timeout_ms
        fx.answer(
            store.token,
            JoinGroupResponse(
                error,
                self.generation_id,
                self.protocol_type,
                self.protocol_name,
                self.leader_id or "",
                UNKNOWN_MEMBER_ID,
            ),
        )

    def _join_current_member(
        self, req: JoinGroupRequest, rebalance_timeout_ms: int, token: Any, now_ms: int, fx: Effects
    ) -> None:
        member_id = req.member_id
        if member_id in self.pending_members:
            if req.group_instance_id is not None:
                fx.answer(
                    token, JoinGroupResponse(_err(ErrorCode.unknown_member_id), member_id=member_id)
                )
                return
            self._add_member_and_rebalance(req, member_id, rebalance_timeout_ms, token, now_ms, fx)
            return
        error = self.validate_member(member_id, req.group_instance_id)
        if error != NONE:
            fx.answer(token, JoinGroupResponse(error, member_id=member_id))
            return
        member = self.members[member_id]
        same_metadata = member.protocols == tuple(req.protocols)
        if self.state is S.PREPARING_REBALANCE:
            self._update_member_and_rebalance(member, req, rebalance_timeout_ms, token, now_ms, fx)
        elif self.state is S.COMPLETING_REBALANCE:
            if same_metadata:
                # It probably missed the JoinGroup answer: send the current one again.
                fx.answer(token, self._join_result(member_id))
            else:
                self._update_member_and_rebalance(
                    member, req, rebalance_timeout_ms, token, now_ms, fx
                )
        elif self.state is S.STABLE:
            if member_id == self.leader_id or not same_metadata:
                # The leader rejoining, or new metadata, means a new assignment is needed.
                self._update_member_and_rebalance(
                    member, req, rebalance_timeout_ms, token, now_ms, fx
                )
            else:
                fx.answer(token, self._join_result(member_id))
        else:
            fx.answer(
                token, JoinGroupResponse(_err(ErrorCode.unknown_member_id), member_id=member_id)
            )

    # --- SyncGroup -------------------------------------------------------------------------

    def sync(self, req: SyncGroupRequest, token: Any, now_ms: int, fx: Effects) -> None:
        if self.state is S.DEAD:
            fx.answer(token, SyncGroupResponse(_err(ErrorCode.coordinator_not_available)))
            return
        error = self.validate_member(req.member_id, req.group_instance_id)
        if error == NONE and req.generation_id != self.generation_id:
            error = _err(ErrorCode.illegal_generation)
        if error == NONE and (
            (req.protocol_type is not None and req.protocol_type != self.protocol_type)
            or (req.protocol_name is not None and req.protocol_name != self.protocol_name)
        ):
            error = _err(ErrorCode.inconsistent_group_protocol)
        if error != NONE:
            fx.answer(token, SyncGroupResponse(error))
            return
        member = self.members[req.member_id]
        if self.state is S.EMPTY:
            fx.answer(token, SyncGroupResponse(_err(ErrorCode.unknown_member_id)))
        elif self.state is S.PREPARING_REBALANCE:
            fx.answer(token, SyncGroupResponse(_err(ErrorCode.rebalance_in_progress)))
        elif self.state is S.COMPLETING_REBALANCE:
            self.pending_sync_members.discard(member.member_id)
            if member.awaiting_sync:
                fx.answer(
                    member.sync_token, SyncGroupResponse(_err(ErrorCode.rebalance_in_progress))
                )
            member.sync_token, member.awaiting_sync = token, True
            if member.member_id == self.leader_id and not self._assignment_store_pending:
                given = dict(req.assignments)
                assignments = {m: given.get(m, b"") for m in self.members}  # missing: empty
                self._assignment_store_pending = True
                fx.stores.append(
                    GroupStore(
                        "assignment",
                        self.group_id,
                        self.generation_id,
                        self.to_record_value(assignments),
                    )
                )
        else:  # Stable: answer with the current assignment
            self.pending_sync_members.discard(member.member_id)
            fx.answer(
                token,
                SyncGroupResponse(NONE, member.assignment, self.protocol_type, self.protocol_name),
            )
            member.session_deadline_ms = now_ms + member.session_timeout_ms

    def on_assignment_stored(self, store: GroupStore, error: int, now_ms: int, fx: Effects) -> None:
        """Completion of the leader's assignment record (Kafka's storeGroup callback)."""
        if self.state is not S.COMPLETING_REBALANCE or self.generation_id != store.generation_id:
            return
        self._assignment_store_pending = False
        if error != NONE:
            self._sync_error = error
            self._fire(E.REBALANCE, now_ms, fx)
            return
        for m in store.value.members:
            if m.member_id in self.members:
                self.members[m.member_id].assignment = m.assignment
        self._fire(E.ASSIGNMENT_STORED, now_ms, fx)

    # --- Heartbeat, LeaveGroup -------------------------------------------------------------

    def heartbeat(self, req: HeartbeatRequest, now_ms: int) -> int:
        if self.state is S.DEAD:
            return _err(ErrorCode.coordinator_not_available)
        error = self.validate_member(req.member_id, req.group_instance_id)
        if error != NONE:
            return error
        if req.generation_id != self.generation_id:
            return _err(ErrorCode.illegal_generation)
        if self.state is S.EMPTY:
            return _err(ErrorCode.unknown_member_id)
        member = self.members[req.member_id]
        member.session_deadline_ms = now_ms + member.session_timeout_ms
        if self.state is S.PREPARING_REBALANCE:
            return _err(ErrorCode.rebalance_in_progress)
        return NONE

    def leave(
        self, req: LeaveGroupRequest, now_ms: int, fx: Effects
    ) -> tuple[LeaveMemberResponse, ...]:
        results = []
        for leaving in req.members:
            results.append(
                LeaveMemberResponse(
                    leaving.member_id,
                    leaving.group_instance_id,
                    self._leave_one(leaving.member_id, leaving.group_instance_id, now_ms, fx),
                )
            )
        return tuple(results)

    def _leave_one(self, member_id: str, instance_id: str | None, now_ms: int, fx: Effects) -> int:
        if self.state is S.DEAD:
            return _err(ErrorCode.coordinator_not_available)
        if instance_id is None and member_id in self.pending_members:
            del self.pending_members[member_id]
            self._try_complete_join(now_ms, fx)
            return NONE
        if member_id == UNKNOWN_MEMBER_ID and instance_id is not None:
            # Leave by instance id alone (admin removeMembersFromConsumerGroup).
            found = self.static_members.get(instance_id)
            if found is None:
                return _err(ErrorCode.unknown_member_id)
            member_id = found
        else:
            error = self.validate_member(member_id, instance_id)
            if error != NONE:
                return error
        self._member_left(member_id, now_ms, fx)
        return NONE

    # --- OffsetCommit checks ---------------------------------------------------------------

    def validate_offset_commit(
        self, generation_id: int, member_id: str, instance_id: str | None, now_ms: int
    ) -> int:
        """Kafka's rules for a group commit; NONE means the commit may be written."""
        if self.state is S.DEAD:
            return _err(ErrorCode.coordinator_not_available)
        if generation_id < 0 and member_id == UNKNOWN_MEMBER_ID and instance_id is None:
            # A "simple" commit: only for groups that do not use group management right now.
            return NONE if self.state is S.EMPTY else _err(ErrorCode.unknown_member_id)
        error = self.validate_member(member_id, instance_id)
        if error != NONE:
            return error
        if generation_id != self.generation_id:
            return _err(ErrorCode.illegal_generation)
        if self.state is S.COMPLETING_REBALANCE:
            return _err(ErrorCode.rebalance_in_progress)
        member = self.members[member_id]
        member.session_deadline_ms = now_ms + member.session_timeout_ms
        return NONE

    # --- timers ----------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        deadlines = [
            d for d in (self.join_deadline_ms, self.pending_sync_deadline_ms) if d is not None
        ]
        deadlines += self.pending_members.values()
        deadlines += [
            m.session_deadline_ms
            for m in self.members.values()
            if m.session_deadline_ms is not None
        ]
        return min(deadlines, default=None)

    def tick(self, now_ms: int, fx: Effects) -> None:
        """Fire every timer whose deadline is at or before `now_ms`."""
        if self.state is S.DEAD:
            return
        for member_id, deadline_ms in list(self.pending_members.items()):
            if deadline_ms <= now_ms:
                del self.pending_members[member_id]
                self._try_complete_join(now_ms, fx)
        for member in list(self.members.values()):
            if member.member_id not in self.members or member.session_deadline_ms is None:
                continue
            if member.session_deadline_ms > now_ms:
                continue
            if not member.is_new and (member.awaiting_join or member.awaiting_sync):
                member.session_deadline_ms = None  # awaiting a rebalance counts as alive
                continue
            self._member_left(member.member_id, now_ms, fx)
        self._fire_join_deadline_if_due(now_ms, fx)
        if self.pending_sync_deadline_ms is not None and self.pending_sync_deadline_ms <= now_ms:
            laggards = [m for m in self.members if m in self.pending_sync_members]
            self._clear_pending_sync()
            if laggards and self.state in (S.COMPLETING_REBALANCE, S.STABLE):
                for member_id in laggards:
                    self._remove_member(member_id, fx)
                self._fire(E.REBALANCE, now_ms, fx)
        next_ms = self.next_deadline_ms()
        assert next_ms is None or next_ms > now_ms, f"group {self.group_id}: timer left due"

    def _fire_join_deadline_if_due(self, now_ms: int, fx: Effects) -> None:
        if (
            self.state is not S.PREPARING_REBALANCE
            or self.join_deadline_ms is None
            or self.join_deadline_ms > now_ms
        ):
            return
        if (
            self.join_is_initial_delay
            and self.new_member_added
            and self.initial_delay_remaining_ms > 0
        ):
            # Kafka's InitialDelayedJoin: members keep arriving, so wait a little longer.
            delay_ms = min(
                self.config.group_initial_rebalance_delay_ms, self.initial_delay_remaining_ms
            )
            self.initial_delay_remaining_ms = max(self.initial_delay_remaining_ms - delay_ms, 0)
            self.new_member_added = False
            self.join_deadline_ms = now_ms + delay_ms
            return
        self.join_is_initial_delay = False
        self._complete_join(now_ms, fx)

    # --- lifecycle, description, records ---------------------------------------------------

    def rebalance(self, now_ms: int, fx: Effects) -> None:
        """Start a rebalance from outside a request (e.g. an over-capacity group after loading)."""
        self._maybe_prepare_rebalance(now_ms, fx)

    def delete(self, now_ms: int, fx: Effects) -> None:
        self._fire(E.DELETE, now_ms, fx)

    def unload(self, now_ms: int, fx: Effects) -> None:
        self._fire(E.UNLOAD, now_ms, fx)

    def describe(self) -> DescribedGroup:
        stable = self.state is S.STABLE
        members = tuple(
            DescribedMember(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.metadata_for(self.protocol_name) if stable else b"",
                m.assignment if stable else b"",
            )
            for m in self.members.values()
        )
        return DescribedGroup(
            self.group_id,
            NONE,
            self.state.value,
            self.protocol_type or "",
            (self.protocol_name or "") if stable else "",
            members,
        )

    def to_record_value(self, assignments: dict[str, bytes] | None = None) -> GroupMetadataValue:
        return GroupMetadataValue(
            protocol_type=self.protocol_type or "",
            generation=self.generation_id,
            protocol=self.protocol_name,
            leader=self.leader_id,
            current_state_timestamp_ms=self.state_timestamp_ms,
            members=tuple(
                MemberMetadataValue(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    m.rebalance_timeout_ms,
                    m.session_timeout_ms,
                    m.metadata_for(self.protocol_name),
                    m.assignment if assignments is None else assignments.get(m.member_id, b""),
                )
                for m in self.members.values()
            ),
        )

    @classmethod
    def from_record_value(
        cls, group_id: str, value: GroupMetadataValue, config: GroupConfig, now_ms: int
    ) -> ClassicGroup:
        """A group loaded from the log: Empty without members, Stable with them (as Kafka)."""
        group = cls(group_id, config, now_ms, S.STABLE if value.members else S.EMPTY)
        group.generation_id = value.generation
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol
        if value.current_state_timestamp_ms >= 0:
            group.state_timestamp_ms = value.current_state_timestamp_ms
        for m in value.members:
            protocols = ((value.protocol, m.subscription),) if value.protocol is not None else ()
            group._add_member(
                Member(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    m.rebalance_timeout_ms,
                    m.session_timeout_ms,
                    value.protocol_type,
                    protocols,
                    assignment=m.assignment,
                )
            )
        group.leader_id = (
            value.leader if value.leader in group.members else next(iter(group.members), None)
        )
        group.subscribed_topics = group._compute_subscribed_topics()
        return group
