"""Graceful and fast restart.

SIGTERM flushes the logs and writes the checkpoints and the clean-shutdown marker; the next start
skips recovery (no "recovering" log line) and serves every record. After SIGKILL the next start
logs that it recovers, and still serves every record. The slow test measures the restart after a
kill -9 of a broker holding about 1 GiB across 100 partitions.
"""

from __future__ import annotations

import os
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.storage.checkpoints import RECOVERY_POINT_CHECKPOINT, OffsetCheckpointFile
from odradek.storage.fs import RealFileSystem
from odradek.testing.process import BrokerProcess

RECOVERING = "no clean shutdown marker"


def create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(30)


def produce(bootstrap, topic, partitions, records, value_bytes, codec="none"):
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "log_level": 0,
            "compression.type": codec,
            "batch.size": 1024 * 1024,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    value = b"r" * value_bytes
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0


def high_watermarks(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw", "log_level": 0})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def test_sigterm_writes_checkpoints_and_the_next_start_skips_recovery(tmp_path):
    data_dir = str(tmp_path / "data")
    broker = BrokerProcess(data_dir).start()
    try:
        create(broker.bootstrap, "g", 4)
        produce(broker.bootstrap, "g", 4, 4000, 200)
        before = high_watermarks(broker.bootstrap, "g", 4)

        assert broker.stop() == 0  # SIGTERM
        assert any("stopped cleanly" in line for line in broker.output)
        assert os.path.exists(os.path.join(data_dir, ".kafka_cleanshutdown"))
        recovery_points = OffsetCheckpointFile(
            RealFileSystem(), os.path.join(data_dir, RECOVERY_POINT_CHECKPOINT)
        ).read()
        assert [recovery_points[("g", p)] for p in range(4)] == before  # flushed up to the log end

        started = time.perf_counter()
        broker.start()
        clean_restart_ms = (time.perf_counter() - started) * 1000
        assert not any(RECOVERING in line for line in broker.output), "".join(broker.output)
        assert high_watermarks(broker.bootstrap, "g", 4) == before

        broker.kill()
        started = time.perf_counter()
        broker.start()
        unclean_restart_ms = (time.perf_counter() - started) * 1000
        assert any(RECOVERING in line for line in broker.output)
        assert high_watermarks(broker.bootstrap, "g", 4) == before
        print(
            f"\nrestart: after SIGTERM {clean_restart_ms:.0f} ms (no recovery), after SIGKILL "
            f"{unclean_restart_ms:.0f} ms (process start to ready line)"
        )
    finally:
        broker.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_restart_after_kill_of_a_broker_holding_1_gib_in_100_partitions(tmp_path):
    data_dir = str(tmp_path / "data")
    partitions, value_bytes = 100, 10 * 1024
    records = (1024**3) // value_bytes
    broker = BrokerProcess(data_dir, overrides={"log.segment.bytes": str(64 * 1024 * 1024)}).start()
    try:
        create(broker.bootstrap, "big", partitions)
        started = time.perf_counter()
        produce(broker.bootstrap, "big", partitions, records, value_bytes)
        produce_s = time.perf_counter() - started
        before = high_watermarks(broker.bootstrap, "big", partitions)
        stored = sum(
            os.path.getsize(os.path.join(root, n))
            for root, _, names in os.walk(data_dir)
            for n in names
            if n.endswith(".log")
        )
        broker.kill()
        started = time.perf_counter()
        broker.start()
        ready_s = time.perf_counter() - started
        assert any(RECOVERING in line for line in broker.output)
        after = high_watermarks(broker.bootstrap, "big", partitions)
        answered_s = time.perf_counter() - started
        assert after == before
        ready_line = next(line for line in broker.output if "ready on" in line)
        print(
            f"\n1 GiB restart: {stored / 1024**3:.2f} GiB in {partitions} partitions (produced in "
            f"{produce_s:.0f} s); after kill -9 ready in {ready_s:.2f} s, all high watermarks answered in "
            f"{answered_s:.2f} s; broker says: {ready_line.strip()}"
        )
        broker.stop()
        started = time.perf_counter()
        broker.start()
        print(f"clean restart of the same data: ready in {time.perf_counter() - started:.2f} s")
    finally:
        broker.stop()
