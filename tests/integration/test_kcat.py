"""kcat (Debian's librdkafka build) against a real broker process."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from odradek.client.partitioner import partition_for_key

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat is not installed (CI installs Debian's kcat package)")


def kcat(*args, stdin=None, timeout=30):
    result = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_and_consume_keyed_lines(broker, topic_name, codec):
    lines = [f"key{i % 17}:value-{i}" for i in range(1000)]
    # Auto-created topic with one partition (num.partitions=1), keyed by kcat's -K.
    kcat("-b", broker.bootstrap, "-t", topic_name, "-P", "-K", ":", "-z", codec,
         stdin=("\n".join(lines) + "\n").encode())
    out = kcat("-b", broker.bootstrap, "-t", topic_name, "-C", "-e", "-f", "%k:%s\n")
    assert out.splitlines() == lines


def test_kcat_metadata_lists_broker_and_topic(broker, topic_name):
    kcat("-b", broker.bootstrap, "-t", topic_name, "-P", stdin=b"x\n")
    out = kcat("-b", broker.bootstrap, "-L", "-t", topic_name)
    assert f"broker 1 at {broker.bootstrap}" in out
    assert f'topic "{topic_name}" with 1 partitions' in out


def test_kcat_murmur2_partitioner_matches_ours(broker, topic_name):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, num_partitions=6, replication_factor=1)])[topic_name].result(10)
    keys = [f"user-{i}" for i in range(200)]
    kcat("-b", broker.bootstrap, "-t", topic_name, "-P", "-K", ":", "-X", "partitioner=murmur2_random",
         stdin=("\n".join(f"{k}:v" for k in keys) + "\n").encode())
    out = kcat("-b", broker.bootstrap, "-t", topic_name, "-C", "-e", "-f", "%k %p\n")
    placed = dict(line.split() for line in out.splitlines())
    assert {k: int(p) for k, p in placed.items()} == {k: partition_for_key(k.encode(), 6) for k in keys}
