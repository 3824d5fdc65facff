"""Incremental fetch sessions (KIP-227): the broker remembers what a fetcher asked for last time.

A full fetch request (epoch 0) lists every partition and creates a session; later incremental
requests (epoch 1, 2, ...) carry only the partitions whose fetch position changed, plus the
ones to forget, and the response carries only partitions with something new: records, a moved
high watermark / last stable offset / log start offset, or an error. Epoch -1 ends a session (or
asks for a sessionless full fetch when the id is 0).

    request (session_id, epoch)    meaning
    (0, -1)                        sessionless full fetch; answer session_id 0
    (0, 0) or (id, 0)              close `id` if any; new full session; answer its id
    (id, n > 0)                    incremental on `id`; FETCH_SESSION_ID_NOT_FOUND /
                                   INVALID_FETCH_SESSION_EPOCH when it does not match
    (id, -1)                       close `id`; full sessionless fetch

`FetchSessionCache` is owned by the BrokerCore and used only from the event loop. It holds at
most `max_sessions` sessions (Kafka's max.incremental.fetch.session.cache.slots), evicting the
least recently used.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from odradek.protocol.errors import ErrorCode

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
DEFAULT_MAX_SESSIONS = 1000
INVALID_OFFSET = -1


@dataclass(slots=True)
class CachedPartition:
    """What a session remembers of one partition: the fetcher's position and what we last said."""

    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1  # v12+: a follower's epoch of its last record (divergence check)
    high_watermark: int = INVALID_OFFSET
    last_stable_offset: int = INVALID_OFFSET
    log_start_offset: int = INVALID_OFFSET

    def must_respond(self, error: ErrorCode, has_records: bool, high_watermark: int,
                     last_stable_offset: int, log_start_offset: int) -> bool:
        """Record what is being sent; True when the partition belongs in an incremental response."""
        changed = (
            has_records
            or error is not ErrorCode.none
            or high_watermark != self.high_watermark
            or last_stable_offset != self.last_stable_offset
            or log_start_offset != self.log_start_offset
        )
        self.high_watermark = high_watermark
        self.last_stable_offset = last_stable_offset
        self.log_start_offset = log_start_offset
        return changed


@dataclass(slots=True)
class FetchSession:
    session_id: int
    epoch: int  # the epoch the next incremental request must carry
    # (topic key, partition) -> CachedPartition, in the order the fetcher first listed them;
    # the topic key is the id for v13+ sessions, else the name.
    partitions: OrderedDict = field(default_factory=OrderedDict)


class FetchSessionCache:
    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS, rng: random.Random | None = None) -> None:
        self._sessions: OrderedDict[int, FetchSession] = OrderedDict()
        self._max_sessions = max_sessions
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self, session_id: int) -> None:
        self._sessions.pop(session_id, None)

    def create(self) -> FetchSession | None:
        if self._max_sessions <= 0:
            return None
        while len(self._sessions) >= self._max_sessions:
            self._sessions.popitem(last=False)
        while True:
            session_id = self._rng.randint(1, 2**31 - 1)
            if session_id not in self._sessions:
                break
        session = FetchSession(session_id, epoch=1)
        self._sessions[session_id] = session
        return session

    def lookup(self, session_id: int, epoch: int) -> FetchSession | ErrorCode:
        """The session for an incremental request, advanced to its next epoch, or the error."""
        session = self._sessions.get(session_id)
        if session is None:
            return ErrorCode.fetch_session_id_not_found
        if session.epoch != epoch:
            return ErrorCode.invalid_fetch_session_epoch
        self._sessions.move_to_end(session_id)
        session.epoch = epoch + 1 if epoch < 2**31 - 1 else 1
        return session
