"""AlterConfigs, IncrementalAlterConfigs, DeleteRecords and DescribeLogDirs over raw requests of
every version, against a real broker process: the error codes and semantics Kafka gives."""

from __future__ import annotations

import uuid

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.testing.process import BrokerProcess
from odradek.testing.raw import RawConnection

TOPIC, BROKER = 2, 4


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory):
    with BrokerProcess(str(tmp_path_factory.mktemp("apis"))) as process:
        yield process


@pytest.fixture
def conn(api_broker):
    with RawConnection(api_broker.bootstrap) as connection:
        yield connection


@pytest.fixture
def topic(conn):
    name = f"api-{uuid.uuid4().hex[:8]}"
    m = conn.module("create_topics", 7)
    response = conn.request(m.CreateTopicsRequest(topics=(m.CreatableTopic(
        name=name, num_partitions=1, replication_factor=1, assignments=(), configs=()),),
        timeout=__import__("datetime").timedelta(seconds=10), validate_only=False))
    assert response.topics[0].error_code == ErrorCode.none
    return name


def describe(conn, resource_type, name, keys=None):
    m = conn.module("describe_configs", 4)
    response = conn.request(m.DescribeConfigsRequest(resources=(m.DescribeConfigsResource(
        resource_type=resource_type, resource_name=name, configuration_keys=keys),),
        include_synonyms=True, include_documentation=False))
    result = response.results[0]
    assert result.error_code == ErrorCode.none, result
    return {c.name: (c.value, int(c.config_source)) for c in result.configs}


def incremental(conn, resource_type, name, operations, *, version=1, validate_only=False):
    m = conn.module("incremental_alter_configs", version)
    response = conn.request(m.IncrementalAlterConfigsRequest(resources=(m.AlterConfigsResource(
        resource_type=resource_type, resource_name=name, configs=tuple(
            m.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in operations)),),
        validate_only=validate_only))
    return response.responses[0]


def alter(conn, resource_type, name, configs, *, version=2, validate_only=False):
    m = conn.module("alter_configs", version)
    response = conn.request(m.AlterConfigsRequest(resources=(m.AlterConfigsResource(
        resource_type=resource_type, resource_name=name, configs=tuple(
            m.AlterableConfig(name=k, value=v) for k, v in configs.items())),), validate_only=validate_only))
    return response.responses[0]


def produce(conn, topic, count):
    from odradek.protocol.records import build_batch

    m = conn.module("produce", 9)
    batch = build_batch([(None, b"v%d" % i, [], 1_000) for i in range(count)])
    response = conn.request(m.ProduceRequest(transactional_id=None, acks=-1,
                                             timeout=__import__("datetime").timedelta(seconds=5),
                                             topic_data=(m.TopicProduceData(name=topic, partition_data=(
                                                 m.PartitionProduceData(index=0, records=batch),)),)))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.none


@pytest.mark.parametrize("version", [0, 1])
def test_incremental_alter_configs_set_delete_append_subtract(conn, topic, version):
    result = incremental(conn, TOPIC, topic, [("retention.ms", 0, "1000"), ("cleanup.policy", 2, "compact")],
                         version=version)
    assert result.error_code == ErrorCode.none
    configs = describe(conn, TOPIC, topic)
    assert configs["retention.ms"] == ("1000", 1) and configs["cleanup.policy"] == ("delete,compact", 1)
    assert incremental(conn, TOPIC, topic, [("retention.ms", 1, None), ("cleanup.policy", 3, "delete")],
                       version=version).error_code == ErrorCode.none
    configs = describe(conn, TOPIC, topic)
    assert configs["retention.ms"] == ("604800000", 5) and configs["cleanup.policy"] == ("compact", 1)


def test_incremental_alter_configs_errors(conn, topic):
    bad = incremental(conn, TOPIC, topic, [("retention.ms", 0, "soon")])
    assert bad.error_code == ErrorCode.invalid_config and "retention.ms" in bad.error_message
    assert incremental(conn, TOPIC, topic, [("no.such.config", 0, "1")]).error_code == ErrorCode.invalid_config
    assert incremental(conn, TOPIC, topic, [("retention.ms", 2, "1")]).error_code == ErrorCode.invalid_config
    assert incremental(conn, TOPIC, "missing-topic", [("retention.ms", 0, "1")]).error_code == \
        ErrorCode.unknown_topic_or_partition
    assert incremental(conn, BROKER, "1", [("listeners", 0, "PLAINTEXT://:1")]).error_code == ErrorCode.invalid_config
    assert incremental(conn, BROKER, "7", [("log.retention.ms", 0, "1")]).error_code == ErrorCode.invalid_request
    assert incremental(conn, TOPIC, topic, [("retention.ms", 0, "5")], validate_only=True).error_code == \
        ErrorCode.none
    assert describe(conn, TOPIC, topic)["retention.ms"][1] == 5  # validate_only changed nothing


@pytest.mark.parametrize("version", [0, 1, 2])
def test_alter_configs_replaces_every_override(conn, topic, version):
    assert alter(conn, TOPIC, topic, {"retention.ms": "1000", "segment.ms": "2000"},
                 version=version).error_code == ErrorCode.none
    assert alter(conn, TOPIC, topic, {"segment.ms": "3000"}, version=version).error_code == ErrorCode.none
    configs = describe(conn, TOPIC, topic)
    assert configs["segment.ms"] == ("3000", 1) and configs["retention.ms"][1] == 5  # removed: not named
    assert alter(conn, TOPIC, topic, {"segment.ms": "0"}, version=version).error_code == ErrorCode.invalid_config


def test_dynamic_broker_config_reaches_topics_without_overrides(conn, topic):
    assert alter(conn, BROKER, "", {"log.retention.bytes": "55555555"}).error_code == ErrorCode.none
    assert describe(conn, TOPIC, topic)["retention.bytes"] == ("55555555", 3)
    assert incremental(conn, BROKER, "1", [("log.retention.bytes", 0, "66666666")]).error_code == ErrorCode.none
    assert describe(conn, TOPIC, topic)["retention.bytes"] == ("66666666", 2)
    assert describe(conn, BROKER, "1")["log.retention.bytes"] == ("66666666", 2)
    assert incremental(conn, BROKER, "1", [("log.retention.bytes", 1, None)]).error_code == ErrorCode.none
    assert alter(conn, BROKER, "", {}).error_code == ErrorCode.none
    assert describe(conn, TOPIC, topic)["retention.bytes"] == ("-1", 5)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_delete_records_then_list_offsets_earliest(conn, topic, version):
    import datetime

    produce(conn, topic, 10)
    m = conn.module("delete_records", version)

    def delete(offset, name=topic, partition=0):
        response = conn.request(m.DeleteRecordsRequest(topics=(m.DeleteRecordsTopic(name=name, partitions=(
            m.DeleteRecordsPartition(partition_index=partition, offset=offset),)),),
            timeout=datetime.timedelta(seconds=5)))
        p = response.topics[0].partitions[0]
        return p.error_code, p.low_watermark

    assert delete(4) == (ErrorCode.none, 4)
    assert delete(11)[0] == ErrorCode.offset_out_of_range
    assert delete(2) == (ErrorCode.none, 4)
    assert delete(0, partition=3)[0] == ErrorCode.unknown_topic_or_partition
    lo = conn.module("list_offsets", 7)
    response = conn.request(lo.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(lo.ListOffsetsTopic(
        name=topic, partitions=(lo.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=-2),)),)))
    assert response.topics[0].partitions[0].offset == 4
    assert delete(-1) == (ErrorCode.none, 10)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_describe_log_dirs_sizes_per_partition(conn, topic, version):
    produce(conn, topic, 3)
    m = conn.module("describe_log_dirs", version)
    everything = conn.request(m.DescribeLogDirsRequest(topics=None))
    results = everything.results
    assert len(results) == 1 and results[0].error_code == ErrorCode.none
    sizes = {(t.name, p.partition_index): p.partition_size for t in results[0].topics for p in t.partitions}
    assert sizes[(topic, 0)] > 0
    one = conn.request(m.DescribeLogDirsRequest(topics=(m.DescribableLogDirTopic(topic=topic, partitions=(0,)),)))
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in one.results[0].topics] == [(topic, [0])]
    if version >= 4:
        assert one.results[0].total_bytes > 0 and one.results[0].usable_bytes >= 0
