"""Committed offsets: OffsetCommit (group and simple), OffsetFetch, OffsetDelete, DeleteGroups,
expiry, and replay of __consumer_offsets after a restart."""

import struct

from odradek.coordinator.group import GroupConfig, GroupState
from odradek.coordinator.harness import GroupHarness
from odradek.coordinator.messages import OffsetFetchGroup
from odradek.coordinator.records import (
    OffsetCommitKey,
    decode_key,
    decode_offset_commit_value,
)
from odradek.protocol.errors import ErrorCode

E = ErrorCode
S = GroupState
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def commit_errors(h, token):
    return {(t, p): e for t, ps in h.answer(token).topics.items() for p, e in ps}


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0: version, topics, null user data."""
    out = b"\x00\x00" + struct.pack(">i", len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + b"\xff\xff\xff\xff"


# --- simple commits --------------------------------------------------------------------


def test_simple_commit_creates_an_empty_group_and_is_fetched():
    h = GroupHarness()
    t = h.commit("simple", {("orders", 0): 10, ("orders", 1): 20})
    assert set(commit_errors(h, t).values()) == {0}
    assert h.fetch("simple") == {("orders", 0): 10, ("orders", 1): 20}
    group = h.group("simple")
    assert group.state is S.EMPTY and group.protocol_type is None
    assert [(g.group_id, g.protocol_type, g.group_state) for g in h.coordinator.list_groups()] == [
        ("simple", "", "Empty")
    ]


def test_commit_is_written_as_kafka_does_and_fetch_returns_epoch_and_metadata():
    h = GroupHarness(now_ms=5_000)
    h.commit("simple", {("orders", 3): 42}, metadata="hello")
    p = h.coordinator.partition_for("simple")
    ((key, value),) = h.log[p]
    assert decode_key(key) == OffsetCommitKey("simple", "orders", 3)
    assert value[:2] == b"\x00\x03"  # v3: no explicit retention
    v = decode_offset_commit_value(value)
    assert (v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms) == (42, 7, "hello", 5_000)
    (g,) = h.coordinator.offset_fetch([OffsetFetchGroup("simple", {"orders": (3,)})])
    (fetched,) = g.topics["orders"]
    assert (fetched.offset, fetched.leader_epoch, fetched.metadata) == (42, 7, "hello")


def test_commit_with_retention_time_writes_value_v1_with_expire_timestamp():
    h = GroupHarness(now_ms=1_000)
    h.commit("simple", {("t", 0): 1}, retention_time_ms=60_000)
    ((_, value),) = h.log[h.coordinator.partition_for("simple")]
    assert value[:2] == b"\x00\x01"
    assert decode_offset_commit_value(value).expire_timestamp_ms == 61_000


def test_simple_commit_to_a_group_with_members_is_unknown_member():
    h = GroupHarness()
    h.form_group("g", 1)
    t = h.commit("g", {("t", 0): 1})
    assert commit_errors(h, t) == {("t", 0): E.unknown_member_id.value}


def test_group_commit_to_an_unknown_group_is_illegal_generation():
    h = GroupHarness()
    t = h.commit("g", {("t", 0): 1}, generation_id=3, member_id="m")
    assert commit_errors(h, t) == {("t", 0): E.illegal_generation.value}
    assert "g" not in h.coordinator.groups


# --- group commits -----------------------------------------------------------------------


def test_group_commit_checks_member_and_generation():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    assert commit_errors(h, h.commit("g", {("t", 0): 5}, 1, a)) == {("t", 0): 0}
    assert commit_errors(h, h.commit("g", {("t", 0): 6}, 0, a)) == {
        ("t", 0): E.illegal_generation.value
    }
    assert commit_errors(h, h.commit("g", {("t", 0): 6}, 1, "ghost")) == {
        ("t", 0): E.unknown_member_id.value
    }
    assert h.fetch("g", {"t": (0,)}) == {("t", 0): 5}


def test_commit_during_preparing_rebalance_is_allowed_but_not_during_completing_rebalance():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    h.join("g", a)  # leader rejoins: PreparingRebalance
    assert commit_errors(h, h.commit("g", {("t", 0): 1}, 1, b)) == {("t", 0): 0}
    h.join("g", b)  # all joined: CompletingRebalance, generation 2
    assert h.group("g").state is S.COMPLETING_REBALANCE
    assert commit_errors(h, h.commit("g", {("t", 0): 2}, 2, b)) == {
        ("t", 0): E.rebalance_in_progress.value
    }


def test_commit_by_a_fenced_static_member_is_fenced():
    h = GroupHarness()
    t = h.join("g", instance_id="i-1")
    h.wait_for(t)
    old = h.answer(t).member_id
    h.complete_sync("g", [old])
    h.join("g", instance_id="i-1")  # restarted instance replaces the old member id
    t = h.commit("g", {("t", 0): 1}, 1, old, instance_id="i-1")
    assert commit_errors(h, t) == {("t", 0): E.fenced_instance_id.value}


def test_too_large_metadata_is_rejected_per_partition():
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=4, offset_metadata_max_bytes=4))
    t = h.commit("s", {("t", 0): 1}, metadata="12345")
    assert commit_errors(h, t) == {("t", 0): E.offset_metadata_too_large.value}


def test_commit_is_answered_and_visible_only_after_its_append_completes():
    h = GroupHarness()
    token = h.token()
    from odradek.coordinator.messages import OffsetCommitPartition, OffsetCommitRequest

    req = OffsetCommitRequest("s", {"t": (OffsetCommitPartition(0, 9),)})
    result = h.coordinator.offset_commit(req, 0, token)
    assert result.responses == [] and len(result.appends) == 1
    assert h.fetch("s", {"t": (0,)}) == {("t", 0): -1}
    done = h.coordinator.on_append_complete(result.appends[0].append_id, 0, 1)
    assert done.response_for(token).topics == {"t": ((0, 0),)}
    assert h.fetch("s", {"t": (0,)}) == {("t", 0): 9}


def test_failed_commit_append_is_mapped_to_kafkas_error_and_not_applied():
    h = GroupHarness()
    h.fail_next_appends = [E.not_leader_or_follower.value]
    t = h.commit("s", {("t", 0): 1})
    assert commit_errors(h, t) == {("t", 0): E.not_coordinator.value}
    h.fail_next_appends = [E.record_list_too_large.value]
    t = h.commit("s", {("t", 0): 1})
    assert commit_errors(h, t) == {("t", 0): E.invalid_commit_offset_size.value}
    assert h.fetch("s") == {}


# --- fetch ------------------------------------------------------------------------------


def test_fetch_all_partitions_when_topics_is_null_and_minus_one_when_nothing_committed():
    h = GroupHarness()
    h.commit("a", {("x", 1): 11, ("x", 0): 10, ("y", 0): 5})
    h.commit("b", {("x", 0): 99})
    ga, gb, gc = h.coordinator.offset_fetch(
        [
            OffsetFetchGroup("a", None),
            OffsetFetchGroup("b", {"x": (0, 1)}),
            OffsetFetchGroup("nobody", {"x": (0,)}),
        ]
    )
    assert {t: [(p.partition, p.offset) for p in ps] for t, ps in ga.topics.items()} == {
        "x": [(0, 10), (1, 11)],
        "y": [(0, 5)],
    }
    assert [(p.partition, p.offset) for p in gb.topics["x"]] == [(0, 99), (1, -1)]
    assert gc.error_code == 0 and gc.topics["x"][0].offset == -1


def test_fetch_from_a_loading_partition_is_load_in_progress():
    h = GroupHarness()
    h.coordinator.begin_loading(h.coordinator.partition_for("a"))
    (g,) = h.coordinator.offset_fetch([OffsetFetchGroup("a", None)])
    assert g.error_code == E.coordinator_load_in_progress.value


# --- OffsetDelete and DeleteGroups ---------------------------------------------------------


def offset_delete(h, group_id, topics):
    from odradek.coordinator.messages import OffsetDeleteRequest

    t = h.token()
    h.run(h.coordinator.offset_delete(OffsetDeleteRequest(group_id, topics), h.now_ms, t))
    return h.answer(t)


def test_offset_delete_of_an_empty_group_writes_tombstones():
    h = GroupHarness()
    h.commit("s", {("t", 0): 1, ("t", 1): 2})
    r = offset_delete(h, "s", {"t": (0, 5)})
    assert r.error_code == 0 and r.topics == {"t": ((0, 0), (5, 0))}
    assert h.fetch("s") == {("t", 1): 2}
    key, value = h.log[h.coordinator.partition_for("s")][-1]
    assert decode_key(key) == OffsetCommitKey("s", "t", 0) and value is None


def test_offset_delete_refuses_topics_a_stable_consumer_group_subscribes_to():
    h = GroupHarness()
    (a,) = h.form_group("g", 1, protocols=(("range", subscription("orders")),))
    h.commit("g", {("orders", 0): 1, ("old", 0): 2}, 1, a)
    r = offset_delete(h, "g", {"orders": (0,), "old": (0,)})
    assert r.topics == {"orders": ((0, E.group_subscribed_to_topic.value),), "old": ((0, 0),)}
    assert h.fetch("g") == {("orders", 0): 1}


def test_offset_delete_errors_for_unknown_and_non_consumer_groups():
    h = GroupHarness()
    assert offset_delete(h, "nope", {"t": (0,)}).error_code == E.group_id_not_found.value
    h.form_group("connect", 1, protocol_type="connect")
    assert offset_delete(h, "connect", {"t": (0,)}).error_code == E.non_empty_group.value


def delete_groups(h, *group_ids):
    t = h.token()
    h.run(h.coordinator.delete_groups(group_ids, h.now_ms, t))
    return dict(h.answer(t).results)


def test_delete_groups_removes_empty_groups_and_their_offsets_and_refuses_others():
    h = GroupHarness()
    h.commit("s", {("t", 0): 1})
    h.form_group("busy", 1)
    assert delete_groups(h, "s", "busy", "nope") == {
        "s": 0,
        "busy": E.non_empty_group.value,
        "nope": E.group_id_not_found.value,
    }
    assert "s" not in h.coordinator.groups and h.fetch("s") == {}
    tail = h.log[h.coordinator.partition_for("s")][-2:]
    assert [v for _, v in tail] == [None, None]  # offset tombstone, then group tombstone
    h.restart()
    assert "s" not in h.coordinator.groups and h.fetch("s") == {}


# --- expiry --------------------------------------------------------------------------------


def test_offsets_of_a_simple_group_expire_after_retention_and_the_group_goes():
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=4, offsets_retention_minutes=60))
    h.commit("s", {("t", 0): 1})
    h.advance(30 * 60_000)
    h.commit("s", {("t", 1): 2})
    h.advance(30 * 60_000)  # t-0 is an hour old now
    h.advance(10 * 60_000)  # the next retention check
    assert h.fetch("s") == {("t", 1): 2}
    h.advance(30 * 60_000)
    assert "s" not in h.coordinator.groups
    h.restart()
    assert h.fetch("s") == {} and "s" not in h.coordinator.groups


def test_explicit_retention_wins_over_the_default():
    h = GroupHarness(
        GroupConfig(offsets_topic_num_partitions=4, offsets_retention_check_interval_ms=1_000)
    )
    h.commit("s", {("t", 0): 1}, retention_time_ms=5_000)
    h.advance(1_000)
    h.advance(4_000)
    assert h.fetch("s") == {}


def test_an_empty_consumer_groups_offsets_expire_from_when_it_became_empty():
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=4, offsets_retention_minutes=60))
    (a,) = h.form_group("g", 1, session_timeout_ms=1_800_000)
    h.commit("g", {("t", 0): 1}, 1, a)
    for _ in range(12):  # the member stays two hours, heartbeating
        h.advance(600_000 - 1)
        assert h.heartbeat("g", a, 1) == 0
    h.advance(1)
    assert h.fetch("g") == {("t", 0): 1}  # Stable and subscribed to "t" (harness subscription)
    h.leave("g", (a, None))
    h.advance(50 * 60_000)
    assert h.fetch("g") == {("t", 0): 1}
    h.advance(20 * 60_000)
    assert h.fetch("g") == {} and "g" not in h.coordinator.groups


def test_a_stable_groups_offsets_of_unsubscribed_topics_expire_and_subscribed_ones_stay():
    h = GroupHarness(
        GroupConfig(
            offsets_topic_num_partitions=4,
            offsets_retention_minutes=10,
            offsets_retention_check_interval_ms=60_000,
        )
    )
    (a,) = h.form_group(
        "g", 1, protocols=(("range", subscription("orders")),), session_timeout_ms=120_000
    )
    h.commit("g", {("orders", 0): 1, ("old", 0): 2}, 1, a)
    for _ in range(12):
        h.advance(60_000)
        assert h.heartbeat("g", a, 1) == 0
    assert h.fetch("g") == {("orders", 0): 1}


# --- replay after restart ------------------------------------------------------------------


def snapshot(h):
    out = {}
    for gid, g in sorted(h.coordinator.groups.items()):
        out[gid] = (
            g.state,
            g.generation_id,
            g.protocol_type,
            g.protocol_name,
            g.leader_id,
            [
                (
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.session_timeout_ms,
                    m.rebalance_timeout_ms,
                    m.assignment,
                    m.metadata_for(g.protocol_name),
                )
                for m in g.members.values()
            ],
        )
    return out, {g: dict(o) for g, o in h.coordinator.offsets.committed.items()}


def test_replay_after_restart_yields_the_same_groups_and_offsets():
    h = GroupHarness()
    a, b = h.form_group("stable", 2)
    h.commit("stable", {("t", 0): 5, ("t", 1): 6}, 1, a)
    (c,) = h.form_group("emptied", 1)
    h.leave("emptied", (c, None))
    h.commit("emptied", {("u", 0): 7})
    h.commit("simple", {("v", 0): 8})
    h.commit("simple", {("v", 0): 9})
    static = h.join("static", instance_id="i-1")
    h.wait_for(static)
    h.complete_sync("static", [h.answer(static).member_id])
    before = snapshot(h)
    h.restart()
    assert snapshot(h) == before
    assert h.group("stable").state is S.STABLE and h.group("emptied").state is S.EMPTY
    # the members carry on with the same generation
    assert h.heartbeat("stable", a, 1) == 0
    r = h.answer(h.sync("stable", b, 1))
    assert r.error_code == 0 and r.assignment == b"assignment-1"


def test_members_of_a_reloaded_group_must_heartbeat_within_their_session_timeout():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    h.restart()
    h.advance(5_000)
    h.heartbeat("g", a, 1)
    h.advance(5_000)
    assert list(h.group("g").members) == [a]
    assert h.group("g").state is S.PREPARING_REBALANCE


# --- commits in flight -------------------------------------------------------------------


def _commit_in_flight(h, group_id, tp, offset):
    from odradek.coordinator.messages import OffsetCommitPartition, OffsetCommitRequest

    token = h.token()
    req = OffsetCommitRequest(group_id, {tp[0]: (OffsetCommitPartition(tp[1], offset),)})
    result = h.coordinator.offset_commit(req, h.now_ms, token)
    (append,) = result.appends
    h.log.setdefault(append.partition, []).extend(append.records)  # written, not yet acknowledged
    return append


def test_a_commit_in_flight_does_not_resurrect_offsets_deleted_meanwhile():
    h = GroupHarness()
    h.commit("s", {("t", 0): 1})
    append = _commit_in_flight(h, "s", ("t", 0), 2)
    assert offset_delete(h, "s", {"t": (0,)}).error_code == 0
    h.run(h.coordinator.on_append_complete(append.append_id, 0, h.now_ms))
    assert h.fetch("s") == {}
    h.restart()
    assert h.fetch("s") == {}


def test_a_group_deleted_while_a_commit_is_in_flight_stays_deleted_after_replay():
    h = GroupHarness()
    h.commit("s", {("t", 0): 1})
    append = _commit_in_flight(h, "s", ("t", 1), 2)
    assert delete_groups(h, "s") == {"s": 0}
    h.run(h.coordinator.on_append_complete(append.append_id, 0, h.now_ms))
    assert h.fetch("s") == {} and "s" not in h.coordinator.groups
    h.restart()
    assert h.fetch("s") == {} and "s" not in h.coordinator.groups


def test_offsets_with_a_commit_in_flight_do_not_expire():
    h = GroupHarness(
        GroupConfig(
            offsets_topic_num_partitions=4,
            offsets_retention_minutes=1,
            offsets_retention_check_interval_ms=1_000,
        )
    )
    h.commit("s", {("t", 0): 1})
    h.advance(1_000)
    h.advance(58_000)
    append = _commit_in_flight(h, "s", ("t", 0), 2)
    h.advance(2_000)  # the offset committed at 0 is past retention, but a commit is in flight
    assert "s" in h.coordinator.groups and h.coordinator.offsets.get("s", ("t", 0)).offset == 1
    h.run(h.coordinator.on_append_complete(append.append_id, 0, h.now_ms))
    assert h.fetch("s") == {("t", 0): 2}
