"""ClusterController against a real etcd: several EtcdMetadataStores in one process as brokers
(no data path), each with a ClusterController started and stopped by its store's controller
listener, as the core wires it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("aetcd", reason="the etcd client aetcd is not installed")

from odradek.broker.cluster_controller import (
    ELECTION_PREFERRED,
    ELECTION_UNCLEAN,
    ClusterController,
)
from odradek.config import BrokerConfig
from odradek.metadata import controller as topic_controller
from odradek.metadata.election import AlterPartitionRequest
from odradek.metadata.etcd_layout import BrokerEndpoint
from odradek.metadata.etcd_store import EtcdMetadataStore, MetadataQuorumError
from odradek.metadata.image import MetadataImage, PartitionImage
from odradek.metadata.records import NO_LEADER
from odradek.protocol.errors import ErrorCode

TTL_S = 4  # live stores: survives a loaded machine's stalls
WAIT_S = 12.0  # a lease expiry + a campaign + a reconcile pass, with slack
E = ErrorCode


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 40))


class Broker:
    """One in-process 'broker': its store and its controller, wired as the core does."""

    def __init__(self, store: EtcdMetadataStore, config: BrokerConfig) -> None:
        self.store = store
        self.controller = ClusterController(store, config)
        store.controller_listeners.append(self._on_controller)
        if store.is_controller:
            self.controller.start()

    def _on_controller(self, is_controller: bool) -> None:
        if is_controller:
            self.controller.start()
        else:
            self.controller.stop()

    @property
    def node_id(self) -> int:
        return self.store.node_id

    async def close(self, *, revoke_lease: bool = True) -> None:
        await self.controller.close()
        await self.store.close(revoke_lease=revoke_lease)


class Cluster:
    def __init__(self, etcd, root: str) -> None:
        self.etcd = etcd
        self.root = root
        self.brokers: dict[int, Broker] = {}

    async def open(self, node_id: int, *, campaign: bool = True, unclean: bool = False, **configs) -> Broker:
        store = await EtcdMetadataStore.open(
            self.etcd.url, node_id, root=self.root, lease_ttl_s=TTL_S, campaign=campaign, open_timeout_s=10.0,
            listeners=(BrokerEndpoint("PLAINTEXT", "127.0.0.1", 9090 + node_id),), rack=f"r{node_id}")
        config = BrokerConfig(node_id=node_id, default_replication_factor=3, unclean_leader_election_enable=unclean,
                              **configs)
        broker = self.brokers[node_id] = Broker(store, config)
        return broker

    async def controller(self, timeout_s: float = WAIT_S) -> Broker:
        async def wait() -> Broker:
            while True:
                active = [b for b in self.brokers.values() if b.controller.active]
                if len(active) == 1:
                    return active[0]
                await asyncio.sleep(0.02)
        return await asyncio.wait_for(wait(), timeout_s)

    async def until(self, predicate, timeout_s: float = WAIT_S, what: str = "condition") -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def image(self) -> MetadataImage:
        """The image of the newest store (every store converges on it)."""
        return max((b.store for b in self.brokers.values()), key=lambda s: s.applied_sequence).image

    async def create_topic(self, name: str, partitions: int, replication_factor: int = 3) -> uuid.UUID:
        ctl = await self.controller()

        def decide(image):
            return topic_controller.create_topics(
                image, [topic_controller.CreatableTopic(name, partitions, replication_factor)],
                ctl.controller.config, False)
        results = await ctl.controller.decide_and_append(decide)
        assert results[0].error is E.none, results[0]
        return results[0].topic_id

    def partitions(self, name: str) -> list[PartitionImage]:
        topic = self.image().topics_by_name[name]
        return [topic.partitions[i] for i in sorted(topic.partitions)]

    async def close(self) -> None:
        for broker in list(self.brokers.values()):
            await broker.close()


async def three_brokers(etcd, root) -> Cluster:
    cluster = Cluster(etcd, root)
    for node_id in (1, 2, 3):
        await cluster.open(node_id)
    ctl = await cluster.controller()
    await cluster.until(lambda: set(ctl.store.image.brokers) == {1, 2, 3}, what="three registrations")
    return cluster


def leaders_of(partitions: list[PartitionImage]) -> list[int]:
    return [p.leader for p in partitions]


# -- registrations and topic creation ------------------------------------------------------------

def test_controller_registers_live_brokers_and_topic_creation_spreads_three_replicas(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            image = cluster.image()
            for node_id, broker in cluster.brokers.items():
                reg = image.brokers[node_id]
                assert reg.incarnation_id == broker.store.incarnation_id
                assert (reg.host, reg.port, reg.rack) == ("127.0.0.1", 9090 + node_id, f"r{node_id}")
                assert reg.broker_epoch > 0
            await cluster.create_topic("orders", 6)
            partitions = cluster.partitions("orders")
            assert all(sorted(p.replicas) == [1, 2, 3] and sorted(p.isr) == [1, 2, 3] for p in partitions)
            assert sorted(leaders_of(partitions)) == [1, 1, 2, 2, 3, 3]
            # Every store applied the same image.
            await cluster.until(lambda: all(b.store.image.topics_by_name.get("orders") is not None
                                            for b in cluster.brokers.values()), what="convergence")
        finally:
            await cluster.close()
    run(main())


# -- broker loss -------------------------------------------------------------------------------

def test_lost_broker_leadership_moves_to_isr_members_and_isr_shrinks(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            await cluster.create_topic("t", 6)
            ctl = await cluster.controller()
            victim = next(b for b in (1, 2, 3) if b != ctl.node_id)
            before = {p.partition: p for p in cluster.partitions("t")}
            cluster.brokers[victim].store.pause_keepalive()
            await cluster.brokers[victim].close(revoke_lease=True)  # its lease and registration go at once
            del cluster.brokers[victim]
            await cluster.until(lambda: all(victim not in p.isr and p.leader != victim
                                            for p in cluster.partitions("t")), what="leaderships moved")
            for p in cluster.partitions("t"):
                old = before[p.partition]
                assert p.leader != NO_LEADER and p.leader in old.isr
                assert p.isr == tuple(b for b in old.isr if b != victim)
                assert p.leader_epoch == old.leader_epoch + (1 if old.leader == victim else 0)
            assert victim not in cluster.image().brokers  # no new replicas go to a lost broker
            # Creating a topic now places replicas on the two live brokers only.
            with pytest.raises(AssertionError):
                await cluster.create_topic("too-wide", 1, replication_factor=3)
            await cluster.create_topic("narrow", 2, replication_factor=2)
            assert all(sorted(p.replicas) == sorted({1, 2, 3} - {victim}) for p in cluster.partitions("narrow"))
        finally:
            await cluster.close()
    run(main())


def test_controller_lease_lost_another_broker_takes_over_and_keeps_deciding(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 3)
            old = await cluster.controller()
            old_id = old.node_id
            await old.close(revoke_lease=True)  # the controller's lease is gone
            del cluster.brokers[old_id]
            new = await cluster.controller()
            assert new.node_id != old_id
            # The new controller handles the old one's loss ...
            await cluster.until(lambda: all(old_id not in p.isr and p.leader != old_id
                                            for p in cluster.partitions("t")), what="old controller's loss")
            # ... and keeps deciding: an ISR shrink, and a loss after that.
            p = cluster.partitions("t")[0]
            follower = next(b for b in p.isr if b != p.leader)
            [result] = await new.controller.alter_partition([AlterPartitionRequest(
                topic_id, 0, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,))])
            assert result.error is E.none and result.isr == (p.leader,)
            # The deposed controller cannot write.
            with pytest.raises(MetadataQuorumError) as info:
                await old.controller.alter_partition([AlterPartitionRequest(
                    topic_id, 0, p.leader, p.leader_epoch, result.partition_epoch, (p.leader, follower))])
            assert info.value.error_code is E.not_controller
        finally:
            await cluster.close()
    run(main())


def test_a_broker_paused_past_its_lease_is_a_loss_even_when_it_registers_again(etcd, root):
    """Same process, same incarnation, new lease: the controller still fences it (the listener
    saw the registration vanish), so it comes back registered but out of every ISR."""
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            await cluster.create_topic("t", 3)
            ctl = await cluster.controller()
            victim = next(b for b in (1, 2, 3) if b != ctl.node_id)
            store = cluster.brokers[victim].store
            epoch_before = ctl.store.image.brokers[victim].broker_epoch
            client = ctl.store._conn.client()
            await client.revoke_lease(store.lease_id)  # as etcd does when the TTL passes
            await cluster.until(lambda: all(victim not in p.isr for p in cluster.partitions("t")),
                                what="victim out of ISRs")
            await cluster.until(lambda: victim in cluster.image().brokers, what="registered again")
            reg = cluster.image().brokers[victim]
            assert reg.incarnation_id == store.incarnation_id and reg.broker_epoch > epoch_before
            assert all(p.leader != victim for p in cluster.partitions("t"))
        finally:
            await cluster.close()
    run(main())


# -- incarnations --------------------------------------------------------------------------------

def test_restarted_broker_is_a_new_incarnation_even_when_the_controller_missed_its_absence(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            await cluster.create_topic("t", 3)
            ctl = await cluster.controller()
            victim = next(b for b in (1, 2, 3) if b != ctl.node_id)
            led = [p.partition for p in cluster.partitions("t") if p.leader == victim]
            assert led
            old_incarnation = cluster.brokers[victim].store.incarnation_id
            ctl.controller.stop()  # the controller hears nothing of the restart
            await cluster.brokers[victim].close()
            restarted = await cluster.open(victim, campaign=False)
            await cluster.until(lambda: ctl.store.live_brokers.get(victim) is not None
                                and ctl.store.live_brokers[victim].incarnation_id == restarted.store.incarnation_id,
                                what="restart visible")
            assert ctl.store.image.brokers[victim].incarnation_id == old_incarnation
            assert all(victim in p.isr for p in cluster.partitions("t"))  # nothing decided yet
            ctl.controller.start()
            await cluster.until(lambda: cluster.image().brokers.get(victim) is not None and
                                cluster.image().brokers[victim].incarnation_id == restarted.store.incarnation_id,
                                what="new incarnation registered")
            for p in cluster.partitions("t"):
                assert victim not in p.isr, p  # the old process's log is not trusted in sync
                assert p.leader != victim and p.leader != NO_LEADER
            assert victim in ctl.controller.eligible_brokers()
        finally:
            await cluster.close()
    run(main())


def test_last_isr_member_lost_leaves_no_leader_until_it_returns_and_unclean_only_when_asked(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 3)
            ctl = await cluster.controller()
            # A partition led by another broker than the controller (each broker leads one).
            p = next(p for p in cluster.partitions("t") if p.leader != ctl.node_id)
            index = p.partition
            # Shrink the ISR to the leader alone (as its PartitionLeader would), then lose it.
            [result] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, index, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,))])
            assert result.error is E.none
            victim = p.leader
            await cluster.brokers.pop(victim).close()
            await cluster.until(lambda: cluster.partitions("t")[index].leader == NO_LEADER, what="leaderless")
            assert cluster.partitions("t")[index].isr == (victim,)  # Kafka never empties the ISR
            # Preferred election cannot help; unclean election is off by default, so a pass changes
            # nothing; asked for explicitly, an out-of-sync live replica leads.
            [preferred] = await ctl.controller.elect_leaders([("t", index)], ELECTION_PREFERRED)
            assert preferred.error is E.preferred_leader_not_available
            await ctl.controller.reconcile()
            assert cluster.partitions("t")[index].leader == NO_LEADER
            [unclean] = await ctl.controller.elect_leaders([("t", index)], ELECTION_UNCLEAN)
            assert unclean.error is E.none
            after = cluster.partitions("t")[index]
            assert after.leader not in (NO_LEADER, victim) and after.isr == (after.leader,)
            [again] = await ctl.controller.elect_leaders([("t", index)], ELECTION_UNCLEAN)
            assert again.error is E.election_not_needed
        finally:
            await cluster.close()
    run(main())


def test_last_isr_member_returning_leads_again(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            ctl = await cluster.controller()
            victim = next(b for b in (1, 2, 3) if b != ctl.node_id)

            def decide(image):
                return topic_controller.create_topics(
                    image, [topic_controller.CreatableTopic("solo", -1, -1, assignments={0: [victim]})],
                    ctl.controller.config, False)
            [created] = await ctl.controller.decide_and_append(decide)
            assert created.error is E.none
            await cluster.brokers.pop(victim).close()
            await cluster.until(lambda: cluster.partitions("solo")[0].leader == NO_LEADER, what="leaderless")
            await cluster.open(victim, campaign=False)
            await cluster.until(lambda: cluster.partitions("solo")[0].leader == victim, what="leader again")
            assert cluster.partitions("solo")[0].isr == (victim,)
        finally:
            await cluster.close()
    run(main())


# -- AlterPartition ------------------------------------------------------------------------------

def test_alter_partition_is_a_compare_and_swap_on_the_partition_epoch(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 1)
            ctl = (await cluster.controller()).controller
            p = cluster.partitions("t")[0]
            follower = next(b for b in p.replicas if b != p.leader)
            shrink = AlterPartitionRequest(topic_id, 0, p.leader, p.leader_epoch, p.partition_epoch,
                                           tuple(b for b in p.isr if b != follower))
            [ok] = await ctl.alter_partition([shrink])
            assert ok.error is E.none and ok.partition_epoch == p.partition_epoch + 1
            assert cluster.partitions("t")[0].isr == shrink.new_isr
            # The same request again is stale: Kafka's INVALID_UPDATE_VERSION, with the current state.
            [stale] = await ctl.alter_partition([shrink])
            assert stale.error is E.invalid_update_version and stale.partition_epoch == ok.partition_epoch
            # A stale leader epoch is fenced; a non-leader is refused; unknown partition.
            fenced = AlterPartitionRequest(topic_id, 0, p.leader, p.leader_epoch - 1, ok.partition_epoch, p.isr)
            not_leader = AlterPartitionRequest(topic_id, 0, follower, p.leader_epoch, ok.partition_epoch, p.isr)
            unknown = AlterPartitionRequest(uuid.uuid4(), 0, p.leader, 0, 0, (p.leader,))
            results = await ctl.alter_partition([fenced, not_leader, unknown])
            assert [r.error for r in results] == [E.fenced_leader_epoch, E.invalid_request,
                                                   E.unknown_topic_or_partition]
            # Expansion at the current epoch succeeds; two requests in one call compose in order.
            expand = AlterPartitionRequest(topic_id, 0, p.leader, p.leader_epoch, ok.partition_epoch, p.isr)
            shrink_again = AlterPartitionRequest(topic_id, 0, p.leader, p.leader_epoch, ok.partition_epoch + 1,
                                                 shrink.new_isr)
            grown, shrunk = await ctl.alter_partition([expand, shrink_again])
            assert grown.error is E.none and sorted(grown.isr) == sorted(p.isr)
            assert shrunk.error is E.none and shrunk.partition_epoch == ok.partition_epoch + 2
            assert cluster.partitions("t")[0].partition_epoch == ok.partition_epoch + 2
        finally:
            await cluster.close()
    run(main())


def test_alter_partition_refuses_a_replica_that_is_not_current(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 1)
            ctl = await cluster.controller()
            p = cluster.partitions("t")[0]
            follower = next(b for b in p.replicas if b not in (p.leader, ctl.node_id))
            [ok] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, 0, p.leader, p.leader_epoch, p.partition_epoch, tuple(b for b in p.isr if b != follower))])
            assert ok.error is E.none
            # The follower restarts; until its new incarnation is registered it cannot rejoin.
            ctl.controller.stop()
            await cluster.brokers[follower].close()
            await cluster.open(follower, campaign=False)
            ctl.controller.start()
            await cluster.until(lambda: follower in ctl.controller.eligible_brokers(), what="re-registered")
            current = cluster.partitions("t")[0]
            [back] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, 0, current.leader, current.leader_epoch, current.partition_epoch, p.isr)])
            assert back.error is E.none
            # A broker in controlled shutdown may not join.
            await ctl.controller.controlled_shutdown(follower)
            current = cluster.partitions("t")[0]
            assert follower not in current.isr
            [refused] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, 0, current.leader, current.leader_epoch, current.partition_epoch,
                (*current.isr, follower))])
            assert refused.error is E.ineligible_replica
        finally:
            await cluster.close()
    run(main())


# -- controlled shutdown and preferred election ---------------------------------------------------

def test_controlled_shutdown_moves_leadership_away_and_preferred_election_restores_it(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 6)
            ctl = await cluster.controller()
            leaving = next(b for b in (1, 2, 3) if b != ctl.node_id)
            preferred = {p.partition: p.replicas[0] for p in cluster.partitions("t")}
            assert leaving in preferred.values()
            assert await ctl.controller.controlled_shutdown(leaving) == 0
            for p in cluster.partitions("t"):
                assert p.leader != leaving and leaving not in p.isr and p.leader != NO_LEADER
            # Every reconcile pass keeps it that way while it shuts down.
            await ctl.controller.reconcile()
            assert all(p.leader != leaving for p in cluster.partitions("t"))
            # It restarts (new incarnation), catches up and rejoins the ISRs through its leaders.
            await cluster.brokers[leaving].close()
            await cluster.open(leaving, campaign=False)
            await cluster.until(lambda: leaving in ctl.controller.eligible_brokers(), what="re-registered")
            assert leaving not in ctl.controller.shutting_down
            for p in cluster.partitions("t"):
                [r] = await ctl.controller.alter_partition([AlterPartitionRequest(
                    topic_id, p.partition, p.leader, p.leader_epoch, p.partition_epoch, (*p.isr, leaving))])
                assert r.error is E.none, r
            results = await ctl.controller.elect_leaders([("t", i) for i in range(6)] + [("nope", 0)])
            errors = {(r.topic, r.partition): r.error for r in results}
            assert errors[("nope", 0)] is E.unknown_topic_or_partition
            moved = [i for i in range(6) if preferred[i] == leaving]
            assert all(errors[("t", i)] is E.none for i in moved)
            assert all(errors[("t", i)] is E.election_not_needed for i in range(6) if i not in moved)
            assert {p.partition: p.leader for p in cluster.partitions("t")} == preferred
            # All partitions (None): only those needing an election are reported; none now.
            assert await ctl.controller.elect_leaders(None) == []
        finally:
            await cluster.close()
    run(main())


@pytest.mark.parametrize("enabled", [True, False])
def test_auto_leader_rebalance_returns_leadership_to_a_preferred_replica_that_came_back(etcd, root, enabled):
    balance = {"auto_leader_rebalance_enable": enabled, "leader_imbalance_check_interval_seconds": 1}

    async def main():
        cluster = Cluster(etcd, root)
        for node_id in (1, 2, 3):
            await cluster.open(node_id, **balance)
        try:
            ctl = await cluster.controller()
            await cluster.until(lambda: set(ctl.store.image.brokers) == {1, 2, 3}, what="three registrations")
            topic_id = await cluster.create_topic("t", 6)
            leaving = next(b for b in (1, 2, 3) if b != ctl.node_id)
            preferred = {p.partition: p.replicas[0] for p in cluster.partitions("t")}
            assert await ctl.controller.controlled_shutdown(leaving) == 0
            await cluster.brokers[leaving].close()
            await cluster.open(leaving, campaign=False, **balance)
            await cluster.until(lambda: leaving in ctl.controller.eligible_brokers(), what="re-registered")
            for p in cluster.partitions("t"):  # caught up: its leaders add it back to the ISRs
                [r] = await ctl.controller.alter_partition([AlterPartitionRequest(
                    topic_id, p.partition, p.leader, p.leader_epoch, p.partition_epoch, (*p.isr, leaving))])
                assert r.error is E.none, r

            def balanced() -> bool:
                return {p.partition: p.leader for p in cluster.partitions("t")} == preferred

            if enabled:  # no ElectLeaders: the controller's own pass moves leadership back
                await cluster.until(balanced, timeout_s=10, what="leadership back on the preferred replicas")
            else:
                await asyncio.sleep(3)
                assert not balanced()
                assert all(p.leader != leaving for p in cluster.partitions("t"))
        finally:
            await cluster.close()
    run(main())


def test_controlled_shutdown_of_the_only_isr_member_reports_it_still_leads(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 1)
            ctl = await cluster.controller()
            p = cluster.partitions("t")[0]
            [ok] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, 0, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,))])
            assert ok.error is E.none
            assert await ctl.controller.controlled_shutdown(p.leader) == 1
            assert cluster.partitions("t")[0].leader == p.leader
        finally:
            await cluster.close()
    run(main())


def test_a_stopped_controller_writes_nothing(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            topic_id = await cluster.create_topic("t", 1)
            ctl = await cluster.controller()
            ctl.controller.stop()
            assert not ctl.controller.active
            p = cluster.partitions("t")[0]
            sequence = ctl.store.applied_sequence
            with pytest.raises(MetadataQuorumError) as info:
                await ctl.controller.alter_partition([AlterPartitionRequest(
                    topic_id, 0, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,))])
            assert info.value.error_code is E.not_controller
            with pytest.raises(MetadataQuorumError):
                await ctl.controller.controlled_shutdown(p.leader)
            assert ctl.store.applied_sequence == sequence
        finally:
            await cluster.close()
    run(main())


def test_controlled_shutdown_asked_through_the_registration_flag(etcd, root):
    async def main():
        cluster = await three_brokers(etcd, root)
        try:
            await cluster.create_topic("t", 6)
            ctl = await cluster.controller()
            leaving = cluster.brokers[next(b for b in (1, 2, 3) if b != ctl.node_id)]
            if not hasattr(leaving.store, "request_controlled_shutdown"):
                pytest.skip("EtcdMetadataStore.request_controlled_shutdown is not there yet")
            assert any(p.leader == leaving.node_id for p in cluster.partitions("t"))
            await cluster.until(lambda: "t" in leaving.store.image.topics_by_name, what="topic seen by the broker")
            await leaving.store.request_controlled_shutdown()
            # The broker watches its own image until it leads nothing.
            await cluster.until(lambda: all(p.leader != leaving.node_id and leaving.node_id not in p.isr
                                            for p in leaving.store.image.topics_by_name["t"].partitions.values()),
                                what="leaderships moved away")
            assert ctl.controller.shutting_down == {leaving.node_id: leaving.store.incarnation_id}
            assert leaving.node_id not in ctl.controller.eligible_brokers()
            assert all(p.leader != NO_LEADER for p in cluster.partitions("t"))
        finally:
            await cluster.close()
    run(main())


def test_unclean_election_enabled_lets_a_pass_elect_an_out_of_sync_replica(etcd, root):
    async def main():
        cluster = Cluster(etcd, root)
        try:
            for node_id in (1, 2, 3):
                await cluster.open(node_id, unclean=True)
            ctl = await cluster.controller()
            await cluster.until(lambda: set(ctl.store.image.brokers) == {1, 2, 3}, what="registrations")
            topic_id = await cluster.create_topic("t", 3)
            p = next(p for p in cluster.partitions("t") if p.leader != ctl.node_id)
            [ok] = await ctl.controller.alter_partition([AlterPartitionRequest(
                topic_id, p.partition, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,))])
            assert ok.error is E.none
            await cluster.brokers.pop(p.leader).close()
            await cluster.until(lambda: cluster.partitions("t")[p.partition].leader not in (NO_LEADER, p.leader),
                                what="unclean leader")
            after = cluster.partitions("t")[p.partition]
            assert after.isr == (after.leader,)
        finally:
            await cluster.close()
    run(main())
