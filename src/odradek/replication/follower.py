"""The follower's replication state for one partition: what to ask the leader next, and where
to truncate when its log diverged from the leader's.

A deterministic core: `poll(now_ms, ...)` says which request to send (OffsetForLeaderEpoch while
truncating, then Fetch), the answers say how far to truncate; the wiring owns the log, appends
fetched batches and sends requests. One request is in flight at a time, matched by a request id;
answers to anything else (late, duplicated, from an older leader) are ignored.

Truncation, as in Kafka since KIP-101/KIP-279 (AbstractFetcherThread):
- after becoming a follower in a new leader epoch, ask OffsetForLeaderEpoch for the follower's
  latest epoch; the leader answers (largest epoch <= asked, its end offset);
- during fetching, every Fetch carries the epoch of the follower's last record; a leader whose
  log differs there answers a diverging epoch (epoch, end offset) instead of records (KIP-595
  style, what Kafka followers do since 2.7);
- either answer gives the truncation offset (`truncation_offset`): if the follower knows the
  leader's epoch, truncate to the smaller of the two end offsets for it and start fetching;
  otherwise truncate to the end of the follower's largest epoch below it and ask again.

State table (phase, event) -> phase; anything missing is a bug:

    TRUNCATING  epoch_answer_complete    -> FETCHING
    TRUNCATING  epoch_answer_incomplete  -> TRUNCATING   (ask again with the new latest epoch)
    TRUNCATING  retriable_error          -> TRUNCATING   (after a backoff)
    FETCHING    fetched                  -> FETCHING
    FETCHING    diverging_complete       -> FETCHING
    FETCHING    diverging_incomplete     -> TRUNCATING
    FETCHING    retriable_error          -> FETCHING     (after a backoff)
    any         fenced                   -> STALE        (our leader epoch is old: wait for metadata)

`become_follower` (a new PartitionFollower) is the only way out of STALE.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from odradek.protocol.errors import ErrorCode

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
REPLICA_FETCH_BACKOFF_MS = 1_000  # replica.fetch.backoff.ms
REPLICA_REQUEST_TIMEOUT_MS = 30_000  # replica.socket.timeout.ms: re-send an unanswered request


def end_offset_for_epoch(entries: Sequence[tuple[int, int]], requested_epoch: int,
                         log_end_offset: int) -> tuple[int, int]:
    """Kafka's OffsetForLeaderEpoch answer over an epoch cache's (epoch, start offset) entries:
    (largest epoch <= requested, the start offset of the next epoch or the log end offset), or
    (-1, -1) when no epoch qualifies. The same rule as LeaderEpochFileCache.end_offset_for_epoch."""
    if requested_epoch == UNDEFINED_EPOCH or not entries:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    epochs = [e for e, _ in entries]
    if requested_epoch >= epochs[-1]:
        if requested_epoch == epochs[-1]:
            return requested_epoch, log_end_offset
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    higher = bisect.bisect_right(epochs, requested_epoch)
    if higher == 0:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    return epochs[higher - 1], entries[higher][1]


def answer_offset_for_leader_epoch(leader_epoch: int, current_leader_epoch: int, requested_epoch: int,
                                   entries: Sequence[tuple[int, int]], log_end_offset: int
                                   ) -> tuple[ErrorCode, int, int]:
    """The leader's OffsetForLeaderEpoch answer: (error, epoch, end offset). A requester with an
    older current epoch is fenced (FENCED_LEADER_EPOCH), a newer one is ahead of us
    (UNKNOWN_LEADER_EPOCH); a requested epoch above ours is answered as Kafka does, with the
    largest epoch we know below it."""
    if current_leader_epoch < leader_epoch:
        return ErrorCode.fenced_leader_epoch, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    if current_leader_epoch > leader_epoch:
        return ErrorCode.unknown_leader_epoch, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    if entries and requested_epoch > entries[-1][0]:
        requested_epoch = entries[-1][0]
    epoch, end = end_offset_for_epoch(entries, requested_epoch, log_end_offset)
    return ErrorCode.none, epoch, end


@dataclass(frozen=True, slots=True)
class OffsetTruncation:
    """Where to truncate: `truncate_to` (never above the log end offset), and whether the logs
    now agree (`complete`) or the follower must ask again about an earlier epoch."""

    truncate_to: int
    complete: bool


def truncation_offset(leader_epoch: int, leader_end_offset: int, entries: Sequence[tuple[int, int]],
                      log_end_offset: int, log_start_offset: int = 0) -> OffsetTruncation:
    """The follower's truncation for the leader's (epoch, end offset) answer, given its own epoch
    cache entries and log end offset (Kafka's getOffsetTruncationState)."""
    if leader_end_offset == UNDEFINED_EPOCH_OFFSET or leader_epoch == UNDEFINED_EPOCH:
        # The leader knows none of our epochs: nothing of ours can be trusted.
        return OffsetTruncation(log_start_offset, True)
    follower_epoch, follower_end = end_offset_for_epoch(entries, leader_epoch, log_end_offset)
    if follower_epoch == UNDEFINED_EPOCH:
        # Every epoch we hold is newer than anything the leader has below the one it named.
        return OffsetTruncation(log_start_offset, True)
    if follower_epoch != leader_epoch:
        return OffsetTruncation(min(follower_end, log_end_offset), False)
    return OffsetTruncation(min(leader_end_offset, follower_end, log_end_offset), True)


class FollowerPhase(enum.Enum):
    TRUNCATING = "truncating"
    FETCHING = "fetching"
    STALE = "stale"


_TRANSITIONS: dict[tuple[FollowerPhase, str], FollowerPhase] = {
    (FollowerPhase.TRUNCATING, "epoch_answer_complete"): FollowerPhase.FETCHING,
    (FollowerPhase.TRUNCATING, "epoch_answer_incomplete"): FollowerPhase.TRUNCATING,
    (FollowerPhase.TRUNCATING, "retriable_error"): FollowerPhase.TRUNCATING,
    (FollowerPhase.TRUNCATING, "fenced"): FollowerPhase.STALE,
    (FollowerPhase.FETCHING, "fetched"): FollowerPhase.FETCHING,
    (FollowerPhase.FETCHING, "diverging_complete"): FollowerPhase.FETCHING,
    (FollowerPhase.FETCHING, "diverging_incomplete"): FollowerPhase.TRUNCATING,
    (FollowerPhase.FETCHING, "retriable_error"): FollowerPhase.FETCHING,
    (FollowerPhase.FETCHING, "fenced"): FollowerPhase.STALE,
}


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochRequest:
    request_id: int
    leader_id: int
    current_leader_epoch: int
    leader_epoch: int  # the follower's latest epoch, whose end offset it asks for


@dataclass(frozen=True, slots=True)
class FetchRequest:
    request_id: int
    leader_id: int
    current_leader_epoch: int
    fetch_offset: int  # the follower's log end offset
    last_fetched_epoch: int  # the epoch of the follower's last record, -1 for an empty log


FollowerRequest = OffsetForLeaderEpochRequest | FetchRequest


class PartitionFollower:
    """The follower side of one partition for one leader epoch.

    Holds: this broker's id, the leader and leader epoch it follows, the phase (table above),
    the request in flight and when it was sent, and the backoff deadline after an error.
    Invariants: at most one request in flight; the leader epoch never changes (a new epoch is a
    new PartitionFollower); requests are numbered increasingly from `first_request_id`.
    Owned by the broker's replica fetcher for this partition, called on the event loop.
    """

    def __init__(self, broker_id: int, leader_id: int, leader_epoch: int, first_request_id: int = 0, *,
                 fetch_backoff_ms: int = REPLICA_FETCH_BACKOFF_MS,
                 request_timeout_ms: int = REPLICA_REQUEST_TIMEOUT_MS) -> None:
        assert broker_id != leader_id
        self.fetch_backoff_ms = fetch_backoff_ms
        self.request_timeout_ms = request_timeout_ms
        self.broker_id = broker_id
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.phase = FollowerPhase.TRUNCATING
        self.in_flight: FollowerRequest | None = None
        self._sent_ms = 0
        self._retry_at_ms = 0
        self._next_request_id = first_request_id

    def _fire(self, event: str, now_ms: int = 0) -> None:
        next_phase = _TRANSITIONS.get((self.phase, event))
        assert next_phase is not None, f"follower: no transition for {self.phase} on {event}"
        self.phase = next_phase
        self.in_flight = None
        if event == "retriable_error":
            self._retry_at_ms = now_ms + self.fetch_backoff_ms

    def poll(self, now_ms: int, log_end_offset: int, entries: Sequence[tuple[int, int]]
             ) -> FollowerRequest | None:
        """The request to send now, or None (one in flight, backing off, or stale). `entries`
        is the follower's epoch cache."""
        if self.phase is FollowerPhase.STALE or now_ms < self._retry_at_ms:
            return None
        if self.in_flight is not None and now_ms - self._sent_ms < self.request_timeout_ms:
            return None
        request_id = self._next_request_id
        self._next_request_id += 1
        latest_epoch = entries[-1][0] if entries else UNDEFINED_EPOCH
        request: FollowerRequest
        if self.phase is FollowerPhase.TRUNCATING:
            request = OffsetForLeaderEpochRequest(request_id, self.leader_id, self.leader_epoch, latest_epoch)
        else:
            request = FetchRequest(request_id, self.leader_id, self.leader_epoch, log_end_offset, latest_epoch)
        self.in_flight = request
        self._sent_ms = now_ms
        return request

    def _error(self, error: ErrorCode, now_ms: int) -> None:
        self._fire("fenced" if error is ErrorCode.fenced_leader_epoch else "retriable_error", now_ms)

    def on_offset_for_leader_epoch(self, request_id: int, error: ErrorCode, epoch: int, end_offset: int,
                                   now_ms: int, entries: Sequence[tuple[int, int]], log_end_offset: int,
                                   log_start_offset: int = 0) -> int | None:
        """The leader answered OffsetForLeaderEpoch: returns the offset to truncate the log to
        (the wiring truncates log and epoch cache), or None when there is nothing to do."""
        if self.in_flight is None or self.in_flight.request_id != request_id \
                or not isinstance(self.in_flight, OffsetForLeaderEpochRequest):
            return None
        if error is not ErrorCode.none:
            self._error(error, now_ms)
            return None
        if not entries:  # an empty log has nothing to truncate
            self._fire("epoch_answer_complete")
            return None
        truncation = truncation_offset(epoch, end_offset, entries, log_end_offset, log_start_offset)
        self._fire("epoch_answer_complete" if truncation.complete else "epoch_answer_incomplete")
        return truncation.truncate_to

    def on_fetch(self, request_id: int, error: ErrorCode, diverging_epoch: tuple[int, int] | None,
                 now_ms: int, entries: Sequence[tuple[int, int]], log_end_offset: int,
                 log_start_offset: int = 0) -> tuple[bool, int | None]:
        """The leader answered a Fetch: (append the records?, offset to truncate to or None).
        When the first is True the wiring appends the response's batches at the fetch offset
        and sets its high watermark to min(leader's high watermark, new log end offset)."""
        request = self.in_flight
        if request is None or request.request_id != request_id or not isinstance(request, FetchRequest):
            return False, None
        if error is not ErrorCode.none:
            self._error(error, now_ms)
            return False, None
        if diverging_epoch is not None:
            truncation = truncation_offset(diverging_epoch[0], diverging_epoch[1], entries, log_end_offset,
                                           log_start_offset)
            self._fire("diverging_complete" if truncation.complete else "diverging_incomplete")
            return False, truncation.truncate_to
        assert request.fetch_offset == log_end_offset, "the follower's log moved under its fetch"
        self._fire("fetched")
        return True, None
