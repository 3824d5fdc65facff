"""GroupCoordinator: the classic group coordinator of the `__consumer_offsets` partitions this
broker leads. Deterministic and synchronous: no I/O, no event loop, no clock reads.

Contract with the caller (the broker's handlers and its housekeeping):

* Every request method takes the decoded request (messages.py dataclasses), `now_ms`, and a
  `token` the caller chooses (for example its connection id and correlation id) and returns a
  `CoordinatorResult`: `responses`, a list of (token, response) to send now - possibly for
  tokens of *earlier* requests (a parked JoinGroup completing because another member joined) -
  and `appends`, a list of `PendingAppend` (records for one `__consumer_offsets` partition).
  A request whose answer is not in `responses` is parked; it is answered by a later call.
* For every `PendingAppend` the caller appends its records, in order and as one batch, to
  `__consumer_offsets` partition `append.partition`, then calls
  `on_append_complete(append.append_id, error_code, now_ms)` with NONE or the append's error.
  Answers that Kafka gives only after the write (OffsetCommit, the SyncGroup round that stores
  the leader's assignment, a static member's rejoin without rebalance, DeleteGroups,
  OffsetDelete) are released by that call. Offsets become visible to OffsetFetch only once
  their append succeeds. A failed append is answered with the error Kafka maps it to
  (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, INVALID_COMMIT_OFFSET_SIZE, ...); a failed
  assignment write sends the group back to PreparingRebalance; deletions are already applied
  in memory and are not undone (as in Kafka), but their answers carry the error.
* Transactional offset commits (`txn_offset_commit`, TxnOffsetCommit v0-5): the PendingAppend
  carries `producer_id`, `producer_epoch`, `base_sequence` and `transactional=True`; the caller
  builds that batch with `build_batch(..., producer_id=, producer_epoch=,
  base_sequence=append.base_sequence, transactional=True)`. `base_sequence` is NO_SEQUENCE (-1):
  Kafka appends coordinator writes (AppendOrigin.COORDINATOR) without sequence or duplicate
  checks, and a batch without a sequence is how our producer state takes that path (Kafka itself
  writes 0 and skips the check by origin). The offsets stay pending per producer id, invisible
  to OffsetFetch, until the caller reports the producer's end-transaction marker in the group's
  partition with `complete_transaction(producer_id, commit, now_ms, partitions)`.
* Timers are data: call `tick(now_ms)` at or after `next_deadline_ms()` (and once at start
  when partitions were given to the constructor: that schedules the first offsets expiry check;
  `finish_loading` schedules it too).
* Loading: `begin_loading(p)`, then `replay(key, value, now_ms, producer_id=,
  transactional=)` for each record of partition p in log order (the batch's producer id and
  transactional flag) and `replay_marker(producer_id, commit, partition=p)` for each COMMIT or
  ABORT control record, then `finish_loading(p, now_ms)`. Requests for groups of a partition
  that is loading get COORDINATOR_LOAD_IN_PROGRESS; of a partition not owned, NOT_COORDINATOR.
  `unload(p, now_ms)` drops a partition's groups and answers their parked requests with
  NOT_COORDINATOR.
* Ordering: the appends of one partition complete (`on_append_complete`) in the order they
  reach its log; that order decides between transactional and plain commits of one partition.

Owner: one per broker, called from the event loop only.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from odradek.coordinator.append_errors import coordinator_append_error
from odradek.coordinator.group import ClassicGroup, Effects, GroupConfig, GroupState, GroupStore
from odradek.coordinator.messages import (
    NONE,
    UNKNOWN_MEMBER_ID,
    DeleteGroupsResponse,
    DescribedGroup,
    FetchedOffset,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    LeaveMemberResponse,
    ListedGroup,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchGroup,
    OffsetFetchGroupResponse,
    SyncGroupRequest,
    SyncGroupResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)
from odradek.coordinator.offsets import CommittedOffset, OffsetStore, TopicPartition, offset_record
from odradek.coordinator.records import (
    GroupMetadataKey,
    OffsetCommitKey,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    partition_for_group,
)
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE

Record = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class PendingAppend:
    """Records to append, as one batch, to `__consumer_offsets` partition `partition`.

    A transactional offset commit's batch is written with the producer's id and epoch,
    `base_sequence` (NO_SEQUENCE: no sequence check on the coordinator's append path) and the
    transactional attribute; every other batch with none of them (the defaults)."""

    append_id: int
    partition: int
    records: tuple[Record, ...]
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    base_sequence: int = NO_SEQUENCE
    transactional: bool = False


@dataclass(slots=True)
class CoordinatorResult:
    responses: list[tuple[Any, Any]] = field(default_factory=list)
    appends: list[PendingAppend] = field(default_factory=list)

    def response_for(self, token: Any) -> Any:
        """The response for `token` in this result, or None if it is parked (test helper)."""
        for t, r in self.responses:
            if t == token:
                return r
        return None


@dataclass(slots=True)
class _Waiter:
    """A response released once all its appends complete; `errors` collects their failures."""

    token: Any
    remaining: int
    build: Any  # callable(dict[append_id, error]) -> response
    errors: dict[int, int] = field(default_factory=dict)


_OFFSETS_TOO_LARGE = frozenset(e.value for e in (
    ErrorCode.message_too_large, ErrorCode.record_list_too_large, ErrorCode.invalid_fetch_size))


def _commit_error(error: int) -> int:
    """Kafka's mapping of a failed offsets append to the error a committer sees."""
    return coordinator_append_error(error, _OFFSETS_TOO_LARGE, ErrorCode.invalid_commit_offset_size.value)


def _group_store_error(error: int) -> int:
    """Kafka's mapping of a failed group metadata append (storeGroup)."""
    return coordinator_append_error(error, _OFFSETS_TOO_LARGE, ErrorCode.unknown_server_error.value)


def _commit_answers(topics: dict, pending: dict, errors: dict, append_errors: dict[int, int]) -> dict:
    """Per topic, (partition, error) for an offset commit: a failed append's mapped error for
    the offsets it carried, each partition's own validation error otherwise."""
    failure = next((e for e in append_errors.values() if e != NONE), NONE)
    return {
        topic: tuple(
            (
                p.partition,
                _commit_error(failure)
                if (topic, p.partition) in pending and failure != NONE
                else errors[(topic, p.partition)],
            )
            for p in partitions
        )
        for topic, partitions in topics.items()
    }


class GroupCoordinator:
    """All classic groups and committed offsets of the `__consumer_offsets` partitions this
    broker leads.

    Holds: `groups` (group id -> ClassicGroup), `offsets` (OffsetStore), the partitions owned
    and loading, and the appends in flight (append id -> what waits on it).
    Invariants: every group in `groups` belongs to an owned or loading partition and is not
    Dead; append ids are unique and each completes at most once.
    """

    def __init__(
        self,
        config: GroupConfig | None = None,
        *,
        seed: int = 0,
        owned_partitions: Iterable[int] = (),
    ) -> None:
        self.config = config or GroupConfig()
        self.groups: dict[str, ClassicGroup] = {}
        self.offsets = OffsetStore()
        self.owned: set[int] = set(owned_partitions)
        self.loading: set[int] = set()
        self._rng = random.Random(seed)
        self._next_append_id = 1
        self._in_flight: dict[int, tuple[str, Any]] = {}
        self._waiters: dict[int, _Waiter] = {}
        self._next_expiry_check_ms: int | None = None
        # Groups named by an offset commit record replayed while loading (Kafka creates a
        # simple group on replay of any offset commit, transactional or not).
        self._replayed_offset_groups: set[str] = set()
        # Timers: a lazy min-heap of (deadline ms, group id). `_scheduled` holds each group's
        # current deadline; heap entries that disagree with it are stale and skipped. Groups
        # touched by a call are `_dirty` and get their deadline recomputed before the next
        # look at the heap, so a request costs O(members of its group), not O(all groups).
        self._timer_heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}
        self._dirty: set[str] = set()

    # --- plumbing ------------------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.config.offsets_topic_num_partitions)

    def _coordinator_error(self, group_id: str) -> int:
        p = self.partition_for(group_id)
        if p in self.loading:
            return ErrorCode.coordinator_load_in_progress.value
        if p not in self.owned:
            return ErrorCode.not_coordinator.value
        return NONE

    def _new_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        """Kafka's generateMemberId: "<group instance id or client id>-<uuid>"."""
        prefix = group_instance_id if group_instance_id is not None else client_id
        return f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _append(
        self,
        partition: int,
        records: list[Record],
        kind: str,
        payload: Any,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> PendingAppend:
        append_id = self._next_append_id
        self._next_append_id += 1
        self._in_flight[append_id] = (kind, payload)
        return PendingAppend(
            append_id,
            partition,
            tuple(records),
            producer_id,
            producer_epoch,
            NO_SEQUENCE,
            producer_id != NO_PRODUCER_ID,
        )

    def _finish(self, fx: Effects, result: CoordinatorResult | None = None) -> CoordinatorResult:
        result = result or CoordinatorResult()
        result.responses.extend(fx.responses)
        for store in fx.stores:
            record = (
                encode_group_metadata_key(store.group_id),
                encode_group_metadata_value(store.value),
            )
            result.appends.append(
                self._append(self.partition_for(store.group_id), [record], "group", store)
            )
        return result

    def _remove_if_unused(self, group: ClassicGroup) -> None:
        """A group created by a request that then failed leaves no trace (as Kafka)."""
        if (
            group.state is GroupState.EMPTY
            and not group.members
            and not group.pending_members
            and group.generation_id == 0
            and not self.offsets.has_offsets(group.group_id)
            and group.group_id not in self.offsets.txn_producers
        ):
            self.groups.pop(group.group_id, None)

    # --- JoinGroup, SyncGroup, Heartbeat, LeaveGroup -------------------------------------

    def join_group(self, req: JoinGroupRequest, now_ms: int, token: Any) -> CoordinatorResult:
        self._dirty.add(req.group_id)
        fx = Effects()
        error = self._coordinator_error(req.group_id)
        if not req.group_id:
            error = ErrorCode.invalid_group_id.value
        elif error == NONE and not (
            self.config.group_min_session_timeout_ms
            <= req.session_timeout_ms
            <= self.config.group_max_session_timeout_ms
        ):
            error = ErrorCode.invalid_session_timeout.value
        group = self.groups.get(req.group_id)
        if error == NONE and group is None:
            if req.member_id != UNKNOWN_MEMBER_ID:
                error = ErrorCode.unknown_member_id.value
            else:
                group = self.groups[req.group_id] = ClassicGroup(req.group_id, self.config, now_ms)
        if error != NONE:
            fx.answer(token, JoinGroupResponse(error, member_id=req.member_id))
            return self._finish(fx)
        assert group is not None
        group.join(
            req, self._new_member_id(req.client_id, req.group_instance_id), token, now_ms, fx
        )
        self._remove_if_unused(group)
        return self._finish(fx)

    def sync_group(self, req: SyncGroupRequest, now_ms: int, token: Any) -> CoordinatorResult:
        self._dirty.add(req.group_id)
        fx = Effects()
        error = (
            self._coordinator_error(req.group_id)
            if req.group_id
            else ErrorCode.invalid_group_id.value
        )
        group = self.groups.get(req.group_id)
        if error == NONE and group is None:
            error = ErrorCode.unknown_member_id.value
        if error != NONE:
            fx.answer(token, SyncGroupResponse(error))
            return self._finish(fx)
        assert group is not None
        group.sync(req, token, now_ms, fx)
        return self._finish(fx)

    def heartbeat(self, req: HeartbeatRequest, now_ms: int, token: Any) -> CoordinatorResult:
        self._dirty.add(req.group_id)
        error = (
            self._coordinator_error(req.group_id)
            if req.group_id
            else ErrorCode.invalid_group_id.value
        )
        group = self.groups.get(req.group_id)
        if error == NONE:
            error = (
                ErrorCode.unknown_member_id.value if group is None else group.heartbeat(req, now_ms)
            )
        return CoordinatorResult([(token, HeartbeatResponse(error))])

    def leave_group(self, req: LeaveGroupRequest, now_ms: int, token: Any) -> CoordinatorResult:
        self._dirty.add(req.group_id)
        fx = Effects()
        error = (
            self._coordinator_error(req.group_id)
            if req.group_id
            else ErrorCode.invalid_group_id.value
        )
        group = self.groups.get(req.group_id)
        if error != NONE:
            response = LeaveGroupResponse(error)
        elif group is None:
            response = LeaveGroupResponse(
                NONE,
                tuple(
                    LeaveMemberResponse(
                        m.member_id, m.group_instance_id, ErrorCode.unknown_member_id.value
                    )
                    for m in req.members
                ),
            )
        else:
            response = LeaveGroupResponse(NONE, group.leave(req, now_ms, fx))
        result = self._finish(fx)
        result.responses.insert(0, (token, response))
        return result

    # --- OffsetCommit, OffsetFetch, OffsetDelete -------------------------------------------

    def _group_for_commit(
        self, group_id: str, generation_id: int, error: int, now_ms: int, validate: Any
    ) -> tuple[ClassicGroup | None, bool, int]:
        """(group, created, error) for a plain or transactional offset commit: an unknown group
        is created as a "simple" group for generation < 0 (a committer without membership) and
        is ILLEGAL_GENERATION otherwise; a known one is checked by `validate(group)`."""
        group = self.groups.get(group_id)
        if error != NONE:
            return group, False, error
        if group is not None:
            return group, False, validate(group)
        if generation_id >= 0:
            return None, False, ErrorCode.illegal_generation.value
        group = self.groups[group_id] = ClassicGroup(group_id, self.config, now_ms)
        return group, True, NONE

    def _split_commit(
        self, topics: dict, error: int, committed: Any
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, CommittedOffset]]:
        """Per partition of a commit: its error, and the offsets to write (`committed(p, metadata)`)
        for those without one (the request's error, or metadata over offset.metadata.max.bytes)."""
        errors: dict[TopicPartition, int] = {}
        pending: dict[TopicPartition, CommittedOffset] = {}
        for topic, partitions in topics.items():
            for p in partitions:
                tp = (topic, p.partition)
                metadata = p.metadata or ""
                if error != NONE:
                    errors[tp] = error
                elif len(metadata.encode("utf-8")) > self.config.offset_metadata_max_bytes:
                    errors[tp] = ErrorCode.offset_metadata_too_large.value
                else:
                    pending[tp] = committed(p, metadata)
                    errors[tp] = NONE
        return errors, pending

    def offset_commit(self, req: OffsetCommitRequest, now_ms: int, token: Any) -> CoordinatorResult:
        self._dirty.add(req.group_id)
        error = self._coordinator_error(req.group_id)
        group, created, error = self._group_for_commit(
            req.group_id, req.generation_id, error, now_ms,
            lambda g: g.validate_offset_commit(
                req.generation_id, req.member_id, req.group_instance_id, now_ms
            ),
        )
        def committed(p: Any, metadata: str) -> CommittedOffset:
            commit_ts = p.commit_timestamp_ms if p.commit_timestamp_ms >= 0 else now_ms
            expire_ts = commit_ts + req.retention_time_ms if req.retention_time_ms >= 0 else -1
            return CommittedOffset(p.offset, p.leader_epoch, metadata, commit_ts, expire_ts)

        errors, pending = self._split_commit(req.topics, error, committed)

        def build(append_errors: dict[int, int]) -> OffsetCommitResponse:
            return OffsetCommitResponse(_commit_answers(req.topics, pending, errors, append_errors))

        if not pending:
            if created and group is not None:
                self._remove_if_unused(group)
            return CoordinatorResult([(token, build({}))])
        records = [offset_record(req.group_id, tp, c) for tp, c in pending.items()]
        self.offsets.add_pending(req.group_id, pending)
        append = self._append(
            self.partition_for(req.group_id), records, "offsets", (group, pending, dict(pending))
        )
        self._waiters[append.append_id] = _Waiter(token, 1, build)
        return CoordinatorResult([], [append])

    def txn_offset_commit(
        self, req: TxnOffsetCommitRequest, now_ms: int, token: Any
    ) -> CoordinatorResult:
        """TxnOffsetCommit v0-5: write the offsets as a transactional batch of the producer and
        keep them pending for it until `complete_transaction`. Answered once the append
        completes. Errors, for every partition: INVALID_GROUP_ID, NOT_COORDINATOR,
        COORDINATOR_LOAD_IN_PROGRESS (COORDINATOR_NOT_AVAILABLE to v0-1), ILLEGAL_GENERATION,
        UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, COORDINATOR_NOT_AVAILABLE (Dead group),
        INVALID_PRODUCER_ID_MAPPING (no producer id: ours, Kafka would write a plain commit),
        the append's error mapped as for OffsetCommit; per partition OFFSET_METADATA_TOO_LARGE."""
        self._dirty.add(req.group_id)
        error = (
            self._coordinator_error(req.group_id)
            if req.group_id
            else ErrorCode.invalid_group_id.value
        )
        if error == ErrorCode.coordinator_load_in_progress.value and req.api_version < 2:
            error = ErrorCode.coordinator_not_available.value
        if error == NONE and req.producer_id < 0:
            error = ErrorCode.invalid_producer_id_mapping.value
        group, created, error = self._group_for_commit(
            req.group_id, req.generation_id, error, now_ms,
            lambda g: self._validate_txn_offset_commit(g, req),
        )
        errors, pending = self._split_commit(
            req.topics, error,
            lambda p, metadata: CommittedOffset(p.offset, p.leader_epoch, metadata, now_ms),
        )

        def build(append_errors: dict[int, int]) -> TxnOffsetCommitResponse:
            return TxnOffsetCommitResponse(_commit_answers(req.topics, pending, errors, append_errors))

        if not pending:
            if created and group is not None:
                self._remove_if_unused(group)
            return CoordinatorResult([(token, build({}))])
        assert group is not None
        entries = self.offsets.prepare_txn(req.producer_id, req.group_id, pending)
        append = self._append(
            self.partition_for(req.group_id),
            [offset_record(req.group_id, tp, c) for tp, c in pending.items()],
            "txn_offsets",
            (group, req.producer_id, entries),
            req.producer_id,
            req.producer_epoch,
        )
        self._waiters[append.append_id] = _Waiter(token, 1, build)
        return CoordinatorResult([], [append])

    @staticmethod
    def _validate_txn_offset_commit(group: ClassicGroup, req: TxnOffsetCommitRequest) -> int:
        """Kafka's ClassicGroup.validateOffsetCommit for a transactional commit: a commit
        without generation, member id and instance id (v0-2, or a producer not in the group) is
        accepted in any state; otherwise the member and generation must be current. Unlike a
        plain commit, no REBALANCE_IN_PROGRESS and no session refresh."""
        if group.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available.value
        if req.generation_id < 0 and group.state is GroupState.EMPTY:
            return NONE
        if req.generation_id >= 0 or req.member_id or req.group_instance_id is not None:
            error = group.validate_member(req.member_id, req.group_instance_id)
            if error != NONE:
                return error
            if req.generation_id != group.generation_id:
                return ErrorCode.illegal_generation.value
        return NONE

    def complete_transaction(
        self,
        producer_id: int,
        commit: bool,
        now_ms: int,
        partitions: Iterable[int] | None = None,
    ) -> list[str]:
        """The producer's COMMIT (`commit`) or ABORT marker has been written to these
        `__consumer_offsets` partitions (None: every partition this coordinator owns): Kafka's
        handleTxnCompletion. On commit the producer's pending offsets of their groups become
        committed (unless a plain commit of the same partition was appended later); on abort
        they are dropped. Partitions not owned (or loading: the loader replays the marker) are
        left alone. Returns the groups whose pending offsets completed."""
        scope = self.owned if partitions is None else set(partitions) & self.owned
        groups = self.offsets.complete_txn(
            producer_id, commit, lambda g: self.partition_for(g) in scope
        )
        self._dirty.update(groups)
        return groups

    def offset_fetch(
        self, groups: Iterable[OffsetFetchGroup], now_ms: int = 0, require_stable: bool = False
    ) -> list[OffsetFetchGroupResponse]:
        """OffsetFetch: the committed offsets. Pending transactional offsets are never returned;
        with `require_stable` (v7+) a partition that has some answers UNSTABLE_OFFSET_COMMIT
        (offset -1), as Kafka's fetchOffsets."""
        results = []
        for g in groups:
            error = self._coordinator_error(g.group_id)
            if error != NONE:
                results.append(OffsetFetchGroupResponse(g.group_id, error))
                continue
            wanted: dict[str, list[int]] = {}
            if g.topics is None:
                for topic, partition in self.offsets.partitions(g.group_id):
                    wanted.setdefault(topic, []).append(partition)
            else:
                wanted = {t: list(ps) for t, ps in g.topics.items()}
            topics = {}
            for topic, partitions in wanted.items():
                fetched = []
                for partition in partitions:
                    c = self.offsets.get(g.group_id, (topic, partition))
                    if require_stable and self.offsets.has_pending_txn(
                        g.group_id, (topic, partition)
                    ):
                        fetched.append(
                            FetchedOffset(
                                partition, -1, error_code=ErrorCode.unstable_offset_commit.value
                            )
                        )
                    elif c is None:
                        fetched.append(FetchedOffset(partition, -1))
                    else:
                        fetched.append(
                            FetchedOffset(partition, c.offset, c.leader_epoch, c.metadata)
                        )
                topics[topic] = tuple(fetched)
            results.append(OffsetFetchGroupResponse(g.group_id, NONE, topics))
        return results

    def offset_delete(self, req: OffsetDeleteRequest, now_ms: int, token: Any) -> CoordinatorResult:
        error = self._coordinator_error(req.group_id)
        group = self.groups.get(req.group_id)
        if error == NONE and (group is None or group.state is GroupState.DEAD):
            error = ErrorCode.group_id_not_found.value
        if (
            error == NONE
            and group is not None
            and group.state is not GroupState.EMPTY
            and group.protocol_type != "consumer"
        ):
            error = ErrorCode.non_empty_group.value
        if error != NONE:
            return CoordinatorResult([(token, OffsetDeleteResponse(error))])
        assert group is not None
        per_partition: dict[TopicPartition, int] = {}
        deletable = []
        for topic, partitions in req.topics.items():
            for partition in partitions:
                if group.state is not GroupState.EMPTY and group.is_subscribed_to_topic(topic):
                    per_partition[(topic, partition)] = ErrorCode.group_subscribed_to_topic.value
                else:
                    per_partition[(topic, partition)] = NONE
                    deletable.append((topic, partition))
        removed = self.offsets.remove(req.group_id, deletable)
        # A commit still in flight for a deleted partition must not resurrect it (as Kafka).
        for kind, payload in self._in_flight.values():
            if kind == "offsets" and payload[0] is group:
                for tp in deletable:
                    if payload[2].pop(tp, None) is not None and tp not in removed:
                        removed.append(tp)

        def build(append_errors: dict[int, int]) -> OffsetDeleteResponse:
            failure = next((e for e in append_errors.values() if e != NONE), NONE)
            if failure != NONE:
                return OffsetDeleteResponse(_commit_error(failure))
            return OffsetDeleteResponse(
                NONE,
                {
                    topic: tuple((p, per_partition[(topic, p)]) for p in partitions)
                    for topic, partitions in req.topics.items()
                },
            )

        if not removed:
            return CoordinatorResult([(token, build({}))])
        append = self._append(
            self.partition_for(req.group_id),
            [offset_record(req.group_id, tp, None) for tp in removed],
            "tombstones",
            None,
        )
        self._waiters[append.append_id] = _Waiter(token, 1, build)
        return CoordinatorResult([], [append])

    # --- DescribeGroups, ListGroups, DeleteGroups ------------------------------------------

    def describe_groups(self, group_ids: Iterable[str]) -> list[DescribedGroup]:
        results = []
        for group_id in group_ids:
            error = self._coordinator_error(group_id)
            group = self.groups.get(group_id)
            if error != NONE:
                results.append(DescribedGroup(group_id, error, ""))
            elif group is None:
                results.append(
                    DescribedGroup(
                        group_id, ErrorCode.group_id_not_found.value, GroupState.DEAD.value
                    )
                )
            else:
                results.append(group.describe())
        return results

    def list_groups(self, states_filter: Iterable[str] = ()) -> list[ListedGroup]:
        wanted = {s.lower() for s in states_filter}
        results = []
        for group_id, group in sorted(self.groups.items()):
            if self.partition_for(group_id) not in self.owned or group.state is GroupState.DEAD:
                continue
            if wanted and group.state.value.lower() not in wanted:
                continue
            results.append(ListedGroup(group_id, group.protocol_type or "", group.state.value))
        return results

    def delete_groups(self, group_ids: Iterable[str], now_ms: int, token: Any) -> CoordinatorResult:
        group_ids = list(group_ids)
        errors: dict[str, int] = {}
        records_by_partition: dict[int, list[Record]] = {}
        groups_by_partition: dict[int, list[str]] = {}
        fx = Effects()
        for group_id in group_ids:
            error = self._coordinator_error(group_id)
            group = self.groups.get(group_id)
            if error == NONE and (group is None or group.state is GroupState.DEAD):
                error = ErrorCode.group_id_not_found.value
            elif error == NONE and group is not None and group.state is not GroupState.EMPTY:
                error = ErrorCode.non_empty_group.value
            errors[group_id] = error
            if error != NONE or group is None:
                continue
            p = self.partition_for(group_id)
            records_by_partition.setdefault(p, []).extend(
                self._delete_group_records(group, now_ms, fx)
            )
            groups_by_partition.setdefault(p, []).append(group_id)
        appends = [
            self._append(p, recs, "tombstones", None) for p, recs in records_by_partition.items()
        ]
        group_of_append = {a.append_id: groups_by_partition[a.partition] for a in appends}

        def build(append_errors: dict[int, int]) -> DeleteGroupsResponse:
            final = dict(errors)
            for append_id, e in append_errors.items():
                if e != NONE:
                    for group_id in group_of_append[append_id]:
                        final[group_id] = _commit_error(e)
            return DeleteGroupsResponse(tuple((g, final[g]) for g in group_ids))

        result = self._finish(fx)
        if not appends:
            result.responses.append((token, build({})))
            return result
        waiter = _Waiter(token, len(appends), build)
        for a in appends:
            self._waiters[a.append_id] = waiter
        result.appends.extend(appends)
        return result

    def _delete_group_records(self, group: ClassicGroup, now_ms: int, fx: Effects) -> list[Record]:
        """Remove an Empty group and its offsets now; return the tombstones to write."""
        group.delete(now_ms, fx)
        records = [
            offset_record(group.group_id, tp, None)
            for tp in self.offsets.remove_group(group.group_id)
        ]
        records.append((encode_group_metadata_key(group.group_id), None))
        del self.groups[group.group_id]
        return records

    # --- appends completing ----------------------------------------------------------------

    def on_append_complete(self, append_id: int, error_code: int, now_ms: int) -> CoordinatorResult:
        kind, payload = self._in_flight.pop(append_id)
        fx = Effects()
        if kind == "offsets":
            group, pending, to_apply = payload
            self.offsets.complete_pending(group.group_id, pending)
            # Applied only if the group is still the one committed to: not deleted, expired,
            # or unloaded meanwhile (their tombstones follow this record in the log).
            if error_code == NONE and self.groups.get(group.group_id) is group:
                order = self.offsets.next_append_order()
                for tp, committed in to_apply.items():
                    self.offsets.apply(group.group_id, tp, committed, order)
        elif kind == "txn_offsets":
            group, producer_id, entries = payload
            if self.groups.get(group.group_id) is group:
                order = self.offsets.next_append_order() if error_code == NONE else None
                self.offsets.on_txn_append(producer_id, group.group_id, entries, order)
        elif kind == "group":
            self._on_group_store_complete(payload, error_code, now_ms, fx)
        result = self._finish(fx)
        waiter = self._waiters.pop(append_id, None)
        if waiter is not None:
            waiter.errors[append_id] = error_code
            waiter.remaining -= 1
            if waiter.remaining == 0:
                result.responses.append((waiter.token, waiter.build(waiter.errors)))
        return result

    def _on_group_store_complete(
        self, store: GroupStore, error_code: int, now_ms: int, fx: Effects
    ) -> None:
        self._dirty.add(store.group_id)
        group = self.groups.get(store.group_id)
        error = _group_store_error(error_code) if error_code != NONE else NONE
        if store.kind == "assignment":
            if group is not None:
                group.on_assignment_stored(store, error, now_ms, fx)
        elif store.kind == "static_rejoin":
            if group is None:
                fx.answer(
                    store.token,
                    JoinGroupResponse(
                        ErrorCode.not_coordinator.value, member_id=store.response.member_id
                    ),
                )
            elif error != NONE:
                group.revert_static_rejoin(store, error, now_ms, fx)
            else:
                fx.answer(store.token, store.response)

    # --- timers ----------------------------------------------------------------------------

    def _flush_dirty(self) -> None:
        for group_id in sorted(self._dirty):
            group = self.groups.get(group_id)
            deadline = group.next_deadline_ms() if group is not None else None
            if deadline is None:
                self._scheduled.pop(group_id, None)
            elif self._scheduled.get(group_id) != deadline:
                self._scheduled[group_id] = deadline
                heapq.heappush(self._timer_heap, (deadline, group_id))
        self._dirty.clear()
        if len(self._timer_heap) > 4 * len(self._scheduled) + 64:  # drop stale entries
            self._timer_heap = [(d, g) for g, d in self._scheduled.items()]
            heapq.heapify(self._timer_heap)

    def _entry_is_live(self, deadline_ms: int, group_id: str) -> bool:
        if group_id not in self.groups:
            self._scheduled.pop(group_id, None)
            return False
        return self._scheduled.get(group_id) == deadline_ms

    def next_deadline_ms(self) -> int | None:
        """The earliest time `tick` has something to do (None: nothing is scheduled)."""
        self._flush_dirty()
        while self._timer_heap and not self._entry_is_live(*self._timer_heap[0]):
            heapq.heappop(self._timer_heap)
        deadlines = [self._timer_heap[0][0]] if self._timer_heap else []
        if self._next_expiry_check_ms is not None:
            deadlines.append(self._next_expiry_check_ms)
        return min(deadlines, default=None)

    def tick(self, now_ms: int) -> CoordinatorResult:
        """Fire every timer due at `now_ms`: sessions, joins, syncs, then offsets expiry."""
        self._flush_dirty()
        due: list[str] = []
        while self._timer_heap and self._timer_heap[0][0] <= now_ms:
            deadline_ms, group_id = heapq.heappop(self._timer_heap)
            if self._entry_is_live(deadline_ms, group_id):
                del self._scheduled[group_id]
                due.append(group_id)
        fx = Effects()
        for group_id in due:
            group = self.groups.get(group_id)
            self._dirty.add(group_id)
            if group is not None and self._coordinator_error(group_id) == NONE:
                group.tick(now_ms, fx)
        self._flush_dirty()
        result = self._finish(fx)
        if self._next_expiry_check_ms is None:
            self._next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
        elif now_ms >= self._next_expiry_check_ms:
            self._next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
            result.appends.extend(self.expire_offsets(now_ms))
        return result

    def expire_offsets(self, now_ms: int) -> list[PendingAppend]:
        """Kafka's cleanupGroupMetadata: expire offsets, then drop Empty groups left without any."""
        retention_ms = self.config.offsets_retention_ms
        records_by_partition: dict[int, list[Record]] = {}
        fx = Effects()
        for group_id in sorted(self.groups):
            group = self.groups[group_id]
            if self._coordinator_error(group_id) != NONE:
                continue
            if group.protocol_type is not None and group.state is GroupState.EMPTY:
                state_ts = group.state_timestamp_ms
                expired = self.offsets.expired(
                    group_id,
                    now_ms,
                    retention_ms,
                    lambda c, ts=state_ts: ts if ts >= 0 else c.commit_timestamp_ms,
                )
            elif (
                group.protocol_type == "consumer"
                and group.subscribed_topics is not None
                and group.state is GroupState.STABLE
            ):
                expired = self.offsets.expired(
                    group_id,
                    now_ms,
                    retention_ms,
                    lambda c: c.commit_timestamp_ms,
                    group.subscribed_topics,
                )
            elif group.protocol_type is None:
                expired = self.offsets.expired(
                    group_id, now_ms, retention_ms, lambda c: c.commit_timestamp_ms
                )
            else:
                expired = []
            records = [
                offset_record(group_id, tp, None) for tp in self.offsets.remove(group_id, expired)
            ]
            if (
                group.state is GroupState.EMPTY
                and not group.members
                and not group.pending_members
                and not self.offsets.has_offsets(group_id)
                and not self.offsets.has_pending(group_id)
            ):
                records.extend(self._delete_group_records(group, now_ms, fx))
            if records:
                records_by_partition.setdefault(self.partition_for(group_id), []).extend(records)
        return [
            self._append(p, recs, "tombstones", None)
            for p, recs in sorted(records_by_partition.items())
        ]

    # --- loading and unloading ----------------------------------------------------------------

    def begin_loading(self, partition: int) -> None:
        self._drop_partition(partition)
        self.owned.discard(partition)
        self.loading.add(partition)

    def replay(
        self,
        key_bytes: bytes,
        value_bytes: bytes | None,
        now_ms: int = 0,
        *,
        producer_id: int = NO_PRODUCER_ID,
        transactional: bool = False,
    ) -> None:
        """Apply one `__consumer_offsets` record (in log order) while its partition loads.

        `producer_id` and `transactional` are those of the record's batch: an offset commit in a
        transactional batch stays pending for its producer until `replay_marker`. A tombstone,
        transactional or not, drops the committed offset and every pending one (as Kafka)."""
        key = decode_key(key_bytes)
        if isinstance(key, OffsetCommitKey):
            tp = (key.topic, key.partition)
            committed = (
                None
                if value_bytes is None
                else CommittedOffset.from_value(decode_offset_commit_value(value_bytes))
            )
            if committed is not None:
                self._replayed_offset_groups.add(key.group)
            if committed is not None and transactional and producer_id != NO_PRODUCER_ID:
                self.offsets.replay_txn(producer_id, key.group, tp, committed)
            else:
                self.offsets.apply(key.group, tp, committed)
        else:
            assert isinstance(key, GroupMetadataKey)
            if value_bytes is None:
                self.groups.pop(key.group, None)
                self._replayed_offset_groups.discard(key.group)
            else:
                value = decode_group_metadata_value(value_bytes)
                self.groups[key.group] = ClassicGroup.from_record_value(
                    key.group, value, self.config, now_ms
                )

    def replay_marker(self, producer_id: int, commit: bool, partition: int | None = None) -> None:
        """Apply a COMMIT (`commit`) or ABORT control record of `producer_id` read from the log
        of `partition` (None: every partition loading) while it loads."""
        scope = self.loading if partition is None else {partition}
        self.offsets.complete_txn(producer_id, commit, lambda g: self.partition_for(g) in scope)

    def finish_loading(self, partition: int, now_ms: int) -> None:
        """The partition is loaded: groups known only by their offsets (committed or pending
        in a transaction) become Empty groups, and members of loaded groups must heartbeat
        within their session timeout."""
        named = self.offsets.groups_with_offsets() | self._replayed_offset_groups
        for group_id in sorted(named):
            if group_id not in self.groups and self.partition_for(group_id) == partition:
                self.groups[group_id] = ClassicGroup(group_id, self.config, now_ms)
        self._replayed_offset_groups = {
            g for g in self._replayed_offset_groups if self.partition_for(g) != partition
        }
        fx = Effects()
        for group_id, group in list(self.groups.items()):
            if self.partition_for(group_id) == partition:
                self._dirty.add(group_id)
                for member in group.members.values():
                    member.session_deadline_ms = now_ms + member.session_timeout_ms
                if len(group.members) > self.config.group_max_size:
                    # group.max.size was lowered: rebalance so the excess members are refused
                    group.rebalance(now_ms, fx)
        assert not fx.responses and not fx.stores
        self.loading.discard(partition)
        self.owned.add(partition)
        if self._next_expiry_check_ms is None:
            self._next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms

    def unload(self, partition: int, now_ms: int) -> CoordinatorResult:
        fx = Effects()
        for group_id in sorted(self.groups):
            if self.partition_for(group_id) == partition:
                self.groups[group_id].unload(now_ms, fx)
        self._drop_partition(partition)
        self.owned.discard(partition)
        self.loading.discard(partition)
        return self._finish(fx)

    def _drop_partition(self, partition: int) -> None:
        self._replayed_offset_groups = {
            g for g in self._replayed_offset_groups if self.partition_for(g) != partition
        }
        for group_id in [g for g in self.groups if self.partition_for(g) == partition]:
            del self.groups[group_id]
        for group_id in [
            g for g in self.offsets.groups_with_offsets() if self.partition_for(g) == partition
        ]:
            self.offsets.remove_group(group_id)
