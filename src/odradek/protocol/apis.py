"""The API table: api key -> handler module and the versions it serves.

ApiVersions is computed from this table, never written by hand. A handler module is named after
its API (`odradek.broker.handlers.<api_name>`) and exposes `MIN_VERSION`, `MAX_VERSION` and
`async def handle(request, ctx)`; it is imported the first time a request of its kind arrives,
so start-up does not pay for APIs nobody uses. kio supplies the request and response types for
every version (`kio.schema.<api_name>.v<N>`), also loaded on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any, Callable

from kio.index import load_payload_module
from kio.schema.index import api_key_map
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

HANDLERS_PACKAGE = "odradek.broker.handlers"


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str  # kio's snake_case name, also the handler module's name
    min_version: int
    max_version: int
    # Versions a client may negotiate but the broker refuses with UNSUPPORTED_VERSION when used
    # (Produce v0-2: advertised because of librdkafka's KAFKA-18659, as Kafka 4 does).
    min_usable_version: int


# (api key, advertised min, max, usable min). One line per API; the order is the wire's.
_TABLE: list[tuple[int, int, int, int]] = [
    (0, 0, 13, 3),   # Produce
    (1, 4, 18, 4),   # Fetch
    (2, 1, 10, 1),   # ListOffsets
    (3, 0, 13, 0),   # Metadata
    (8, 2, 9, 2),    # OffsetCommit
    (9, 1, 9, 1),    # OffsetFetch
    (10, 0, 6, 0),   # FindCoordinator
    (11, 0, 9, 0),   # JoinGroup
    (12, 0, 4, 0),   # Heartbeat
    (13, 0, 5, 0),   # LeaveGroup
    (14, 0, 5, 0),   # SyncGroup
    (15, 0, 6, 0),   # DescribeGroups
    (16, 0, 5, 0),   # ListGroups
    (18, 0, 4, 0),   # ApiVersions
    (19, 2, 7, 2),   # CreateTopics
    (20, 1, 6, 1),   # DeleteTopics
    (21, 0, 2, 0),   # DeleteRecords
    (22, 0, 5, 0),   # InitProducerId
    (23, 2, 4, 2),   # OffsetForLeaderEpoch
    (24, 0, 5, 0),   # AddPartitionsToTxn
    (25, 0, 4, 0),   # AddOffsetsToTxn
    (26, 0, 5, 0),   # EndTxn
    (27, 1, 1, 1),   # WriteTxnMarkers
    (28, 0, 5, 0),   # TxnOffsetCommit
    (32, 1, 4, 1),   # DescribeConfigs
    (33, 0, 2, 0),   # AlterConfigs
    (35, 1, 4, 1),   # DescribeLogDirs
    (37, 0, 3, 0),   # CreatePartitions
    (44, 0, 1, 0),   # IncrementalAlterConfigs
    (42, 0, 2, 0),   # DeleteGroups
    (43, 0, 2, 0),   # ElectLeaders
    (45, 0, 1, 0),   # AlterPartitionReassignments
    (46, 0, 0, 0),   # ListPartitionReassignments
    (47, 0, 0, 0),   # OffsetDelete
    (56, 2, 3, 2),   # AlterPartition (inter-broker: leaders to the controller; v0-1 gone in Kafka 4)
    (60, 0, 2, 0),   # DescribeCluster
    (61, 0, 0, 0),   # DescribeProducers
    (65, 0, 0, 0),   # DescribeTransactions
    (66, 0, 2, 0),   # ListTransactions
    (67, 0, 0, 0),   # AllocateProducerIds (inter-broker: brokers to the controller)
]


def _build(table: list[tuple[int, int, int, int]]) -> dict[int, Api]:
    apis: dict[int, Api] = {}
    for key, min_version, max_version, min_usable in table:
        if key in apis:
            raise AssertionError(f"api key {key} registered twice")
        apis[key] = Api(key, api_key_map[key], min_version, max_version, min_usable)
    return apis


APIS: dict[int, Api] = _build(_TABLE)


@lru_cache(maxsize=None)
def handler(api_key: int) -> Callable[..., Any]:
    module = importlib.import_module(f"{HANDLERS_PACKAGE}.{APIS[api_key].name}")
    return module.handle


@lru_cache(maxsize=None)
def request_codec(api_key: int, api_version: int) -> tuple[type, Callable, bool]:
    """(request class, reader, flexible) for one API version."""
    module = load_payload_module(api_key, api_version, EntityType.request)
    request_class = _payload_class(module, EntityType.request)
    return request_class, entity_reader(request_class), request_class.__flexible__


@lru_cache(maxsize=None)
def request_module(api_key: int, api_version: int) -> ModuleType:
    """kio's request module of one API version (for requests a broker sends to another)."""
    return load_payload_module(api_key, api_version, EntityType.request)


@lru_cache(maxsize=None)
def response_module(api_key: int, api_version: int) -> ModuleType:
    return load_payload_module(api_key, api_version, EntityType.response)


@lru_cache(maxsize=None)
def response_codec(api_key: int, api_version: int) -> tuple[type, Callable, bool]:
    module = response_module(api_key, api_version)
    response_class = _payload_class(module, EntityType.response)
    return response_class, entity_writer(response_class), response_class.__flexible__


def request_is_flexible(api_key: int, api_version: int) -> bool:
    return request_codec(api_key, api_version)[2]


def _payload_class(module: ModuleType, entity_type: EntityType) -> type:
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is entity_type:
            return value
    raise LookupError(f"no {entity_type.name} class in {module.__name__}")


@lru_cache(maxsize=None)
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


def make(cls: type, **values: Any) -> Any:
    """Build a kio entity from a superset of fields: the ones this version lacks are dropped.

    Lets one handler serve every version: it names all fields it knows, and each version's
    class keeps those it has. Fields absent from `values` take the class's defaults.
    """
    names = _field_names(cls)
    return cls(**{name: value for name, value in values.items() if name in names})


def has_field(cls: type, name: str) -> bool:
    return name in _field_names(cls)
