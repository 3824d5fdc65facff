"""confluent-kafka (librdkafka) against a real broker process: produce, consume, admin, restart."""

from __future__ import annotations

import time
from datetime import timedelta
from collections import defaultdict

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic  # noqa: E402

from odradek.client.partitioner import partition_for_key  # noqa: E402
from odradek.protocol import records as batches  # noqa: E402
from odradek.testing.raw import RawConnection  # noqa: E402

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RECORDS_PER_CODEC = 10_000


def create_topic(bootstrap, name, partitions, **configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                  config={k: str(v) for k, v in configs.items()})])[name].result(10)


def produce_all(bootstrap, topic, messages, **config):
    """Produce (key, value, headers) tuples; returns the delivery reports in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "partitioner": "murmur2_random", "linger.ms": 5, **config})
    reports, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            reports.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert errors == []
    return reports


def consume_all(bootstrap, topic, partitions, expected, timeout_s=60):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 2 * 1024 * 1024})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                assert msg.error() is None, msg.error()
                got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(),
                            msg.timestamp()))
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_keyed_records_round_trip_per_codec(broker, topic_name, codec):
    partitions = 4
    create_topic(broker.bootstrap, topic_name, partitions)
    messages = [(f"key-{i % 97}".encode(), f"{codec}-value-{i}".encode() * 3, None)
                for i in range(RECORDS_PER_CODEC)]
    reports = produce_all(broker.bootstrap, topic_name, messages, **{"compression.type": codec})
    assert len(reports) == RECORDS_PER_CODEC

    got = consume_all(broker.bootstrap, topic_name, partitions, RECORDS_PER_CODEC)
    assert len(got) == RECORDS_PER_CODEC
    by_partition = defaultdict(list)
    for partition, offset, key, value, _, _ in got:
        by_partition[partition].append((offset, key, value))
    sent = defaultdict(list)
    for key, value, _ in messages:
        sent[partition_for_key(key, partitions)].append((key, value))
    for partition, records in by_partition.items():
        # In order, with the offsets 0..n-1, and exactly what was sent to that partition.
        assert [offset for offset, _, _ in records] == list(range(len(records)))
        assert [(k, v) for _, k, v in records] == sent[partition]
    # Every key lives in exactly one partition, the one Kafka's murmur2 partitioner picks.
    for partition, _, key, _ in reports:
        assert partition == partition_for_key(key, partitions)


def test_confluent_headers_null_keys_and_null_values(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    messages = [
        (None, b"no key", [("h1", b"v1"), ("h2", None)]),
        (b"no value", None, [("only", b"header")]),
        (None, None, None),
        (b"k", b"", [("empty", b"")]),
    ]
    produce_all(broker.bootstrap, topic_name, messages)
    got = consume_all(broker.bootstrap, topic_name, 1, len(messages))
    assert [(k, v) for _, _, k, v, _, _ in got] == [(k, v) for k, v, _ in messages]
    assert got[0][4] == [("h1", b"v1"), ("h2", None)]
    assert got[1][4] == [("only", b"header")]
    assert got[2][4] is None
    assert got[3][4] == [("empty", b"")]


def test_confluent_900_kb_record(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    big = bytes(range(256)) * (900 * 1024 // 256)
    produce_all(broker.bootstrap, topic_name, [(b"big", big, None), (b"small", b"x", None)])
    got = consume_all(broker.bootstrap, topic_name, 1, 2)
    assert [v for _, _, _, v, _, _ in got] == [big, b"x"]


def test_confluent_record_over_message_max_bytes_is_refused(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, **{"max.message.bytes": 10_000})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "compression.type": "none"})
    errors = []
    producer.produce(topic_name, value=b"x" * 20_000, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE


def test_confluent_record_stamped_beyond_message_timestamp_after_max_ms_is_refused(broker, topic_name):
    """Kafka 4: a CreateTime record more than message.timestamp.after.max.ms (1 hour) ahead of the
    broker's clock gets INVALID_TIMESTAMP; nothing of it is stored."""
    create_topic(broker.bootstrap, topic_name, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    reports = []
    now_ms = int(time.time() * 1000)
    producer.produce(topic_name, value=b"soon", timestamp=now_ms + 30 * 60 * 1000,
                     on_delivery=lambda err, msg: reports.append(err))
    producer.flush(10)
    producer.produce(topic_name, value=b"too far", timestamp=now_ms + 2 * 3600 * 1000,
                     on_delivery=lambda err, msg: reports.append(err))
    producer.flush(10)
    assert reports[0] is None
    assert reports[1] is not None and reports[1].code() == confluent_kafka.KafkaError.INVALID_TIMESTAMP
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ts"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic_name, 0), 10) == (0, 1)
    finally:
        consumer.close()


@pytest.mark.parametrize("topic_codec,producer_codec", [("zstd", "none"), ("uncompressed", "lz4"),
                                                         ("gzip", "snappy"), ("lz4", "lz4")])
def test_confluent_topic_compression_type_recompresses_what_producers_send(broker, topic_name,
                                                                           topic_codec, producer_codec):
    """A topic's compression.type other than producer: batches are stored with the topic's codec
    (read back from the log's batch headers), and clients read the same records, in order."""
    create_topic(broker.bootstrap, topic_name, 1, **{"compression.type": topic_codec})
    messages = [(f"k{i}".encode(), f"value {i} ".encode() * 20, [("n", str(i).encode())]) for i in range(2_000)]
    reports = produce_all(broker.bootstrap, topic_name, messages, **{"compression.type": producer_codec})
    assert [offset for _, offset, _, _ in reports] == list(range(2_000))
    got = consume_all(broker.bootstrap, topic_name, 1, 2_000)
    assert [(k, v, [tuple(h) for h in hs]) for _, _, k, v, hs, _ in got] == \
        [(k, v, list(h)) for k, v, h in messages]
    wanted = {"zstd": 4, "uncompressed": 0, "gzip": 1, "lz4": 3}[topic_codec]
    with RawConnection(broker.bootstrap) as conn:
        fetch = conn.module("fetch", 12)
        response = conn.request(fetch.FetchRequest(
            replica_id=-1, max_wait=timedelta(0), min_bytes=1, max_bytes=64 << 20, isolation_level=0,
            session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
            topics=(fetch.FetchTopic(topic=topic_name, partitions=(fetch.FetchPartition(
                partition=0, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
                partition_max_bytes=64 << 20),)),)))
        data = bytes(response.responses[0].partitions[0].records)
    codecs = {h.compression for h in batches.iter_headers(data)}
    assert codecs == {wanted}


def test_confluent_offsets_for_times(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    base = 1_700_000_000_000
    for i in range(10):
        producer.produce(topic_name, value=f"v{i}".encode(), timestamp=base + i * 1000)
        producer.flush(10)  # one batch per record, so the lookup must look inside batches too
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "times"})
    try:
        def lookup(ts):
            return consumer.offsets_for_times([TopicPartition(topic_name, 0, ts)], 10)[0].offset

        assert lookup(base) == 0
        assert lookup(base + 4500) == 5
        assert lookup(base + 9000) == 9
        assert lookup(base + 99_000) == -1  # past the last record: OFFSET_END
        low, high = consumer.get_watermark_offsets(TopicPartition(topic_name, 0), 10)
        assert (low, high) == (0, 10)
    finally:
        consumer.close()


def test_confluent_admin_create_describe_delete(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1,
                                  config={"retention.ms": "3600000", "cleanup.policy": "compact"})])[topic_name].result(10)
    with pytest.raises(KafkaException) as exists:
        admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])[topic_name].result(10)
    assert exists.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as too_many:
        admin.create_topics([NewTopic(topic_name + "-rf", num_partitions=1, replication_factor=3)])[
            topic_name + "-rf"].result(10)
    assert too_many.value.args[0].code() == confluent_kafka.KafkaError.INVALID_REPLICATION_FACTOR

    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic_name].partitions) == 2

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].is_default

    admin.create_partitions([NewPartitions(topic_name, 5)])[topic_name].result(10)
    assert len(admin.list_topics(timeout=10).topics[topic_name].partitions) == 5

    admin.delete_topics([topic_name])[topic_name].result(10)
    assert topic_name not in admin.list_topics(timeout=10).topics


def test_confluent_restart_keeps_every_record_at_its_offset(fresh_broker, topic_name):
    fresh_broker.start()
    create_topic(fresh_broker.bootstrap, topic_name, 3)
    messages = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(3000)]
    before = sorted(produce_all(fresh_broker.bootstrap, topic_name, messages))

    fresh_broker.restart()  # SIGTERM: clean shutdown
    after = sorted((p, o, k, v) for p, o, k, v, _, _ in consume_all(fresh_broker.bootstrap, topic_name, 3, 3000))
    assert after == before

    fresh_broker.kill()  # SIGKILL: recovery on the next start
    fresh_broker.start()
    again = sorted((p, o, k, v) for p, o, k, v, _, _ in consume_all(fresh_broker.bootstrap, topic_name, 3, 3000))
    assert again == before
    # And the log continues at the next offsets.
    more = produce_all(fresh_broker.bootstrap, topic_name, [(b"k0", b"after", None)])
    partition, offset, _, _ = more[0]
    assert offset == max(o for p, o, _, _ in before if p == partition) + 1


def test_confluent_idempotent_producer_gets_a_producer_id_and_no_duplicates(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    messages = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(2000)]
    reports = produce_all(broker.bootstrap, topic_name, messages, **{"max.in.flight.requests.per.connection": 5})
    got = consume_all(broker.bootstrap, topic_name, 2, 2000)
    assert sorted(v for _, _, _, v, _, _ in got) == sorted(v for _, v, _ in messages)
    assert len({(p, o) for p, o, _, _ in reports}) == 2000


def test_cli_and_confluent_murmur2_random_put_every_key_in_the_same_partition(broker, topic_name):
    import subprocess
    import sys

    create_topic(broker.bootstrap, topic_name, 6)
    keys = [f"customer-{i}" for i in range(300)]
    lines = "".join(f"{k}:from-cli\n" for k in keys).encode()
    result = subprocess.run([sys.executable, "-m", "odradek", "produce", topic_name, "--key-separator", ":",
                             "--bootstrap-server", broker.bootstrap], input=lines, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    reports = produce_all(broker.bootstrap, topic_name, [(k.encode(), b"from-confluent", None) for k in keys])
    confluent_partition = {key.decode(): partition for partition, _, key, _ in reports}
    got = consume_all(broker.bootstrap, topic_name, 6, 2 * len(keys))
    cli_partition = {key.decode(): partition for partition, _, key, value, _, _ in got if value == b"from-cli"}
    assert len(cli_partition) == len(keys)
    assert cli_partition == confluent_partition
