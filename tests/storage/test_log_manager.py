"""LogManager: lock, checkpoints, clean-shutdown marker, create/delete, flush.ms, real filesystem."""

import os
import subprocess
import sys
import uuid

import pytest

from odradek.storage.fs import RealFileSystem
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import DataDirLockedError, LogManager
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, read_all

TOPIC_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_second_log_manager_on_the_same_dir_is_refused(tmp_path):
    first = LogManager(RealFileSystem(), [str(tmp_path)], now_ms=0)
    first.open()
    second = LogManager(RealFileSystem(), [str(tmp_path)], now_ms=0)
    with pytest.raises(DataDirLockedError, match="in use"):
        second.open()
    first.close()
    second.open()  # released by close
    second.close()


def test_lock_is_refused_to_another_process(tmp_path):
    manager = LogManager(RealFileSystem(), [str(tmp_path)], now_ms=0)
    manager.open()
    code = ("import sys\nfrom odradek.storage.fs import RealFileSystem\n"
            "from odradek.storage.log_manager import LogManager, DataDirLockedError\n"
            f"m = LogManager(RealFileSystem(), [{str(tmp_path)!r}], 0)\n"
            "try:\n    m.open()\nexcept DataDirLockedError:\n    sys.exit(3)\nsys.exit(0)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=20, check=False).returncode == 3
    manager.close()


def test_clean_close_and_reopen_on_a_real_filesystem(tmp_path):
    fs = RealFileSystem()
    manager = LogManager(fs, [str(tmp_path)], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("orders", 2, LogConfig(segment_bytes=300), TOPIC_ID)
    for i in range(20):
        append_values(log, [b"order-%d" % i], leader_epoch=4)
    log.update_high_watermark(18)
    region = log.read(0, 1000, max_offset=log.high_watermark).region
    assert os.pread(region.fd, region.size_bytes, region.position) == region.read()  # a real fd for sendfile
    expected = read_all(log)
    manager.close()
    names = sorted(os.listdir(tmp_path))
    assert names == [".kafka_cleanshutdown", ".lock", "log-start-offset-checkpoint", "orders-2",
                     "recovery-point-offset-checkpoint", "replication-offset-checkpoint"]
    assert (tmp_path / "replication-offset-checkpoint").read_text() == "0\n1\norders 2 18\n"
    assert (tmp_path / "recovery-point-offset-checkpoint").read_text() == "0\n1\norders 2 20\n"
    metadata = (tmp_path / "orders-2" / "partition.metadata").read_text()
    assert metadata == "version: 0\ntopic_id: EjRWeBI0VngSNFZ4EjRWeA\n"
    assert (tmp_path / "orders-2" / "leader-epoch-checkpoint").read_text() == "0\n1\n4 0\n"

    again = LogManager(fs, [str(tmp_path)], now_ms=0)
    again.open()
    assert not (tmp_path / ".kafka_cleanshutdown").exists()  # a crash from now on is noticed
    log = again.get_log("orders", 2)
    assert (log.log_end_offset, log.high_watermark, log.topic_id) == (20, 18, TOPIC_ID)
    assert read_all(log) == expected
    same = again.get_or_create_log("orders", 2, LogConfig(segment_bytes=300), TOPIC_ID)
    assert same is log and same.config.segment_bytes == 300
    again.close()


def test_unclean_restart_recovers_from_checkpointed_recovery_points():
    fs = FakeFileSystem()
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, LogConfig(), None)
    append_values(log, [b"a", b"b"])
    log.flush()
    append_values(log, [b"c"])
    manager.checkpoint()
    fs.crash()
    again = LogManager(fs, ["/data"], now_ms=0)
    again.open()
    recovered = again.get_log("t", 0)
    assert [v for _, v in read_all(recovered)] == [b"a", b"b"]
    again.close()


def test_delete_log_renames_then_removes_the_dir():
    fs = FakeFileSystem()
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("gone", 0, LogConfig(), None)
    append_values(log, [b"x"])
    manager.delete_log("gone", 0)
    assert manager.get_log("gone", 0) is None
    assert not [n for n in fs.listdir("/data") if n.startswith("gone")]
    # A leftover `-delete` dir from a crash is removed at open.
    fs.mkdir("/data/old-0.0123456789abcdef0123456789abcdef-delete")
    manager.close()
    again = LogManager(fs, ["/data"], now_ms=0)
    again.open()
    assert not [n for n in fs.listdir("/data") if n.endswith("-delete")]
    assert again.logs() == []
    again.close()


def test_flush_logs_due_applies_flush_ms():
    fs = FakeFileSystem()
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, LogConfig(flush_ms=1000), None)
    append_values(log, [b"a"])
    manager.flush_logs_due(now_ms=500)
    assert log.recovery_point == 0
    manager.flush_logs_due(now_ms=1000)
    assert log.recovery_point == 1
    manager.close()


def test_metadata_log_dir_and_stray_files_are_not_loaded():
    fs = FakeFileSystem()
    fs.mkdir("/data/__cluster_metadata-0")
    fs.mkdir("/data/not a partition")
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    assert manager.logs() == []
    manager.close()
