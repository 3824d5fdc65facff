"""TransactionIndex: a segment's aborted-transaction index, `<base_offset:020d>.txnindex`.

Kafka's format: a sequence of 34-byte entries, big-endian, one per transaction aborted by a
marker in this segment, in the order the markers were appended (so `last_offset` increases):

    version              int16   0
    producer_id          int64
    first_offset         int64   the transaction's first offset (may lie in an earlier segment)
    last_offset          int64   the offset of the ABORT marker
    last_stable_offset   int64   the log's LSO just after the marker: the first offset of the
                                 earliest other transaction still open then, else last_offset + 1

A read_committed fetch of [fetch_offset, upper_bound) asks every segment from the one holding
fetch_offset for the transactions aborted in that range (`collect`), and stops at the first entry
whose last_stable_offset reaches upper_bound: every transaction overlapping the range has ended by
then, so later segments cannot add one (Kafka's TransactionIndex.collectAbortedTxns).

Like Kafka, the file is created on the first entry: a segment without aborted transactions has no
.txnindex, so a missing file reads as empty. A file whose size is not a multiple of 34, or whose
entries have an unknown version or decreasing last offsets, fails the sanity check
(CorruptIndexError) and the Log rebuilds it from the segment's batches.

The descriptor comes from the process-wide FileHandleCache (fd_cache.py): `load()` lets it go
after reading (the entries live in memory), a write reopens it.

Owned by one LogSegment; called by the partition's Log on the event loop (`flush` in the flush pool).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from odradek.storage.fd_cache import CachedFile, cache_for
from odradek.storage.fs import FileSystem
from odradek.storage.index import CorruptIndexError

__all__ = ["ABORTED_TXN_ENTRY_BYTES", "TXN_INDEX_SUFFIX", "AbortedTxn", "TransactionIndex"]

TXN_INDEX_SUFFIX = ".txnindex"
ABORTED_TXN_VERSION = 0
_ENTRY = struct.Struct(">hqqqq")
ABORTED_TXN_ENTRY_BYTES = _ENTRY.size  # 34
# A .txnindex larger than this is refused as corrupt (about 30 million aborted transactions).
MAX_TXN_INDEX_BYTES = 2**30


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction: its producer, first offset, marker offset and the LSO after it."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return _ENTRY.pack(ABORTED_TXN_VERSION, self.producer_id, self.first_offset, self.last_offset,
                           self.last_stable_offset)

    @classmethod
    def decode(cls, data: bytes | memoryview, position: int = 0) -> AbortedTxn:
        version, producer_id, first_offset, last_offset, last_stable_offset = _ENTRY.unpack_from(data, position)
        if version != ABORTED_TXN_VERSION:
            raise CorruptIndexError(f"aborted transaction entry version {version} is unknown")
        return cls(producer_id, first_offset, last_offset, last_stable_offset)


class TransactionIndex:
    """The aborted transactions of one segment (see the module docs for the file layout).

    Invariants: entries' last offsets strictly increase and all are >= the segment's base offset;
    `len(entries) * 34` equals the file size once loaded. Entries are held in memory after the
    first use (few: one per aborted transaction whose marker is in this segment).
    """

    def __init__(self, fs: FileSystem, path: str, base_offset: int) -> None:
        self.fs = fs
        self.path = path
        self.base_offset = base_offset
        self._file = CachedFile(cache_for(fs), path)
        self._entries: list[AbortedTxn] | None = None  # None: not loaded yet

    @staticmethod
    def path_for(dir: str, base_offset: int) -> str:
        return os.path.join(dir, f"{base_offset:020d}{TXN_INDEX_SUFFIX}")

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Read every entry (a missing file is empty); raises CorruptIndexError if insane."""
        if self._entries is not None:
            return
        if not self.fs.exists(self.path):
            self._entries = []
            return
        fd = self._file.fd()
        try:
            size = self.fs.size(fd)
            if size % ABORTED_TXN_ENTRY_BYTES or size > MAX_TXN_INDEX_BYTES:
                raise CorruptIndexError(f"{self.path}: size {size} is not a multiple of {ABORTED_TXN_ENTRY_BYTES}")
            data = self.fs.pread(fd, size, 0)
        finally:
            self._file.close()
        entries = []
        for position in range(0, len(data), ABORTED_TXN_ENTRY_BYTES):
            entry = AbortedTxn.decode(data, position)
            if entry.last_offset < self.base_offset or (entries and entry.last_offset <= entries[-1].last_offset):
                raise CorruptIndexError(f"{self.path}: entry {entry} out of order")
            entries.append(entry)
        self._entries = entries

    @property
    def entries(self) -> list[AbortedTxn]:
        """Every entry, oldest first (loads the file on first use; may raise CorruptIndexError)."""
        self.load()
        assert self._entries is not None
        return list(self._entries)

    # -- queries ---------------------------------------------------------------------------
    def collect(self, fetch_offset: int, upper_bound_offset: int) -> tuple[list[AbortedTxn], bool]:
        """The transactions overlapping [fetch_offset, upper_bound_offset), and whether the search
        is complete (an entry's LSO reached upper_bound_offset: later segments add nothing)."""
        self.load()
        assert self._entries is not None
        found = []
        for entry in self._entries:
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound_offset:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound_offset:
                return found, True
        return found, False

    # -- mutation --------------------------------------------------------------------------
    def append(self, entry: AbortedTxn) -> None:
        """Add an entry at the end (creating the file on the first one)."""
        self.load()
        assert self._entries is not None
        assert entry.last_offset >= self.base_offset, f"{entry} below segment base {self.base_offset}"
        if self._entries:
            assert entry.last_offset > self._entries[-1].last_offset, (
                f"{self.path}: {entry} does not follow {self._entries[-1]}")
        self._file.dirty = True
        self.fs.pwrite(self._file.fd(create=True), entry.encode(), len(self._entries) * ABORTED_TXN_ENTRY_BYTES)
        self._entries.append(entry)

    def truncate_to(self, offset: int) -> None:
        """Remove the entries whose marker is at or above `offset` (the log was truncated there)."""
        self.load()
        assert self._entries is not None
        keep = len(self._entries)
        while keep and self._entries[keep - 1].last_offset >= offset:
            keep -= 1
        if keep == len(self._entries):
            return
        del self._entries[keep:]
        self._file.dirty = True
        self.fs.truncate(self._file.fd(), keep * ABORTED_TXN_ENTRY_BYTES)

    def start_empty(self) -> None:
        """A new segment's index: no entries, no file (the first entry creates it)."""
        self._entries = []

    def reset(self) -> None:
        """Drop every entry (before a rebuild from the log); the file is removed."""
        self.close()
        self.fs.unlink(self.path)
        self._entries = []

    def flush(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        """Close the file; the next use reloads it."""
        self._file.close()
        self._entries = None

    def __repr__(self) -> str:
        return f"TransactionIndex({self.path!r})"
