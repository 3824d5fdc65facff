"""Helpers for the etcd metadata store tests (import after `pytest.importorskip("aetcd")`)."""

from __future__ import annotations

import asyncio
import uuid

import aetcd

from odradek.metadata.etcd_store import EtcdMetadataStore
from odradek.metadata.records import PartitionRecord, TopicRecord

# Stores that must stay alive get a lease that survives a loaded machine's stalls (other test
# suites share the CPU); a store whose lease is meant to expire gets the test etcd's minimum.
TTL_S = 4
SHORT_TTL_S = 1
TAKEOVER_S = 10.0  # a short lease's expiry (TTL + etcd's 0.5 s sweep) + a campaign, with slack


def run(coro):
    """Run one test's coroutine, bounded so a hang fails instead of stalling the suite."""
    return asyncio.run(asyncio.wait_for(coro, 25))


def topic_records(name: str, partitions: int = 3, replicas=(1, 2, 3)):
    topic_id = uuid.uuid4()
    return topic_id, [TopicRecord(name, topic_id)] + [
        PartitionRecord(p, topic_id, tuple(replicas), tuple(replicas), replicas[0]) for p in range(partitions)]


async def open_store(etcd, root, node_id, **kwargs) -> EtcdMetadataStore:
    kwargs.setdefault("lease_ttl_s", TTL_S)
    kwargs.setdefault("rpc_timeout_s", 5.0)
    kwargs.setdefault("open_timeout_s", 10.0)
    return await EtcdMetadataStore.open(etcd.url, node_id, root=root, **kwargs)


async def the_controller(stores, timeout_s=TAKEOVER_S) -> EtcdMetadataStore:
    async def wait():
        while True:
            leaders = [s for s in stores if s.is_controller]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(wait(), timeout_s)


async def raw_client(etcd) -> aetcd.Client:
    host, port = etcd.endpoint
    client = aetcd.Client(host=host, port=port, timeout=2)
    await client.connect()
    return client


async def close_all(stores):
    for store in stores:
        await store.close()


