"""ClusterController's reassignment duties against a real etcd, with in-process stores as
brokers (as tests/cluster/test_cluster_controller.py does): start, list, completion in the
AlterPartition append that adds the last new replica, cancel."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aetcd", reason="the etcd client aetcd is not installed")

from odradek.broker.cluster_controller import ClusterController
from odradek.config import BrokerConfig
from odradek.metadata import controller as topic_controller
from odradek.metadata.election import AlterPartitionRequest
from odradek.metadata.etcd_layout import BrokerEndpoint
from odradek.metadata.etcd_store import EtcdMetadataStore
from odradek.metadata.reassignment import ReassignmentRequest
from odradek.protocol.errors import ErrorCode as E

WAIT_S = 12.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 40))


class Cluster:
    """Three in-process 'brokers': a store each, with a ClusterController started and stopped
    by the store's controller listener, as the core wires it."""

    def __init__(self) -> None:
        self.controllers: dict[int, ClusterController] = {}
        self.stores: dict[int, EtcdMetadataStore] = {}

    async def open(self, etcd, root: str, node_id: int) -> None:
        store = await EtcdMetadataStore.open(
            etcd.url, node_id, root=root, lease_ttl_s=4, open_timeout_s=10.0,
            listeners=(BrokerEndpoint("PLAINTEXT", "127.0.0.1", 9090 + node_id),))
        controller = ClusterController(store, BrokerConfig(node_id=node_id))
        store.controller_listeners.append(lambda on: controller.start() if on else controller.stop())
        if store.is_controller:
            controller.start()
        self.stores[node_id], self.controllers[node_id] = store, controller

    async def until(self, predicate, what: str) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def controller(self) -> ClusterController:
        await self.until(lambda: sum(c.active for c in self.controllers.values()) == 1, "one active controller")
        return next(c for c in self.controllers.values() if c.active)

    def partitions(self, name: str):
        image = max(self.stores.values(), key=lambda s: s.applied_sequence).image
        topic = image.topics_by_name[name]
        return [topic.partitions[i] for i in sorted(topic.partitions)]

    async def create_topic(self, name: str, partitions: int, replication_factor: int):
        ctl = await self.controller()
        results = await ctl.decide_and_append(lambda image: topic_controller.create_topics(
            image, [topic_controller.CreatableTopic(name, partitions, replication_factor)], ctl.config, False))
        assert results[0].error is E.none, results[0]
        return results[0].topic_id

    async def close(self) -> None:
        for node_id, controller in self.controllers.items():
            await controller.close()
            await self.stores[node_id].close()


async def three_brokers(etcd, root) -> Cluster:
    cluster = Cluster()
    for node_id in (1, 2, 3):
        await cluster.open(etcd, root, node_id)
    ctl = await cluster.controller()
    await cluster.until(lambda: set(ctl.store.image.brokers) == {1, 2, 3}, "three registrations")
    return cluster


def test_a_move_completes_in_the_append_that_adds_the_new_replica_to_the_isr(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 1, replication_factor=2)
            ctl = await cluster.controller()
            [p] = cluster.partitions("t")
            (third,) = {1, 2, 3} - set(p.replicas)
            kept = next(b for b in p.replicas if b != p.leader)
            results = await ctl.alter_partition_reassignments([ReassignmentRequest("t", 0, (third, kept)),
                                                               ReassignmentRequest("nope", 0, (1,))])
            assert [r.error for r in results] == [E.none, E.unknown_topic_or_partition]
            [moving] = ctl.list_partition_reassignments()
            assert (moving.replicas, moving.adding_replicas, moving.removing_replicas) == (
                (third, kept, p.leader), (third,), (p.leader,))
            [q] = cluster.partitions("t")
            sequence = ctl.store.applied_sequence
            [result] = await ctl.alter_partition([AlterPartitionRequest(
                topic_id, 0, q.leader, q.leader_epoch, q.partition_epoch, (*q.isr, third))])
            assert result.error is E.none
            assert ctl.store.applied_sequence == sequence + 1  # one entry: ISR change and completion
            [done] = cluster.partitions("t")
            assert (done.replicas, set(done.isr), done.leader, done.is_reassigning) == (
                (third, kept), {third, kept}, third, False)
            assert done.leader_epoch == q.leader_epoch + 1
            assert ctl.list_partition_reassignments() == []
            # A second move, cancelled before the new replica catches up.
            results = await ctl.alter_partition_reassignments([ReassignmentRequest("t", 0, (p.leader, kept))])
            assert results[0].error is E.none and cluster.partitions("t")[0].is_reassigning
            results = await ctl.alter_partition_reassignments([ReassignmentRequest("t", 0, None)])
            assert results[0].error is E.none
            [reverted] = cluster.partitions("t")
            assert (set(reverted.replicas), reverted.is_reassigning) == ({third, kept}, False)
            results = await ctl.alter_partition_reassignments([ReassignmentRequest("t", 0, None)])
            assert results[0].error is E.no_reassignment_in_progress
        finally:
            await cluster.close()
    run(main())
