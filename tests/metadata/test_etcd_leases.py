"""EtcdMetadataStore against a real etcd: leases, broker registration, controller election and takeover."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

aetcd = pytest.importorskip("aetcd", reason="the etcd client aetcd is not installed (pip install 'aetcd>=1.0,<2')")

from odradek.metadata import etcd_layout as layout
from odradek.metadata.etcd_layout import BrokerEndpoint
from odradek.metadata.etcd_store import ELECTION_POLL_S, MetadataQuorumError
from odradek.protocol.errors import ErrorCode
from tests.metadata.etcd_helpers import (
    SHORT_TTL_S,
    TAKEOVER_S,
    close_all,
    open_store,
    raw_client,
    run,
    the_controller,
    topic_records,
)


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
            assert observer.live_brokers[2].rack == "rack-c" and not observer.live_brokers[2].in_controlled_shutdown
            await second.request_controlled_shutdown()
            await observer.wait_until(lambda: observer.live_brokers[2].in_controlled_shutdown, 3)
            assert observer.live_brokers[2].endpoints == bound
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
            assert events == [[1, 2], [1, 2], [1, 2], [1], [1, 3], [1]]
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


def test_controller_that_resigns_is_replaced_without_waiting_for_its_lease(etcd, root):
    async def main():
        stores = [await open_store(etcd, root, node_id, lease_ttl_s=30) for node_id in (1, 2)]
        try:
            old = await the_controller(stores)
            new_one = next(s for s in stores if s is not old)
            await old.resign()
            assert not old.is_controller  # at once, not when its watch sees the key go
            new = await the_controller(stores, timeout_s=ELECTION_POLL_S + 1.5)  # far below the 30 s TTL
            assert new is new_one and new.controller_epoch == 2 and not old.is_controller
            with pytest.raises(MetadataQuorumError):
                await old.append(topic_records("after-resigning")[1])
            assert old.node_id in new.live_brokers  # still a live broker, only not the controller
        finally:
            await close_all(stores)
    run(main())


def test_restarted_broker_registers_once_its_dead_predecessors_lease_expires(etcd, root):
    async def main():
        dead = await open_store(etcd, root, 5, campaign=False, lease_ttl_s=SHORT_TTL_S)
        dead.pause_keepalive()  # killed: its registration lingers until etcd expires the lease
        try:
            # The restart's own short lease must outlive the wait (it is renewed while waiting).
            restarted = await open_store(etcd, root, 5, campaign=False, lease_ttl_s=SHORT_TTL_S, open_timeout_s=15)
            try:
                assert restarted.live_brokers[5].incarnation_id == restarted.incarnation_id != dead.incarnation_id
                await asyncio.sleep(2 * SHORT_TTL_S)
                assert restarted.live_brokers[5].incarnation_id == restarted.incarnation_id
            finally:
                await restarted.close()
        finally:
            await dead.close(revoke_lease=False)
    run(main())
