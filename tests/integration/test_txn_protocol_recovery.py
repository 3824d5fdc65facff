"""Open transactions over raw sockets when time passes and brokers restart (issue #8): the
coordinator aborts a transaction older than its timeout (the last stable offset moves, the
producer is fenced), and an open transaction survives a restart (SIGTERM or SIGKILL) holding the
last stable offset until the coordinator aborts it on timeout. Each test has its own broker with
transaction.abort.timed.out.transaction.cleanup.interval.ms=200."""

from __future__ import annotations

import time

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection

from .test_txn_protocol import (
    begin,
    create_topic,
    end_txn,
    fenced,
    fetch,
    init_settled,
    latest_offset,
    markers_of,
    new_tid,
    produce,
    txn_batch,
    wait_until,
)

NONE = ErrorCode.none
CLEANUP_INTERVAL_MS = 200
OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": str(CLEANUP_INTERVAL_MS),
}
ABORT_BOUND_S = 10.0  # a timed-out transaction is aborted well within this


@pytest.fixture
def txn_broker(tmp_path):
    process = BrokerProcess(str(tmp_path / "data"), overrides=OVERRIDES).start()
    yield process
    process.stop()


def open_transaction(conn, topic: str, timeout_ms: int) -> tuple[str, int, int]:
    """A plain record at offset 0, then a transaction of two records at offsets 1-2, left open."""
    plain = produce(conn, topic, 0, txn_batch([b"plain"], -1, -1, -1, transactional=False),
                    transactional_id=None)
    assert (plain.error_code, plain.base_offset) == (NONE, 0)
    tid = new_tid()
    pid, epoch = begin(conn, tid, topic, partitions=(0,), timeout_ms=timeout_ms)
    sent = produce(conn, topic, 0, txn_batch([b"t1", b"t2"], pid, epoch, 0), transactional_id=tid)
    assert (sent.error_code, sent.base_offset) == (NONE, 1)
    assert latest_offset(conn, topic, 0, 1) == 1
    return tid, pid, epoch


def assert_aborted_by_the_coordinator(conn, topic, tid, pid, epoch, started_s: float) -> None:
    """The LSO reaches the high watermark after an ABORT marker at offset 3; the old epoch is
    fenced. Bounded by ABORT_BOUND_S from `started_s`."""
    wait_until(lambda: latest_offset(conn, topic, 0, 1) == 4, ABORT_BOUND_S - (time.monotonic() - started_s),
               "the coordinator to abort the timed-out transaction")
    data = fetch(conn, topic, 0, 0, 1)
    assert (data.high_watermark, data.last_stable_offset) == (4, 4)
    assert markers_of(data.records) == [(3, False)]
    assert [(a.producer_id, a.first_offset) for a in data.aborted_transactions] == [(pid, 1)]
    for version in (0, 1, 2, 4):
        assert end_txn(conn, version, tid, pid, epoch, True).error_code is fenced(26, version)
    # The producer starts over with InitProducerId: same id, an epoch past the fenced one.
    again = init_settled(conn, 4, tid)
    assert again.producer_id == pid and again.producer_epoch > epoch


def test_transaction_open_longer_than_its_timeout_is_aborted_by_the_coordinator(txn_broker):
    with RawConnection(txn_broker.bootstrap) as conn:
        topic = create_topic(conn, "timeouts", 1)
        started_s = time.monotonic()
        tid, pid, epoch = open_transaction(conn, topic, timeout_ms=500)
        assert_aborted_by_the_coordinator(conn, topic, tid, pid, epoch, started_s)
        # Not before its timeout: the abort came at least 500 ms after the transaction began.
        assert time.monotonic() - started_s >= 0.5


def test_transaction_within_its_timeout_is_not_aborted(txn_broker):
    with RawConnection(txn_broker.bootstrap) as conn:
        topic = create_topic(conn, "patient", 1)
        tid, pid, epoch = open_transaction(conn, topic, timeout_ms=30_000)
        time.sleep(5 * CLEANUP_INTERVAL_MS / 1000)  # several sweeps
        assert latest_offset(conn, topic, 0, 1) == 1
        assert end_txn(conn, 3, tid, pid, epoch, True).error_code is NONE
        wait_until(lambda: latest_offset(conn, topic, 0, 1) == 4, ABORT_BOUND_S, "the commit")
        assert markers_of(fetch(conn, topic, 0, 0, 0).records) == [(3, True)]


RESTART_TXN_TIMEOUT_MS = 4_000  # longer than a restart, short enough to wait for


@pytest.mark.parametrize("kill", (False, True), ids=("sigterm", "sigkill"))
def test_open_transaction_holds_the_lso_across_a_restart_until_it_times_out(txn_broker, kill):
    with RawConnection(txn_broker.bootstrap) as conn:
        topic = create_topic(conn, "restarts", 1)
        started_s = time.monotonic()
        tid, pid, epoch = open_transaction(conn, topic, timeout_ms=RESTART_TXN_TIMEOUT_MS)
    if kill:
        txn_broker.kill()
    else:
        assert txn_broker.stop() == 0
    txn_broker.start()
    with RawConnection(txn_broker.bootstrap) as conn:
        assert time.monotonic() - started_s < RESTART_TXN_TIMEOUT_MS / 1000, "restart too slow to observe"
        # The producer state was recovered: the transaction is still open on the partition.
        assert latest_offset(conn, topic, 0, 0) == 3
        assert latest_offset(conn, topic, 0, 1) == 1
        data = fetch(conn, topic, 0, 0, 1)
        assert (data.high_watermark, data.last_stable_offset) == (3, 1)
        # The coordinator reloaded the transaction and aborts it on timeout, counted from its start.
        assert_aborted_by_the_coordinator(conn, topic, tid, pid, epoch,
                                          started_s + RESTART_TXN_TIMEOUT_MS / 1000)
        assert time.monotonic() - started_s >= RESTART_TXN_TIMEOUT_MS / 1000 * 0.9
