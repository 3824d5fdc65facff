"""The descriptor cache (fd_cache.py) and logs that live under a small `max_open_files`."""

import gc
import os
import uuid

import pytest

from odradek.storage.fd_cache import CachedFile, FileHandleCache, cache_for
from odradek.storage.fs import RealFileSystem
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log, read_all

TOPIC_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _files(fs, cache, count):
    fs.mkdir("/d")
    return [CachedFile(cache, f"/d/f{i}") for i in range(count)]


def test_least_recently_used_descriptor_is_closed_beyond_the_bound():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=3)
    a, b, c, d = _files(fs, cache, 4)
    for f in (a, b, c):
        f.fd(create=True)
    a.fd()  # a is now the most recently used: b goes first
    d.fd(create=True)
    assert [f.is_open for f in (a, b, c, d)] == [True, False, True, True]
    assert cache.open_count == 3 == len(fs.fds)
    assert cache.evictions == 1


def test_a_closed_file_reopens_on_demand_with_its_content():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=1)
    a, b = _files(fs, cache, 2)
    fs.pwrite(a.fd(create=True), b"hello", 0)
    b.fd(create=True)
    assert not a.is_open
    assert fs.pread(a.fd(), 5, 0) == b"hello"
    assert cache.open_count == 1


def test_pinned_file_is_not_evicted_and_its_close_waits_for_the_last_unpin():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=1)
    a, b, c = _files(fs, cache, 3)
    fd = a.fd(create=True)
    assert a.pin() == fd
    b.fd(create=True)
    c.fd(create=True)
    assert a.is_open and fs.pread(fd, 1, 0) == b""  # still the same descriptor
    a.close()
    assert a.is_open  # deferred
    a.unpin()
    assert not a.is_open and fd not in fs.fds


def test_fsync_of_a_dirty_file_whose_descriptor_was_evicted_makes_it_durable():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=1)
    a, b = _files(fs, cache, 2)
    a.dirty = True
    fs.pwrite(a.fd(create=True), b"durable", 0)
    b.fd(create=True)  # evicts a, unsynced
    assert not a.is_open and fs.unsynced_bytes() == 7
    a.fsync()
    assert not a.is_open and fs.unsynced_bytes() == 0 and not a.dirty
    fs.crash()
    fd = fs.open("/d/f0")
    assert fs.pread(fd, 7, 0) == b"durable"


def test_fsync_of_a_clean_closed_file_opens_nothing():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=4)
    (a,) = _files(fs, cache, 1)
    a.fsync()
    assert fs.fsync_count == 0 and cache.opens == 0


def test_lowering_the_bound_closes_descriptors_at_once():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=10)
    files = _files(fs, cache, 6)
    for f in files:
        f.fd(create=True)
    cache.set_max_open_files(2)
    assert cache.open_count == 2 and [f.is_open for f in files] == [False] * 4 + [True] * 2
    with pytest.raises(ValueError):
        cache.set_max_open_files(0)


def test_many_partitions_append_read_and_restart_within_the_bound():
    fs = FakeFileSystem()
    manager = LogManager(fs, ["/data"], now_ms=0, max_open_files=4)
    manager.open()
    config = LogConfig(segment_bytes=400, index_interval_bytes=1)
    logs = [manager.get_or_create_log(f"t{p % 5}", p, config, TOPIC_ID) for p in range(40)]
    for round_ in range(6):
        for p, log in enumerate(logs):
            append_values(log, [b"p%d-r%d" % (p, round_)] * 3)
            assert cache_for(fs).open_count <= 4
    assert all(len(log.segments) > 1 for log in logs)
    expected = [read_all(log) for log in logs]
    assert all(len(e) == 18 for e in expected)
    assert cache_for(fs).open_count <= 4
    manager.close()
    assert cache_for(fs).open_count == 0

    manager = LogManager(fs, ["/data"], now_ms=0, max_open_files=4)
    manager.open()
    assert cache_for(fs).open_count <= 4
    reopened = [manager.get_or_create_log(f"t{p % 5}", p, config, TOPIC_ID) for p in range(40)]
    assert [read_all(log) for log in reopened] == expected
    for p, log in enumerate(reopened):  # appends after the restart continue at the log end
        assert append_values(log, [b"again"]).base_offset == 18
    manager.close()


def test_flush_after_the_active_segment_descriptor_was_evicted_survives_a_crash():
    fs = FakeFileSystem()
    cache_for(fs).set_max_open_files(1)
    log = open_log(fs, dir="/data/a-0")
    other = open_log(fs, dir="/data/b-0")
    append_values(log, [b"one", b"two"])
    append_values(other, [b"x"])  # evicts log's descriptors
    assert log.active_segment._fd is None
    log.flush()
    assert log.recovery_point == 2
    fs.crash()
    recovered = open_log(fs, dir="/data/a-0", clean_shutdown=False, recovery_point=2)
    assert [v for _, v in read_all(recovered)] == [b"one", b"two"]


def test_recovery_after_a_crash_syncs_recovered_segments_even_if_evicted():
    fs = FakeFileSystem()
    log = open_log(fs, dir="/data/a-0")
    append_values(log, [b"one"])
    fs.crash()  # power loss before anything was synced: the append is lost
    cache_for(fs).set_max_open_files(1)
    log = open_log(fs, dir="/data/a-0", clean_shutdown=False)
    append_values(log, [b"two"])
    open_log(fs, dir="/data/b-0")  # evicts
    log.flush()
    fs.crash()
    log = open_log(fs, dir="/data/a-0", clean_shutdown=False)
    assert [v for _, v in read_all(log)] == [b"two"]


def test_a_file_region_keeps_its_descriptor_and_bytes_while_the_cache_churns(tmp_path):
    fs = RealFileSystem()
    manager = LogManager(fs, [str(tmp_path)], now_ms=0, max_open_files=2)
    manager.open()
    log = manager.get_or_create_log("orders", 0, LogConfig(segment_bytes=300), TOPIC_ID)
    for i in range(10):
        append_values(log, [b"order-%d" % i])
    log.update_high_watermark(log.log_end_offset)
    region = log.read(0, 10_000, max_offset=log.high_watermark).region
    expected = region.read()
    others = [manager.get_or_create_log("other", p, LogConfig(), TOPIC_ID) for p in range(8)]
    for other in others:
        append_values(other, [b"x"])
    assert cache_for(fs).open_count == 2 and cache_for(fs).evictions > 0
    assert os.pread(region.fd, region.size_bytes, region.position) == expected
    # Deleting the partition (close, rename, remove) does not close a descriptor a region holds.
    manager.delete_log("orders", 0)
    assert os.pread(region.fd, region.size_bytes, region.position) == expected
    fd = region.fd
    del region
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once the region is gone (nothing reopened that number since)
    manager.close()


def test_retention_rename_keeps_outstanding_regions_readable():
    fs = FakeFileSystem()
    cache_for(fs).set_max_open_files(1)
    log = open_log(fs, LogConfig(segment_bytes=200, retention_ms=10))
    for i in range(8):
        append_values(log, [b"v%d" % i], now_ms=0)
    log.update_high_watermark(log.log_end_offset)
    region = log.read(0, 10_000, max_offset=log.high_watermark).region
    expected = region.read()
    assert log.delete_old_segments(now_ms=1_000_000) > 0
    open_log(fs, dir="/data/other-0")  # churn the cache
    assert region.read() == expected
    log.delete_expired_files(now_ms=10**9)
    assert region.read() == expected  # the pin keeps the (now unlinked) file's descriptor


def test_a_new_partition_creates_only_its_log_file_and_indexes_come_with_the_first_entry(caplog):
    fs = FakeFileSystem()
    log = open_log(fs, LogConfig(index_interval_bytes=100))
    assert sorted(n for n in fs.listdir("/data/topic-0") if "0000" in n) == ["00000000000000000000.log"]
    append_values(log, [b"small"])
    log.close()
    # Restart: a segment smaller than index.interval.bytes loads without index files, no rebuild.
    caplog.clear()
    log = open_log(fs, LogConfig(index_interval_bytes=100))
    assert [v for _, v in read_all(log)] == [b"small"]
    assert "rebuilding" not in caplog.text
    for i in range(10):
        append_values(log, [b"x" * 50])
    assert log.active_segment.offset_index.entries > 0
    assert fs.exists("/data/topic-0/00000000000000000000.index")
    log.close()
    # A large segment whose .index is missing is rebuilt (as before).
    fs.unlink("/data/topic-0/00000000000000000000.index")
    caplog.clear()
    log = open_log(fs, LogConfig(index_interval_bytes=100))
    assert "rebuilding" in caplog.text
    assert len(read_all(log)) == 11
    assert log.active_segment.offset_index.entries > 0


def _abandon(manager: LogManager) -> None:
    """A crash of the broker process (not of the machine): files stay as written, locks go."""
    for data_dir in manager._dirs:
        manager.fs.unlock(data_dir.lock_handle)
    for the_log in manager.logs():
        for segment in the_log.segments:
            segment._log_file.close()


def test_many_logs_open_and_recover_in_threads_on_a_real_filesystem(tmp_path):
    fs = RealFileSystem()
    config = LogConfig(segment_bytes=300, index_interval_bytes=50)
    manager = LogManager(fs, [str(tmp_path)], now_ms=0, max_open_files=8)
    manager.open()
    logs = [manager.get_or_create_log("t", p, config, TOPIC_ID) for p in range(60)]
    for round_ in range(5):
        for p, log in enumerate(logs):
            append_values(log, [b"p%d-r%d" % (p, round_)])
    expected = {p: read_all(log) for p, log in enumerate(logs)}
    _abandon(manager)
    for p in range(0, 60, 7):  # torn tails in some partitions
        last = sorted(n for n in os.listdir(tmp_path / f"t-{p}") if n.endswith(".log"))[-1]
        with open(tmp_path / f"t-{p}" / last, "ab") as f:
            f.write(b"\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x01\x00torn")
    manager = LogManager(fs, [str(tmp_path)], now_ms=0, max_open_files=8)
    manager.open()
    assert cache_for(fs).open_count <= 8
    recovered = {p: read_all(manager.get_or_create_log("t", p, config, TOPIC_ID)) for p in range(60)}
    assert recovered == expected
    manager.close()
    manager = LogManager(fs, [str(tmp_path)], now_ms=0, max_open_files=8)
    manager.open()  # clean this time
    assert {p: read_all(manager.get_or_create_log("t", p, config, TOPIC_ID)) for p in range(60)} == expected
    manager.close()
    assert cache_for(fs).open_count == 0


def test_pinning_block_keeps_every_file_it_touched_open_until_it_ends():
    fs = FakeFileSystem()
    cache = FileHandleCache(fs, max_open_files=1)
    a, b, c = _files(fs, cache, 3)
    with cache.pinning():
        a.fd(create=True)
        b.fd(create=True)
        assert a.is_open and b.is_open  # over the bound while pinned
        c.fd(create=True)
        assert a.is_open and b.is_open
    c.fd()  # the next use enforces the bound again
    assert cache.open_count == 1 and c.is_open
