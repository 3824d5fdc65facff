"""Committed offsets of consumer groups, as stored on `__consumer_offsets`.

Each committed offset is one OffsetCommitKey/OffsetCommitValue record (see records.py); a
tombstone deletes it. `OffsetStore` is the in-memory view of those records for every group of
one coordinator, plus the commits written but not yet acknowledged by the log (pending), which
are not visible to OffsetFetch until their append completes (Kafka's pendingOffsetCommits).

Transactional offset commits (TxnOffsetCommit) are the same records in a transactional batch of
the producer. They stay *pending per producer id* (Kafka's pendingTransactionalOffsets) until the
producer's end-transaction marker reaches the group's `__consumer_offsets` partition: a COMMIT
marker moves them into `committed`, an ABORT marker drops them. Mixing the two kinds, the offset
whose record comes later in the log wins (Kafka compares record offsets; we compare the *append
order*, a counter the store hands out as appends complete or records replay, which follows log
order because each partition's appends complete in log order and a group lives on one
partition). A tombstone drops the committed offset and every producer's pending one of that
partition, in memory and on replay alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


@dataclass(slots=True, eq=False)
class PendingTxnOffset:
    """One transactional offset commit waiting for its producer's end-transaction marker.

    `append_order` is None while the record's append is in flight, then the store's append order
    of the record (what decides, at COMMIT, whether it replaces the committed offset). Compared
    by identity: a completing append updates only the entries it created."""

    committed: CommittedOffset
    append_order: int | None = None


@dataclass(slots=True)
class _TxnOffsets:
    """A producer's pending transactional offsets: group id -> partition -> entry."""

    groups: dict[str, dict[TopicPartition, PendingTxnOffset]] = field(default_factory=dict)


class OffsetStore:
    """Committed offsets per group, topic and partition, and pending transactional ones.

    Invariants: `committed` holds only offsets whose records the log has acknowledged (or that
    were replayed from it); `pending` counts commits written but not yet acknowledged, per
    partition; in both, a group id maps to a non-empty dict or is absent. `append_order` has an
    entry for exactly the offsets in `committed`. `pending_txn` maps producer id -> group ->
    partition -> PendingTxnOffset with no empty dict at any level, and `txn_producers` (group ->
    producer ids with pending offsets in it; Kafka's openTransactionsByGroup) is its exact index.
    Offsets with a pending commit, plain or transactional, never expire (as Kafka), and deleting a
    group or offsets writes tombstones for them too, so the log replays to what memory holds.
    Owner: the GroupCoordinator; single-threaded, no I/O.
    """

    def __init__(self) -> None:
        self.committed: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self.pending: dict[str, dict[TopicPartition, int]] = {}
        self.append_order: dict[tuple[str, TopicPartition], int] = {}
        self.pending_txn: dict[int, _TxnOffsets] = {}
        self.txn_producers: dict[str, set[int]] = {}
        self._last_append_order = 0

    def next_append_order(self) -> int:
        """A number larger than every one handed out before (one per completed append or
        replayed record)."""
        self._last_append_order += 1
        return self._last_append_order

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
        """A plain commit in flight or a transactional one not yet ended, in this group."""
        return group_id in self.pending or group_id in self.txn_producers

    # --- writes (applied after the log acknowledges them, or on replay) --------------------

    def apply(
        self,
        group_id: str,
        tp: TopicPartition,
        committed: CommittedOffset | None,
        append_order: int | None = None,
    ) -> None:
        """Apply one non-transactional record: a commit (with its append order; None takes the
        next one) or a tombstone, which also drops every producer's pending offset of `tp`."""
        if committed is None:
            offsets = self.committed.get(group_id)
            if offsets is not None:
                offsets.pop(tp, None)
                self.append_order.pop((group_id, tp), None)
                if not offsets:
                    del self.committed[group_id]
            self._drop_txn(group_id, (tp,))
        else:
            self.committed.setdefault(group_id, {})[tp] = committed
            self.append_order[(group_id, tp)] = (
                self.next_append_order() if append_order is None else append_order
            )

    def remove(self, group_id: str, tps: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Drop these offsets now, committed and pending transactional; returns those that
        existed in either (they need tombstones)."""
        offsets = self.committed.get(group_id, {})
        txn = self._txn_partitions(group_id)
        removed = [tp for tp in dict.fromkeys(tps) if tp in offsets or tp in txn]
        for tp in removed:
            self.apply(group_id, tp, None)
        return removed

    def remove_group(self, group_id: str) -> list[TopicPartition]:
        """Drop a group's offsets; returns every partition committed or pending, plain or
        transactional (tombstone them)."""
        tps = (
            set(self.committed.get(group_id, {}))
            | set(self.pending.get(group_id, {}))
            | self._txn_partitions(group_id)
        )
        for tp in list(self.committed.get(group_id, {})):
            self.apply(group_id, tp, None)
        self._drop_txn(group_id, None)
        return sorted(tps)

    # --- transactional offsets -------------------------------------------------------------

    def prepare_txn(
        self, producer_id: int, group_id: str, offsets: dict[TopicPartition, CommittedOffset]
    ) -> dict[TopicPartition, PendingTxnOffset]:
        """A TxnOffsetCommit is being written: its offsets are pending (append in flight).
        Returns the entries, which `on_txn_append` later completes."""
        entries = {tp: PendingTxnOffset(c) for tp, c in offsets.items()}
        if entries:
            txn = self.pending_txn.setdefault(producer_id, _TxnOffsets())
            txn.groups.setdefault(group_id, {}).update(entries)
            self.txn_producers.setdefault(group_id, set()).add(producer_id)
        return entries

    def on_txn_append(
        self,
        producer_id: int,
        group_id: str,
        entries: dict[TopicPartition, PendingTxnOffset],
        append_order: int | None,
    ) -> None:
        """The append of `entries` completed: acknowledged at `append_order`, or failed (None),
        which drops them. Entries already dropped or replaced (a tombstone, a later commit of
        the same producer, the end of the transaction) are left alone, as Kafka."""
        txn = self.pending_txn.get(producer_id)
        group = txn.groups.get(group_id, {}) if txn is not None else {}
        for tp, entry in entries.items():
            if group.get(tp) is entry:
                if append_order is None:
                    del group[tp]
                else:
                    entry.append_order = append_order
        if txn is not None and not group:
            self._forget(producer_id, group_id)

    def replay_txn(
        self,
        producer_id: int,
        group_id: str,
        tp: TopicPartition,
        committed: CommittedOffset,
        append_order: int | None = None,
    ) -> None:
        """A transactional offset record read from the log (its marker not yet read)."""
        order = self.next_append_order() if append_order is None else append_order
        txn = self.pending_txn.setdefault(producer_id, _TxnOffsets())
        txn.groups.setdefault(group_id, {})[tp] = PendingTxnOffset(committed, order)
        self.txn_producers.setdefault(group_id, set()).add(producer_id)

    def complete_txn(
        self, producer_id: int, commit: bool, in_scope: Callable[[str], bool]
    ) -> list[str]:
        """The producer's end-transaction marker is in the log of the groups `in_scope` accepts:
        on COMMIT their pending offsets replace the committed ones whose append order is
        earlier (Kafka's rule for mixed commits); on ABORT they are dropped. An entry whose
        append is still in flight is dropped in both cases (a marker cannot precede the
        acknowledgement of the producer's TxnOffsetCommit). Returns the groups completed."""
        txn = self.pending_txn.get(producer_id)
        if txn is None:
            return []
        done = sorted(g for g in txn.groups if in_scope(g))
        for group_id in done:
            entries = txn.groups[group_id]
            self._forget(producer_id, group_id)
            if not commit:
                continue
            for tp, entry in sorted(entries.items()):
                if entry.append_order is None:
                    continue
                current = self.append_order.get((group_id, tp))
                if current is None or current < entry.append_order:
                    self.apply(group_id, tp, entry.committed, entry.append_order)
        return done

    def _forget(self, producer_id: int, group_id: str) -> None:
        txn = self.pending_txn[producer_id]
        txn.groups.pop(group_id, None)
        if not txn.groups:
            del self.pending_txn[producer_id]
        producers = self.txn_producers.get(group_id)
        if producers is not None:
            producers.discard(producer_id)
            if not producers:
                del self.txn_producers[group_id]

    def _drop_txn(self, group_id: str, tps: Iterable[TopicPartition] | None) -> None:
        """Drop pending transactional offsets of these partitions (None: all) of the group."""
        for producer_id in sorted(self.txn_producers.get(group_id, ())):
            group = self.pending_txn[producer_id].groups[group_id]
            for tp in list(group) if tps is None else tps:
                group.pop(tp, None)
            if not group:
                self._forget(producer_id, group_id)

    def _txn_partitions(self, group_id: str) -> set[TopicPartition]:
        out: set[TopicPartition] = set()
        for producer_id in self.txn_producers.get(group_id, ()):
            out.update(self.pending_txn[producer_id].groups[group_id])
        return out

    def has_pending_txn(self, group_id: str, tp: TopicPartition) -> bool:
        """A transactional commit of `tp` not yet ended (in flight or awaiting its marker)."""
        return any(
            tp in self.pending_txn[pid].groups[group_id]
            for pid in self.txn_producers.get(group_id, ())
        )

    def pending_txn_offsets(
        self, group_id: str
    ) -> dict[int, dict[TopicPartition, CommittedOffset]]:
        """Producer id -> partition -> offset pending in this group (for tests and describe)."""
        return {
            pid: {tp: e.committed for tp, e in self.pending_txn[pid].groups[group_id].items()}
            for pid in sorted(self.txn_producers.get(group_id, ()))
        }

    def groups_with_offsets(self) -> set[str]:
        """Groups with committed or pending transactional offsets."""
        return set(self.committed) | set(self.txn_producers)

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
        expires `retention_ms` after its base timestamp; subscribed topics never expire, nor do
        partitions with a pending commit, plain or transactional."""
        result = []
        pending = self.pending.get(group_id, {}) | dict.fromkeys(self._txn_partitions(group_id), 1)
        for tp, c in self.committed.get(group_id, {}).items():
            if tp[0] in subscribed_topics or tp in pending:
                continue
            if c.expire_timestamp_ms >= 0:
                if now_ms >= c.expire_timestamp_ms:
                    result.append(tp)
            elif now_ms - base_timestamp_ms(c) >= retention_ms:
                result.append(tp)
        return sorted(result)
