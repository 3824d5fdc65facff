"""Deterministic simulation: consumers that behave like Kafka's classic consumer (join, sync,
heartbeat, rejoin on errors) plus random crashes, leaves, restarts of instances, commits and
clock jumps, against one GroupCoordinator. After the chaos, the live consumers must converge to
one Stable generation that contains exactly them, and a coordinator restart (replay of the
in-memory __consumer_offsets log) must rebuild the same groups and offsets.
Every failure message carries the seed: rerun with that seed to replay it."""

from __future__ import annotations

import random

import pytest

from odradek.coordinator.group import GroupState
from odradek.coordinator.harness import GroupHarness
from odradek.protocol.errors import ErrorCode

E = ErrorCode
HEARTBEAT_INTERVAL_MS = 3_000
SESSION_TIMEOUT_MS = 10_000
REBALANCE_TIMEOUT_MS = 20_000


class Consumer:
    """A classic consumer: new -> joining -> syncing -> stable, back to joining on errors."""

    def __init__(self, name: str, group_id: str, instance_id: str | None) -> None:
        self.name = name
        self.group_id = group_id
        self.instance_id = instance_id
        self.member_id = ""
        self.generation = -1
        self.phase = "new"
        self.token = None
        self.alive = True
        self.next_heartbeat_ms = 0
        self.assignment = None

    def step(self, h: GroupHarness) -> None:
        if not self.alive:
            return
        if self.token is not None:
            r = h.answer(self.token)
            if r is None:
                return
            self.token = None
            self.on_answer(h, r)
            return
        if self.phase in ("new", "rejoin"):
            self.token = h.join(
                self.group_id,
                self.member_id,
                instance_id=self.instance_id,
                session_timeout_ms=SESSION_TIMEOUT_MS,
                rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                client_id=self.name,
            )
            self.phase = "joining"
        elif self.phase == "stable" and h.now_ms >= self.next_heartbeat_ms:
            self.next_heartbeat_ms = h.now_ms + HEARTBEAT_INTERVAL_MS
            error = h.heartbeat(self.group_id, self.member_id, self.generation, self.instance_id)
            self.on_error(error)

    def on_error(self, error: int) -> None:
        if error == 0:
            return
        if error == E.rebalance_in_progress.value:
            self.phase = "rejoin"
        elif error in (
            E.unknown_member_id.value,
            E.illegal_generation.value,
            E.fenced_instance_id.value,
        ):
            if error != E.illegal_generation.value:
                self.member_id = ""
            self.phase = "rejoin"
        else:
            self.phase = "rejoin"

    def on_answer(self, h: GroupHarness, r) -> None:
        if self.phase == "joining":
            if r.error_code == E.member_id_required.value:
                self.member_id = r.member_id
                self.phase = "rejoin"
            elif r.error_code == 0:
                self.member_id = r.member_id
                self.generation = r.generation_id
                assignments = None
                if r.members and not r.skip_assignment:
                    assignments = {
                        m.member_id: f"{r.generation_id}:{m.member_id}".encode() for m in r.members
                    }
                self.token = h.sync(
                    self.group_id, self.member_id, self.generation, assignments, self.instance_id
                )
                self.phase = "syncing"
            else:
                self.on_error(r.error_code)
        elif self.phase == "syncing":
            if r.error_code == 0:
                self.phase = "stable"
                self.assignment = r.assignment
                self.next_heartbeat_ms = h.now_ms + HEARTBEAT_INTERVAL_MS
            else:
                self.on_error(r.error_code)


def check_invariants(h: GroupHarness, generations: dict[str, int], seed: int) -> None:
    brute = [d for g in h.coordinator.groups.values() if (d := g.next_deadline_ms()) is not None]
    brute.append(h.coordinator._next_expiry_check_ms)
    assert h.coordinator.next_deadline_ms() == min(brute), seed
    assert h.coordinator.next_deadline_ms() > h.now_ms, seed
    for gid, g in h.coordinator.groups.items():
        assert g.generation_id >= generations.get(gid, 0), seed
        generations[gid] = g.generation_id
        if g.members:
            assert g.leader_id in g.members, seed
        else:
            assert g.leader_id is None, seed
        if g.state is GroupState.EMPTY:
            assert not g.members, seed
        if g.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            assert g.protocol_name in g.candidate_protocols(), seed
        assert set(g.static_members.values()) <= set(g.members), seed
        for m in g.members.values():
            assert m.awaiting_join or m.join_token is None, seed
            assert m.awaiting_sync or m.sync_token is None, seed
            if m.awaiting_join:
                assert g.state is GroupState.PREPARING_REBALANCE, seed
            if m.awaiting_sync:
                assert g.state is GroupState.COMPLETING_REBALANCE, seed


def run_until_quiet(h: GroupHarness, consumers: list[Consumer], ms: int) -> None:
    end = h.now_ms + ms
    while h.now_ms < end:
        for c in consumers:
            c.step(h)
        h.advance(500)


def snapshot(h: GroupHarness):
    groups = {
        gid: (
            g.state,
            g.generation_id,
            g.protocol_name,
            g.leader_id,
            sorted((m.member_id, m.group_instance_id, m.assignment) for m in g.members.values()),
        )
        for gid, g in h.coordinator.groups.items()
    }
    return groups, {g: dict(o) for g, o in h.coordinator.offsets.committed.items()}


@pytest.mark.parametrize("seed", range(12))
def test_consumers_converge_after_chaos_and_replay_rebuilds_the_state(seed):
    rng = random.Random(seed)
    h = GroupHarness(seed=seed)
    consumers: list[Consumer] = []
    names = iter(range(10_000))

    def spawn(group_id: str) -> Consumer:
        n = next(names)
        instance = f"{group_id}-i{n}" if rng.random() < 0.3 else None
        c = Consumer(f"c{n}", group_id, instance)
        consumers.append(c)
        return c

    for group_id in ("alpha", "beta"):
        for _ in range(rng.randint(1, 4)):
            spawn(group_id)
    generations: dict[str, int] = {}
    for _ in range(300):
        for c in consumers:
            c.step(h)
        roll = rng.random()
        live = [c for c in consumers if c.alive]
        if roll < 0.03:
            spawn(rng.choice(("alpha", "beta")))
        elif roll < 0.05 and live:
            rng.choice(live).alive = False  # crash: silence
        elif roll < 0.07 and live:
            c = rng.choice(live)
            if c.member_id and c.phase == "stable":
                h.leave(c.group_id, (c.member_id, c.instance_id))
                c.alive = False
        elif roll < 0.09 and live:
            c = rng.choice(live)
            if (
                c.instance_id is not None
            ):  # a static instance restarts: same instance id, no member id
                c.alive = False
                twin = Consumer(c.name + "'", c.group_id, c.instance_id)
                consumers.append(twin)
        elif roll < 0.15 and live:
            c = rng.choice(live)
            if c.phase == "stable":
                h.commit(
                    c.group_id,
                    {("t", rng.randint(0, 3)): rng.randint(0, 1000)},
                    c.generation,
                    c.member_id,
                    c.instance_id,
                )
        h.advance(rng.choice((100, 500, 1_000, 2_000)))
        check_invariants(h, generations, seed)

    run_until_quiet(h, consumers, 120_000)
    for group_id in ("alpha", "beta"):
        live = [c for c in consumers if c.alive and c.group_id == group_id]
        group = h.coordinator.groups.get(group_id)
        if not live:
            assert group is None or group.state is GroupState.EMPTY, f"seed {seed}"
            continue
        assert group is not None and group.state is GroupState.STABLE, f"seed {seed}: {group.state}"
        assert sorted(group.members) == sorted(c.member_id for c in live), f"seed {seed}"
        assert {c.generation for c in live} == {group.generation_id}, f"seed {seed}"
        assert all(c.phase == "stable" for c in live), f"seed {seed}"
        for c in live:
            # what the member got is what the group stored; it was computed for this member by
            # a leader (a static member that rejoined without a rebalance keeps its old one)
            assert c.assignment == group.members[c.member_id].assignment, f"seed {seed}"
            assert (
                c.assignment.endswith(b":" + c.member_id.encode()) or c.instance_id is not None
            ), f"seed {seed}"

    before = snapshot(h)
    h.restart()
    assert snapshot(h) == before, f"seed {seed}"
