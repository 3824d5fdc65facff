"""Connection limits on a broker subprocess: max.connections, max.connections.per.ip,
connections.max.idle.ms, queued.max.requests, and a couple of thousand open connections while a
new well-behaved client keeps being answered."""

from __future__ import annotations

import resource
import socket
import threading
import time

import pytest

from odradek.testing.process import BrokerProcess
from odradek.testing.raw import ConnectionClosed, RawConnection, encode_request

API_VERSIONS = 18


def api_versions(conn: RawConnection, timeout_s: float = 5.0):
    request = conn.module("api_versions", 3).ApiVersionsRequest(
        client_software_name="reliability", client_software_version="1"
    )
    return conn.request(request, timeout_s)


def answered(conn: RawConnection) -> bool:
    try:
        api_versions(conn, 3.0)
        return True
    except (ConnectionClosed, ConnectionResetError, BrokenPipeError, TimeoutError):
        return False


@pytest.fixture
def broker_with(tmp_path):
    started = []

    def start(**overrides):
        broker = BrokerProcess(
            str(tmp_path / f"data{len(started)}"),
            overrides={k.replace("_", "."): str(v) for k, v in overrides.items()},
        ).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def test_max_connections_refuses_the_extra_ones_and_admits_after_a_close(broker_with):
    broker = broker_with(max_connections=20)
    conns = [RawConnection(broker.bootstrap) for _ in range(25)]
    try:
        ok = [answered(c) for c in conns]
        assert ok.count(True) == 20 and ok.count(False) == 5, ok
        for conn, was_ok in zip(conns, ok):
            if was_ok:
                conn.close()
                break
        time.sleep(0.2)
        with RawConnection(broker.bootstrap) as late:
            assert answered(late)
    finally:
        for conn in conns:
            conn.close()


def test_max_connections_per_ip_counts_each_address(broker_with):
    broker = broker_with(max_connections_per_ip=3)
    port = broker.port
    conns = []
    try:
        for _ in range(4):
            conns.append(RawConnection(f"127.0.0.1:{port}"))
        ok = [answered(c) for c in conns]
        assert ok == [True, True, True, False]
        # A connection from another local address has its own allowance.
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", port))
        raw = RawConnection.__new__(RawConnection)
        raw.sock, raw.timeout_s, raw.client_id, raw._next_correlation_id, raw._buffer = (
            sock,
            5.0,
            "x",
            1,
            bytearray(),
        )
        conns.append(raw)
        assert answered(raw)
    finally:
        for conn in conns:
            conn.close()


def test_idle_connections_are_closed_and_busy_ones_kept(broker_with):
    broker = broker_with(connections_max_idle_ms=1500)
    with RawConnection(broker.bootstrap) as idle, RawConnection(broker.bootstrap) as busy:
        assert answered(idle) and answered(busy)
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            assert answered(busy)
            time.sleep(0.4)
        assert idle.wait_closed(1.0), "an idle connection outlived connections.max.idle.ms"
        assert answered(busy)


def test_pipelined_requests_past_queued_max_requests_are_all_answered_in_order(broker_with):
    broker = broker_with(queued_max_requests=4)
    m = RawConnection.module("metadata", 12)
    with (
        RawConnection(broker.bootstrap, timeout_s=30) as pipelined,
        RawConnection(broker.bootstrap) as other,
    ):
        frames = []
        request = m.MetadataRequest(topics=None, include_topic_authorized_operations=False)
        count = 5000
        payload = b"".join(encode_request(request, cid) for cid in range(1, count + 1))
        sender = threading.Thread(target=pipelined.send_bytes, args=(payload,), daemon=True)
        sender.start()  # blocks once the broker stops reading: backpressure, not buffering
        time.sleep(0.5)
        latencies = []
        for _ in range(10):
            t = time.perf_counter()
            assert answered(other)
            latencies.append(time.perf_counter() - t)
        for expected in range(1, count + 1):
            correlation_id, _ = pipelined.receive(3, 12)
            assert correlation_id == expected
            frames.append(correlation_id)
        sender.join(10)
        print(
            f"\nqueued.max.requests=4: {count} pipelined answered in order; other client's worst "
            f"ApiVersions {max(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 1.0


def test_two_thousand_connections_while_a_new_client_is_answered(broker_with):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    broker = broker_with()  # inherits the raised limit
    host, port = "127.0.0.1", broker.port
    socks = []
    worst_s = 0.0
    try:
        for i in range(2000):
            socks.append(socket.create_connection((host, port)))
            if i % 250 == 0:
                t = time.perf_counter()
                with RawConnection(broker.bootstrap) as fresh:
                    assert answered(fresh)
                worst_s = max(worst_s, time.perf_counter() - t)
        # Half of them speak: every one is answered.
        request = RawConnection.module("api_versions", 0).ApiVersionsRequest()
        frame = encode_request(request, 1)
        for sock in socks[::2]:
            sock.sendall(frame)
        for sock in socks[::2]:
            sock.settimeout(10)
            assert len(sock.recv(4)) > 0
        t = time.perf_counter()
        with RawConnection(broker.bootstrap) as fresh:
            assert answered(fresh)
        worst_s = max(worst_s, time.perf_counter() - t)
        print(
            f"\n2000 connections open: a new client's worst ApiVersions round trip {worst_s * 1000:.1f} ms"
        )
        assert worst_s < 2.0
        assert broker.process.poll() is None
    finally:
        for sock in socks:
            sock.close()
