"""EtcdMetadataStore against a real etcd: convergence, election, fencing, leases, restarts."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import uuid

import pytest

aetcd = pytest.importorskip("aetcd", reason="the etcd client aetcd is not installed (pip install 'aetcd>=1.0,<2')")

from odradek.metadata import etcd_layout as layout
from odradek.metadata.etcd_layout import BrokerEndpoint
from odradek.metadata.etcd_store import ELECTION_POLL_S, EtcdMetadataStore, MetadataQuorumError
from odradek.metadata.image import InvalidMetadataRecord
from odradek.metadata.records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from odradek.protocol.errors import ErrorCode

# Stores that must stay alive get a lease that survives a loaded machine's stalls (other test
# suites share the CPU); a store whose lease is meant to expire gets the test etcd's minimum.
TTL_S = 4
SHORT_TTL_S = 1
TAKEOVER_S = 10.0  # a short lease's expiry (TTL + etcd's 0.5 s sweep) + a campaign, with slack


def run(coro):
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


def test_controller_revoked_lease_new_controller_takes_over_and_deposed_append_is_refused(etcd, root):
    async def main():
        stores = [await open_store(etcd, root, node_id) for node_id in (1, 2, 3)]
        client = await raw_client(etcd)
        try:
            old = await the_controller(stores)
            epoch = old.controller_epoch
            await old.append(topic_records("before")[1])
            heard = []
            old.controller_listeners.append(heard.append)
            await client.revoke_lease(old.lease_id)  # as if etcd expired it
            others = [s for s in stores if s is not old]
            new = await the_controller(others)
            assert new.controller_epoch == epoch + 1
            await old.wait_until(lambda: old.controller_id == new.node_id and not old.is_controller, 3)
            assert heard == [False]
            # The deposed controller's append reaches etcd and is refused by the compare.
            next_key = layout.log_key(old.prefix, old.applied_sequence + 1)
            with pytest.raises(MetadataQuorumError) as refused:
                await old.append(topic_records("from-the-deposed")[1])
            assert refused.value.error_code == ErrorCode.not_controller and refused.value.deposed
            assert await client.get(next_key) is None
            # The new controller writes; everyone, the deposed one too, applies it.
            sequence = await new.append(topic_records("after")[1])
            for store in stores:
                await store.wait_for_sequence(sequence, 5)
                assert sorted(store.image.topics_by_name) == ["after", "before"]
            # The revoked broker registers again under a new lease, and everyone sees it live.
            await new.wait_until(lambda: all(s.live_brokers.keys() == {1, 2, 3} for s in stores), TAKEOVER_S)
        finally:
            await client.close()
            await close_all(stores)
    run(main())


def test_controller_that_stops_renewing_its_lease_is_replaced_and_its_registration_expires(etcd, root):
    async def main():
        old = await open_store(etcd, root, 1, lease_ttl_s=SHORT_TTL_S)
        stores = [old]
        try:
            assert await the_controller(stores) is old
            others = [await open_store(etcd, root, node_id) for node_id in (2, 3)]
            stores += others
            departures = []
            others[0].broker_listeners.append(
                lambda before, after: departures.extend(sorted(before.keys() - after.keys())))
            old.pause_keepalive()  # SIGSTOP for longer than the TTL, as far as etcd can tell
            new = await the_controller(others)
            await new.wait_until(lambda: old.node_id not in new.live_brokers, TAKEOVER_S)
            assert departures == [old.node_id]
            assert not old.is_controller  # it stopped believing as soon as its lease went stale
            with pytest.raises(MetadataQuorumError) as refused:
                await old.append(topic_records("stale")[1])
            assert refused.value.deposed
            # Resumed (SIGCONT): it finds its lease expired, registers anew, and follows.
            old.resume_keepalive()
            await new.wait_until(lambda: old.node_id in new.live_brokers, TAKEOVER_S)
            sequence = await new.append(topic_records("t")[1])
            await old.wait_for_sequence(sequence, 5)
            assert not old.is_controller and new.is_controller
        finally:
            await close_all(stores)
    run(main())


def test_broker_registration_appears_and_disappears_with_its_lease(etcd, root):
    async def main():
        observer = await open_store(etcd, root, 1, campaign=False)
        events = []
        observer.broker_listeners.append(lambda before, after: events.append(sorted(after)))
        try:
            endpoints = (BrokerEndpoint("PLAINTEXT", "10.0.0.2", 9092), BrokerEndpoint("INTERNAL", "b2", 9093, "SSL"))
            second = await open_store(etcd, root, 2, listeners=endpoints, rack="rack-b", campaign=False)
            await observer.wait_until(lambda: 2 in observer.live_brokers, 3)
            registration = observer.live_brokers[2]
            assert registration.endpoints == endpoints and registration.rack == "rack-b"
            assert registration.incarnation_id == second.incarnation_id
            bound = (BrokerEndpoint("PLAINTEXT", "10.0.0.2", 40123),)
            await second.update_registration(bound, rack="rack-c")
            await observer.wait_until(lambda: observer.live_brokers[2].endpoints == bound, 3)
            assert observer.live_brokers[2].rack == "rack-c"
            await second.close()  # clean shutdown: the lease is revoked, the key goes at once
            await observer.wait_until(lambda: 2 not in observer.live_brokers, 2)
            # Another process registers as node 3 and is killed with SIGKILL: the lease expires.
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD_BROKER, etcd.url, root, "3", observer.cluster_id,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ})
            try:
                line = await asyncio.wait_for(child.stdout.readline(), 15)
                assert line.strip() == b"registered", await child.stderr.read()
                await observer.wait_until(lambda: 3 in observer.live_brokers, 3)
                child.send_signal(signal.SIGKILL)
                await child.wait()
                await observer.wait_until(lambda: 3 not in observer.live_brokers, SHORT_TTL_S + 5)
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
            assert events == [[1, 2], [1, 2], [1], [1, 3], [1]]
        finally:
            await observer.close()
    run(main())


CHILD_BROKER = """
import asyncio, sys
from odradek.metadata.etcd_store import EtcdMetadataStore
async def main():
    await EtcdMetadataStore.open(sys.argv[1], int(sys.argv[3]), root=sys.argv[2], cluster_id=sys.argv[4],
                                 lease_ttl_s=1, campaign=False)
    print("registered", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_second_broker_with_the_same_node_id_is_refused_while_the_first_lives(etcd, root):
    async def main():
        first = await open_store(etcd, root, 5, campaign=False)
        try:
            with pytest.raises(MetadataQuorumError) as refused:
                await open_store(etcd, root, 5, campaign=False, open_timeout_s=1.5)
            assert refused.value.error_code == ErrorCode.duplicate_broker_registration
            assert first.live_brokers[5].incarnation_id == first.incarnation_id
        finally:
            await first.close()
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
            for index in range(2500):
                batch.extend(topic_records(f"topic-{index:05d}-" + "n" * 100, partitions=4)[1])
                if len(batch) >= 1000:
                    await controller.append(batch)
                    batch = []
            await controller.append(batch)
            image_bytes = len(layout.encode_records(controller.image.to_records()))
            assert image_bytes > 2 * layout.MAX_VALUE_BYTES  # the snapshot needs several chunks
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
                assert len(late.image.topics_by_name) == 2501
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


def test_controller_that_resigns_is_replaced_without_waiting_for_its_lease(etcd, root):
    async def main():
        stores = [await open_store(etcd, root, node_id, lease_ttl_s=30) for node_id in (1, 2)]
        try:
            old = await the_controller(stores)
            new_one = next(s for s in stores if s is not old)
            await old.resign()
            new = await the_controller(stores, timeout_s=ELECTION_POLL_S + 1.5)  # far below the 30 s TTL
            assert new is new_one and new.controller_epoch == 2 and not old.is_controller
            assert old.node_id in new.live_brokers  # still a live broker, only not the controller
        finally:
            await close_all(stores)
    run(main())
