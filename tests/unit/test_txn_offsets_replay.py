"""Seeded histories mixing plain and transactional offset commits, commit and abort markers,
OffsetDelete and DeleteGroups: the coordinator's visible offsets follow a small model of Kafka's
rules (log order decides between a plain commit and a committed transaction; tombstones drop
pending transactional offsets), and replaying the log after a restart, at any point, rebuilds
exactly the state memory holds."""

import random

import pytest

from odradek.coordinator.group import GroupConfig
from odradek.coordinator.harness import GroupHarness
from odradek.coordinator.messages import OffsetDeleteRequest
from odradek.protocol.errors import ErrorCode

GROUPS = ("g0", "g1", "g2", "g3", "g4")
PRODUCERS = (100, 101, 102)
TPS = (("t", 0), ("t", 1), ("u", 0))
UNSTABLE = ErrorCode.unstable_offset_commit.value


class Model:
    """What a reader of the log expects: committed (value, log position) per group/partition,
    and per producer the pending transactional (value, log position)."""

    def __init__(self) -> None:
        self.position = 0
        self.committed: dict[tuple[str, tuple[str, int]], tuple[int, int]] = {}
        self.pending: dict[int, dict[tuple[str, tuple[str, int]], tuple[int, int]]] = {}

    def commit(self, group, offsets):
        self.position += 1
        for tp, o in offsets.items():
            self.committed[(group, tp)] = (o, self.position)

    def txn_commit(self, pid, group, offsets):
        self.position += 1
        for tp, o in offsets.items():
            self.pending.setdefault(pid, {})[(group, tp)] = (o, self.position)

    def tombstone(self, group, tps):
        for tp in tps:
            self.committed.pop((group, tp), None)
            for pending in self.pending.values():
                pending.pop((group, tp), None)

    def end(self, pid, commit):
        for key, (o, pos) in sorted(self.pending.pop(pid, {}).items()):
            current = self.committed.get(key)
            if commit and (current is None or current[1] < pos):
                self.committed[key] = (o, pos)

    def visible(self, group):
        return {tp: o for (g, tp), (o, _) in self.committed.items() if g == group}


def state(h: GroupHarness):
    o = h.coordinator.offsets
    return (
        {g: dict(offsets) for g, offsets in o.committed.items()},
        {g: o.pending_txn_offsets(g) for g in sorted(o.txn_producers)},
        sorted(h.coordinator.groups),
    )


def check_consistent(h: GroupHarness, model: Model, seed: int, step: int) -> None:
    for g in GROUPS:
        assert h.fetch(g) == model.visible(g), (seed, step, g)
        stable = h.fetch_stable(g, {"t": (0, 1), "u": (0,)})
        for tp, (offset, error) in stable.items():
            pending = any((g, tp) in p for p in model.pending.values())
            assert (error == UNSTABLE) == pending, (seed, step, g, tp)
            if not pending:
                assert offset == model.visible(g).get(tp, -1), (seed, step, g, tp)


@pytest.mark.parametrize("seed", range(40))
def test_seeded_history_follows_the_model_and_replay_equals_memory(seed):
    rng = random.Random(seed)
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=3), seed=seed)
    model = Model()
    open_txns: set[int] = set()
    for step in range(120):
        roll = rng.random()
        group = rng.choice(GROUPS)
        offsets = {tp: rng.randrange(1_000) for tp in rng.sample(TPS, rng.randint(1, len(TPS)))}
        if roll < 0.25:
            token = h.commit(group, offsets)
            assert all(e == 0 for ps in h.answer(token).topics.values() for _, e in ps), seed
            model.commit(group, offsets)
        elif roll < 0.55:
            pid = rng.choice(PRODUCERS)
            token = h.txn_commit(group, pid, offsets)
            assert all(e == 0 for ps in h.answer(token).topics.values() for _, e in ps), seed
            model.txn_commit(pid, group, offsets)
            open_txns.add(pid)
        elif roll < 0.75 and open_txns:
            pid = rng.choice(sorted(open_txns))
            commit = rng.random() < 0.6
            h.end_txn(pid, commit)
            model.end(pid, commit)
            open_txns.discard(pid)
        elif roll < 0.82 and group in h.coordinator.groups:
            topics = {"t": tuple(p for t, p in offsets if t == "t")}
            t = h.token()
            h.run(h.coordinator.offset_delete(OffsetDeleteRequest(group, topics), h.now_ms, t))
            assert h.answer(t).error_code == 0, seed
            model.tombstone(group, [("t", p) for p in topics["t"]])
        elif roll < 0.87 and group in h.coordinator.groups:
            t = h.token()
            h.run(h.coordinator.delete_groups([group], h.now_ms, t))
            assert dict(h.answer(t).results) == {group: 0}, seed
            model.tombstone(group, TPS)
        elif roll < 0.93:
            before = state(h)
            h.restart()
            assert state(h) == before, (seed, step)
        else:
            h.advance(rng.randrange(1, 5_000))
        check_consistent(h, model, seed, step)
    for pid in sorted(open_txns):
        h.end_txn(pid, rng.random() < 0.5)
    before = state(h)
    h.restart()
    assert state(h) == before, seed
    assert h.coordinator.offsets.pending_txn == {}, seed
