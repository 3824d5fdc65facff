"""FakeFileSystem: an in-memory `FileSystem` that can crash, tear writes and fail writes.

Model. Every file keeps its current content and the content as of its last fsync, plus the
writes and truncations made since. `crash()` is a power loss: every file falls back to its
synced content (unsynced writes are dropped), or, with `tear_last_write_at=k`, keeps its unsynced
operations except that the most recent write of all keeps only its first k bytes. Directory
entries (create, rename, unlink) are durable at once: the fake models data durability, not
directory-entry durability (so it does catch a rename of a file whose data was never fsynced).

Faults: `fail_next_write(errno, after_bytes)` makes the next pwrite write `after_bytes` bytes and
raise OSError; `fail_next_fsync(errno)` likewise for fsync.
"""

from __future__ import annotations

import errno as errno_module
import os
from dataclasses import dataclass, field

from odradek.storage.fs import FileSystem


@dataclass(eq=False)
class _File:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""
    pending: list = field(default_factory=list)  # ("write", seq, position, bytes) | ("truncate", seq, size)


def _apply_write(data: bytearray, position: int, payload: bytes) -> None:
    if position > len(data):
        data.extend(b"\0" * (position - len(data)))
    data[position : position + len(payload)] = payload


class FakeFileSystem(FileSystem):
    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.dirs: set[str] = {"/"}
        self.fds: dict[int, _File] = {}
        self.locks: dict[str, int] = {}
        self._next_fd = 1000
        self._seq = 0
        self._write_fault: tuple[int, int] | None = None
        self._fsync_fault: int | None = None
        self.fsync_count = 0

    # -- faults ------------------------------------------------------------------------------
    def fail_next_write(self, err: int = errno_module.ENOSPC, after_bytes: int = 0) -> None:
        self._write_fault = (err, after_bytes)

    def fail_next_fsync(self, err: int = errno_module.EIO) -> None:
        self._fsync_fault = err

    def crash(self, tear_last_write_at: int | None = None) -> None:
        """Lose power: see the module docs. Every handle and lock is gone afterwards."""
        last_write = None
        if tear_last_write_at is not None:
            writes = [op for f in self.files.values() for op in f.pending if op[0] == "write"]
            if writes:
                last_write = max(writes, key=lambda op: op[1])
        for f in set(self.files.values()) | set(self.fds.values()):
            data = bytearray(f.synced)
            if tear_last_write_at is not None:
                for op in f.pending:
                    if op[0] == "write":
                        payload = op[3][:tear_last_write_at] if op is last_write else op[3]
                        _apply_write(data, op[2], payload)
                    else:
                        del data[op[2]:]
            f.data = data
            f.synced = bytes(data)
            f.pending = []
        self.fds.clear()
        self.locks.clear()

    def unsynced_bytes(self) -> int:
        return sum(len(op[3]) for f in self.files.values() for op in f.pending if op[0] == "write")

    # -- handles -----------------------------------------------------------------------------
    def _norm(self, path: str) -> str:
        return os.path.normpath(path)

    def _file(self, fd: int) -> _File:
        try:
            return self.fds[fd]
        except KeyError:
            raise OSError(errno_module.EBADF, "bad file descriptor") from None

    def open(self, path: str, *, create: bool = False) -> int:
        path = self._norm(path)
        f = self.files.get(path)
        if f is None:
            if not create:
                raise FileNotFoundError(errno_module.ENOENT, "no such file", path)
            if os.path.dirname(path) not in self.dirs:
                raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)
            f = self.files[path] = _File()
        fd = self._next_fd
        self._next_fd += 1
        self.fds[fd] = f
        return fd

    def close(self, fd: int) -> None:
        self._file(fd)
        del self.fds[fd]

    def pread(self, fd: int, size_bytes: int, position: int) -> bytes:
        return bytes(self._file(fd).data[position : position + size_bytes])

    def pwrite(self, fd: int, data, position: int) -> None:
        f = self._file(fd)
        payload = bytes(data)
        fault, self._write_fault = self._write_fault, None
        if fault is not None:
            payload = payload[: fault[1]]
        self._seq += 1
        _apply_write(f.data, position, payload)
        f.pending.append(("write", self._seq, position, payload))
        if fault is not None:
            raise OSError(fault[0], os.strerror(fault[0]))

    def fsync(self, fd: int) -> None:
        f = self._file(fd)
        fault, self._fsync_fault = self._fsync_fault, None
        if fault is not None:
            raise OSError(fault, os.strerror(fault))
        f.synced = bytes(f.data)
        f.pending = []
        self.fsync_count += 1

    def size(self, fd: int) -> int:
        return len(self._file(fd).data)

    def truncate(self, fd: int, size_bytes: int) -> None:
        f = self._file(fd)
        self._seq += 1
        if size_bytes < len(f.data):
            del f.data[size_bytes:]
        else:
            f.data.extend(b"\0" * (size_bytes - len(f.data)))
        f.pending.append(("truncate", self._seq, size_bytes))

    # -- paths -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self.files or path in self.dirs

    def is_dir(self, path: str) -> bool:
        return self._norm(path) in self.dirs

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self.dirs:
            raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)
        names = {os.path.basename(p) for p in list(self.files) + list(self.dirs) if os.path.dirname(p) == path and p != path}
        return sorted(names)

    def mkdir(self, path: str) -> None:
        path = self._norm(path)
        while path not in self.dirs:
            self.dirs.add(path)
            path = os.path.dirname(path)

    def rename(self, src: str, dst: str) -> None:
        src, dst = self._norm(src), self._norm(dst)
        if src in self.files:
            self.files[dst] = self.files.pop(src)
        elif src in self.dirs:
            prefix = src + "/"
            for p in [p for p in self.dirs if p == src or p.startswith(prefix)]:
                self.dirs.discard(p)
                self.dirs.add(dst + p[len(src):])
            for p in [p for p in self.files if p.startswith(prefix)]:
                self.files[dst + p[len(src):]] = self.files.pop(p)
        else:
            raise FileNotFoundError(errno_module.ENOENT, "no such file", src)

    def unlink(self, path: str) -> None:
        self.files.pop(self._norm(path), None)

    def remove_tree(self, path: str) -> None:
        path = self._norm(path)
        prefix = path + "/"
        for p in [p for p in self.files if p.startswith(prefix)]:
            del self.files[p]
        for p in [p for p in self.dirs if p == path or p.startswith(prefix)]:
            self.dirs.discard(p)

    def fsync_dir(self, path: str) -> None:
        if self._norm(path) not in self.dirs:
            raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)

    def lock_exclusive(self, path: str) -> int:
        path = self._norm(path)
        if path in self.locks:
            raise BlockingIOError(errno_module.EWOULDBLOCK, f"{path} is locked")
        fd = self.open(path, create=True)
        self.locks[path] = fd
        return fd

    def unlock(self, handle: int) -> None:
        for path, fd in list(self.locks.items()):
            if fd == handle:
                del self.locks[path]
        self.fds.pop(handle, None)
