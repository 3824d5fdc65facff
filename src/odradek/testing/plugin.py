"""A pytest plugin: fixtures with a running Odradek broker for your own tests.

Installed with the package (entry point `pytest11`), so any project that depends on odradek gets:

    def test_my_pipeline(kafka_bootstrap):          # "127.0.0.1:<port>" of a session broker
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})

    def test_isolated(odradek_broker_factory):      # a fresh broker per call
        broker = odradek_broker_factory(num_partitions=3)

`odradek_broker` is one broker for the whole test session (a temporary data directory, a free
port on 127.0.0.1), running on a thread of its own so it serves synchronous and asyncio clients
alike. `odradek_broker_factory` starts extra brokers with Kafka configs as keyword arguments
(dots as underscores) and stops them at the end of the test.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def odradek_broker():
    from odradek.broker.embedded import Broker

    broker = Broker().start_in_thread()
    try:
        yield broker
    finally:
        broker.stop_thread()


@pytest.fixture(scope="session")
def kafka_bootstrap(odradek_broker) -> str:
    return odradek_broker.bootstrap


@pytest.fixture
def odradek_broker_factory():
    from odradek.broker.embedded import Broker

    started = []

    def start(data_dir: str | None = None, **configs):
        broker = Broker(data_dir, **configs).start_in_thread()
        started.append(broker)
        return broker

    yield start
    for broker in reversed(started):
        broker.stop_thread()
