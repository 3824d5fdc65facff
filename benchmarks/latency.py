"""End-to-end latency at a fixed rate: produce time to consume time, p50 / p99 / p99.9.

The producer (this process) sends `rate_mb_s` of `record_bytes` records in 1 ms ticks and
writes CLOCK_MONOTONIC nanoseconds (system-wide on Linux) into each record's first 8 bytes at
the produce() call; a consumer in a child process reads them back and records now - sent. The
first `warmup_s` of records are not counted. The consumer uses librdkafka's defaults for
fetching (fetch.wait.max.ms=500, fetch.min.bytes=1), so a server that does not answer a waiting
Fetch as soon as data arrives shows it here. Producer: acks=all, linger.ms=1.
"""

from __future__ import annotations

import multiprocessing
import struct
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

_STAMP = struct.Struct(">q")
TICK_S = 0.001
WARMUP_S = 1.0
CONSUMER_READY_TIMEOUT_S = 30.0


@dataclass
class Latency:
    rate_mb_s: float
    achieved_mb_s: float
    records: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    lost: int


def _consumer_main(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float, ready, results
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "odradek-bench-latency",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    consumer.consume(1, 0.5)
    ready.set()
    latencies_ns: list[int] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    now_ns, unpack = time.monotonic_ns, _STAMP.unpack_from
    while seen < expected and time.monotonic() < deadline:
        # poll(), not consume(n, timeout): consume waits until it has n records or times out,
        # which would add the wait to every record's latency.
        message = consumer.poll(0.1)
        if message is None or message.error():
            continue
        received_ns = now_ns()
        seen += 1
        sent_ns = unpack(message.value())[0]
        if sent_ns > 0:  # 0 marks a warm-up record
            latencies_ns.append(received_ns - sent_ns)
    consumer.close()
    results.put((seen, latencies_ns))


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


def measure(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    rate_mb_s: float,
    record_bytes: int,
    duration_s: float,
) -> Latency:
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    per_tick = max(1, round(rate_mb_s * 1e6 / record_bytes * TICK_S))
    ticks = int((WARMUP_S + duration_s) / TICK_S)
    expected = per_tick * ticks
    child = ctx.Process(
        target=_consumer_main,
        daemon=True,
        args=(bootstrap, topic, partitions, expected, duration_s + 30, ready, results),
    )
    child.start()
    if not ready.wait(CONSUMER_READY_TIMEOUT_S):
        child.kill()
        raise RuntimeError("latency consumer did not start")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 1,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    body = bytearray(b"x" * record_bytes)
    started = time.perf_counter()
    warm_until = started + WARMUP_S
    produce_fn, pack = producer.produce, _STAMP.pack_into
    for tick in range(ticks):
        due = started + tick * TICK_S
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        warm = time.perf_counter() < warm_until
        for _ in range(per_tick):
            pack(body, 0, 0 if warm else time.monotonic_ns())
            produce_fn(topic, bytes(body))
        producer.poll(0)
    elapsed_s = time.perf_counter() - started
    producer.flush(30)
    seen, latencies_ns = results.get(timeout=duration_s + 60)
    child.join(10)
    latencies_ns.sort()
    return Latency(
        rate_mb_s,
        expected * record_bytes / elapsed_s / 1e6,
        len(latencies_ns),
        percentile(latencies_ns, 0.50),
        percentile(latencies_ns, 0.99),
        percentile(latencies_ns, 0.999),
        latencies_ns[-1] / 1e6 if latencies_ns else float("nan"),
        expected - seen,
    )
