"""Fixtures for integration tests: real brokers, real clients, real sockets."""

from __future__ import annotations

import shutil
import uuid

import pytest

from odradek.testing.process import BrokerProcess


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One broker subprocess per test module, with auto topic creation on."""
    data_dir = tmp_path_factory.mktemp("broker")
    with BrokerProcess(str(data_dir)) as process:
        yield process


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker subprocess of the test's own, for restarts and kills."""
    process = BrokerProcess(str(tmp_path / "data"))
    yield process
    process.stop()


@pytest.fixture
def topic_name():
    return f"t-{uuid.uuid4().hex[:10]}"


def needs_kcat():
    return pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (CI installs Debian's kcat)")
