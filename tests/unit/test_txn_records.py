"""`__transaction_state` records: byte-exact vectors (Kafka's TransactionLogKey/Value schemas),
round trips, and replay of the log equals the coordinator's memory."""

from __future__ import annotations

import random

import pytest

from odradek.coordinator.records import RecordFormatError
from odradek.coordinator.txn_harness import TxnHarness
from odradek.coordinator.txn_records import (
    TransactionLogValue,
    decode_transaction_log_key,
    decode_transaction_log_value,
    encode_transaction_log_key,
    encode_transaction_log_value,
    partition_for_transactional_id,
)

ONGOING = TransactionLogValue(1000, 2, 60_000, 1, (("ab", (0, 1)),), 5, 3)


def test_key_vector():
    assert encode_transaction_log_key("t1") == bytes.fromhex("000000027431")
    assert decode_transaction_log_key(bytes.fromhex("000000027431")) == "t1"
    with pytest.raises(RecordFormatError):
        decode_transaction_log_key(bytes.fromhex("000100027431"))


def test_value_v0_vector():
    expected = bytes.fromhex(
        "0000"  # version 0
        "00000000000003e8"  # producer id 1000
        "0002"  # producer epoch
        "0000ea60"  # timeout 60000 ms
        "01"  # Ongoing
        "00000001"  # one topic
        "00026162"  # "ab"
        "00000002"
        "00000000"
        "00000001"  # partitions 0, 1
        "0000000000000005"  # last update
        "0000000000000003"  # start
    )
    assert encode_transaction_log_value(ONGOING, 0) == expected
    assert decode_transaction_log_value(expected) == (0, ONGOING)


def test_value_v0_empty_has_null_partitions():
    empty = TransactionLogValue(1, 0, 100, 0, None, 9, -1)
    encoded = encode_transaction_log_value(empty, 0)
    assert encoded[2 + 8 + 2 + 4 + 1 : 2 + 8 + 2 + 4 + 1 + 4] == b"\xff\xff\xff\xff"
    assert decode_transaction_log_value(encoded) == (0, empty)


def test_value_v1_vector_with_tagged_fields():
    value = TransactionLogValue(
        1000,
        2,
        60_000,
        1,
        (("ab", (0, 1)),),
        5,
        3,
        previous_producer_id=7,
        client_transaction_version=2,
    )
    expected = bytes.fromhex(
        "0001"
        "00000000000003e8"
        "0002"
        "0000ea60"
        "01"
        "02"  # compact array: 1 topic
        "03"
        "6162"  # compact string "ab"
        "03"
        "00000000"
        "00000001"  # compact int32 array
        "00"  # topic struct tagged fields
        "0000000000000005"
        "0000000000000003"
        "02"  # two tagged fields
        "00"
        "08"
        "0000000000000007"  # tag 0 previous producer id
        "02"
        "02"
        "0002"  # tag 2 client transaction version
    )
    assert encode_transaction_log_value(value, 1) == expected
    assert decode_transaction_log_value(expected) == (1, value)
    # null partitions in v1 is a 0 length
    empty = TransactionLogValue(1, 0, 100, 0, None, 9, -1)
    enc = encode_transaction_log_value(empty, 1)
    assert enc[17] == 0 and decode_transaction_log_value(enc) == (1, empty)


def test_truncated_and_unknown_versions_fail():
    encoded = encode_transaction_log_value(ONGOING, 0)
    with pytest.raises(RecordFormatError):
        decode_transaction_log_value(encoded[:-1])
    with pytest.raises(RecordFormatError):
        decode_transaction_log_value(b"\x00\x02" + encoded[2:])


def test_partition_for_transactional_id_is_java_hash():
    # "t1".hashCode() == 116 * 31 + 49 == 3645; 3645 % 50 == 45
    assert partition_for_transactional_id("t1", 50) == 45


@pytest.mark.parametrize("seed", range(25))
def test_replay_equals_memory(seed):
    """After any sequence of operations, loading the log rebuilds the same metadata (Kafka also
    forgets last_producer_epoch on load)."""
    rng = random.Random(seed)
    h = TxnHarness(auto_markers=rng.random() < 0.5)
    ids = [f"tx-{i}" for i in range(4)]
    producers: dict[str, tuple[int, int]] = {}
    for _ in range(60):
        tid = rng.choice(ids)
        op = rng.random()
        h.now_ms += rng.randint(0, 3_000)
        if op < 0.25 or tid not in producers:
            r = h.init(tid, rng.choice([5_000, 60_000]))
            if r.error_code == 0:
                producers[tid] = (r.producer_id, r.producer_epoch)
        elif op < 0.55:
            pid, epoch = producers[tid]
            h.add(tid, pid, epoch, ("t", rng.randint(0, 3)), version=rng.choice([3, 5]))
        elif op < 0.75:
            pid, epoch = producers[tid]
            r = h.end(tid, pid, epoch, rng.random() < 0.5, version=rng.choice([4, 5]))
            if r.error_code == 0 and r.producer_epoch >= 0:
                producers[tid] = (r.producer_id, r.producer_epoch)
        elif op < 0.85:
            h.write_markers()
        else:
            h.advance(rng.randint(1, 20_000))
    before = {
        tid: txn.current for tid, txn in h.coordinator.transactions.items() if txn.pending is None
    }
    h.restart()
    after = {tid: txn.current for tid, txn in h.coordinator.transactions.items()}
    assert set(after) == set(before), seed
    for tid, cur in before.items():
        assert after[tid] == cur.__class__(
            **{
                **{f: getattr(cur, f) for f in cur.__slots__},
                "last_producer_epoch": -1,
            }
        ), (seed, tid)
