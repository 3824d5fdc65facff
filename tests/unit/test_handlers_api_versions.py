"""ApiVersions handler without a socket: the answer is the API table, KIP-511 names are checked."""

from __future__ import annotations

import asyncio

import pytest

from odradek.broker.context import ClientInfo, RequestContext
from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode
from odradek.testing.raw import request_module

API_VERSIONS = 18


def call(version, **fields):
    client = ClientInfo("c-1", "PLAINTEXT", "127.0.0.1", 1)
    ctx = RequestContext(
        api_key=API_VERSIONS,
        api_version=version,
        correlation_id=1,
        client_id="t",
        client=client,
        broker=None,
    )
    request = request_module(API_VERSIONS, version).ApiVersionsRequest(**fields)
    return asyncio.run(apis.handler(API_VERSIONS)(request, ctx)), client


@pytest.mark.parametrize("version", range(5))
def test_answer_is_the_api_table(version):
    fields = {"client_software_name": "c", "client_software_version": "1"} if version >= 3 else {}
    response, _ = call(version, **fields)
    assert response.error_code == ErrorCode.none
    assert [(k.api_key, k.min_version, k.max_version) for k in response.api_keys] == [
        (api.key, api.min_version, api.max_version) for api in apis.APIS.values()
    ]


@pytest.mark.parametrize(
    "name, version",
    [
        ("librdkafka", "2.6.1"),
        ("apache-kafka-java", "4.0.0"),
        ("a", "1"),
        ("kafka-python", "2.0.2-dev.1"),
    ],
)
def test_valid_software_names_are_recorded(name, version):
    response, client = call(3, client_software_name=name, client_software_version=version)
    assert response.error_code == ErrorCode.none
    assert (client.software_name, client.software_version) == (name, version)


@pytest.mark.parametrize(
    "name, version",
    [
        ("", "1"),
        ("c", ""),
        ("-c", "1"),
        ("c-", "1"),
        ("c c", "1"),
        ("c", "1.0_beta"),
        ("ĉ", "1"),
    ],
)
def test_invalid_software_names_are_invalid_request_and_not_recorded(name, version):
    response, client = call(3, client_software_name=name, client_software_version=version)
    assert response.error_code == ErrorCode.invalid_request
    assert client.software_name is None
