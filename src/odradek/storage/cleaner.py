"""Log compaction (Kafka's LogCleaner/Cleaner): keep the latest record of every key.

One pass over one log (`clean_log`):
1. Cleanable range: the inactive segments wholly below the last stable offset (so below the
   high watermark, and every transaction in them has ended) whose records are all
   older than `min.compaction.lag.ms`. The dirty part starts at the cleaner checkpoint (first
   uncleaned offset); a pass runs when dirty bytes / cleanable bytes >= `min.cleanable.dirty.ratio`
   or the oldest dirty segment is older than `max.compaction.lag.ms`.
2. Offset map: key -> latest offset over the dirty segments, bounded by `max_entries` (from
   `log.cleaner.dedupe.buffer.size`, 24 bytes an entry as Kafka's SkimpyOffsetMap). The dirty range
   is cut at a segment boundary so that its records (counted from batch headers) fit the map.
3. Every segment from the log start up to the end of that range is rewritten, in order: a record
   goes when a later offset of its key is in the map, and a tombstone (null value) goes once its
   timestamp is more than `delete.retention.ms` old. Offsets never change (gaps are left), batch
   headers keep their base offset, last offset delta, timestamps and producer fields; a batch
   whose records all stay is copied byte for byte, one that loses some is re-encoded with its
   codec (headers kept), one that loses all is dropped.
   Transactions (Kafka's CleanedTransactionMetadata): the aborted transactions overlapping the
   range come from the .txnindex files (collected on the loop, in the plan). A data batch of an
   aborted transaction is dropped whole, and its records never enter the offset map (an aborted
   value never supersedes a committed one). An ABORT marker goes once its timestamp is more than
   `delete.retention.ms` old (its data is gone: all of it lies below the marker, in segments this
   pass rewrites), and its .txnindex entry goes with it, never one without the other. A COMMIT
   marker goes on the same horizon when no data batch of its transaction was met in this pass.
   (Kafka counts the horizon from the pass that first found the marker removable, stored in the
   batch (KIP-534); we count from the marker's own timestamp, its append time, as for tombstones.)
   Other control batches are kept as they are.
4. Swap, per segment, crash-safe at every step (the log loader finishes or undoes each):
       write `<base>.log.cleaned` (and `<base>.txnindex.cleaned` when entries go), fsync
                                             crash: loader deletes *.cleaned  -> old contents
       rename `.txnindex.cleaned` -> `.txnindex.swap`
                                             crash: loader deletes the lone swap -> old contents
       rename to `<base>.log.swap`           crash: loader renames both swaps in -> new contents
       remove `<base>.index/.timeindex`      crash: as above (indexes rebuilt)
       rename `.txnindex.swap` -> `.txnindex`, then `.log.swap` -> `.log`
                                             crash: new contents, indexes rebuilt on use
   Before the first swap the cleaner checkpoint names the log (so recovery accepts offset gaps);
   after the last one it records the new first dirty offset.

Threads: a pass runs in the broker's cleaner thread. It reads segment files through its own
descriptors (inactive segments never change), and takes the log's `_flush_lock` only to swap a
segment object into `Log.segments`; the replaced segment's .log descriptor stays open until
`file.delete.delay.ms` (like a retention delete) so a FileRegion handed out before stays valid.
The active segment is never cleaned, so appends never wait for the cleaner.
Left out: a batch that loses all records is dropped even if it was a producer's last (Kafka keeps
its header for producer state).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from odradek.protocol import compression, records
from odradek.protocol.records import BATCH_HEADER_SIZE, BatchHeader, read_header
from odradek.storage.segment import INDEX_SUFFIX, TIME_INDEX_SUFFIX, LogSegment, segment_file_name
from odradek.storage.txn_index import AbortedTxn

if TYPE_CHECKING:
    from odradek.storage.log import Log

log = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
OFFSET_MAP_ENTRY_BYTES = 24  # Kafka's SkimpyOffsetMap: 16-byte MD5 of the key + 8-byte offset
WRITE_CHUNK_BYTES = 1024 * 1024  # cleaned batches are written in chunks of about this size
# The steps of a swap, in order; a test hook sees each name just after the step is durable.
STEPS = ("cleaned_written", "swap_renamed", "indexes_removed", "swapped")

_UINT32 = struct.Struct(">I")
_INT32 = struct.Struct(">i")


class CleanerStopped(Exception):
    """The broker is shutting down; the pass stopped between two segments."""


class OffsetMap:
    """Key (MD5 digest) -> latest offset, holding at most `max_entries` keys.

    Owned by one cleaner pass, in the cleaner thread. `put` of a new key into a full map is a
    bug (the pass sizes its dirty range from batch record counts first)."""

    def __init__(self, memory_bytes: int) -> None:
        self.max_entries = max(memory_bytes // OFFSET_MAP_ENTRY_BYTES, 1)
        self._offsets: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._offsets)

    def put(self, key: bytes, offset: int) -> None:
        digest = hashlib.md5(key).digest()
        assert digest in self._offsets or len(self._offsets) < self.max_entries, "offset map full"
        self._offsets[digest] = offset

    def get(self, key: bytes) -> int:
        return self._offsets.get(hashlib.md5(key).digest(), -1)


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one pass did (for logs and tests)."""

    first_dirty_offset: int
    cleaned_to_offset: int  # the new first dirty offset (checkpointed)
    segments_rewritten: int
    bytes_before: int
    bytes_after: int
    records_removed: int


def _segment_batches(fs, fd: int, size_bytes: int):
    """(position, header, batch bytes) of every complete batch of a segment file."""
    position = 0
    while position + BATCH_HEADER_SIZE <= size_bytes:
        header = read_header(fs.pread(fd, BATCH_HEADER_SIZE, position))
        if header.batch_length <= 0 or position + header.size_bytes > size_bytes:
            return
        yield position, header, fs.pread(fd, header.size_bytes, position)
        position += header.size_bytes


def _segment_headers(fs, fd: int, size_bytes: int):
    position = 0
    while position + BATCH_HEADER_SIZE <= size_bytes:
        header = read_header(fs.pread(fd, BATCH_HEADER_SIZE, position))
        if header.batch_length <= 0 or position + header.size_bytes > size_bytes:
            return
        yield header
        position += header.size_bytes


def _raw_records(batch: bytes, header: BatchHeader):
    """(offset, timestamp, key, value is None, raw record bytes incl. its length varint)."""
    section: bytes | memoryview = memoryview(batch)[records.RECORDS_OFFSET:header.size_bytes]
    if header.compression != compression.Compression.NONE:
        section = compression.decompress(header.compression, section, records.MAX_DECOMPRESSED_BATCH_BYTES)
    position, end = 0, len(section)
    for _ in range(header.records_count):
        start = position
        length, position = records._read_varint(section, position, end)
        record_end = position + length
        if length < 0 or record_end > end:
            raise ValueError("record runs past the end of the batch")
        position += 1  # attributes
        timestamp_delta, position = records._read_varint(section, position, record_end)
        offset_delta, position = records._read_varint(section, position, record_end)
        key, position = records._read_bytes(section, position, record_end)
        value_length, _ = records._read_varint(section, position, record_end)
        yield (header.base_offset + offset_delta, header.base_timestamp + timestamp_delta, key,
               value_length < 0, bytes(section[start:record_end]))
        position = record_end


def _rebuild_batch(batch: bytes, header: BatchHeader, kept: list[bytes]) -> bytes:
    """The batch with only the `kept` raw records; header fields kept, count/length/CRC updated."""
    section = b"".join(kept)
    if header.compression != compression.Compression.NONE:
        section = compression.compress(header.compression, section)
    out = bytearray(batch[:records.RECORDS_OFFSET]) + section
    _INT32.pack_into(out, records.LENGTH_OFFSET, len(out) - records.LOG_OVERHEAD)
    _INT32.pack_into(out, records.RECORDS_COUNT_OFFSET, len(kept))
    _UINT32.pack_into(out, records.CRC_OFFSET, records.compute_crc(out, 0, len(out)))
    return bytes(out)


class CleanedTransactions:
    """The transaction state of one cleaning pass (Kafka's CleanedTransactionMetadata): which
    data batches belong to aborted transactions, and which markers may go (see the module docs).

    Fed the batches of the rewritten segments in offset order; owned by one pass (cleaner thread).
    """

    def __init__(self, aborted: tuple[AbortedTxn, ...], marker_horizon_ms: int) -> None:
        self.marker_horizon_ms = marker_horizon_ms
        self._aborted: dict[int, list[tuple[int, int]]] = {}
        for entry in aborted:
            self._aborted.setdefault(entry.producer_id, []).append((entry.first_offset, entry.last_offset))
        self._committed_with_data: set[int] = set()

    def is_aborted(self, header: BatchHeader) -> bool:
        """Whether a data batch belongs to an aborted transaction."""
        if not header.is_transactional or header.is_control:
            return False
        return any(first <= header.base_offset <= last for first, last in self._aborted.get(header.producer_id, ()))

    def keep_data_batch(self, header: BatchHeader) -> bool:
        if self.is_aborted(header):
            return False
        if header.is_transactional:
            self._committed_with_data.add(header.producer_id)
        return True

    def keep_control_batch(self, header: BatchHeader, batch: bytes) -> bool:
        try:
            marker = records.parse_end_txn_marker(batch)
        except ValueError:
            return True
        if marker is None:
            return True
        expired = header.max_timestamp <= self.marker_horizon_ms
        if marker.commit:
            had_data = header.producer_id in self._committed_with_data
            self._committed_with_data.discard(header.producer_id)
            return had_data or not expired
        return not expired


@dataclass(frozen=True, slots=True)
class CleaningPlan:
    """What the loop knows of a log when a pass starts: its inactive segments wholly below the
    last stable offset as (segment, end offset, size in bytes, largest timestamp), its log start,
    and the aborted transactions (.txnindex entries) overlapping those segments, with each
    segment's own entries by base offset. Made on the event loop (`plan_cleaning`), so the cleaner
    thread never touches a LogSegment's lazily opened files or indexes (only their paths)."""

    segments: tuple[tuple[LogSegment, int, int, int], ...]
    log_start_offset: int
    aborted_txns: tuple[AbortedTxn, ...] = ()
    txn_index_entries: dict[int, tuple[AbortedTxn, ...]] | None = None


def plan_cleaning(the_log: Log) -> CleaningPlan | None:
    """The plan for one pass over `the_log` (on the loop); None when it is closed."""
    if the_log.closed:
        return None
    segments = the_log.segments
    entries = []
    last_stable_offset = the_log.last_stable_offset
    for i, segment in enumerate(segments[:-1]):
        end_offset = segments[i + 1].base_offset
        if end_offset > last_stable_offset:
            break
        max_timestamp_ms, _ = segment.load_max_timestamp()
        entries.append((segment, end_offset, segment.size_bytes, max_timestamp_ms))
    aborted: tuple[AbortedTxn, ...] = ()
    own: dict[int, tuple[AbortedTxn, ...]] = {}
    if entries:
        aborted = tuple(the_log.aborted_txn_entries(segments[0].base_offset, entries[-1][1]))
        for segment, _, _, _ in entries:
            own[segment.base_offset] = tuple(the_log._loaded_txn_index(segment).entries)
    return CleaningPlan(tuple(entries), the_log.log_start_offset, aborted, own)


def clean_log(the_log: Log, *, now_ms: int, first_dirty_offset: int, offset_map_memory_bytes: int,
              checkpoint: Callable[[int], None], should_stop: Callable[[], bool] = lambda: False,
              force: bool = False, step_hook: Callable[[str], None] | None = None,
              plan: CleaningPlan | None = None) -> CleanResult | None:
    """One cleaning pass over `the_log` (see the module docs); None when nothing is due.

    `plan` comes from `plan_cleaning` on the loop (made here when None, for single-threaded
    callers). `checkpoint(offset)` durably records the cleaner offset; `force` ignores the dirty
    ratio. Raises CleanerStopped when `should_stop()` turns true, OSError on I/O errors (the log
    stays valid: each segment is either swapped or untouched).
    """
    config = the_log.config
    fs = the_log.fs
    if plan is None:
        plan = plan_cleaning(the_log)
    if plan is None or the_log.closed:
        return None
    log_start_offset = plan.log_start_offset
    # (segment, end offset, size) of the cleanable prefix: records older than min.compaction.lag.ms.
    cleanable: list[tuple[LogSegment, int, int]] = []
    max_timestamps: dict[int, int] = {}
    for segment, end_offset, size, max_timestamp_ms in plan.segments:
        if now_ms - max_timestamp_ms < config.min_compaction_lag_ms:
            break
        cleanable.append((segment, end_offset, size))
        max_timestamps[segment.base_offset] = max_timestamp_ms
    first_dirty_offset = max(first_dirty_offset, log_start_offset)
    dirty = [entry for entry in cleanable if entry[1] > first_dirty_offset]
    if not dirty:
        return None
    total_bytes = sum(size for _, _, size in cleanable)
    dirty_bytes = sum(size for _, _, size in dirty)
    oldest_dirty_ms = max_timestamps[dirty[0][0].base_offset]
    overdue = now_ms - oldest_dirty_ms > config.max_compaction_lag_ms
    if not force and not overdue and dirty_bytes < config.min_cleanable_dirty_ratio * total_bytes:
        return None

    transactions = CleanedTransactions(plan.aborted_txns, now_ms - config.delete_retention_ms)
    # The offset map over the dirty range, cut at a segment boundary so that it fits.
    offset_map = OffsetMap(offset_map_memory_bytes)
    records_counted = 0
    fitting: list[tuple[LogSegment, int, int]] = []
    for entry in dirty:
        segment, _, size = entry
        fd = fs.open(segment.log_path)
        try:
            count = sum(h.records_count for h in _segment_headers(fs, fd, size) if not h.is_control)
        finally:
            fs.close(fd)
        if records_counted + count > offset_map.max_entries:
            break
        records_counted += count
        fitting.append(entry)
    if not fitting:
        log.error("%s: log.cleaner.dedupe.buffer.size (%d bytes) cannot hold the keys of one segment; "
                  "not compacting", the_log, offset_map_memory_bytes)
        return None
    for segment, _, size in fitting:
        fd = fs.open(segment.log_path)
        try:
            for _, header, batch in _segment_batches(fs, fd, size):
                if header.is_control or header.last_offset < first_dirty_offset or transactions.is_aborted(header):
                    continue
                for offset, _, key, _, _ in _raw_records(batch, header):
                    if key is not None and offset >= first_dirty_offset:
                        offset_map.put(key, offset)
        finally:
            fs.close(fd)
    cleaned_to_offset = fitting[-1][1]

    checkpoint(first_dirty_offset)  # names the log before any swap: recovery then accepts gaps
    tombstone_horizon_ms = now_ms - config.delete_retention_ms
    rewritten = bytes_before = bytes_after = removed = 0
    for segment, end_offset, size in cleanable:
        if segment.base_offset >= cleaned_to_offset:
            break
        if should_stop():
            raise CleanerStopped()
        own_entries = (plan.txn_index_entries or {}).get(segment.base_offset, ())
        result = _clean_segment(the_log, segment, size, offset_map, tombstone_horizon_ms, now_ms, step_hook,
                                transactions, own_entries)
        if result is not None:
            rewritten += 1
            bytes_before += size
            bytes_after += result[0]
            removed += result[1]
    checkpoint(cleaned_to_offset)
    if rewritten:
        log.info("%s: cleaned to offset %d: %d segment(s), %d -> %d bytes, %d record(s) removed", the_log,
                 cleaned_to_offset, rewritten, bytes_before, bytes_after, removed)
    return CleanResult(first_dirty_offset, cleaned_to_offset, rewritten, bytes_before, bytes_after, removed)


def _clean_segment(the_log: Log, segment: LogSegment, size_bytes: int, offset_map: OffsetMap,
                   tombstone_horizon_ms: int, now_ms: int, step_hook: Callable[[str], None] | None,
                   transactions: CleanedTransactions | None = None, txn_entries: tuple[AbortedTxn, ...] = ()
                   ) -> tuple[int, int] | None:
    """Rewrite one segment and swap it in; (new size, records removed), or None if unchanged.

    `txn_entries`: the segment's .txnindex entries; those whose ABORT marker goes are dropped."""
    fs = the_log.fs
    if transactions is None:
        transactions = CleanedTransactions((), -1)
    cleaned_path = segment.log_path + CLEANED_SUFFIX
    swap_path = segment.log_path + SWAP_SUFFIX
    txn_path = segment.txn_index.path
    source = fs.open(segment.log_path)
    out = fs.open(cleaned_path, create=True)
    removed = 0
    removed_markers: set[int] = set()
    try:
        fs.truncate(out, 0)
        pending: list[bytes] = []
        pending_bytes = written = 0
        for _, header, batch in _segment_batches(fs, source, size_bytes):
            if header.is_control:
                if not transactions.keep_control_batch(header, batch):
                    removed += header.records_count
                    removed_markers.add(header.base_offset)
                    batch = b""
            elif not transactions.keep_data_batch(header):
                removed += header.records_count
                batch = b""
            else:
                kept, dropped = [], 0
                for offset, timestamp_ms, key, is_tombstone, raw in _raw_records(batch, header):
                    superseded = key is not None and offset_map.get(key) > offset
                    expired_tombstone = key is not None and is_tombstone and timestamp_ms <= tombstone_horizon_ms
                    if superseded or expired_tombstone:
                        dropped += 1
                        continue
                    kept.append(raw)
                if dropped:
                    removed += dropped
                    batch = _rebuild_batch(batch, header, kept) if kept else b""
            if batch:
                pending.append(batch)
                pending_bytes += len(batch)
            if pending_bytes >= WRITE_CHUNK_BYTES:
                fs.pwrite(out, b"".join(pending), written)
                written += pending_bytes
                pending, pending_bytes = [], 0
        if not removed:
            fs.close(out)
            out = -1
            fs.unlink(cleaned_path)
            return None
        if pending:
            fs.pwrite(out, b"".join(pending), written)
            written += pending_bytes
        fs.fsync(out)
    finally:
        fs.close(source)
        if out != -1:
            fs.close(out)
    kept_entries = [entry for entry in txn_entries if entry.last_offset not in removed_markers]
    txn_changed = len(kept_entries) != len(txn_entries)
    if txn_changed:
        txn_out = fs.open(txn_path + CLEANED_SUFFIX, create=True)
        try:
            fs.truncate(txn_out, 0)
            fs.pwrite(txn_out, b"".join(entry.encode() for entry in kept_entries), 0)
            fs.fsync(txn_out)
        finally:
            fs.close(txn_out)
    _step(step_hook, "cleaned_written")

    with the_log._flush_lock:
        if the_log.closed or segment not in the_log.segments[:-1]:
            fs.unlink(cleaned_path)  # retention removed it meanwhile (or the log closed)
            fs.unlink(txn_path + CLEANED_SUFFIX)
            return None
        if txn_changed:
            fs.rename(txn_path + CLEANED_SUFFIX, txn_path + SWAP_SUFFIX)
        fs.rename(cleaned_path, swap_path)
        fs.fsync_dir(the_log.dir)
        _step(step_hook, "swap_renamed")
        # The old segment keeps its open descriptors (old inodes) for readers holding it.
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            fs.unlink(os.path.join(the_log.dir, segment_file_name(segment.base_offset, suffix)))
        _step(step_hook, "indexes_removed")
        if txn_changed:
            # The old segment's TransactionIndex keeps its descriptor (old inode) and entries, which
            # match the old .log its readers see; it closes with the segment after the delay.
            fs.rename(txn_path + SWAP_SUFFIX, txn_path)
        fs.rename(swap_path, segment.log_path)
        fs.fsync_dir(the_log.dir)
        _step(step_hook, "swapped")
        replacement = LogSegment(fs, the_log.dir, segment.base_offset, the_log.config)
        the_log.segments[the_log.segments.index(segment)] = replacement
        the_log._position_cache = None
        # The old .log inode lives on through its open descriptor until the delay passes.
        the_log._pending_deletes.append((now_ms + the_log.config.file_delete_delay_ms, segment, []))
    return written, removed


def _step(step_hook: Callable[[str], None] | None, name: str) -> None:
    if step_hook is not None:
        step_hook(name)


__all__ = ["STEPS", "CleanResult", "CleanedTransactions", "CleanerStopped", "OffsetMap", "clean_log"]
