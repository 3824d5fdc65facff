"""DescribeConfigs handler, called without a socket on a BrokerCore over a temporary data dir."""

from __future__ import annotations

import asyncio

import pytest

from odradek.broker.context import ClientInfo, RequestContext
from odradek.broker.core import BrokerCore
from odradek.config import BrokerConfig
from odradek.metadata import controller
from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode

API_KEY = 32
VERSION = 4
TOPIC, BROKER = 2, 4


@pytest.fixture
def core(tmp_path):
    config, _ = BrokerConfig.load(
        None, {"log.dirs": str(tmp_path), "listeners": "PLAINTEXT://127.0.0.1:0"}
    )
    core = BrokerCore(config)
    core.open()
    core.endpoints = {"PLAINTEXT": ("127.0.0.1", 9092)}
    yield core
    core.close()


def call(core, request, api_key=API_KEY, version=VERSION):
    ctx = RequestContext(
        api_key=api_key,
        api_version=version,
        correlation_id=1,
        client_id="t",
        client=ClientInfo("c-1", "PLAINTEXT", "127.0.0.1", 1),
        broker=core,
    )
    return asyncio.run(apis.handler(api_key)(request, ctx))


def describe(core, *resources):
    m = apis.request_codec(API_KEY, VERSION)[0]
    module = __import__(m.__module__, fromlist=["x"])
    request = m(
        resources=tuple(
            module.DescribeConfigsResource(
                resource_type=t, resource_name=n, configuration_keys=keys
            )
            for t, n, keys in resources
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    return call(core, request).results


def create(core, name, **configs):
    async def run():
        return await core.create_topics(
            [controller.CreatableTopic(name=name, configs=configs)], False
        )

    [result] = asyncio.run(run())
    assert result.error is ErrorCode.none


def test_topic_configs_are_described_with_overrides(core):
    create(core, "orders", **{"retention.ms": "1000"})
    [result] = describe(core, (TOPIC, "orders", ("retention.ms", "cleanup.policy")))
    assert result.error_code == ErrorCode.none
    values = {c.name: (c.value, c.config_source) for c in result.configs}
    assert values["retention.ms"] == ("1000", 1)  # TOPIC_CONFIG
    assert values["cleanup.policy"][0] == "delete"


def test_unknown_topic_is_unknown_topic_or_partition(core):
    [result] = describe(core, (TOPIC, "missing", None))
    assert result.error_code == ErrorCode.unknown_topic_or_partition


@pytest.mark.parametrize("name", ["bad name", "", "..", "x" * 250])
def test_illegal_topic_name_is_invalid_topic_exception(core, name):
    [result] = describe(core, (TOPIC, name, None))
    assert result.error_code == ErrorCode.invalid_topic_exception


def test_broker_configs_for_our_id_or_the_default_resource(core):
    for name in ("", str(core.config.node_id)):
        [result] = describe(core, (BROKER, name, ("num.partitions",)))
        assert result.error_code == ErrorCode.none
        assert [c.name for c in result.configs] == ["num.partitions"]
    [other] = describe(core, (BROKER, "999", None))
    assert other.error_code == ErrorCode.invalid_request


def test_unsupported_resource_type_is_invalid_request(core):
    [result] = describe(core, (3, "group", None))
    assert result.error_code == ErrorCode.invalid_request
