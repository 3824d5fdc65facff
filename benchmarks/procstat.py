"""A server process's cost, read from /proc/<pid>: CPU seconds, RSS, open file descriptors.

Linux only. CPU time is utime + stime of the whole process (all threads), in clock ticks
converted to seconds; RSS is VmRSS from /proc/<pid>/status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_bytes: int
    open_fds: int


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # Field 2 (comm) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    utime_ticks, stime_ticks = int(fields[11]), int(fields[12])
    return (utime_ticks + stime_ticks) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(pid: int | None) -> ProcSample | None:
    if pid is None:
        return None
    return ProcSample(cpu_seconds(pid), rss_bytes(pid), open_fds(pid))
