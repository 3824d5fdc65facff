"""Transaction coordinator core: every transition and error, read like the spec."""

from __future__ import annotations

from odradek.coordinator.transaction import TRANSITIONS, Event, Go, TransactionState
from odradek.coordinator.txn_coordinator import TransactionConfig
from odradek.coordinator.txn_harness import TxnHarness
from odradek.protocol.errors import ErrorCode as E

S = TransactionState
TP = ("orders", 0)
TP2 = ("orders", 1)


def started(h: TxnHarness, tid: str = "t1", timeout_ms: int = 60_000):
    r = h.init(tid, timeout_ms)
    assert r.error_code == 0, r
    return r.producer_id, r.producer_epoch


def test_init_allocates_producer_id_with_epoch_zero_and_reinit_bumps_epoch():
    h = TxnHarness()
    pid, epoch = started(h)
    assert (pid, epoch) == (1000, 0)
    again = h.init("t1")
    assert (again.producer_id, again.producer_epoch) == (1000, 1)
    assert h.txn("t1").state is S.EMPTY


def test_init_without_transactional_id_always_gets_a_new_producer_id():
    h = TxnHarness()
    a, b = h.init(None), h.init(None, producer_id=1000, producer_epoch=0)
    assert (a.producer_id, a.producer_epoch, b.producer_id) == (1000, 0, 1001)


def test_init_rejects_timeout_above_transaction_max_timeout_ms():
    h = TxnHarness(TransactionConfig(transaction_max_timeout_ms=1_000))
    assert h.init("t1", 1_001).error_code == E.invalid_transaction_timeout.value
    assert h.init("t1", 0).error_code == E.invalid_transaction_timeout.value
    assert h.init("", 100).error_code == E.invalid_request.value


def test_commit_writes_prepare_then_markers_then_complete():
    h = TxnHarness()
    pid, epoch = started(h)
    assert h.add("t1", pid, epoch, TP, TP2) == {TP: 0, TP2: 0}
    assert h.txn("t1").state is S.ONGOING
    assert h.end("t1", pid, epoch, commit=True).error_code == 0
    assert h.txn("t1").state is S.PREPARE_COMMIT
    (m,) = h.open_markers
    assert (m.producer_id, m.producer_epoch, m.commit, m.partitions) == (
        pid,
        epoch,
        True,
        (TP, TP2),
    )
    h.coordinator.on_markers_written("t1", epoch, [TP], h.now_ms)
    assert h.txn("t1").state is S.PREPARE_COMMIT  # one partition still waits
    h.write_markers()
    assert h.txn("t1").state is S.COMPLETE_COMMIT
    assert h.txn("t1").current.partitions == frozenset()


def test_end_txn_errors():
    h = TxnHarness()
    pid, epoch = started(h)
    assert h.end("t1", pid, epoch, True).error_code == E.invalid_txn_state.value  # Empty
    assert h.end("nope", pid, epoch, True).error_code == E.invalid_producer_id_mapping.value
    h.add("t1", pid, epoch, TP)
    assert h.end("t1", pid + 1, epoch, True).error_code == E.invalid_producer_id_mapping.value
    assert h.end("t1", pid, epoch + 1, True).error_code == E.producer_fenced.value
    assert h.end("t1", pid, epoch + 1, True, version=1).error_code == E.invalid_producer_epoch.value
    h.end("t1", pid, epoch, True)
    assert h.end("t1", pid, epoch, True).error_code == E.concurrent_transactions.value
    assert h.end("t1", pid, epoch, False).error_code == E.invalid_txn_state.value
    assert h.add("t1", pid, epoch, TP2)[TP2] == E.concurrent_transactions.value
    assert h.init("t1").error_code == E.concurrent_transactions.value
    h.write_markers()
    assert h.end("t1", pid, epoch, True).error_code == 0  # retry of the commit
    assert h.end("t1", pid, epoch, False).error_code == E.invalid_txn_state.value


def test_add_partitions_errors_and_subset_needs_no_write():
    h = TxnHarness()
    pid, epoch = started(h)
    assert h.add("t1", pid + 5, epoch, TP)[TP] == E.invalid_producer_id_mapping.value
    assert h.add("t1", pid, epoch - 1, TP)[TP] == E.producer_fenced.value
    assert h.add("t1", pid, epoch - 1, TP, version=1)[TP] == E.invalid_producer_epoch.value
    h.add("t1", pid, epoch, TP)
    records = len(h.log[h.coordinator.partition_for("t1")])
    assert h.add("t1", pid, epoch, TP) == {TP: 0}
    assert len(h.log[h.coordinator.partition_for("t1")]) == records


def test_verify_only_answers_whether_partitions_are_in_the_transaction():
    h = TxnHarness()
    pid, epoch = started(h)
    h.add("t1", pid, epoch, TP)
    assert h.add("t1", pid, epoch, TP, TP2, version=4, verify_only=True) == {
        TP: 0,
        TP2: E.transaction_abortable.value,
    }
    assert h.txn("t1").current.partitions == frozenset({TP})
    assert h.add("t1", pid, epoch + 1, TP, version=4, verify_only=True)[TP] == (
        E.producer_fenced.value
    )


def test_add_offsets_adds_the_groups_consumer_offsets_partition():
    h = TxnHarness()
    pid, epoch = started(h)
    assert h.add_offsets("t1", pid, epoch, partition=7) == 0
    assert h.txn("t1").current.partitions == frozenset({("__consumer_offsets", 7)})
    assert h.add_offsets("t1", pid, 9, version=1) == E.invalid_producer_epoch.value


def test_reinit_during_ongoing_transaction_aborts_it_first():
    h = TxnHarness()
    pid, epoch = started(h)
    h.add("t1", pid, epoch, TP)
    assert h.init("t1").error_code == E.concurrent_transactions.value
    assert h.txn("t1").state is S.PREPARE_ABORT
    (m,) = h.open_markers
    assert (m.commit, m.producer_epoch) == (False, epoch + 1)
    assert h.init("t1").error_code == E.concurrent_transactions.value
    h.write_markers()
    again = h.init("t1")
    assert (again.error_code, again.producer_id, again.producer_epoch) == (0, pid, epoch + 2)
    # the old instance is fenced
    assert h.end("t1", pid, epoch, True).error_code == E.producer_fenced.value


def test_kip360_bump_with_known_epoch_and_retry_and_fencing():
    h = TxnHarness()
    pid, epoch = started(h)
    r = h.init("t1", producer_id=pid, producer_epoch=epoch)
    assert (r.producer_id, r.producer_epoch) == (pid, epoch + 1)
    retry = h.init("t1", producer_id=pid, producer_epoch=epoch)  # answer was lost
    assert (retry.producer_id, retry.producer_epoch) == (pid, epoch + 1)
    assert h.init("t1", producer_id=pid, producer_epoch=epoch + 7).error_code == (
        E.producer_fenced.value
    )
    assert h.init("t1", producer_id=pid, producer_epoch=99, version=3).error_code == (
        E.invalid_producer_epoch.value
    )
    assert h.init("t1", producer_id=4242, producer_epoch=0).error_code == E.producer_fenced.value


def test_exhausted_epoch_rotates_to_a_new_producer_id():
    h = TxnHarness()
    pid, _ = started(h)
    h.txn("t1").current = h.txn("t1").prepare(producer_epoch=32766)
    r = h.init("t1")
    assert (r.producer_id, r.producer_epoch) == (pid + 1, 0)
    assert h.txn("t1").current.previous_producer_id == pid


def test_transaction_timeout_aborts_with_epoch_bump_and_fences_producer():
    h = TxnHarness(TransactionConfig(transaction_state_log_num_partitions=4))
    pid, epoch = started(h, timeout_ms=5_000)
    h.add("t1", pid, epoch, TP)
    h.advance(10_000)  # first check scheduled
    h.advance(10_000)
    assert h.txn("t1").state is S.PREPARE_ABORT
    assert h.txn("t1").current.producer_epoch == epoch + 1
    h.write_markers()
    assert h.txn("t1").state is S.COMPLETE_ABORT
    assert h.add("t1", pid, epoch, TP)[TP] == E.producer_fenced.value
    assert h.end("t1", pid, epoch, True, version=0).error_code == E.invalid_producer_epoch.value


def test_idle_transactional_id_expires_with_a_tombstone():
    cfg = TransactionConfig(
        transactional_id_expiration_ms=1_000,
        remove_expired_transaction_cleanup_interval_ms=500,
        transaction_state_log_num_partitions=4,
    )
    h = TxnHarness(cfg)
    started(h)
    h.advance(600)
    h.advance(1_000)
    assert "t1" not in h.coordinator.transactions
    assert h.log[h.coordinator.partition_for("t1")][-1][1] is None
    desc = h.coordinator.describe_transactions(["t1"])[0]
    assert desc.error_code == E.transactional_id_not_found.value


def test_tv2_end_txn_bumps_epoch_and_returns_it():
    h = TxnHarness()
    pid, epoch = started(h)
    h.add("t1", pid, epoch, TP, version=5)
    r = h.end("t1", pid, epoch, True, version=5)
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, epoch + 1)
    assert h.open_markers[0].producer_epoch == epoch + 1
    h.write_markers()
    retry = h.end("t1", pid, epoch, True, version=5)
    assert (retry.error_code, retry.producer_epoch) == (0, epoch + 1)
    assert h.add("t1", pid, epoch, TP)[TP] == E.producer_fenced.value
    assert h.add("t1", pid, epoch + 1, TP, version=5) == {TP: 0}


def test_coordinator_errors_while_loading_and_when_not_owner():
    h = TxnHarness()
    p = h.coordinator.partition_for("t1")
    h.coordinator.begin_loading(p, 3)
    assert h.init("t1").error_code == E.coordinator_load_in_progress.value
    assert h.coordinator.list_transactions().error_code == E.coordinator_load_in_progress.value
    h.coordinator.unload(p)
    assert h.init("t1").error_code == E.not_coordinator.value
    assert h.end("t1", 1, 0, True).error_code == E.not_coordinator.value


def test_failed_append_answers_mapped_error_and_changes_nothing():
    h = TxnHarness()
    pid, epoch = started(h)
    h.fail_next_appends = [E.not_leader_or_follower.value]
    assert h.add("t1", pid, epoch, TP)[TP] == E.not_coordinator.value
    assert h.txn("t1").state is S.EMPTY
    h.add("t1", pid, epoch, TP)
    h.fail_next_appends = [E.request_timed_out.value]
    assert h.end("t1", pid, epoch, True).error_code == E.coordinator_not_available.value
    assert h.txn("t1").state is S.ONGOING


def test_failed_complete_write_is_retried_by_tick():
    h = TxnHarness()
    pid, epoch = started(h)
    h.add("t1", pid, epoch, TP)
    h.end("t1", pid, epoch, True)
    h.fail_next_appends = [E.request_timed_out.value]
    h.write_markers()
    assert h.txn("t1").state is S.PREPARE_COMMIT
    h.advance(1)
    assert h.txn("t1").state is S.COMPLETE_COMMIT


def test_restart_resumes_markers_of_prepared_transactions():
    h = TxnHarness()
    pid, epoch = started(h)
    h.add("t1", pid, epoch, TP)
    h.end("t1", pid, epoch, False)
    h.restart()
    (m,) = h.open_markers
    assert (m.commit, m.partitions, m.coordinator_epoch) == (False, (TP,), 1)
    h.write_markers()
    assert h.txn("t1").state is S.COMPLETE_ABORT


def test_describe_and_list_transactions():
    h = TxnHarness()
    pid, epoch = started(h, "a")
    started(h, "b")
    h.now_ms = 100
    h.add("a", pid, epoch, TP)
    (d,) = h.coordinator.describe_transactions(["a"])
    assert (d.transaction_state, d.producer_id, d.topics, d.transaction_start_time_ms) == (
        "Ongoing",
        pid,
        (("orders", (0,)),),
        100,
    )
    lc = h.coordinator.list_transactions
    assert [t.transactional_id for t in lc(["Ongoing"]).transactions] == ["a"]
    assert [t.transactional_id for t in lc(producer_id_filters=[pid]).transactions] == ["a"]
    only_unknown = lc(["Bogus"])
    assert only_unknown.unknown_state_filters == ("Bogus",) and not only_unknown.transactions
    assert [t.transactional_id for t in lc(duration_filter_ms=50, now_ms=120).transactions] == [
        "b"
    ]  # "a" has run 20 ms; Empty "b" has start -1


def test_table_has_no_entry_for_dead_and_fence_only_meets_abort():
    assert not any(state is S.DEAD for state, _ in TRANSITIONS)
    fence = [event for state, event in TRANSITIONS if state is S.PREPARE_EPOCH_FENCE]
    assert fence == [Event.ABORT]
    assert all(
        isinstance(v, Go)
        or v.error in (0, E.concurrent_transactions.value, E.invalid_txn_state.value)
        for v in TRANSITIONS.values()
    )
