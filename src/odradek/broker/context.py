"""What every handler receives besides its decoded request."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from odradek.protocol import apis

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore


@dataclass(slots=True)
class ClientInfo:
    """Per-connection facts: who is connected, from where, with which software (KIP-511)."""

    connection_id: str
    listener_name: str
    host: str
    port: int
    principal: str = "User:ANONYMOUS"  # until SASL lands
    software_name: str | None = None
    software_version: str | None = None


@dataclass(slots=True)
class RequestContext:
    """A request's header facts, its connection, and the broker services a handler may call.

    Handlers read `broker` for the metadata image, logs and coordinators; they never touch the
    socket. `response_module` holds kio's response classes for this request's version.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    client: ClientInfo
    broker: "BrokerCore"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def response_module(self) -> ModuleType:
        return apis.response_module(self.api_key, self.api_version)

    @property
    def response_class(self) -> type:
        return apis.response_codec(self.api_key, self.api_version)[0]

    def response(self, **fields: Any) -> Any:
        """The response payload for this version, built from a superset of fields."""
        return apis.make(self.response_class, **fields)

    def entity(self, class_name: str, **fields: Any) -> Any:
        """A nested response entity (e.g. "MetadataResponseTopic") for this version."""
        return apis.make(getattr(self.response_module, class_name), **fields)
