"""murmur2 and the default partitioner agree with Kafka's Java client and with kafka-python."""

from __future__ import annotations

import random

import pytest

from odradek.client.partitioner import (
    RoundRobinPartitioner,
    murmur2,
    partition_for_key,
    to_positive,
)

# Kafka's own UtilsTest.testMurmur2 vectors (signed Java ints).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key,expected", sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka_utils_test_vectors(key, expected):
    assert murmur2(key) == expected


def test_murmur2_of_empty_key_is_defined():
    assert -(2**31) <= murmur2(b"") < 2**31


def test_murmur2_matches_kafka_python_on_random_keys():
    kafka_default = pytest.importorskip("kafka.partitioner.default")
    rng = random.Random(20261125)
    for _ in range(5000):
        key = rng.randbytes(rng.randrange(0, 64))
        assert murmur2(key) & 0xFFFFFFFF == kafka_default.murmur2(key) & 0xFFFFFFFF, key


def test_partition_matches_kafka_python_default_partitioner_formula():
    kafka_default = pytest.importorskip("kafka.partitioner.default")
    rng = random.Random(7)
    for _ in range(3000):
        key = rng.randbytes(rng.randrange(1, 40))
        partitions = rng.randrange(1, 100)
        expected = (kafka_default.murmur2(key) & 0x7FFFFFFF) % partitions
        assert partition_for_key(key, partitions) == expected


def test_to_positive_clears_the_sign_bit_rather_than_taking_abs():
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5
    # "21" hashes negative: masking gives a different partition than abs() would for some counts.
    assert partition_for_key(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7


def test_keyed_records_always_land_on_the_same_partition():
    partitioner = RoundRobinPartitioner()
    first = partitioner.partition("t", b"user-42", 12)
    assert all(partitioner.partition("t", b"user-42", 12) == first for _ in range(20))


def test_keyless_records_go_round_robin_per_topic():
    partitioner = RoundRobinPartitioner()
    assert [partitioner.partition("a", None, 3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert partitioner.partition("b", None, 3) == 0


def test_zero_partitions_is_an_error():
    with pytest.raises(ValueError):
        partition_for_key(b"k", 0)
    with pytest.raises(ValueError):
        RoundRobinPartitioner().partition("t", None, 0)
