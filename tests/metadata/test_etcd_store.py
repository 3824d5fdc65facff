"""EtcdMetadataStore against a real etcd: log convergence, append rules, restarts, snapshots."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

aetcd = pytest.importorskip("aetcd", reason="the etcd client aetcd is not installed (pip install 'aetcd>=1.0,<2')")

from odradek.metadata import etcd_layout as layout
from odradek.metadata.etcd_store import EtcdMetadataStore, MetadataQuorumError
from odradek.metadata.image import InvalidMetadataRecord
from odradek.metadata.records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionChangeRecord,
    RemoveTopicRecord,
)
from odradek.protocol.errors import ErrorCode
from tests.metadata.etcd_helpers import (
    close_all,
    open_store,
    raw_client,
    run,
    the_controller,
    topic_records,
)


def test_three_stores_converge_on_every_append_in_order(etcd, root):
    async def main():
        stores = [await open_store(etcd, root, node_id) for node_id in (1, 2, 3)]
        try:
            controller = await the_controller(stores)
            assert {s.cluster_id for s in stores} == {controller.cluster_id}
            seen = {s.node_id: [] for s in stores}
            for store in stores:
                store.listeners.append(lambda old, new, changes, n=store.node_id: seen[n].append(
                    (old.topics_by_name.keys() | set(), sorted(new.topics_by_name), changes)))
            orders_id, orders = topic_records("orders")
            payments_id, payments = topic_records("payments", partitions=1)
            sequences = [await controller.append(orders), await controller.append(payments),
                         await controller.append([PartitionChangeRecord(0, orders_id, isr=(1, 2), leader=2)]),
                         await controller.append([ConfigRecord(RESOURCE_TOPIC, "orders", "retention.ms", "1000")]),
                         await controller.append([RemoveTopicRecord(payments_id)])]
            assert sequences == [1, 2, 3, 4, 5]
            for store in stores:
                await store.wait_for_sequence(5, 5)
            images = [s.image for s in stores]
            assert all(image.to_records() == images[0].to_records() for image in images)
            partition = images[0].topics_by_name["orders"].partitions[0]
            assert (partition.leader, partition.isr, partition.leader_epoch, partition.partition_epoch) == (2, (1, 2), 1, 1)
            assert images[0].topics_by_name["orders"].configs == {"retention.ms": "1000"}
            assert "payments" not in images[0].topics_by_name
            assert all(image.cluster_id == controller.cluster_id for image in images)
            # Every store's listeners saw the five appends, once each, in order.
            for node_id, calls in seen.items():
                assert [names for _, names, _ in calls] == [["orders"], ["orders", "payments"], ["orders", "payments"],
                                                           ["orders", "payments"], ["orders"]], node_id
                assert calls[0][2][0].topics_created == ("orders",)
                assert calls[4][2][0].topics_deleted[0].name == "payments"
            # A store opened later reads the whole log.
            late = await open_store(etcd, root, 4)
            stores.append(late)
            assert late.applied_sequence == 5 and late.image.to_records() == images[0].to_records()
        finally:
            await close_all(stores)
    run(main())


def test_only_the_controller_appends_and_bad_appends_write_nothing(etcd, root):
    async def main():
        controller = await open_store(etcd, root, 1)
        follower = await open_store(etcd, root, 2, campaign=False)
        try:
            await the_controller([controller, follower])
            with pytest.raises(MetadataQuorumError) as refused:
                await follower.append(topic_records("x")[1])
            assert refused.value.error_code == ErrorCode.not_controller
            with pytest.raises(InvalidMetadataRecord):
                await controller.append([RemoveTopicRecord(uuid.uuid4())])
            with pytest.raises(ValueError, match="exceeds"):
                await controller.append([ConfigRecord(4, "", "x", "y" * layout.MAX_VALUE_BYTES)])
            assert controller.applied_sequence == 0
            assert await controller.append([]) == 0
            assert await controller.append(topic_records("x")[1]) == 1
            await follower.wait_for_sequence(1, 5)
            await controller.close()  # no controller now: a never-elected store still cannot write
            await follower.wait_until(lambda: follower.controller_id is None, 5)
            with pytest.raises(MetadataQuorumError) as refused:
                await follower.compact()
            assert refused.value.error_code == ErrorCode.not_controller
            assert follower._snapshot_sequence == 0
        finally:
            await close_all([controller, follower])
    run(main())


def test_watch_resumes_after_etcd_restarts(etcd, root):
    async def main():
        stores = [await open_store(etcd, root, 1), await open_store(etcd, root, 2, campaign=False)]
        controller, follower = stores
        try:
            await the_controller(stores)
            await controller.append(topic_records("before-restart")[1])
            await follower.wait_for_sequence(1, 5)
            etcd.stop()
            await asyncio.sleep(0.5)
            with pytest.raises(MetadataQuorumError) as unreachable:
                await controller.append(topic_records("while-down")[1])
            assert unreachable.value.error_code == ErrorCode.request_timed_out
            etcd.start()
            # Leases survive an etcd restart (etcd extends them), so the controller keeps its term.
            for _ in range(100):
                try:
                    sequence = await controller.append(topic_records("after-restart")[1])
                    break
                except MetadataQuorumError as exc:
                    assert exc.error_code == ErrorCode.request_timed_out, exc
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the controller never reached etcd again")
            await follower.wait_for_sequence(sequence, 8)
            assert sorted(follower.image.topics_by_name) == ["after-restart", "before-restart"]
            assert follower.image.to_records() == controller.image.to_records()
            await controller.wait_until(lambda: controller.is_controller, 5)
        finally:
            if etcd.process is None:
                etcd.start()
            await close_all(stores)
    run(main())


def test_large_image_round_trips_through_a_snapshot(etcd, root):
    async def main():
        controller = await open_store(etcd, root, 1, snapshot_after_entries=0)
        follower = await open_store(etcd, root, 2, campaign=False)
        try:
            await the_controller([controller, follower])
            batch = []
            for index in range(1200):
                name = f"topic-{index:05d}"
                batch.extend(topic_records(name, partitions=2)[1])
                batch.append(ConfigRecord(RESOURCE_TOPIC, name, "x.description", f"{index}" + "d" * 1200))
                if len(batch) >= 400:
                    await controller.append(batch)
                    batch = []
            await controller.append(batch)
            image_bytes = len(layout.encode_records(controller.image.to_records()))
            assert image_bytes > 1.5 * layout.MAX_VALUE_BYTES  # the snapshot needs several chunks
            sequence = await controller.compact()
            assert sequence == controller.applied_sequence
            client = await raw_client(etcd)
            try:
                remaining = await client.get_prefix(f"{controller.prefix}{layout.LOG_DIR}".encode(), keys_only=True)
                assert len(remaining) == 0  # every entry is folded into the snapshot
            finally:
                await client.close()
            tail = await controller.append(topic_records("after-snapshot")[1])
            late = await open_store(etcd, root, 3, campaign=False)
            try:
                assert late.applied_sequence == tail
                assert late.image.to_records() == controller.image.to_records()
                assert len(late.image.topics_by_name) == 1201
                assert late.image.topics_by_name["topic-00042"].configs["x.description"].startswith("42d")
            finally:
                await late.close()
            await follower.wait_for_sequence(tail, 5)
            assert follower.image.to_records() == controller.image.to_records()
        finally:
            await close_all([controller, follower])
    run(main())


def test_a_store_that_missed_entries_folded_into_a_snapshot_reloads_and_hears_the_difference(etcd, root, caplog):
    caplog.set_level(logging.INFO, logger="odradek.metadata.etcd_store")

    async def main():
        controller = await open_store(etcd, root, 1, snapshot_after_entries=3)
        follower = await open_store(etcd, root, 2, campaign=False)
        try:
            await the_controller([controller, follower])
            gone_id, gone = topic_records("gone")
            await controller.append(gone)
            await follower.wait_for_sequence(1, 5)
            changes = []
            follower.listeners.append(lambda old, new, c: changes.extend(c))
            # The follower stops watching (a long partition), meanwhile the log is snapshotted.
            follower._conn.endpoints = [("127.0.0.1", 1)]
            await follower._conn.reset(follower._conn._client)
            await controller.append([RemoveTopicRecord(gone_id)])
            await controller.append(topic_records("kept")[1])
            await controller.wait_until(lambda: controller._snapshot_sequence == 3, 5)
            await controller.append(topic_records("newest")[1])
            follower._conn.endpoints = [etcd.endpoint]
            await follower.wait_for_sequence(4, 8)
            assert follower.image.to_records() == controller.image.to_records()
            created = {name for change in changes for name in change.topics_created}
            deleted = {topic.name for change in changes for topic in change.topics_deleted}
            assert created == {"kept", "newest"} and deleted == {"gone"}
            assert "loaded metadata snapshot at entry 3" in caplog.text  # not entry by entry: 1-3 are gone
        finally:
            await close_all([controller, follower])
    run(main())


def test_open_without_a_reachable_etcd_times_out_with_a_kafka_error_code():
    async def main():
        with pytest.raises(MetadataQuorumError) as failed:
            await EtcdMetadataStore.open("etcd://127.0.0.1:1,127.0.0.1:2", 1, lease_ttl_s=1, rpc_timeout_s=0.5,
                                         open_timeout_s=1.0)
        assert failed.value.error_code == ErrorCode.request_timed_out
    run(main())


def test_an_unreachable_endpoint_is_skipped_for_the_next_one(etcd, root):
    async def main():
        host, port = etcd.endpoint
        store = await EtcdMetadataStore.open(f"etcd://127.0.0.1:1,{host}:{port}", 1, root=root, lease_ttl_s=4,
                                             rpc_timeout_s=2.0, open_timeout_s=10.0)
        try:
            assert store._conn.endpoints[store._conn._index] == (host, port)
            assert await store.wait_until(lambda: store.is_controller, 5) is None
            assert await store.append(topic_records("t")[1]) == 1
        finally:
            await store.close()
    run(main())
