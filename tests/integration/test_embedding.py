"""Embedding Odradek: `odradek.Broker` in-process (asyncio and thread) and the pytest plugin."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import odradek
from odradek.testing.raw import RawConnection

pytest_plugins = ["pytester"]


def roundtrip_with_confluent(bootstrap: str, topic: str) -> list[bytes]:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(3):
        producer.produce(topic, value=b"v%d" % i)
    assert producer.flush(10) == 0
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "embed", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    try:
        while len(got) < 3 and time.monotonic() < deadline:
            for msg in consumer.consume(10, 0.2):
                assert msg.error() is None
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_broker_is_exported_lazily_from_the_package():
    from odradek.broker.embedded import Broker

    assert odradek.Broker is Broker


def test_broker_as_async_context_manager_on_port_0():
    async def main():
        async with odradek.Broker() as broker:
            host, port = broker.bootstrap.rsplit(":", 1)
            assert host == "127.0.0.1" and int(port) > 0
            data_dir = broker.data_dir
            assert os.path.isdir(data_dir)
            reader, writer = await asyncio.open_connection(host, int(port))
            # ApiVersions v0: header (key 18, version 0, correlation 5, client id null), no body.
            writer.write(b"\x00\x00\x00\x0a" + b"\x00\x12\x00\x00\x00\x00\x00\x05\xff\xff")
            size = int.from_bytes(await reader.readexactly(4), "big")
            body = await reader.readexactly(size)
            assert body[:4] == b"\x00\x00\x00\x05" and body[4:6] == b"\x00\x00"
            writer.close()
        return data_dir

    data_dir = asyncio.run(main())
    assert not os.path.exists(data_dir)  # the temporary data directory is removed


def test_broker_in_a_thread_serves_a_real_client(tmp_path):
    broker = odradek.Broker(str(tmp_path / "data"), num_partitions=1).start_in_thread()
    try:
        assert roundtrip_with_confluent(broker.bootstrap, "embedded") == [b"v0", b"v1", b"v2"]
    finally:
        broker.stop_thread()
    # A data dir the caller chose is kept, and a new broker finds the records there.
    with odradek.Broker(str(tmp_path / "data")) as again:
        assert again.port > 0
        with RawConnection(again.bootstrap) as conn:
            m = conn.module("list_offsets", 1)
            response = conn.request(
                m.ListOffsetsRequest(
                    replica_id=-1,
                    topics=(
                        m.ListOffsetsTopic(
                            name="embedded",
                            partitions=(m.ListOffsetsPartition(partition_index=0, timestamp=-1),),
                        ),
                    ),
                )
            )
            assert response.topics[0].partitions[0].offset == 3


def test_two_brokers_on_port_0_get_different_ports():
    with odradek.Broker() as a, odradek.Broker() as b:
        assert a.port != b.port


def test_pytest_plugin_fixtures_work_in_a_users_test_suite(pytester):
    pytester.makepyfile(
        test_user="""
        import time
        import confluent_kafka
        from odradek.testing.raw import RawConnection

        def roundtrip(bootstrap, topic):
            producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
            producer.produce(topic, value=b"hello", partition=0)
            assert producer.flush(10) == 0
            consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "g"})
            consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
            deadline = time.monotonic() + 10
            try:
                while time.monotonic() < deadline:
                    msg = consumer.poll(0.2)
                    if msg is not None:
                        assert msg.error() is None
                        return msg.value()
            finally:
                consumer.close()

        def test_session_broker(kafka_bootstrap, odradek_broker):
            assert kafka_bootstrap == odradek_broker.bootstrap
            assert roundtrip(kafka_bootstrap, "user-topic") == b"hello"

        def test_session_broker_is_shared(kafka_bootstrap, odradek_broker):
            assert "user-topic" in {p.topic for p in odradek_broker.core.replica_manager.partitions.values()}

        def test_factory_starts_isolated_brokers_with_configs(odradek_broker_factory, kafka_bootstrap):
            broker = odradek_broker_factory(num_partitions=3)
            assert broker.bootstrap != kafka_bootstrap
            with RawConnection(broker.bootstrap) as conn:
                m = conn.module("metadata", 12)
                response = conn.request(m.MetadataRequest(
                    topics=(m.MetadataRequestTopic(name="auto", topic_id=__import__("uuid").UUID(int=0)),),
                    allow_auto_topic_creation=True, include_topic_authorized_operations=False))
                assert len(response.topics[0].partitions) == 3
            assert roundtrip(broker.bootstrap, "auto") == b"hello"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)
