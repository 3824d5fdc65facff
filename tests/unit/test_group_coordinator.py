"""The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, timers, static
membership, and the coordinator-level errors, driven through GroupHarness."""

import pytest

from odradek.coordinator.group import TRANSITIONS, GroupConfig, GroupState
from odradek.coordinator.group_coordinator import GroupCoordinator
from odradek.coordinator.harness import DEFAULT_PROTOCOLS, GroupHarness
from odradek.coordinator.messages import HeartbeatRequest, JoinGroupRequest
from odradek.coordinator.records import GroupMetadataKey, decode_group_metadata_value, decode_key
from odradek.protocol.errors import ErrorCode

E = ErrorCode
S = GroupState


def group_records(h: GroupHarness, group_id: str):
    p = h.coordinator.partition_for(group_id)
    return [
        (None if v is None else decode_group_metadata_value(v))
        for k, v in h.log.get(p, [])
        if decode_key(k) == GroupMetadataKey(group_id)
    ]


# --- joining -------------------------------------------------------------------------------


def test_first_join_without_member_id_gets_member_id_required_with_a_generated_id():
    h = GroupHarness()
    r = h.answer(h.join("g", client_id="app"))
    assert r.error_code == E.member_id_required.value
    assert r.member_id.startswith("app-")
    assert r.member_id in h.group("g").pending_members
    assert h.group("g").members == {}


def test_join_v3_without_member_id_joins_at_once():
    h = GroupHarness()
    t = h.join("g", require_known_member_id=False)
    assert h.answer(t) is None  # parked during the initial rebalance delay
    assert h.group("g").state is S.PREPARING_REBALANCE
    h.advance(3_000)
    assert h.answer(t).error_code == 0 and h.answer(t).generation_id == 1


def test_initial_rebalance_delay_waits_for_more_members_and_then_answers_all():
    h = GroupHarness()
    a = h.join_new_member("g")
    h.advance(2_000)
    b = h.join_new_member("g")
    h.advance(1_000)  # the first delay ends at 3000, but a member arrived: wait another 3000
    assert h.answer(a) is None and h.answer(b) is None
    h.advance(2_999)
    assert h.answer(a) is None
    h.advance(1)
    ra, rb = h.answer(a), h.answer(b)
    assert (ra.error_code, rb.error_code) == (0, 0)
    assert ra.generation_id == rb.generation_id == 1
    assert ra.leader == rb.leader == ra.member_id
    assert ra.protocol_name == "range" and ra.protocol_type == "consumer"
    assert [m.member_id for m in ra.members] == [ra.member_id, rb.member_id]
    assert rb.members == ()
    assert h.group("g").state is S.COMPLETING_REBALANCE


def test_without_an_initial_delay_the_first_member_is_answered_at_once():
    h = GroupHarness(
        GroupConfig(offsets_topic_num_partitions=4, group_initial_rebalance_delay_ms=0)
    )
    r = h.answer(h.join_new_member("g"))
    assert r is not None and r.error_code == 0 and r.generation_id == 1


def test_initial_delay_is_bounded_by_the_rebalance_timeout():
    h = GroupHarness(
        GroupConfig(offsets_topic_num_partitions=4, group_initial_rebalance_delay_ms=3_000)
    )
    a = h.join_new_member("g", rebalance_timeout_ms=5_000)
    for _ in range(4):  # members keep arriving every 2.5 s
        h.advance(2_500)
        h.join_new_member("g", rebalance_timeout_ms=5_000)
    # initial 3000, then at most 5000-3000 = 2000 more
    assert h.answer(a) is not None and h.answer(a).error_code == 0


def test_sync_group_distributes_the_leaders_assignment_and_stores_the_group():
    h = GroupHarness()
    ids = h.form_group("g", 3)
    group = h.group("g")
    assert group.state is S.STABLE
    assert [group.members[m].assignment for m in ids] == [
        b"assignment-0",
        b"assignment-1",
        b"assignment-2",
    ]
    (stored,) = group_records(h, "g")
    assert stored.generation == 1 and stored.leader == ids[0] and stored.protocol == "range"
    assert [m.assignment for m in stored.members] == [
        b"assignment-0",
        b"assignment-1",
        b"assignment-2",
    ]


def test_follower_sync_is_parked_until_the_leader_syncs():
    h = GroupHarness()
    a, b = h.join_new_member("g"), h.join_new_member("g")
    h.wait_for(a, b)
    leader, follower = h.answer(a).member_id, h.answer(b).member_id
    t = h.sync("g", follower, 1)
    assert h.answer(t) is None
    h.sync("g", leader, 1, {leader: b"L", follower: b"F"})
    assert h.answer(t).assignment == b"F"


def test_a_member_missing_from_the_leaders_assignment_gets_an_empty_one():
    h = GroupHarness()
    a, b = h.join_new_member("g"), h.join_new_member("g")
    h.wait_for(a, b)
    leader, follower = h.answer(a).member_id, h.answer(b).member_id
    t = h.sync("g", follower, 1)
    h.sync("g", leader, 1, {leader: b"L", "stranger": b"?"})
    assert h.answer(t).error_code == 0 and h.answer(t).assignment == b""


def test_protocol_is_the_one_all_members_support_with_most_votes():
    h = GroupHarness()
    h.join_new_member("g", protocols=(("range", b"1"), ("roundrobin", b"1")))
    h.join_new_member("g", protocols=(("roundrobin", b"2"), ("range", b"2"), ("sticky", b"2")))
    t = h.join_new_member("g", protocols=(("sticky", b"3"), ("roundrobin", b"3"), ("range", b"3")))
    h.wait_for(t)
    assert h.group("g").protocol_name == "roundrobin"


def test_join_with_another_protocol_type_or_no_common_protocol_is_inconsistent():
    h = GroupHarness()
    h.form_group("g", 1)
    r = h.answer(h.join("g", protocol_type="connect"))
    assert r.error_code == E.inconsistent_group_protocol.value
    r = h.answer(h.join("g", protocols=(("cooperative-sticky", b""),)))
    assert r.error_code == E.inconsistent_group_protocol.value


def test_empty_protocol_type_or_no_protocols_is_inconsistent():
    h = GroupHarness()
    assert h.answer(h.join("g", protocol_type="")).error_code == E.inconsistent_group_protocol.value
    assert h.answer(h.join("g2", protocols=())).error_code == E.inconsistent_group_protocol.value
    assert "g" not in h.coordinator.groups and "g2" not in h.coordinator.groups


@pytest.mark.parametrize("session_timeout_ms", [5_999, 1_800_001])
def test_session_timeout_out_of_bounds_is_invalid(session_timeout_ms):
    h = GroupHarness()
    r = h.answer(h.join("g", session_timeout_ms=session_timeout_ms))
    assert r.error_code == E.invalid_session_timeout.value


def test_join_with_unknown_member_id_of_an_unknown_group_is_unknown_member():
    h = GroupHarness()
    assert h.answer(h.join("g", "ghost")).error_code == E.unknown_member_id.value


def test_empty_group_id_is_invalid():
    h = GroupHarness()
    assert h.answer(h.join("")).error_code == E.invalid_group_id.value


def test_group_max_size_rejects_the_member_beyond_it():
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=4, group_max_size=2))
    h.form_group("g", 2)
    r = h.answer(h.join("g"))
    assert r.error_code == E.group_max_size_reached.value
    assert len(h.group("g").members) == 2 and h.group("g").state is S.STABLE


def test_group_max_size_counts_members_awaiting_join_during_a_rebalance():
    h = GroupHarness(GroupConfig(offsets_topic_num_partitions=4, group_max_size=1))
    h.join_new_member("g")
    r = h.answer(h.join("g", require_known_member_id=False))
    assert r.error_code == E.group_max_size_reached.value


# --- rebalances --------------------------------------------------------------------------


def test_a_new_member_triggers_a_rebalance_that_completes_when_all_rejoin():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    c_token = h.join_new_member("g")
    assert h.group("g").state is S.PREPARING_REBALANCE
    assert h.heartbeat("g", a, 1) == E.rebalance_in_progress.value
    ta = h.join("g", a)
    assert h.answer(ta) is None and h.answer(c_token) is None
    tb = h.join("g", b)  # the last one: no delay for a non-empty group
    ra, rb, rc = h.answer(ta), h.answer(tb), h.answer(c_token)
    assert {ra.generation_id, rb.generation_id, rc.generation_id} == {2}
    assert ra.leader == a and len(ra.members) == 3
    h.complete_sync("g", [a, b, rc.member_id])
    assert h.group("g").state is S.STABLE and h.group("g").generation_id == 2


def test_leader_rejoining_a_stable_group_forces_a_rebalance_but_a_follower_does_not():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    r = h.answer(h.join("g", b))  # follower, same metadata: current generation, no rebalance
    assert r.error_code == 0 and r.generation_id == 1 and r.members == ()
    assert h.group("g").state is S.STABLE
    h.join("g", a)
    assert h.group("g").state is S.PREPARING_REBALANCE


def test_a_member_that_misses_heartbeats_is_removed_and_the_group_rebalances():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    h.advance(6_000)
    assert h.heartbeat("g", a, 1) == 0
    h.advance(4_000)  # b's session (10 s) ends
    assert h.group("g").state is S.PREPARING_REBALANCE
    assert b not in h.group("g").members
    assert h.heartbeat("g", b, 1) == E.unknown_member_id.value


def test_heartbeats_keep_members_alive_indefinitely():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    for _ in range(20):
        h.advance(5_000)
        assert h.heartbeat("g", a, 1) == 0
        assert h.heartbeat("g", b, 1) == 0
    assert h.group("g").state is S.STABLE


def test_rebalance_timeout_removes_members_that_did_not_rejoin():
    h = GroupHarness()
    a, _b = h.form_group("g", 2, rebalance_timeout_ms=20_000, session_timeout_ms=30_000)
    ta = h.join("g", a, rebalance_timeout_ms=20_000, session_timeout_ms=30_000)
    h.advance(19_999)
    assert h.answer(ta) is None
    h.advance(1)
    r = h.answer(ta)
    assert r.error_code == 0 and r.generation_id == 2 and [m.member_id for m in r.members] == [a]
    assert list(h.group("g").members) == [a]


def test_leader_that_does_not_rejoin_is_replaced_by_a_member_that_did():
    h = GroupHarness()
    _a, b = h.form_group("g", 2, session_timeout_ms=30_000)
    tb = h.join("g", b, session_timeout_ms=30_000, protocols=(("range", b"changed"),))
    h.advance(30_000)
    r = h.answer(tb)
    assert r.leader == b and h.group("g").leader_id == b


def test_a_member_that_never_syncs_is_removed_after_the_rebalance_timeout():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    h.join("g", a)
    h.join("g", b)
    t = h.sync("g", a, 2, {a: b"A", b: b"B"})
    assert h.answer(t).error_code == 0
    for _ in range(5):
        h.advance(5_000)
        assert h.heartbeat("g", a, 2) == h.heartbeat("g", b, 2) == 0  # heartbeats are not syncs
    h.advance(5_000)
    assert b not in h.group("g").members
    assert h.group("g").state is S.PREPARING_REBALANCE


def test_a_pending_member_that_never_joins_again_expires_after_its_session_timeout():
    h = GroupHarness()
    h.join("g")  # MEMBER_ID_REQUIRED, then silence
    assert h.group("g").pending_members
    h.advance(10_000)
    assert not h.group("g").pending_members


def test_a_new_member_that_disconnects_mid_join_is_dropped_after_five_minutes():
    h = GroupHarness()
    _a, _b = h.form_group("g", 2, session_timeout_ms=600_000, rebalance_timeout_ms=900_000)
    t = h.join_new_member("g", session_timeout_ms=600_000, rebalance_timeout_ms=900_000)
    h.advance(300_000)
    assert h.answer(t).error_code == E.unknown_member_id.value


def test_a_parked_join_answer_is_superseded_by_a_duplicate_join():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    t1 = h.join("g", a)
    t2 = h.join("g", a)
    assert h.answer(t1).error_code == E.rebalance_in_progress.value
    assert h.answer(t2) is None


# --- generations and errors ------------------------------------------------------------


def test_stale_generation_is_illegal_for_heartbeat_and_sync():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    assert h.heartbeat("g", a, 0) == E.illegal_generation.value
    assert h.answer(h.sync("g", a, 7)).error_code == E.illegal_generation.value


def test_unknown_member_for_heartbeat_sync_and_unknown_group():
    h = GroupHarness()
    h.form_group("g", 1)
    assert h.heartbeat("g", "nobody", 1) == E.unknown_member_id.value
    assert h.answer(h.sync("g", "nobody", 1)).error_code == E.unknown_member_id.value
    assert h.heartbeat("other", "x", 1) == E.unknown_member_id.value


def test_sync_during_preparing_rebalance_is_rebalance_in_progress():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    h.join("g", a)
    assert h.answer(h.sync("g", b, 1)).error_code == E.rebalance_in_progress.value


def test_sync_v5_checks_protocol_type_and_name():
    h = GroupHarness()
    _a, b = h.form_group("g", 2)
    assert (
        h.answer(h.sync("g", b, 1, protocol_type="connect")).error_code
        == E.inconsistent_group_protocol.value
    )
    assert (
        h.answer(h.sync("g", b, 1, protocol_name="sticky")).error_code
        == E.inconsistent_group_protocol.value
    )
    r = h.answer(h.sync("g", b, 1, protocol_type="consumer", protocol_name="range"))
    assert r.error_code == 0 and r.assignment == b"assignment-1"


def test_parked_syncs_get_rebalance_in_progress_when_a_member_joins_before_the_leader_syncs():
    h = GroupHarness()
    a, b = h.join_new_member("g"), h.join_new_member("g")
    h.wait_for(a, b)
    follower = h.answer(b).member_id
    t = h.sync("g", follower, 1)
    h.join_new_member("g")
    assert h.answer(t).error_code == E.rebalance_in_progress.value


def test_failed_assignment_write_fails_the_syncs_and_restarts_the_rebalance():
    h = GroupHarness()
    a, b = h.join_new_member("g"), h.join_new_member("g")
    h.wait_for(a, b)
    leader, follower = h.answer(a).member_id, h.answer(b).member_id
    tf = h.sync("g", follower, 1)
    h.fail_next_appends = [E.not_leader_or_follower.value]
    tl = h.sync("g", leader, 1, {leader: b"L", follower: b"F"})
    assert h.answer(tl).error_code == E.not_coordinator.value
    assert h.answer(tf).error_code == E.not_coordinator.value
    assert h.group("g").state is S.PREPARING_REBALANCE


def test_heartbeat_during_completing_rebalance_is_fine():
    h = GroupHarness()
    a = h.join_new_member("g")
    h.advance(3_000)
    assert h.heartbeat("g", h.answer(a).member_id, 1) == 0


# --- leaving ------------------------------------------------------------------------------


def test_leave_triggers_a_rebalance_and_the_last_leave_empties_the_group():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    r = h.leave("g", (b, None))
    assert r.error_code == 0 and [m.error_code for m in r.members] == [0]
    assert h.group("g").state is S.PREPARING_REBALANCE
    ta = h.join("g", a)
    assert h.answer(ta).generation_id == 2 and h.answer(ta).members[0].member_id == a
    h.complete_sync("g", [a])
    h.leave("g", (a, None))
    group = h.group("g")
    assert group.state is S.EMPTY and group.generation_id == 3 and group.members == {}
    assert group_records(h, "g")[-1].members == () and group_records(h, "g")[-1].generation == 3


def test_leave_v3_batch_reports_per_member_errors():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    r = h.leave("g", (a, None), ("nobody", None), (b, None))
    assert [m.error_code for m in r.members] == [0, E.unknown_member_id.value, 0]
    r = h.leave("missing-group", ("x", None))
    assert r.error_code == 0 and r.members[0].error_code == E.unknown_member_id.value


def test_leave_answers_a_parked_join_of_the_leaving_member():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    ta = h.join("g", a)
    h.leave("g", (a, None))
    assert h.answer(ta).error_code == E.unknown_member_id.value


# --- static membership (KIP-345) -----------------------------------------------------------


def static_group(h: GroupHarness, instances=("i-a", "i-b")):
    tokens = [h.join("g", instance_id=i) for i in instances]
    h.wait_for(*tokens)
    ids = [h.answer(t).member_id for t in tokens]
    h.complete_sync("g", ids)
    return ids


def test_static_member_joins_without_member_id_required():
    h = GroupHarness()
    r = h.answer(h.join("g", instance_id="i-a", require_known_member_id=True))
    assert r is None  # parked in the rebalance, not MEMBER_ID_REQUIRED
    assert h.group("g").static_members["i-a"] in h.group("g").members


def test_static_member_rejoining_with_same_metadata_gets_its_assignment_back_without_rebalance():
    h = GroupHarness()
    _a, b = static_group(h)
    r = h.answer(h.join("g", instance_id="i-b"))  # restarted: no member id
    assert r.error_code == 0 and r.generation_id == 1 and r.member_id != b
    assert h.group("g").state is S.STABLE
    t = h.sync("g", r.member_id, 1, instance_id="i-b")
    assert h.answer(t).assignment == b"assignment-1"
    assert group_records(h, "g")[-1].members[1].member_id == r.member_id


def test_the_old_member_id_of_a_replaced_static_member_is_fenced():
    h = GroupHarness()
    _a, b = static_group(h)
    new_b = h.answer(h.join("g", instance_id="i-b")).member_id
    assert h.heartbeat("g", b, 1, instance_id="i-b") == E.fenced_instance_id.value
    assert h.answer(h.sync("g", b, 1, instance_id="i-b")).error_code == E.fenced_instance_id.value
    assert h.answer(h.join("g", b, instance_id="i-b")).error_code == E.fenced_instance_id.value
    assert h.heartbeat("g", new_b, 1, instance_id="i-b") == 0


def test_static_leader_rejoin_gets_members_and_skip_assignment():
    h = GroupHarness()
    _a, _b = static_group(h)
    r = h.answer(h.join("g", instance_id="i-a"))
    assert r.skip_assignment and r.leader == r.member_id and len(r.members) == 2
    assert h.group("g").state is S.STABLE


def test_static_leader_rejoin_before_join_group_v9_gets_no_members():
    h = GroupHarness()
    static_group(h)
    r = h.answer(h.join("g", instance_id="i-a", supports_skip_assignment=False))
    assert (
        r.error_code == 0 and r.members == () and not r.skip_assignment and r.leader == r.member_id
    )


def test_static_member_ids_start_with_the_group_instance_id():
    h = GroupHarness()
    a, b = static_group(h)
    assert a.startswith("i-a-") and b.startswith("i-b-")


def test_static_member_rejoining_with_a_protocol_change_rebalances():
    h = GroupHarness()
    static_group(h)
    t = h.join("g", instance_id="i-b", protocols=(("roundrobin", b""), ("range", b"new")))
    assert h.answer(t) is None and h.group("g").state is S.PREPARING_REBALANCE


def test_static_members_are_kept_when_they_miss_a_rebalance():
    h = GroupHarness()
    a, b = static_group(h)
    h.heartbeat("g", b, 1, instance_id="i-b")
    ta = h.join("g", a, instance_id="i-a")
    for _ in range(6):  # b keeps heartbeating but does not rejoin before the rebalance timeout
        h.advance(5_000)
        h.heartbeat("g", b, 1, instance_id="i-b")
    assert h.answer(ta).generation_id == 2
    assert b in h.group("g").members


def test_failed_static_rejoin_write_reverts_to_the_old_member_id():
    h = GroupHarness()
    _a, b = static_group(h)
    h.fail_next_appends = [E.not_leader_or_follower.value]
    r = h.answer(h.join("g", instance_id="i-b"))
    assert r.error_code == E.not_coordinator.value
    assert h.group("g").static_members["i-b"] == b
    assert h.heartbeat("g", b, 1, instance_id="i-b") == 0


def test_leave_by_instance_id_alone_removes_the_static_member():
    h = GroupHarness()
    _a, b = static_group(h)
    r = h.leave("g", ("", "i-b"))
    assert r.members[0].error_code == 0 and b not in h.group("g").members
    assert h.leave("g", ("", "i-zzz")).members[0].error_code == E.unknown_member_id.value


# --- coordinator-level ----------------------------------------------------------------------


def test_requests_for_a_loading_or_foreign_partition_get_coordinator_errors():
    config = GroupConfig(offsets_topic_num_partitions=2)
    gc = GroupCoordinator(config)
    p = gc.partition_for("g")
    req = JoinGroupRequest("g", "", 10_000, 30_000, "consumer", DEFAULT_PROTOCOLS)
    assert gc.join_group(req, 0, 1).response_for(1).error_code == E.not_coordinator.value
    gc.begin_loading(p)
    assert (
        gc.join_group(req, 0, 2).response_for(2).error_code == E.coordinator_load_in_progress.value
    )
    assert (
        gc.heartbeat(HeartbeatRequest("g", 1, "m"), 0, 3).response_for(3).error_code
        == E.coordinator_load_in_progress.value
    )
    gc.finish_loading(p, 0)
    assert gc.join_group(req, 0, 4).response_for(4).error_code == E.member_id_required.value


def test_a_group_over_a_lowered_max_size_rebalances_after_loading_and_sheds_members():
    h = GroupHarness()
    a, b, c = h.form_group("g", 3)
    h.restart(GroupConfig(offsets_topic_num_partitions=4, group_max_size=2))
    assert h.group("g").state is S.PREPARING_REBALANCE
    ta, tb = h.join("g", a), h.join("g", b)
    assert h.answer(h.join("g", c)).error_code == E.group_max_size_reached.value
    assert h.answer(ta).error_code == h.answer(tb).error_code == 0
    assert sorted(h.group("g").members) == sorted([a, b])


def test_unloading_a_partition_answers_parked_requests_with_not_coordinator():
    h = GroupHarness()
    a, _b = h.form_group("g", 2)
    ta = h.join("g", a)
    h.run(h.coordinator.unload(h.coordinator.partition_for("g"), h.now_ms))
    assert h.answer(ta).error_code == E.not_coordinator.value
    assert "g" not in h.coordinator.groups


def test_describe_and_list_groups():
    h = GroupHarness()
    a, b = h.form_group("g", 2)
    h.join_new_member("rebalancing")
    (d, missing) = h.coordinator.describe_groups(["g", "nope"])
    assert (
        d.group_state == "Stable" and d.protocol_type == "consumer" and d.protocol_data == "range"
    )
    assert [(m.member_id, m.member_assignment) for m in d.members] == [
        (a, b"assignment-0"),
        (b, b"assignment-1"),
    ]
    assert (
        d.members[0].member_metadata == DEFAULT_PROTOCOLS[0][1]
        and d.members[0].client_host == "/127.0.0.1"
    )
    assert missing.error_code == E.group_id_not_found.value and missing.group_state == "Dead"
    (r,) = h.coordinator.describe_groups(["rebalancing"])
    assert (
        r.group_state == "PreparingRebalance"
        and r.protocol_data == ""
        and r.members[0].member_metadata == b""
    )
    assert [(g.group_id, g.group_state) for g in h.coordinator.list_groups()] == [
        ("g", "Stable"),
        ("rebalancing", "PreparingRebalance"),
    ]
    assert [g.group_id for g in h.coordinator.list_groups(["stable"])] == ["g"]


def test_next_deadline_is_the_earliest_timer():
    h = GroupHarness()
    h.join_new_member("g")
    assert h.coordinator.next_deadline_ms() == 3_000


def test_every_transition_targets_a_state_that_can_be_left_or_is_dead():
    sources = {s for s, _ in TRANSITIONS}
    for target, _ in TRANSITIONS.values():
        assert target in sources


def test_cooperative_rebalancing_gets_its_follow_up_rebalance():
    """cooperative-sticky: after revoking, a follower rejoins a Stable group with new metadata
    (its owned partitions changed); that must start the next rebalance, not be ignored."""
    h = GroupHarness()
    coop = (("cooperative-sticky", b"owned:0,1"),)
    a, b = h.form_group("g", 2, protocols=coop)
    ta = h.join("g", a, protocols=coop)
    tb = h.join("g", b, protocols=(("cooperative-sticky", b"owned:1"),))
    assert h.answer(ta).generation_id == h.answer(tb).generation_id == 2
    h.complete_sync("g", [a, b])
    tb = h.join("g", b, protocols=(("cooperative-sticky", b"owned:"),))  # revoked, rejoins
    assert h.answer(tb) is None and h.group("g").state is S.PREPARING_REBALANCE
    assert h.heartbeat("g", a, 2) == E.rebalance_in_progress.value
    ta = h.join("g", a, protocols=coop)
    assert h.answer(ta).generation_id == 3 and h.answer(tb).generation_id == 3
