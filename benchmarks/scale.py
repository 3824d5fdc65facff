"""Scale scenarios: startup, idle memory, 10,000 partitions, 1,000 idle connections, a group of 50.

Each function takes a started (or startable) Server and returns a flat dict of figures; none of
them asserts. Servers that keep nothing across a restart (memory-only) report None for restart
figures rather than a number that would mean something else.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import procstat
from benchmarks.servers import JOIN_GROUP_KEY, Server, api_versions_v0

IDLE_SETTLE_S = 1.0
TOPIC_CREATE_BATCH = 10  # topics per CreateTopics request
ADMIN_TIMEOUT_S = 120.0
GROUP_TIMEOUT_S = 120.0


def startup(server: Server) -> dict:
    """Fresh start: spawn -> first ApiVersions answered; RSS and fds after a short idle."""
    server.start()
    time.sleep(IDLE_SETTLE_S)
    s = procstat.sample(server.pid)
    figures = {
        "startup_ms": server.startup_ms,
        "idle_rss_mb": s.rss_bytes / 1e6 if s else None,
        "idle_fds": s.open_fds if s else None,
    }
    server.stop()
    return figures


def many_partitions(server: Server, total_partitions: int, topics: int) -> dict:
    """Create `topics` topics holding `total_partitions` together, then (on disk) restart."""
    per_topic = total_partitions // topics
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    names = [f"scale-{i:03d}" for i in range(topics)]
    error = None
    started = time.perf_counter()
    try:
        for i in range(0, topics, TOPIC_CREATE_BATCH):
            batch = [NewTopic(n, per_topic, 1) for n in names[i : i + TOPIC_CREATE_BATCH]]
            for future in admin.create_topics(
                batch, operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S
            ).values():
                future.result(ADMIN_TIMEOUT_S)
    except (KafkaException, TimeoutError) as exc:  # report how far it got, and go on
        error = f"CreateTopics failed: {exc}"
        time.sleep(IDLE_SETTLE_S)
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    md = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    metadata_ms = (time.perf_counter() - started) * 1000
    seen = sum(len(md.topics[n].partitions) for n in names if n in md.topics)
    s = procstat.sample(server.pid)
    figures = {
        "partitions": seen,
        "create_s": create_s,
        "error": error,
        "metadata_all_ms": metadata_ms,
        "rss_mb_after_create": s.rss_bytes / 1e6 if s else None,
        "fds_after_create": s.open_fds if s else None,
        "restart_startup_ms": None,
        "restart_rss_mb": None,
        "restart_metadata_all_ms": None,
    }
    if server.on_disk and server.pid is not None:
        started = time.perf_counter()
        server.stop()
        figures["clean_stop_s"] = time.perf_counter() - started
        try:
            server.start()
        except RuntimeError as exc:
            tail = (server.work_dir / f"{server.name}.log").read_text().strip().splitlines()[-1:]
            figures["error"] = (figures["error"] or "") + f" restart failed: {exc}: {tail}"
            return figures
        figures["restart_startup_ms"] = server.startup_ms
        started = time.perf_counter()
        admin = AdminClient({"bootstrap.servers": server.bootstrap})
        md = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        figures["restart_metadata_all_ms"] = (time.perf_counter() - started) * 1000
        figures["restart_partitions"] = sum(
            len(md.topics[n].partitions) for n in names if n in md.topics
        )
        time.sleep(IDLE_SETTLE_S)
        figures["restart_rss_mb"] = procstat.rss_bytes(server.pid) / 1e6
    return figures


def idle_connections(server: Server, connections: int) -> dict:
    """Open `connections` sockets that each get one ApiVersions answer, then sit idle."""
    before = procstat.sample(server.pid)
    request = _api_versions_frame()
    sockets = []
    try:
        started = time.perf_counter()
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(request)
            sockets.append(s)
        for s in sockets:  # read each answer: every connection has been served once
            size = struct.unpack(">i", _recv_exact(s, 4))[0]
            _recv_exact(s, size)
        open_s = time.perf_counter() - started
        time.sleep(IDLE_SETTLE_S)
        after = procstat.sample(server.pid)
        probe_started = time.perf_counter()
        api_versions_v0("127.0.0.1", server.port)
        probe_ms = (time.perf_counter() - probe_started) * 1000
    finally:
        for s in sockets:
            s.close()
    figures = {
        "connections": len(sockets),
        "open_and_serve_s": open_s,
        "new_connection_probe_ms": probe_ms,
    }
    if before and after:
        figures.update(
            rss_mb=after.rss_bytes / 1e6,
            rss_kb_per_connection=(after.rss_bytes - before.rss_bytes) / 1e3 / connections,
            fds=after.open_fds,
        )
    return figures


def consumer_group(server: Server, members: int, topic: str, partitions: int) -> dict:
    """`members` confluent-kafka consumers subscribe to one topic; time until all are assigned."""
    if JOIN_GROUP_KEY not in server.api_keys:
        return {
            "skipped": f"{server.name} does not advertise JoinGroup (api key 11) in ApiVersions"
        }
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(ADMIN_TIMEOUT_S)
    consumers = [
        Consumer(
            {
                "bootstrap.servers": server.bootstrap,
                "group.id": f"{topic}-group",
                "enable.auto.commit": False,
                "session.timeout.ms": 30_000,
                "heartbeat.interval.ms": 3_000,
            }
        )
        for _ in range(members)
    ]
    started = time.perf_counter()
    stable_s = None
    try:
        for c in consumers:
            c.subscribe([topic])
        deadline = started + GROUP_TIMEOUT_S
        while time.perf_counter() < deadline:
            for c in consumers:
                c.poll(0)
            assigned = [len(c.assignment()) for c in consumers]
            if sum(assigned) == partitions and all(assigned):
                stable_s = time.perf_counter() - started
                break
            time.sleep(0.01)
        s = procstat.sample(server.pid)
    finally:
        for c in consumers:
            c.close()
    figures = {
        "members": members,
        "partitions": partitions,
        "all_assigned_s": stable_s
        if stable_s is not None
        else f">{GROUP_TIMEOUT_S:.0f} (not stable)",
    }
    if s:
        figures["rss_mb"] = s.rss_bytes / 1e6
    return figures


def _api_versions_frame() -> bytes:
    client_id = b"odradek-bench-idle"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)
