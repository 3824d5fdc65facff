"""Log: one partition's log on disk (Kafka's UnifiedLog/LocalLog): append, read, retention, truncation."""

from __future__ import annotations

import base64
import bisect
import logging
import os
import threading
import uuid
from dataclasses import dataclass

from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import BatchHeader, EndTransactionMarker
from odradek.storage.checkpoints import LEADER_EPOCH_CHECKPOINT
from odradek.storage.fs import FileSystem
from odradek.storage.index import CorruptIndexError
from odradek.storage.leader_epoch import LeaderEpochFileCache
from odradek.storage.log_config import LogConfig
from odradek.storage.producer_state import CompletedTxn, ProducerStateManager
from odradek.storage.segment import FileRegion, LogSegment
from odradek.storage.txn_index import AbortedTxn

__all__ = ["AppendResult", "FileRegion", "InconsistentTopicIdError", "Log", "ReadResult", "parse_partition_dir"]

log = logging.getLogger(__name__)

PARTITION_METADATA_FILE = "partition.metadata"
DELETE_DIR_SUFFIX = "-delete"


class InconsistentTopicIdError(Exception):
    """partition.metadata names another topic id than the one the broker expects."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    error: ErrorCode
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless the topic uses LogAppendTime
    log_start_offset: int
    error_message: str | None
    needs_flush: bool  # flush.messages reached: the caller runs log.flush() (blocking) before acking


@dataclass(frozen=True, slots=True)
class ReadResult:
    error: ErrorCode
    region: FileRegion | None


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    """`<topic>-<partition>` -> (topic, partition); None for anything else."""
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


def encode_topic_id(topic_id: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, no padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def decode_topic_id(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


class Log:
    """One partition's log: its segments, offsets, leader epochs and producer state.

    Directory `<topic>-<partition>/`:
        partition.metadata             `version: 0` / `topic_id: <base64 uuid>`
        leader-epoch-checkpoint        see leader_epoch.py
        <offset:020d>.log/.index/.timeindex   segments (see segment.py)
        <offset:020d>.txnindex         aborted transactions whose marker is in that segment
                                       (see txn_index.py; only for segments that have one)
        <offset:020d>.snapshot         producer state (see producer_state.py)

    Offsets: log_start_offset <= high_watermark <= log_end_offset, recovery_point <= log_end_offset.
    The last segment is the active one and the only one appended to; segment base offsets
    strictly increase; the active segment's next offset is the log end offset.

    Threads: everything runs on the broker's event loop except `flush()`, which the broker runs in
    its blocking-I/O pool while the loop keeps appending. `flush` copies the segment list (appends
    only add segments), fsyncs file descriptors (safe concurrently with pwrite) and then advances
    the recovery point to the end offset it saw when it started. The operations that close or
    delete segments (`truncate_to`, `close`, and later retention) take `_flush_lock`, so they wait
    for a running flush (they are rare) and a flush never fsyncs a closed descriptor.
    Retention (`delete_old_segments`, on the loop) removes whole inactive segments from the front
    under `_flush_lock`: their files are renamed `.deleted` at once (the loader removes such
    leftovers after a crash) and removed `file.delete.delay.ms` later (`delete_expired_files`);
    the log start offset then moves to the first kept segment. DeleteRecords (`delete_records`)
    only moves the log start offset; retention removes the segments below it. The log manager
    checkpoints the new log start offset.

    Transactions (Kafka's UnifiedLog): `append` opens or continues a producer's transaction with
    a transactional batch; `append_control_marker` (the WriteTxnMarkers path) ends it with a
    COMMIT or ABORT marker batch, and an aborted one is added to the active segment's .txnindex.
    The first unstable offset is the first offset of the earliest transaction that is still open,
    or whose marker is not yet below the high watermark (`_unreplicated_txns`, Kafka's
    unreplicatedTxns), clamped to the log start offset; the last stable offset (LSO) is
    min(first unstable offset, high watermark). A read_committed fetch reads with
    `max_offset=last_stable_offset` and sends `collect_aborted_transactions(fetch_offset, LSO)`.
    Invariants: log_start_offset <= last_stable_offset <= high_watermark.
    """

    def __init__(self, fs: FileSystem, dir: str, config: LogConfig, topic: str, partition: int) -> None:
        self.fs = fs
        self.dir = dir
        self.config = config
        self.topic = topic
        self.partition = partition
        self.topic_id: uuid.UUID | None = None
        self.segments: list[LogSegment] = []
        self._base_offsets: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.recovery_point = 0
        self.leader_epoch_cache = LeaderEpochFileCache(fs, os.path.join(dir, LEADER_EPOCH_CHECKPOINT))
        self._parent_dir_synced = False  # the data dir's entry for this log, fsynced by a flush
        self.producer_state = ProducerStateManager(fs, dir)
        # Completed transactions whose marker is not yet below the high watermark, as
        # (first offset, marker offset) in marker order; they hold the LSO back (Kafka).
        self._unreplicated_txns: list[tuple[int, int]] = []
        # flush.messages bookkeeping with one writer each, so no lock is needed: the loop thread
        # counts appended records, a flush (any thread) records how many it covered.
        self._messages_appended = 0
        self._messages_flushed = 0
        self.last_flush_ms = 0
        self._flush_lock = threading.Lock()
        self._position_cache: tuple[int, LogSegment, int] | None = None  # (offset, segment, position)
        self.closed = False
        self.allow_offset_gaps = False  # set by open(); see there
        # Segments renamed `.deleted` and waiting for file.delete.delay.ms: (due ms, segment, paths).
        self._pending_deletes: list[tuple[int, LogSegment, list[str]]] = []

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, fs: FileSystem, dir: str, config: LogConfig, *, topic_id: uuid.UUID | None, recovery_point: int,
             log_start_offset: int, high_watermark: int, clean_shutdown: bool, now_ms: int,
             allow_offset_gaps: bool = False) -> Log:
        """Open (creating if needed) the log in `dir`; recovers it when `clean_shutdown` is False.

        `allow_offset_gaps`: the log was ever compacted (the data dir's cleaner checkpoint names
        it), so recovery accepts gaps between batches (see LogSegment.recover)."""
        from odradek.storage.log_loader import load_log

        parsed = parse_partition_dir(os.path.basename(os.path.normpath(dir)))
        if parsed is None:
            raise ValueError(f"{dir} is not named <topic>-<partition>")
        fs.mkdir(dir)
        self = cls(fs, dir, config, *parsed)
        self.allow_offset_gaps = allow_offset_gaps or config.compacted
        self._init_topic_id(topic_id)
        load_log(self, recovery_point=recovery_point, log_start_offset=log_start_offset,
                 high_watermark=high_watermark, clean_shutdown=clean_shutdown, now_ms=now_ms)
        self.last_flush_ms = now_ms
        return self

    def _init_topic_id(self, topic_id: uuid.UUID | None) -> None:
        path = os.path.join(self.dir, PARTITION_METADATA_FILE)
        stored = None
        if self.fs.exists(path):
            try:
                fields = dict(line.split(": ", 1) for line in self.fs.read_file(path).decode().splitlines() if line)
                stored = decode_topic_id(fields["topic_id"].strip())
            except (ValueError, KeyError) as exc:
                log.warning("%s: unreadable (%s); rewriting", path, exc)
        if topic_id is not None and stored is not None and stored != topic_id:
            raise InconsistentTopicIdError(f"{self.dir}: partition.metadata has topic id {stored}, expected {topic_id}")
        self.topic_id = stored or topic_id
        if stored is None and topic_id is not None:
            # Not fsynced: the metadata log is the durable record of the topic id, and a
            # partition.metadata lost or emptied by a crash is rewritten from it at the next
            # start. (Two fsyncs per partition made creating 10,000 partitions take tens of s.)
            self.fs.write_file_atomic(path, f"version: 0\ntopic_id: {encode_topic_id(topic_id)}\n".encode(),
                                      durable=False)

    # -- segments ------------------------------------------------------------------------------
    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    def _add_segment(self, segment: LogSegment) -> None:
        assert not self.segments or segment.base_offset > self.segments[-1].base_offset
        self.segments.append(segment)
        self._base_offsets.append(segment.base_offset)

    def _segment_index_for(self, offset: int) -> int:
        """Index of the segment whose range holds `offset` (the first one for offsets before it)."""
        return max(bisect.bisect_right(self._base_offsets, offset) - 1, 0)

    def _roll(self, now_ms: int) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset."""
        self.active_segment.on_become_inactive()
        self.producer_state.take_snapshot(self.log_end_offset, durable=False)  # no fsync on the append path
        segment = LogSegment.create(self.fs, self.dir, self.log_end_offset, self.config)
        self._add_segment(segment)
        log.debug("%s-%d: rolled segment at %d", self.topic, self.partition, self.log_end_offset)
        return segment

    # -- appending -----------------------------------------------------------------------------
    def append(self, batch: bytearray, header: BatchHeader, *, leader_epoch: int, now_ms: int) -> AppendResult:
        """Append one validated batch as leader; see the module docs of the broker's produce path.

        Producer checks, maybe roll, patch base offset / leader epoch (/ LogAppendTime), ONE write,
        indexes, producer state, leader epoch cache, log end offset. Raises OSError when the write
        fails (the log is unchanged; the broker answers KAFKA_STORAGE_ERROR).
        """
        assert not self.closed
        assert header.position == 0 and len(batch) == header.size_bytes, "exactly one batch"
        if header.is_control:
            return self._failed(ErrorCode.invalid_record, "clients may not write control batches")
        size = header.size_bytes
        if size > self.config.segment_bytes:
            return self._failed(ErrorCode.record_list_too_large,
                                f"batch of {size} bytes is larger than segment.bytes {self.config.segment_bytes}")
        check = self.producer_state.check(header, log_start_offset=self.log_start_offset)
        if check.error is not ErrorCode.none:
            return self._failed(check.error, check.message)
        if check.duplicate is not None:
            return AppendResult(ErrorCode.none, check.duplicate.first_offset, check.duplicate.last_offset, -1,
                                self.log_start_offset, None, False)
        base_offset, last_offset, log_append_time_ms, max_timestamp_ms = self._write(batch, header, leader_epoch,
                                                                                      now_ms)
        self.producer_state.update(header, base_offset, last_offset, max_timestamp_ms)
        return AppendResult(ErrorCode.none, base_offset, last_offset, log_append_time_ms, self.log_start_offset,
                            None, self.unflushed_messages >= self.config.flush_messages)

    def append_control_marker(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                              leader_epoch: int, now_ms: int) -> AppendResult:
        """Write an end-transaction marker (COMMIT or ABORT) for `producer_id` as leader.

        The WriteTxnMarkers handler calls this for each partition of a marker request. Errors:
        INVALID_PRODUCER_EPOCH (older producer epoch than the log knows), TRANSACTION_COORDINATOR_FENCED
        (older coordinator epoch than the producer's last marker). Ends the producer's open
        transaction (an empty one when none is open, as Kafka); an aborted one is added to the
        active segment's .txnindex. base_offset == last_offset == the marker's offset. Raises
        OSError when the write fails (the broker answers KAFKA_STORAGE_ERROR).
        """
        assert not self.closed
        check = self.producer_state.check_end_txn_marker(producer_id, producer_epoch, coordinator_epoch)
        if check.error is not ErrorCode.none:
            return self._failed(check.error, check.message)
        batch = bytearray(records.build_end_txn_marker(producer_id=producer_id, producer_epoch=producer_epoch,
                                                       commit=commit, coordinator_epoch=coordinator_epoch,
                                                       timestamp_ms=now_ms))
        header = records.read_header(batch, 0)
        base_offset, last_offset, log_append_time_ms, _ = self._write(batch, header, leader_epoch, now_ms)
        completed = self.producer_state.complete_txn(producer_id, producer_epoch,
                                                     EndTransactionMarker(commit, coordinator_epoch), base_offset)
        assert completed is not None
        self._on_txn_completed(self.active_segment, completed, self.producer_state)
        if completed.last_offset >= self.high_watermark:
            self._unreplicated_txns.append((completed.first_offset, completed.last_offset))
        return AppendResult(ErrorCode.none, base_offset, last_offset, log_append_time_ms, self.log_start_offset,
                            None, self.unflushed_messages >= self.config.flush_messages)

    def append_as_follower(self, data: bytes | bytearray | memoryview, now_ms: int) -> AppendResult:
        """Append record batches exactly as the leader wrote them (Kafka's appendAsFollower).

        `data` is a Fetch response's records for this partition: whole batches, perhaps followed
        by a torn last batch (the leader cut the response at max bytes), which is ignored. Every
        complete batch is checked first (size, magic, CRC-32C, `validate_batch`; a compacted
        topic's batches may hold fewer records than their offset span), so a bad batch refuses
        the whole call with CORRUPT_MESSAGE and leaves the log unchanged. Offsets and partition
        leader epochs are NOT patched: the first batch must start at the log end offset (a
        compacted log may skip offsets, never go back), and each later batch above the previous
        one. A batch starting below the log end offset is a bug of the caller (the follower
        truncates first) and raises ValueError.

        Per batch: roll as `_write` does, the epoch cache learns the batch's partition leader
        epoch at its base offset, ONE write, indexes, producer state as on the leader without the
        sequence checks (Kafka's replication origin): data batches via `update`, end-transaction
        markers via `complete_txn` and `_on_txn_completed` (aborted ones go to .txnindex; markers
        above the high watermark hold the LSO back) as `append_control_marker` does.
        Returns the offsets of the appended span (-1, -1 when nothing complete was in `data`)
        and `needs_flush`. Raises OSError when a write fails: the batches before it stay.
        """
        assert not self.closed
        view = memoryview(data).cast("B")
        checked, error = self._check_follower_batches(view)
        if error is not None:
            return self._failed(ErrorCode.corrupt_message, error)
        if not checked:
            return AppendResult(ErrorCode.none, -1, -1, -1, self.log_start_offset, None, False)
        for header, marker in checked:
            size = header.size_bytes
            batch = view[header.position:header.position + size]
            segment = self.active_segment
            if segment.should_roll(size, header.last_offset, now_ms):
                segment = self._roll(now_ms)
            epoch = header.partition_leader_epoch
            if epoch > self.leader_epoch_cache.latest_epoch:
                self.leader_epoch_cache.assign(epoch, header.base_offset)
            segment.append(batch, header.last_offset, header.max_timestamp, now_ms)
            self.log_end_offset = header.next_offset
            self._messages_appended += header.records_count
            if not header.is_control:
                self.producer_state.update(header, header.base_offset, header.last_offset, header.max_timestamp)
            elif marker is not None and header.has_producer_id:
                completed = self.producer_state.complete_txn(header.producer_id, header.producer_epoch, marker,
                                                             header.base_offset)
                if completed is not None:
                    self._on_txn_completed(segment, completed, self.producer_state)
                    if completed.last_offset >= self.high_watermark:
                        self._unreplicated_txns.append((completed.first_offset, completed.last_offset))
        return AppendResult(ErrorCode.none, checked[0][0].base_offset, checked[-1][0].last_offset, -1,
                            self.log_start_offset, None, self.unflushed_messages >= self.config.flush_messages)

    def _check_follower_batches(self, view: memoryview
                                ) -> tuple[list[tuple[BatchHeader, EndTransactionMarker | None]], str | None]:
        """The complete batches of a follower append with their decoded markers, or a reason to
        refuse them all; a torn last batch is left out. Raises ValueError on an offset below the
        log end offset (see `append_as_follower`)."""
        checked: list[tuple[BatchHeader, EndTransactionMarker | None]] = []
        position, end = 0, len(view)
        next_offset = self.log_end_offset
        while end - position >= records.BATCH_HEADER_SIZE:
            header = records.read_header(view, position)
            if header.batch_length >= records.BATCH_HEADER_SIZE - records.LOG_OVERHEAD \
                    and position + header.size_bytes > end:
                break  # torn last batch: the leader cut the response here
            result = records.validate_batch(view, position, end - position)
            if isinstance(result, records.BatchError):
                compacted = self.allow_offset_gaps and result.error is ErrorCode.invalid_record \
                    and 0 < header.records_count <= header.last_offset_delta
                if not compacted:
                    return [], f"batch at offset {header.base_offset}: {result.message}"
                result = header
            if result.size_bytes > self.config.segment_bytes:
                return [], (f"batch of {result.size_bytes} bytes at offset {result.base_offset} is larger than "
                            f"segment.bytes {self.config.segment_bytes}")
            if result.base_offset < next_offset:
                raise ValueError(f"{self.topic}-{self.partition}: follower append at offset {result.base_offset} "
                                 f"below the expected {next_offset} (log end offset {self.log_end_offset})")
            if result.base_offset > next_offset and not self.allow_offset_gaps:
                return [], (f"batch at offset {result.base_offset} leaves a gap after {next_offset} in a log "
                            "that is not compacted")
            marker = None
            if result.is_control:
                try:
                    marker = records.parse_end_txn_marker(view[position:position + result.size_bytes])
                except ValueError as exc:
                    return [], f"control batch at offset {result.base_offset}: {exc}"
            checked.append((result, marker))
            next_offset = result.next_offset
            position += result.size_bytes
        return checked, None

    def _on_txn_completed(self, segment: LogSegment, completed: CompletedTxn, state: ProducerStateManager) -> None:
        """Index an aborted transaction in the segment holding its marker (Kafka's updateTxnIndex);
        `state` has already applied the marker, so its first unstable offset excludes it."""
        if not completed.is_aborted:
            return
        first_unstable = state.first_unstable_offset()
        last_stable_offset = completed.last_offset + 1 if first_unstable is None else first_unstable
        self._loaded_txn_index(segment).append(AbortedTxn(completed.producer_id, completed.first_offset, completed.last_offset,
                                            last_stable_offset))

    def _write(self, batch: bytearray, header: BatchHeader, leader_epoch: int, now_ms: int
               ) -> tuple[int, int, int, int]:
        """Roll if due, patch, write one checked batch at the log end and advance it.

        Returns (base offset, last offset, log append time or -1, max timestamp)."""
        size = header.size_bytes
        base_offset = self.log_end_offset
        last_offset = base_offset + header.last_offset_delta
        segment = self.active_segment
        if segment.should_roll(size, last_offset, now_ms):
            segment = self._roll(now_ms)
        records.patch_base_offset(batch, 0, base_offset)
        records.patch_leader_epoch(batch, 0, leader_epoch)
        log_append_time_ms = -1
        max_timestamp_ms = header.max_timestamp
        if self.config.log_append_time:
            records.set_log_append_time(batch, 0, size, now_ms)
            log_append_time_ms = max_timestamp_ms = now_ms
        # The epoch cache first: if its checkpoint write fails nothing is in the log yet, and an
        # entry starting at the log end offset is harmless if the batch write then fails.
        self.leader_epoch_cache.assign(leader_epoch, base_offset)
        segment.append(batch, last_offset, max_timestamp_ms, now_ms)
        self.log_end_offset = last_offset + 1
        self._messages_appended += header.records_count
        return base_offset, last_offset, log_append_time_ms, max_timestamp_ms

    @property
    def unflushed_messages(self) -> int:
        """Records appended since the last flush began (flush.messages counts these)."""
        return max(self._messages_appended - self._messages_flushed, 0)

    def _failed(self, error: ErrorCode, message: str | None) -> AppendResult:
        return AppendResult(error, -1, -1, -1, self.log_start_offset, message, False)

    # -- reading -------------------------------------------------------------------------------
    def read(self, fetch_offset: int, max_bytes: int, *, max_offset: int, min_one_message: bool = True) -> ReadResult:
        """Batches from the one segment holding `fetch_offset`, below `max_offset`, up to `max_bytes`.

        OFFSET_OUT_OF_RANGE outside [log_start_offset, log_end_offset]. See LogSegment.read for
        the partial-last-batch and KIP-74 rules. An empty region when nothing is below `max_offset`.
        """
        if fetch_offset < self.log_start_offset or fetch_offset > self.log_end_offset:
            return ReadResult(ErrorCode.offset_out_of_range, None)
        max_offset = min(max_offset, self.log_end_offset)
        i = self._segment_index_for(fetch_offset)
        if fetch_offset >= max_offset:
            return ReadResult(ErrorCode.none, self._empty_region(self.segments[i]))
        max_segment, max_position = self._position_of(max_offset)
        while i < len(self.segments):
            segment = self.segments[i]
            if segment.base_offset >= max_offset:
                break
            limit = max_position if segment is max_segment else segment.size_bytes
            region = segment.read(fetch_offset, max_bytes, limit, min_one_message)
            if region is not None:
                return ReadResult(ErrorCode.none, region)
            i += 1
        return ReadResult(ErrorCode.none, self._empty_region(self.segments[min(i, len(self.segments) - 1)]))

    # -- transactions: last stable offset and aborted transactions -------------------------------
    @property
    def first_unstable_offset(self) -> int | None:
        """First offset of the earliest open or not yet replicated transaction (>= log start), or None."""
        unreplicated = self._unreplicated_txns
        while unreplicated and unreplicated[0][1] < self.high_watermark:
            unreplicated.pop(0)
        firsts = [first for first, _ in unreplicated]
        ongoing = self.producer_state.first_unstable_offset()
        if ongoing is not None:
            firsts.append(ongoing)
        if not firsts:
            return None
        return max(min(firsts), self.log_start_offset)

    @property
    def last_stable_offset(self) -> int:
        """The LSO: min(first unstable offset, high watermark); read_committed reads below it."""
        first_unstable = self.first_unstable_offset
        if first_unstable is None:
            return self.high_watermark
        return min(first_unstable, self.high_watermark)

    def collect_aborted_transactions(self, start_offset: int, upper_bound_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of every aborted transaction overlapping
        [start_offset, upper_bound_offset), ordered by marker offset (the Fetch response's
        AbortedTransactions). Reads the .txnindex of the segment holding `start_offset` and of
        later segments until an entry's last stable offset reaches the upper bound (Kafka's
        collectAbortedTransactions). A corrupt .txnindex is rebuilt from the log first."""
        return [(entry.producer_id, entry.first_offset)
                for entry in self.aborted_txn_entries(start_offset, upper_bound_offset)]

    def aborted_txn_entries(self, start_offset: int, upper_bound_offset: int) -> list[AbortedTxn]:
        """The .txnindex entries behind `collect_aborted_transactions` (the cleaner needs them whole)."""
        found: list[AbortedTxn] = []
        if upper_bound_offset <= start_offset:
            return found
        for segment in self.segments[self._segment_index_for(start_offset):]:
            entries, complete = self._loaded_txn_index(segment).collect(start_offset, upper_bound_offset)
            found.extend(entries)
            if complete:
                break
        return found

    def _loaded_txn_index(self, segment: LogSegment):
        """The segment's TransactionIndex, loaded; rebuilt from the log if it fails its check."""
        try:
            segment.txn_index.load()
        except CorruptIndexError as exc:
            log.warning("rebuilding %s: %s", segment.txn_index.path, exc)
            self._rebuild_txn_index(segment)
        return segment.txn_index

    def _rebuild_txn_index(self, segment: LogSegment) -> None:
        """Recreate one segment's .txnindex by replaying producer state up to it (from the latest
        snapshot at or below its base offset) and then through its batches, in a scratch state."""
        segment.txn_index.reset()
        state = ProducerStateManager(self.fs, self.dir)
        replay_from = max(state.load(segment.base_offset), self.log_start_offset)
        end_offset = segment.next_offset if segment.next_offset is not None else self.log_end_offset
        i = self.segments.index(segment)
        if i + 1 < len(self.segments):
            end_offset = self.segments[i + 1].base_offset
        self.replay_batches(state, replay_from, end_offset, index_from_offset=segment.base_offset)

    def _read_marker(self, segment: LogSegment, position: int, header: BatchHeader) -> EndTransactionMarker | None:
        try:
            return records.parse_end_txn_marker(segment.read_batch(position, header))
        except ValueError as exc:
            log.warning("%s: unreadable control batch at offset %d: %s", segment, header.base_offset, exc)
            return None

    def _empty_region(self, segment: LogSegment) -> FileRegion:
        return FileRegion(segment.fd, 0, 0, self.fs)

    def _position_of(self, offset: int) -> tuple[LogSegment, int]:
        """(segment, position) where the batch holding `offset` starts; cached for the HW/LEO."""
        if offset >= self.log_end_offset:
            return self.active_segment, self.active_segment.size_bytes
        cached = self._position_cache
        if cached is not None and cached[0] == offset:
            return cached[1], cached[2]
        segment = self.segments[self._segment_index_for(offset)]
        found = segment.translate_offset(offset)
        position = found[0] if found is not None else segment.size_bytes
        self._position_cache = (offset, segment, position)
        return segment, position

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= `timestamp_ms`, or None."""
        for segment in self.segments:
            max_timestamp_ms, _ = segment.load_max_timestamp()
            if max_timestamp_ms >= timestamp_ms:
                found = segment.find_offset_by_timestamp(timestamp_ms)
                if found is not None and found[0] >= self.log_start_offset:
                    return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record holding the log's largest timestamp (KIP-734)."""
        best: tuple[int, LogSegment, int] | None = None
        for segment in self.segments:
            max_timestamp_ms, offset = segment.load_max_timestamp()
            if offset >= 0 and (best is None or max_timestamp_ms > best[0]):
                best = (max_timestamp_ms, segment, offset)
        if best is None:
            return None
        max_timestamp_ms, segment, offset = best
        found = segment.translate_offset(offset)
        if found is None:
            return None
        position, header = found
        for record in records.iter_records(segment.read_batch(position, header)):
            if record.timestamp == max_timestamp_ms:
                return record.offset, record.timestamp
        return header.last_offset, max_timestamp_ms

    # -- leader epochs -------------------------------------------------------------------------
    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.leader_epoch_cache.end_offset_for_epoch(epoch, self.log_end_offset)

    def epoch_for_offset(self, offset: int) -> int:
        return self.leader_epoch_cache.epoch_for_offset(offset)

    # -- offsets and truncation ----------------------------------------------------------------
    def update_high_watermark(self, offset: int) -> None:
        self.high_watermark = min(max(offset, self.log_start_offset), self.log_end_offset)
        while self._unreplicated_txns and self._unreplicated_txns[0][1] < self.high_watermark:
            self._unreplicated_txns.pop(0)

    def update_config(self, config: LogConfig) -> None:
        self.config = config
        for segment in self.segments:
            segment.config = config

    # -- retention and DeleteRecords -----------------------------------------------------------
    def delete_records(self, offset: int) -> tuple[ErrorCode, int]:
        """DeleteRecords: advance the log start offset to `offset` (-1: the high watermark).

        Returns (error, low watermark). OFFSET_OUT_OF_RANGE beyond the high watermark (Kafka).
        Whole segments below the new start go at the next retention check; fetches below it
        get OFFSET_OUT_OF_RANGE at once.
        """
        if offset == -1:
            offset = self.high_watermark
        if offset < 0 or offset > self.high_watermark:
            return ErrorCode.offset_out_of_range, self.log_start_offset
        if offset > self.log_start_offset:
            self._advance_log_start_offset(offset)
        return ErrorCode.none, self.log_start_offset

    def _advance_log_start_offset(self, offset: int) -> None:
        self.log_start_offset = offset
        self.high_watermark = max(self.high_watermark, offset)
        self.leader_epoch_cache.truncate_from_start(offset)
        self._position_cache = None

    def deletable_segments(self, now_ms: int) -> list[LogSegment]:
        """The prefix of inactive segments that retention removes now (Kafka's three rules).

        A segment goes when it lies wholly below the log start offset (DeleteRecords), or, under
        `cleanup.policy` delete, when its largest timestamp is more than `retention.ms` old, or
        while the partition exceeds `retention.bytes` by at least the segment's size. Only
        segments wholly below the high watermark, never the active one, and only a prefix.
        """
        config = self.config
        delete_policy = "delete" in config.cleanup_policy
        excess_bytes = -1
        if delete_policy and config.retention_bytes >= 0:
            excess_bytes = sum(s.size_bytes for s in self.segments) - config.retention_bytes
        deletable = []
        for i, segment in enumerate(self.segments[:-1]):
            next_base_offset = self.segments[i + 1].base_offset
            if next_base_offset > self.high_watermark:
                break
            reason = next_base_offset <= self.log_start_offset
            if not reason and delete_policy and config.retention_ms >= 0:
                max_timestamp_ms, _ = segment.load_max_timestamp()
                reason = now_ms - max_timestamp_ms > config.retention_ms
            size = segment.size_bytes
            if not reason and excess_bytes >= size:
                reason = True
            if not reason:
                break
            excess_bytes -= size
            deletable.append(segment)
        return deletable

    def delete_old_segments(self, now_ms: int) -> int:
        """Retention: rename the deletable segments `.deleted` (their files go after
        `file.delete.delay.ms`, see `delete_expired_files`), advance the log start offset to the
        first kept segment. Returns how many segments went. Runs on the event loop."""
        deletable = self.deletable_segments(now_ms)
        if not deletable:
            return 0
        with self._flush_lock:
            count = len(deletable)
            assert self.segments[:count] == deletable and count < len(self.segments)
            for segment in deletable:
                paths = segment.rename_to_deleted()
                self._pending_deletes.append((now_ms + self.config.file_delete_delay_ms, segment, paths))
            del self.segments[:count]
            del self._base_offsets[:count]
            self.fs.fsync_dir(self.dir)
            new_start = max(self.log_start_offset, self.segments[0].base_offset)
            if new_start > self.log_start_offset:
                self._advance_log_start_offset(new_start)
            self._position_cache = None
        log.info("%s-%d: retention deleted %d segment(s); log start offset %d", self.topic, self.partition,
                 count, self.log_start_offset)
        return count

    def delete_expired_files(self, now_ms: int) -> None:
        """Remove the files of segments deleted (or replaced by the cleaner) at least
        `file.delete.delay.ms` ago."""
        if not self._pending_deletes:
            return
        with self._flush_lock:  # the cleaner thread adds entries under it
            self._delete_expired_files(now_ms)

    def _delete_expired_files(self, now_ms: int, *, force: bool = False) -> None:
        keep = []
        for entry in self._pending_deletes:
            due_ms, segment, paths = entry
            if force or now_ms >= due_ms:
                segment.delete_renamed(paths)
            else:
                keep.append(entry)
        self._pending_deletes = keep

    def size_bytes(self) -> int:
        """Bytes in the log's segment files (DescribeLogDirs)."""
        return sum(s.size_bytes for s in list(self.segments))

    def truncate_to(self, offset: int) -> None:
        """Remove everything at and above `offset` (at a batch boundary: a batch holding `offset`
        goes entirely, so the log end offset may end below `offset`). Follower truncation."""
        if offset >= self.log_end_offset:
            return
        with self._flush_lock:
            if offset < self.log_start_offset:
                self._truncate_fully_and_start_at(max(offset, 0))  # as Kafka
            else:
                self._truncate_segments(offset)

    def _truncate_segments(self, offset: int) -> None:
        keep = self._segment_index_for(offset)
        if offset <= self.segments[keep].base_offset and keep > 0:
            keep -= 1  # the previous segment becomes active; it holds everything below `offset`
        for segment in self.segments[keep + 1:]:
            segment.delete()
        del self.segments[keep + 1:]
        del self._base_offsets[keep + 1:]
        active = self.active_segment
        active.ensure_indexes()
        self._loaded_txn_index(active)
        active.truncate_to(offset)
        if active.next_offset is None:
            active.open_as_active()
        # Make the cut durable now: otherwise a crash could bring the removed batches back below
        # a recovery point that no longer covers them. Truncation is rare (followers, recovery).
        active.flush()
        self._after_truncation(active.next_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop every segment and start an empty log at `offset` (Kafka's truncateFullyAndStartAt:
        a follower whose fetch offset is below the leader's log start offset)."""
        with self._flush_lock:
            self._truncate_fully_and_start_at(offset)

    def _truncate_fully_and_start_at(self, offset: int) -> None:
        for segment in self.segments:
            segment.delete()
        self.segments, self._base_offsets = [], []
        self._add_segment(LogSegment.create(self.fs, self.dir, offset, self.config))
        self.log_start_offset = offset
        self.leader_epoch_cache.clear()
        self._after_truncation(offset)

    def _after_truncation(self, log_end_offset: int) -> None:
        self.log_end_offset = log_end_offset
        self.high_watermark = min(self.high_watermark, log_end_offset)
        self.recovery_point = min(self.recovery_point, log_end_offset)
        self.log_start_offset = min(self.log_start_offset, log_end_offset)
        self.leader_epoch_cache.truncate_from_end(log_end_offset)
        self._position_cache = None
        self._unreplicated_txns = [t for t in self._unreplicated_txns if t[1] < log_end_offset]
        replay_from = self.producer_state.truncate_and_reload(log_end_offset)
        self.replay_producer_state(replay_from)

    def replay_producer_state(self, from_offset: int) -> None:
        """Rebuild producer state from batch headers at/after `from_offset` (no record parsing,
        except the one record of each control batch)."""
        self.replay_batches(self.producer_state, from_offset, self.log_end_offset)

    def replay_batches(self, state: ProducerStateManager, from_offset: int, end_offset: int, *,
                       index_from_offset: int | None = None) -> None:
        """Replay the batches in [from_offset, end_offset) into `state`; with `index_from_offset`,
        aborted transactions whose marker is at or above it are added to their segment's
        .txnindex (rebuilding it: the caller reset those indexes)."""
        if from_offset >= end_offset:
            return
        for segment in self.segments[self._segment_index_for(from_offset):]:
            if segment.base_offset >= end_offset:
                return
            found = segment.translate_offset(from_offset)
            if found is None:
                continue
            for position, header in segment.iter_batch_headers(found[0]):
                if header.base_offset >= end_offset:
                    return
                if header.base_offset < from_offset:
                    continue
                marker = self._read_marker(segment, position, header) if header.is_control else None
                completed = state.replay(header, marker)
                if completed is not None and index_from_offset is not None and completed.last_offset >= index_from_offset:
                    self._on_txn_completed(segment, completed, state)

    # -- durability ----------------------------------------------------------------------------
    def flush(self, up_to_offset: int | None = None) -> None:
        """fsync every segment holding offsets in [recovery_point, target) and advance the recovery
        point to target (the log end offset when the call starts, or `up_to_offset` if lower).

        Blocking; safe to run in a worker thread while the loop thread appends (see class docs).
        """
        with self._flush_lock:
            if self.closed:
                return
            target = self.log_end_offset if up_to_offset is None else min(up_to_offset, self.log_end_offset)
            if target <= self.recovery_point:
                return
            messages_appended = self._messages_appended  # captured before the fsyncs
            # The epochs of the offsets about to fall below the recovery point, durable first.
            self.leader_epoch_cache.flush()
            segments = list(self.segments)
            bases = [s.base_offset for s in segments] + [2**63]
            new_segment = False
            for i, segment in enumerate(segments):
                if segment.base_offset < target and bases[i + 1] > self.recovery_point:
                    segment.flush()
                    new_segment |= segment.base_offset >= self.recovery_point
            # As Kafka's LocalLog.flush: a segment created since the last flush is only durable
            # once the directory naming it is; a new log's directory once the data dir names it.
            if new_segment:
                self.fs.fsync_dir(self.dir)
            if not self._parent_dir_synced:
                self.fs.fsync_dir(os.path.dirname(self.dir) or ".")
                self._parent_dir_synced = True
            self.recovery_point = max(self.recovery_point, target)
            self._messages_flushed = max(self._messages_flushed, messages_appended)

    def close(self) -> None:
        """Seal the active segment's time index, snapshot producer state at the end, close files.

        Does not fsync the .log (LogManager.close flushes first for a clean shutdown).
        """
        with self._flush_lock:
            if self.closed:
                return
            active = self.active_segment
            active.on_become_inactive()
            active.offset_index.flush()
            active.time_index.flush()
            # Not durable (a lost or torn snapshot fails its CRC at load and the batches are
            # replayed from an older one), and skipped when one at the log end already exists:
            # a clean stop of many partitions pays no fsync per partition for it.
            if self.log_end_offset not in self.producer_state.snapshot_offsets():
                self.producer_state.take_snapshot(self.log_end_offset, durable=False)
            for segment in self.segments:
                segment.close()
            self._delete_expired_files(0, force=True)
            self.closed = True

    def __repr__(self) -> str:
        return f"Log({self.topic}-{self.partition}, start={self.log_start_offset}, end={self.log_end_offset})"
