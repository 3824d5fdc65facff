"""Disk full: a broker on a small tmpfs answers appends that hit ENOSPC with KAFKA_STORAGE_ERROR,
keeps serving reads, keeps a valid log, and appends again once space is back.

Needs root (to mount a tmpfs); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.testing.process import BrokerProcess

TMPFS_BYTES = 6 * 1024 * 1024
VALUE_BYTES = 50 * 1024
TOPIC = "full"


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield str(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def produce(bootstrap, values):
    """Produce each value (no retries, no idempotence, so an error reaches us); returns
    [(offset or None, error code or None)]."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "retries": 0,
            "linger.ms": 0,
            "compression.type": "none",
            "log_level": 0,
        }
    )
    results = []

    def on_delivery(err, msg):
        results.append((None, err.code()) if err is not None else (msg.offset(), None))

    for value in values:
        producer.produce(TOPIC, value=value, partition=0, on_delivery=on_delivery)
        producer.flush(10)
    return results


def read_all(bootstrap):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "full-check",
            "check.crcs": True,
            "enable.auto.commit": False,
            "log_level": 0,
            "fetch.message.max.bytes": 1024 * 1024,
        }
    )
    try:
        high = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), 10)[1]
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        got, errors = [], []
        deadline = time.monotonic() + 20
        while len(got) < high and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.3):
                if msg.error() is not None:
                    errors.append(str(msg.error()))
                else:
                    got.append((msg.offset(), msg.value()))
        return got, errors
    finally:
        consumer.close()


def test_disk_full_answers_storage_error_keeps_reads_and_recovers(small_disk):
    data_dir = os.path.join(small_disk, "data")
    broker = BrokerProcess(data_dir, overrides={"log.segment.bytes": str(1024 * 1024)}).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[
            TOPIC
        ].result(10)
        filler = os.path.join(small_disk, "filler")
        with open(filler, "wb") as f:  # leave about 2 MiB for the broker
            f.write(b"\0" * (TMPFS_BYTES - 2 * 1024 * 1024 - 64 * 1024))

        values = [f"{i:06d}".encode() * (VALUE_BYTES // 6) for i in range(80)]
        results = produce(broker.bootstrap, values)
        acked = [(offset, values[i]) for i, (offset, error) in enumerate(results) if error is None]
        errors = [error for _, error in results if error is not None]
        print(
            f"\ndisk full: acked={len(acked)} refused={len(errors)} codes={sorted(set(map(str, errors)))}"
        )
        assert acked and errors, "the tmpfs should have filled up part way"
        assert set(errors) == {KafkaError.KAFKA_STORAGE_ERROR}
        assert broker.process.poll() is None

        got, read_errors = read_all(broker.bootstrap)  # reads keep working while the disk is full
        assert read_errors == []
        assert got == acked

        os.unlink(filler)  # space is back: appends work again, at the next offsets
        more = produce(broker.bootstrap, values[:5])
        assert [e for _, e in more] == [None] * 5, more
        assert [o for o, _ in more] == list(range(len(acked), len(acked) + 5))
        acked += [(o, values[i]) for i, (o, _) in enumerate(more)]
        got, read_errors = read_all(broker.bootstrap)
        assert read_errors == [] and got == acked

        broker.kill()  # and the log on disk is valid: recovery keeps every acknowledged record
        broker.start()
        got, read_errors = read_all(broker.bootstrap)
        assert read_errors == [] and got == acked
        assert "Traceback" not in "".join(broker.output)
    finally:
        broker.stop()
