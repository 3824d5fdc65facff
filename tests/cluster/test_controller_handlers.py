"""AlterPartition (56) and ElectLeaders (43) handlers: kio requests in, kio responses out (encoded
to check they are valid for each version), against a single node and a fake controller."""

from __future__ import annotations

import asyncio
import io
import uuid
from types import SimpleNamespace

import pytest

from odradek.broker.context import ClientInfo, RequestContext
from odradek.broker.handlers import alter_partition, elect_leaders
from odradek.metadata.election import AlterPartitionResult, ElectionResult
from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import (
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
    UnregisterBrokerRecord,
    decode_record,
    encode_record,
)
from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode as E

TOPIC_ID = uuid.uuid4()


def image() -> MetadataImage:
    return MetadataImage.from_records([
        RegisterBrokerRecord(1, "h", 9091, None, "inc-1", 5), RegisterBrokerRecord(2, "h", 9092, None, "inc-2", 7),
        TopicRecord("t", TOPIC_ID), PartitionRecord(0, TOPIC_ID, (1, 2), (1, 2), 1, 3, 9)])


class FakeController:
    def __init__(self, *, active=True, fail: E | None = None) -> None:
        self.active = active
        self.fail = fail
        self.store = SimpleNamespace(image=image())
        self.calls = []

    async def alter_partition(self, requests, member_epochs=None):
        self.calls.append((requests, member_epochs))
        if self.fail is not None:
            raise MetadataQuorumError(self.fail, "test")
        return [AlterPartitionResult(E.none, r.broker_id, r.leader_epoch, r.new_isr, r.partition_epoch + 1)
                for r in requests]

    async def elect_leaders(self, partitions, election_type):
        self.calls.append((partitions, election_type))
        if self.fail is not None:
            raise MetadataQuorumError(self.fail, "test")
        return [ElectionResult(name, index, E.none) for name, index in partitions or [("t", 0)]]


def ctx(api_key: int, version: int, cluster) -> RequestContext:
    broker = SimpleNamespace(cluster=cluster, image=image())
    return RequestContext(api_key, version, 1, "test", ClientInfo("c1", "PLAINTEXT", "127.0.0.1", 1), broker)


def call(handler, api_key, version, cluster, **fields):
    request_class = apis.request_codec(api_key, version)[0]
    request = apis.make(request_class, **fields)
    response = asyncio.run(handler.handle(request, ctx(api_key, version, cluster)))
    _, writer, _ = apis.response_codec(api_key, version)
    writer(io.BytesIO(), response)  # encodes: every field valid for this version
    return response


def alter_fields(version: int, isr=(1,), broker_epoch=-1):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(56, version, EntityType.request)
    if version >= 3:
        partition = module.PartitionData(partition_index=0, leader_epoch=3, partition_epoch=9,
                                         new_isr_with_epochs=tuple(module.BrokerState(broker_id=b, broker_epoch=e)
                                                                   for b, e in isr))
    else:
        partition = module.PartitionData(partition_index=0, leader_epoch=3, partition_epoch=9, new_isr=tuple(isr))
    return {"broker_id": 1, "broker_epoch": broker_epoch,
                "topics": (module.TopicData(topic_id=TOPIC_ID, partitions=(partition,)),)}


@pytest.mark.parametrize("version", [2, 3])
def test_alter_partition_single_node_and_non_controller_answer_not_controller(version):
    isr = ((1, 5),) if version >= 3 else (1,)
    for cluster in (None, SimpleNamespace(controller=None), SimpleNamespace(controller=FakeController(active=False))):
        response = call(alter_partition, 56, version, cluster, **alter_fields(version, isr))
        assert response.error_code is E.not_controller and response.topics == ()


@pytest.mark.parametrize("version", [2, 3])
def test_alter_partition_on_the_controller_answers_each_partition(version):
    controller = FakeController()
    isr = ((1, 5), (2, 7)) if version >= 3 else (1, 2)
    response = call(alter_partition, 56, version, SimpleNamespace(controller=controller),
                    **alter_fields(version, isr, broker_epoch=5))
    assert response.error_code is E.none
    [topic] = response.topics
    assert topic.topic_id == TOPIC_ID
    [p] = topic.partitions
    assert (p.error_code, p.leader_id, p.leader_epoch, tuple(p.isr), p.partition_epoch) == (E.none, 1, 3, (1, 2), 10)
    [(requests, epochs)] = controller.calls
    assert requests[0].new_isr == (1, 2) and requests[0].partition_epoch == 9
    assert epochs == ([{1: 5, 2: 7}] if version >= 3 else [None])


def test_alter_partition_stale_sender_epoch_and_quorum_errors():
    controller = FakeController()
    response = call(alter_partition, 56, 3, SimpleNamespace(controller=controller),
                    **alter_fields(3, ((1, 5),), broker_epoch=4))
    assert response.error_code is E.stale_broker_epoch and controller.calls == []
    response = call(alter_partition, 56, 3, SimpleNamespace(controller=FakeController(fail=E.request_timed_out)),
                    **alter_fields(3, ((1, 5),)))
    assert response.error_code is E.request_timed_out


def elect_fields(version, partitions):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(43, version, EntityType.request)
    topic_partitions = None if partitions is None else tuple(
        module.TopicPartitions(topic=name, partitions=tuple(indexes)) for name, indexes in partitions.items())
    return {"election_type": 0, "topic_partitions": topic_partitions}


@pytest.mark.parametrize("version", [0, 1, 2])
def test_elect_leaders_single_node_needs_no_election(version):
    response = call(elect_leaders, 43, version, None, **elect_fields(version, {"t": [0], "nope": [0]}))
    results = {(r.topic, p.partition_id): p.error_code
               for r in response.replica_election_results for p in r.partition_result}
    assert results == {("t", 0): E.election_not_needed, ("nope", 0): E.unknown_topic_or_partition}
    response = call(elect_leaders, 43, version, None, **elect_fields(version, None))
    assert response.replica_election_results == ()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_elect_leaders_not_controller(version):
    response = call(elect_leaders, 43, version, SimpleNamespace(controller=None), **elect_fields(version, {"t": [0]}))
    if version >= 1:
        assert response.error_code is E.not_controller and response.replica_election_results == ()
    else:
        [r] = response.replica_election_results
        assert r.partition_result[0].error_code is E.not_controller


@pytest.mark.parametrize("version", [0, 1, 2])
def test_elect_leaders_on_the_controller(version):
    controller = FakeController()
    response = call(elect_leaders, 43, version, SimpleNamespace(controller=controller),
                    **elect_fields(version, {"t": [0]}))
    [r] = response.replica_election_results
    assert r.topic == "t" and r.partition_result[0].error_code is E.none
    assert controller.calls == [([("t", 0)], 0)]


def test_register_broker_record_v1_round_trips_and_v0_decodes_with_defaults():
    record = RegisterBrokerRecord(3, "h", 9093, "r1", "inc", 42)
    assert decode_record(encode_record(record)) == record
    old = decode_record(b'{"t":"RegisterBrokerRecord","v":0,"broker_id":3,"host":"h","port":9093,"rack":null}')
    assert old == RegisterBrokerRecord(3, "h", 9093, None, None, -1)
    img = image()
    img.apply(UnregisterBrokerRecord(2))
    assert set(img.brokers) == {1}
    assert MetadataImage.from_records(img.to_records()).brokers == img.brokers
    assert decode_record(encode_record(UnregisterBrokerRecord(2))) == UnregisterBrokerRecord(2)
