import uuid

import pytest

from odradek.testing.cluster import ETCD_BINARY, EtcdProcess


@pytest.fixture(scope="module")
def etcd():
    if ETCD_BINARY is None:
        pytest.skip("the etcd binary is not installed (Debian: apt-get install etcd-server)")
    server = EtcdProcess()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def root():
    """A fresh key root per test, so tests sharing one etcd never see each other's keys."""
    return f"/odradek-test-{uuid.uuid4().hex[:12]}"
