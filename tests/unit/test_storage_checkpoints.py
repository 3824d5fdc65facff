from odradek.storage.checkpoints import LeaderEpochCheckpointFile, OffsetCheckpointFile
from odradek.storage.leader_epoch import LeaderEpochFileCache
from tests.storage.fakefs import FakeFileSystem


def test_offset_checkpoint_format_and_round_trip():
    fs = FakeFileSystem()
    fs.mkdir("/d")
    checkpoint = OffsetCheckpointFile(fs, "/d/recovery-point-offset-checkpoint")
    checkpoint.write({("b", 1): 7, ("a", 0): 42})
    assert fs.read_file("/d/recovery-point-offset-checkpoint") == b"0\n2\na 0 42\nb 1 7\n"
    assert checkpoint.read() == {("a", 0): 42, ("b", 1): 7}
    assert "recovery-point-offset-checkpoint.tmp" not in fs.listdir("/d")


def test_checkpoint_write_is_atomic_and_durable_across_a_crash():
    fs = FakeFileSystem()
    fs.mkdir("/d")
    checkpoint = OffsetCheckpointFile(fs, "/d/cp")
    checkpoint.write({("a", 0): 1})
    fs.crash()
    assert checkpoint.read() == {("a", 0): 1}


def test_corrupt_checkpoints_read_as_absent():
    fs = FakeFileSystem()
    fs.mkdir("/d")
    for content in [b"1\n0\n", b"0\n2\na 0 1\n", b"0\n1\na zero 1\n", b"\xff\xfe", b""]:
        fs.write_file_atomic("/d/cp", content)
        assert OffsetCheckpointFile(fs, "/d/cp").read() == {}
    assert OffsetCheckpointFile(fs, "/d/missing").read() == {}


def test_leader_epoch_cache_end_offsets_as_offset_for_leader_epoch():
    fs = FakeFileSystem()
    fs.mkdir("/p")
    cache = LeaderEpochFileCache(fs, "/p/leader-epoch-checkpoint")
    assert cache.end_offset_for_epoch(0, 0) == (-1, -1)
    cache.assign(1, 0)
    cache.assign(1, 5)  # same epoch: no new entry
    cache.assign(3, 10)
    cache.assign(5, 20)
    assert cache.entries == [(1, 0), (3, 10), (5, 20)]
    assert fs.read_file("/p/leader-epoch-checkpoint") == b"0\n3\n1 0\n3 10\n5 20\n"
    assert cache.end_offset_for_epoch(5, 25) == (5, 25)  # latest: the log end offset
    assert cache.end_offset_for_epoch(3, 25) == (3, 20)
    assert cache.end_offset_for_epoch(4, 25) == (3, 20)  # unknown epoch: the largest below it
    assert cache.end_offset_for_epoch(0, 25) == (-1, -1)
    assert cache.end_offset_for_epoch(6, 25) == (-1, -1)
    assert cache.epoch_for_offset(12) == 3
    cache.truncate_from_end(15)
    assert cache.entries == [(1, 0), (3, 10)]
    cache.truncate_from_start(12)
    assert cache.entries == [(3, 12)]
    assert LeaderEpochFileCache(fs, "/p/leader-epoch-checkpoint").entries == [(3, 12)]
    assert LeaderEpochCheckpointFile(fs, "/p/leader-epoch-checkpoint").read() == [(3, 12)]
