"""Sample a server's Python stacks with py-spy while a scenario runs; summarise self time.

    with PySpy(pid, out_path):        # py-spy record --format raw (collapsed stacks)
        ... run the load ...
    top = top_self_time(out_path, limit=15)   # [(function (file:line), share of samples)]

Collapsed stacks are lines of `frame;frame;...;leaf count`; the leaf is where the sample was
taken, so summing counts per leaf gives self time. py-spy samples native-idle waits too
(`select`/`epoll` in the event loop) unless --idle is off, which is the default: idle time is left
out, so shares are of the time the broker was busy in Python.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Self

SAMPLE_RATE_HZ = 200


def py_spy_binary() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class PySpy:
    def __init__(self, pid: int, out_path: Path) -> None:
        self.pid, self.out_path = pid, Path(out_path)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        binary = py_spy_binary()
        if binary is None:
            print("  (py-spy not installed: pip install py-spy; no profile taken)")
            return self
        self.process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--format",
                "raw",
                "--output",
                str(self.out_path),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def top_self_time(collapsed_path: Path, limit: int = 15) -> list[tuple[str, float]]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    path = Path(collapsed_path)
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] += int(count)
        total += int(count)
    return [(leaf, n / total) for leaf, n in counts.most_common(limit)] if total else []
