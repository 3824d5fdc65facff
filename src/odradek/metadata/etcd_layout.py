"""The cluster metadata's key layout in etcd, and the codecs of its values (no I/O).

Every key of one cluster lives under its prefix, `<root>/<cluster id>/` (root `/odradek` unless
configured), so one etcd can hold several clusters, and one watch of the prefix sees every change
of a cluster in etcd's revision order. The keys, field by field:

    <root>/cluster_id                  the id of the cluster that brokers without a configured
                                       `cluster.id` join: ASCII, Kafka's 22-character base64url
                                       UUID. Created once, by the first broker (create == 0).

    <prefix>log/<sequence:020d>        one metadata append, never modified once written:
        key    sequence   20 decimal digits, 1 for the first append, +1 per append, no gaps, so
                          etcd's byte order of keys is the log's order.
        value  records    a JSON array of `records.encode_record` objects:
                          `[{"t":"TopicRecord","v":0,...},{"t":"PartitionRecord",...}]`;
                          the records of one append apply together or not at all.
                          At most MAX_VALUE_BYTES (below etcd's --max-request-bytes).
        Only the controller writes it, in a transaction that checks it still holds the controller
        key it created and that the key does not exist yet. Entries at or below the snapshot's
        sequence are deleted when a snapshot is installed.

    <prefix>snapshot                   the newest image snapshot's descriptor, JSON:
        {"sequence": S,                the log entries 1..S are folded into the snapshot
         "chunks": n,                  the payload is split into n chunk keys (1 <= n)
         "size_bytes": b,              the payload's total length
         "crc32c": c}                  CRC-32C of the payload (etcd checks its own storage; this
                                       catches a snapshot assembled from chunks of two attempts)
    <prefix>snapshots/<S:020d>/<i:06d> chunk i (0-based) of snapshot S's payload: the bytes of a
                                       JSON array of records (the same format as a log entry) that
                                       `MetadataImage.to_records` gives, cut every MAX_VALUE_BYTES.

    <prefix>brokers/<node id>          a live broker's registration, attached to its lease, so it
                                       disappears when the broker stops renewing the lease:
        {"node_id": 1,
         "incarnation_id": "<uuid>",   new at every broker start: tells a restart from a renewal
         "rack": "r1" | null,
         "endpoints": [{"name": "PLAINTEXT", "host": "h", "port": 9092,
                        "security_protocol": "PLAINTEXT"}, ...]}

    <prefix>controller                 the elected controller, attached to the controller's lease:
        {"node_id": 1, "incarnation_id": "<uuid>", "epoch": 7}
        Its create_revision identifies one term: a controller's appends compare it, so a
        deposed controller (whose key expired or was deleted, even if re-created by itself
        since) can never write.
    <prefix>controller_epoch           decimal: Kafka's controller epoch, +1 per election, written
                                       in the transaction that creates the controller key.

Values are checked against MAX_VALUE_BYTES when read, before they are decoded.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from odradek.metadata.image import Change, MetadataImage
from odradek.metadata.records import MetadataRecord, RecordDecodeError, decode_record, encode_record

DEFAULT_ROOT = "/odradek"
# One etcd value: etcd refuses requests over --max-request-bytes (1.5 MiB by default); stay below.
MAX_VALUE_BYTES = 1024 * 1024
# A snapshot's payload is at most this many chunks (so at most 1 GiB).
MAX_SNAPSHOT_CHUNKS = 1024
# Bounds on what a registration may hold.
MAX_ENDPOINTS = 16
MAX_NAME_CHARS = 255

CLUSTER_ID_KEY = "cluster_id"
LOG_DIR = "log/"
SNAPSHOT_KEY = "snapshot"
SNAPSHOTS_DIR = "snapshots/"
BROKERS_DIR = "brokers/"
CONTROLLER_KEY = "controller"
CONTROLLER_EPOCH_KEY = "controller_epoch"
SEQUENCE_DIGITS = 20


class LayoutError(ValueError):
    """A value in etcd that does not decode, or breaks a bound: the metadata cannot be used."""


def cluster_id_key(root: str) -> bytes:
    return f"{root.rstrip('/')}/{CLUSTER_ID_KEY}".encode("ascii")


def cluster_prefix(root: str, cluster_id: str) -> str:
    if not cluster_id or "/" in cluster_id:
        raise ValueError(f"invalid cluster id {cluster_id!r}")
    return f"{root.rstrip('/')}/{cluster_id}/"


def log_key(prefix: str, sequence: int) -> bytes:
    assert 0 <= sequence < 10 ** SEQUENCE_DIGITS
    return f"{prefix}{LOG_DIR}{sequence:0{SEQUENCE_DIGITS}d}".encode("ascii")


def snapshot_chunk_key(prefix: str, sequence: int, index: int) -> bytes:
    return f"{prefix}{SNAPSHOTS_DIR}{sequence:0{SEQUENCE_DIGITS}d}/{index:06d}".encode("ascii")


def snapshot_chunks_prefix(prefix: str, sequence: int) -> bytes:
    return f"{prefix}{SNAPSHOTS_DIR}{sequence:0{SEQUENCE_DIGITS}d}/".encode("ascii")


def broker_key(prefix: str, node_id: int) -> bytes:
    return f"{prefix}{BROKERS_DIR}{node_id}".encode("ascii")


def key(prefix: str, name: str) -> bytes:
    return f"{prefix}{name}".encode("ascii")


def prefix_range_end(key_prefix: bytes) -> bytes:
    """etcd's range end that covers every key starting with `key_prefix`."""
    data = bytearray(key_prefix)
    for i in range(len(data) - 1, -1, -1):
        if data[i] < 0xFF:
            data[i] += 1
            return bytes(data[:i + 1])
    return b"\0"


def parse_sequence(name: str) -> int:
    """The sequence of a `log/<20 digits>` key name (the part after the prefix)."""
    digits = name[len(LOG_DIR):]
    if len(digits) != SEQUENCE_DIGITS or not digits.isdigit():
        raise LayoutError(f"bad metadata log key {name!r}")
    return int(digits)


def check_size(name: str, value: bytes, limit: int = MAX_VALUE_BYTES) -> None:
    if len(value) > limit:
        raise LayoutError(f"etcd value {name} of {len(value)} bytes exceeds {limit}")


# -- log entries and snapshot payloads ---------------------------------------------------------

def encode_records(records: list[MetadataRecord]) -> bytes:
    """The value of a log entry (or a snapshot payload): a JSON array of encoded records."""
    return b"[" + b",".join(encode_record(record) for record in records) + b"]"


def decode_records(value: bytes) -> list[MetadataRecord]:
    """Decode `encode_records` output; raises LayoutError when it cannot (unknown record...)."""
    try:
        items = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LayoutError(f"metadata entry is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise LayoutError("metadata entry is not a JSON array")
    try:
        return [decode_record(json.dumps(item, separators=(",", ":")).encode("utf-8")) for item in items]
    except RecordDecodeError as exc:
        raise LayoutError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class SnapshotDescriptor:
    """The value of `<prefix>snapshot`: which log entries a snapshot folds, and how it is cut."""

    sequence: int
    chunks: int
    size_bytes: int
    crc32c: int

    def encode(self) -> bytes:
        return json.dumps({"sequence": self.sequence, "chunks": self.chunks, "size_bytes": self.size_bytes,
                           "crc32c": self.crc32c}, separators=(",", ":")).encode("ascii")

    @classmethod
    def decode(cls, value: bytes) -> SnapshotDescriptor:
        body = _json_object(value, "snapshot descriptor")
        try:
            descriptor = cls(int(body["sequence"]), int(body["chunks"]), int(body["size_bytes"]),
                             int(body["crc32c"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"bad snapshot descriptor: {exc}") from None
        if not (descriptor.sequence > 0 and 1 <= descriptor.chunks <= MAX_SNAPSHOT_CHUNKS
                and 0 < descriptor.size_bytes <= MAX_SNAPSHOT_CHUNKS * MAX_VALUE_BYTES):
            raise LayoutError(f"snapshot descriptor out of bounds: {descriptor}")
        return descriptor


# -- broker registrations and the controller ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One listener a broker accepts clients on (Kafka's BrokerRegistration endpoint)."""

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"


@dataclass(frozen=True, slots=True)
class LiveBroker:
    """A broker registration as stored under `<prefix>brokers/<node id>`, held by its lease."""

    node_id: int
    incarnation_id: str
    endpoints: tuple[BrokerEndpoint, ...] = ()
    rack: str | None = None
    # The broker is stopping and asks the controller to move its leaderships away (Kafka's
    # BrokerHeartbeat wantShutDown / RegisterBrokerRecord inControlledShutdown). Written only
    # when set, so registrations of older versions read the same.
    in_controlled_shutdown: bool = False

    def encode(self) -> bytes:
        body = {
            "node_id": self.node_id, "incarnation_id": self.incarnation_id, "rack": self.rack,
            "endpoints": [{"name": e.name, "host": e.host, "port": e.port, "security_protocol": e.security_protocol}
                          for e in self.endpoints],
        }
        if self.in_controlled_shutdown:
            body["in_controlled_shutdown"] = True
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes) -> LiveBroker:
        body = _json_object(value, "broker registration")
        try:
            endpoints = body.get("endpoints") or []
            if not isinstance(endpoints, list) or len(endpoints) > MAX_ENDPOINTS:
                raise ValueError(f"endpoints must be a list of at most {MAX_ENDPOINTS}")
            broker = cls(
                node_id=int(body["node_id"]),
                incarnation_id=_short_str(body["incarnation_id"]),
                endpoints=tuple(BrokerEndpoint(_short_str(e["name"]), _short_str(e["host"]), int(e["port"]),
                                               _short_str(e.get("security_protocol", "PLAINTEXT")))
                                for e in endpoints),
                rack=None if body.get("rack") is None else _short_str(body["rack"]),
                in_controlled_shutdown=body.get("in_controlled_shutdown") is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"bad broker registration: {exc}") from None
        return broker


@dataclass(frozen=True, slots=True)
class ControllerClaim:
    """The value of `<prefix>controller`: who holds the controller key, in which epoch."""

    node_id: int
    incarnation_id: str
    epoch: int

    def encode(self) -> bytes:
        return json.dumps({"node_id": self.node_id, "incarnation_id": self.incarnation_id, "epoch": self.epoch},
                          separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes) -> ControllerClaim:
        body = _json_object(value, "controller claim")
        try:
            return cls(int(body["node_id"]), _short_str(body["incarnation_id"]), int(body["epoch"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"bad controller claim: {exc}") from None


def new_incarnation_id() -> str:
    return str(uuid.uuid4())


def _short_str(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"expected a string of at most {MAX_NAME_CHARS} characters, got {value!r:.80}")
    return value


def _json_object(value: bytes, what: str) -> dict:
    check_size(what, value)
    try:
        body = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LayoutError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LayoutError(f"{what} is not a JSON object")
    return body


# -- helpers the store and the broker share ----------------------------------------------------

def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """`etcd://host:port[,host:port...]` (or a bare `host:port,...`) as (host, port) pairs."""
    text = url.removeprefix("etcd://")
    endpoints = []
    for part in text.rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {part!r} in {url!r}: expected host:port")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def image_changes(old: MetadataImage, new: MetadataImage) -> list[Change]:
    """What differs from `old` to `new`, as Changes (for listeners when a snapshot replaces the
    image instead of entries applying one by one)."""
    created = tuple(sorted(name for name, t in new.topics_by_name.items()
                           if old.topics_by_id.get(t.topic_id) is None))
    deleted = tuple(t for t in old.topics_by_name.values() if new.topics_by_id.get(t.topic_id) is None)
    partitions: list[tuple[str, int]] = []
    configs: list[str] = []
    for name, topic in new.topics_by_name.items():
        before = old.topics_by_id.get(topic.topic_id)
        for index, partition in topic.partitions.items():
            if before is None or before.partitions.get(index) != partition:
                partitions.append((name, index))
        if before is not None and before.configs != topic.configs or before is None and topic.configs:
            configs.append(name)
    broker_configs = tuple(sorted(k for k in set(old.broker_configs) | set(new.broker_configs)
                                  if old.broker_configs.get(k) != new.broker_configs.get(k)))
    brokers = tuple(sorted(b for b in set(old.brokers) | set(new.brokers) if old.brokers.get(b) != new.brokers.get(b)))
    change = Change(topics_created=created, topics_deleted=deleted, partitions_changed=tuple(sorted(partitions)),
                    topic_configs_changed=tuple(sorted(configs)), broker_configs_changed=broker_configs,
                    brokers_changed=brokers)
    return [change] if change != Change() else []
