"""Connection bookkeeping: limits on how many, and closing the idle ones.

`max.connections` bounds all connections, `max.connections.per.ip` those from one address;
a connection over a limit is closed at once (Kafka closes it too). `connections.max.idle.ms`
closes connections that sent nothing for that long. Owned by the BrokerCore, event loop only.
"""

from __future__ import annotations

import logging
from collections import Counter

from odradek.runtime.clock import monotonic_ms

log = logging.getLogger(__name__)


class ConnectionRegistry:
    def __init__(self, config) -> None:
        self._max_connections = config.max_connections
        self._max_per_ip = config.max_connections_per_ip
        self._idle_ms = config.connections_max_idle_ms
        self._last_active_ms: dict = {}
        self._per_ip: Counter[str] = Counter()
        # Request workers, including those finishing a request after their client hung up.
        self._workers: set = set()

    def __len__(self) -> int:
        return len(self._last_active_ms)

    def admit(self, connection) -> bool:
        host = connection.client.host
        if len(self._last_active_ms) >= self._max_connections:
            log.warning("refusing connection from %s: max.connections (%d) reached", host, self._max_connections)
            return False
        if self._per_ip[host] >= self._max_per_ip:
            log.warning("refusing connection from %s: max.connections.per.ip (%d) reached", host, self._max_per_ip)
            return False
        self._per_ip[host] += 1
        self._last_active_ms[connection] = monotonic_ms()
        return True

    def touch(self, connection) -> None:
        self._last_active_ms[connection] = monotonic_ms()

    def release(self, connection) -> None:
        if self._last_active_ms.pop(connection, None) is not None:
            host = connection.client.host
            self._per_ip[host] -= 1
            if self._per_ip[host] <= 0:
                del self._per_ip[host]

    def close_idle(self) -> int:
        deadline = monotonic_ms() - self._idle_ms
        idle = [c for c, at in self._last_active_ms.items() if at < deadline]
        for connection in idle:
            connection.close()
        return len(idle)

    def track_worker(self, task) -> None:
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    def close_all(self) -> None:
        """Close every connection and stop every request still running (broker shutdown)."""
        for connection in list(self._last_active_ms):
            connection.close()
        for task in list(self._workers):
            task.cancel()
