"""The one seam between storage and the filesystem.

Every file operation storage performs goes through a `FileSystem`, so tests can substitute a fake
that loses unsynced writes, tears the last write at a chosen byte, or fails a write with ENOSPC/EIO
(see tests/storage/fakefs.py). Files are addressed by path and, once opened, by an integer handle:
for `RealFileSystem` the handle is the OS file descriptor, so the broker can `sendfile()` from it.

Writes are positional (`pwrite`): storage always knows where a write lands, and a write that fails
half-way leaves the logical file size to the caller, who truncates back. All calls are synchronous
and may block; the broker decides which thread runs them (fsyncs in its blocking-I/O pool).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil


class FileSystem:
    """The filesystem operations storage needs, and no more. Paths are `str`."""

    # -- handles -----------------------------------------------------------------------------
    def open(self, path: str, *, create: bool = False) -> int:
        """Open `path` for reading and writing; create it empty when `create` and absent."""
        raise NotImplementedError

    def close(self, fd: int) -> None:
        raise NotImplementedError

    def pread(self, fd: int, size_bytes: int, position: int) -> bytes:
        """Up to `size_bytes` from `position`; shorter at the end of the file."""
        raise NotImplementedError

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        """Write all of `data` at `position` (raises OSError on failure, e.g. ENOSPC/EIO)."""
        raise NotImplementedError

    def fsync(self, fd: int) -> None:
        raise NotImplementedError

    def size(self, fd: int) -> int:
        raise NotImplementedError

    def truncate(self, fd: int, size_bytes: int) -> None:
        raise NotImplementedError

    # -- paths -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def is_dir(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> list[str]:
        raise NotImplementedError

    def mkdir(self, path: str) -> None:
        """Create `path` and missing parents; no error if it exists."""
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename, replacing `dst` if it exists."""
        raise NotImplementedError

    def unlink(self, path: str) -> None:
        """Remove a file; no error if absent."""
        raise NotImplementedError

    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything in it; no error if absent."""
        raise NotImplementedError

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creates, renames, unlinks) durable."""
        raise NotImplementedError

    def lock_exclusive(self, path: str) -> int:
        """Create `path` if needed and take an exclusive, non-blocking lock on it; returns a handle.

        Raises BlockingIOError when another holder has it. `unlock(handle)` releases it.
        """
        raise NotImplementedError

    def unlock(self, handle: int) -> None:
        raise NotImplementedError

    # -- helpers built on the primitives -------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        """The whole content of a small file (checkpoints, snapshots)."""
        fd = self.open(path)
        try:
            return self.pread(fd, self.size(fd), 0)
        finally:
            self.close(fd)

    def write_file_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Replace `path` with `data` atomically: write `path.tmp`, fsync, rename, fsync the dir.

        `durable=False` skips both fsyncs, for files whose reader checks a CRC and can do without
        them (producer snapshots taken at segment roll): after a crash the file may be old, empty
        or torn, never a mix that passes its check.
        """
        tmp = path + ".tmp"
        fd = self.open(tmp, create=True)
        try:
            self.truncate(fd, 0)
            self.pwrite(fd, data, 0)
            if durable:
                self.fsync(fd)
        finally:
            self.close(fd)
        self.rename(tmp, path)
        if durable:
            self.fsync_dir(os.path.dirname(path) or ".")


class RealFileSystem(FileSystem):
    """`FileSystem` over `os`: handles are OS file descriptors (usable with sendfile)."""

    def open(self, path: str, *, create: bool = False) -> int:
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT
        return os.open(path, flags, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pread(self, fd: int, size_bytes: int, position: int) -> bytes:
        data = os.pread(fd, size_bytes, position)
        if len(data) == size_bytes or not data:
            return data
        parts = [data]  # a short read before EOF: keep reading
        got = len(data)
        while got < size_bytes:
            more = os.pread(fd, size_bytes - got, position + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            if written <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[written:]
            position += written

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def truncate(self, fd: int, size_bytes: int) -> None:
        os.ftruncate(fd, size_bytes)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock_exclusive(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BlockingIOError(errno.EWOULDBLOCK, f"{path} is locked by another process")
        return fd

    def unlock(self, handle: int) -> None:
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)
