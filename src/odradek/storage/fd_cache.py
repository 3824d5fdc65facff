"""A bounded cache of open file descriptors for segment and index files.

Kafka keeps every segment's .log, .index and .timeindex open (and mmapped) for the life of the
log, which needs fd limits in the hundreds of thousands. We keep at most `max_open_files`
descriptors open that nobody is using right now, least recently used closed first, so a broker
with 10,000 partitions runs with an ordinary `ulimit -n`: open descriptors are O(files touched
recently), not O(segments).

    CachedFile      one path, opened on demand (`fd()`), closed by the cache when it is the least
                    recently used of more than `max_open_files`, reopened by the next `fd()`
    FileHandleCache the LRU: an OrderedDict of the open CachedFiles, oldest first

Pins. A pinned file is never closed by the cache: a `FileRegion` handed to the network layer pins
its segment's .log (released when the region is garbage-collected), so a `sendfile` always reads
the inode the region was cut from, even after a cleaner swap put another file at the same path;
a flush pins the descriptor it fsyncs. A `close()` of a pinned file is deferred to the last unpin.
Pinned files may take the open count above `max_open_files` for as long as they are pinned.
A `sticky` file is never closed by the cache either: LogSegment makes the .log of a log with
`cleanup.policy` compact sticky, because the cleaner renames a rewritten file over it while the
loop may still read the old segment object, and a reopen by path would read the new file with
the old indexes (compacted logs are few: their descriptors are O(their open segments), as before).

Durability. Closing a descriptor loses nothing: written data stays in the page cache, and an fsync
through any later descriptor of the same file makes it durable (POSIX fsync is per file, and on
Linux >= 4.16 a writeback error is reported to a descriptor opened after it, until someone sees
it). So the cache closes a file with unsynced writes without fsyncing it (an fsync on the event
loop for every eviction would stall every produce); it keeps the file's `dirty` flag, and
`fsync()` of a closed dirty file opens a temporary descriptor for it.

Threads: `fd()`, `close()` and the eviction they cause run on the event loop (or in whatever single
thread owns the log at that moment); `fsync()` and `unpin()` may run in other threads (the flush
pool, the garbage collector of whichever thread drops a region). One lock guards the LRU and the
pin counts; no I/O but `close` of evicted descriptors happens under it.
One cache per FileSystem object (`cache_for(fs)`): descriptors are a per-process resource, and a
test's FakeFileSystem gets a cache of its own.
"""

from __future__ import annotations

import logging
import resource
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from odradek.storage.fs import FileSystem

log = logging.getLogger(__name__)

# The bound when nobody sets one: a quarter of the soft RLIMIT_NOFILE (sockets, the metadata log
# and checkpoint writes need the rest), between these two.
MIN_MAX_OPEN_FILES = 16
DEFAULT_MAX_OPEN_FILES_CAP = 4096


def default_max_open_files() -> int:
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 4 * DEFAULT_MAX_OPEN_FILES_CAP
    return max(MIN_MAX_OPEN_FILES, min(DEFAULT_MAX_OPEN_FILES_CAP, soft // 4))


class FileHandleCache:
    """LRU of open `CachedFile`s (see the module docs).

    Invariants: a file is in `_open` iff its descriptor is open; `len(_open) <= max_open_files`
    after every `fd()` unless the excess files are pinned. `opens` and `evictions` count for tests
    and benchmarks.
    """

    def __init__(self, fs: FileSystem, max_open_files: int | None = None) -> None:
        self.fs = fs
        self.max_open_files = max_open_files if max_open_files is not None else default_max_open_files()
        if self.max_open_files < 1:
            raise ValueError(f"max_open_files must be at least 1, not {self.max_open_files}")
        self._open: OrderedDict[CachedFile, None] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()  # .held: files pinned by this thread's `pinning()` block
        self.opens = 0
        self.evictions = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    @contextmanager
    def pinning(self) -> Iterator[None]:
        """Every file this thread opens or uses inside the block stays pinned until it ends.

        What makes it safe to open or close several logs from several threads at once (start-up
        recovery, shutdown): storage code on the loop takes a descriptor and uses it at once,
        which is only safe while no other thread can evict it. Blocks do not nest."""
        assert getattr(self._local, "held", None) is None, "pinning() blocks do not nest"
        held: dict[CachedFile, None] = {}
        self._local.held = held
        try:
            yield
        finally:
            self._local.held = None
            for file in held:
                file.unpin()

    def set_max_open_files(self, max_open_files: int) -> None:
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be at least 1, not {max_open_files}")
        self.max_open_files = max_open_files
        with self._lock:
            self._evict_locked(None)

    def _evict_locked(self, keep: CachedFile | None) -> None:
        excess = len(self._open) - self.max_open_files
        if excess <= 0:
            return
        victims = []
        for candidate in self._open:  # oldest first; pinned ones are few
            if candidate is keep or candidate._pins or candidate.sticky:
                continue
            victims.append(candidate)
            if len(victims) >= excess:
                break
        for victim in victims:
            del self._open[victim]
            fd, victim._fd = victim._fd, None
            assert fd is not None
            try:
                self.fs.close(fd)
            except OSError as exc:  # nothing to do about it; the descriptor is gone either way
                log.debug("closing %s (evicted) failed: %s", victim.path, exc)
            self.evictions += 1


class CachedFile:
    """One file (a .log, .index, .timeindex or .txnindex) whose descriptor the cache may close.

    `path` follows renames (`renamed`). `dirty`: written or truncated since its last fsync.
    Owned by one LogSegment (or index); see the module docs for threads.
    """

    __slots__ = ("cache", "path", "_fd", "_pins", "_close_when_unpinned", "dirty", "sticky", "__weakref__")

    def __init__(self, cache: FileHandleCache, path: str) -> None:
        self.cache = cache
        self.path = path
        self._fd: int | None = None
        self._pins = 0
        self._close_when_unpinned = False
        self.dirty = False
        # Never closed by the cache once open (only by `close()`): the .log of a compacted log,
        # whose path the cleaner may point at another inode while a reader holds the segment.
        self.sticky = False

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def current_fd(self) -> int | None:
        """The descriptor if open now, without opening it."""
        return self._fd

    def fd(self, *, create: bool = False, pin: bool = False) -> int:
        """The open descriptor, opening the file (creating it when `create`) if the cache closed it.
        With `pin`, also pin it (see `pin()`); inside `FileHandleCache.pinning()` it is pinned
        until the block ends."""
        cache = self.cache
        held = getattr(cache._local, "held", None)
        with cache._lock:
            fd = self._fd
            if fd is not None:
                cache._open.move_to_end(self)
                self._close_when_unpinned = False
                self._hold_locked(pin, held)
                return fd
        fd = cache.fs.open(self.path, create=create)  # may raise FileNotFoundError; nothing changed
        with cache._lock:
            if self._fd is not None:  # (another thread opened it meanwhile: keep one)
                cache.fs.close(fd)
                cache._open.move_to_end(self)
                self._hold_locked(pin, held)
                return self._fd
            self._fd = fd
            self._close_when_unpinned = False
            cache._open[self] = None
            cache.opens += 1
            self._hold_locked(pin, held)
            cache._evict_locked(self)
        return fd

    def _hold_locked(self, pin: bool, held: dict | None) -> None:
        if pin:
            self._pins += 1
        if held is not None and self not in held:
            held[self] = None
            self._pins += 1

    def pin(self, *, create: bool = False) -> int:
        """Open if needed and keep open until `unpin()`; returns the descriptor."""
        return self.fd(create=create, pin=True)

    def unpin(self) -> None:
        cache = self.cache
        with cache._lock:
            assert self._pins > 0, f"{self.path}: unpin without pin"
            self._pins -= 1
            if self._pins == 0:
                if self._close_when_unpinned:
                    self._close_locked()
                else:
                    cache._evict_locked(None)

    def close(self) -> None:
        """Close the descriptor now, or at the last unpin when pinned."""
        with self.cache._lock:
            if self._pins:
                self._close_when_unpinned = True
                return
            self._close_locked()

    def _close_locked(self) -> None:
        self._close_when_unpinned = False
        fd, self._fd = self._fd, None
        if fd is not None:
            del self.cache._open[self]
            self.cache.fs.close(fd)

    def renamed(self, new_path: str) -> None:
        """The file was renamed: reopen it under `new_path` from now on."""
        self.path = new_path

    def fsync(self) -> None:
        """Make the file's writes durable: through its descriptor if open, else (when dirty)
        through a temporary one. Safe in the flush pool while the loop writes and evicts."""
        cache = self.cache
        with cache._lock:
            fd = self._fd
            if fd is None and not self.dirty:
                return
            self.dirty = False  # writes from here on set it again
            if fd is not None:
                self._pins += 1
        if fd is None:
            try:
                fd = cache.fs.open(self.path)
            except FileNotFoundError:
                return  # deleted meanwhile: nothing left to make durable
            try:
                cache.fs.fsync(fd)
            except BaseException:
                self.dirty = True
                raise
            finally:
                cache.fs.close(fd)
            return
        try:
            cache.fs.fsync(fd)
        except BaseException:
            self.dirty = True
            raise
        finally:
            self.unpin()

    def __repr__(self) -> str:
        return f"CachedFile({self.path!r}, fd={self._fd}, pins={self._pins})"


_CACHES: weakref.WeakKeyDictionary[FileSystem, FileHandleCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_for(fs: FileSystem) -> FileHandleCache:
    """The one descriptor cache of `fs` (created with the default bound on first use)."""
    cache = _CACHES.get(fs)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.get(fs)
            if cache is None:
                cache = _CACHES[fs] = FileHandleCache(fs)
    return cache
