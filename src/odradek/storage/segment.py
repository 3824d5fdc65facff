"""LogSegment: one `.log` file of a partition plus its `.index`, `.timeindex` and `.txnindex`."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import BATCH_HEADER_SIZE, BatchHeader, read_header
from odradek.storage.fd_cache import CachedFile, cache_for
from odradek.storage.fs import FileSystem, RealFileSystem
from odradek.storage.index import CorruptIndexError, OffsetIndex, TimeIndex
from odradek.storage.log_config import LogConfig
from odradek.storage.txn_index import TXN_INDEX_SUFFIX, TransactionIndex

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
NO_TIMESTAMP = -1
# Recovery reads the .log in chunks of this size (a larger batch gets one read of its own size,
# bounded by the file size, so a corrupt length never allocates more than the file holds).
RECOVERY_READ_CHUNK_BYTES = 8 * 1024 * 1024
# `last_batch_end` reads at most this many batch headers after the index entry it starts from
# (an index entry every index.interval.bytes keeps the walk far shorter); past it, the caller
# keeps its region as it was.
MAX_BATCH_END_HEADER_READS = 1024
_REAL_FS = RealFileSystem()


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class _Pin:
    """Holds a CachedFile pinned (its descriptor open) until this object is garbage-collected."""

    __slots__ = ("_file",)

    def __init__(self, file: CachedFile) -> None:
        self._file: CachedFile | None = None
        file.pin()
        self._file = file

    def __del__(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.unpin()
            except Exception:  # at interpreter exit, or an fs already gone: nothing to undo
                pass


@dataclass(frozen=True, slots=True)
class FileRegion:
    """A byte range of an open segment file, to be sent with `sendfile` or read with `pread`.

    `fd` stays valid, and names the inode the region was cut from, for as long as the region
    object lives: a region from `LogSegment.read` pins its segment's .log descriptor (see
    fd_cache.py), so neither the descriptor cache, nor a truncation, retention delete, cleaner
    swap or close of the segment closes it under a `sendfile` in progress.
    `cut_from` is the segment when the read's byte limit, not the end of the readable data,
    ended the region (so it may end inside a batch; see `whole_batches`), else None.
    """

    fd: int
    position: int
    size_bytes: int
    fs: FileSystem = field(default=_REAL_FS, repr=False, compare=False)
    pin: object = field(default=None, repr=False, compare=False)
    cut_from: LogSegment | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        if self.size_bytes == 0:
            return b""
        return self.fs.pread(self.fd, self.size_bytes, self.position)


def whole_batches(region: FileRegion) -> FileRegion:
    """`region` without the partial batch a byte limit may have cut at its end.

    Kafka sends that partial batch and clients drop it and fetch it again, so its bytes cross
    the wire twice (about 6 % of a consumer's bytes with 1 MB batches and 8 MiB per partition).
    A region whose first batch is itself cut (only possible without KIP-74's min_one_message,
    i.e. for a later partition of a fetch) comes back empty. Costs one binary search of the
    offset index and a few header reads, and only for regions a byte limit cut.
    """
    segment = region.cut_from
    if segment is None or region.size_bytes == 0:
        return region
    end = segment.last_batch_end(region.position, region.position + region.size_bytes)
    if end == region.position + region.size_bytes:
        return region
    return replace(region, size_bytes=end - region.position, cut_from=None)


@dataclass(slots=True)
class RecoveryResult:
    """What `LogSegment.recover` kept: valid bytes, next offset, and whether it cut a tail."""

    valid_bytes: int
    truncated_bytes: int
    next_offset: int | None  # None when the segment holds no valid batch


class LogSegment:
    """One segment of a partition log: `<base_offset:020d>.log` plus its sparse indexes.

    .log        record batches exactly as on the wire, base offsets absolute
    .index      8-byte entries: relative offset (int32), file position (int32)  (see index.py)
    .timeindex  12-byte entries: timestamp ms (int64), relative offset (int32)
    .txnindex   34-byte aborted-transaction entries, only when a marker here aborted one
                (see txn_index.py; the Log appends them, this class moves and removes the file)

    Invariants: batches are contiguous and their offsets strictly increase, all >= base_offset
    and < base_offset + 2^31; an index entry never points past the last complete batch;
    `size_bytes` equals the .log file length (the log truncates back after a failed write).

    Files are opened lazily: a segment that nobody reads costs no file descriptor and no I/O, so
    a log opens after a clean shutdown in time independent of its size. `open_as_active()` reads
    only the tail after the last offset-index entry to learn the next offset.
    Descriptors belong to the process-wide FileHandleCache (fd_cache.py), which closes the least
    recently used ones beyond `max_open_files`; every use goes through `_ensure_open()` again
    (never keep a descriptor across a call that may open another file). `size_bytes` stays known
    while the descriptor is closed (this segment is the file's only writer).

    Only the partition's Log calls this, on the event loop; `flush()` runs in the blocking-I/O pool
    (fsync is safe concurrently with pwrite on the same descriptor).
    """

    def __init__(self, fs: FileSystem, dir: str, base_offset: int, config: LogConfig) -> None:
        self.fs = fs
        self.dir = dir
        self.base_offset = base_offset
        self.log_path = os.path.join(dir, segment_file_name(base_offset, LOG_SUFFIX))
        self._log_file = CachedFile(cache_for(fs), self.log_path)
        self.config = config
        self.offset_index = OffsetIndex(fs, os.path.join(dir, segment_file_name(base_offset, INDEX_SUFFIX)),
                                        base_offset, config.segment_index_bytes)
        self.time_index = TimeIndex(fs, os.path.join(dir, segment_file_name(base_offset, TIME_INDEX_SUFFIX)),
                                    base_offset, config.segment_index_bytes)
        self.txn_index = TransactionIndex(fs, os.path.join(dir, segment_file_name(base_offset, TXN_INDEX_SUFFIX)),
                                          base_offset)
        self._size_bytes = 0
        self._size_known = False
        self._indexes_loaded = False
        # Known exactly for the active segment (set by create/open_as_active/recover/append).
        self.next_offset: int | None = None
        self.max_timestamp_ms = NO_TIMESTAMP  # largest batch max timestamp so far
        self.offset_of_max_timestamp = -1  # last offset of the batch holding it
        self._max_timestamp_known = False
        self.bytes_since_last_index_entry = 0
        # segment.ms counts from here: the clock at the first append in this process (or at open
        # for a non-empty active segment). Kafka uses the first batch's max timestamp, which lets
        # clients with old CreateTime timestamps roll a segment per batch; we do not.
        self.rolling_base_ms: int | None = None
        # segment.jitter.ms: this segment rolls that much earlier, drawn once (Kafka's
        # rollJitterMs), so that partitions created together do not all roll at once.
        jitter_bound = min(config.segment_jitter_ms, config.segment_ms)
        self.roll_jitter_ms = random.randrange(jitter_bound) if jitter_bound > 0 else 0

    @property
    def config(self) -> LogConfig:
        return self._config

    @config.setter
    def config(self, config: LogConfig) -> None:
        # A compacted log's .log descriptor stays open once opened (see fd_cache.CachedFile.sticky).
        self._config = config
        self._log_file.sticky = config.compacted

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, fs: FileSystem, dir: str, base_offset: int, config: LogConfig) -> LogSegment:
        """A new empty segment (files created, truncated to empty)."""
        segment = cls(fs, dir, base_offset, config)
        fs.truncate(segment._log_file.fd(create=True), 0)
        segment._size_known = True
        # Index files are created with their first entry (no stale one can exist: the base offset
        # is new, and the loader removes index files without their .log).
        segment.offset_index.start_empty()
        segment.time_index.start_empty()
        segment.txn_index.start_empty()
        segment._indexes_loaded = True
        segment.next_offset = base_offset
        segment._max_timestamp_known = True
        return segment

    def _ensure_open(self) -> int:
        """The .log descriptor (opened or reopened through the cache); valid until the next open
        of another cached file, so callers use it at once."""
        fd = self._log_file.fd()
        if not self._size_known:
            self._size_bytes = self.fs.size(fd)
            self._size_known = True
        return fd

    @property
    def fd(self) -> int:
        return self._ensure_open()

    @property
    def _fd(self) -> int | None:
        """The .log descriptor if it is open now (tests), without opening it."""
        return self._log_file.current_fd

    @property
    def size_bytes(self) -> int:
        if not self._size_known:
            self._ensure_open()
        return self._size_bytes

    def ensure_indexes(self) -> None:
        """Load both indexes; rebuild them from the .log when missing or failing the sanity check."""
        if self._indexes_loaded:
            return
        self._ensure_open()
        # A segment no larger than index.interval.bytes never had an index entry, so its index
        # files may never have been created; empty indexes are correct for it (a lookup scans
        # from position 0) and a lost final time-index entry is recomputed from the batches.
        small = self._size_bytes <= self.config.index_interval_bytes
        try:
            self.offset_index.load(self._size_bytes, missing_ok=small)
            self.time_index.load(self.base_offset + 2**31 - 1, missing_ok=small)
        except CorruptIndexError as exc:
            log.warning("rebuilding indexes of %s: %s", self.log_path, exc)
            self._rebuild_indexes()
        self._indexes_loaded = True

    def open_as_active(self) -> None:
        """Prepare the last segment of a cleanly shut down log for appends.

        Trusts the indexes; reads the headers after the last offset-index entry to learn the next
        offset and max timestamp. A partial batch at the end (which a clean shutdown never leaves)
        is truncated, with a warning.
        """
        self.ensure_indexes()
        _, position = self.offset_index.last_entry()
        self._scan_tail(position)

    def _scan_tail(self, position: int) -> None:
        """Set next_offset, max timestamp and size from the batches at and after `position`."""
        self._ensure_open()
        data = (self.fs.pread(self._ensure_open(), self._size_bytes - position, position)
                if position < self._size_bytes else b"")
        next_offset = self.base_offset
        if position > 0:
            next_offset = self.offset_index.last_entry()[0] + 1
        last_time_entry = self.time_index.last_entry()
        if last_time_entry is not None:
            self.max_timestamp_ms, self.offset_of_max_timestamp = last_time_entry
        else:
            self.max_timestamp_ms, self.offset_of_max_timestamp = NO_TIMESTAMP, -1
        end = 0
        for header in records.iter_headers(data):
            next_offset = header.next_offset
            if header.max_timestamp > self.max_timestamp_ms:
                self.max_timestamp_ms, self.offset_of_max_timestamp = header.max_timestamp, header.last_offset
            end = header.position + header.size_bytes
        if position + end < self._size_bytes:
            log.warning("%s: %d bytes of partial batch at the end; truncating",
                        self.log_path, self._size_bytes - position - end)
            self.fs.truncate(self._ensure_open(), position + end)
            self._log_file.dirty = True
            self._size_bytes = position + end
        self.next_offset = next_offset if self._size_bytes else self.base_offset
        self._max_timestamp_known = True
        self.bytes_since_last_index_entry = self._size_bytes - position if position else self._size_bytes

    def _rebuild_indexes(self) -> None:
        """Recreate both indexes from the batch headers of the .log (no CRC check)."""
        self.offset_index.reset()
        self.time_index.reset()
        self._ensure_open()
        position = 0
        self.bytes_since_last_index_entry = 0
        self.max_timestamp_ms, self.offset_of_max_timestamp = NO_TIMESTAMP, -1
        while position + BATCH_HEADER_SIZE <= self._size_bytes:
            header = read_header(self.fs.pread(self._ensure_open(), BATCH_HEADER_SIZE, position))
            if position + header.size_bytes > self._size_bytes or header.batch_length <= 0:
                break
            self._index_batch(position, header.last_offset, header.max_timestamp, header.size_bytes)
            position += header.size_bytes
        self._max_timestamp_known = True

    def _index_batch(self, position: int, last_offset: int, max_timestamp_ms: int, size_bytes: int) -> None:
        """Kafka's rule: index a batch when more than index.interval.bytes came since the last entry."""
        if max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms, self.offset_of_max_timestamp = max_timestamp_ms, last_offset
        if self.bytes_since_last_index_entry > self.config.index_interval_bytes:
            self.offset_index.append(last_offset, position)
            self.time_index.maybe_append(self.max_timestamp_ms, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
        self.bytes_since_last_index_entry += size_bytes

    def load_max_timestamp(self) -> tuple[int, int]:
        """(max timestamp, last offset of its batch) of this segment; (-1, -1) when empty."""
        if not self._max_timestamp_known:
            self.ensure_indexes()
            if not self._max_timestamp_known:
                # Sealed segments end with a final time-index entry (written at roll and close).
                entry = self.time_index.last_entry()
                if entry is not None:
                    self.max_timestamp_ms, self.offset_of_max_timestamp = entry
                # Batches after the last offset-index entry may hold a larger timestamp (a log
                # that crashed before the final entry was written, then recovered): read them.
                _, position = self.offset_index.last_entry()
                self._ensure_open()
                data = self.fs.pread(self._ensure_open(), self._size_bytes - position, position)
                for header in records.iter_headers(data):
                    if header.max_timestamp > self.max_timestamp_ms:
                        self.max_timestamp_ms, self.offset_of_max_timestamp = header.max_timestamp, header.last_offset
                self._max_timestamp_known = True
        return self.max_timestamp_ms, self.offset_of_max_timestamp

    # -- appending -----------------------------------------------------------------------------
    def should_roll(self, size_bytes: int, last_offset: int, now_ms: int) -> bool:
        """Kafka's roll conditions for appending `size_bytes` ending at `last_offset`."""
        if self.size_bytes == 0:
            return last_offset - self.base_offset >= 2**31  # only offset overflow rolls an empty one
        self.ensure_indexes()
        return (self._size_bytes + size_bytes > self.config.segment_bytes
                or (self.rolling_base_ms is not None
                    and now_ms - self.rolling_base_ms > self.config.segment_ms - self.roll_jitter_ms)
                or self.offset_index.is_full or self.time_index.is_full
                or last_offset - self.base_offset >= 2**31)

    def append(self, buf: bytes | bytearray | memoryview, last_offset: int, max_timestamp_ms: int,
               now_ms: int) -> int:
        """Write one batch (already patched) at the end in ONE write; returns its position.

        On OSError the file is truncated back to its previous size (best effort) and the error
        propagates; indexes are untouched.
        """
        self.ensure_indexes()
        fd = self._ensure_open()
        position = self._size_bytes
        self._log_file.dirty = True
        try:
            self.fs.pwrite(fd, buf, position)
        except OSError:
            try:
                self.fs.truncate(fd, position)
            except OSError:
                pass
            raise
        size = len(buf)
        self._size_bytes = position + size
        if self.rolling_base_ms is None:
            self.rolling_base_ms = now_ms
        self._index_batch(position, last_offset, max_timestamp_ms, size)
        self.next_offset = last_offset + 1
        return position

    # -- reading -------------------------------------------------------------------------------
    def header_at(self, position: int) -> BatchHeader | None:
        """The header of the batch at `position`, or None if no complete header fits there."""
        if position + BATCH_HEADER_SIZE > self.size_bytes:
            return None
        return read_header(self.fs.pread(self._ensure_open(), BATCH_HEADER_SIZE, position))

    def translate_offset(self, offset: int, start_position: int = 0) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= `offset`, or None.

        One index lookup, then header reads from that entry (about index.interval.bytes of batches).
        """
        self.ensure_indexes()
        _, position = self.offset_index.lookup(offset)
        position = max(position, start_position)
        size = self._size_bytes
        while position < size:
            header = self.header_at(position)
            if header is None:
                return None
            if header.last_offset >= offset:
                return position, header
            position += header.size_bytes
        return None

    def read(self, offset: int, max_size_bytes: int, max_position: int, min_one_message: bool
             ) -> FileRegion | None:
        """A region starting at the batch holding `offset`, up to `max_size_bytes`, below `max_position`.

        None when no batch at/after `offset` lies below `max_position`. When the first batch alone
        is larger than `max_size_bytes` and `min_one_message`, the region holds that whole batch
        (KIP-74); otherwise the region may end inside a batch (clients drop a partial last batch).
        """
        found = self.translate_offset(offset)
        if found is None:
            return None
        position, header = found
        if position >= max_position:
            return None
        available = max_position - position
        size = min(max_size_bytes, available)
        if min_one_message and header.size_bytes > max_size_bytes:
            size = min(header.size_bytes, available)
        pin = _Pin(self._log_file)
        cut_from = self if size < available else None
        return FileRegion(self._ensure_open(), position, size, self.fs, pin, cut_from)

    def last_batch_end(self, start_position: int, end_position: int) -> int:
        """The end of the last batch that starts at or after `start_position` (a batch start) and
        ends at or before `end_position`; `start_position` when none does, and `end_position`
        itself when that is the segment end or the walk would pass MAX_BATCH_END_HEADER_READS.

        Starts at the offset index's last entry at or before `end_position` (binary search over
        offsets: entry positions grow with their offsets), then walks batch headers forward.
        """
        if end_position >= self.size_bytes:
            return end_position
        self.ensure_indexes()
        index = self.offset_index
        position = start_position
        low, high = self.base_offset, index.last_entry()[0]
        while low <= high:
            middle = (low + high) // 2
            _, entry_position = index.lookup(middle)
            if entry_position <= end_position:
                position = max(position, entry_position)
                low = middle + 1
            else:
                high = middle - 1
        for _ in range(MAX_BATCH_END_HEADER_READS):
            header = self.header_at(position)
            if header is None or position + header.size_bytes > end_position:
                return position
            position += header.size_bytes
        return end_position

    def read_batch(self, position: int, header: BatchHeader) -> bytes:
        return self.fs.pread(self._ensure_open(), header.size_bytes, position)

    def find_offset_by_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= target in this segment."""
        self.ensure_indexes()
        entry = self.time_index.lookup_before(timestamp_ms)
        start_position = 0
        if entry is not None:
            _, start_position = self.offset_index.lookup(entry[1])
        position = start_position
        size = self._size_bytes
        while position < size:
            header = self.header_at(position)
            if header is None:
                return None
            if header.max_timestamp >= timestamp_ms:
                batch = self.read_batch(position, header)
                for record in records.iter_records(batch):
                    if record.timestamp >= timestamp_ms:
                        return record.offset, record.timestamp
            position += header.size_bytes
        return None

    def iter_batch_headers(self, start_position: int = 0):
        """Every complete batch header from `start_position` (header reads only)."""
        position = start_position
        while True:
            header = self.header_at(position)
            if header is None or header.batch_length <= 0 or position + header.size_bytes > self._size_bytes:
                return
            yield position, header
            position += header.size_bytes

    # -- recovery and truncation -------------------------------------------------------------------
    def recover(self, expected_next_offset: int,
                on_batch: Callable[[BatchHeader, memoryview], None] | None = None,
                *, allow_gaps: bool = False) -> RecoveryResult:
        """Validate every batch (length, magic, CRC, offsets) and truncate at the first bad one.

        Rebuilds both indexes from the valid batches. `expected_next_offset` is the base offset the
        first batch must have (the previous segment's next offset, or this segment's base); each
        later batch must start where the previous one ended. `on_batch` sees each valid header and
        its bytes (a view valid during the call only): the Log rebuilds producer state and the
        .txnindex with it.
        """
        self._ensure_open()
        # The bytes came from before a crash and may never have been fsynced: flush() must sync
        # them even if the descriptor is closed by then.
        self._log_file.dirty = True
        self.offset_index.reset()
        self.time_index.reset()
        self._indexes_loaded = True
        self.bytes_since_last_index_entry = 0
        self.max_timestamp_ms, self.offset_of_max_timestamp = NO_TIMESTAMP, -1
        file_size = self._size_bytes
        position = 0
        next_offset = max(expected_next_offset, self.base_offset)
        chunk = b""
        chunk_start = 0
        found_any = False
        while position < file_size:
            remaining = file_size - position
            if remaining < BATCH_HEADER_SIZE:
                break
            if position + BATCH_HEADER_SIZE > chunk_start + len(chunk):
                chunk_start, chunk = position, self.fs.pread(self._ensure_open(), min(RECOVERY_READ_CHUNK_BYTES, remaining), position)
            header = read_header(chunk, position - chunk_start)
            size = header.size_bytes
            if header.batch_length < BATCH_HEADER_SIZE - records.LOG_OVERHEAD or size > remaining:
                break
            if position + size > chunk_start + len(chunk):
                chunk_start, chunk = position, self.fs.pread(self._ensure_open(), max(min(RECOVERY_READ_CHUNK_BYTES, remaining), size), position)
            checked = records.validate_batch(chunk, position - chunk_start, size)
            if isinstance(checked, records.BatchError):
                # A compacted batch keeps its last offset delta but holds fewer records (the CRC
                # was checked before this complaint).
                compacted = read_header(chunk, position - chunk_start)
                if not (allow_gaps and checked.error is ErrorCode.invalid_record
                        and 0 < compacted.records_count <= compacted.last_offset_delta):
                    break
                checked = compacted
            # Offsets must continue exactly where the previous batch ended: the base offset is not
            # covered by the CRC, so this is what catches a corrupted one. A compacted log
            # (`allow_gaps`) may skip offsets, as Kafka allows, but never go back.
            if allow_gaps:
                if checked.base_offset < next_offset:
                    break
            elif checked.base_offset != next_offset:
                break
            if checked.last_offset - self.base_offset >= 2**31:
                break
            self._index_batch(position, checked.last_offset, checked.max_timestamp, size)
            if on_batch is not None:
                start = position - chunk_start
                on_batch(checked, memoryview(chunk)[start:start + size])
            next_offset = checked.next_offset
            found_any = True
            position += size
        truncated = file_size - position
        if truncated:
            log.warning("%s: truncating %d invalid bytes at position %d", self.log_path, truncated, position)
            self.fs.truncate(self._ensure_open(), position)
            self._size_bytes = position
        self.next_offset = next_offset if found_any else self.base_offset
        self._max_timestamp_known = True
        return RecoveryResult(position, truncated, next_offset if found_any else None)

    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= `offset`; returns the bytes removed.

        Truncation is at a batch boundary: a batch straddling `offset` goes entirely.
        """
        found = self.translate_offset(offset)
        if found is None:
            return 0
        position, header = found
        removed = self._size_bytes - position
        self.fs.truncate(self._ensure_open(), position)
        self._log_file.dirty = True
        self._size_bytes = position
        self.offset_index.truncate_to_position(position)
        self.time_index.truncate_to_offset(header.base_offset)
        self.txn_index.truncate_to(header.base_offset)
        self._scan_tail(self.offset_index.last_entry()[1])
        if self._size_bytes == 0:
            self.rolling_base_ms = None
        return removed

    # -- lifecycle ---------------------------------------------------------------------------
    def on_become_inactive(self) -> None:
        """At roll: write a final time-index entry with the segment's max timestamp (as Kafka)."""
        if self._indexes_loaded and self.max_timestamp_ms != NO_TIMESTAMP and self._max_timestamp_known:
            self.time_index.maybe_append(self.max_timestamp_ms, self.offset_of_max_timestamp, skip_full_check=True)

    def flush(self) -> None:
        """fsync the .log and the indexes (blocking; may run off the loop thread). A file written
        since its last fsync is synced even if the cache closed its descriptor meanwhile."""
        self._log_file.fsync()
        self.offset_index.flush()
        self.time_index.flush()
        self.txn_index.flush()

    def close(self) -> None:
        """Close every descriptor (the .log's at the last unpin, when a FileRegion holds it)."""
        self._log_file.close()
        self.offset_index.close()
        self.time_index.close()
        self.txn_index.close()
        self._indexes_loaded = False

    def delete(self) -> None:
        """Close and remove the files."""
        self.close()
        for path in (self.log_path, self.offset_index.path, self.time_index.path, self.txn_index.path):
            self.fs.unlink(path)

    def rename_to_deleted(self) -> list[str]:
        """First step of an asynchronous delete (retention, compaction): rename the files
        `<name>.deleted` and close the indexes (a FileRegion handed out earlier pins the .log
        descriptor it reads). Returns the new paths for `delete_renamed`.

        A crash afterwards is harmless: the loader removes `*.deleted` files at start.
        """
        self.offset_index.close()
        self.time_index.close()
        self.txn_index.close()
        self._indexes_loaded = False
        renamed = []
        for path in (self.log_path, self.offset_index.path, self.time_index.path, self.txn_index.path):
            if self.fs.exists(path):
                self.fs.rename(path, path + DELETED_SUFFIX)
                renamed.append(path + DELETED_SUFFIX)
        self._log_file.renamed(self.log_path + DELETED_SUFFIX)
        return renamed

    def delete_renamed(self, paths: list[str]) -> None:
        """Second step: close the .log descriptor and remove the renamed files."""
        self.close()
        for path in paths:
            self.fs.unlink(path)

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path!r})"
