"""The metadata image: cluster metadata as the result of applying records in order.

Handlers read the image; only the metadata store changes it. Changes are copy-on-write at the
store: `MetadataStore.append` applies records to `image.copy()` and then swaps the reference, so
a reader that holds an image sees one consistent version even while a new one is being built on
the I/O thread. `TopicImage` and `PartitionImage` are never mutated once built (applying a
record that touches a topic replaces its TopicImage), which is what makes the shallow `copy()`
safe.

`MetadataImage.apply(record)` returns a `Change` saying what the record did, so the broker can
react (host a new partition's log, delete a removed topic's logs, push new configs to logs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from odradek.metadata.records import (
    NO_LEADER_CHANGE,
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    ConfigRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
)


class InvalidMetadataRecord(ValueError):
    """A record that cannot apply to the image (unknown topic id, duplicate name...): a bug."""


@dataclass(frozen=True, slots=True)
class PartitionImage:
    """One partition: replicas (preferred leader first), ISR, current leader and its epochs, and
    an ongoing reassignment: `adding_replicas` / `removing_replicas` (both subsets of `replicas`,
    disjoint; both empty when none is in progress; see metadata/reassignment.py)."""

    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()

    @property
    def is_reassigning(self) -> bool:
        return bool(self.adding_replicas or self.removing_replicas)


@dataclass(frozen=True)
class TopicImage:
    """One topic: name, id, partitions by index, and its config overrides (Kafka names).

    Invariants: partition indexes are 0..n-1; never mutated after construction.
    """

    name: str
    topic_id: uuid.UUID
    partitions: dict[int, PartitionImage] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)

    def current_leader(self, index: int) -> tuple[int, int] | None:
        """(leader id, leader epoch) of partition `index`, or None when it has no leader (or no
        such partition): what NOT_LEADER_OR_FOLLOWER answers name (KIP-951)."""
        p = self.partitions.get(index)
        return (p.leader, p.leader_epoch) if p is not None and p.leader >= 0 else None


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """A registered broker; incarnation_id and broker_epoch as in RegisterBrokerRecord v1
    (None / -1 on a single node)."""

    broker_id: int
    host: str
    port: int
    rack: str | None
    incarnation_id: str | None = None
    broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class Change:
    """What one applied record changed (empty tuples: nothing of that kind)."""

    topics_created: tuple[str, ...] = ()
    topics_deleted: tuple[TopicImage, ...] = ()
    partitions_changed: tuple[tuple[str, int], ...] = ()
    topic_configs_changed: tuple[str, ...] = ()
    broker_configs_changed: tuple[str, ...] = ()
    brokers_changed: tuple[int, ...] = ()


@dataclass
class MetadataImage:
    """The whole cluster's metadata at one point of the metadata log.

    topics_by_name / topics_by_id  the same TopicImages, two ways in
    brokers                        registered brokers by id
    broker_configs                 config overrides by broker id string ("" = cluster default)
    producer_ids_next              producer ids below this were handed out (ProducerIdsRecord)
    cluster_id                     set by the store from meta.properties; not a record

    Invariants: topics_by_name and topics_by_id hold the same topics; names and ids are unique.
    Owned by the MetadataStore (which applies records on a copy and swaps); everyone else reads.
    """

    cluster_id: str = ""
    topics_by_name: dict[str, TopicImage] = field(default_factory=dict)
    topics_by_id: dict[uuid.UUID, TopicImage] = field(default_factory=dict)
    brokers: dict[int, BrokerRegistration] = field(default_factory=dict)
    broker_configs: dict[str, dict[str, str]] = field(default_factory=dict)
    producer_ids_next: int = 0

    def copy(self) -> MetadataImage:
        """A new image sharing the (immutable) topic and partition images."""
        return MetadataImage(
            cluster_id=self.cluster_id,
            topics_by_name=dict(self.topics_by_name),
            topics_by_id=dict(self.topics_by_id),
            brokers=dict(self.brokers),
            broker_configs={k: dict(v) for k, v in self.broker_configs.items()},
            producer_ids_next=self.producer_ids_next,
        )

    @classmethod
    def from_records(cls, records, cluster_id: str = "") -> MetadataImage:
        image = cls(cluster_id=cluster_id)
        for record in records:
            image.apply(record)
        return image

    # -- applying records ----------------------------------------------------------------------
    def apply(self, record: MetadataRecord) -> Change:
        """Apply one record in place; returns what changed. Raises InvalidMetadataRecord."""
        handler = _APPLY.get(type(record))
        if handler is None:
            raise InvalidMetadataRecord(f"no way to apply {type(record).__name__}")
        return handler(self, record)

    def _topic(self, topic_id: uuid.UUID, record: MetadataRecord) -> TopicImage:
        topic = self.topics_by_id.get(topic_id)
        if topic is None:
            raise InvalidMetadataRecord(f"{type(record).__name__} for unknown topic id {topic_id}")
        return topic

    def _put(self, topic: TopicImage) -> None:
        self.topics_by_name[topic.name] = topic
        self.topics_by_id[topic.topic_id] = topic

    def _apply_topic(self, record: TopicRecord) -> Change:
        if record.name in self.topics_by_name or record.topic_id in self.topics_by_id:
            raise InvalidMetadataRecord(f"topic {record.name} ({record.topic_id}) already exists")
        self._put(TopicImage(record.name, record.topic_id, {}, {}))
        return Change(topics_created=(record.name,))

    def _apply_partition(self, record: PartitionRecord) -> Change:
        topic = self._topic(record.topic_id, record)
        partition = PartitionImage(record.partition_id, tuple(record.replicas), tuple(record.isr), record.leader,
                                   record.leader_epoch, record.partition_epoch,
                                   tuple(record.adding_replicas), tuple(record.removing_replicas))
        self._put(replace(topic, partitions={**topic.partitions, record.partition_id: partition}))
        return Change(partitions_changed=((topic.name, record.partition_id),))

    def _apply_partition_change(self, record: PartitionChangeRecord) -> Change:
        topic = self._topic(record.topic_id, record)
        old = topic.partitions.get(record.partition_id)
        if old is None:
            raise InvalidMetadataRecord(f"PartitionChangeRecord for unknown partition "
                                        f"{topic.name}-{record.partition_id}")
        leader_changed = record.leader != NO_LEADER_CHANGE and record.leader != old.leader
        new = replace(
            old,
            isr=tuple(record.isr) if record.isr is not None else old.isr,
            replicas=tuple(record.replicas) if record.replicas is not None else old.replicas,
            adding_replicas=(tuple(record.adding_replicas) if record.adding_replicas is not None
                             else old.adding_replicas),
            removing_replicas=(tuple(record.removing_replicas) if record.removing_replicas is not None
                               else old.removing_replicas),
            leader=record.leader if leader_changed else old.leader,
            leader_epoch=old.leader_epoch + 1 if leader_changed else old.leader_epoch,
            partition_epoch=old.partition_epoch + 1,
        )
        self._put(replace(topic, partitions={**topic.partitions, record.partition_id: new}))
        return Change(partitions_changed=((topic.name, record.partition_id),))

    def _apply_remove_topic(self, record: RemoveTopicRecord) -> Change:
        topic = self._topic(record.topic_id, record)
        del self.topics_by_name[topic.name]
        del self.topics_by_id[topic.topic_id]
        return Change(topics_deleted=(topic,))

    def _apply_config(self, record: ConfigRecord) -> Change:
        if record.resource_type == RESOURCE_TOPIC:
            topic = self.topics_by_name.get(record.resource_name)
            if topic is None:
                raise InvalidMetadataRecord(f"ConfigRecord for unknown topic {record.resource_name}")
            configs = dict(topic.configs)
            if record.value is None:
                configs.pop(record.name, None)
            else:
                configs[record.name] = record.value
            self._put(replace(topic, configs=configs))
            return Change(topic_configs_changed=(topic.name,))
        if record.resource_type == RESOURCE_BROKER:
            configs = dict(self.broker_configs.get(record.resource_name, {}))
            if record.value is None:
                configs.pop(record.name, None)
            else:
                configs[record.name] = record.value
            if configs:
                self.broker_configs[record.resource_name] = configs
            else:
                self.broker_configs.pop(record.resource_name, None)
            return Change(broker_configs_changed=(record.resource_name,))
        raise InvalidMetadataRecord(f"ConfigRecord for unknown resource type {record.resource_type}")

    def _apply_register_broker(self, record: RegisterBrokerRecord) -> Change:
        self.brokers[record.broker_id] = BrokerRegistration(record.broker_id, record.host, record.port, record.rack,
                                                            record.incarnation_id, record.broker_epoch)
        return Change(brokers_changed=(record.broker_id,))

    def _apply_unregister_broker(self, record: UnregisterBrokerRecord) -> Change:
        if self.brokers.pop(record.broker_id, None) is None:
            return Change()
        return Change(brokers_changed=(record.broker_id,))

    def _apply_producer_ids(self, record: ProducerIdsRecord) -> Change:
        if record.next_producer_id < self.producer_ids_next:
            raise InvalidMetadataRecord(f"producer ids would go back from {self.producer_ids_next} "
                                        f"to {record.next_producer_id}")
        self.producer_ids_next = record.next_producer_id
        return Change()

    # -- the image as records (snapshots) ------------------------------------------------------
    def to_records(self) -> list[MetadataRecord]:
        """The fewest records that rebuild this image (cluster_id aside): a snapshot."""
        records: list[MetadataRecord] = []
        for broker in sorted(self.brokers.values(), key=lambda b: b.broker_id):
            records.append(RegisterBrokerRecord(broker.broker_id, broker.host, broker.port, broker.rack,
                                                broker.incarnation_id, broker.broker_epoch))
        for resource_name in sorted(self.broker_configs):
            for name, value in sorted(self.broker_configs[resource_name].items()):
                records.append(ConfigRecord(RESOURCE_BROKER, resource_name, name, value))
        for topic in sorted(self.topics_by_name.values(), key=lambda t: t.name):
            records.append(TopicRecord(topic.name, topic.topic_id))
            for index in sorted(topic.partitions):
                p = topic.partitions[index]
                records.append(PartitionRecord(index, topic.topic_id, p.replicas, p.isr, p.leader,
                                               p.leader_epoch, p.partition_epoch,
                                               p.adding_replicas, p.removing_replicas))
            for name, value in sorted(topic.configs.items()):
                records.append(ConfigRecord(RESOURCE_TOPIC, topic.name, name, value))
        if self.producer_ids_next:
            records.append(ProducerIdsRecord(-1, self.producer_ids_next))
        return records


_APPLY = {
    TopicRecord: MetadataImage._apply_topic,
    PartitionRecord: MetadataImage._apply_partition,
    PartitionChangeRecord: MetadataImage._apply_partition_change,
    RemoveTopicRecord: MetadataImage._apply_remove_topic,
    ConfigRecord: MetadataImage._apply_config,
    RegisterBrokerRecord: MetadataImage._apply_register_broker,
    UnregisterBrokerRecord: MetadataImage._apply_unregister_broker,
    ProducerIdsRecord: MetadataImage._apply_producer_ids,
}
