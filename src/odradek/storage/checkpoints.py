"""Kafka's checkpoint files: small text files rewritten atomically.

Layout (text, '\\n'-terminated lines):

    0                       version (always 0)
    <n>                     number of entries
    <entry>                 n lines, fields separated by one space

Offset checkpoints (`recovery-point-offset-checkpoint`, `log-start-offset-checkpoint`,
`replication-offset-checkpoint`, `cleaner-offset-checkpoint`) hold `topic partition offset` entries; the
`leader-epoch-checkpoint` of a partition holds `epoch start_offset` entries.

Writes go through `FileSystem.write_file_atomic` (tmp, fsync, rename, fsync dir). Reads are
tolerant: a missing file is empty, and a corrupt one is treated as absent with a warning (the
caller then falls back to safe defaults: recovery from the start, log start at the first segment).
Called by LogManager (offset checkpoints) and LeaderEpochFileCache; on whichever thread calls them.
"""

from __future__ import annotations

import logging

from odradek.storage.fs import FileSystem

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 0
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"  # per partition: first uncleaned offset
MAX_CHECKPOINT_ENTRIES = 10_000_000  # bound on the entry count read from disk


class CorruptCheckpointError(ValueError):
    pass


def _encode(lines: list[str]) -> bytes:
    return ("\n".join([str(CHECKPOINT_VERSION), str(len(lines)), *lines]) + "\n").encode()


def _decode(path: str, data: bytes, fields: int) -> list[list[str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{path}: not UTF-8") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0].strip() != str(CHECKPOINT_VERSION):
        raise CorruptCheckpointError(f"{path}: unknown version or missing header")
    try:
        count = int(lines[1])
    except ValueError as exc:
        raise CorruptCheckpointError(f"{path}: bad entry count {lines[1]!r}") from exc
    if count < 0 or count > MAX_CHECKPOINT_ENTRIES or count != len(lines) - 2:
        raise CorruptCheckpointError(f"{path}: expected {count} entries, found {len(lines) - 2}")
    entries = []
    for line in lines[2:]:
        parts = line.split(" ")
        if len(parts) != fields:
            raise CorruptCheckpointError(f"{path}: malformed line {line!r}")
        entries.append(parts)
    return entries


class OffsetCheckpointFile:
    """A data dir's per-partition offsets: lines `topic partition offset`."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self.fs = fs
        self.path = path

    def write(self, offsets: dict[tuple[str, int], int]) -> None:
        lines = [f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(offsets.items())]
        self.fs.write_file_atomic(self.path, _encode(lines))

    def read(self) -> dict[tuple[str, int], int]:
        """The entries; empty if the file is absent or corrupt (with a warning)."""
        if not self.fs.exists(self.path):
            return {}
        try:
            entries = _decode(self.path, self.fs.read_file(self.path), 3)
            return {(topic, int(partition)): int(offset) for topic, partition, offset in entries}
        except (CorruptCheckpointError, ValueError) as exc:
            log.warning("ignoring corrupt checkpoint %s: %s", self.path, exc)
            return {}


class LeaderEpochCheckpointFile:
    """A partition's `leader-epoch-checkpoint`: lines `epoch start_offset`, epochs increasing."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self.fs = fs
        self.path = path

    def write(self, entries: list[tuple[int, int]], *, durable: bool = True) -> None:
        self.fs.write_file_atomic(self.path, _encode([f"{epoch} {offset}" for epoch, offset in entries]),
                                  durable=durable)

    def read(self) -> list[tuple[int, int]]:
        if not self.fs.exists(self.path):
            return []
        try:
            entries = [(int(e), int(o)) for e, o in _decode(self.path, self.fs.read_file(self.path), 2)]
        except (CorruptCheckpointError, ValueError) as exc:
            log.warning("ignoring corrupt checkpoint %s: %s", self.path, exc)
            return []
        return entries
