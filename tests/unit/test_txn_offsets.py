"""Transactional offset commits in the group coordinator: TxnOffsetCommit (v0-5) validation,
offsets pending per producer until the end-transaction marker, OffsetFetch require_stable,
commit/abort, mixing with plain commits, deletion, expiry and replay after a restart."""

from odradek.coordinator.group import GroupConfig, GroupState
from odradek.coordinator.harness import GroupHarness, TxnMarker, TxnOffsetRecord
from odradek.coordinator.messages import (
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    TxnOffsetCommitPartition,
    TxnOffsetCommitRequest,
)
from odradek.coordinator.records import (
    OffsetCommitKey,
    decode_key,
    decode_offset_commit_value,
)
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import NO_SEQUENCE

E = ErrorCode
S = GroupState
PID = 4000
OTHER_PID = 4001
UNSTABLE = E.unstable_offset_commit.value


def errors(h, token):
    return {(t, p): e for t, ps in h.answer(token).topics.items() for p, e in ps}


def txn_in_flight(h, group_id, producer_id, offsets, epoch=0):
    """A TxnOffsetCommit whose append is written to the log but not yet acknowledged."""
    token = h.token()
    req = TxnOffsetCommitRequest(
        "txn",
        group_id,
        producer_id,
        epoch,
        {t: (TxnOffsetCommitPartition(p, o),) for (t, p), o in offsets.items()},
    )
    (append,) = h.coordinator.txn_offset_commit(req, h.now_ms, token).appends
    h.write(append)
    return token, append


def offset_delete(h, group_id, topics):
    t = h.token()
    h.run(h.coordinator.offset_delete(OffsetDeleteRequest(group_id, topics), h.now_ms, t))
    return h.answer(t)


def delete_groups(h, *group_ids):
    t = h.token()
    h.run(h.coordinator.delete_groups(group_ids, h.now_ms, t))
    return dict(h.answer(t).results)


# --- the write ---------------------------------------------------------------------------


def test_txn_commit_is_a_transactional_batch_of_the_producer_answered_after_its_append():
    h = GroupHarness(now_ms=9_000)
    token = h.token()
    req = TxnOffsetCommitRequest(
        "txn", "g", PID, 3, {"orders": (TxnOffsetCommitPartition(2, 42, 5, "m"),)}
    )
    result = h.coordinator.txn_offset_commit(req, h.now_ms, token)
    assert result.response_for(token) is None  # parked until the append completes
    (append,) = result.appends
    assert append.partition == h.coordinator.partition_for("g")
    assert (append.producer_id, append.producer_epoch) == (PID, 3)
    assert append.transactional and append.base_sequence == NO_SEQUENCE
    ((key, value),) = append.records
    assert decode_key(key) == OffsetCommitKey("g", "orders", 2)
    v = decode_offset_commit_value(value)
    assert (v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms) == (42, 5, "m", 9_000)
    h.run(result)
    assert errors(h, token) == {("orders", 2): 0}
    assert h.log[append.partition] == [TxnOffsetRecord(PID, 3, key, value)]


def test_plain_commits_stay_plain_batches():
    h = GroupHarness()
    token = h.token()
    req = OffsetCommitRequest("g", {"t": (OffsetCommitPartition(0, 1),)})
    (append,) = h.coordinator.offset_commit(req, h.now_ms, token).appends
    assert not append.transactional and append.producer_id == -1 and append.producer_epoch == -1


# --- visibility: pending until the marker ------------------------------------------------


def test_txn_offsets_are_invisible_until_the_commit_marker():
    h = GroupHarness()
    h.commit("g", {("t", 0): 5})
    h.txn_commit("g", PID, {("t", 0): 10, ("t", 1): 11})
    assert h.fetch("g") == {("t", 0): 5}  # the last committed, not the pending one
    assert h.fetch("g", {"t": (0, 1)}) == {("t", 0): 5, ("t", 1): -1}
    assert h.end_txn(PID, commit=True) == ["g"]
    assert h.fetch("g") == {("t", 0): 10, ("t", 1): 11}


def test_aborted_txn_offsets_are_never_visible():
    h = GroupHarness()
    h.commit("g", {("t", 0): 5})
    h.txn_commit("g", PID, {("t", 0): 10, ("t", 1): 11})
    h.end_txn(PID, commit=False)
    assert h.fetch("g") == {("t", 0): 5}
    assert h.fetch_stable("g", {"t": (0, 1)}) == {("t", 0): (5, 0), ("t", 1): (-1, 0)}
    h.restart()
    assert h.fetch("g") == {("t", 0): 5}
    assert h.coordinator.offsets.pending_txn_offsets("g") == {}


def test_require_stable_answers_unstable_for_partitions_with_pending_txn_offsets():
    h = GroupHarness()
    h.commit("g", {("t", 0): 5, ("t", 2): 7})
    h.txn_commit("g", PID, {("t", 0): 10, ("t", 1): 11})
    assert h.fetch_stable("g", {"t": (0, 1, 2)}) == {
        ("t", 0): (-1, UNSTABLE),
        ("t", 1): (-1, UNSTABLE),
        ("t", 2): (7, 0),
    }
    # all partitions (topics null): the committed ones, the unstable flagged
    assert h.fetch_stable("g") == {("t", 0): (-1, UNSTABLE), ("t", 2): (7, 0)}
    h.end_txn(PID, commit=True)
    assert h.fetch_stable("g", {"t": (0, 1, 2)}) == {
        ("t", 0): (10, 0),
        ("t", 1): (11, 0),
        ("t", 2): (7, 0),
    }


def test_require_stable_is_unstable_while_the_txn_append_is_in_flight():
    h = GroupHarness()
    token, append = txn_in_flight(h, "g", PID, {("t", 0): 3})
    assert h.fetch_stable("g", {"t": (0,)}) == {("t", 0): (-1, UNSTABLE)}
    h.run(h.coordinator.on_append_complete(append.append_id, 0, h.now_ms))
    assert errors(h, token) == {("t", 0): 0}
    assert h.fetch_stable("g", {"t": (0,)}) == {("t", 0): (-1, UNSTABLE)}


def test_a_marker_completes_only_its_producer():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 10})
    h.txn_commit("g", OTHER_PID, {("t", 1): 20})
    h.end_txn(OTHER_PID, commit=True)
    assert h.fetch("g") == {("t", 1): 20}
    assert h.fetch_stable("g", {"t": (0,)}) == {("t", 0): (-1, UNSTABLE)}
    h.end_txn(PID, commit=False)
    assert h.fetch("g", {"t": (0, 1)}) == {("t", 0): -1, ("t", 1): 20}


def test_a_marker_completes_only_groups_of_the_partitions_it_was_written_to():
    h = GroupHarness()
    groups = ["g0", "g1", "g2", "g3", "g4", "g5"]
    by_partition = {}
    for g in groups:
        by_partition.setdefault(h.coordinator.partition_for(g), g)
    (p1, g1), (p2, g2) = sorted(by_partition.items())[:2]
    h.txn_commit(g1, PID, {("t", 0): 1})
    h.txn_commit(g2, PID, {("t", 0): 2})
    assert h.end_txn(PID, commit=True, partitions=[p1]) == [g1]
    assert h.fetch(g1) == {("t", 0): 1} and h.fetch(g2) == {}
    h.end_txn(PID, commit=True, partitions=[p2])
    assert h.fetch(g2) == {("t", 0): 2}


def test_a_later_txn_commit_of_the_same_producer_replaces_its_pending_offset():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 10})
    h.txn_commit("g", PID, {("t", 0): 12})
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 12}
    h.restart()
    assert h.fetch("g") == {("t", 0): 12}


# --- mixing plain and transactional commits -----------------------------------------------


def test_a_plain_commit_appended_after_the_txn_record_wins_over_the_committed_txn():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 10, ("t", 1): 11})
    h.commit("g", {("t", 0): 20})  # appended later than the transactional record
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 20, ("t", 1): 11}
    h.restart()
    assert h.fetch("g") == {("t", 0): 20, ("t", 1): 11}


def test_a_committed_txn_overrides_a_plain_commit_appended_before_its_record():
    h = GroupHarness()
    h.commit("g", {("t", 0): 20})
    h.txn_commit("g", PID, {("t", 0): 10})
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 10}  # log order, not offset size, decides
    h.restart()
    assert h.fetch("g") == {("t", 0): 10}


def test_successive_transactions_and_plain_commits_apply_in_log_order():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 10})
    h.end_txn(PID, commit=True)
    h.commit("g", {("t", 0): 30})
    assert h.fetch("g") == {("t", 0): 30}
    h.txn_commit("g", PID, {("t", 0): 40})
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 40}


# --- validation (TxnOffsetCommit v3+ carries generation, member and instance ids) ---------


def test_a_simple_txn_commit_creates_an_empty_group():
    h = GroupHarness()
    t = h.txn_commit("new", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): 0}
    assert h.group("new").state is S.EMPTY and h.group("new").protocol_type is None


def test_txn_commit_with_a_generation_to_an_unknown_group_is_illegal_generation():
    h = GroupHarness()
    t = h.txn_commit("nope", PID, {("t", 0): 1}, generation_id=1, member_id="m")
    assert errors(h, t) == {("t", 0): E.illegal_generation.value}
    assert "nope" not in h.coordinator.groups and h.log == {}


def test_txn_commit_checks_member_generation_and_static_instance():
    h = GroupHarness()
    (a,) = h.form_group("g", 1)
    t = h.txn_commit("g", PID, {("t", 0): 1}, generation_id=1, member_id="stranger")
    assert errors(h, t) == {("t", 0): E.unknown_member_id.value}
    t = h.txn_commit("g", PID, {("t", 0): 1}, generation_id=2, member_id=a)
    assert errors(h, t) == {("t", 0): E.illegal_generation.value}
    t = h.txn_commit("g", PID, {("t", 0): 1}, generation_id=1, member_id=a)
    assert errors(h, t) == {("t", 0): 0}

    static = h.join("s", instance_id="i-1")
    h.wait_for(static)
    member = h.answer(static).member_id
    h.complete_sync("s", [member])
    t = h.txn_commit("s", PID, {("t", 0): 1}, generation_id=1, member_id="old", instance_id="i-1")
    assert errors(h, t) == {("t", 0): E.fenced_instance_id.value}
    t = h.txn_commit("s", PID, {("t", 0): 1}, generation_id=1, member_id=member, instance_id="i-1")
    assert errors(h, t) == {("t", 0): 0}


def test_txn_commit_without_member_fields_is_accepted_by_a_group_with_members():
    """Unlike OffsetCommit: v0-2 TxnOffsetCommit has no member id or generation."""
    h = GroupHarness()
    h.form_group("g", 1)
    t = h.txn_commit("g", PID, {("t", 0): 1}, api_version=2)
    assert errors(h, t) == {("t", 0): 0}
    t = h.commit("g", {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.unknown_member_id.value}


def test_txn_commit_during_completing_rebalance_is_accepted():
    h = GroupHarness()
    a_join = h.join_new_member("g")
    h.wait_for(a_join)
    a = h.answer(a_join).member_id
    assert h.group("g").state is S.COMPLETING_REBALANCE
    t = h.txn_commit("g", PID, {("t", 0): 1}, generation_id=1, member_id=a)
    assert errors(h, t) == {("t", 0): 0}
    t = h.commit("g", {("t", 0): 1}, 1, a)
    assert errors(h, t) == {("t", 0): E.rebalance_in_progress.value}


def test_coordinator_errors_and_the_v0_v1_loading_mapping():
    h = GroupHarness()
    p = h.coordinator.partition_for("g")
    h.coordinator.begin_loading(p)
    t = h.txn_commit("g", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.coordinator_load_in_progress.value}
    t = h.txn_commit("g", PID, {("t", 0): 1}, api_version=1)
    assert errors(h, t) == {("t", 0): E.coordinator_not_available.value}
    h.coordinator.unload(p, h.now_ms)
    t = h.txn_commit("g", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.not_coordinator.value}
    t = h.txn_commit("", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.invalid_group_id.value}


def test_txn_commit_without_producer_id_and_too_large_metadata_are_refused():
    h = GroupHarness()
    t = h.txn_commit("g", -1, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.invalid_producer_id_mapping.value}
    assert "g" not in h.coordinator.groups
    t = h.txn_commit("g", PID, {("t", 0): 1}, metadata="x" * 5000)
    assert errors(h, t) == {("t", 0): E.offset_metadata_too_large.value}
    assert h.log == {} and h.coordinator.offsets.pending_txn == {}


def test_a_failed_txn_append_is_mapped_and_leaves_nothing_pending():
    h = GroupHarness()
    h.fail_next_appends = [E.not_leader_or_follower.value]
    t = h.txn_commit("g", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.not_coordinator.value}
    assert h.coordinator.offsets.pending_txn_offsets("g") == {}
    h.fail_next_appends = [E.invalid_producer_epoch.value]  # the log fenced a zombie
    t = h.txn_commit("g", PID, {("t", 0): 1})
    assert errors(h, t) == {("t", 0): E.invalid_producer_epoch.value}
    h.end_txn(PID, commit=True, partitions=[h.coordinator.partition_for("g")])
    assert h.fetch("g") == {}


def test_a_failed_append_does_not_drop_a_later_commit_of_the_same_partition():
    h = GroupHarness()
    _, first = txn_in_flight(h, "g", PID, {("t", 0): 1})
    h.txn_commit("g", PID, {("t", 0): 2})
    h.run(h.coordinator.on_append_complete(first.append_id, E.request_timed_out.value, h.now_ms))
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 2}


# --- deletion and expiry -----------------------------------------------------------------


def test_deleting_a_group_with_pending_txn_offsets_tombstones_them_and_the_marker_is_moot():
    h = GroupHarness()
    h.commit("g", {("t", 0): 1})
    h.txn_commit("g", PID, {("t", 0): 2, ("t", 1): 3})
    assert delete_groups(h, "g") == {"g": 0}
    p = h.coordinator.partition_for("g")
    tombstones = [decode_key(e[0]) for e in h.log[p] if isinstance(e, tuple) and e[1] is None]
    assert OffsetCommitKey("g", "t", 1) in tombstones  # pending only: tombstoned too
    assert h.end_txn(PID, commit=True) == []
    assert h.fetch("g") == {} and "g" not in h.coordinator.groups
    h.restart()
    assert h.fetch("g") == {} and "g" not in h.coordinator.groups


def test_offset_delete_drops_pending_txn_offsets_of_the_partition():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 2, ("t", 1): 3})
    r = offset_delete(h, "g", {"t": (0,)})
    assert r.error_code == 0
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 1): 3}
    h.restart()
    assert h.fetch("g") == {("t", 1): 3}


def test_a_txn_append_in_flight_does_not_resurrect_offsets_deleted_meanwhile():
    h = GroupHarness()
    _, append = txn_in_flight(h, "g", PID, {("t", 0): 5})
    assert offset_delete(h, "g", {"t": (0,)}).error_code == 0
    h.run(h.coordinator.on_append_complete(append.append_id, 0, h.now_ms))
    h.end_txn(PID, commit=True, partitions=[append.partition])
    assert h.fetch("g") == {}
    h.restart()
    assert h.fetch("g") == {}


def test_pending_txn_offsets_do_not_expire_and_keep_their_group():
    h = GroupHarness(
        GroupConfig(
            offsets_topic_num_partitions=4,
            offsets_retention_minutes=1,
            offsets_retention_check_interval_ms=1_000,
        )
    )
    h.commit("g", {("t", 0): 1})
    h.txn_commit("g", PID, {("t", 0): 2, ("t", 1): 3})
    h.advance(120_000)
    assert "g" in h.coordinator.groups
    assert h.fetch("g") == {("t", 0): 1}
    h.end_txn(PID, commit=True)
    assert h.fetch("g") == {("t", 0): 2, ("t", 1): 3}
    h.advance(120_000)  # now they expire, and the empty simple group goes with them
    assert h.fetch("g") == {} and "g" not in h.coordinator.groups


# --- replay after restart ----------------------------------------------------------------


def test_pending_txn_offsets_survive_a_restart_and_complete_with_a_later_marker():
    h = GroupHarness()
    h.commit("g", {("t", 0): 1})
    h.txn_commit("g", PID, {("t", 0): 2})
    h.restart()
    assert h.fetch("g") == {("t", 0): 1}
    assert h.fetch_stable("g", {"t": (0,)}) == {("t", 0): (-1, UNSTABLE)}
    assert h.end_txn(PID, commit=True) == ["g"]
    assert h.fetch("g") == {("t", 0): 2}
    h.restart()
    assert h.fetch("g") == {("t", 0): 2} and h.coordinator.offsets.pending_txn == {}


def test_a_group_known_only_by_pending_txn_offsets_is_loaded_as_an_empty_group():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 2})
    h.restart()
    assert h.group("g").state is S.EMPTY
    assert h.coordinator.offsets.pending_txn_offsets("g")[PID][("t", 0)].offset == 2


def test_replay_marker_applies_only_to_the_partition_it_was_read_from():
    h = GroupHarness()
    groups = {}
    for i in range(20):
        groups.setdefault(h.coordinator.partition_for(f"g{i}"), f"g{i}")
    (p1, g1), (_, g2) = sorted(groups.items())[:2]
    h.txn_commit(g1, PID, {("t", 0): 1})
    h.txn_commit(g2, PID, {("t", 0): 2})
    h.end_txn(PID, commit=True, partitions=[p1])
    assert h.log[p1][-1] == TxnMarker(PID, True)
    h.restart()
    assert h.fetch(g1) == {("t", 0): 1} and h.fetch(g2) == {}
    assert PID in h.coordinator.offsets.pending_txn_offsets(g2)


def test_a_refused_txn_commit_leaves_an_existing_simple_group_in_place():
    h = GroupHarness()
    h.commit("g", {("t", 0): 1})
    assert offset_delete(h, "g", {"t": (0,)}).error_code == 0
    t = h.txn_commit("g", PID, {("t", 0): 1}, metadata="x" * 5000)
    assert errors(h, t) == {("t", 0): E.offset_metadata_too_large.value}
    assert "g" in h.coordinator.groups


def test_a_load_abandoned_by_unload_leaves_no_trace_in_the_next_load():
    h = GroupHarness()
    h.txn_commit("g", PID, {("t", 0): 1})
    p = h.coordinator.partition_for("g")
    (record,) = h.log[p]
    c = h.coordinator
    c.begin_loading(p)
    c.replay(record.key, record.value, producer_id=PID, transactional=True)
    c.unload(p, h.now_ms)  # leadership moved away mid-load
    c.begin_loading(p)  # and came back: this time the log holds nothing for the group
    c.finish_loading(p, h.now_ms)
    assert "g" not in c.groups and c.offsets.pending_txn == {}
