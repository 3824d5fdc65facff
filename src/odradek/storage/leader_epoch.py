"""LeaderEpochFileCache: which leader epoch started at which offset, for one partition.

Backed by `<partition dir>/leader-epoch-checkpoint` (see checkpoints.py), rewritten atomically on
every change (changes are rare: once per leadership change or truncation).

Durability (Kafka's KAFKA-15046): a new epoch recorded on the append path is written without
fsync and marked dirty; `flush()` (called by Log.flush before it moves the recovery point) makes
it durable. So every offset below the recovery point has its epoch on disk, and above it the
log loader re-learns epochs from the recovered batches. Truncations write durably at once.

Invariants: epochs and start offsets both strictly increase along the list.
Owned by the partition's Log; called on the event loop, `flush` also from the flush thread
(file writes are serialised by a lock).
"""

from __future__ import annotations

import bisect
import logging
import threading

from odradek.storage.checkpoints import LeaderEpochCheckpointFile
from odradek.storage.fs import FileSystem

log = logging.getLogger(__name__)

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class LeaderEpochFileCache:
    def __init__(self, fs: FileSystem, path: str) -> None:
        self._file = LeaderEpochCheckpointFile(fs, path)
        self._write_lock = threading.Lock()
        self._dirty = False
        self._epochs: list[int] = []
        self._start_offsets: list[int] = []
        entries = self._file.read()
        for epoch, start_offset in entries:
            if self._epochs and (epoch <= self._epochs[-1] or start_offset < self._start_offsets[-1]):
                log.warning("%s: entries out of order; ignoring the file", self._file.path)
                self._epochs, self._start_offsets = [], []
                break
            self._epochs.append(epoch)
            self._start_offsets.append(start_offset)

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._start_offsets))

    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset` (no-op for the current epoch)."""
        if epoch < 0 or (self._epochs and epoch <= self._epochs[-1]):
            if self._epochs and epoch < self._epochs[-1]:
                log.warning("%s: ignoring epoch %d older than latest %d", self._file.path, epoch, self._epochs[-1])
            return
        if self._start_offsets and start_offset < self._start_offsets[-1]:
            # Kafka removes entries that the new epoch overrides.
            self.truncate_from_end(start_offset, flush=False)
        self._epochs.append(epoch)
        self._start_offsets.append(start_offset)
        self._flush(durable=False)

    def flush(self) -> None:
        """Make a change written without fsync durable (no-op when nothing is pending)."""
        if self._dirty:
            self._flush()

    def end_offset_for_epoch(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch answer: (largest epoch <= requested, its end offset).

        The end offset is the start offset of the first epoch above `requested_epoch`, or the log
        end offset for the latest epoch; (-1, -1) if `requested_epoch` precedes every epoch or
        is above the latest.
        """
        if requested_epoch == UNDEFINED_EPOCH or not self._epochs:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == self._epochs[-1]:
            return requested_epoch, log_end_offset
        if requested_epoch > self._epochs[-1]:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        higher = bisect.bisect_right(self._epochs, requested_epoch)  # first epoch > requested
        if higher == 0:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        return self._epochs[higher - 1], self._start_offsets[higher]

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch of the leader that wrote `offset` (-1 if unknown)."""
        i = bisect.bisect_right(self._start_offsets, offset) - 1
        return self._epochs[i] if i >= 0 else UNDEFINED_EPOCH

    def truncate_from_end(self, end_offset: int, *, flush: bool = True) -> None:
        """Remove epochs starting at or after `end_offset` (the log was truncated there)."""
        keep = bisect.bisect_left(self._start_offsets, end_offset)
        if keep < len(self._epochs):
            del self._epochs[keep:]
            del self._start_offsets[keep:]
            if flush:
                self._flush()

    def truncate_from_start(self, start_offset: int) -> None:
        """Drop epochs wholly before `start_offset`; the epoch covering it now starts there."""
        i = bisect.bisect_right(self._start_offsets, start_offset) - 1
        if i < 0 or (i == 0 and self._start_offsets[0] == start_offset):
            return
        del self._epochs[:i]
        del self._start_offsets[:i]
        self._start_offsets[0] = start_offset
        self._flush()

    def clear(self) -> None:
        self._epochs, self._start_offsets = [], []
        self._flush()

    def _flush(self, *, durable: bool = True) -> None:
        with self._write_lock:
            self._dirty = not durable
            self._file.write(self.entries, durable=durable)
