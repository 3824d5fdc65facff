"""Slow and stuck clients cost their own connection only.

A well-behaved confluent-kafka client measures produce-and-consume round trips per second on a
broker subprocess: alone, then while 20 clients each send a request one byte per second, then
while a client pipelines Fetch requests for a large topic and never reads its responses. The
ratios are printed; only generous bounds are asserted (shared CI machines are noisy). The stuck
client must also not grow the broker's memory without bound.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection, encode_request

MEASURE_S = 2.0
BIG_VALUE_BYTES = 64 * 1024
BIG_RECORDS = 400  # ~25 MiB
MIN_RATIO = 0.2
MAX_BROKER_RSS_KIB = 600 * 1024


def round_trips_per_s(bootstrap: str, seconds: float) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "log_level": 0}
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "wb",
            "log_level": 0,
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }
    )
    _, high = consumer.get_watermark_offsets(TopicPartition("wb", 0), 10)
    consumer.assign([TopicPartition("wb", 0, high)])
    count = 0
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            value = f"{time.perf_counter()}".encode()
            producer.produce("wb", value=value, partition=0)
            assert producer.flush(10) == 0
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None and msg.value() == value
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        consumer.close()


def broker_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("slow") / "data")) as process:
        admin = AdminClient({"bootstrap.servers": process.bootstrap})
        for name in ("wb", "big"):
            admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[
                name
            ].result(10)
        producer = Producer(
            {
                "bootstrap.servers": process.bootstrap,
                "acks": "all",
                "compression.type": "none",
                "log_level": 0,
            }
        )
        for i in range(BIG_RECORDS):
            producer.produce("big", value=bytes([i % 251]) * BIG_VALUE_BYTES, partition=0)
            producer.poll(0)
        assert producer.flush(30) == 0
        round_trips_per_s(process.bootstrap, 0.5)  # warm up
        yield process


def test_clients_sending_one_byte_per_second_cost_only_their_connections(broker):
    baseline = round_trips_per_s(broker.bootstrap, MEASURE_S)
    frame = encode_request(RawConnection.module("api_versions", 0).ApiVersionsRequest(), 1)
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", broker.port)) for _ in range(20)]

    def dribble(sock):
        for byte in frame:
            if stop.wait(1.0):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    threads = [threading.Thread(target=dribble, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        during = round_trips_per_s(broker.bootstrap, MEASURE_S)
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        for s in socks:
            s.close()
    ratio = during / baseline
    print(
        f"\nslow clients: baseline={baseline:.0f}/s with 20 one-byte-per-second clients={during:.0f}/s "
        f"ratio={ratio:.2f}"
    )
    assert ratio > MIN_RATIO


def test_a_client_that_never_reads_its_fetch_responses_costs_only_its_connection(broker):
    baseline = round_trips_per_s(broker.bootstrap, MEASURE_S)
    rss_before = broker_rss_kib(broker.process.pid)
    m = RawConnection.module("fetch", 12)
    request = m.FetchRequest(
        max_wait=timedelta(0),
        min_bytes=1,
        max_bytes=64 * 1024 * 1024,
        session_id=0,
        session_epoch=-1,
        topics=(
            m.FetchTopic(
                topic="big",
                partitions=(
                    m.FetchPartition(
                        partition=0,
                        fetch_offset=0,
                        partition_max_bytes=64 * 1024 * 1024,
                        current_leader_epoch=-1,
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    stuck = socket.create_connection(("127.0.0.1", broker.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = b"".join(encode_request(request, cid) for cid in range(1, 201))
    sender = threading.Thread(target=lambda: _send_quietly(stuck, payload), daemon=True)
    sender.start()
    try:
        time.sleep(1.5)
        during = round_trips_per_s(broker.bootstrap, MEASURE_S)
        rss_after = broker_rss_kib(broker.process.pid)
    finally:
        stuck.close()
        sender.join(5)
    ratio = during / baseline
    print(
        f"\nstuck reader: baseline={baseline:.0f}/s with a never-reading fetcher={during:.0f}/s ratio={ratio:.2f} "
        f"broker RSS {rss_before // 1024} -> {rss_after // 1024} MiB"
    )
    assert ratio > MIN_RATIO
    assert rss_after < MAX_BROKER_RSS_KIB
    assert broker.process.poll() is None


def _send_quietly(sock: socket.socket, payload: bytes) -> None:
    try:
        sock.sendall(payload)
    except OSError:
        pass
