"""FakeFileSystem: an in-memory `FileSystem` that can crash, tear writes and fail writes.

Model. The namespace is a tree of directory nodes (`_Dir`) whose entries name file nodes
(`_File`) and subdirectories; a node is an inode: renaming a directory moves everything in it,
and an open handle keeps reading its file after an unlink or a rename over its path.

Each file keeps its current content, the content as of its last fsync (`synced`), and the
operations since then, in order: `("write", seq, position, bytes)` and `("truncate", seq, size)`.
Each directory keeps its current entries, its entries as of its last `fsync_dir` (`durable`),
and the entry operations since then, in order: `("link", seq, name, node)` (create, mkdir, the
arriving half of a rename across directories), `("unlink", seq, name)` (unlink, remove_tree, the
leaving half of a rename across directories) and `("rename", seq, src, dst)` (a rename inside one
directory: atomic, replacing `dst`). `fsync(fd)` makes a file's data durable, not its name (POSIX:
a new file's entry is durable once its directory is fsynced); `fsync_dir(path)` makes every entry
of that one directory durable.

`crash()` is a power loss. What survives of each file is its synced content plus a prefix of its
unsynced operations, and of each directory its durable entries plus a prefix of its unsynced
entry operations; every file and every directory chooses its prefix independently of the others
(so a later write to file B may survive while an earlier write to file A is lost, and a rename
may survive while the data written to the renamed file before it is lost). The first operation
a file loses, when it is a write, may survive torn: only its first k bytes land. Which prefixes
survive is chosen by the call:

    crash()                          every file loses all its unsynced operations; directory
                                     entries all survive (the original model, kept for the tests
                                     written against it)
    crash(tear_last_write_at=k)      every unsynced operation survives except the most recent
                                     write of all, which keeps its first k bytes; entries survive
    crash(rng=random.Random(seed))   each file keeps a random prefix of its operations (and, half
                                     the time it loses a write, a random part of that write), each
                                     directory a random prefix of its entry operations
                                     (`keep_dir_entries=True`: all of them)
    crash(plan=CrashPlan(...))       prefixes named per path, for regression tests (see CrashPlan)

It returns one line per file or directory that lost something, for a failing test to print.
Every descriptor and lock is gone afterwards.

Not modelled: reordering *within* one file (a later write of a file surviving an earlier lost
one of the same file; page-granular writeback can do that, but our recovery relies only on the
prefix order, which ext4's data=ordered and XFS give for appends), and a rename across two
directories is two independent entry operations (storage renames only within one directory).

Faults: `fail_next_write(errno, after_bytes)` makes the next pwrite write `after_bytes` bytes and
raise OSError; `fail_next_fsync(errno)` likewise for fsync. `kill_after_ops(n)` kills the process
between two system calls: the first n mutating calls (create, pwrite, truncate, fsync, mkdir,
rename, unlink, remove_tree, fsync_dir; `mutating_ops` counts them) run, and every call after
raises `ProcessKilled` (a BaseException, so no `except OSError` in storage swallows it) until
`crash()`; `crash(plan=CrashPlan(default_file_ops="all"))` afterwards is a SIGKILL with the page
cache intact, any other crash a power loss at that moment.

Test-only, single-threaded (storage's threaded close uses one thread over this fake).
"""

from __future__ import annotations

import errno as errno_module
import os
import random as random_module
from dataclasses import dataclass, field

from odradek.storage.fs import FileSystem


class ProcessKilled(BaseException):
    """The fake process was killed between two system calls (`FakeFileSystem.kill_after_ops`)."""


@dataclass(eq=False)
class _File:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""
    pending: list = field(default_factory=list)  # ("write", seq, position, bytes) | ("truncate", seq, size)


@dataclass(eq=False)
class _Dir:
    entries: dict = field(default_factory=dict)  # name -> _File | _Dir, as the running system sees it
    durable: dict = field(default_factory=dict)  # name -> _File | _Dir, as of the last fsync_dir
    pending: list = field(default_factory=list)  # ("link", seq, name, node) | ("unlink", seq, name) | ("rename", seq, src, dst)


@dataclass
class CrashPlan:
    """Which unsynced operations a `crash(plan=...)` keeps, by path (as named just before the crash).

    `file_ops_kept[path] = n`: the file keeps its first n unsynced operations (writes and
    truncations); `torn_bytes[path] = k`: the next one, if it is a write, lands with its first k
    bytes. `dir_ops_kept[path] = n`: the directory keeps its first n unsynced entry operations.
    Files and directories not named keep all (`"all"`) or none (`"none"`) of theirs, as the two
    defaults say. A file or directory no longer reachable by name (unlinked, still open or still
    durable) takes the default.
    """

    file_ops_kept: dict[str, int] = field(default_factory=dict)
    torn_bytes: dict[str, int] = field(default_factory=dict)
    dir_ops_kept: dict[str, int] = field(default_factory=dict)
    default_file_ops: str = "none"
    default_dir_ops: str = "all"


def _apply_write(data: bytearray, position: int, payload: bytes) -> None:
    if position > len(data):
        data.extend(b"\0" * (position - len(data)))
    data[position : position + len(payload)] = payload


def _apply_file_ops(synced: bytes, ops: list, torn: tuple | None = None) -> bytearray:
    """`synced` with `ops` applied in order, then `torn` (a write op and how many bytes land)."""
    data = bytearray(synced)
    for op in ops:
        if op[0] == "write":
            _apply_write(data, op[2], op[3])
        elif op[2] < len(data):
            del data[op[2]:]
        else:
            data.extend(b"\0" * (op[2] - len(data)))
    if torn is not None:
        op, kept_bytes = torn
        _apply_write(data, op[2], op[3][:kept_bytes])
    return data


def _apply_dir_ops(durable: dict, ops: list) -> dict:
    entries = dict(durable)
    for op in ops:
        if op[0] == "link":
            entries[op[2]] = op[3]
        elif op[0] == "unlink":
            entries.pop(op[2], None)
        else:
            node = entries.pop(op[2], None)
            if node is not None:
                entries[op[3]] = node
    return entries


def _describe_dir_op(op: tuple) -> str:
    if op[0] == "link":
        return f"link {op[2]}"
    if op[0] == "unlink":
        return f"unlink {op[2]}"
    return f"rename {op[2]} -> {op[3]}"


class FakeFileSystem(FileSystem):
    def __init__(self) -> None:
        self.root = _Dir()
        self.fds: dict[int, _File] = {}
        self.locks: dict[str, int] = {}
        self._next_fd = 1000
        self._seq = 0
        self._write_fault: tuple[int, int] | None = None
        self._fsync_fault: int | None = None
        self.fsync_count = 0
        self.fsync_dir_count = 0
        self.mutating_ops = 0
        self._ops_before_kill: int | None = None
        self._killed = False

    # -- views for tests -----------------------------------------------------------------------
    @property
    def files(self) -> dict[str, _File]:
        """Every file by path, as the running system sees the namespace (a fresh dict)."""
        return {path: node for path, node in self._walk() if isinstance(node, _File)}

    @property
    def dirs(self) -> set[str]:
        return {path for path, node in self._walk() if isinstance(node, _Dir)}

    def _walk(self, directory: _Dir | None = None, path: str = "/"):
        directory = directory or self.root
        yield path, directory
        for name, node in sorted(directory.entries.items()):
            child = os.path.join(path, name)
            if isinstance(node, _Dir):
                yield from self._walk(node, child)
            else:
                yield child, node

    # -- faults ------------------------------------------------------------------------------
    def fail_next_write(self, err: int = errno_module.ENOSPC, after_bytes: int = 0) -> None:
        self._write_fault = (err, after_bytes)

    def fail_next_fsync(self, err: int = errno_module.EIO) -> None:
        self._fsync_fault = err

    def kill_after_ops(self, ops: int | None) -> None:
        """Let `ops` more mutating calls run, then kill the process (see the module docs)."""
        self._ops_before_kill = ops

    @property
    def killed(self) -> bool:
        """Whether `kill_after_ops` has struck (until the next `crash()`)."""
        return self._killed

    def _check_alive(self) -> None:
        if self._killed:
            raise ProcessKilled("the process was killed")

    def _mutating(self) -> None:
        self._check_alive()
        if self._ops_before_kill is not None:
            if self._ops_before_kill <= 0:
                self._killed = True
                raise ProcessKilled("killed before a mutating call")
            self._ops_before_kill -= 1
        self.mutating_ops += 1

    def _every_node(self) -> tuple[dict[_File, str], dict[_Dir, str]]:
        """Every file and directory a crash may bring back: reachable from the root through current
        entries, durable entries or pending links, plus open files; each with a path it had
        (the current one when it has one)."""
        files: dict[_File, str] = {}
        dirs: dict[_Dir, str] = {}
        queue: list[tuple[_Dir, str]] = [(self.root, "/")]
        while queue:
            directory, path = queue.pop(0)
            if directory in dirs:
                continue
            dirs[directory] = path
            children = list(directory.entries.items()) + list(directory.durable.items()) + \
                [(op[2], op[3]) for op in directory.pending if op[0] == "link"]
            for name, node in children:
                child = os.path.join(path, name)
                if isinstance(node, _Dir):
                    queue.append((node, child))
                elif node not in files:
                    files[node] = child
        for fd, node in self.fds.items():
            files.setdefault(node, f"<fd {fd}>")
        return files, dirs

    def crash(self, tear_last_write_at: int | None = None, *, rng: random_module.Random | None = None,
              plan: CrashPlan | None = None, keep_dir_entries: bool = False) -> list[str]:
        """Lose power: see the module docs. Returns what was lost, one line per file or directory.

        `keep_dir_entries` (with `rng`): directories keep all their entry operations; only file
        contents are cut."""
        assert sum(x is not None for x in (tear_last_write_at, rng, plan)) <= 1, "one crash model at a time"
        files, dirs = self._every_node()
        last_write = None
        if tear_last_write_at is not None:
            writes = [op for f in files for op in f.pending if op[0] == "write"]
            if writes:
                last_write = max(writes, key=lambda op: op[1])
        lost: list[str] = []
        new_files: dict[_File, bytearray] = {}
        for f, path in files.items():
            ops = f.pending
            torn = None
            if rng is not None:
                kept = rng.randint(0, len(ops))
                if kept < len(ops) and ops[kept][0] == "write" and ops[kept][3] and rng.random() < 0.5:
                    torn = (ops[kept], rng.randrange(len(ops[kept][3])))
            elif plan is not None:
                kept = plan.file_ops_kept.get(path, len(ops) if plan.default_file_ops == "all" else 0)
                kept = min(kept, len(ops))
                if path in plan.torn_bytes and kept < len(ops) and ops[kept][0] == "write":
                    torn = (ops[kept], plan.torn_bytes[path])
            elif tear_last_write_at is not None:
                kept = len(ops)
                if last_write is not None and last_write in ops:
                    kept = ops.index(last_write)
                    torn = (last_write, tear_last_write_at)
                    # Operations after the torn write (truncations) still land, as before.
                    new_files[f] = _apply_file_ops(_apply_file_ops(f.synced, ops[:kept], torn), ops[kept + 1:])
            else:
                kept = 0
            if f not in new_files:
                new_files[f] = _apply_file_ops(f.synced, ops[:kept], torn)
            if kept < len(ops):
                lost.append(f"{path}: kept {kept}/{len(ops)} unsynced ops"
                            + (f", then the write at {torn[0][2]} torn at {torn[1]}/{len(torn[0][3])} bytes"
                               if torn else ""))
        new_dirs: dict[_Dir, dict] = {}
        for d, path in dirs.items():
            ops = d.pending
            if rng is not None and not keep_dir_entries:
                kept = rng.randint(0, len(ops))
            elif plan is not None:
                kept = min(plan.dir_ops_kept.get(path, len(ops) if plan.default_dir_ops == "all" else 0), len(ops))
            else:
                kept = len(ops)
            new_dirs[d] = _apply_dir_ops(d.durable, ops[:kept])
            if kept < len(ops):
                lost.append(f"dir {path}: kept {kept}/{len(ops)} entry ops, lost "
                            + ", ".join(_describe_dir_op(op) for op in ops[kept:]))
        for f, data in new_files.items():
            f.data = data
            f.synced = bytes(data)
            f.pending = []
        for d, entries in new_dirs.items():
            d.entries = entries
            d.durable = dict(entries)
            d.pending = []
        self.fds.clear()
        self.locks.clear()
        self._killed = False
        self._ops_before_kill = None
        return lost

    def unsynced_bytes(self) -> int:
        files, _ = self._every_node()
        return sum(len(op[3]) for f in files for op in f.pending if op[0] == "write")

    def unsynced_dir_ops(self) -> int:
        _, dirs = self._every_node()
        return sum(len(d.pending) for d in dirs)

    # -- the namespace -----------------------------------------------------------------------
    def _parts(self, path: str) -> list[str]:
        return [p for p in os.path.normpath(path).split("/") if p and p != "."]

    def _lookup(self, path: str) -> _File | _Dir | None:
        node: _File | _Dir = self.root
        for part in self._parts(path):
            if not isinstance(node, _Dir):
                return None
            node = node.entries.get(part)
            if node is None:
                return None
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise OSError(errno_module.EBUSY, "the root", path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not isinstance(parent, _Dir):
            raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)
        return parent, parts[-1]

    def _dir_op(self, directory: _Dir, op: tuple) -> None:
        self._seq += 1
        op = (op[0], self._seq) + op[1:]
        directory.pending.append(op)
        directory.entries = _apply_dir_ops(directory.entries, [op])

    # -- handles -----------------------------------------------------------------------------
    def _file(self, fd: int) -> _File:
        self._check_alive()
        try:
            return self.fds[fd]
        except KeyError:
            raise OSError(errno_module.EBADF, "bad file descriptor") from None

    def open(self, path: str, *, create: bool = False) -> int:
        self._check_alive()
        node = self._lookup(path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno_module.EISDIR, "is a directory", path)
        if node is None:
            if not create:
                raise FileNotFoundError(errno_module.ENOENT, "no such file", path)
            parent, name = self._parent(path)
            self._mutating()
            node = _File()
            self._dir_op(parent, ("link", name, node))
        fd = self._next_fd
        self._next_fd += 1
        self.fds[fd] = node
        return fd

    def close(self, fd: int) -> None:
        if self._killed:  # the process is gone, and its descriptors with it
            raise ProcessKilled("the process was killed")
        self._file(fd)
        del self.fds[fd]

    def pread(self, fd: int, size_bytes: int, position: int) -> bytes:
        return bytes(self._file(fd).data[position : position + size_bytes])

    def pwrite(self, fd: int, data, position: int) -> None:
        f = self._file(fd)
        self._mutating()
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
        self._mutating()
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
        self._mutating()
        self._seq += 1
        if size_bytes < len(f.data):
            del f.data[size_bytes:]
        else:
            f.data.extend(b"\0" * (size_bytes - len(f.data)))
        f.pending.append(("truncate", self._seq, size_bytes))

    # -- paths -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        self._check_alive()
        return self._lookup(path) is not None

    def is_dir(self, path: str) -> bool:
        self._check_alive()
        return isinstance(self._lookup(path), _Dir)

    def listdir(self, path: str) -> list[str]:
        self._check_alive()
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)
        return sorted(node.entries)

    def mkdir(self, path: str) -> None:
        self._check_alive()
        node = self.root
        for part in self._parts(path):
            child = node.entries.get(part)
            if child is None:
                self._mutating()
                child = _Dir()
                self._dir_op(node, ("link", part, child))
            elif not isinstance(child, _Dir):
                raise FileExistsError(errno_module.EEXIST, "a file is in the way", path)
            node = child

    def rename(self, src: str, dst: str) -> None:
        self._check_alive()
        src_parent, src_name = self._parent(src)
        node = src_parent.entries.get(src_name)
        if node is None:
            raise FileNotFoundError(errno_module.ENOENT, "no such file", src)
        dst_parent, dst_name = self._parent(dst)
        self._mutating()
        if src_parent is dst_parent:
            if src_name != dst_name:
                self._dir_op(src_parent, ("rename", src_name, dst_name))
        else:
            self._dir_op(dst_parent, ("link", dst_name, node))
            self._dir_op(src_parent, ("unlink", src_name))

    def unlink(self, path: str) -> None:
        self._check_alive()
        try:
            parent, name = self._parent(path)
        except FileNotFoundError:
            return
        if isinstance(parent.entries.get(name), _File):
            self._mutating()
            self._dir_op(parent, ("unlink", name))

    def remove_tree(self, path: str) -> None:
        self._check_alive()
        try:
            parent, name = self._parent(path)
        except FileNotFoundError:
            return
        if name in parent.entries:
            self._mutating()
            self._dir_op(parent, ("unlink", name))

    def fsync_dir(self, path: str) -> None:
        self._check_alive()
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise FileNotFoundError(errno_module.ENOENT, "no such directory", path)
        self._mutating()
        node.durable = dict(node.entries)
        node.pending = []
        self.fsync_dir_count += 1

    def lock_exclusive(self, path: str) -> int:
        self._check_alive()
        path = os.path.normpath(path)
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
