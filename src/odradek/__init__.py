"""Odradek: an event streaming platform in Python that speaks the Apache Kafka wire protocol."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import odradek` stays cheap for the CLI and the pytest plugin.
    if name == "Broker":
        from odradek.broker.embedded import Broker

        return Broker
    raise AttributeError(name)


__all__ = ["Broker", "__version__"]
