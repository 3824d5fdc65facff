"""Loading a partition's log at start-up, and recovery after an unclean shutdown (Kafka's LogLoader).

Steps, in order:
1. Leftovers of interrupted operations: `*.tmp` (checkpoint/snapshot writes), `*.cleaned` and
   `*.deleted` files are removed; a `<segment>.log.swap` (a finished compaction whose rename was
   interrupted) is renamed into place with its `.txnindex.swap` (the cleaned aborted-transaction
   index, renamed to .swap before the .log was) and its offset/time indexes dropped for a rebuild;
   any other `.swap` is removed. Index files without their `.log` are removed.
2. Segments, from the `<offset:020d>.log` names. None at all: an empty segment at the log start.
3. Clean shutdown: trust everything. Segments stay unopened (no I/O); the last one reads its
   indexes and the batches after its last offset-index entry to learn the log end offset.
   Work is independent of the data size.
   Unclean shutdown: every segment from the one holding the recovery point on is validated batch
   by batch (length, magic, CRC-32C, increasing offsets); the first invalid batch and everything
   after it in the segment are truncated, later segments deleted, indexes rebuilt from the
   valid batches. Producer state is loaded at the first recovered segment's base (snapshot plus
   replay) and carried through the recovered batches, which rebuilds each recovered segment's
   .txnindex (Kafka's LogSegment.recover with the ProducerStateManager). The recovered segments are then fsynced, so the recovery point becomes the log
   end offset. Earlier segments' indexes are checked when first used and rebuilt if corrupt.
4. Offsets: log start = max(checkpointed, first segment base); if it is past the log end, the log
   is emptied and restarted there (Kafka). High watermark clamped into [log start, log end].
5. Leader epoch cache truncated to the log; producer state from the latest snapshot at or below
   the log end offset (newer snapshots deleted), then batch headers after it replayed (and the one
   record of each control batch: commit/abort markers end transactions).
   A .txnindex of a segment that was not recovered is trusted; one failing its sanity check is
   rebuilt from the log when first used (Log._loaded_txn_index); a missing one is empty (Kafka
   creates the file with the first aborted transaction).

Called by Log.open only.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from odradek.protocol import records
from odradek.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
    segment_file_name,
)
from odradek.storage.txn_index import TXN_INDEX_SUFFIX

if TYPE_CHECKING:
    from odradek.storage.log import Log

log = logging.getLogger(__name__)

SWAP_SUFFIX = ".swap"
CLEANED_SUFFIX = ".cleaned"
DELETED_SUFFIX = ".deleted"
TMP_SUFFIX = ".tmp"


def _base_offset_of(name: str, suffix: str) -> int | None:
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    return int(stem) if len(stem) == 20 and stem.isdigit() else None


def _remove_leftovers(the_log: Log) -> list[str]:
    """Clean up after interrupted operations; returns the directory's names afterwards."""
    fs, dir = the_log.fs, the_log.dir
    listed = fs.listdir(dir)
    changed = False
    for name in listed:
        path = os.path.join(dir, name)
        if name.endswith((TMP_SUFFIX, CLEANED_SUFFIX, DELETED_SUFFIX)):
            log.info("removing leftover %s", path)
            fs.unlink(path)
            changed = True
        elif name.endswith(SWAP_SUFFIX):
            real = name[: -len(SWAP_SUFFIX)]
            base_offset = _base_offset_of(real, LOG_SUFFIX)
            if base_offset is not None:
                log.info("completing interrupted swap of %s", path)
                txn_swap = segment_file_name(base_offset, TXN_INDEX_SUFFIX) + SWAP_SUFFIX
                if txn_swap in listed:
                    fs.rename(os.path.join(dir, txn_swap), os.path.join(dir, txn_swap[: -len(SWAP_SUFFIX)]))
                fs.rename(path, os.path.join(dir, real))
                fs.unlink(os.path.join(dir, segment_file_name(base_offset, INDEX_SUFFIX)))
                fs.unlink(os.path.join(dir, segment_file_name(base_offset, TIME_INDEX_SUFFIX)))
            elif _base_offset_of(real, TXN_INDEX_SUFFIX) is None or \
                    real[: -len(TXN_INDEX_SUFFIX)] + LOG_SUFFIX + SWAP_SUFFIX not in listed:
                fs.unlink(path)  # (a .txnindex.swap beside its .log.swap moves in with it, above)
            changed = True
    names = set(fs.listdir(dir)) if changed else set(listed)
    for name in list(names):
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
            base_offset = _base_offset_of(name, suffix)
            if base_offset is not None and segment_file_name(base_offset, LOG_SUFFIX) not in names:
                fs.unlink(os.path.join(dir, name))
                names.discard(name)
    return sorted(names)


def load_log(the_log: Log, *, recovery_point: int, log_start_offset: int, high_watermark: int,
             clean_shutdown: bool, now_ms: int) -> None:
    fs, dir, config = the_log.fs, the_log.dir, the_log.config
    names: list[str] | None = _remove_leftovers(the_log)  # the only directory listing on the clean path
    base_offsets = sorted(b for b in (_base_offset_of(n, LOG_SUFFIX) for n in names) if b is not None)
    if not base_offsets:
        start = max(log_start_offset, 0)
        the_log._add_segment(LogSegment.create(fs, dir, start, config))
        log_end_offset = start
    else:
        for base_offset in base_offsets:
            the_log._add_segment(LogSegment(fs, dir, base_offset, config))
        if clean_shutdown:
            the_log.active_segment.open_as_active()
        else:
            _recover(the_log, recovery_point, log_start_offset)
            names = None  # recovery deleted snapshots above the first recovered segment: list again
        log_end_offset = the_log.active_segment.next_offset
        assert log_end_offset is not None
    the_log.log_end_offset = log_end_offset
    the_log.recovery_point = log_end_offset  # clean: everything was flushed; unclean: recovered + fsynced
    for segment in the_log.segments:
        segment.rolling_base_ms = now_ms if segment.base_offset != log_end_offset else None

    the_log.log_start_offset = max(log_start_offset, the_log.segments[0].base_offset)
    if the_log.log_start_offset > log_end_offset:
        log.warning("%s: log start offset %d is past the log end %d; emptying the log", dir,
                    the_log.log_start_offset, log_end_offset)
        start = the_log.log_start_offset
        the_log.log_end_offset = log_end_offset
        the_log._truncate_fully_and_start_at(start)
        the_log.recovery_point = start
    the_log.high_watermark = min(max(high_watermark, the_log.log_start_offset), the_log.log_end_offset)

    cache = the_log.leader_epoch_cache
    cache.truncate_from_end(the_log.log_end_offset)
    cache.truncate_from_start(the_log.log_start_offset)

    replay_from = the_log.producer_state.truncate_and_reload(the_log.log_end_offset, names=names)
    the_log.replay_producer_state(max(replay_from, the_log.log_start_offset))


def _recover(the_log: Log, recovery_point: int, log_start_offset: int) -> None:
    segments = the_log.segments
    first = the_log._segment_index_for(recovery_point)
    expected_next_offset = segments[first].base_offset
    compacted = the_log.allow_offset_gaps
    recovered: list[LogSegment] = []
    # Producer state as of the first recovered segment, carried through the recovered batches so
    # that each recovered segment's .txnindex is rebuilt (the final state is reloaded afterwards).
    state = the_log.producer_state
    replay_from = state.truncate_and_reload(expected_next_offset)
    the_log.replay_batches(state, max(replay_from, log_start_offset, segments[0].base_offset), expected_next_offset)

    epochs = the_log.leader_epoch_cache

    def on_batch(segment: LogSegment, header: records.BatchHeader, batch: memoryview) -> None:
        # Epochs of recovered batches (their checkpoint entries may not have been durable).
        if header.partition_leader_epoch > epochs.latest_epoch:
            epochs.assign(header.partition_leader_epoch, header.base_offset)
        marker = None
        if header.is_control:
            try:
                marker = records.parse_end_txn_marker(batch)
            except ValueError:
                marker = None
        completed = state.replay(header, marker)
        if completed is not None:
            the_log._on_txn_completed(segment, completed, state)

    for i in range(first, len(segments)):
        segment = segments[i]
        segment.txn_index.reset()
        result = segment.recover(expected_next_offset, lambda h, b, s=segment: on_batch(s, h, b), allow_gaps=compacted)
        recovered.append(segment)
        end_offset = result.next_offset if result.next_offset is not None else segment.base_offset
        # A cut tail, or a segment that ends before the next one starts (its unsynced batches were
        # lost while a later segment's file survived): everything after it is unreachable.
        # A compacted log may end a segment below the next one's base (the cleaner dropped its
        # last records), so there only a next segment starting *below* the end is a break.
        gap = i + 1 < len(segments) and (segments[i + 1].base_offset < end_offset if compacted
                                          else segments[i + 1].base_offset != end_offset)
        if result.truncated_bytes or gap:
            for later in segments[i + 1:]:
                log.warning("%s: deleting %s after a truncated segment", the_log.dir, later)
                later.delete()
            del segments[i + 1:]
            del the_log._base_offsets[i + 1:]
            break
        expected_next_offset = end_offset
    # The last segment was recovered (first <= last), so its next offset is known.
    for segment in recovered:
        segment.flush()
