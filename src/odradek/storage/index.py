"""Sparse segment indexes: `.index` (offset -> file position) and `.timeindex` (timestamp -> offset).

Both are arrays of fixed-size big-endian entries, exactly Kafka's formats:

    .index      8 bytes per entry:  relative_offset int32 | position int32
    .timeindex  12 bytes per entry: timestamp_ms int64    | relative_offset int32

`relative_offset` is the offset minus the segment's base offset. Entries are appended in strictly
increasing key order. Kafka preallocates index files to `segment.index.bytes` with mmap and trims
them on close; we do not preallocate: a file holds exactly its entries and grows by one `pwrite`
per entry, and it is created with its first entry (a new segment creates only its .log: creating
10,000 partitions is 20,000 fewer file creations) (one every `index.interval.bytes` of log), and the whole index is kept in memory as an
`array` once loaded (at most `segment.index.bytes`, 10 MiB by default). "Full" means the entry
count reached `segment_index_bytes // entry_size`, which makes the log roll its segment.

Descriptors come from the process-wide FileHandleCache (fd_cache.py): `load()` reads the file and
lets its descriptor go at once (the entries live in memory); a write reopens it on demand.

Owned by one LogSegment; called on the event loop, except `flush()` (blocking-I/O pool).
"""

from __future__ import annotations

import bisect
import logging
import struct
import sys
from array import array
from typing import Any

from odradek.storage.fd_cache import CachedFile, cache_for
from odradek.storage.fs import FileSystem

log = logging.getLogger(__name__)

OFFSET_INDEX_ENTRY_BYTES = 8
TIME_INDEX_ENTRY_BYTES = 12
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_LITTLE_ENDIAN = sys.byteorder == "little"


class CorruptIndexError(Exception):
    """An index file failed its sanity check; the segment rebuilds it from the .log."""


def _load_be(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if _LITTLE_ENDIAN:
        values.byteswap()
    return values


def _read_existing(fs: FileSystem, file: CachedFile, missing_ok: bool) -> bytes:
    """The whole file; its descriptor is closed afterwards (the caller keeps the entries).
    A missing file reads as empty when `missing_ok`, else fails the sanity check."""
    try:
        fd = file.fd()
    except FileNotFoundError:
        if missing_ok:
            return b""
        raise CorruptIndexError(f"{file.path} is missing") from None
    try:
        return fs.pread(fd, fs.size(fd), 0)
    finally:
        file.close()


class _IndexFile:
    """What both index files share: the cached file, the entry bound, flush and close.

    Subclasses keep their entries in memory (`_offsets` plus a second column) and name their
    entry size in `ENTRY_BYTES`. `_loaded`: the entries mirror the file (set by load/reset,
    cleared by close); only then may it be written.
    """

    ENTRY_BYTES = 0

    def __init__(self, fs: FileSystem, path: str, base_offset: int, max_index_size_bytes: int) -> None:
        self.fs = fs
        self.path = path
        self.base_offset = base_offset
        self.max_entries = max(1, max_index_size_bytes // self.ENTRY_BYTES)
        self._file = CachedFile(cache_for(fs), path)
        self._loaded = False
        self._offsets: Any = []  # relative offsets

    def _open_for_reset(self) -> None:
        self.fs.truncate(self._file.fd(create=True), 0)
        self._file.dirty = True
        self._loaded = True

    def start_empty(self) -> None:
        """A new segment's index: no entries and no file yet (the first entry creates it).
        The segment's base offset is new, so no older file can be at the path."""
        self._loaded = True
        self._clear_entries()

    def _clear_entries(self) -> None:
        raise NotImplementedError

    # Writes pin the descriptor while they use it: LogManager.close closes logs from several
    # threads, and another thread's open may evict an unpinned descriptor at any moment.
    def _write_at(self, data: bytes, position: int) -> None:
        assert self._loaded, f"{self.path} written before it was loaded"
        self._file.dirty = True
        fd = self._file.pin(create=True)
        try:
            self.fs.pwrite(fd, data, position)
        finally:
            self._file.unpin()

    def _truncate_file(self, size_bytes: int) -> None:
        assert self._loaded, f"{self.path} truncated before it was loaded"
        self._file.dirty = True
        fd = self._file.pin()
        try:
            self.fs.truncate(fd, size_bytes)
        finally:
            self._file.unpin()

    @property
    def entries(self) -> int:
        return len(self._offsets)

    @property
    def is_full(self) -> bool:
        return len(self._offsets) >= self.max_entries

    def flush(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        self._file.close()
        self._loaded = False

    @property
    def is_open(self) -> bool:
        return self._file.is_open


class OffsetIndex(_IndexFile):
    """`<base_offset:020d>.index`: sparse map from offsets to positions in the segment's .log.

    Invariants: relative offsets and positions both strictly increase; every position is the start
    of a batch. An entry (o, p) is a batch's last offset o and its position p (as Kafka), so the
    largest entry <= target gives a position at or before the batch that holds target.
    """

    ENTRY_BYTES = OFFSET_INDEX_ENTRY_BYTES

    def __init__(self, fs: FileSystem, path: str, base_offset: int, max_index_size_bytes: int) -> None:
        super().__init__(fs, path, base_offset, max_index_size_bytes)
        self._offsets = array("i")  # relative offsets
        self._positions = array("i")

    # -- loading ---------------------------------------------------------------------------
    def load(self, log_size_bytes: int, *, missing_ok: bool = False) -> None:
        """Open and read every entry; raises CorruptIndexError if insane, or if missing unless
        `missing_ok` (the segment is too small to have had an entry)."""
        data = _read_existing(self.fs, self._file, missing_ok)
        self._loaded = True
        if len(data) % OFFSET_INDEX_ENTRY_BYTES:
            raise CorruptIndexError(f"{self.path}: size {len(data)} is not a multiple of 8")
        values = _load_be("i", data)
        self._offsets, self._positions = values[0::2], values[1::2]
        # Kafka's sanity check: the last entry is consistent; positions fit inside the log.
        if self._offsets and (self._offsets[0] < 0 or self._positions[-1] >= max(log_size_bytes, 1)
                              or self._positions[0] < 0):
            raise CorruptIndexError(f"{self.path}: entries point outside the log")
        if len(self._offsets) > 1 and (self._offsets[-1] <= self._offsets[-2]
                                       or self._positions[-1] <= self._positions[-2]):
            raise CorruptIndexError(f"{self.path}: last entries do not increase")

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self._open_for_reset()
        self._clear_entries()

    def _clear_entries(self) -> None:
        self._offsets, self._positions = array("i"), array("i")

    # -- queries ---------------------------------------------------------------------------
    def last_entry(self) -> tuple[int, int]:
        """(absolute offset, position) of the last entry, or (base_offset, 0) when empty."""
        if not self._offsets:
            return self.base_offset, 0
        return self.base_offset + self._offsets[-1], self._positions[-1]

    def lookup(self, target_offset: int) -> tuple[int, int]:
        """The largest entry with offset <= target, as (absolute offset, position); else (base, 0)."""
        i = bisect.bisect_right(self._offsets, target_offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[i], self._positions[i]

    # -- mutation --------------------------------------------------------------------------
    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        assert 0 <= relative < 2**31, f"offset {offset} not relative to base {self.base_offset}"
        assert not self.is_full, f"{self.path} is full"
        if self._offsets:
            assert relative > self._offsets[-1] and position > self._positions[-1], (
                f"{self.path}: entry ({offset}, {position}) does not follow {self.last_entry()}")
        self._write_at(_OFFSET_ENTRY.pack(relative, position), len(self._offsets) * OFFSET_INDEX_ENTRY_BYTES)
        self._offsets.append(relative)
        self._positions.append(position)

    def truncate_to_position(self, position: int) -> None:
        """Remove entries pointing at or beyond `position` (the log was truncated there)."""
        keep = bisect.bisect_left(self._positions, position)
        self._truncate_entries(keep)

    def _truncate_entries(self, keep: int) -> None:
        if keep == len(self._offsets):
            return
        del self._offsets[keep:]
        del self._positions[keep:]
        self._truncate_file(keep * OFFSET_INDEX_ENTRY_BYTES)



class TimeIndex(_IndexFile):
    """`<base_offset:020d>.timeindex`: sparse map from max timestamp so far to the offset holding it.

    Invariants: timestamps strictly increase and relative offsets never decrease. Entry (t, o)
    means: every record at offsets <= o in this segment has a timestamp <= t, and the batch that
    contains o has max timestamp t (o is that batch's last offset, as Kafka).
    """

    ENTRY_BYTES = TIME_INDEX_ENTRY_BYTES

    def __init__(self, fs: FileSystem, path: str, base_offset: int, max_index_size_bytes: int) -> None:
        super().__init__(fs, path, base_offset, max_index_size_bytes)
        self._timestamps: list[int] = []
        self._offsets: list[int] = []  # relative

    def load(self, last_offset: int, *, missing_ok: bool = False) -> None:
        """Open and read every entry; raises CorruptIndexError if insane, or if missing unless
        `missing_ok`."""
        data = _read_existing(self.fs, self._file, missing_ok)
        self._loaded = True
        if len(data) % TIME_INDEX_ENTRY_BYTES:
            raise CorruptIndexError(f"{self.path}: size {len(data)} is not a multiple of 12")
        entries = list(_TIME_ENTRY.iter_unpack(data))
        self._timestamps = [t for t, _ in entries]
        self._offsets = [o for _, o in entries]
        if self._offsets and (self._offsets[0] < 0 or self.base_offset + self._offsets[-1] > max(last_offset, self.base_offset)):
            raise CorruptIndexError(f"{self.path}: entries point past the log end")
        if len(entries) > 1 and (self._timestamps[-1] <= self._timestamps[-2] or self._offsets[-1] < self._offsets[-2]):
            raise CorruptIndexError(f"{self.path}: last entries do not increase")

    def reset(self) -> None:
        self._open_for_reset()
        self._clear_entries()

    def _clear_entries(self) -> None:
        self._timestamps, self._offsets = [], []

    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the last entry, or None when empty."""
        if not self._offsets:
            return None
        return self._timestamps[-1], self.base_offset + self._offsets[-1]

    def lookup_before(self, target_timestamp_ms: int) -> tuple[int, int] | None:
        """The last entry with timestamp < target as (timestamp, absolute offset), or None.

        Strictly less: every record at or before that entry's offset is older than the target, so
        the first record with timestamp >= target lies in a later batch or in that entry's batch.
        """
        i = bisect.bisect_left(self._timestamps, target_timestamp_ms) - 1
        if i < 0:
            return None
        return self._timestamps[i], self.base_offset + self._offsets[i]

    def maybe_append(self, timestamp_ms: int, offset: int, *, skip_full_check: bool = False) -> None:
        """Append (timestamp, offset) if the timestamp is newer than the last entry's (Kafka's rule)."""
        if self._timestamps and timestamp_ms <= self._timestamps[-1]:
            return
        if not skip_full_check:
            assert not self.is_full, f"{self.path} is full"
        relative = offset - self.base_offset
        assert 0 <= relative < 2**31
        if self._offsets:
            assert relative >= self._offsets[-1]
        self._write_at(_TIME_ENTRY.pack(timestamp_ms, relative), len(self._offsets) * TIME_INDEX_ENTRY_BYTES)
        self._timestamps.append(timestamp_ms)
        self._offsets.append(relative)

    def truncate_to_offset(self, offset: int) -> None:
        """Remove entries for offsets >= `offset`."""
        keep = bisect.bisect_left(self._offsets, offset - self.base_offset)
        if keep == len(self._offsets):
            return
        del self._offsets[keep:]
        del self._timestamps[keep:]
        self._truncate_file(keep * TIME_INDEX_ENTRY_BYTES)

