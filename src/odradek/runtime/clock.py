"""The one way into wall-clock and monotonic time, so simulations and tests can replace it.

Cores never call this: they take `now_ms` as an argument. The runtime and handlers read time
here and pass it down.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (record timestamps, retention)."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    """Monotonic milliseconds (timeouts, deadlines)."""
    return time.monotonic_ns() // 1_000_000
