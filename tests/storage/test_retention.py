"""Retention and DeleteRecords on one Log over the fake filesystem."""

import dataclasses

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import PARTITION_DIR, append_values, open_log, read_all

# Every 3 single-record batches of 100-byte values roll a segment (one batch is ~ 170 bytes).
SMALL = LogConfig(segment_bytes=500, retention_ms=-1, retention_bytes=-1, file_delete_delay_ms=1_000)


@pytest.fixture
def fs():
    return FakeFileSystem()


def fill(log, count, *, timestamp_ms=1_000):
    for i in range(count):
        append_values(log, [b"%03d" % i + bytes(97)], timestamps=[timestamp_ms + i])
    log.update_high_watermark(log.log_end_offset)


def names(fs):
    return sorted(p.rsplit("/", 1)[1] for p in fs.files if p.startswith(PARTITION_DIR + "/"))


def test_time_retention_deletes_old_segments_but_never_the_active_one(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_ms=10_000))
    fill(log, 10, timestamp_ms=1_000)
    assert len(log.segments) > 2
    active = log.active_segment
    assert log.delete_old_segments(now_ms=5_000) == 0  # nothing old enough
    deleted = log.delete_old_segments(now_ms=1_000_000)
    assert deleted == len(log.segments) + deleted - 1 and log.segments == [active]
    assert log.log_start_offset == active.base_offset
    assert log.read(0, 1000, max_offset=log.log_end_offset).error is ErrorCode.offset_out_of_range
    assert [o for o, _ in read_all(log)] == list(range(active.base_offset, 10))


def test_time_retention_uses_the_largest_timestamp_of_a_segment_and_deletes_a_prefix(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_ms=10_000))
    fill(log, 3, timestamp_ms=1_000)  # segment 0: old
    fill(log, 3, timestamp_ms=50_000)  # segment 1: new
    fill(log, 3, timestamp_ms=1_000)  # segment 2: old again, but after a kept one
    fill(log, 1, timestamp_ms=1_000)  # active
    bases = [s.base_offset for s in log.segments]
    assert log.delete_old_segments(now_ms=40_000) == 1
    assert [s.base_offset for s in log.segments] == bases[1:]


def test_retention_bytes_bounds_the_partition_to_within_one_segment(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_bytes=1_200))
    fill(log, 30)
    log.delete_old_segments(now_ms=0)
    total = log.size_bytes()
    assert total <= 1_200 + SMALL.segment_bytes
    assert total - log.segments[0].size_bytes < 1_200 or len(log.segments) == 1
    assert log.log_start_offset == log.segments[0].base_offset > 0


def test_deleted_segments_are_renamed_then_removed_after_the_delay(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_ms=10))
    fill(log, 7)
    log.delete_old_segments(now_ms=100_000)
    assert any(n.endswith(".log.deleted") for n in names(fs))
    region = log.read(log.log_start_offset, 1000, max_offset=log.log_end_offset).region
    log.delete_expired_files(now_ms=100_500)
    assert any(n.endswith(".deleted") for n in names(fs))
    log.delete_expired_files(now_ms=101_000)
    assert not any(n.endswith(".deleted") for n in names(fs))
    assert region.read()  # a region of a kept segment is unaffected


def test_a_crash_after_renaming_leaves_deleted_files_that_the_loader_removes(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_ms=10))
    fill(log, 7)
    log.flush()
    log.delete_old_segments(now_ms=100_000)
    start = log.log_start_offset
    fs.crash()
    reopened = open_log(fs, SMALL, clean_shutdown=False, log_start_offset=0)
    assert not any(n.endswith(".deleted") for n in names(fs))
    assert reopened.log_start_offset == start
    assert [o for o, _ in read_all(reopened)] == list(range(start, 7))


def test_delete_records_advances_the_log_start_offset_and_retention_removes_segments_below(fs):
    log = open_log(fs, SMALL)
    fill(log, 10)
    assert log.delete_records(11) == (ErrorCode.offset_out_of_range, 0)
    assert log.delete_records(4) == (ErrorCode.none, 4)
    assert log.delete_records(2) == (ErrorCode.none, 4)  # never backwards
    assert log.read(3, 1000, max_offset=10).error is ErrorCode.offset_out_of_range
    assert read_all(log)[0][0] == 4
    log.delete_old_segments(now_ms=0)
    assert log.segments[0].base_offset <= 4 < (log.segments[1].base_offset if len(log.segments) > 1 else 99)
    assert log.log_start_offset == 4
    assert log.delete_records(-1) == (ErrorCode.none, 10)  # -1: up to the high watermark
    log.delete_old_segments(now_ms=0)
    assert log.segments == [log.active_segment]


def test_compact_only_topics_keep_old_segments(fs):
    log = open_log(fs, dataclasses.replace(SMALL, retention_ms=10, cleanup_policy=("compact",)))
    fill(log, 10)
    assert log.delete_old_segments(now_ms=10**9) == 0


def test_log_manager_cleanup_checkpoints_the_new_log_start_offset(fs):
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("topic", 0, dataclasses.replace(SMALL, retention_ms=10), None)
    fill(log, 10)
    assert manager.cleanup_logs(now_ms=10**6) > 0
    start = log.log_start_offset
    manager.checkpoint()
    manager.close()
    reopened = LogManager(fs, ["/data"], now_ms=0)
    reopened.open()
    assert reopened.get_log("topic", 0).log_start_offset == start
    reopened.close()
