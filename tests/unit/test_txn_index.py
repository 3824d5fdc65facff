"""The aborted-transaction index (.txnindex): Kafka's 34-byte entries, collection, truncation."""

from __future__ import annotations

import struct

import pytest

from odradek.protocol import records
from odradek.storage.index import CorruptIndexError
from odradek.storage.txn_index import ABORTED_TXN_ENTRY_BYTES, AbortedTxn, TransactionIndex
from tests.storage.fakefs import FakeFileSystem

PATH = "/d/00000000000000000100.txnindex"


def make_index() -> tuple[FakeFileSystem, TransactionIndex]:
    fs = FakeFileSystem()
    fs.mkdir("/d")
    return fs, TransactionIndex(fs, PATH, 100)


def test_entry_is_34_bytes_version_pid_first_last_lso_big_endian():
    entry = AbortedTxn(producer_id=0x0102030405060708, first_offset=90, last_offset=105, last_stable_offset=106)
    data = entry.encode()
    assert ABORTED_TXN_ENTRY_BYTES == 34 and len(data) == 34
    assert data == (b"\x00\x00" + bytes.fromhex("0102030405060708") + (90).to_bytes(8, "big")
                    + (105).to_bytes(8, "big") + (106).to_bytes(8, "big"))
    assert AbortedTxn.decode(data) == entry


def test_file_is_created_by_the_first_entry_and_holds_entries_back_to_back():
    fs, index = make_index()
    assert not fs.exists(PATH) and index.entries == []
    a = AbortedTxn(1, 100, 103, 104)
    b = AbortedTxn(2, 101, 110, 111)
    index.append(a)
    index.append(b)
    assert fs.read_file(PATH) == a.encode() + b.encode()
    index.close()
    assert TransactionIndex(fs, PATH, 100).entries == [a, b]


def test_collect_returns_overlapping_transactions_and_stops_at_lso_reaching_the_bound():
    _, index = make_index()
    index.append(AbortedTxn(1, 100, 104, 105))   # ends before the range
    index.append(AbortedTxn(2, 103, 112, 113))   # overlaps
    index.append(AbortedTxn(3, 120, 125, 126))   # starts at/after the bound
    found, complete = index.collect(105, 120)
    assert [e.producer_id for e in found] == [2]
    assert complete  # entry 3's LSO 126 >= 120
    found, complete = index.collect(100, 200)
    assert [e.producer_id for e in found] == [1, 2, 3] and not complete


def test_truncate_removes_entries_whose_marker_is_at_or_after_the_offset():
    fs, index = make_index()
    for pid, last in ((1, 101), (2, 105), (3, 109)):
        index.append(AbortedTxn(pid, 100, last, last + 1))
    index.truncate_to(105)
    assert [e.producer_id for e in index.entries] == [1]
    assert len(fs.read_file(PATH)) == 34


@pytest.mark.parametrize("damage", ["short", "version", "order"])
def test_a_damaged_file_fails_the_sanity_check(damage):
    fs, index = make_index()
    index.append(AbortedTxn(1, 100, 101, 102))
    index.append(AbortedTxn(2, 100, 105, 106))
    index.close()
    data = bytearray(fs.read_file(PATH))
    if damage == "short":
        data = data[:-3]
    elif damage == "version":
        struct.pack_into(">h", data, 34, 7)
    else:
        data = data[34:] + data[:34]
    fs.unlink(PATH)
    fd = fs.open(PATH, create=True)
    fs.pwrite(fd, bytes(data), 0)
    fs.close(fd)
    with pytest.raises(CorruptIndexError):
        TransactionIndex(fs, PATH, 100).load()


def test_end_txn_marker_batch_matches_kafkas_control_record_layout():
    batch = records.build_end_txn_marker(producer_id=42, producer_epoch=3, commit=True, coordinator_epoch=9,
                                         timestamp_ms=1_000, base_offset=7)
    header = records.validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    assert header.is_control and header.is_transactional and header.records_count == 1
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, -1)
    assert len(batch) == 78  # 61-byte header + one 17-byte record, as Kafka's marker batch
    (record,) = list(records.iter_records(batch))
    assert record.key == b"\x00\x00\x00\x01"  # version 0, type COMMIT
    assert record.value == b"\x00\x00\x00\x00\x00\x09"  # version 0, coordinator epoch 9
    assert records.parse_end_txn_marker(batch) == records.EndTransactionMarker(True, 9)
    abort = records.build_end_txn_marker(producer_id=42, producer_epoch=3, commit=False, coordinator_epoch=9,
                                         timestamp_ms=1_000)
    assert records.parse_end_txn_marker(abort) == records.EndTransactionMarker(False, 9)
    assert records.parse_end_txn_marker(records.build_batch([(None, b"v", [], 0)])) is None
