"""The leader's replication state for one partition: replica fetch states, ISR, high watermark.

A deterministic core in the sense of DESIGN.md: it takes `now_ms` and inputs (local appends,
follower fetches, AlterPartition answers, metadata changes, ticks) and returns outputs
(completed acks=all appends, an AlterPartition request for the controller); it never touches a
log, a socket or a clock. The broker wiring owns the log and does what the outputs say.

Kafka's rules (Partition.scala: maybeExpandIsr, maybeShrinkIsr, maybeIncrementLeaderHW,
checkEnoughReplicasReachOffset; KIP-497 AlterPartition):
- A follower's log end offset is the offset of its last valid Fetch. A fetch whose
  last_fetched_epoch disagrees with the leader's epoch cache gets a diverging epoch
  (epoch, end offset) instead, and does not move the follower's state.
- A follower is caught up at time t if its fetch at t reached the leader's log end offset, or
  reached the log end offset the leader had at its previous fetch (then it was caught up at
  that previous fetch). An ISR member not caught up for `replica.lag.time.max.ms` (and not at
  the leader's log end offset) is proposed for removal.
- A follower outside the ISR whose log end offset is at least the high watermark and at least
  the start offset of the current leader epoch is proposed for addition.
- Proposals go to the controller as AlterPartitionRequest with the partition epoch they start
  from; the ISR changes only when the controller's answer (or a newer PartitionImage) arrives.
  While a proposal is in flight the high watermark is computed over the *maximal* ISR (committed
  ISR plus a pending addition; a pending removal still counts the removed member), so the high
  watermark never advances on an ISR that the controller has not committed. One proposal at a
  time; a lost answer is re-sent with the same partition epoch (the controller's CAS makes a
  repeat harmless); INELIGIBLE_REPLICA / OPERATION_NOT_ATTEMPTED (nothing applied, epoch right)
  return to the committed ISR at once; any other non-retriable answer leaves the proposal
  pending until a newer partition state arrives through metadata.
- The high watermark is the smallest log end offset over the leader and the maximal ISR; it only
  moves forward. A follower whose log end offset is unknown (no fetch in this leader epoch yet)
  holds it back.
- acks=all: refused with NOT_ENOUGH_REPLICAS before the append when the committed ISR is smaller
  than `min.insync.replicas`; answered when the high watermark passes the append, with
  NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile, or
  REQUEST_TIMED_OUT at its deadline; NOT_LEADER_OR_FOLLOWER when leadership ends.

Not modelled here: the log start offset (DeleteRecords, retention), KIP-841's "wait for a
caught-up replica to join before advancing", fetch sessions, throttling, leader-side
OffsetForLeaderEpoch answers (see `answer_offset_for_leader_epoch` in follower.py).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from odradek.metadata.election import AlterPartitionRequest, AlterPartitionResult
from odradek.metadata.image import PartitionImage
from odradek.protocol.errors import ErrorCode

UNKNOWN_OFFSET = -1
DEFAULT_REPLICA_LAG_TIME_MAX_MS = 30_000  # replica.lag.time.max.ms
ALTER_PARTITION_RETRY_MS = 500  # re-send an unanswered AlterPartition after this long
MAX_PENDING_APPENDS = 100_000  # acks=all appends waiting per partition; the connection layer
# bounds in-flight requests per connection, this catches a leak (asserted, not an error code)

# AlterPartition answers that mean "your view is stale": not re-sent; the proposal stays pending
# until metadata brings a newer partition state (Kafka's handleAlterPartitionError). Any other
# error (NOT_CONTROLLER, REQUEST_TIMED_OUT, ...) is re-sent after alter_partition_retry_ms.
AWAIT_METADATA_ALTER_ERRORS = frozenset({
    ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_id, ErrorCode.fenced_leader_epoch,
    ErrorCode.invalid_update_version, ErrorCode.invalid_request, ErrorCode.new_leader_elected})
# Answers that say "your partition epoch is right and nothing was applied": back to the committed
# ISR at once, so a later fetch may propose again (Kafka's handleAlterPartitionError; e.g. a
# follower that was in controlled shutdown and has come back).
REVERT_ALTER_ERRORS = frozenset({ErrorCode.ineligible_replica, ErrorCode.operation_not_attempted})

EndOffsetForEpoch = Callable[[int, int], tuple[int, int]]
"""(requested epoch, log end offset) -> (largest epoch <= requested, its end offset), or
(-1, -1): LeaderEpochFileCache.end_offset_for_epoch of the leader's log."""


class IsrState(enum.Enum):
    COMMITTED = "committed"  # no proposal in flight: maximal ISR == ISR
    PENDING_EXPAND = "pending_expand"  # maximal ISR = ISR + the proposed member
    PENDING_SHRINK = "pending_shrink"  # maximal ISR = ISR (the removed members still count)


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one follower (Kafka's ReplicaState)."""

    broker_id: int
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_time_ms: int = 0
    last_fetch_time_ms: int = 0
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET


@dataclass(frozen=True, slots=True)
class AppendCompletion:
    """An acks=all append is answered: `error` NONE means replicated to the ISR."""

    request_id: object
    error: ErrorCode


@dataclass(slots=True)
class LeaderOutputs:
    """What the wiring must do after a call: answer these appends, send this AlterPartition."""

    completions: list[AppendCompletion] = field(default_factory=list)
    alter_partition: AlterPartitionRequest | None = None
    high_watermark_changed: bool = False

    def extend(self, other: LeaderOutputs) -> LeaderOutputs:
        self.completions.extend(other.completions)
        self.alter_partition = other.alter_partition or self.alter_partition
        self.high_watermark_changed |= other.high_watermark_changed
        return self


@dataclass(frozen=True, slots=True)
class FollowerFetchResult:
    """The leader's answer to a follower's fetch, apart from the records themselves.

    error            NONE, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER,
                     OFFSET_OUT_OF_RANGE
    diverging_epoch  (epoch, end offset) when the follower's log diverges: it must truncate and
                     no records are sent; None otherwise
    high_watermark   the leader's high watermark after this fetch
    """

    error: ErrorCode
    high_watermark: int
    diverging_epoch: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class _PendingAppend:
    request_id: object
    required_offset: int  # the high watermark that answers it (the append's last offset + 1)
    deadline_ms: int


class PartitionLeader:
    """The leader side of one partition for one leader epoch.

    Holds: the committed partition state (ISR, leader epoch, partition epoch) as last learned
    from the controller, each follower's ReplicaState, the high watermark, the log end offset,
    the start offset of this leader epoch, acks=all appends waiting for the high watermark, and
    at most one AlterPartition proposal in flight (IsrState).

    Invariants: broker_id leads `leader_epoch`; high_watermark <= log_end_offset and never
    decreases; ISR contains the leader; maximal ISR ⊇ ISR; pending appends are answered exactly
    once. A new leader epoch means a new PartitionLeader (the old one `resign`s).
    Owned by the broker's replica manager for this partition, called on the event loop.
    """

    def __init__(self, *, broker_id: int, topic_id: uuid.UUID, partition: PartitionImage,
                 log_end_offset: int, high_watermark: int, min_insync_replicas: int,
                 end_offset_for_epoch: EndOffsetForEpoch, now_ms: int,
                 replica_lag_time_max_ms: int = DEFAULT_REPLICA_LAG_TIME_MAX_MS,
                 alter_partition_retry_ms: int = ALTER_PARTITION_RETRY_MS) -> None:
        assert partition.leader == broker_id, f"broker {broker_id} does not lead {partition}"
        assert broker_id in partition.isr, f"leader {broker_id} not in ISR {partition.isr}"
        assert 0 <= high_watermark <= log_end_offset
        self.broker_id = broker_id
        self.topic_id = topic_id
        self.partition = partition
        self.log_end_offset = log_end_offset
        self.high_watermark = high_watermark
        self.leader_epoch_start_offset = log_end_offset
        self.min_insync_replicas = min_insync_replicas
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self.alter_partition_retry_ms = alter_partition_retry_ms
        self._end_offset_for_epoch = end_offset_for_epoch
        self.replicas: dict[int, ReplicaState] = {
            b: ReplicaState(b, last_caught_up_time_ms=now_ms if b in partition.isr else 0)
            for b in partition.replicas if b != broker_id}
        self.isr_state = IsrState.COMMITTED
        self.pending_alter: AlterPartitionRequest | None = None
        self._alter_sent_ms = 0
        self._alter_awaits_metadata = False
        self._pending: list[_PendingAppend] = []
        self.resigned = False

    # -- views -------------------------------------------------------------------------------
    @property
    def leader_epoch(self) -> int:
        return self.partition.leader_epoch

    @property
    def isr(self) -> tuple[int, ...]:
        return self.partition.isr

    @property
    def maximal_isr(self) -> frozenset[int]:
        isr = set(self.partition.isr)
        if self.isr_state is IsrState.PENDING_EXPAND:
            assert self.pending_alter is not None
            isr |= set(self.pending_alter.new_isr)
        return frozenset(isr)

    @property
    def pending_append_count(self) -> int:
        return len(self._pending)

    # -- produce -----------------------------------------------------------------------------
    def check_append(self, required_acks: int) -> ErrorCode:
        """Before appending: NOT_ENOUGH_REPLICAS for acks=all under min.insync.replicas."""
        assert not self.resigned
        if required_acks == -1 and len(self.partition.isr) < self.min_insync_replicas:
            return ErrorCode.not_enough_replicas
        return ErrorCode.none

    def on_local_append(self, log_end_offset: int, now_ms: int, *, request_id: object = None,
                        timeout_ms: int = 30_000) -> LeaderOutputs:
        """The leader appended up to `log_end_offset`; with a request_id, an acks=all append
        whose answer waits for the high watermark to reach `log_end_offset`."""
        assert not self.resigned
        assert log_end_offset >= self.log_end_offset, "the leader's log never shrinks"
        self.log_end_offset = log_end_offset
        if request_id is not None:
            assert len(self._pending) < MAX_PENDING_APPENDS, "acks=all appends leak"
            self._pending.append(_PendingAppend(request_id, log_end_offset, now_ms + timeout_ms))
        return self._maybe_increment_high_watermark()

    # -- replication ---------------------------------------------------------------------------
    def on_follower_fetch(self, replica_id: int, fetch_offset: int, last_fetched_epoch: int,
                          current_leader_epoch: int, now_ms: int
                          ) -> tuple[FollowerFetchResult, LeaderOutputs]:
        """A follower fetches from `fetch_offset` (its log end offset); `last_fetched_epoch` is
        the epoch of its last record (-1 for an empty log). Validates, updates its state,
        maybe proposes an ISR expansion, maybe advances the high watermark."""
        assert not self.resigned
        out = LeaderOutputs()
        replica = self.replicas.get(replica_id)
        if replica is None:
            return FollowerFetchResult(ErrorCode.not_leader_or_follower, self.high_watermark), out
        if current_leader_epoch < self.leader_epoch:
            return FollowerFetchResult(ErrorCode.fenced_leader_epoch, self.high_watermark), out
        if current_leader_epoch > self.leader_epoch:
            return FollowerFetchResult(ErrorCode.unknown_leader_epoch, self.high_watermark), out
        if last_fetched_epoch >= 0 and fetch_offset > 0:
            epoch, end_offset = self._end_offset_for_epoch(last_fetched_epoch, self.log_end_offset)
            if epoch < last_fetched_epoch or end_offset < fetch_offset:
                return FollowerFetchResult(ErrorCode.none, self.high_watermark, (epoch, end_offset)), out
        if fetch_offset > self.log_end_offset:
            return FollowerFetchResult(ErrorCode.offset_out_of_range, self.high_watermark), out
        if fetch_offset >= self.log_end_offset:
            replica.last_caught_up_time_ms = max(replica.last_caught_up_time_ms, now_ms)
        elif fetch_offset >= replica.last_fetch_leader_log_end_offset >= 0:
            replica.last_caught_up_time_ms = max(replica.last_caught_up_time_ms, replica.last_fetch_time_ms)
        replica.log_end_offset = fetch_offset
        replica.last_fetch_leader_log_end_offset = self.log_end_offset
        replica.last_fetch_time_ms = now_ms
        out.extend(self._maybe_expand_isr(replica, now_ms))
        out.extend(self._maybe_increment_high_watermark())
        return FollowerFetchResult(ErrorCode.none, self.high_watermark), out

    def _maybe_expand_isr(self, replica: ReplicaState, now_ms: int) -> LeaderOutputs:
        if self.isr_state is not IsrState.COMMITTED or replica.broker_id in self.partition.isr:
            return LeaderOutputs()
        if replica.log_end_offset < self.high_watermark or replica.log_end_offset < self.leader_epoch_start_offset:
            return LeaderOutputs()
        new_isr = tuple(sorted((*self.partition.isr, replica.broker_id)))
        return self._propose(IsrState.PENDING_EXPAND, new_isr, now_ms)

    def _propose(self, state: IsrState, new_isr: tuple[int, ...], now_ms: int) -> LeaderOutputs:
        self.isr_state = state
        self.pending_alter = AlterPartitionRequest(self.topic_id, self.partition.partition, self.broker_id,
                                                   self.leader_epoch, self.partition.partition_epoch, new_isr)
        self._alter_sent_ms = now_ms
        self._alter_awaits_metadata = False
        return LeaderOutputs(alter_partition=self.pending_alter)

    def tick(self, now_ms: int) -> LeaderOutputs:
        """Time passes: time out acks=all appends, propose ISR shrinks, re-send an unanswered
        AlterPartition."""
        assert not self.resigned
        out = LeaderOutputs()
        expired = [p for p in self._pending if p.deadline_ms <= now_ms]
        if expired:
            self._pending = [p for p in self._pending if p.deadline_ms > now_ms]
            out.completions.extend(AppendCompletion(p.request_id, ErrorCode.request_timed_out) for p in expired)
        if self.isr_state is IsrState.COMMITTED:
            lagging = [b for b in self.partition.isr if b != self.broker_id and self._out_of_sync(b, now_ms)]
            if lagging:
                new_isr = tuple(b for b in self.partition.isr if b not in lagging)
                out.extend(self._propose(IsrState.PENDING_SHRINK, new_isr, now_ms))
        elif (not self._alter_awaits_metadata
              and now_ms - self._alter_sent_ms >= self.alter_partition_retry_ms):
            self._alter_sent_ms = now_ms
            out.alter_partition = self.pending_alter
        return out

    def _out_of_sync(self, broker_id: int, now_ms: int) -> bool:
        replica = self.replicas[broker_id]
        return (replica.log_end_offset != self.log_end_offset
                and now_ms - replica.last_caught_up_time_ms > self.replica_lag_time_max_ms)

    def on_alter_partition_result(self, request: AlterPartitionRequest, result: AlterPartitionResult,
                                  now_ms: int) -> LeaderOutputs:
        """The controller answered `request`. Success adopts the committed ISR; an error of
        AWAIT_METADATA_ALTER_ERRORS leaves the proposal pending until `on_partition_change`; any
        other error is re-sent by `tick` after alter_partition_retry_ms."""
        assert not self.resigned
        if request is not self.pending_alter and request != self.pending_alter:
            return LeaderOutputs()  # an answer to a proposal already settled
        if result.error is ErrorCode.none:
            if result.leader_epoch != self.leader_epoch or result.partition_epoch <= self.partition.partition_epoch:
                return LeaderOutputs()
            return self._adopt(result.isr, result.partition_epoch, now_ms)
        if result.error in REVERT_ALTER_ERRORS:
            self.isr_state = IsrState.COMMITTED
            self.pending_alter = None
            self._alter_awaits_metadata = False
            return LeaderOutputs()
        if result.error in AWAIT_METADATA_ALTER_ERRORS:
            self._alter_awaits_metadata = True
        return LeaderOutputs()

    def on_partition_change(self, partition: PartitionImage, now_ms: int) -> LeaderOutputs:
        """A newer state of this partition arrived through metadata, with this broker still
        leader in this leader epoch: it settles any proposal. Older or equal partition epochs
        are ignored."""
        assert not self.resigned
        assert partition.leader == self.broker_id and partition.leader_epoch == self.leader_epoch, \
            "a leader change needs a new PartitionLeader"
        if partition.partition_epoch <= self.partition.partition_epoch:
            return LeaderOutputs()
        if partition.replicas != self.partition.replicas:
            for b in partition.replicas:
                if b != self.broker_id and b not in self.replicas:
                    self.replicas[b] = ReplicaState(b)
            for b in list(self.replicas):
                if b not in partition.replicas:
                    del self.replicas[b]
        self.partition = partition
        return self._adopt(partition.isr, partition.partition_epoch, now_ms)

    def _adopt(self, isr: tuple[int, ...], partition_epoch: int, now_ms: int) -> LeaderOutputs:
        assert self.broker_id in isr
        self.partition = replace(self.partition, isr=tuple(isr), partition_epoch=partition_epoch)
        self.isr_state = IsrState.COMMITTED
        self.pending_alter = None
        self._alter_awaits_metadata = False
        return self._maybe_increment_high_watermark()

    def _maybe_increment_high_watermark(self) -> LeaderOutputs:
        out = LeaderOutputs()
        new_hw = self.log_end_offset
        for b in self.maximal_isr:
            if b != self.broker_id:
                replica = self.replicas.get(b)
                new_hw = min(new_hw, replica.log_end_offset if replica is not None else UNKNOWN_OFFSET)
        if new_hw > self.high_watermark:
            self.high_watermark = new_hw
            out.high_watermark_changed = True
        if self._pending and self._pending[0].required_offset <= self.high_watermark:
            enough = len(self.maximal_isr) >= self.min_insync_replicas
            error = ErrorCode.none if enough else ErrorCode.not_enough_replicas_after_append
            done = [p for p in self._pending if p.required_offset <= self.high_watermark]
            self._pending = [p for p in self._pending if p.required_offset > self.high_watermark]
            out.completions.extend(AppendCompletion(p.request_id, error) for p in done)
        return out

    def resign(self) -> LeaderOutputs:
        """Leadership ends (new leader epoch or another leader): every waiting append fails."""
        out = LeaderOutputs(completions=[AppendCompletion(p.request_id, ErrorCode.not_leader_or_follower)
                                         for p in self._pending])
        self._pending = []
        self.resigned = True
        return out
