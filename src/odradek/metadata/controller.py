"""The controller's decisions, as pure functions of (image, request, broker config).

Each function returns the metadata records to append and one result per requested item with
a Kafka error code and message; it never writes anything itself, so the same code serves the
single-node broker, the future etcd-backed cluster controller and deterministic simulations.
`validate_only` returns the results a real request would get, and no records.

    create_topics(image, topics, config, validate_only, ...)    CreateTopics
    delete_topics(image, topics, config)                        DeleteTopics (by name or id)
    create_partitions(image, topics, config, validate_only)     CreatePartitions
    incremental_alter_topic_configs(image, name, ops, validate_only)  IncrementalAlterConfigs

Kafka's rules, Kafka's messages where practical:
- topic names: `[a-zA-Z0-9._-]`, 1-249 characters, not `.` or `..`, and no two topics whose
  names differ only by `.` versus `_` (their metric names collide) -> INVALID_TOPIC_EXCEPTION;
- num_partitions -1 = `num.partitions`, other values <= 0 -> INVALID_PARTITIONS;
  replication_factor -1 = `default.replication.factor`, <= 0 or more than the live brokers ->
  INVALID_REPLICATION_FACTOR; manual assignments need both set to -1;
- configs: nulls and invalid values -> INVALID_CONFIG;
- the same topic twice in one request -> INVALID_REQUEST "Duplicate topic name." for each.
Internal topics (`__consumer_offsets`, `__transaction_state`) are created by the broker itself
(`allow_internal=True`); a user's CreateTopics for them gets INVALID_REQUEST and a user's
DeleteTopics INVALID_TOPIC_EXCEPTION ("Internal topic ... cannot be deleted"), since deleting
them would lose every group's offsets or transaction state. `__cluster_metadata` is never a
topic here.
"""

from __future__ import annotations

import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from odradek.config import BrokerConfig, ConfigEntry, describe_topic_configs, validate_topic_configs
from odradek.metadata.image import MetadataImage, TopicImage
from odradek.metadata.records import (
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    ConfigRecord,
    MetadataRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from odradek.protocol.errors import ErrorCode

MAX_TOPIC_NAME_LENGTH = 249  # Kafka's Topic.MAX_NAME_LENGTH
MAX_PARTITIONS_PER_TOPIC = 100_000  # Odradek's bound on one request's partitions (Kafka has none)
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
CLUSTER_METADATA_TOPIC = "__cluster_metadata"
ZERO_UUID = uuid.UUID(int=0)
_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")

# IncrementalAlterConfigs operation codes (AlterConfigOp.OpType).
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


# -- requests and results --------------------------------------------------------------------
@dataclass
class CreatableTopic:
    """One topic of a CreateTopics request, in plain Python.

    assignments: partition index -> replica broker ids (preferred leader first), or None.
    configs: Kafka topic config name -> value (None is refused, as Kafka does).
    """

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    assignments: dict[int, list[int]] | None = None
    configs: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_request(cls, topic: Any) -> "CreatableTopic":
        """From kio's CreateTopicsRequest topic entity (name, num_partitions, assignments, configs)."""
        assignments = {a.partition_index: [int(b) for b in a.broker_ids] for a in (topic.assignments or ())}
        configs = {c.name: c.value for c in (topic.configs or ())}
        return cls(name=topic.name, num_partitions=topic.num_partitions,
                   replication_factor=topic.replication_factor, assignments=assignments or None,
                   configs=configs)


@dataclass
class CreatableTopicResult:
    """Per-topic CreateTopics result; on success the partitions, RF and configs (v5+)."""

    name: str
    error: ErrorCode = ErrorCode.none
    error_message: str | None = None
    topic_id: uuid.UUID = ZERO_UUID
    num_partitions: int = -1
    replication_factor: int = -1
    configs: list[ConfigEntry] = field(default_factory=list)


@dataclass(frozen=True)
class DeletableTopic:
    """One topic of a DeleteTopics request: by name (v0-5, or v6 without id) or by id (v6+)."""

    name: str | None = None
    topic_id: uuid.UUID | None = None


@dataclass
class DeletableTopicResult:
    name: str | None
    topic_id: uuid.UUID = ZERO_UUID
    error: ErrorCode = ErrorCode.none
    error_message: str | None = None


@dataclass
class CreatePartitionsTopic:
    """One topic of a CreatePartitions request: the new total count and optional assignments
    (one replica list per new partition)."""

    name: str
    count: int
    assignments: list[list[int]] | None = None


@dataclass
class CreatePartitionsResult:
    name: str
    error: ErrorCode = ErrorCode.none
    error_message: str | None = None


# -- helpers ---------------------------------------------------------------------------------
def validate_topic_name(name: str | None) -> str | None:
    """Kafka's Topic.validate: the INVALID_TOPIC_EXCEPTION message, or None if legal."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return (f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, "
                f"topic name: {name}")
    if not _LEGAL_TOPIC_NAME.fullmatch(name):
        return (f'Topic name "{name}" is illegal, it contains a character other than ASCII alphanumerics, '
                "'.', '_' and '-'")
    return None


def collision_key(name: str) -> str:
    """Names equal under this key collide (Kafka: '.' and '_' map to the same metric name)."""
    return name.replace(".", "_")


def live_brokers(image: MetadataImage, config: BrokerConfig) -> list[int]:
    """Broker ids that can host replicas: the registered ones plus this node, sorted."""
    return sorted(set(image.brokers) | {config.node_id})


def new_topic_id() -> uuid.UUID:
    """A random topic id that is not zero and whose base64 form does not start with '-' (Kafka)."""
    while True:
        topic_id = uuid.uuid4()
        if topic_id != ZERO_UUID and (topic_id.bytes[0] >> 2) != 62:
            return topic_id


def _assign_replicas(brokers: Sequence[int], first_partition: int, count: int,
                     replication_factor: int, racks: dict[int, str | None] | None = None,
                     start: int = 0) -> dict[int, list[int]]:
    """Round-robin placement over the brokers in rack-alternating order (Kafka's rack-aware
    assignment: consecutive brokers are in different racks, so a partition's replicas span as
    many racks as there are): partition p's replicas are the `replication_factor` brokers from
    position (start + p) mod n, its leader the first. `start` (per topic) spreads the leaders of
    different topics."""
    ordered = _rack_alternated(brokers, racks or {})
    n = len(ordered)
    return {p: [ordered[(start + p + k) % n] for k in range(replication_factor)]
            for p in range(first_partition, first_partition + count)}


def _rack_alternated(brokers: Sequence[int], racks: dict[int, str | None]) -> list[int]:
    """The brokers ordered rack by rack in turn (racks by name, brokers by id within a rack);
    brokers without a rack count as one rack. Unchanged when no broker has a rack."""
    if not any(racks.get(b) for b in brokers):
        return list(brokers)
    by_rack: dict[str, list[int]] = {}
    for b in sorted(brokers):
        by_rack.setdefault(racks.get(b) or "", []).append(b)
    groups = [by_rack[r] for r in sorted(by_rack)]
    ordered: list[int] = []
    for i in range(max(len(g) for g in groups)):
        ordered.extend(g[i] for g in groups if i < len(g))
    return ordered


def _topic_start(name: str, brokers: Sequence[int]) -> int:
    """A per-topic starting position, stable for a name (Kafka picks a random one)."""
    return zlib.crc32(name.encode()) % len(brokers) if len(brokers) > 1 else 0


def _racks(image: MetadataImage) -> dict[int, str | None]:
    return {b: registration.rack for b, registration in image.brokers.items()}


def _check_assignment(assignments: dict[int, list[int]], first_partition: int, brokers: Iterable[int]
                      ) -> str | None:
    known = set(brokers)
    expected = list(range(first_partition, first_partition + len(assignments)))
    if sorted(assignments) != expected:
        return "partitions should be a consecutive 0-based integer sequence"
    for index, replicas in sorted(assignments.items()):
        if not replicas:
            return f"The manual partition assignment includes an empty replica list for partition {index}."
        if len(set(replicas)) != len(replicas):
            return (f"All brokers specified in the manual partition assignment for partition {index} "
                    "must be unique.")
        for broker in replicas:
            if broker not in known:
                return (f"The manual partition assignment includes broker {broker}, but no such broker "
                        "is registered.")
    return None


def _partition_records(topic_id: uuid.UUID, assignments: dict[int, list[int]]) -> list[PartitionRecord]:
    return [PartitionRecord(partition_id=index, topic_id=topic_id, replicas=tuple(replicas),
                            isr=tuple(replicas), leader=replicas[0], leader_epoch=0, partition_epoch=0)
            for index, replicas in sorted(assignments.items())]


# -- CreateTopics ----------------------------------------------------------------------------
def create_topics(image: MetadataImage, topics: Iterable[Any], config: BrokerConfig, validate_only: bool,
                  *, allow_internal: bool = False,
                  topic_id_factory: Callable[[], uuid.UUID] = new_topic_id,
                  ) -> tuple[list[MetadataRecord], list[CreatableTopicResult]]:
    """Decide a CreateTopics request: (records to append, one result per distinct topic name).

    `topics` are CreatableTopic or kio CreateTopicsRequest topic entities. Results come in
    request order, the duplicates' INVALID_REQUEST results last (as Kafka's controller does).
    """
    requested = [t if isinstance(t, CreatableTopic) else CreatableTopic.from_request(t) for t in topics]
    counts: dict[str, int] = {}
    for topic in requested:
        counts[topic.name] = counts.get(topic.name, 0) + 1
    brokers = live_brokers(image, config)
    existing_keys = {collision_key(name): name for name in image.topics_by_name}
    records: list[MetadataRecord] = []
    results: list[CreatableTopicResult] = []
    for topic in requested:
        if counts[topic.name] > 1:
            continue
        result, topic_records = _create_topic(topic, image, config, brokers, existing_keys, allow_internal,
                                              topic_id_factory)
        results.append(result)
        if result.error is ErrorCode.none:
            existing_keys[collision_key(topic.name)] = topic.name
            if not validate_only:
                records.extend(topic_records)
    for name, count in counts.items():
        if count > 1:
            results.append(CreatableTopicResult(name, ErrorCode.invalid_request, "Duplicate topic name."))
    return records, results


def _create_topic(topic: CreatableTopic, image: MetadataImage, config: BrokerConfig, brokers: list[int],
                  existing_keys: dict[str, str], allow_internal: bool,
                  topic_id_factory: Callable[[], uuid.UUID]) -> tuple[CreatableTopicResult, list[MetadataRecord]]:
    name = topic.name

    def fail(error: ErrorCode, message: str | None) -> tuple[CreatableTopicResult, list[MetadataRecord]]:
        return CreatableTopicResult(name, error, message), []

    if name in image.topics_by_name:
        return fail(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
    message = validate_topic_name(name)
    if message is not None:
        return fail(ErrorCode.invalid_topic_exception, message)
    if name == CLUSTER_METADATA_TOPIC or (name in INTERNAL_TOPICS and not allow_internal):
        return fail(ErrorCode.invalid_request, f"Creation of internal topic {name} is prohibited.")
    other = existing_keys.get(collision_key(name))
    if other is not None:
        return fail(ErrorCode.invalid_topic_exception, f"Topic '{name}' collides with existing topic: {other}")

    if topic.assignments:
        if topic.num_partitions != -1:
            return fail(ErrorCode.invalid_request,
                        "A manual partition assignment was specified, but numPartitions was not set to -1.")
        if topic.replication_factor != -1:
            return fail(ErrorCode.invalid_request,
                        "A manual partition assignment was specified, but replicationFactor was not set to -1.")
        if len(topic.assignments) > MAX_PARTITIONS_PER_TOPIC:
            return fail(ErrorCode.invalid_partitions,
                        f"Number of partitions {len(topic.assignments)} exceeds the limit of "
                        f"{MAX_PARTITIONS_PER_TOPIC}.")
        message = _check_assignment(topic.assignments, 0, brokers)
        if message is not None:
            return fail(ErrorCode.invalid_replica_assignment, message)
        assignments = {p: list(r) for p, r in topic.assignments.items()}
        replication_factor = len(assignments[0])
    else:
        num_partitions = config.num_partitions if topic.num_partitions == -1 else topic.num_partitions
        if num_partitions <= 0:
            return fail(ErrorCode.invalid_partitions, "Number of partitions was set to an invalid non-positive value.")
        if num_partitions > MAX_PARTITIONS_PER_TOPIC:
            return fail(ErrorCode.invalid_partitions,
                        f"Number of partitions {num_partitions} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC}.")
        replication_factor = (config.default_replication_factor if topic.replication_factor == -1
                              else topic.replication_factor)
        if replication_factor <= 0:
            return fail(ErrorCode.invalid_replication_factor,
                        "Replication factor must be larger than 0, or -1 to use the default value.")
        if replication_factor > len(brokers):
            return fail(ErrorCode.invalid_replication_factor,
                        f"Unable to replicate the partition {replication_factor} time(s): The target "
                        f"replication factor of {replication_factor} cannot be reached because only "
                        f"{len(brokers)} broker(s) are registered.")
        assignments = _assign_replicas(brokers, 0, num_partitions, replication_factor, _racks(image),
                                       _topic_start(name, brokers))

    nulls = sorted(k for k, v in topic.configs.items() if v is None)
    if nulls:
        return fail(ErrorCode.invalid_config, f"Null value not supported for topic configs: {', '.join(nulls)}")
    message = validate_topic_configs(topic.configs)
    if message is not None:
        return fail(ErrorCode.invalid_config, message)

    topic_id = topic_id_factory()
    while topic_id in image.topics_by_id:
        topic_id = topic_id_factory()
    records: list[MetadataRecord] = [TopicRecord(name, topic_id)]
    records.extend(_partition_records(topic_id, assignments))
    configs = {k: v for k, v in topic.configs.items() if v is not None}
    records.extend(ConfigRecord(RESOURCE_TOPIC, name, k, v) for k, v in sorted(configs.items()))
    result = CreatableTopicResult(name, ErrorCode.none, None, topic_id, len(assignments), replication_factor,
                                  describe_topic_configs(config, configs))
    return result, records


def internal_topic(name: str, config: BrokerConfig) -> CreatableTopic:
    """The CreatableTopic the broker uses for `__consumer_offsets` / `__transaction_state`.

    Partitions, replication factor and segment size come from `offsets.topic.*` /
    `transaction.state.log.*`; both are compacted, as in Kafka.
    """
    if name == "__consumer_offsets":
        return CreatableTopic(name, config.offsets_topic_num_partitions,
                              config.offsets_topic_replication_factor,
                              configs={"cleanup.policy": "compact", "compression.type": "producer",
                                       "segment.bytes": str(config.offsets_topic_segment_bytes)})
    if name == "__transaction_state":
        return CreatableTopic(name, config.transaction_state_log_num_partitions,
                              config.transaction_state_log_replication_factor,
                              configs={"cleanup.policy": "compact", "compression.type": "uncompressed",
                                       "min.insync.replicas": str(config.transaction_state_log_min_isr),
                                       "segment.bytes": str(config.transaction_state_log_segment_bytes)})
    raise ValueError(f"{name} is not an internal topic")


# -- DeleteTopics ----------------------------------------------------------------------------
def delete_topics(image: MetadataImage, topics: Iterable[DeletableTopic | str | uuid.UUID],
                  config: BrokerConfig) -> tuple[list[MetadataRecord], list[DeletableTopicResult]]:
    """Decide a DeleteTopics request: (RemoveTopicRecords, one result per requested topic).

    Topics are given by name or by id (a str, a UUID, or a DeletableTopic). With
    `delete.topic.enable=false` every topic gets TOPIC_DELETION_DISABLED.
    """
    refs = [_as_ref(t) for t in topics]
    results: list[DeletableTopicResult] = []
    records: list[MetadataRecord] = []
    name_counts: dict[str, int] = {}
    id_counts: dict[uuid.UUID, int] = {}
    for ref in refs:
        if ref.name is not None and ref.topic_id is None:
            name_counts[ref.name] = name_counts.get(ref.name, 0) + 1
        elif ref.name is None and ref.topic_id is not None:
            id_counts[ref.topic_id] = id_counts.get(ref.topic_id, 0) + 1
    deleting: set[uuid.UUID] = set()
    reported: set[str | uuid.UUID] = set()
    for ref in refs:
        if ref.name is not None and ref.topic_id is not None:
            results.append(DeletableTopicResult(ref.name, ref.topic_id, ErrorCode.invalid_request,
                                                "You may not specify both topic name and topic id."))
            continue
        if ref.name is None and ref.topic_id is None:
            results.append(DeletableTopicResult(None, ZERO_UUID, ErrorCode.invalid_request,
                                                "Neither topic name nor id were specified."))
            continue
        if ref.name is not None and name_counts[ref.name] > 1:
            if ref.name not in reported:
                reported.add(ref.name)
                results.append(DeletableTopicResult(ref.name, ZERO_UUID, ErrorCode.invalid_request,
                                                    "Duplicate topic name."))
            continue
        if ref.topic_id is not None and id_counts[ref.topic_id] > 1:
            if ref.topic_id not in reported:
                reported.add(ref.topic_id)
                results.append(DeletableTopicResult(None, ref.topic_id, ErrorCode.invalid_request,
                                                    "Duplicate topic id."))
            continue
        if ref.name is not None:
            topic = image.topics_by_name.get(ref.name)
            if topic is None:
                results.append(DeletableTopicResult(ref.name, ZERO_UUID, ErrorCode.unknown_topic_or_partition,
                                                    "This server does not host this topic-partition."))
                continue
        else:
            topic = image.topics_by_id.get(ref.topic_id)
            if topic is None:
                results.append(DeletableTopicResult(None, ref.topic_id, ErrorCode.unknown_topic_id,
                                                    "This server does not host this topic ID."))
                continue
        results.append(_delete_one(topic, config, deleting, records))
    return records, results


def _as_ref(topic: DeletableTopic | str | uuid.UUID | Any) -> DeletableTopic:
    if isinstance(topic, DeletableTopic):
        return topic
    if isinstance(topic, str):
        return DeletableTopic(name=topic)
    if isinstance(topic, uuid.UUID):
        return DeletableTopic(topic_id=topic)
    # kio DeleteTopicState (v6+): name may be None, topic_id may be zero
    topic_id = getattr(topic, "topic_id", None)
    return DeletableTopic(name=getattr(topic, "name", None),
                          topic_id=None if topic_id in (None, ZERO_UUID) else topic_id)


def _delete_one(topic: TopicImage, config: BrokerConfig, deleting: set[uuid.UUID],
                records: list[MetadataRecord]) -> DeletableTopicResult:
    if not config.delete_topic_enable:
        return DeletableTopicResult(topic.name, topic.topic_id, ErrorCode.topic_deletion_disabled,
                                    "Topic deletion is disabled.")
    if topic.name in INTERNAL_TOPICS:
        return DeletableTopicResult(topic.name, topic.topic_id, ErrorCode.invalid_topic_exception,
                                    f"Internal topic {topic.name} cannot be deleted.")
    if topic.topic_id in deleting:
        return DeletableTopicResult(topic.name, topic.topic_id, ErrorCode.invalid_request,
                                    "The provided topic name maps to an ID that was already supplied.")
    deleting.add(topic.topic_id)
    records.append(RemoveTopicRecord(topic.topic_id))
    return DeletableTopicResult(topic.name, topic.topic_id, ErrorCode.none, None)


# -- CreatePartitions ------------------------------------------------------------------------
def create_partitions(image: MetadataImage, topics: Iterable[Any], config: BrokerConfig, validate_only: bool
                      ) -> tuple[list[MetadataRecord], list[CreatePartitionsResult]]:
    """Decide a CreatePartitions request: (PartitionRecords for new partitions, results).

    `topics` are CreatePartitionsTopic or kio entities (name, count, assignments of broker_ids).
    New partitions get the replication factor of partition 0 unless assigned by hand.
    """
    requested = [t if isinstance(t, CreatePartitionsTopic) else
                 CreatePartitionsTopic(t.name, t.count,
                                       None if t.assignments is None else [list(a.broker_ids) for a in t.assignments])
                 for t in topics]
    counts: dict[str, int] = {}
    for topic in requested:
        counts[topic.name] = counts.get(topic.name, 0) + 1
    brokers = live_brokers(image, config)
    records: list[MetadataRecord] = []
    results: list[CreatePartitionsResult] = []
    for request in requested:
        if counts[request.name] > 1:
            continue
        error, message, new_records = _create_partitions_one(image, request, brokers)
        results.append(CreatePartitionsResult(request.name, error, message))
        if error is ErrorCode.none and not validate_only:
            records.extend(new_records)
    for name, count in counts.items():
        if count > 1:
            results.append(CreatePartitionsResult(name, ErrorCode.invalid_request, "Duplicate topic name."))
    return records, results


def _create_partitions_one(image: MetadataImage, request: CreatePartitionsTopic, brokers: list[int]
                           ) -> tuple[ErrorCode, str | None, list[MetadataRecord]]:
    topic = image.topics_by_name.get(request.name)
    if topic is None:
        return ErrorCode.unknown_topic_or_partition, f"Topic '{request.name}' does not exist.", []
    current = len(topic.partitions)
    if request.count < current:
        return (ErrorCode.invalid_partitions,
                f"The topic {request.name} currently has {current} partition(s); {request.count} would not "
                "be an increase.", [])
    if request.count == current:
        return ErrorCode.invalid_partitions, f"Topic already has {current} partition(s).", []
    if request.count > MAX_PARTITIONS_PER_TOPIC:
        return (ErrorCode.invalid_partitions,
                f"Number of partitions {request.count} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC}.", [])
    added = request.count - current
    if request.assignments is not None:
        if len(request.assignments) != added:
            return (ErrorCode.invalid_replica_assignment,
                    f"Attempted to add {added} additional partition(s), but only {len(request.assignments)} "
                    "assignment(s) were specified.", [])
        assignments = {current + i: list(r) for i, r in enumerate(request.assignments)}
        message = _check_assignment(assignments, current, brokers)
        if message is not None:
            return ErrorCode.invalid_replica_assignment, message, []
    else:
        replication_factor = len(topic.partitions[0].replicas) if topic.partitions else 1
        if replication_factor > len(brokers):
            return (ErrorCode.invalid_replication_factor,
                    f"Unable to replicate the partition {replication_factor} time(s): only {len(brokers)} "
                    "broker(s) are registered.", [])
        assignments = _assign_replicas(brokers, current, added, replication_factor, _racks(image),
                                       _topic_start(topic.name, brokers))
    return ErrorCode.none, None, list(_partition_records(topic.topic_id, assignments))


# -- IncrementalAlterConfigs (topics) --------------------------------------------------------
def incremental_alter_topic_configs(image: MetadataImage, topic_name: str,
                                    operations: Iterable[tuple[str, int, str | None]], validate_only: bool
                                    ) -> tuple[list[MetadataRecord], ErrorCode, str | None]:
    """Decide one topic's IncrementalAlterConfigs: (ConfigRecords, error, message).

    operations: (config name, OP_SET/OP_DELETE/OP_APPEND/OP_SUBTRACT, value). APPEND/SUBTRACT
    apply to list configs (cleanup.policy, *.throttled.replicas) only, as in Kafka.
    """
    from odradek.config import TOPIC_CONFIGS, ConfigType

    topic = image.topics_by_name.get(topic_name)
    if topic is None:
        return [], ErrorCode.unknown_topic_or_partition, f"Topic '{topic_name}' does not exist."
    configs: dict[str, str | None] = dict(topic.configs)
    seen: set[str] = set()
    for name, op, value in operations:
        if name in seen:
            return [], ErrorCode.invalid_request, f"Error due to duplicate config keys: {name}"
        seen.add(name)
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            return [], ErrorCode.invalid_config, f"Unknown topic config name: {name}"
        if op == OP_SET:
            if value is None:
                return [], ErrorCode.invalid_request, f"Null value not supported for: {name}"
            configs[name] = value
        elif op == OP_DELETE:
            configs.pop(name, None)
        elif op in (OP_APPEND, OP_SUBTRACT):
            if definition.config_type is not ConfigType.LIST:
                return [], ErrorCode.invalid_config, \
                    f"Config value append is not allowed for config key: {name}"
            current = configs.get(name)
            items = [i.strip() for i in current.split(",") if i.strip()] if current is not None else \
                list(definition.default)
            change = [i.strip() for i in (value or "").split(",") if i.strip()]
            if op == OP_APPEND:
                items += [i for i in change if i not in items]
            else:
                items = [i for i in items if i not in change]
            configs[name] = ",".join(items)
        else:
            return [], ErrorCode.invalid_request, f"Unknown operation type {op}"
    message = validate_topic_configs(configs)
    if message is not None:
        return [], ErrorCode.invalid_config, message
    records: list[MetadataRecord] = []
    for name in sorted(set(configs) | set(topic.configs)):
        old, new = topic.configs.get(name), configs.get(name)
        if old != new:
            records.append(ConfigRecord(RESOURCE_TOPIC, topic_name, name, new))
    return ([] if validate_only else records), ErrorCode.none, None


# -- IncrementalAlterConfigs (brokers) and AlterConfigs (topics, brokers) ----------------------
def incremental_alter_broker_configs(image: MetadataImage, resource_name: str,
                                     operations: Iterable[tuple[str, int, str | None]], validate_only: bool
                                     ) -> tuple[list[MetadataRecord], ErrorCode, str | None]:
    """Decide dynamic broker config changes for `resource_name` (a broker id, or "" for the
    cluster-wide default): (ConfigRecords, error, message). Only DYNAMIC_BROKER_CONFIGS change."""
    from odradek.config import BROKER_CONFIGS, ConfigType, validate_broker_configs

    current = dict(image.broker_configs.get(resource_name, {}))
    configs: dict[str, str | None] = dict(current)
    seen: set[str] = set()
    for name, op, value in operations:
        if name in seen:
            return [], ErrorCode.invalid_request, f"Error due to duplicate config keys: {name}"
        seen.add(name)
        definition = BROKER_CONFIGS.get(name)
        if op == OP_SET:
            if value is None:
                return [], ErrorCode.invalid_request, f"Null value not supported for: {name}"
            configs[name] = value
        elif op == OP_DELETE:
            configs[name] = None
        elif op in (OP_APPEND, OP_SUBTRACT):
            if definition is None or definition.config_type is not ConfigType.LIST:
                return [], ErrorCode.invalid_config, f"Config value append is not allowed for config key: {name}"
            text = configs.get(name)
            items = [i.strip() for i in text.split(",") if i.strip()] if text is not None else \
                list(definition.default or ())
            change = [i.strip() for i in (value or "").split(",") if i.strip()]
            items = items + [i for i in change if i not in items] if op == OP_APPEND else \
                [i for i in items if i not in change]
            configs[name] = ",".join(items)
        else:
            return [], ErrorCode.invalid_request, f"Unknown operation type {op}"
    message = validate_broker_configs({k: v for k, v in configs.items() if k in seen})
    if message is not None:
        return [], ErrorCode.invalid_config, message
    records: list[MetadataRecord] = [ConfigRecord(RESOURCE_BROKER, resource_name, name, configs[name])
                                     for name in sorted(seen) if current.get(name) != configs[name]]
    return ([] if validate_only else records), ErrorCode.none, None


def alter_configs(image: MetadataImage, resource_type: int, resource_name: str,
                  configs: dict[str, str | None], validate_only: bool
                  ) -> tuple[list[MetadataRecord], ErrorCode, str | None]:
    """Legacy AlterConfigs: the resource's dynamic configs become exactly `configs` (Kafka's
    semantics: keys not named are removed). Topics and brokers ("" = cluster default)."""
    from odradek.config import validate_broker_configs

    if resource_type == RESOURCE_TOPIC:
        topic = image.topics_by_name.get(resource_name)
        if topic is None:
            return [], ErrorCode.unknown_topic_or_partition, f"Topic '{resource_name}' does not exist."
        if any(v is None for v in configs.values()):
            return [], ErrorCode.invalid_request, "Null value not supported"
        message = validate_topic_configs(dict(configs))
        current = topic.configs
    elif resource_type == RESOURCE_BROKER:
        message = validate_broker_configs(dict(configs))
        current = image.broker_configs.get(resource_name, {})
    else:
        return [], ErrorCode.invalid_request, f"Unsupported resource type {resource_type}"
    if message is not None:
        return [], ErrorCode.invalid_config, message
    records: list[MetadataRecord] = [
        ConfigRecord(resource_type, resource_name, name, configs.get(name))
        for name in sorted(set(configs) | set(current)) if current.get(name) != configs.get(name)]
    return ([] if validate_only else records), ErrorCode.none, None
