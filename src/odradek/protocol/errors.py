"""Kafka error codes.

kio generates `ErrorCode` from Kafka's own `Errors.java` table, with each code's retriable flag,
so we re-export it rather than keep a copy. Handlers and cores return these codes; exceptions do
not cross layers.
"""

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode"]
