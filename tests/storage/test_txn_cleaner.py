"""The cleaner and transactions: aborted data goes, markers stay until no longer needed,
read_committed reads the same committed view before and after, and a crash at any step is safe."""

from __future__ import annotations

import dataclasses

import pytest

from odradek.protocol import records
from odradek.protocol.records import iter_headers, iter_records
from odradek.storage.cleaner import STEPS, clean_log
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from tests.storage.fakefs import FakeFileSystem

COMPACT = LogConfig(segment_bytes=100_000, cleanup_policy=("compact",), retention_ms=-1, file_delete_delay_ms=0,
                    delete_retention_ms=1_000_000)
APPEND_MS = 1_000
SOON_MS = 10_000  # markers are younger than delete.retention.ms
LATER_MS = 5_000_000  # markers are older


class Crash(Exception):
    pass


def send(log: Log, producer_id: int, entries, *, sequence: int, transactional: bool = True) -> None:
    batch = bytearray(records.build_batch([(k, v, [], APPEND_MS) for k, v in entries], producer_id=producer_id,
                                          producer_epoch=0, base_sequence=sequence, transactional=transactional))
    header = records.validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    assert log.append(batch, header, leader_epoch=0, now_ms=APPEND_MS).error.value == 0


def end(log: Log, producer_id: int, commit: bool) -> None:
    assert log.append_control_marker(producer_id, 0, commit, 0, 0, APPEND_MS).error.value == 0


def fill(log: Log) -> None:
    """k1, k2 committed by producer 1; producer 2 aborts new values for both; k1 committed again
    by producer 3; producer 4 aborts a value for a key nobody else wrote."""
    send(log, 1, [(b"k1", b"one"), (b"k2", b"two")], sequence=0)
    end(log, 1, commit=True)
    send(log, 2, [(b"k1", b"aborted-1")], sequence=0)
    send(log, 2, [(b"k2", b"aborted-2")], sequence=1)
    send(log, 3, [(b"k1", b"three")], sequence=0)
    end(log, 2, commit=False)
    end(log, 3, commit=True)
    send(log, 4, [(b"k4", b"aborted-4")], sequence=0)
    end(log, 4, commit=False)
    log._roll(APPEND_MS)  # all of it in one inactive segment
    send(log, 5, [(b"k5", b"plain")], sequence=0, transactional=False)
    log.update_high_watermark(log.log_end_offset)


def read_committed(log: Log):
    """(offset, key, value) a read_committed consumer sees, as the Java consumer filters."""
    lso = log.last_stable_offset
    aborted = sorted(log.collect_aborted_transactions(log.log_start_offset, lso), key=lambda a: a[1])
    aborted_producers: set[int] = set()
    out = []
    for header, data in fetch_all(log, lso):
        batch = data[header.position:header.position + header.size_bytes]
        if header.is_control:
            marker = records.parse_end_txn_marker(batch)
            if marker is not None and not marker.commit:
                aborted_producers.discard(header.producer_id)
            continue
        while aborted and aborted[0][1] <= header.last_offset:
            aborted_producers.add(aborted.pop(0)[0])
        if header.is_transactional and header.producer_id in aborted_producers:
            continue
        out.extend((r.offset, r.key, r.value) for r in iter_records(batch))
    return out


def fetch_all(log: Log, max_offset: int):
    """(header, fetched bytes) of every batch from the log start below `max_offset`, fetch by fetch."""
    offset = log.log_start_offset
    while offset < max_offset:
        data = log.read(offset, 1 << 20, max_offset=max_offset).region.read()
        if not data:
            return
        for header in iter_headers(data):
            if header.last_offset >= offset:
                yield header, data
            offset = max(offset, header.next_offset)


def markers(log: Log) -> list[tuple[int, int, bool]]:
    found = []
    for header, data in fetch_all(log, log.log_end_offset):
        if header.is_control:
            marker = records.parse_end_txn_marker(data[header.position:header.position + header.size_bytes])
            found.append((header.base_offset, header.producer_id, marker.commit))
    return found


def latest_committed(view):
    last = {}
    for offset, key, value in view:
        last[key] = (offset, value)
    return sorted((offset, key, value) for key, (offset, value) in last.items())


def clean(log: Log, now_ms: int, **kwargs):
    return clean_log(log, now_ms=now_ms, first_dirty_offset=0, offset_map_memory_bytes=1 << 20,
                     checkpoint=lambda offset: None, force=True, **kwargs)


def test_aborted_data_is_removed_and_never_supersedes_committed_values():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    log = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    fill(log)
    before = read_committed(log)
    assert [v for _, _, v in before] == [b"one", b"two", b"three", b"plain"]
    result = clean(log, SOON_MS)
    assert result is not None and result.records_removed >= 3
    after = read_committed(log)
    assert after == latest_committed(before)  # k1=three, k2=two (not the aborted value), k5
    values = [r.value for h, raw in fetch_all(log, log.log_end_offset) if not h.is_control
              for r in iter_records(raw[h.position:h.position + h.size_bytes])]
    assert not any(v.startswith(b"aborted") for v in values)
    # Markers are young: all kept, and the aborted transactions stay in the .txnindex.
    assert [(pid, commit) for _, pid, commit in markers(log)] == [(1, True), (2, False), (3, True), (4, False)]
    assert [pid for pid, _ in log.collect_aborted_transactions(0, log.log_end_offset)] == [2, 4]


def test_markers_go_after_delete_retention_with_their_txn_index_entries():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    log = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    fill(log)
    expected = latest_committed(read_committed(log))
    clean(log, SOON_MS)
    clean(log, LATER_MS)
    # The ABORT markers went with their entries; producer 1's COMMIT marker stays while its
    # transaction's data (k2=two) is still in the log; producer 3's too (k1=three).
    assert [(pid, commit) for _, pid, commit in markers(log)] == [(1, True), (3, True)]
    assert log.collect_aborted_transactions(0, log.log_end_offset) == []
    assert all(not s.txn_index.entries for s in log.segments)
    assert read_committed(log) == expected
    # Reopened (the .txnindex files are read from disk), the view is the same.
    log.close()
    reopened = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=log.log_end_offset,
                        log_start_offset=0, high_watermark=log.log_end_offset, clean_shutdown=True, now_ms=0)
    assert read_committed(reopened) == expected


def test_commit_marker_goes_once_no_data_of_its_transaction_is_left():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    log = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    send(log, 1, [(b"k", b"old")], sequence=0)
    end(log, 1, commit=True)
    send(log, 2, [(b"k", b"new")], sequence=0, transactional=False)
    log._roll(APPEND_MS)
    send(log, 3, [(b"x", b"y")], sequence=0, transactional=False)
    log.update_high_watermark(log.log_end_offset)
    clean(log, LATER_MS)
    # As Kafka: this pass met a batch of the transaction (its record superseded), so the marker
    # stays; the next pass meets none and removes it.
    assert markers(log) == [(1, 1, True)]
    clean(log, LATER_MS)
    assert markers(log) == []
    assert [v for _, _, v in read_committed(log)] == [b"new", b"y"]


def test_cleaner_stops_at_the_last_stable_offset():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    log = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    send(log, 1, [(b"k", b"open")], sequence=0)  # never ended
    send(log, 2, [(b"k", b"v1")], sequence=0, transactional=False)
    log._roll(APPEND_MS)
    send(log, 2, [(b"k", b"v2")], sequence=1, transactional=False)
    log.update_high_watermark(log.log_end_offset)
    assert log.last_stable_offset == 0
    assert clean(log, LATER_MS) is None  # nothing below the LSO is cleanable


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_keeps_log_and_txn_index_in_agreement(step):
    fs = FakeFileSystem()
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, COMPACT, None)
    fill(log)
    expected = latest_committed(read_committed(log))
    clean(log, SOON_MS)  # aborted data gone; markers and entries kept
    log.flush()

    def hook(name):
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        clean_log(log, now_ms=LATER_MS, first_dirty_offset=0, offset_map_memory_bytes=1 << 20,
                  checkpoint=lambda offset: manager.checkpoint_cleaner_offset(log, offset), force=True,
                  step_hook=hook)
    fs.crash()
    reopened = LogManager(fs, ["/data"], now_ms=0)
    reopened.open()
    recovered = reopened.get_log("t", 0)
    recovered.update_high_watermark(recovered.log_end_offset)
    assert not any(p.endswith((".cleaned", ".swap")) for p in fs.files)
    aborted_markers = [pid for _, pid, commit in markers(recovered) if not commit]
    indexed = [pid for pid, _ in recovered.collect_aborted_transactions(0, recovered.log_end_offset)]
    assert indexed == aborted_markers  # every ABORT marker has its entry and no entry lacks one
    assert aborted_markers == ([2, 4] if step == "cleaned_written" else [])
    assert read_committed(recovered) == expected
    reopened.close()


def test_transactions_spanning_segments_clean_consistently():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    config = dataclasses.replace(COMPACT, segment_bytes=300)
    log = Log.open(fs, "/data/t-0", config, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    for i in range(6):
        send(log, 1, [(b"a%d" % (i % 3), b"committed-%d" % i)], sequence=i)
        send(log, 2, [(b"a%d" % (i % 3), b"aborted-%d" % i)], sequence=i)
    end(log, 2, commit=False)
    end(log, 1, commit=True)
    log._roll(APPEND_MS)
    send(log, 9, [(b"z", b"tail")], sequence=0, transactional=False)
    log.update_high_watermark(log.log_end_offset)
    assert len(log.segments) > 3
    expected = latest_committed(read_committed(log))
    clean(log, SOON_MS)
    assert read_committed(log) == expected
    clean(log, LATER_MS)
    assert read_committed(log) == expected
    assert log.collect_aborted_transactions(0, log.log_end_offset) == []


def test_loader_drops_a_lone_txn_index_swap_and_moves_one_in_with_its_log_swap():
    fs = FakeFileSystem()
    fs.mkdir("/data")
    log = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=0, log_start_offset=0,
                   high_watermark=0, clean_shutdown=True, now_ms=0)
    fill(log)
    log.flush()
    log.close()
    segment0 = "/data/t-0/00000000000000000000"
    original = bytes(fs.files[segment0 + ".txnindex"].data)
    assert len(original) == 2 * 34

    def write(path, data):
        fd = fs.open(path, create=True)
        fs.pwrite(fd, data, 0)
        fs.fsync(fd)
        fs.close(fd)

    # A crash between renaming the cleaned .txnindex to .swap and the .log's swap: old contents.
    write(segment0 + ".txnindex.swap", b"")
    reopened = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=log.log_end_offset,
                        log_start_offset=0, high_watermark=log.log_end_offset, clean_shutdown=True, now_ms=0)
    assert not fs.exists(segment0 + ".txnindex.swap")
    assert bytes(fs.files[segment0 + ".txnindex"].data) == original
    assert [pid for pid, _ in reopened.collect_aborted_transactions(0, reopened.log_end_offset)] == [2, 4]
    reopened.close()
    # With the .log's swap present, both move in together.
    write(segment0 + ".txnindex.swap", original[:34])
    write(segment0 + ".log.swap", bytes(fs.files[segment0 + ".log"].data))
    reopened = Log.open(fs, "/data/t-0", COMPACT, topic_id=None, recovery_point=log.log_end_offset,
                        log_start_offset=0, high_watermark=log.log_end_offset, clean_shutdown=True, now_ms=0)
    assert not any(p.endswith(".swap") for p in fs.files)
    assert bytes(fs.files[segment0 + ".txnindex"].data) == original[:34]
    assert [pid for pid, _ in reopened.collect_aborted_transactions(0, reopened.log_end_offset)] == [2]
