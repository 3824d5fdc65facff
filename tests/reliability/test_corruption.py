"""Corruption on disk: flipped, zeroed and truncated bytes in a stopped broker's files.

A broker holding several segments per partition is killed (SIGKILL, so the next start recovers
from the recovery point, here 0: the offset checkpoint interval is never reached). For each seed,
a copy of its data dir gets a few random corruptions in segments, indexes, time indexes, producer
snapshots, checkpoints, partition.metadata and leader-epoch files; the broker must then start, and a confluent-kafka
consumer with `check.crcs=true` must read every partition without a CRC (or any) error, and what it
reads must be a prefix of what was acknowledged, at the same offsets. Corrupting the metadata log
or meta.properties may lose topics, but the broker must either serve or refuse to start with one clear line, never
with a traceback.
"""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.testing.process import BrokerProcess

TOPIC = "corrupt"
PARTITIONS = 2
RECORDS = 6000
VALUE_BYTES = 900
SEEDS = int(os.environ.get("ODRADEK_CORRUPTION_SEEDS", "8"))
METADATA_SEEDS = int(os.environ.get("ODRADEK_METADATA_CORRUPTION_SEEDS", "4"))
OVERRIDES = {"log.flush.offset.checkpoint.interval.ms": "3600000"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """(data dir of a killed broker, {partition: [values by offset]})."""
    data_dir = str(tmp_path_factory.mktemp("pristine") / "data")
    broker = BrokerProcess(data_dir, overrides=OVERRIDES).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics(
            [
                NewTopic(
                    TOPIC,
                    num_partitions=PARTITIONS,
                    replication_factor=1,
                    config={"segment.bytes": str(1024 * 1024)},
                )
            ]
        )[TOPIC].result(10)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "none",
                "batch.size": 64 * 1024,
            }
        )
        acked: dict[int, dict[int, bytes]] = {p: {} for p in range(PARTITIONS)}
        for i in range(RECORDS):
            value = (f"{i:08d}-".encode() * (VALUE_BYTES // 9 + 1))[:VALUE_BYTES]
            while True:
                try:
                    producer.produce(
                        TOPIC,
                        value=value,
                        partition=i % PARTITIONS,
                        on_delivery=lambda err, msg: (
                            err is None
                            and acked[msg.partition()].__setitem__(msg.offset(), msg.value())
                        ),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0
        broker.kill()
    finally:
        broker.stop()
    logs = {p: [acked[p][o] for o in range(len(acked[p]))] for p in range(PARTITIONS)}
    assert sum(map(len, logs.values())) == RECORDS
    segments = [n for n in os.listdir(os.path.join(data_dir, f"{TOPIC}-0")) if n.endswith(".log")]
    assert len(segments) >= 2, segments
    return data_dir, logs


def corrupt(data_dir: str, rng: random.Random, *, include_metadata: bool) -> list[str]:
    """A few random corruptions of files in `data_dir`; returns what was done."""
    files = []
    for root, _, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(root, name)
            # The metadata log and meta.properties (the node's identity): losing them may lose
            # topics or refuse the start; everything else must recover to a prefix.
            is_metadata = "__cluster_metadata" in root or name == "meta.properties"
            if name != ".lock" and is_metadata == include_metadata:
                files.append(path)
    done = []
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(files)
        size = os.path.getsize(path)
        kind = rng.choice(("flip", "zero", "truncate", "garbage"))
        with open(path, "r+b") as f:
            if size == 0:
                kind = "garbage"
            if kind == "flip":
                position = rng.randrange(size)
                f.seek(position)
                byte = f.read(1)[0]
                f.seek(position)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
            elif kind == "zero":
                position = rng.randrange(size)
                f.seek(position)
                f.write(bytes(min(size - position, rng.randint(1, 4096))))
            elif kind == "truncate":
                position = rng.randrange(size)
                f.truncate(position)
            else:
                f.seek(0, os.SEEK_END)
                f.write(rng.randbytes(rng.randint(1, 300)))
                position = size
        done.append(f"{kind} {os.path.relpath(path, data_dir)} at {position} of {size}")
    return done


def read_all(bootstrap: str) -> tuple[dict[int, list[tuple[int, bytes]]], list[str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "corruption-check",
            "check.crcs": True,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    errors: list[str] = []
    try:
        high = {
            p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), 10)[1]
            for p in range(PARTITIONS)
        }
        pending = {p for p in range(PARTITIONS) if high[p] > 0}
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(2000, 0.3):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        errors.append(str(msg.error()))
                    elif msg.offset() >= high[msg.partition()]:
                        pending.discard(msg.partition())
                    continue
                got[msg.partition()].append((msg.offset(), msg.value()))
                if msg.offset() + 1 >= high[msg.partition()]:
                    pending.discard(msg.partition())
        if pending:
            errors.append(f"partitions {sorted(pending)} not read up to {high}")
    finally:
        consumer.close()
    return got, errors


def test_corrupted_segments_indexes_and_checkpoints_recover_to_a_prefix(pristine, tmp_path):
    source, logs = pristine
    kept_total = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        data_dir = str(tmp_path / f"seed-{seed}")
        shutil.copytree(source, data_dir)
        done = corrupt(data_dir, rng, include_metadata=False)
        broker = BrokerProcess(data_dir, overrides=OVERRIDES)
        try:
            broker.start()
            got, errors = read_all(broker.bootstrap)
            assert broker.process.poll() is None, "broker died:\n" + "".join(broker.output[-30:])
        finally:
            broker.stop()
        context = f"seed {seed}: {done}"
        assert errors == [], context
        assert "Traceback" not in "".join(broker.output), context + "".join(broker.output)
        for partition, records in got.items():
            offsets = [o for o, _ in records]
            assert offsets == list(range(len(records))), f"{context}: offsets are not a prefix"
            assert [v for _, v in records] == logs[partition][: len(records)], (
                f"{context}: values differ"
            )
            kept_total += len(records)
    print(f"\ncorruption: seeds={SEEDS} kept={kept_total} of {SEEDS * RECORDS} records (prefixes)")


def test_corrupted_metadata_log_serves_or_refuses_with_one_line(pristine, tmp_path):
    source, logs = pristine
    outcomes = {"served": 0, "served_without_partitions": 0, "refused": 0}
    for seed in range(METADATA_SEEDS):
        rng = random.Random(1000 + seed)
        data_dir = str(tmp_path / f"seed-{seed}")
        shutil.copytree(source, data_dir)
        done = corrupt(data_dir, rng, include_metadata=True)
        broker = BrokerProcess(data_dir, overrides=OVERRIDES)
        try:
            broker.start()
            if not any("ready on" in line for line in broker.output):
                # BrokerProcess.start can return for a broker that exited at start, when its
                # stderr closes before the exit is reaped (reported); treat it as the refusal.
                broker.process.wait(10)
                raise RuntimeError("".join(broker.output))
        except RuntimeError as exc:
            output = str(exc)
            assert "Traceback" not in output, f"seed {seed}: {done}\n{output}"
            assert "odradek:" in output, f"seed {seed}: {done}\n{output}"
            outcomes["refused"] += 1
            continue
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            try:
                metadata = admin.list_topics(timeout=10)
            except Exception as exc:
                raise AssertionError(
                    f"seed {seed}: {done}: {exc}\n" + "".join(broker.output[-20:])
                ) from exc
            if TOPIC in metadata.topics and len(metadata.topics[TOPIC].partitions) < PARTITIONS:
                # A cut inside a topic's creation records keeps the topic without its partitions
                # (found here; reported): the broker serves, the partitions are gone.
                outcomes["served_without_partitions"] += 1
            elif TOPIC in metadata.topics:
                try:
                    got, errors = read_all(broker.bootstrap)
                except Exception as exc:
                    raise AssertionError(
                        f"seed {seed}: {done}: {metadata.topics[TOPIC].partitions} "
                        + "".join(broker.output[-20:])
                    ) from exc
                assert errors == [], f"seed {seed}: {done}"
                for partition, records in got.items():
                    assert [v for _, v in records] == logs[partition][: len(records)]
            outcomes["served"] += 1
        finally:
            broker.stop()
        assert "Traceback" not in "".join(broker.output), f"seed {seed}: {done}\n" + "".join(
            broker.output
        )
    print(f"\nmetadata corruption: {outcomes}")
