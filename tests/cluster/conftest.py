"""Cluster-mode tests share tests/metadata's real etcd subprocess fixture and per-test key root."""

from tests.metadata.conftest import etcd, root  # noqa: F401  (pytest fixtures, re-exported)
