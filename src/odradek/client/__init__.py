"""A small asyncio Kafka client (for the CLI and our tools) and Kafka's default partitioner.

Import from the submodules (`odradek.client.client`, `.connection`, `.partitioner`); the names
below are loaded lazily so that `import odradek.client` costs nothing.
"""

from __future__ import annotations

_EXPORTS = {
    "Client": "odradek.client.client",
    "FetchResult": "odradek.client.client",
    "EARLIEST_TIMESTAMP": "odradek.client.client",
    "LATEST_TIMESTAMP": "odradek.client.client",
    "BrokerConnection": "odradek.client.connection",
    "KafkaClientError": "odradek.client.connection",
    "KafkaConnectionError": "odradek.client.connection",
    "KafkaError": "odradek.client.connection",
    "RequestTimeoutError": "odradek.client.connection",
    "murmur2": "odradek.client.partitioner",
    "partition_for_key": "odradek.client.partitioner",
    "RoundRobinPartitioner": "odradek.client.partitioner",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [  # noqa: RUF022
    "BrokerConnection",
    "Client",
    "EARLIEST_TIMESTAMP",
    "FetchResult",
    "KafkaClientError",
    "KafkaConnectionError",
    "KafkaError",
    "LATEST_TIMESTAMP",
    "RequestTimeoutError",
    "RoundRobinPartitioner",
    "murmur2",
    "partition_for_key",
]
