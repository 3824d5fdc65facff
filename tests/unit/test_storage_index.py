import pytest

from odradek.storage.index import CorruptIndexError, OffsetIndex, TimeIndex
from tests.storage.fakefs import FakeFileSystem


def make_offset_index(fs=None, max_bytes=1024):
    fs = fs or FakeFileSystem()
    fs.mkdir("/d")
    index = OffsetIndex(fs, "/d/00000000000000000100.index", 100, max_bytes)
    index.reset()  # a new, empty index file
    return fs, index


def test_offset_index_lookup_returns_largest_entry_at_or_below_target():
    _, index = make_offset_index()
    for offset, position in [(110, 1000), (120, 2000), (130, 3000)]:
        index.append(offset, position)
    assert index.lookup(99) == (100, 0)  # before the first entry: segment start
    assert index.lookup(109) == (100, 0)
    assert index.lookup(110) == (110, 1000)
    assert index.lookup(125) == (120, 2000)
    assert index.lookup(10_000) == (130, 3000)


def test_offset_index_file_holds_big_endian_relative_entries():
    fs, index = make_offset_index()
    index.append(105, 4096)
    fd = fs.open("/d/00000000000000000100.index")
    assert fs.pread(fd, 100, 0) == (5).to_bytes(4, "big") + (4096).to_bytes(4, "big")


def test_offset_index_refuses_entries_out_of_order():
    _, index = make_offset_index()
    index.append(110, 1000)
    with pytest.raises(AssertionError):
        index.append(110, 2000)
    with pytest.raises(AssertionError):
        index.append(111, 1000)


def test_offset_index_full_and_truncate():
    _, index = make_offset_index(max_bytes=16)
    index.append(101, 10)
    index.append(102, 20)
    assert index.is_full
    index.truncate_to_position(20)
    assert index.entries == 1 and not index.is_full
    assert index.lookup(200) == (101, 10)


def test_offset_index_reload_and_sanity_check():
    fs, index = make_offset_index()
    index.append(110, 1000)
    index.append(120, 2000)
    index.close()
    reloaded = OffsetIndex(fs, index.path, 100, 1024)
    reloaded.load(log_size_bytes=3000)
    assert reloaded.lookup(125) == (120, 2000)
    reloaded.close()
    # The log is shorter than the index claims: corrupt.
    with pytest.raises(CorruptIndexError):
        OffsetIndex(fs, index.path, 100, 1024).load(log_size_bytes=1500)
    # A torn entry: size not a multiple of 8.
    fd = fs.open(index.path)
    fs.truncate(fd, 13)
    with pytest.raises(CorruptIndexError):
        OffsetIndex(fs, index.path, 100, 1024).load(log_size_bytes=3000)


def test_time_index_lookup_before_and_monotonic_appends():
    fs = FakeFileSystem()
    fs.mkdir("/d")
    index = TimeIndex(fs, "/d/00000000000000000000.timeindex", 0, 1024)
    with pytest.raises(CorruptIndexError):
        index.load(last_offset=0)  # missing: the segment rebuilds it
    index.reset()
    index.maybe_append(1000, 5)
    index.maybe_append(1000, 9)  # not newer: ignored, as Kafka
    index.maybe_append(900, 9)
    index.maybe_append(2000, 15)
    assert index.entries == 2
    assert index.lookup_before(1000) is None
    assert index.lookup_before(1001) == (1000, 5)
    assert index.lookup_before(5000) == (2000, 15)
    index.truncate_to_offset(15)
    assert index.last_entry() == (1000, 5)
    fd = fs.open(index.path)
    assert fs.size(fd) == 12
    assert fs.pread(fd, 12, 0) == (1000).to_bytes(8, "big") + (5).to_bytes(4, "big")
