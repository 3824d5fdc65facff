"""Producer and consumer throughput with confluent-kafka (librdkafka), against any bootstrap.

    result = produce(bootstrap, topic, record_bytes=1024, acks="all", compression="none",
                     duration_s=5.0)
    result = consume(bootstrap, topic, partitions=4, expected_records=result.records)

Payloads are half random bytes and half a repeated pattern, so lz4 has something to do (about
2:1) without the data being trivially compressible. A produce run sends for `duration_s`, then
flushes; the elapsed time includes the flush. The record count is what the client had
acknowledged (sent minus delivery errors minus unflushed); the sum of the server's log end offsets
(ListOffsets latest, fresh topic) is read back too and a mismatch is reported, not hidden.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

CLIENT_TIMEOUT_S = 30.0
CONSUME_BATCH_RECORDS = 10_000
PAYLOAD_POOL = 64  # distinct payloads cycled through, so batches are not all one value


@dataclass
class Throughput:
    records: int
    payload_bytes: int
    elapsed_s: float
    errors: int = 0
    log_end_offsets: int | None = None  # the server's ListOffsets(latest) sum after the run
    first_records_s: float | None = None  # consume: start to the first consume() call with records
    client_ready_s: float | None = None  # consume: the untimed lookup that makes the leaders known

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.elapsed_s / 1e6 if self.elapsed_s else 0.0


def payloads(record_bytes: int) -> list[bytes]:
    half = record_bytes // 2
    pattern = (b"odradek-benchmark-" * (record_bytes // 18 + 1))[: record_bytes - half]
    return [os.urandom(half) + pattern for _ in range(PAYLOAD_POOL)]


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, partitions, 1)],
        operation_timeout=CLIENT_TIMEOUT_S,
        request_timeout=CLIENT_TIMEOUT_S,
    )
    futures[topic].result(CLIENT_TIMEOUT_S)
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while time.monotonic() < deadline:  # wait until metadata shows every partition
        md = admin.list_topics(topic, timeout=CLIENT_TIMEOUT_S)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} not visible with {partitions} partitions")


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_topics([topic], operation_timeout=CLIENT_TIMEOUT_S)[topic].result(
            CLIENT_TIMEOUT_S
        )
    except (KafkaException, TimeoutError) as exc:  # the topic stays; say so and go on
        print(f"  (delete {topic}: {exc})")


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """Log end offsets via ListOffsets (AdminClient: no consumer group, no FindCoordinator)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    futures = admin.list_offsets(request, request_timeout=CLIENT_TIMEOUT_S)
    return [futures[tp].result(CLIENT_TIMEOUT_S).offset for tp in request]


def produce(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    record_bytes: int,
    acks: str,
    compression: str,
    duration_s: float,
    max_bytes: int | None = None,
) -> Throughput:
    errors = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "compression.type": compression,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 256 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "delivery.report.only.error": True,
            "on_delivery": lambda err, msg: errors.append(err) if err else None,
        }
    )
    values = payloads(record_bytes)
    max_records = (max_bytes // record_bytes) if max_bytes else 1 << 62
    produce_fn, poll_fn = producer.produce, producer.poll
    sent = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    while sent < max_records:
        for value in values:
            try:
                produce_fn(topic, value)
            except BufferError:
                poll_fn(0.001)
                continue
            sent += 1
        poll_fn(0)
        if time.perf_counter() >= stop_at:
            break
    remaining = producer.flush(CLIENT_TIMEOUT_S)
    elapsed_s = time.perf_counter() - started
    records = sent - len(errors) - remaining
    log_end_offsets = sum(high_watermarks(bootstrap, topic, partitions))
    return Throughput(
        records, records * record_bytes, elapsed_s, len(errors) + remaining, log_end_offsets
    )


def consume(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    expected_records: int,
    record_bytes: int,
    timeout_s: float = 120.0,
    extra_config: dict | None = None,
    before_close=None,
    cold: bool = False,
) -> Throughput:
    """Read `expected_records` from the beginning of `topic` (assigned, no group).

    The clock starts at `assign()` of every partition at OFFSET_BEGINNING, so the timed read
    includes the ListOffsets lookups of the beginning and every Fetch. Before it, untimed, the
    new client looks up each partition's watermarks (`client_ready_s`): that makes the leaders
    known. Without it (`cold=True`, the figure of the runs before 2026-11-25's third session)
    librdkafka finds no leader for the partitions it was just assigned and retries their offset
    lookup on a fixed 500 ms timer (`rd_kafka_toppar_offset_request`: "no current leader for
    partition: (re)starting offset query timer"), whatever the server: half of a 256 MiB window.

    `extra_config` adds or overrides client settings, for diagnostics only (`consume_diag.py`:
    statistics, other fetch sizes); the benchmark passes none. `before_close(consumer)` runs after
    the timed loop.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "odradek-bench-consume",  # required by the client; no subscribe, no commits
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "fetch.wait.max.ms": 100,
            # librdkafka pauses fetching for this long once its queue passes queued.min.messages;
            # 0 keeps the client asking, so the figure is the server's and not the client's backoff.
            "fetch.queue.backoff.ms": 0,
        }
        | (extra_config or {})
    )
    client_ready_s = None
    if not cold:
        t0 = time.perf_counter()
        for p in range(partitions):
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=CLIENT_TIMEOUT_S)
        client_ready_s = time.perf_counter() - t0
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = errors = 0
    first_records_s = None
    deadline = started + timeout_s
    try:
        while got < expected_records and time.perf_counter() < deadline:
            # Never ask for more than remain: consume() waits for its count or its timeout.
            wanted = min(CONSUME_BATCH_RECORDS, expected_records - got)
            for message in consumer.consume(wanted, 0.5):
                if message.error():
                    errors += 1
                else:
                    got += 1
            if first_records_s is None and got:
                first_records_s = time.perf_counter() - started
        elapsed_s = time.perf_counter() - started
        if before_close is not None:
            before_close(consumer)
    finally:
        consumer.close()
    return Throughput(got, got * record_bytes, elapsed_s, errors, first_records_s=first_records_s,
                      client_ready_s=client_ready_s)
