"""Producer state of one partition: producer id -> epoch, its last batches and its open transaction.

Kafka's rules (ProducerStateManager / ProducerAppendInfo, 2.5+), applied before an append:
- a batch with a lower producer epoch than known: INVALID_PRODUCER_EPOCH;
- a new, higher epoch must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
- an unknown producer id must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER, unless the
  log start offset is above 0 (retention or DeleteRecords may have removed the producer's batches
  and with them its state; Kafka then accepts any sequence);
- a batch equal (first and last sequence) to one of the producer's last 5 batches is a duplicate:
  answered with the original offsets, not appended;
- otherwise the first sequence must follow the last one (wrapping from 2^31-1 to 0), else
  OUT_OF_ORDER_SEQUENCE_NUMBER.

Snapshot file `<offset:020d>.snapshot` (Kafka's format; the state of every batch below `offset`),
big-endian:

    version                   int16   1
    crc                       uint32  CRC-32C of everything after this field
    producer_entries          int32 count, then per entry (46 bytes):
      producer_id             int64
      epoch                   int16
      last_sequence           int32
      last_offset             int64
      offset_delta            int32   last_offset - first offset of the producer's last batch
      timestamp               int64   max timestamp of that batch
      coordinator_epoch       int32   transactions (-1 until they land)
      current_txn_first_offset int64  transactions (-1: none open)

Transactions (Kafka's ProducerAppendInfo.appendDataBatch / appendEndTxnMarker):
- a transactional data batch (attributes bit 4) from a producer with no open transaction opens
  one at the batch's first offset (`current_txn_first_offset`); later ones continue it;
- a non-transactional batch from a producer with an open transaction: INVALID_TXN_STATE;
- an end-transaction marker (a control batch written by `Log.append_control_marker`) with an older
  producer epoch than known: INVALID_PRODUCER_EPOCH; with an older coordinator epoch than the
  producer's last marker: TRANSACTION_COORDINATOR_FENCED; otherwise it closes the transaction
  (a marker without an open transaction closes an empty one starting at the marker) and becomes
  the producer's coordinator epoch. `complete_txn` returns the CompletedTxn for the .txnindex.
The open transactions (`ongoing_txns`: producer id -> first offset) give the first unstable
offset, and with it the log's last stable offset.

As in Kafka, a snapshot keeps only each producer's last batch, so after a restart only that one
is recognised as a duplicate; it keeps the coordinator epoch and the open transaction's first
offset of every producer, so open transactions survive a restart.

Owned by the partition's Log; called on the event loop.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field

import crc32c as _crc32c

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import NO_SEQUENCE, BatchHeader, EndTransactionMarker
from odradek.storage.fs import FileSystem

log = logging.getLogger(__name__)

NUM_BATCHES_TO_RETAIN = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
INT32_MAX = 2**31 - 1
_SNAPSHOT_HEADER = struct.Struct(">hI")
_COUNT = struct.Struct(">i")
_ENTRY = struct.Struct(">qhiqiqiq")
# A snapshot larger than this is refused as corrupt (about 45 million producers).
MAX_SNAPSHOT_BYTES = 2**31


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (last_seq == INT32_MAX and next_seq == 0)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp_ms: int


@dataclass(slots=True)
class ProducerStateEntry:
    """One producer: its epoch and its last (up to 5) batches, oldest first."""

    producer_id: int
    producer_epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def find_duplicate(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction ended by a marker at `last_offset`; `first_offset` is its first data offset
    (the marker's own offset for an empty transaction)."""

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


@dataclass(frozen=True, slots=True)
class ProducerCheck:
    """The verdict on an incoming batch: accept (error none, no duplicate), duplicate, or refuse."""

    error: ErrorCode
    message: str | None = None
    duplicate: BatchMetadata | None = None


ACCEPT = ProducerCheck(ErrorCode.none)


class ProducerStateManager:
    """Producer id -> ProducerStateEntry for one partition, and the open transactions.

    Invariant: `ongoing_txns[pid] == producers[pid].current_txn_first_offset` for exactly the
    producers whose `current_txn_first_offset` is not -1.
    """

    def __init__(self, fs: FileSystem, dir: str) -> None:
        self.fs = fs
        self.dir = dir
        self.producers: dict[int, ProducerStateEntry] = {}
        self.ongoing_txns: dict[int, int] = {}  # producer id -> first offset of its open transaction

    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest open transaction, or None when none is open."""
        return min(self.ongoing_txns.values()) if self.ongoing_txns else None

    def _set_producers(self, producers: dict[int, ProducerStateEntry]) -> None:
        self.producers = producers
        self.ongoing_txns = {pid: e.current_txn_first_offset for pid, e in producers.items()
                             if e.current_txn_first_offset >= 0}

    # -- the append path -------------------------------------------------------------------
    def check(self, header: BatchHeader, *, log_start_offset: int) -> ProducerCheck:
        """Apply Kafka's sequence and epoch rules to a not yet appended idempotent batch."""
        if not header.has_producer_id:
            return ACCEPT
        entry = self.producers.get(header.producer_id)
        if (entry is not None and not header.is_transactional and entry.current_txn_first_offset >= 0
                and header.producer_epoch >= entry.producer_epoch):
            return ProducerCheck(ErrorCode.invalid_txn_state,
                                 f"producer {header.producer_id} has an open transaction; expected a "
                                 "transactional batch")
        if header.base_sequence == NO_SEQUENCE:
            # No sequence (a coordinator's write on a producer's behalf, e.g. transactional
            # offsets): no sequence checks, but an older epoch is still fenced, as in Kafka.
            if entry is not None and header.producer_epoch < entry.producer_epoch:
                return ProducerCheck(ErrorCode.invalid_producer_epoch,
                                     f"producer {header.producer_id} epoch {header.producer_epoch} is older "
                                     f"than current {entry.producer_epoch}")
            return ACCEPT
        pid, epoch = header.producer_id, header.producer_epoch
        first_seq, last_seq = header.base_sequence, header.last_sequence
        if entry is None:
            # Kafka (since KIP-360) accepts any first sequence from a producer it has no state
            # for: its state may have been removed by retention, DeleteRecords or expiry.
            return ACCEPT
        if epoch < entry.producer_epoch:
            return ProducerCheck(ErrorCode.invalid_producer_epoch,
                                 f"producer {pid} epoch {epoch} is older than current {entry.producer_epoch}")
        if epoch > entry.producer_epoch:
            if first_seq != 0:
                return ProducerCheck(ErrorCode.out_of_order_sequence_number,
                                     f"producer {pid} new epoch {epoch} starts at sequence {first_seq}, not 0")
            return ACCEPT
        duplicate = entry.find_duplicate(first_seq, last_seq)
        if duplicate is not None:
            return ProducerCheck(ErrorCode.none, None, duplicate)
        if entry.batches and not _in_sequence(entry.last_seq, first_seq):
            return ProducerCheck(ErrorCode.out_of_order_sequence_number,
                                 f"producer {pid} epoch {epoch}: sequence {first_seq} does not follow "
                                 f"{entry.last_seq}")
        if not entry.batches and first_seq != 0 and log_start_offset == 0:
            return ProducerCheck(ErrorCode.out_of_order_sequence_number,
                                 f"producer {pid}: first sequence {first_seq} is not 0")
        return ACCEPT

    def update(self, header: BatchHeader, first_offset: int, last_offset: int, timestamp_ms: int) -> None:
        """Record an appended (or replayed) batch. `header` gives producer id, epoch, sequences."""
        if not header.has_producer_id or header.is_control:
            return
        entry = self._entry_for_epoch(header.producer_id, header.producer_epoch)
        if entry is None:
            return  # replaying an old, fenced batch: state already newer
        if header.base_sequence != NO_SEQUENCE:
            entry.batches.append(BatchMetadata(header.base_sequence, header.last_sequence,
                                               first_offset, last_offset, timestamp_ms))
        if header.is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = first_offset
            self.ongoing_txns[entry.producer_id] = first_offset

    def _entry_for_epoch(self, pid: int, epoch: int) -> ProducerStateEntry | None:
        """The producer's entry moved to `epoch` (batches dropped on an epoch change, as Kafka's
        maybeUpdateProducerEpoch; coordinator epoch and open transaction kept); None if older."""
        entry = self.producers.get(pid)
        if entry is None:
            entry = ProducerStateEntry(pid, epoch)
            self.producers[pid] = entry
        elif epoch != entry.producer_epoch:
            if epoch < entry.producer_epoch:
                return None
            entry.producer_epoch = epoch
            entry.batches.clear()
        return entry

    # -- end-transaction markers --------------------------------------------------------------
    def check_end_txn_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> ProducerCheck:
        """Kafka's fencing rules for a marker about to be written (see the module docs)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return ACCEPT
        if producer_epoch < entry.producer_epoch:
            return ProducerCheck(ErrorCode.invalid_producer_epoch,
                                 f"marker for producer {producer_id} has epoch {producer_epoch}, older than "
                                 f"current {entry.producer_epoch}")
        if coordinator_epoch < entry.coordinator_epoch:
            return ProducerCheck(ErrorCode.transaction_coordinator_fenced,
                                 f"marker for producer {producer_id} has coordinator epoch {coordinator_epoch}, "
                                 f"older than {entry.coordinator_epoch}")
        return ACCEPT

    def complete_txn(self, producer_id: int, producer_epoch: int, marker: EndTransactionMarker,
                     marker_offset: int) -> CompletedTxn | None:
        """Apply an appended (or replayed) marker at `marker_offset`; the transaction it ended.

        None when replaying a marker of an epoch older than the state (already superseded)."""
        entry = self._entry_for_epoch(producer_id, producer_epoch)
        if entry is None:
            return None
        first_offset = entry.current_txn_first_offset if entry.current_txn_first_offset >= 0 else marker_offset
        entry.current_txn_first_offset = -1
        entry.coordinator_epoch = marker.coordinator_epoch
        self.ongoing_txns.pop(producer_id, None)
        return CompletedTxn(producer_id, first_offset, marker_offset, not marker.commit)

    def replay(self, header: BatchHeader, marker: EndTransactionMarker | None = None) -> CompletedTxn | None:
        """Rebuild state from a batch already in the log (recovery: no checks). A control batch
        needs its decoded `marker`; returns the transaction a marker completed."""
        if header.is_control:
            if marker is None or not header.has_producer_id:
                return None
            return self.complete_txn(header.producer_id, header.producer_epoch, marker, header.base_offset)
        self.update(header, header.base_offset, header.last_offset, header.max_timestamp)
        return None

    # -- snapshots --------------------------------------------------------------------------
    def snapshot_offsets(self, names: list[str] | None = None) -> list[int]:
        """Offsets of the snapshot files, ascending (from `names` when the caller just listed the dir)."""
        offsets = []
        for name in self.fs.listdir(self.dir) if names is None else names:
            if name.endswith(SNAPSHOT_SUFFIX):
                stem = name[: -len(SNAPSHOT_SUFFIX)]
                if len(stem) == 20 and stem.isdigit():
                    offsets.append(int(stem))
        return sorted(offsets)

    def take_snapshot(self, offset: int, *, durable: bool = True) -> None:
        """Write the state of every batch below `offset` atomically to `<offset>.snapshot`.

        `durable=False` (at segment roll, on the append path) skips the fsyncs: a snapshot lost or
        torn by a crash fails its CRC at load, is deleted, and an older one plus a longer replay
        of batch headers gives the same state.
        """
        body = bytearray(_COUNT.pack(len(self.producers)))
        for entry in self.producers.values():
            if entry.batches:
                last = entry.batches[-1]
                last_seq, last_offset = last.last_seq, last.last_offset
                offset_delta, timestamp = last.last_offset - last.first_offset, last.timestamp_ms
            else:
                last_seq, last_offset, offset_delta, timestamp = NO_SEQUENCE, -1, 0, -1
            body += _ENTRY.pack(entry.producer_id, entry.producer_epoch, last_seq, last_offset, offset_delta,
                                timestamp, entry.coordinator_epoch, entry.current_txn_first_offset)
        data = _SNAPSHOT_HEADER.pack(SNAPSHOT_VERSION, _crc32c.crc32c(bytes(body))) + bytes(body)
        self.fs.write_file_atomic(os.path.join(self.dir, snapshot_file_name(offset)), data, durable=durable)

    def _read_snapshot(self, offset: int) -> dict[int, ProducerStateEntry]:
        path = os.path.join(self.dir, snapshot_file_name(offset))
        data = self.fs.read_file(path)
        if len(data) < _SNAPSHOT_HEADER.size + _COUNT.size or len(data) > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"{path}: bad size {len(data)}")
        version, crc = _SNAPSHOT_HEADER.unpack_from(data, 0)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: unknown version {version}")
        body = data[_SNAPSHOT_HEADER.size:]
        if _crc32c.crc32c(body) != crc:
            raise ValueError(f"{path}: CRC mismatch")
        (count,) = _COUNT.unpack_from(body, 0)
        if count < 0 or _COUNT.size + count * _ENTRY.size != len(body):
            raise ValueError(f"{path}: entry count {count} disagrees with size {len(body)}")
        producers = {}
        for pid, epoch, last_seq, last_offset, offset_delta, timestamp, coord_epoch, txn_first in \
                _ENTRY.iter_unpack(body[_COUNT.size:]):
            entry = ProducerStateEntry(pid, epoch, coordinator_epoch=coord_epoch, current_txn_first_offset=txn_first)
            if last_seq != NO_SEQUENCE:
                first_seq = (last_seq - offset_delta) % (INT32_MAX + 1)
                entry.batches.append(BatchMetadata(first_seq, last_seq, last_offset - offset_delta, last_offset,
                                                   timestamp))
            producers[pid] = entry
        return producers

    def load(self, max_offset: int, *, names: list[str] | None = None) -> int:
        """Load the latest readable snapshot at or below `max_offset`; returns its offset (0 if none).

        Corrupt snapshots are deleted with a warning and an older one is tried. The caller replays
        the log's batch headers from the returned offset.
        """
        self._set_producers({})
        for offset in reversed(self.snapshot_offsets(names)):
            if offset > max_offset:
                continue
            try:
                self._set_producers(self._read_snapshot(offset))
                return offset
            except (ValueError, struct.error) as exc:
                log.warning("deleting unreadable producer snapshot: %s", exc)
                self.fs.unlink(os.path.join(self.dir, snapshot_file_name(offset)))
        return 0

    def delete_snapshots_above(self, offset: int, *, names: list[str] | None = None) -> None:
        """Remove snapshots taken beyond `offset` (the log was truncated there)."""
        for snapshot_offset in self.snapshot_offsets(names):
            if snapshot_offset > offset:
                self.fs.unlink(os.path.join(self.dir, snapshot_file_name(snapshot_offset)))

    def truncate_and_reload(self, offset: int, *, names: list[str] | None = None) -> int:
        """After truncating the log to `offset`: drop newer snapshots, reload; returns replay start.

        `names`: the directory listing, if the caller has a current one (saves two listdirs).
        """
        self.delete_snapshots_above(offset, names=names)
        return self.load(offset, names=names)
