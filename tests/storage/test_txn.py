"""Transactions in the log: open transactions, markers, LSO, .txnindex, recovery, truncation."""

from __future__ import annotations

import os
import random

import pytest

from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig
from odradek.storage.txn_index import AbortedTxn
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import PARTITION_DIR, append_values, open_log, read_all

SMALL = LogConfig(segment_bytes=400, retention_ms=-1, retention_bytes=-1, file_delete_delay_ms=0)


class Producer:
    """A transactional producer's batches: sequences advance per record."""

    def __init__(self, log: Log, producer_id: int, epoch: int = 0) -> None:
        self.log, self.producer_id, self.epoch, self.sequence = log, producer_id, epoch, 0

    def send(self, *values: bytes, transactional: bool = True):
        batch = bytearray(records.build_batch([(None, v, [], 1_000) for v in values], producer_id=self.producer_id,
                                              producer_epoch=self.epoch, base_sequence=self.sequence,
                                              transactional=transactional))
        header = records.validate_batch(batch, 0, len(batch))
        assert isinstance(header, records.BatchHeader)
        result = self.log.append(batch, header, leader_epoch=0, now_ms=1_000)
        if result.error is ErrorCode.none:
            self.sequence += len(values)
        return result

    def end(self, commit: bool, coordinator_epoch: int = 0, now_ms: int = 1_000):
        return self.log.append_control_marker(self.producer_id, self.epoch, commit, coordinator_epoch, 0, now_ms)


def advance(log: Log) -> None:
    log.update_high_watermark(log.log_end_offset)


def test_lso_follows_the_earliest_open_transaction_of_several_producers():
    fs = FakeFileSystem()
    log = open_log(fs)
    a, b = Producer(log, 1), Producer(log, 2)
    append_values(log, [b"plain"])                        # 0
    assert a.send(b"a0").base_offset == 1                 # a opens at 1
    assert b.send(b"b0").base_offset == 2                 # b opens at 2
    a.send(b"a1")                                          # 3
    advance(log)
    assert log.high_watermark == 4 and log.last_stable_offset == 1
    assert a.end(commit=True).base_offset == 4            # a's marker: b is still open
    advance(log)
    assert log.last_stable_offset == 2
    b.send(b"b1")                                          # 5
    assert b.end(commit=False).base_offset == 6
    advance(log)
    assert log.first_unstable_offset is None and log.last_stable_offset == log.high_watermark == 7
    assert log.collect_aborted_transactions(0, 7) == [(2, 2)]
    assert log.active_segment.txn_index.entries == [AbortedTxn(2, 2, 6, 7)]
    # read_committed reads below the LSO only
    a.send(b"a2")
    advance(log)
    assert log.last_stable_offset == 7
    # (the raw read holds markers and aborted data: the client drops them with the aborted list)
    assert [o for o, _ in read_all(log, max_offset=log.last_stable_offset)] == list(range(7))


def test_lso_stays_at_a_completed_transaction_until_its_marker_is_below_the_high_watermark():
    fs = FakeFileSystem()
    log = open_log(fs)
    p = Producer(log, 1)
    p.send(b"x", b"y")      # 0-1
    p.end(commit=True)      # marker at 2, high watermark still 0
    log.update_high_watermark(2)
    assert log.last_stable_offset == 0  # the marker is not replicated yet (Kafka's unreplicatedTxns)
    log.update_high_watermark(3)
    assert log.last_stable_offset == 3


def test_aborted_txn_entry_records_the_lso_after_the_marker():
    fs = FakeFileSystem()
    log = open_log(fs)
    a, b = Producer(log, 1), Producer(log, 2)
    a.send(b"a")   # 0
    b.send(b"b")   # 1
    a.end(commit=False)  # 2: b still open at 1
    b.end(commit=False)  # 3: nothing open
    assert log.active_segment.txn_index.entries == [AbortedTxn(1, 0, 2, 1), AbortedTxn(2, 1, 3, 4)]


def test_marker_fencing_and_transaction_state_errors():
    fs = FakeFileSystem()
    log = open_log(fs)
    p = Producer(log, 7, epoch=3)
    p.send(b"x")
    assert p.send(b"y", transactional=False).error is ErrorCode.invalid_txn_state
    assert log.append_control_marker(7, 2, True, 0, 0, 1_000).error is ErrorCode.invalid_producer_epoch
    assert p.end(commit=True, coordinator_epoch=5).error is ErrorCode.none
    p.send(b"z")
    assert p.end(commit=False, coordinator_epoch=4).error is ErrorCode.transaction_coordinator_fenced
    advance(log)
    assert log.first_unstable_offset == 2  # the fenced marker changed nothing
    marker = bytearray(records.build_end_txn_marker(producer_id=7, producer_epoch=3, commit=True,
                                                    coordinator_epoch=9, timestamp_ms=0))
    result = log.append(marker, records.read_header(marker), leader_epoch=0, now_ms=0)
    assert result.error is ErrorCode.invalid_record  # clients may not write control batches
    assert p.end(commit=True, coordinator_epoch=5).error is ErrorCode.none
    advance(log)
    assert log.first_unstable_offset is None


def test_marker_without_open_transaction_ends_an_empty_one():
    fs = FakeFileSystem()
    log = open_log(fs)
    assert log.append_control_marker(9, 0, False, 0, 0, 1_000).base_offset == 0
    assert log.active_segment.txn_index.entries == [AbortedTxn(9, 0, 0, 1)]
    assert log.first_unstable_offset == 0  # until the marker is below the high watermark
    advance(log)
    assert log.first_unstable_offset is None


def interleaved_across_segments(log: Log) -> None:
    """Producer 1 aborts a transaction spanning segments; 2 commits; 3 aborts a short one."""
    p1, p2, p3 = Producer(log, 1), Producer(log, 2), Producer(log, 3)
    for i in range(6):
        p1.send(b"one-%d" % i)
        p2.send(b"two-%d" % i)
    p2.end(commit=True)
    p1.end(commit=False)
    p3.send(b"three")
    p3.end(commit=False)
    append_values(log, [b"after"])


def test_aborted_transactions_are_collected_across_segments():
    fs = FakeFileSystem()
    log = open_log(fs, SMALL)
    interleaved_across_segments(log)
    advance(log)
    assert len(log.segments) > 3
    # p1's transaction: first offset 0, marker at 13; p3's: 14..15.
    assert log.collect_aborted_transactions(0, log.log_end_offset) == [(1, 0), (3, 14)]
    assert log.collect_aborted_transactions(5, 9) == [(1, 0)]          # from a middle segment
    assert log.collect_aborted_transactions(14, 15) == [(3, 14)]
    assert log.collect_aborted_transactions(16, 17) == []
    holders = [s.base_offset for s in log.segments if s.txn_index.entries]
    assert holders  # the entries live in the segments holding the markers
    for segment in log.segments:
        for entry in segment.txn_index.entries:
            assert segment.base_offset <= entry.last_offset


def txn_index_files(fs: FakeFileSystem) -> dict[str, bytes]:
    return {p: bytes(f.data) for p, f in fs.files.items() if p.endswith(".txnindex")}


def test_recovery_after_a_crash_rebuilds_txn_indexes_and_open_transactions():
    fs = FakeFileSystem()
    log = open_log(fs, SMALL)
    interleaved_across_segments(log)
    p4 = Producer(log, 4)
    p4.send(b"open")  # still open at the crash
    advance(log)
    open_at = log.first_unstable_offset
    expected_index = txn_index_files(fs)
    expected_aborted = log.collect_aborted_transactions(0, log.log_end_offset)
    log.flush()
    for path in list(expected_index):
        fs.unlink(path)  # lost: the loader must rebuild them from the log
    for name in fs.listdir(PARTITION_DIR):
        if name.endswith(".snapshot"):
            fs.unlink(os.path.join(PARTITION_DIR, name))
    fs.crash()
    recovered = open_log(fs, SMALL, clean_shutdown=False, recovery_point=0, high_watermark=log.log_end_offset)
    assert txn_index_files(fs) == expected_index
    assert recovered.collect_aborted_transactions(0, recovered.log_end_offset) == expected_aborted
    assert recovered.first_unstable_offset == open_at
    assert recovered.producer_state.ongoing_txns == {4: open_at}
    assert recovered.append_control_marker(4, 0, False, 0, 0, 2_000).error is ErrorCode.none
    assert recovered.collect_aborted_transactions(open_at, recovered.log_end_offset)[-1] == (4, open_at)


def test_crash_loses_an_unsynced_marker_and_its_txn_index_entry():
    fs = FakeFileSystem()
    log = open_log(fs)
    p = Producer(log, 1)
    p.send(b"a")
    log.flush()
    p.end(commit=False)  # not flushed
    fs.crash()
    recovered = open_log(fs, clean_shutdown=False, recovery_point=log.recovery_point, high_watermark=1)
    assert recovered.log_end_offset == 1
    assert recovered.collect_aborted_transactions(0, 10) == []
    assert recovered.producer_state.ongoing_txns == {1: 0}  # the transaction is open again
    assert recovered.last_stable_offset == 0


def test_corrupt_txn_index_is_rebuilt_from_the_log_when_used():
    fs = FakeFileSystem()
    log = open_log(fs, SMALL)
    interleaved_across_segments(log)
    expected = txn_index_files(fs)
    expected_aborted = log.collect_aborted_transactions(0, log.log_end_offset)
    log.flush()
    log.close()
    for path in expected:
        fs.files[path].data += b"\x01\x02"  # not a multiple of 34 any more
    reopened = open_log(fs, SMALL, clean_shutdown=True, high_watermark=log.log_end_offset)
    assert reopened.collect_aborted_transactions(0, reopened.log_end_offset) == expected_aborted
    assert txn_index_files(fs) == expected


def test_snapshot_round_trip_keeps_open_transactions_and_coordinator_epochs():
    fs = FakeFileSystem()
    log = open_log(fs)
    a, b = Producer(log, 1, epoch=2), Producer(log, 2)
    a.send(b"a")
    b.send(b"b")
    b.end(commit=True, coordinator_epoch=6)
    a.send(b"a2")
    log.flush()
    log.close()  # snapshot at the log end
    reopened = open_log(fs, high_watermark=log.log_end_offset)
    state = reopened.producer_state
    assert state.ongoing_txns == {1: 0}
    assert state.producers[1].current_txn_first_offset == 0 and state.producers[1].producer_epoch == 2
    assert state.producers[2].coordinator_epoch == 6 and state.producers[2].current_txn_first_offset == -1
    assert reopened.last_stable_offset == 0
    assert reopened.append_control_marker(2, 0, True, 5, 0, 0).error is ErrorCode.transaction_coordinator_fenced


def test_truncation_truncates_the_txn_index_and_reopens_the_transaction():
    fs = FakeFileSystem()
    log = open_log(fs)
    a, b = Producer(log, 1), Producer(log, 2)
    a.send(b"a")              # 0
    a.end(commit=False)       # 1
    b.send(b"b")              # 2
    b.end(commit=False)       # 3
    assert len(log.active_segment.txn_index.entries) == 2
    log.truncate_to(3)
    assert log.active_segment.txn_index.entries == [AbortedTxn(1, 0, 1, 2)]
    assert len(fs.read_file(log.active_segment.txn_index.path)) == 34
    assert log.producer_state.ongoing_txns == {2: 2}
    log.update_high_watermark(3)
    assert log.last_stable_offset == 2
    log.truncate_to(0)
    assert log.active_segment.txn_index.entries == [] and log.producer_state.ongoing_txns == {}


def test_retention_deletes_a_segments_txn_index_with_it():
    fs = FakeFileSystem()
    log = open_log(fs, SMALL)
    interleaved_across_segments(log)
    for _ in range(8):
        append_values(log, [b"filler-%d" % _])
    advance(log)
    before = set(txn_index_files(fs))
    assert before
    log.delete_records(log.segments[-1].base_offset)
    log.delete_old_segments(now_ms=5_000)
    log.delete_expired_files(now_ms=10_000)
    assert txn_index_files(fs) == {} and not any(p.endswith(".deleted") for p in fs.files)


def expected_view(events, log_end_offset: int, start: int = 0, upper: int | None = None):
    """From (kind, producer id, offset) events: the open transactions and the aborted ones
    [(pid, first offset)] overlapping [start, upper) among events below the log end."""
    upper = log_end_offset if upper is None else upper
    open_txns: dict[int, int] = {}
    aborted = []
    for kind, pid, offset in events:
        if offset >= log_end_offset:
            break
        if kind == "data":
            open_txns.setdefault(pid, offset)
        elif kind in ("commit", "abort"):
            first = open_txns.pop(pid, offset)
            if kind == "abort" and offset >= start and first < upper and start < upper:
                aborted.append((pid, first))
    return open_txns, aborted


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_interleavings_match_a_model_before_and_after_a_crash(seed):
    rng = random.Random(seed)
    fs = FakeFileSystem()
    log = open_log(fs, SMALL)
    producers = {pid: Producer(log, pid) for pid in (1, 2, 3, 4)}
    events = []
    for _ in range(120):
        pid = rng.choice(list(producers))
        action = rng.random()
        if action < 0.5:
            result = producers[pid].send(*[b"v%d" % rng.randrange(100) for _ in range(rng.randint(1, 3))])
            events.append(("data", pid, result.base_offset))
        elif action < 0.75:
            commit = rng.random() < 0.5
            result = producers[pid].end(commit=commit)
            events.append(("commit" if commit else "abort", pid, result.base_offset))
        else:
            result = append_values(log, [b"plain"])
            events.append(("plain", -1, result.base_offset))
        assert result.error is ErrorCode.none
        advance(log)
        if rng.random() < 0.1:
            log.flush()
        open_txns, aborted = expected_view(events, log.log_end_offset)
        assert log.last_stable_offset == min([*open_txns.values(), log.high_watermark])
        assert log.collect_aborted_transactions(0, log.log_end_offset) == aborted
    for _ in range(20):
        start = rng.randrange(log.log_end_offset)
        upper = rng.randrange(start, log.log_end_offset + 1)
        assert log.collect_aborted_transactions(start, upper) == expected_view(events, log.log_end_offset,
                                                                                start, upper)[1]
    fs.crash(tear_last_write_at=rng.choice([None, 10]))
    recovered = open_log(fs, SMALL, clean_shutdown=False, recovery_point=log.recovery_point,
                         high_watermark=log.log_end_offset)
    assert recovered.log_end_offset >= log.recovery_point
    open_txns, aborted = expected_view(events, recovered.log_end_offset)
    assert recovered.producer_state.ongoing_txns == open_txns
    assert recovered.collect_aborted_transactions(0, recovered.log_end_offset) == aborted
    assert recovered.last_stable_offset == min([*open_txns.values(), recovered.high_watermark])
