"""The fake filesystem's crash model (tests/storage/fakefs.py), and storage under it.

First the model itself: per file a prefix of its unsynced writes survives, independently of other
files, the first lost write may land torn, and unsynced directory entries (create, rename, unlink)
may be lost per directory. Then what storage guarantees under it: a checkpoint written with
`write_file_atomic` is old or new, never torn; a crash that loses any of the unsynced files'
operations still recovers a prefix. Last, the durability gap the model found and that is now fixed:
`Log.flush` fsyncing segment files but not the directories that name them.
"""

import random

import pytest

from odradek.storage.checkpoints import OffsetCheckpointFile
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import CrashPlan, FakeFileSystem
from tests.storage.helpers import PARTITION_DIR, append_values, open_log, read_all


def write(fs, path, data, *, sync=False, position=None):
    fd = fs.open(path, create=True)
    try:
        fs.pwrite(fd, data, fs.size(fd) if position is None else position)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)


def durable_fs(*dirs):
    """A fake fs whose `dirs` exist durably."""
    fs = FakeFileSystem()
    for d in dirs:
        fs.mkdir(d)
    for path in sorted(fs.dirs):
        fs.fsync_dir(path)
    return fs


# -- the model ---------------------------------------------------------------------------------
def test_a_later_write_to_one_file_survives_while_an_earlier_write_to_another_is_lost():
    fs = durable_fs("/d")
    write(fs, "/d/a", b"", sync=True)
    write(fs, "/d/b", b"", sync=True)
    write(fs, "/d/a", b"first")
    write(fs, "/d/b", b"second")
    lost = fs.crash(plan=CrashPlan(file_ops_kept={"/d/a": 0, "/d/b": 1}))
    assert fs.read_file("/d/a") == b"" and fs.read_file("/d/b") == b"second"
    assert lost == ["/d/a: kept 0/1 unsynced ops"]


def test_each_file_keeps_a_prefix_of_its_own_writes_and_the_next_may_be_torn():
    fs = durable_fs("/d")
    write(fs, "/d/a", b"", sync=True)
    for chunk in (b"111", b"222", b"333"):
        write(fs, "/d/a", chunk)
    fs.crash(plan=CrashPlan(file_ops_kept={"/d/a": 1}, torn_bytes={"/d/a": 2}))
    assert fs.read_file("/d/a") == b"11122"


def test_random_crashes_keep_only_prefixes_of_each_files_writes():
    outcomes = set()
    for seed in range(200):
        fs = durable_fs("/d")
        for name in ("a", "b"):
            write(fs, f"/d/{name}", b"", sync=True)
        fs.fsync_dir("/d")
        for chunk in (b"1", b"2", b"3"):
            write(fs, "/d/a", chunk)
            write(fs, "/d/b", chunk)
        fs.crash(rng=random.Random(seed))
        a, b = fs.read_file("/d/a"), fs.read_file("/d/b")
        assert b"123".startswith(a) and b"123".startswith(b)
        outcomes.add((a, b))
    assert (b"", b"123") in outcomes and (b"123", b"") in outcomes and len(outcomes) == 16


def test_a_file_created_and_fsynced_in_an_unsynced_directory_entry_can_vanish():
    fs = durable_fs("/d")
    write(fs, "/d/new", b"data", sync=True)
    assert fs.unsynced_bytes() == 0 and fs.unsynced_dir_ops() == 1
    lost = fs.crash(plan=CrashPlan(default_dir_ops="none"))
    assert not fs.exists("/d/new")
    assert lost == ["dir /d: kept 0/1 entry ops, lost link new"]


def test_fsync_dir_makes_creates_renames_and_unlinks_durable():
    fs = durable_fs("/d")
    write(fs, "/d/old", b"old", sync=True)
    write(fs, "/d/tmp", b"new", sync=True)
    fs.rename("/d/tmp", "/d/x")
    fs.unlink("/d/old")
    fs.fsync_dir("/d")
    fs.crash(plan=CrashPlan(default_dir_ops="none"))
    assert fs.listdir("/d") == ["x"] and fs.read_file("/d/x") == b"new"


def test_lost_unlink_brings_the_file_back_and_lost_rename_keeps_the_old_target():
    fs = durable_fs("/d")
    write(fs, "/d/gone", b"still here", sync=True)
    write(fs, "/d/target", b"old", sync=True)
    fs.fsync_dir("/d")
    fs.unlink("/d/gone")
    write(fs, "/d/target.tmp", b"new", sync=True)
    fs.rename("/d/target.tmp", "/d/target")
    # Keep the unlink and the create, lose the rename.
    fs.crash(plan=CrashPlan(dir_ops_kept={"/d": 2}))
    assert fs.listdir("/d") == ["target", "target.tmp"]
    assert fs.read_file("/d/target") == b"old" and fs.read_file("/d/target.tmp") == b"new"
    fs2 = durable_fs("/d")
    write(fs2, "/d/gone", b"still here", sync=True)
    fs2.fsync_dir("/d")
    fs2.unlink("/d/gone")
    fs2.crash(plan=CrashPlan(default_dir_ops="none"))
    assert fs2.read_file("/d/gone") == b"still here"


def test_a_rename_can_survive_while_the_renamed_files_unsynced_data_is_lost():
    fs = durable_fs("/d")
    fs.write_file_atomic("/d/snap", b"v1")  # durable
    fs.write_file_atomic("/d/snap", b"v2", durable=False)
    fs.crash(plan=CrashPlan(default_file_ops="none", default_dir_ops="all"))
    assert fs.read_file("/d/snap") == b""  # renamed in, its content never reached the disk


def test_renaming_a_directory_moves_its_files_and_a_lost_rename_restores_the_old_name():
    fs = durable_fs("/data/t-0")
    write(fs, "/data/t-0/x", b"x", sync=True)
    fs.fsync_dir("/data/t-0")
    fs.rename("/data/t-0", "/data/t-0.abc-delete")
    assert fs.read_file("/data/t-0.abc-delete/x") == b"x" and not fs.exists("/data/t-0")
    fs.remove_tree("/data/t-0.abc-delete")
    fs.crash(plan=CrashPlan(default_dir_ops="none"))
    assert fs.listdir("/data") == ["t-0"] and fs.read_file("/data/t-0/x") == b"x"


def test_the_original_crash_models_are_unchanged():
    fs = durable_fs("/d")
    write(fs, "/d/a", b"aaaa")
    write(fs, "/d/b", b"bbbb")
    fs.crash(tear_last_write_at=1)  # everything kept but the last write, torn
    assert fs.read_file("/d/a") == b"aaaa" and fs.read_file("/d/b") == b"b"
    write(fs, "/d/a", b"more")
    write(fs, "/d/c", b"cccc")
    fs.crash()  # unsynced data lost, every directory entry kept
    assert fs.read_file("/d/a") == b"aaaa" and fs.read_file("/d/c") == b""


# -- storage under the model -------------------------------------------------------------------
def test_an_atomic_checkpoint_is_old_or_new_whatever_survives():
    for seed in range(300):
        fs = durable_fs("/d")
        checkpoint = OffsetCheckpointFile(fs, "/d/cp")
        checkpoint.write({("a", 0): 1})
        checkpoint.write({("a", 0): 2})
        write(fs, "/d/unrelated", b"noise")
        fs.crash(rng=random.Random(seed))
        assert checkpoint.read() == {("a", 0): 2}, seed  # the second write was fully durable
        fs = durable_fs("/d")
        checkpoint = OffsetCheckpointFile(fs, "/d/cp")
        checkpoint.write({("a", 0): 1})
        fs.write_file_atomic("/d/cp", b"0\n1\na 0 2\n", durable=False)  # the rename may or may not land
        fs.crash(rng=random.Random(seed))
        assert checkpoint.read() in ({("a", 0): 1}, {("a", 0): 2}, {}), seed


def test_losing_a_later_segment_write_while_an_earlier_one_survives_recovers_a_prefix():
    """Reordering across files: the second segment's unsynced batch lands, the first segment's
    earlier unsynced batch is lost. Recovery must stop at the hole, not serve the later batch."""
    fs = durable_fs("/data")
    config = LogConfig(segment_bytes=300, index_interval_bytes=64)
    log = open_log(fs, config)
    fs.fsync_dir("/data")
    append_values(log, [b"a" * 60])
    log.flush()
    fs.fsync_dir(PARTITION_DIR)
    append_values(log, [b"b" * 60])  # offset 1, still in segment 0 (unsynced)
    append_values(log, [b"c" * 60])  # rolls: offset 2 in segment 2 (unsynced)
    assert [s.base_offset for s in log.segments] == [0, 2]
    fs.crash(plan=CrashPlan(file_ops_kept={log.segments[0].log_path: 0, log.segments[1].log_path: 10},
                            default_file_ops="all"))
    recovered = open_log(fs, config, clean_shutdown=False, recovery_point=1)
    assert read_all(recovered) == [(0, b"a" * 60)]
    assert append_values(recovered, [b"d"]).base_offset == 1


# -- found by the model: Log.flush fsyncs the directories naming new files ---------------------
# (Log.flush once fsynced segment files only; as Kafka's LocalLog.flush it now fsyncs the log dir
# when it flushes a segment created since the last flush, and the data dir on a log's first flush.)


def test_fsynced_records_in_a_new_segment_survive_losing_unsynced_directory_entries():
    fs = durable_fs("/data")
    config = LogConfig(segment_bytes=300, index_interval_bytes=64)
    log = open_log(fs, config)
    fs.fsync_dir("/data")  # the partition dir itself is durable here; only the segment is new
    fs.fsync_dir(PARTITION_DIR)
    for value in (b"a" * 60, b"b" * 60, b"c" * 60):
        append_values(log, [value])
    assert len(log.segments) == 2  # the roll created a segment file
    log.flush()
    assert log.recovery_point == 3
    fs.crash(plan=CrashPlan(default_dir_ops="none"))
    recovered = open_log(fs, config, clean_shutdown=False, recovery_point=3)
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2]


def test_fsynced_records_of_a_new_partition_survive_losing_unsynced_directory_entries():
    fs = durable_fs("/data")
    log = open_log(fs)
    append_values(log, [b"x"])
    log.flush()
    fs.crash(plan=CrashPlan(default_dir_ops="none"))
    recovered = open_log(fs, clean_shutdown=False, recovery_point=1)
    assert read_all(recovered) == [(0, b"x")]
