"""AlterPartitionReassignments (45) and ListPartitionReassignments (46) handlers: kio requests
in, kio responses out (encoded, so every field is valid for the version), on a single node and
against a controller deciding over an in-memory image (no etcd)."""

from __future__ import annotations

import asyncio
import io
import uuid
from types import SimpleNamespace

import pytest

from odradek.broker.context import ClientInfo, RequestContext
from odradek.broker.handlers import alter_partition_reassignments, list_partition_reassignments
from odradek.metadata import reassignment
from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import PartitionRecord, RegisterBrokerRecord, TopicRecord
from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode as E

TOPIC_ID = uuid.uuid4()


def image(brokers=(1, 2, 3)) -> MetadataImage:
    return MetadataImage.from_records([
        *(RegisterBrokerRecord(b, "h", 9090 + b) for b in brokers),
        TopicRecord("t", TOPIC_ID), PartitionRecord(0, TOPIC_ID, (1, 2), (1, 2), 1, 3, 9),
        PartitionRecord(1, TOPIC_ID, (2, 1), (2, 1), 2, 3, 9)])


class InMemoryController:
    """Decides with reassignment.py over its own image, as the ClusterController does."""

    def __init__(self, *, active=True, fail: E | None = None) -> None:
        self.active = active
        self.fail = fail
        self.image = image()
        self.calls = []

    async def alter_partition_reassignments(self, requests, allow_rf_change=True):
        self.calls.append((requests, allow_rf_change))
        if self.fail is not None:
            raise MetadataQuorumError(self.fail, "test")
        records, results = reassignment.alter_reassignments(self.image, requests, set(self.image.brokers),
                                                            allow_rf_change)
        for record in records:
            self.image.apply(record)
        return results


def call(handler, api_key, version, cluster, broker_image=None, **fields):
    request_class = apis.request_codec(api_key, version)[0]
    request = apis.make(request_class, **fields)
    broker = SimpleNamespace(cluster=cluster, node_id=1,
                             image=broker_image if broker_image is not None else image(brokers=(1,)))
    ctx = RequestContext(api_key, version, 1, "test", ClientInfo("c1", "PLAINTEXT", "127.0.0.1", 1), broker)
    response = asyncio.run(handler.handle(request, ctx))
    _, writer, _ = apis.response_codec(api_key, version)
    writer(io.BytesIO(), response)
    return response


def alter_fields(version, targets, allow_rf_change=True):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    m = load_payload_module(45, version, EntityType.request)
    by_topic: dict[str, list] = {}
    for (name, index), replicas in targets.items():
        by_topic.setdefault(name, []).append(m.ReassignablePartition(partition_index=index, replicas=replicas))
    fields = {"topics": tuple(m.ReassignableTopic(name=name, partitions=tuple(ps)) for name, ps in by_topic.items())}
    if version >= 1:
        fields["allow_replication_factor_change"] = allow_rf_change
    return fields


def errors(response):
    return {(t.name, p.partition_index): p.error_code for t in response.responses for p in t.partitions}


def list_fields(partitions):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    m = load_payload_module(46, 0, EntityType.request)
    topics = None if partitions is None else tuple(
        m.ListPartitionReassignmentsTopics(name=name, partition_indexes=tuple(indexes))
        for name, indexes in partitions.items())
    return {"topics": topics}


def test_both_apis_are_advertised():
    assert (apis.APIS[45].min_version, apis.APIS[45].max_version) == (0, 1)
    assert (apis.APIS[46].min_version, apis.APIS[46].max_version) == (0, 0)


@pytest.mark.parametrize("version", [0, 1])
def test_single_node_reassignment_to_itself_is_a_no_op_and_anything_else_is_refused(version):
    response = call(alter_partition_reassignments, 45, version, None, **alter_fields(version, {
        ("t", 0): (1,), ("t", 1): (2,), ("nope", 0): (1,)}))
    assert response.error_code is E.none
    assert errors(response) == {("t", 0): E.none, ("t", 1): E.invalid_replica_assignment,
                                ("nope", 0): E.unknown_topic_or_partition}
    response = call(alter_partition_reassignments, 45, version, None, **alter_fields(version, {("t", 0): None}))
    assert errors(response) == {("t", 0): E.no_reassignment_in_progress}
    listed = call(list_partition_reassignments, 46, 0, None, **list_fields(None))
    assert (listed.error_code, listed.topics) == (E.none, ())


@pytest.mark.parametrize("version", [0, 1])
def test_on_the_controller_a_move_starts_and_is_listed_until_cancelled(version):
    controller = InMemoryController()
    cluster = SimpleNamespace(controller=controller)
    response = call(alter_partition_reassignments, 45, version, cluster, **alter_fields(version, {("t", 0): (2, 3)}))
    assert (response.error_code, errors(response)) == (E.none, {("t", 0): E.none})
    listed = call(list_partition_reassignments, 46, 0, cluster, broker_image=controller.image,
                  **list_fields({"t": [0, 1, 7]}))
    [topic] = listed.topics
    [p] = topic.partitions
    assert (topic.name, p.partition_index, tuple(p.replicas), tuple(p.adding_replicas),
            tuple(p.removing_replicas)) == ("t", 0, (2, 3, 1), (3,), (1,))
    response = call(alter_partition_reassignments, 45, version, cluster, **alter_fields(version, {("t", 0): None}))
    assert errors(response) == {("t", 0): E.none}
    listed = call(list_partition_reassignments, 46, 0, cluster, broker_image=controller.image, **list_fields(None))
    assert listed.topics == ()


def test_v1_can_refuse_a_replication_factor_change():
    controller = InMemoryController()
    response = call(alter_partition_reassignments, 45, 1, SimpleNamespace(controller=controller),
                    **alter_fields(1, {("t", 0): (1, 2, 3)}, allow_rf_change=False))
    assert errors(response) == {("t", 0): E.invalid_replication_factor}
    assert controller.calls[0][1] is False


def test_not_the_controller_and_quorum_errors_are_top_level():
    for cluster in (SimpleNamespace(controller=None), SimpleNamespace(controller=InMemoryController(active=False))):
        response = call(alter_partition_reassignments, 45, 0, cluster, **alter_fields(0, {("t", 0): (2, 3)}))
        assert (response.error_code, response.responses) == (E.not_controller, ())
    response = call(alter_partition_reassignments, 45, 0,
                    SimpleNamespace(controller=InMemoryController(fail=E.request_timed_out)),
                    **alter_fields(0, {("t", 0): (2, 3)}))
    assert response.error_code is E.request_timed_out
