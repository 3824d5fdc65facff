"""GroupService on a real BrokerCore (no sockets): appends reach `__consumer_offsets`, timers fire
on the event loop, and a restarted broker loads the log, answering COORDINATOR_LOAD_IN_PROGRESS
until it is done."""

from __future__ import annotations

import asyncio

from odradek.broker.core import BrokerCore
from odradek.broker.group_service import OFFSETS_TOPIC
from odradek.config import BrokerConfig
from odradek.coordinator.group import GroupState
from odradek.coordinator.messages import (
    HeartbeatRequest,
    JoinGroupRequest,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetFetchGroup,
    SyncGroupRequest,
)
from odradek.protocol.errors import ErrorCode

NONE = ErrorCode.none.value
PROTOCOLS = (("range", b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"),)


def config(tmp_path) -> BrokerConfig:
    cfg, _ = BrokerConfig.load(
        None,
        {
            "log.dirs": str(tmp_path),
            "offsets.topic.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "200",
        },
    )
    return cfg


async def open_core(tmp_path) -> BrokerCore:
    core = BrokerCore(config(tmp_path))
    core.open()
    return core


async def join_and_sync(
    core: BrokerCore, group: str, session_timeout_ms: int = 10_000
) -> tuple[str, int]:
    req = JoinGroupRequest(
        group, "", session_timeout_ms, 10_000, "consumer", PROTOCOLS, client_id="c"
    )
    first = await core.groups.call("join_group", req)
    assert first.error_code == ErrorCode.member_id_required.value
    joined = await core.groups.call(
        "join_group",
        JoinGroupRequest(
            group, first.member_id, session_timeout_ms, 10_000, "consumer", PROTOCOLS, client_id="c"
        ),
    )
    assert joined.error_code == NONE, joined
    synced = await core.groups.call(
        "sync_group",
        SyncGroupRequest(
            group, joined.generation_id, joined.member_id, ((joined.member_id, b"a"),)
        ),
    )
    assert synced.error_code == NONE and synced.assignment == b"a"
    return joined.member_id, joined.generation_id


def fetch(core: BrokerCore, group: str) -> tuple[int, dict]:
    (r,) = core.groups.coordinator.offset_fetch([OffsetFetchGroup(group, None)])
    return r.error_code, {(t, p.partition): p.offset for t, ps in r.topics.items() for p in ps}


def test_commits_are_written_and_loaded_after_restart_with_load_in_progress_meanwhile(tmp_path):
    async def first_life():
        core = await open_core(tmp_path)
        assert await core.auto_create_topic(OFFSETS_TOPIC) is ErrorCode.none
        assert core.groups.coordinator.owned == {0, 1, 2}
        member, generation = await join_and_sync(core, "g")
        commit = OffsetCommitRequest(
            "g",
            {"orders": (OffsetCommitPartition(0, 41), OffsetCommitPartition(1, 7))},
            generation,
            member,
        )
        answers = await asyncio.gather(
            *(core.groups.call("offset_commit", commit) for _ in range(5))
        )
        assert all(e == NONE for a in answers for ps in a.topics.values() for _, e in ps)
        records = sum(
            p.log.log_end_offset
            for (t, _), p in core.replica_manager.partitions.items()
            if t == OFFSETS_TOPIC
        )
        assert records >= 1 + 5 * 2  # the group's assignment, then every commit's two records
        core.close()

    async def second_life():
        core = await open_core(tmp_path)
        partition = core.groups.coordinator.partition_for("g")
        assert partition in core.groups.coordinator.loading
        assert fetch(core, "g")[0] == ErrorCode.coordinator_load_in_progress.value
        joined = await core.groups.call(
            "join_group", JoinGroupRequest("g", "", 10_000, 10_000, "consumer", PROTOCOLS)
        )
        assert joined.error_code == ErrorCode.coordinator_load_in_progress.value
        for _ in range(100):
            if not core.groups.coordinator.loading:
                break
            await asyncio.sleep(0.01)
        assert fetch(core, "g") == (NONE, {("orders", 0): 41, ("orders", 1): 7})
        group = core.groups.coordinator.groups["g"]
        assert (
            group.state is GroupState.STABLE and group.generation_id == 1
        )  # the stored assignment
        core.close()

    asyncio.run(first_life())
    asyncio.run(second_life())


def test_session_timeout_fires_on_the_event_loop_and_the_group_empties(tmp_path):
    async def scenario():
        core = await open_core(tmp_path)
        await core.auto_create_topic(OFFSETS_TOPIC)
        member, generation = await join_and_sync(core, "g", session_timeout_ms=300)
        beat = await core.groups.call("heartbeat", HeartbeatRequest("g", generation, member))
        assert beat.error_code == NONE
        group = core.groups.coordinator.groups["g"]
        assert group.state is GroupState.STABLE
        await asyncio.sleep(0.6)  # no heartbeat: the session expires and the member is removed
        assert group.state is GroupState.EMPTY and not group.members
        beat = await core.groups.call("heartbeat", HeartbeatRequest("g", generation, member))
        assert beat.error_code == ErrorCode.unknown_member_id.value
        core.close()

    asyncio.run(scenario())


def test_a_parked_join_is_answered_when_the_join_phase_ends(tmp_path):
    async def scenario():
        core = await open_core(tmp_path)
        await core.auto_create_topic(OFFSETS_TOPIC)
        member, _ = await join_and_sync(core, "g")
        # A second member's join starts a rebalance; its answer waits for the first to rejoin.
        first = await core.groups.call(
            "join_group", JoinGroupRequest("g", "", 10_000, 10_000, "consumer", PROTOCOLS)
        )
        parked = asyncio.ensure_future(
            core.groups.call(
                "join_group",
                JoinGroupRequest("g", first.member_id, 10_000, 10_000, "consumer", PROTOCOLS),
            )
        )
        await asyncio.sleep(0.05)
        assert not parked.done()
        rejoin = await core.groups.call(
            "join_group", JoinGroupRequest("g", member, 10_000, 10_000, "consumer", PROTOCOLS)
        )
        second = await asyncio.wait_for(parked, 5)
        assert (rejoin.error_code, second.error_code) == (NONE, NONE)
        assert rejoin.generation_id == second.generation_id == 2
        core.close()

    asyncio.run(scenario())


def test_loading_reads_the_log_in_many_steps_and_keeps_the_last_commit(tmp_path, monkeypatch):
    from odradek.broker import coordinator_runtime

    async def commit_many():
        core = await open_core(tmp_path)
        await core.auto_create_topic(OFFSETS_TOPIC)
        for i in range(50):
            for group in ("a", "b", "c", "d"):
                req = OffsetCommitRequest(group, {"t": (OffsetCommitPartition(i % 3, 1000 + i),)})
                answer = await core.groups.call("offset_commit", req)
                assert answer.topics["t"][0][1] == NONE
        core.close()

    async def reload():
        monkeypatch.setattr(coordinator_runtime, "LOAD_READ_BYTES", 300)  # a few batches per read
        monkeypatch.setattr(coordinator_runtime, "LOAD_YIELD_EVERY_READS", 1)
        core = await open_core(tmp_path)
        yielded = 0
        while core.groups.coordinator.loading:
            yielded += 1
            await asyncio.sleep(0)
        assert yielded > 3  # the loader gave the loop many turns
        result = {g: fetch(core, g) for g in ("a", "b", "c", "d")}
        core.close()
        return result

    asyncio.run(commit_many())
    expected = (NONE, {("t", 0): 1048, ("t", 1): 1049, ("t", 2): 1047})
    assert asyncio.run(reload()) == dict.fromkeys("abcd", expected)
