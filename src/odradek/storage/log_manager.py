"""LogManager: the data directories, their checkpoints, and every partition's Log in them.

A data dir holds (Kafka's layout):
    meta.properties                       written by others; ignored here
    .lock                                 exclusive flock while a broker uses the dir
    .kafka_cleanshutdown                  present only after a clean shutdown
    recovery-point-offset-checkpoint      per partition: offset below which data is fsynced
    log-start-offset-checkpoint           per partition: log start offset
    replication-offset-checkpoint         per partition: high watermark
    cleaner-offset-checkpoint             per compacted partition: offset the cleaner has cleaned to
    <topic>-<partition>/                  one Log each (see log.py)
    <topic>-<partition>.<uuidhex>-delete/ a deleted partition, being removed
    __cluster_metadata-0/                 the metadata log (owned by odradek.metadata; skipped)

`open()` locks every dir, reads the checkpoints and the clean-shutdown marker, deletes the
marker (so a crash from here on is noticed at the next start), removes leftover `-delete` dirs
and opens every partition's Log (recovering it after an unclean shutdown). Logs are opened with
the default LogConfig until the broker asks for them with their topic's config in
`get_or_create_log` (which then applies it). Opening after a clean shutdown does no work
proportional to the data (see log_loader.py).

Segment and index descriptors are opened on demand and bounded by the process-wide descriptor
cache (fd_cache.py, `max_open_files`), so open fds do not grow with the number of partitions.

Owned by the broker core; called on the event loop, except `flush_logs_due`, `checkpoint` and
`close`, which the broker may run in its blocking-I/O pool (never concurrently with each other),
and `clean_logs`, which runs in the broker's cleaner thread (see cleaner.py for how it shares a
log with the loop). `cleanup_logs` (retention) runs on the loop.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from odradek.storage.checkpoints import (
    CLEANER_OFFSET_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    OffsetCheckpointFile,
)
from odradek.storage.fd_cache import cache_for
from odradek.storage.fs import FileSystem, RealFileSystem
from odradek.storage.log import DELETE_DIR_SUFFIX, Log, parse_partition_dir
from odradek.storage.log_config import LogConfig

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
METADATA_LOG_DIR = "__cluster_metadata-0"
# A clean shutdown flushes and closes every log: a few fsyncs each (segment, indexes, producer
# snapshot and its directory). One after another that is tens of seconds for 10,000 partitions;
# issued from this many threads at once the filesystem's journal commits them together.
CLOSE_THREADS = 32
# Opening logs at start (Kafka's num.recovery.threads.per.data.dir, which defaults to 1): after an
# unclean shutdown recovery reads and fsyncs every partition's tail, I/O that overlaps well; after
# a clean one the work is mostly Python under the GIL: 4 or 8 threads were no faster than one for
# 10,000 partitions on a loaded 2-core machine (1.9-3.1 s), so one.
RECOVERY_THREADS = 32
OPEN_THREADS = 1


class DataDirLockedError(Exception):
    """Another process holds a data directory's lock."""


class _DataDir:
    """One data dir's checkpoint files and the values read from them at open."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self.path = path
        self.recovery_points = OffsetCheckpointFile(fs, os.path.join(path, RECOVERY_POINT_CHECKPOINT))
        self.log_start_offsets = OffsetCheckpointFile(fs, os.path.join(path, LOG_START_OFFSET_CHECKPOINT))
        self.high_watermarks = OffsetCheckpointFile(fs, os.path.join(path, REPLICATION_OFFSET_CHECKPOINT))
        self.cleaner_offsets_file = OffsetCheckpointFile(fs, os.path.join(path, CLEANER_OFFSET_CHECKPOINT))
        self.cleaner_offsets: dict[tuple[str, int], int] = {}
        # Partitions deleted since this dir's checkpoints were last written: their entries are
        # still in the files (see get_or_create_log).
        self.deleted_since_checkpoint: set[tuple[str, int]] = set()
        self.lock_handle: int | None = None
        self.clean_shutdown = False
        self.log_count = 0


class LogManager:
    def __init__(self, fs: FileSystem, log_dirs: list[str], now_ms: int, *,
                 max_open_files: int | None = None) -> None:
        """`max_open_files`: bound on the segment and index descriptors kept open while unused
        (to be set from our own config key `odradek.log.max.open.files`, see fd_cache.py); None
        keeps the cache's bound (by default a quarter of RLIMIT_NOFILE, at most 4096)."""
        if not log_dirs:
            raise ValueError("at least one log dir is required")
        self.fs = fs
        if max_open_files is not None:
            cache_for(fs).set_max_open_files(max_open_files)
        self.now_ms = now_ms
        self._dirs = [_DataDir(fs, os.path.abspath(d)) for d in log_dirs]
        self._logs: dict[tuple[str, int], Log] = {}
        self._log_dir_of: dict[tuple[str, int], _DataDir] = {}
        self.opened = False
        self._stop_cleaning = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        locked: list[_DataDir] = []
        try:
            for data_dir in self._dirs:
                self.fs.mkdir(data_dir.path)
                try:
                    data_dir.lock_handle = self.fs.lock_exclusive(os.path.join(data_dir.path, LOCK_FILE))
                except BlockingIOError:
                    raise DataDirLockedError(
                        f"data directory {data_dir.path} is in use by another process (its .lock is held)") from None
                locked.append(data_dir)
            for data_dir in self._dirs:
                self._load_dir(data_dir)
        except BaseException:
            for data_dir in locked:
                self.fs.unlock(data_dir.lock_handle)
                data_dir.lock_handle = None
            for the_log in self._logs.values():
                the_log.close()
            self._logs.clear()
            raise
        self.opened = True

    def _load_dir(self, data_dir: _DataDir) -> None:
        marker = os.path.join(data_dir.path, CLEAN_SHUTDOWN_FILE)
        data_dir.clean_shutdown = self.fs.exists(marker)
        recovery_points = data_dir.recovery_points.read()
        log_start_offsets = data_dir.log_start_offsets.read()
        high_watermarks = data_dir.high_watermarks.read()
        data_dir.cleaner_offsets = data_dir.cleaner_offsets_file.read()
        if data_dir.clean_shutdown:
            self.fs.unlink(marker)
            self.fs.fsync_dir(data_dir.path)
        elif any(parse_partition_dir(name) for name in self.fs.listdir(data_dir.path)):
            log.info("%s: no clean shutdown marker; recovering logs from their recovery points", data_dir.path)
        partitions: list[tuple[tuple[str, int], str]] = []
        for name in sorted(self.fs.listdir(data_dir.path)):
            path = os.path.join(data_dir.path, name)
            if name.endswith(DELETE_DIR_SUFFIX):
                log.info("removing deleted partition dir %s", path)
                self.fs.remove_tree(path)
                continue
            if name == METADATA_LOG_DIR:
                continue
            key = parse_partition_dir(name)
            if key is None or not self.fs.is_dir(path):
                continue
            partitions.append((key, path))

        def open_log(key: tuple[str, int], path: str) -> Log:
            with cache_for(self.fs).pinning():
                return Log.open(self.fs, path, LogConfig(), topic_id=None,
                                recovery_point=recovery_points.get(key, 0),
                                log_start_offset=log_start_offsets.get(key, 0),
                                high_watermark=high_watermarks.get(key, 0),
                                clean_shutdown=data_dir.clean_shutdown, now_ms=self.now_ms,
                                allow_offset_gaps=key in data_dir.cleaner_offsets)

        threads = RECOVERY_THREADS if not data_dir.clean_shutdown else OPEN_THREADS
        for key, the_log in zip((k for k, _ in partitions), self._in_threads(open_log, partitions, threads)):
            self._logs[key] = the_log
            self._log_dir_of[key] = data_dir
            data_dir.log_count += 1

    def _in_threads(self, fn, items: list[tuple], threads: int) -> list:
        """[fn(*item) for item in items], from up to `threads` threads on a real filesystem (the
        tests' fake filesystem is not thread-safe: one thread there). Each call must touch only
        its own log's files, inside `cache_for(fs).pinning()`. Every call runs; the first error
        is raised afterwards (and the results of the others are closed by the caller's cleanup
        only if they were stored: a failed open leaves the opened logs to the garbage collector)."""
        if len(items) < 2 or threads < 2 or not isinstance(self.fs, RealFileSystem):
            return [fn(*item) for item in items]
        with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="log-io") as pool:
            futures = [pool.submit(fn, *item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Flush and close every log, write the checkpoints and the clean-shutdown marker, unlock."""
        if not self.opened:
            return
        self._flush_and_close_logs(list(self._logs.values()))
        self.checkpoint()
        for data_dir in self._dirs:
            fd = self.fs.open(os.path.join(data_dir.path, CLEAN_SHUTDOWN_FILE), create=True)
            try:
                self.fs.fsync(fd)
            finally:
                self.fs.close(fd)
            self.fs.fsync_dir(data_dir.path)
            if data_dir.lock_handle is not None:
                self.fs.unlock(data_dir.lock_handle)
                data_dir.lock_handle = None
        self._logs.clear()
        self.opened = False

    def _flush_and_close_logs(self, logs: list[Log]) -> None:
        """Flush and close `logs`, from CLOSE_THREADS threads on a real filesystem (each log is
        closed by one thread, inside a `pinning()` block of the descriptor cache). The first
        error is raised after every log was tried."""
        def flush_and_close(the_log: Log) -> None:
            with cache_for(self.fs).pinning():
                the_log.flush()
                the_log.close()

        self._in_threads(flush_and_close, [(the_log,) for the_log in logs], CLOSE_THREADS)

    # -- logs ----------------------------------------------------------------------------------
    def get_log(self, topic: str, partition: int) -> Log | None:
        return self._logs.get((topic, partition))

    def logs(self) -> list[Log]:
        return list(self._logs.values())

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig, topic_id: uuid.UUID | None) -> Log:
        """The partition's log (applying `config` if it changed), created empty if absent."""
        assert self.opened
        key = (topic, partition)
        the_log = self._logs.get(key)
        if the_log is not None:
            if the_log.config != config:
                the_log.update_config(config)
            if topic_id is not None and the_log.topic_id is None:
                the_log._init_topic_id(topic_id)
            return the_log
        # A partition re-created before the next checkpoint: the files still hold the deleted
        # incarnation's recovery point, log start offset and high watermark, which a restart
        # would apply to the new log. Rewrite them first (rare: Kafka rewrites at every delete).
        for stale_dir in self._dirs:
            if key in stale_dir.deleted_since_checkpoint:
                self._checkpoint_dir(stale_dir)
        data_dir = min(self._dirs, key=lambda d: d.log_count)  # Kafka: the dir with the fewest partitions
        the_log = Log.open(self.fs, os.path.join(data_dir.path, f"{topic}-{partition}"), config, topic_id=topic_id,
                           recovery_point=0, log_start_offset=0, high_watermark=0, clean_shutdown=True,
                           now_ms=self.now_ms)
        self._logs[key] = the_log
        self._log_dir_of[key] = data_dir
        data_dir.log_count += 1
        return the_log

    def delete_log(self, topic: str, partition: int) -> None:
        """Close the log, rename its dir `<topic>-<partition>.<uuidhex>-delete`, then remove it."""
        key = (topic, partition)
        the_log = self._logs.pop(key, None)
        data_dir = self._log_dir_of.pop(key, None)
        if the_log is None or data_dir is None:
            return
        data_dir.log_count -= 1
        data_dir.cleaner_offsets.pop(key, None)
        data_dir.deleted_since_checkpoint.add(key)
        the_log.close()
        deleted = os.path.join(data_dir.path, f"{topic}-{partition}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")
        self.fs.rename(the_log.dir, deleted)
        self.fs.fsync_dir(data_dir.path)
        self.fs.remove_tree(deleted)

    # -- background work -----------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write recovery points, log start offsets and high watermarks of every dir atomically."""
        for data_dir in self._dirs:
            self._checkpoint_dir(data_dir)

    def _checkpoint_dir(self, data_dir: _DataDir) -> None:
        # Copy first: the loop thread may add or delete logs while this runs in the I/O pool.
        deleted = set(data_dir.deleted_since_checkpoint)
        logs = {key: the_log for key, the_log in list(self._logs.items()) if self._log_dir_of.get(key) is data_dir}
        data_dir.recovery_points.write({k: l.recovery_point for k, l in logs.items()})
        data_dir.log_start_offsets.write({k: l.log_start_offset for k, l in logs.items()})
        data_dir.high_watermarks.write({k: l.high_watermark for k, l in logs.items()})
        data_dir.deleted_since_checkpoint -= deleted

    def cleanup_logs(self, now_ms: int) -> int:
        """Retention (log.retention.check.interval.ms): delete old segments of every log and
        remove the files of segments deleted long enough ago. Returns how many segments went;
        the caller then checkpoints (the log start offsets moved). Runs on the event loop."""
        deleted = 0
        for the_log in list(self._logs.values()):
            if the_log.closed:
                continue
            deleted += the_log.delete_old_segments(now_ms)
            the_log.delete_expired_files(now_ms)
        return deleted

    def plan_cleaning(self) -> list:
        """(log, CleaningPlan) for every log with cleanup.policy compact; on the event loop."""
        from odradek.storage.cleaner import plan_cleaning

        plans = []
        for the_log in list(self._logs.values()):
            if the_log.config.compacted:
                plan = plan_cleaning(the_log)
                if plan is not None:
                    plans.append((the_log, plan))
        return plans

    def clean_logs(self, now_ms: int, offset_map_memory_bytes: int, plans: list | None = None) -> int:
        """One cleaner pass over every planned log (`plan_cleaning`, made now when None), in the
        cleaner thread. Returns how many segments were rewritten; an I/O error on one log is
        logged and skipped."""
        from odradek.storage.cleaner import CleanerStopped, clean_log

        rewritten = 0
        for the_log, plan in (self.plan_cleaning() if plans is None else plans):
            if self._stop_cleaning or the_log.closed:
                continue
            try:
                result = clean_log(the_log, now_ms=now_ms, first_dirty_offset=self.cleaner_offset(the_log),
                                   offset_map_memory_bytes=offset_map_memory_bytes,
                                   checkpoint=lambda offset, l=the_log: self.checkpoint_cleaner_offset(l, offset),
                                   should_stop=lambda: self._stop_cleaning, plan=plan)
            except CleanerStopped:
                break
            except (OSError, ValueError) as exc:
                log.error("cleaning %s failed: %s", the_log, exc)
                continue
            if result is not None:
                rewritten += result.segments_rewritten
        return rewritten

    def stop_cleaning(self) -> None:
        """Make a running `clean_logs` stop at its next segment (shutdown)."""
        self._stop_cleaning = True

    def cleaner_offset(self, the_log: Log) -> int:
        """Offset below which the cleaner has compacted `the_log` (0 if never)."""
        data_dir = self._log_dir_of.get((the_log.topic, the_log.partition))
        return 0 if data_dir is None else data_dir.cleaner_offsets.get((the_log.topic, the_log.partition), 0)

    def checkpoint_cleaner_offset(self, the_log: Log, offset: int) -> None:
        """Record (durably, before the cleaner swaps any segment) that `the_log` is compacted to
        `offset`; from then on recovery accepts offset gaps in it. Blocking."""
        key = (the_log.topic, the_log.partition)
        data_dir = self._log_dir_of.get(key)
        if data_dir is None:
            return
        the_log.allow_offset_gaps = True
        data_dir.cleaner_offsets[key] = offset
        live = {k: v for k, v in list(data_dir.cleaner_offsets.items()) if self._log_dir_of.get(k) is data_dir}
        data_dir.cleaner_offsets_file.write(live)

    def log_dir_of(self, the_log: Log) -> str | None:
        data_dir = self._log_dir_of.get((the_log.topic, the_log.partition))
        return None if data_dir is None else data_dir.path

    def log_dirs(self) -> list[str]:
        return [d.path for d in self._dirs]

    def flush_logs_due(self, now_ms: int) -> None:
        """flush.ms: fsync every log whose last flush is at least its flush_ms ago and has unflushed data."""
        for the_log in list(self._logs.values()):
            if the_log.closed:
                continue
            if the_log.log_end_offset > the_log.recovery_point and now_ms - the_log.last_flush_ms >= the_log.config.flush_ms:
                try:
                    the_log.flush()
                except OSError as exc:
                    log.error("flush of %s failed: %s", the_log, os.strerror(exc.errno or errno.EIO))
                    raise
                the_log.last_flush_ms = now_ms
