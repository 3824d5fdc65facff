"""A test harness around `GroupCoordinator`: an in-memory `__consumer_offsets` log, a simulated
clock, and a mailbox of answers keyed by request token.

Public so that tests elsewhere (handlers, simulations, users' own tests) can drive the core the
way the broker does: every PendingAppend is appended to the in-memory log and completed at once
(or failed, when `fail_next_appends` says so), and every answer lands in `answers`.
Nothing here is used by the broker itself.

The in-memory log of partition p, `log[p]`, holds in log order: `(key, value)` for a record of a
plain batch, `TxnOffsetRecord` for a record of a transactional batch, and `TxnMarker` for an
end-transaction control record. `restart` replays all three the way the broker's loader does.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

from odradek.coordinator.group import ClassicGroup, GroupConfig
from odradek.coordinator.group_coordinator import CoordinatorResult, GroupCoordinator
from odradek.coordinator.messages import (
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    LeaveMember,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetFetchGroup,
    SyncGroupRequest,
    TxnOffsetCommitPartition,
    TxnOffsetCommitRequest,
)

DEFAULT_PROTOCOLS = (("range", b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"),)


class TxnOffsetRecord(NamedTuple):
    """A record of a transactional batch on the in-memory log."""

    producer_id: int
    producer_epoch: int
    key: bytes
    value: bytes | None


class TxnMarker(NamedTuple):
    """An end-transaction control record (COMMIT when `commit`, else ABORT) on the log."""

    producer_id: int
    commit: bool


LogEntry = tuple[bytes, bytes | None] | TxnOffsetRecord | TxnMarker


class GroupHarness:
    """Drives one GroupCoordinator that owns every `__consumer_offsets` partition."""

    def __init__(self, config: GroupConfig | None = None, seed: int = 0, now_ms: int = 0) -> None:
        self.config = config or GroupConfig(offsets_topic_num_partitions=4)
        self.seed = seed
        self.now_ms = now_ms
        self.log: dict[int, list[LogEntry]] = {}
        self.answers: dict[Any, Any] = {}
        self.fail_next_appends: list[int] = []  # error codes for the next appends, in order
        self._tokens = itertools.count(1)
        self.coordinator = GroupCoordinator(
            self.config, seed=seed, owned_partitions=range(self.config.offsets_topic_num_partitions)
        )

    # --- plumbing --------------------------------------------------------------------------

    def run(self, result: CoordinatorResult) -> CoordinatorResult:
        """Append and complete every append of `result` (recursively); record all answers."""
        for token, response in result.responses:
            assert token not in self.answers, f"token {token} answered twice"
            self.answers[token] = response
        for append in result.appends:
            error = self.fail_next_appends.pop(0) if self.fail_next_appends else 0
            if error == 0:
                self.write(append)
            self.run(self.coordinator.on_append_complete(append.append_id, error, self.now_ms))
        return result

    def write(self, append: Any) -> None:
        """Put a PendingAppend's records on the in-memory log (without completing it)."""
        entries = self.log.setdefault(append.partition, [])
        if append.transactional:
            entries.extend(
                TxnOffsetRecord(append.producer_id, append.producer_epoch, k, v)
                for k, v in append.records
            )
        else:
            entries.extend(append.records)

    def token(self) -> int:
        return next(self._tokens)

    def answer(self, token: Any) -> Any:
        return self.answers.get(token)

    def group(self, group_id: str) -> ClassicGroup:
        return self.coordinator.groups[group_id]

    # --- requests ----------------------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str = "",
        *,
        instance_id: str | None = None,
        protocols: tuple[tuple[str, bytes], ...] = DEFAULT_PROTOCOLS,
        protocol_type: str = "consumer",
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 30_000,
        client_id: str = "client",
        require_known_member_id: bool = True,
        supports_skip_assignment: bool = True,
    ) -> int:
        """Send a JoinGroup; returns its token (look the answer up with `answer`)."""
        token = self.token()
        req = JoinGroupRequest(
            group_id,
            member_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type,
            protocols,
            instance_id,
            client_id,
            "/127.0.0.1",
            require_known_member_id,
            supports_skip_assignment,
        )
        self.run(self.coordinator.join_group(req, self.now_ms, token))
        return token

    def join_new_member(self, group_id: str, **kwargs: Any) -> int:
        """KIP-394 round trip: join, get MEMBER_ID_REQUIRED, join again with the given id."""
        first = self.answer(self.join(group_id, **kwargs))
        assert first.error_code == 79, first
        return self.join(group_id, first.member_id, **kwargs)

    def sync(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        assignments: dict[str, bytes] | None = None,
        instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> int:
        token = self.token()
        req = SyncGroupRequest(
            group_id,
            generation_id,
            member_id,
            tuple((assignments or {}).items()),
            instance_id,
            protocol_type,
            protocol_name,
        )
        self.run(self.coordinator.sync_group(req, self.now_ms, token))
        return token

    def heartbeat(
        self, group_id: str, member_id: str, generation_id: int, instance_id: str | None = None
    ) -> int:
        token = self.token()
        self.run(
            self.coordinator.heartbeat(
                HeartbeatRequest(group_id, generation_id, member_id, instance_id),
                self.now_ms,
                token,
            )
        )
        return self.answers[token].error_code

    def leave(self, group_id: str, *members: tuple[str, str | None]) -> Any:
        token = self.token()
        req = LeaveGroupRequest(group_id, tuple(LeaveMember(m, i) for m, i in members))
        self.run(self.coordinator.leave_group(req, self.now_ms, token))
        return self.answers[token]

    def commit(
        self,
        group_id: str,
        offsets: dict[tuple[str, int], int],
        generation_id: int = -1,
        member_id: str = "",
        instance_id: str | None = None,
        retention_time_ms: int = -1,
        metadata: str = "",
    ) -> int:
        token = self.token()
        topics: dict[str, list[OffsetCommitPartition]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                OffsetCommitPartition(partition, offset, 7, metadata)
            )
        req = OffsetCommitRequest(
            group_id,
            {t: tuple(ps) for t, ps in topics.items()},
            generation_id,
            member_id,
            instance_id,
            retention_time_ms,
        )
        self.run(self.coordinator.offset_commit(req, self.now_ms, token))
        return token

    def txn_commit(
        self,
        group_id: str,
        producer_id: int,
        offsets: dict[tuple[str, int], int],
        producer_epoch: int = 0,
        generation_id: int = -1,
        member_id: str = "",
        instance_id: str | None = None,
        metadata: str = "",
        api_version: int = 5,
        transactional_id: str = "txn",
    ) -> int:
        """Send a TxnOffsetCommit; returns its token."""
        token = self.token()
        topics: dict[str, list[TxnOffsetCommitPartition]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                TxnOffsetCommitPartition(partition, offset, 7, metadata)
            )
        req = TxnOffsetCommitRequest(
            transactional_id,
            group_id,
            producer_id,
            producer_epoch,
            {t: tuple(ps) for t, ps in topics.items()},
            generation_id,
            member_id,
            instance_id,
            api_version,
        )
        self.run(self.coordinator.txn_offset_commit(req, self.now_ms, token))
        return token

    def end_txn(self, producer_id: int, commit: bool, partitions: Any = None) -> list[str]:
        """Write the producer's COMMIT/ABORT marker to these partitions (None: every partition
        holding a record of the producer's open transaction) and report it to the core."""
        if partitions is None:
            partitions = [p for p in sorted(self.log) if self._in_txn(p, producer_id)]
        partitions = list(partitions)
        for p in partitions:
            self.log.setdefault(p, []).append(TxnMarker(producer_id, commit))
        return self.coordinator.complete_transaction(producer_id, commit, self.now_ms, partitions)

    def _in_txn(self, partition: int, producer_id: int) -> bool:
        for entry in reversed(self.log.get(partition, [])):
            if isinstance(entry, TxnMarker) and entry.producer_id == producer_id:
                return False
            if isinstance(entry, TxnOffsetRecord) and entry.producer_id == producer_id:
                return True
        return False

    def fetch(
        self, group_id: str, topics: dict[str, tuple[int, ...]] | None = None
    ) -> dict[tuple[str, int], int]:
        (g,) = self.coordinator.offset_fetch([OffsetFetchGroup(group_id, topics)], self.now_ms)
        assert g.error_code == 0, g
        return {(t, p.partition): p.offset for t, ps in g.topics.items() for p in ps}

    def fetch_stable(
        self, group_id: str, topics: dict[str, tuple[int, ...]] | None = None
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """OffsetFetch with require_stable: partition -> (offset, error code)."""
        (g,) = self.coordinator.offset_fetch(
            [OffsetFetchGroup(group_id, topics)], self.now_ms, require_stable=True
        )
        assert g.error_code == 0, g
        return {
            (t, p.partition): (p.offset, p.error_code) for t, ps in g.topics.items() for p in ps
        }

    def wait_for(self, *tokens: Any, max_steps: int = 100) -> None:
        """Advance the clock in initial-delay steps until every token is answered."""
        for _ in range(max_steps):
            if all(self.answer(t) is not None for t in tokens):
                return
            self.advance(max(self.config.group_initial_rebalance_delay_ms, 1))
        raise AssertionError(f"tokens {tokens} not answered")

    def advance(self, ms: int) -> CoordinatorResult:
        self.now_ms += ms
        return self.run(self.coordinator.tick(self.now_ms))

    def restart(self, config: GroupConfig | None = None) -> None:
        """A new coordinator (optionally with new configs) loads every partition from the log."""
        self.config = config or self.config
        self.coordinator = GroupCoordinator(self.config, seed=self.seed + 1)
        for p in range(self.config.offsets_topic_num_partitions):
            self.coordinator.begin_loading(p)
            for entry in self.log.get(p, []):
                if isinstance(entry, TxnMarker):
                    self.coordinator.replay_marker(entry.producer_id, entry.commit, p)
                elif isinstance(entry, TxnOffsetRecord):
                    self.coordinator.replay(
                        entry.key,
                        entry.value,
                        self.now_ms,
                        producer_id=entry.producer_id,
                        transactional=True,
                    )
                else:
                    self.coordinator.replay(entry[0], entry[1], self.now_ms)
            self.coordinator.finish_loading(p, self.now_ms)

    # --- composite steps ---------------------------------------------------------------------

    def form_group(self, group_id: str, n: int, **kwargs: Any) -> list[str]:
        """n dynamic members join (before the initial delay ends) and sync; the leader assigns
        `b"assignment-<i>"` to the i-th member. Returns member ids in join order."""
        tokens = [self.join_new_member(group_id, **kwargs) for _ in range(n)]
        self.wait_for(*tokens)  # joins during the initial delay extend it (as in Kafka)
        responses = [self.answer(t) for t in tokens]
        assert all(r is not None and r.error_code == 0 for r in responses), responses
        self.complete_sync(group_id, [r.member_id for r in responses])
        return [r.member_id for r in responses]

    def complete_sync(self, group_id: str, member_ids: list[str]) -> dict[str, bytes]:
        group = self.group(group_id)
        generation = group.generation_id
        leader = group.leader_id
        assignments = {m: f"assignment-{i}".encode() for i, m in enumerate(member_ids)}
        tokens = {
            m: self.sync(group_id, m, generation, assignments if m == leader else None)
            for m in [m for m in member_ids if m != leader] + [leader]
        }
        out = {}
        for m, t in tokens.items():
            r = self.answer(t)
            assert r is not None and r.error_code == 0, (m, r)
            out[m] = r.assignment
        return out
