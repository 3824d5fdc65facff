"""Committed offsets of consumer groups, as stored on `__consumer_offsets`.

Each committed offset is one OffsetCommitKey/OffsetCommitValue record (see records.py); a
tombstone deletes it. `OffsetStore` is the in-memory view of those records for every group of
one coordinator, plus the commits written but not yet acknowledged by the log (pending), which
are not visible to OffsetFetch until their append completes (Kafka's pendingOffsetCommits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from odradek.coordinator.records import (
    OffsetCommitValue,
    encode_offset_commit_key,
    encode_offset_commit_value,
)

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """One committed offset: Kafka's OffsetAndMetadata plus its commit/expire timestamps."""

    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int = -1  # -1: expires by offsets.retention.minutes, not explicitly

    def to_value(self) -> OffsetCommitValue:
        return OffsetCommitValue(
            self.offset,
            self.metadata,
            self.commit_timestamp_ms,
            self.leader_epoch,
            self.expire_timestamp_ms,
        )

    @classmethod
    def from_value(cls, v: OffsetCommitValue) -> CommittedOffset:
        return cls(
            v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms, v.expire_timestamp_ms
        )


def offset_record(
    group_id: str, tp: TopicPartition, committed: CommittedOffset | None
) -> tuple[bytes, bytes | None]:
    """The (key, value) to append for a commit, or a tombstone when `committed` is None."""
    key = encode_offset_commit_key(group_id, tp[0], tp[1])
    return key, (None if committed is None else encode_offset_commit_value(committed.to_value()))


class OffsetStore:
    """Committed offsets per group, topic and partition.

    Invariants: `committed` holds only offsets whose records the log has acknowledged (or that
    were replayed from it); `pending` counts commits written but not yet acknowledged, per
    partition; in both, a group id maps to a non-empty dict or is absent. Offsets with a
    pending commit never expire (as Kafka), and deleting a group writes tombstones for them too,
    so the log replays to what memory holds.
    Owner: the GroupCoordinator; single-threaded, no I/O.
    """

    def __init__(self) -> None:
        self.committed: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self.pending: dict[str, dict[TopicPartition, int]] = {}

    def add_pending(self, group_id: str, tps: Iterable[TopicPartition]) -> None:
        counts = self.pending.setdefault(group_id, {})
        for tp in tps:
            counts[tp] = counts.get(tp, 0) + 1

    def complete_pending(self, group_id: str, tps: Iterable[TopicPartition]) -> None:
        counts = self.pending.get(group_id, {})
        for tp in tps:
            if tp in counts:
                counts[tp] -= 1
                if counts[tp] == 0:
                    del counts[tp]
        if not counts:
            self.pending.pop(group_id, None)

    def has_pending(self, group_id: str) -> bool:
        return group_id in self.pending

    # --- writes (applied after the log acknowledges them, or on replay) --------------------

    def apply(self, group_id: str, tp: TopicPartition, committed: CommittedOffset | None) -> None:
        if committed is None:
            offsets = self.committed.get(group_id)
            if offsets is not None:
                offsets.pop(tp, None)
                if not offsets:
                    del self.committed[group_id]
        else:
            self.committed.setdefault(group_id, {})[tp] = committed

    def remove(self, group_id: str, tps: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Drop these offsets now; returns those that existed (they need tombstones)."""
        removed = []
        offsets = self.committed.get(group_id, {})
        for tp in tps:
            if tp in offsets:
                removed.append(tp)
        for tp in removed:
            self.apply(group_id, tp, None)
        return removed

    def remove_group(self, group_id: str) -> list[TopicPartition]:
        """Drop a group's offsets; returns every partition committed or pending (tombstone them)."""
        tps = set(self.committed.pop(group_id, {})) | set(self.pending.get(group_id, {}))
        return sorted(tps)

    # --- reads ---------------------------------------------------------------------------

    def has_offsets(self, group_id: str) -> bool:
        return group_id in self.committed

    def get(self, group_id: str, tp: TopicPartition) -> CommittedOffset | None:
        return self.committed.get(group_id, {}).get(tp)

    def partitions(self, group_id: str) -> list[TopicPartition]:
        return sorted(self.committed.get(group_id, {}))

    def expired(
        self,
        group_id: str,
        now_ms: int,
        retention_ms: int,
        base_timestamp_ms: Callable[[CommittedOffset], int],
        subscribed_topics: frozenset[str] = frozenset(),
    ) -> list[TopicPartition]:
        """Kafka's getExpiredOffsets: an explicit expire timestamp wins, otherwise the offset
        expires `retention_ms` after its base timestamp; subscribed topics never expire."""
        result = []
        pending = self.pending.get(group_id, {})
        for tp, c in self.committed.get(group_id, {}).items():
            if tp[0] in subscribed_topics or tp in pending:
                continue
            if c.expire_timestamp_ms >= 0:
                if now_ms >= c.expire_timestamp_ms:
                    result.append(tp)
            elif now_ms - base_timestamp_ms(c) >= retention_ms:
                result.append(tp)
        return sorted(result)
