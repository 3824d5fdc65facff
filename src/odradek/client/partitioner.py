"""Kafka's default partitioner: murmur2 for keyed records, round-robin for keyless ones.

Keyed records go to `toPositive(murmur2(key)) % num_partitions`, exactly as Kafka's Java producer
(`BuiltInPartitioner.partitionForKey`, `Utils.murmur2` with seed 0x9747b28c, `Utils.toPositive`
clears the sign bit rather than taking abs()). librdkafka's `murmur2_random` partitioner, the
Java client and kafka-python agree on this, so a key written by any of them lands on the same
partition as one written by `odradek produce`.

Keyless records: `RoundRobinPartitioner` spreads whole batches, one partition after another
(the Java client's sticky partitioner also switches partition per batch; we switch on every call,
which is the same thing when one call is made per batch). Pure, no I/O; not thread-safe.
"""

from __future__ import annotations

MURMUR2_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 of `data`, as a signed Java int."""
    data = bytes(data)
    length = len(data)
    h = (MURMUR2_SEED ^ length) & _MASK32
    words = length // 4
    for i in range(words):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = words * 4
    remaining = length - tail
    if remaining >= 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's `Utils.toPositive`: clear the sign bit of a 32-bit int (not abs())."""
    return number & 0x7FFFFFFF


def partition_for_key(key: bytes | bytearray | memoryview, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    if num_partitions <= 0:
        raise ValueError(f"a topic has at least one partition, not {num_partitions}")
    return to_positive(murmur2(key)) % num_partitions


class RoundRobinPartitioner:
    """Picks partitions for keyed records by murmur2 and for keyless ones round-robin.

    Holds one counter per topic for keyless records. Owned by one producer; not thread-safe.
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, num_partitions: int) -> int:
        if key is not None:
            return partition_for_key(key, num_partitions)
        if num_partitions <= 0:
            raise ValueError(f"a topic has at least one partition, not {num_partitions}")
        counter = self._next.get(topic, 0)
        self._next[topic] = counter + 1
        return counter % num_partitions
