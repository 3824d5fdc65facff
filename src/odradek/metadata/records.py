"""Cluster metadata records: the only way metadata changes.

Names and fields follow Kafka's KRaft records (metadata/src/main/resources/common/metadata/*.json)
where Odradek has the concept; every record is a frozen dataclass, so an image can share them.

Serialization (what the metadata log stores as one frame's payload) is compact JSON, one object
per record:

    {"t": "<record type name>", "v": <record version>, ...fields}

UUIDs are written as their canonical string, tuples as arrays. `decode_record` refuses an
unknown type, an unknown (newer) version or a malformed body with `RecordDecodeError`, so a
broker never applies a record it does not understand. A new field added later bumps the
record's version; decoding an older version fills the field's default. A record whose new fields
all hold their defaults is written at the oldest version that has its other fields
(`_encode_version`), so brokers that predate a field still read the records that do not use it.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any, Union

# ConfigRecord.resource_type values (Kafka's ConfigResource.Type ids).
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

NO_LEADER = -1  # PartitionRecord.leader when no replica leads
NO_LEADER_CHANGE = -2  # PartitionChangeRecord.leader when the leader stays


class RecordDecodeError(ValueError):
    """A metadata record payload that cannot be decoded (unknown type/version, bad fields)."""


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A topic exists with this name and id (its partitions follow as PartitionRecords)."""

    name: str
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """A partition's full state: replicas (leader preferred first), ISR, leader and epochs.

    Version 1 adds, as Kafka's PartitionRecord, an ongoing reassignment (metadata/reassignment.py):
    adding_replicas    replicas being added (in `replicas`, not yet all in the ISR)
    removing_replicas  replicas to remove once every adding replica is in the ISR
    Both empty when no reassignment is in progress (and in version 0).
    """

    partition_id: int
    topic_id: uuid.UUID
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord:
    """A change to one partition; None / NO_LEADER_CHANGE fields stay as they are.

    Applying it bumps partition_epoch; a leader change also bumps leader_epoch (Kafka's rule).
    Version 1 adds `adding_replicas` / `removing_replicas` (an ongoing reassignment, as in
    PartitionRecord v1): None leaves them as they are, () clears them.
    """

    partition_id: int
    topic_id: uuid.UUID
    isr: tuple[int, ...] | None = None
    leader: int = NO_LEADER_CHANGE
    replicas: tuple[int, ...] | None = None
    adding_replicas: tuple[int, ...] | None = None
    removing_replicas: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    """The topic and all its partitions and configs are gone."""

    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """Sets (or, with value None, removes) one config override of a topic or broker.

    resource_type: RESOURCE_TOPIC (2) or RESOURCE_BROKER (4); for a broker, resource_name is
    the broker id as a string, or "" for the cluster-wide default.
    """

    resource_type: int
    resource_name: str
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    """A broker registered with the controller, reachable at host:port.

    Version 1 (cluster mode) adds, as Kafka's RegisterBrokerRecord:
    incarnation_id  the registration's incarnation (a new one at every broker start), so a
                    controller, even a newly elected one, tells a restarted broker from a live
                    one and never treats the restart as still in sync; None in version 0
    broker_epoch    Kafka's broker epoch: the metadata log sequence of the entry holding this
                    registration (KIP-903 checks it); -1 in version 0 and on a single node
    A version 0 record decodes with these defaults.
    """

    broker_id: int
    host: str
    port: int
    rack: str | None = None
    incarnation_id: str | None = None
    broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class UnregisterBrokerRecord:
    """The broker is no longer registered (cluster mode: its etcd lease expired, or it came back
    in a new incarnation that a RegisterBrokerRecord follows). Kafka writes this record only when
    a broker is decommissioned and fences lost brokers instead; here the image's `brokers` are
    the live, registered brokers, which is what topic creation places replicas on."""

    broker_id: int


@dataclass(frozen=True, slots=True)
class ProducerIdsRecord:
    """Producer ids below next_producer_id are handed out (reserved in blocks by a broker)."""

    broker_id: int
    next_producer_id: int


MetadataRecord = Union[TopicRecord, PartitionRecord, PartitionChangeRecord, RemoveTopicRecord, ConfigRecord,
                       RegisterBrokerRecord, UnregisterBrokerRecord, ProducerIdsRecord]

# type name -> (class, current version). The type name is written in every payload.
RECORD_TYPES: dict[str, tuple[type, int]] = {
    cls.__name__: (cls, 0)
    for cls in (TopicRecord, PartitionRecord, PartitionChangeRecord, RemoveTopicRecord, ConfigRecord,
                RegisterBrokerRecord, UnregisterBrokerRecord, ProducerIdsRecord)
}
RECORD_TYPES[RegisterBrokerRecord.__name__] = (RegisterBrokerRecord, 1)  # v1: incarnation_id, broker_epoch
RECORD_TYPES[PartitionRecord.__name__] = (PartitionRecord, 1)  # v1: adding_replicas, removing_replicas
RECORD_TYPES[PartitionChangeRecord.__name__] = (PartitionChangeRecord, 1)  # v1: the same
_UUID_FIELDS = {"topic_id"}
_TUPLE_FIELDS = {"replicas", "isr", "adding_replicas", "removing_replicas"}
# Fields a record type gained at a version: (version, field names). A record whose fields of
# version v and above all hold their defaults is encoded at version v - 1, without them.
_FIELDS_SINCE: dict[type, list[tuple[int, tuple[str, ...]]]] = {
    PartitionRecord: [(1, ("adding_replicas", "removing_replicas"))],
    PartitionChangeRecord: [(1, ("adding_replicas", "removing_replicas"))],
}


def _encode_version(record: MetadataRecord, current_version: int) -> tuple[int, frozenset[str]]:
    """(version to write, fields left out): the oldest version holding every non-default field."""
    version, omitted = current_version, set()
    for since, names in sorted(_FIELDS_SINCE.get(type(record), ()), reverse=True):
        defaults = {f.name: f.default for f in dataclasses.fields(record) if f.name in names}
        if since > version or any(getattr(record, n) != defaults[n] for n in names):
            break
        version, omitted = since - 1, omitted | set(names)
    return version, frozenset(omitted)


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def encode_record(record: MetadataRecord) -> bytes:
    """The record's payload bytes: compact JSON with its type tag and version."""
    cls = type(record)
    entry = RECORD_TYPES.get(cls.__name__)
    assert entry is not None and entry[0] is cls, f"not a metadata record: {record!r}"
    version, omitted = _encode_version(record, entry[1])
    body: dict[str, Any] = {"t": cls.__name__, "v": version}
    for f in dataclasses.fields(record):
        if f.name not in omitted:
            body[f.name] = _json_value(getattr(record, f.name))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_record(payload: bytes | memoryview) -> MetadataRecord:
    """Decode one payload made by `encode_record`; raises RecordDecodeError when it cannot."""
    try:
        body = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordDecodeError(f"metadata record is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RecordDecodeError("metadata record is not an object")
    type_name, version = body.pop("t", None), body.pop("v", None)
    entry = RECORD_TYPES.get(type_name) if isinstance(type_name, str) else None
    if entry is None:
        raise RecordDecodeError(f"unknown metadata record type {type_name!r}")
    cls, current_version = entry
    if not isinstance(version, int) or not 0 <= version <= current_version:
        raise RecordDecodeError(f"unsupported {type_name} version {version!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    if not set(body) <= names:
        raise RecordDecodeError(f"unknown fields in {type_name}: {sorted(set(body) - names)}")
    try:
        for name in _UUID_FIELDS & set(body):
            body[name] = uuid.UUID(body[name])
        for name in _TUPLE_FIELDS & set(body):
            if body[name] is not None:
                body[name] = tuple(int(x) for x in body[name])
        return cls(**body)
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecordDecodeError(f"malformed {type_name}: {exc}") from None
