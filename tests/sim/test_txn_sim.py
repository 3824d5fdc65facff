"""Seeded simulation of the transaction coordinator: random producers init, add, commit, abort,
time out, and the coordinator crashes and reloads from its log. Invariants checked after every
step; a failure names its seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from odradek.coordinator.transaction import TransactionState
from odradek.coordinator.txn_coordinator import TransactionConfig
from odradek.coordinator.txn_harness import TxnHarness
from odradek.coordinator.txn_records import (
    decode_transaction_log_key,
    decode_transaction_log_value,
)

S = TransactionState
STEPS = 300


def _check_log_epochs(h: TxnHarness, seed: int) -> None:
    """Per transactional id, the epoch written for a producer id never goes backwards."""
    last: dict[tuple[str, int], int] = {}
    for records in h.log.values():
        for key, value in records:
            if value is None:
                continue
            tid = decode_transaction_log_key(key)
            _, v = decode_transaction_log_value(value)
            k = (tid, v.producer_id)
            assert v.producer_epoch >= last.get(k, -1), f"seed {seed}: epoch went back for {k}"
            last[k] = v.producer_epoch


def run_simulation(seed: int) -> None:
    rng = random.Random(seed)
    cfg = TransactionConfig(
        transaction_state_log_num_partitions=3,
        abort_timed_out_transaction_cleanup_interval_ms=1_000,
        remove_expired_transaction_cleanup_interval_ms=5_000,
        transactional_id_expiration_ms=rng.choice([20_000, 10**9]),
    )
    h = TxnHarness(cfg)
    ids = [f"p{i}" for i in range(5)]
    producers: dict[str, tuple[int, int, int]] = {}  # tid -> (pid, epoch, end txn version)
    # (incarnation, tid, nth prepare record of tid, pid, epoch, commit, tp) -> requests
    requested: Counter = Counter()
    prepares: Counter = Counter()  # tid -> PrepareCommit/PrepareAbort records written
    scanned: dict[int, int] = {}
    seen_markers = 0
    incarnation = 0
    for step in range(STEPS):
        tid = rng.choice(ids)
        op = rng.random()
        h.now_ms += rng.randint(0, 400)
        if op < 0.15 or tid not in producers:
            r = h.init(tid, rng.choice([2_000, 30_000]))
            if r.error_code == 0:
                producers[tid] = (r.producer_id, r.producer_epoch, rng.choice([4, 5]))
        elif op < 0.45:
            pid, epoch, v = producers[tid]
            tps = [("t", rng.randint(0, 4)) for _ in range(rng.randint(1, 2))]
            h.add(tid, pid, epoch, *tps, version=3 if v == 4 else 5)
        elif op < 0.6:
            pid, epoch, v = producers[tid]
            r = h.end(tid, pid, epoch, rng.random() < 0.6, version=v)
            if r.error_code == 0 and v >= 5:
                producers[tid] = (r.producer_id, r.producer_epoch, v)
        elif op < 0.8:
            if h.open_markers:
                m = h.open_markers.pop(rng.randrange(len(h.open_markers)))
                part = [tp for tp in m.partitions if rng.random() < 0.7]
                h.run(
                    h.coordinator.on_markers_written(
                        m.transactional_id, m.producer_epoch, part, h.now_ms
                    )
                )
                rest = tuple(tp for tp in m.partitions if tp not in part)
                if rest:
                    h.open_markers.append(
                        m.__class__(
                            m.transactional_id,
                            m.producer_id,
                            m.producer_epoch,
                            m.commit,
                            m.coordinator_epoch,
                            rest,
                        )
                    )
        elif op < 0.93:
            h.advance(rng.randint(1, 3_000))
        else:
            h.restart()
            incarnation += 1
        for p, records in h.log.items():
            for key_bytes, value in records[scanned.get(p, 0) :]:
                if value is not None and decode_transaction_log_value(value)[
                    1
                ].transaction_status in (2, 3):
                    prepares[decode_transaction_log_key(key_bytes)] += 1
            scanned[p] = len(records)
        for m in h.markers[seen_markers:]:
            for tp in m.partitions:
                key = (
                    incarnation,
                    m.transactional_id,
                    prepares[m.transactional_id],
                    m.producer_id,
                    m.producer_epoch,
                    m.commit,
                    tp,
                )
                requested[key] += 1
                assert requested[key] == 1, f"seed {seed} step {step}: markers twice for {key}"
        seen_markers = len(h.markers)
        # one open transaction per id, and it is the coordinator's current one
        open_ids = [m.transactional_id for m in h.open_markers]
        for t in set(open_ids):
            txn = h.coordinator.transactions.get(t)
            assert txn is not None and txn.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT), (
                f"seed {seed} step {step}: markers open for {t} in {txn and txn.state}"
            )
            epochs = {m.producer_epoch for m in h.open_markers if m.transactional_id == t}
            assert epochs == {txn.current.producer_epoch}, f"seed {seed} step {step}"
        for txn in h.coordinator.transactions.values():
            assert txn.pending is None  # the harness completes every append at once
            assert txn.state is not S.DEAD
            if txn.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                assert txn.markers_pending or txn.complete_retry, f"seed {seed} step {step}"
    _check_log_epochs(h, seed)
    # drain: every prepared transaction ends once its markers are written
    for _ in range(10):
        h.write_markers()
        h.advance(1_000)
    for tid, txn in h.coordinator.transactions.items():
        assert txn.state not in (S.PREPARE_COMMIT, S.PREPARE_ABORT), f"seed {seed}: {tid} stuck"
        if txn.state is S.ONGOING:
            assert (
                txn.current.start_timestamp_ms + txn.current.transaction_timeout_ms
                >= h.now_ms - 1_000
            )


@pytest.mark.parametrize("seed", range(40))
def test_txn_simulation(seed):
    run_simulation(seed)
