"""Garbage over sockets: a few hundred hostile connections against one broker while a well-behaved
confluent-kafka producer and consumer keep working on it.

The broker runs as a subprocess, not in-process: a request body with a hostile array count made
kio 0.6.5 abort the whole process (found by tests/protocol/test_fuzz_decode.py; fixed by the
bounds check in broker/connection.py), and a regression must fail one test, not take pytest down.
Two kinds of garbage: bytes that fail at the framing and header layers, and valid headers of
served API versions followed by random bodies.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.protocol import apis
from odradek.testing.process import BrokerProcess

GARBAGE_CONNECTIONS = 300


def framing_garbage(rng: random.Random) -> bytes:
    """Bytes that fail at the framing or header layer, or ask for what the broker does not serve."""
    kind = rng.randrange(7)
    if kind == 0:  # noise
        return rng.randbytes(rng.randint(1, 2000))
    if kind == 1:  # a size prefix over socket.request.max.bytes, or negative
        return struct.pack(
            ">i", rng.choice((-1, -(2**31), 2**31 - 1, 200 * 1024 * 1024))
        ) + rng.randbytes(64)
    if kind == 2:  # a frame too short for a header
        body = rng.randbytes(rng.randint(0, 7))
        return struct.pack(">i", len(body)) + body
    if kind == 3:  # an unknown api key
        body = struct.pack(">hhih", rng.choice((-1, 999, 0x7FFF)), 0, 1, -1) + rng.randbytes(16)
        return struct.pack(">i", len(body)) + body
    if kind == 4:  # an unsupported version of a served API
        api = rng.choice(list(apis.APIS.values()))
        body = struct.pack(
            ">hhih", api.key, api.max_version + rng.randint(1, 50), 1, -1
        ) + rng.randbytes(16)
        return struct.pack(">i", len(body)) + body
    if kind == 5:  # a frame that promises more than is sent, then the connection closes
        return struct.pack(">i", 10_000) + rng.randbytes(rng.randint(0, 9_999))
    # a header whose client id runs past the frame
    body = struct.pack(">hhih", 18, 3, 1, 0x7FFF) + b"x" * 8
    return struct.pack(">i", len(body)) + body


def body_garbage(rng: random.Random) -> bytes:
    """A valid header of a served API and version, then random body bytes."""
    api = rng.choice(list(apis.APIS.values()))
    version = rng.randint(api.min_usable_version, api.max_version)
    body = struct.pack(">hhih", api.key, version, 1, -1)
    if apis.request_is_flexible(api.key, version):
        body += b"\x00"
    body += rng.randbytes(rng.randint(0, 200))
    return struct.pack(">i", len(body)) + body


class WellBehavedClient(threading.Thread):
    """Produces and consumes one record at a time in a loop, counting round trips and failures."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stop = threading.Event()
        self.round_trips = 0
        self.failures: list[str] = []
        self.worst_s = 0.0

    def run(self) -> None:
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 0, "log_level": 0}
        )
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "wb",
                "log_level": 0,
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                value = f"rt-{self.round_trips}".encode()
                producer.produce(self.topic, value=value, partition=0)
                if producer.flush(10) != 0:
                    self.failures.append("produce not acknowledged in 10 s")
                    return
                msg = consumer.poll(10)
                if msg is None or msg.error() is not None or msg.value() != value:
                    self.failures.append(f"consume got {msg and (msg.error() or msg.value())}")
                    return
                self.worst_s = max(self.worst_s, time.perf_counter() - started)
                self.round_trips += 1
        finally:
            consumer.close()


def run_garbage(broker: BrokerProcess, make, connections: int, seed: int) -> dict:
    rng = random.Random(seed)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("wb", num_partitions=1, replication_factor=1)])["wb"].result(10)
    client = WellBehavedClient(broker.bootstrap, "wb")
    client.start()
    time.sleep(1.0)
    before = client.round_trips
    closed_by_broker = 0
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", broker.port))
        try:
            sock.sendall(make(rng))
            if rng.random() < 0.5:  # wait for the broker to hang up, or not
                sock.settimeout(0.2)
                try:
                    while sock.recv(65536):
                        pass
                    closed_by_broker += 1
                except (TimeoutError, ConnectionResetError):
                    pass
        except (BrokenPipeError, ConnectionResetError):
            closed_by_broker += 1
        finally:
            sock.close()
        if broker.process.poll() is not None:
            break
    during = client.round_trips - before
    client.stop.set()
    client.join(15)
    return {
        "alive": broker.process.poll() is None,
        "round_trips_during": during,
        "failures": client.failures,
        "worst_ms": round(client.worst_s * 1000, 1),
        "closed_by_broker": closed_by_broker,
    }


def test_framing_garbage_connections_leave_a_good_client_working(tmp_path):
    with BrokerProcess(str(tmp_path / "data")) as broker:
        stats = run_garbage(broker, framing_garbage, GARBAGE_CONNECTIONS, seed=3)
        print(f"\nsocket fuzz (framing/header garbage, {GARBAGE_CONNECTIONS} connections): {stats}")
        assert stats["alive"], "".join(broker.output[-30:])
        assert stats["failures"] == []
        assert stats["round_trips_during"] > 10
        assert "Traceback" not in "".join(broker.output)


# Found by tests/protocol/test_fuzz_decode.py: Metadata v9 whose topics array claims 0xfffffffe
# entries. kio 0.6.5 sizes the array before reading it; the allocation failed and Rust aborted the
# broker, until `check_request_bounds` in broker/connection.py.
HOSTILE_METADATA_V9 = bytes.fromhex("0003000900000007000466757a7a00feffffff0f010001000000")


def test_random_request_bodies_leave_a_good_client_working(tmp_path):
    with BrokerProcess(str(tmp_path / "data")) as broker:
        stats = run_garbage(broker, body_garbage, GARBAGE_CONNECTIONS, seed=4)
        print(f"\nsocket fuzz (random bodies, {GARBAGE_CONNECTIONS} connections): {stats}")
        assert stats["alive"], "".join(broker.output[-5:])
        assert stats["failures"] == []
        assert "Traceback" not in "".join(broker.output)


def test_a_30_byte_hostile_metadata_request_does_not_kill_the_broker(tmp_path):
    with BrokerProcess(str(tmp_path / "data")) as broker:
        with socket.create_connection(("127.0.0.1", broker.port)) as sock:
            sock.sendall(struct.pack(">i", len(HOSTILE_METADATA_V9)) + HOSTILE_METADATA_V9)
            sock.settimeout(5)
            try:
                sock.recv(100)
            except (TimeoutError, ConnectionResetError):
                pass
        time.sleep(0.5)
        assert broker.process.poll() is None, "the broker died: " + "".join(broker.output[-3:])
