"""The controller's decisions: CreateTopics, DeleteTopics, CreatePartitions, IncrementalAlterConfigs."""

from __future__ import annotations

import itertools
import uuid
import pytest

from odradek.config import BrokerConfig, ConfigSource
from odradek.metadata import controller
from odradek.metadata.controller import (
    OP_APPEND,
    OP_DELETE,
    OP_SET,
    OP_SUBTRACT,
    CreatableTopic,
    CreatePartitionsTopic,
    DeletableTopic,
    create_partitions,
    create_topics,
    delete_topics,
    incremental_alter_topic_configs,
)
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from odradek.protocol.errors import ErrorCode

CONFIG = BrokerConfig()


def ids():
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter))


def image_with(*names: str, partitions: int = 1) -> MetadataImage:
    image = MetadataImage()
    records, results = create_topics(image, [CreatableTopic(n, partitions) for n in names], CONFIG, False,
                                     allow_internal=True)
    assert all(r.error is ErrorCode.none for r in results)
    for record in records:
        image.apply(record)
    return image


def create_one(topic: CreatableTopic, image: MetadataImage | None = None, config: BrokerConfig = CONFIG, **kw):
    records, [result] = create_topics(image or MetadataImage(), [topic], config, False, **kw)
    return records, result


# -- CreateTopics ------------------------------------------------------------------------------
def test_create_topic_records_and_result():
    records, results = create_topics(MetadataImage(), [CreatableTopic("orders", 2, 1, configs={"retention.ms": "9"})],
                                     CONFIG, False, topic_id_factory=ids())
    t = uuid.UUID(int=1)
    assert records == [TopicRecord("orders", t),
                       PartitionRecord(0, t, (1,), (1,), 1, 0, 0),
                       PartitionRecord(1, t, (1,), (1,), 1, 0, 0),
                       ConfigRecord(RESOURCE_TOPIC, "orders", "retention.ms", "9")]
    [result] = results
    assert (result.name, result.error, result.topic_id, result.num_partitions, result.replication_factor) == \
        ("orders", ErrorCode.none, t, 2, 1)
    retention = next(c for c in result.configs if c.name == "retention.ms")
    assert (retention.value, retention.source) == ("9", ConfigSource.DYNAMIC_TOPIC_CONFIG)


def test_minus_one_means_broker_defaults():
    config = BrokerConfig.load(None, {"num.partitions": "3"})[0]
    records, result = create_one(CreatableTopic("t"), config=config)
    assert result.num_partitions == 3 and result.replication_factor == 1
    assert sum(isinstance(r, PartitionRecord) for r in records) == 3


def test_validate_only_returns_results_without_records():
    records, results = create_topics(MetadataImage(), [CreatableTopic("a", 2), CreatableTopic("b", 0)], CONFIG, True)
    assert records == []
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.invalid_partitions]
    assert results[0].num_partitions == 2


def test_existing_topic():
    _, result = create_one(CreatableTopic("orders"), image_with("orders"))
    assert result.error is ErrorCode.topic_already_exists
    assert result.error_message == "Topic 'orders' already exists."


@pytest.mark.parametrize("name, fragment", [
    ("", "can't be empty"),
    (".", 'cannot be "." or ".."'),
    ("..", 'cannot be "." or ".."'),
    ("a" * 250, "longer than 249"),
    ("bad name", "character other than ASCII alphanumerics"),
    ("caf\u00e9", "character other than ASCII alphanumerics"),
    ("a/b", "character other than ASCII alphanumerics"),
])
def test_illegal_topic_names(name, fragment):
    records, result = create_one(CreatableTopic(name))
    assert result.error is ErrorCode.invalid_topic_exception and fragment in result.error_message
    assert records == []


def test_longest_legal_name_is_accepted():
    assert create_one(CreatableTopic("a" * 249))[1].error is ErrorCode.none


def test_dot_and_underscore_collide_with_existing_and_within_a_request():
    _, result = create_one(CreatableTopic("metrics_raw"), image_with("metrics.raw"))
    assert result.error is ErrorCode.invalid_topic_exception
    assert result.error_message == "Topic 'metrics_raw' collides with existing topic: metrics.raw"
    records, results = create_topics(MetadataImage(), [CreatableTopic("x.y"), CreatableTopic("x_y")], CONFIG, False)
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.invalid_topic_exception]
    assert [r.name for r in records if isinstance(r, TopicRecord)] == ["x.y"]


def test_duplicate_names_in_one_request_are_invalid_request():
    records, results = create_topics(MetadataImage(), [CreatableTopic("a"), CreatableTopic("b"), CreatableTopic("a")],
                                     CONFIG, False)
    assert [(r.name, r.error) for r in results] == [("b", ErrorCode.none), ("a", ErrorCode.invalid_request)]
    assert results[1].error_message == "Duplicate topic name."
    assert [r.name for r in records if isinstance(r, TopicRecord)] == ["b"]


@pytest.mark.parametrize("partitions", [0, -2, -100])
def test_non_positive_partitions(partitions):
    _, result = create_one(CreatableTopic("t", partitions))
    assert result.error is ErrorCode.invalid_partitions


def test_partition_count_is_bounded():
    _, result = create_one(CreatableTopic("t", controller.MAX_PARTITIONS_PER_TOPIC + 1))
    assert result.error is ErrorCode.invalid_partitions


@pytest.mark.parametrize("rf", [0, -2])
def test_non_positive_replication_factor(rf):
    _, result = create_one(CreatableTopic("t", 1, rf))
    assert result.error is ErrorCode.invalid_replication_factor


def test_replication_factor_above_live_brokers():
    _, result = create_one(CreatableTopic("t", 1, 3))
    assert result.error is ErrorCode.invalid_replication_factor
    assert "only 1 broker(s) are registered" in result.error_message


def test_replicas_spread_over_registered_brokers():
    image = MetadataImage()
    for broker in (1, 2, 3):
        image.apply(RegisterBrokerRecord(broker, "h", 9090 + broker, None))
    records, result = create_one(CreatableTopic("t", 3, 2), image)
    assert result.error is ErrorCode.none
    placed = [(r.replicas, r.leader) for r in records if isinstance(r, PartitionRecord)]
    # Round robin from a per-topic start: each broker leads one partition and holds two replicas.
    assert sorted(leader for _, leader in placed) == [1, 2, 3]
    assert all(replicas[0] == leader and len(set(replicas)) == 2 for replicas, leader in placed)
    assert sorted(b for replicas, _ in placed for b in replicas) == [1, 1, 2, 2, 3, 3]
    assert {frozenset(replicas) for replicas, _ in placed} == {frozenset({1, 2}), frozenset({2, 3}),
                                                               frozenset({3, 1})}


def test_topics_start_their_leaders_at_different_brokers():
    image = MetadataImage()
    for broker in (1, 2, 3):
        image.apply(RegisterBrokerRecord(broker, "h", 9090 + broker, None))
    first_leaders = set()
    for name in ("a", "b", "c", "d", "e", "f"):
        records, _ = create_one(CreatableTopic(name, 1, 1), image)
        first_leaders |= {r.leader for r in records if isinstance(r, PartitionRecord)}
    assert len(first_leaders) > 1


def test_replicas_span_racks_when_brokers_have_them():
    image = MetadataImage()
    # Two racks, brokers listed so that plain round robin would put both replicas in rack "a".
    for broker, rack in ((1, "a"), (2, "a"), (3, "b"), (4, "b")):
        image.apply(RegisterBrokerRecord(broker, "h", 9090 + broker, rack))
    records, result = create_one(CreatableTopic("t", 8, 2), image)
    assert result.error is ErrorCode.none
    rack = {1: "a", 2: "a", 3: "b", 4: "b"}
    for r in records:
        if isinstance(r, PartitionRecord):
            assert {rack[b] for b in r.replicas} == {"a", "b"}, r.replicas


def test_manual_assignment():
    records, result = create_one(CreatableTopic("t", assignments={0: [1], 1: [1]}))
    assert result.error is ErrorCode.none and result.num_partitions == 2 and result.replication_factor == 1
    assert [r.partition_id for r in records if isinstance(r, PartitionRecord)] == [0, 1]


@pytest.mark.parametrize("topic, error", [
    (CreatableTopic("t", 2, assignments={0: [1]}), ErrorCode.invalid_request),
    (CreatableTopic("t", -1, 1, assignments={0: [1]}), ErrorCode.invalid_request),
    (CreatableTopic("t", assignments={0: [1], 2: [1]}), ErrorCode.invalid_replica_assignment),
    (CreatableTopic("t", assignments={1: [1]}), ErrorCode.invalid_replica_assignment),
    (CreatableTopic("t", assignments={0: [1, 1]}), ErrorCode.invalid_replica_assignment),
    (CreatableTopic("t", assignments={0: [7]}), ErrorCode.invalid_replica_assignment),
    (CreatableTopic("t", assignments={0: []}), ErrorCode.invalid_replica_assignment),
])
def test_bad_manual_assignments(topic, error):
    records, result = create_one(topic)
    assert result.error is error and records == []


@pytest.mark.parametrize("configs, error, fragment", [
    ({"retention.ms": "abc"}, ErrorCode.invalid_config, "retention.ms"),
    ({"no.such": "1"}, ErrorCode.invalid_config, "Unknown topic config name: no.such"),
    ({"retention.ms": None}, ErrorCode.invalid_config, "Null value not supported for topic configs: retention.ms"),
])
def test_invalid_configs(configs, error, fragment):
    records, result = create_one(CreatableTopic("t", configs=configs))
    assert result.error is error and fragment in result.error_message and records == []


def test_internal_topics_are_created_by_the_broker_only():
    _, result = create_one(CreatableTopic("__consumer_offsets", 1))
    assert result.error is ErrorCode.invalid_request
    records, result = create_one(controller.internal_topic("__consumer_offsets", CONFIG), allow_internal=True)
    assert result.error is ErrorCode.none and result.num_partitions == 50
    assert ConfigRecord(RESOURCE_TOPIC, "__consumer_offsets", "cleanup.policy", "compact") in records
    _, result = create_one(controller.internal_topic("__transaction_state", CONFIG), allow_internal=True)
    assert result.error is ErrorCode.none
    _, result = create_one(CreatableTopic("__cluster_metadata", 1), allow_internal=True)
    assert result.error is ErrorCode.invalid_request


def test_kio_request_topics_are_accepted():
    from kio.schema.create_topics.v7.request import (
        CreatableReplicaAssignment,
        CreatableTopic as KioCreatableTopic,
        CreatableTopicConfig,
    )
    from kio.schema.types import BrokerId

    kio_topic = KioCreatableTopic(
        name="t", num_partitions=-1, replication_factor=-1,
        assignments=(CreatableReplicaAssignment(partition_index=0, broker_ids=(BrokerId(1),)),),
        configs=(CreatableTopicConfig(name="cleanup.policy", value="compact"),))
    records, [result] = create_topics(MetadataImage(), [kio_topic], CONFIG, False)
    assert result.error is ErrorCode.none
    assert ConfigRecord(RESOURCE_TOPIC, "t", "cleanup.policy", "compact") in records


def test_kio_create_partitions_topics_are_accepted():
    from kio.schema.create_partitions.v3.request import CreatePartitionsAssignment, CreatePartitionsTopic as KioTopic
    from kio.schema.types import BrokerId

    image = image_with("t")
    records, [result] = create_partitions(
        image, [KioTopic(name="t", count=2, assignments=(CreatePartitionsAssignment(broker_ids=(BrokerId(1),)),))],
        CONFIG, False)
    assert result.error is ErrorCode.none and [r.partition_id for r in records] == [1]
    records, [result] = create_partitions(image, [KioTopic(name="t", count=3, assignments=None)], CONFIG, False)
    assert result.error is ErrorCode.none and [r.partition_id for r in records] == [1, 2]


# -- DeleteTopics ------------------------------------------------------------------------------
def test_delete_by_name_and_by_id():
    image = image_with("a", "b")
    b_id = image.topics_by_name["b"].topic_id
    records, results = delete_topics(image, ["a", DeletableTopic(topic_id=b_id)], CONFIG)
    assert records == [RemoveTopicRecord(image.topics_by_name["a"].topic_id), RemoveTopicRecord(b_id)]
    assert [(r.name, r.error) for r in results] == [("a", ErrorCode.none), ("b", ErrorCode.none)]


def test_delete_unknown_topics():
    image = image_with("a")
    unknown = uuid.UUID(int=99)
    records, results = delete_topics(image, ["missing", unknown], CONFIG)
    assert records == []
    assert [r.error for r in results] == [ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_id]


def test_delete_duplicates_and_ambiguous_references():
    image = image_with("a", "b")
    a_id = image.topics_by_name["a"].topic_id
    records, results = delete_topics(
        image, ["b", "b", DeletableTopic("a", a_id), DeletableTopic(), uuid.UUID(int=5), uuid.UUID(int=5)], CONFIG)
    assert records == []
    assert [(r.error, r.error_message) for r in results] == [
        (ErrorCode.invalid_request, "Duplicate topic name."),
        (ErrorCode.invalid_request, "You may not specify both topic name and topic id."),
        (ErrorCode.invalid_request, "Neither topic name nor id were specified."),
        (ErrorCode.invalid_request, "Duplicate topic id."),
    ]


def test_delete_same_topic_by_name_and_id_is_refused_once():
    image = image_with("a")
    a_id = image.topics_by_name["a"].topic_id
    records, results = delete_topics(image, ["a", a_id], CONFIG)
    assert records == [RemoveTopicRecord(a_id)]
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.invalid_request]


def test_internal_topics_cannot_be_deleted():
    image = image_with("__consumer_offsets")
    records, [result] = delete_topics(image, ["__consumer_offsets"], CONFIG)
    assert records == [] and result.error is ErrorCode.invalid_topic_exception


def test_delete_topic_disabled():
    config = BrokerConfig.load(None, {"delete.topic.enable": "false"})[0]
    records, [result] = delete_topics(image_with("a"), ["a"], config)
    assert records == [] and result.error is ErrorCode.topic_deletion_disabled


def test_kio_delete_topic_states_are_accepted():
    from kio.schema.delete_topics.v6.request import DeleteTopicState

    image = image_with("a", "b")
    b_id = image.topics_by_name["b"].topic_id
    records, results = delete_topics(image, [DeleteTopicState(name="a", topic_id=uuid.UUID(int=0)),
                                             DeleteTopicState(name=None, topic_id=b_id)], CONFIG)
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.none] and len(records) == 2


# -- CreatePartitions --------------------------------------------------------------------------
def test_create_partitions_adds_new_ones():
    image = image_with("t", partitions=2)
    records, [result] = create_partitions(image, [CreatePartitionsTopic("t", 5)], CONFIG, False)
    assert result.error is ErrorCode.none
    assert [r.partition_id for r in records] == [2, 3, 4]
    assert all(r.topic_id == image.topics_by_name["t"].topic_id and r.leader == 1 for r in records)
    records, [result] = create_partitions(image, [CreatePartitionsTopic("t", 5)], CONFIG, True)
    assert result.error is ErrorCode.none and records == []


@pytest.mark.parametrize("request_, error", [
    (CreatePartitionsTopic("t", 2), ErrorCode.invalid_partitions),
    (CreatePartitionsTopic("t", 1), ErrorCode.invalid_partitions),
    (CreatePartitionsTopic("missing", 3), ErrorCode.unknown_topic_or_partition),
    (CreatePartitionsTopic("t", 4, [[1]]), ErrorCode.invalid_replica_assignment),
    (CreatePartitionsTopic("t", 3, [[9]]), ErrorCode.invalid_replica_assignment),
])
def test_create_partitions_errors(request_, error):
    records, [result] = create_partitions(image_with("t", partitions=2), [request_], CONFIG, False)
    assert result.error is error and records == []


def test_create_partitions_with_assignment_and_duplicates():
    image = image_with("t", partitions=1)
    records, results = create_partitions(image, [CreatePartitionsTopic("t", 2, [[1]])], CONFIG, False)
    assert results[0].error is ErrorCode.none and records[0].partition_id == 1
    records, results = create_partitions(image, [CreatePartitionsTopic("t", 2), CreatePartitionsTopic("t", 3)],
                                         CONFIG, False)
    assert records == [] and [r.error for r in results] == [ErrorCode.invalid_request]


# -- IncrementalAlterConfigs -------------------------------------------------------------------
def test_incremental_alter_set_delete_append_subtract():
    image = image_with("t")
    image.apply(ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", "100"))
    records, error, _ = incremental_alter_topic_configs(
        image, "t", [("retention.ms", OP_DELETE, None), ("segment.ms", OP_SET, "5000"),
                     ("cleanup.policy", OP_APPEND, "compact")], False)
    assert error is ErrorCode.none
    assert records == [ConfigRecord(RESOURCE_TOPIC, "t", "cleanup.policy", "delete,compact"),
                       ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", None),
                       ConfigRecord(RESOURCE_TOPIC, "t", "segment.ms", "5000")]
    for record in records:
        image.apply(record)
    records, error, _ = incremental_alter_topic_configs(image, "t", [("cleanup.policy", OP_SUBTRACT, "delete")], False)
    assert records == [ConfigRecord(RESOURCE_TOPIC, "t", "cleanup.policy", "compact")]


@pytest.mark.parametrize("ops, error", [
    ([("retention.ms", OP_SET, "x")], ErrorCode.invalid_config),
    ([("nope", OP_SET, "1")], ErrorCode.invalid_config),
    ([("retention.ms", OP_APPEND, "1")], ErrorCode.invalid_config),
    ([("retention.ms", OP_SET, "1"), ("retention.ms", OP_DELETE, None)], ErrorCode.invalid_request),
    ([("retention.ms", 9, "1")], ErrorCode.invalid_request),
    ([("retention.ms", OP_SET, None)], ErrorCode.invalid_request),
])
def test_incremental_alter_errors(ops, error):
    records, got, message = incremental_alter_topic_configs(image_with("t"), "t", ops, False)
    assert got is error and records == [] and message


def test_incremental_alter_unknown_topic_and_validate_only():
    assert incremental_alter_topic_configs(MetadataImage(), "t", [], False)[1] is ErrorCode.unknown_topic_or_partition
    records, error, _ = incremental_alter_topic_configs(image_with("t"), "t", [("retention.ms", OP_SET, "1")], True)
    assert error is ErrorCode.none and records == []
