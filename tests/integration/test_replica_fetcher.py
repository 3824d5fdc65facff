"""A follower (its own Log in a temp dir, a ReplicaFetcherManager over real InterBrokerClients)
copies a partition from a real odradek broker (embedded, on its own thread and loop) that
confluent-kafka produces to.

The broker runs as a single node; `lead_with_follower` then gives its partition the leader state
the cluster wiring gives a leader whose replicas are (1, 2) with both in the ISR (a
PartitionLeader, as ReplicaManager builds on becoming leader), so its Fetch handler serves our
replica fetches the cluster way: up to the log end offset, the follower's position moving the
high watermark, diverging epochs, and acks=all answered only once this follower has the batch.
"""

from __future__ import annotations

import asyncio
import glob
import os
import uuid

import pytest

from odradek import Broker
from odradek.broker.inter_broker import InterBrokerClients, InterBrokerError
from odradek.broker.replica_fetcher import ReplicaFetcherManager
from odradek.broker.replica_manager import Partition
from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.replication.follower import FollowerPhase
from odradek.runtime.clock import now_ms
from odradek.storage.fs import RealFileSystem
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig

confluent_kafka = pytest.importorskip("confluent_kafka")

LEADER, FOLLOWER = 1, 2
FAST = {"replica_fetch_max_bytes": 65_536, "replica_fetch_response_max_bytes": 1_048_576, "replica_fetch_wait_max_ms": 100,
            "replica_fetch_min_bytes": 1, "replica_fetch_backoff_ms": 50, "replica_socket_timeout_ms": 5_000}


class Config:
    def __init__(self, **values) -> None:
        self.__dict__.update(values)


def produce(bootstrap: str, topic: str, count: int, *, start: int = 0, compression: str = "zstd",
            idempotent: bool = True) -> None:
    """Produce `count` records; idempotent means acks=all, which waits for the follower."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": idempotent,
                                         "acks": "all" if idempotent else "1", "compression.type": compression,
                                         "linger.ms": 2, "batch.num.messages": 17})
    errors = []
    for i in range(start, start + count):
        producer.produce(topic, value=b"value-%06d" % i + b"." * (i % 50), key=b"k%d" % (i % 7),
                         on_delivery=lambda err, _msg: err and errors.append(err))
        if i % 100 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors


def leader_log(broker: Broker, topic: str) -> Log:
    return broker.core.replica_manager.get(topic, 0).log


def segment_bytes(directory: str) -> bytes:
    return b"".join(open(path, "rb").read() for path in sorted(glob.glob(os.path.join(directory, "*.log"))))


class Follower:
    """This test's follower broker: a Log, the fetcher manager and the inter-broker clients."""

    def __init__(self, tmp_path, topic: str, topic_id: uuid.UUID, resolve) -> None:
        self.dir = str(tmp_path / "follower" / f"{topic}-0")
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        self.log = Log.open(RealFileSystem(), self.dir, LogConfig(), topic_id=topic_id, recovery_point=0,
                            log_start_offset=0, high_watermark=0, clean_shutdown=True, now_ms=now_ms())
        self.partition = Partition(topic, 0, topic_id, self.log)
        self.clients = InterBrokerClients(None, resolve_endpoint=resolve, client_id="follower-2")
        self.manager = ReplicaFetcherManager(None, inter_broker=self.clients, node_id=FOLLOWER, config=Config(**FAST))

    async def close(self) -> None:
        await self.manager.close()
        await self.clients.close()
        self.log.close()


async def until(predicate, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@pytest.fixture
def leader(tmp_path):
    broker = Broker(str(tmp_path / "leader")).start_in_thread()
    yield broker
    broker.stop_thread()


def create_topic(broker: Broker, topic: str) -> uuid.UUID:
    produce(broker.bootstrap, topic, 1)  # auto-created with one partition
    lead_with_follower(broker, topic)
    return broker.core.image.topics_by_name[topic].topic_id


def lead_with_follower(broker: Broker, topic: str) -> None:
    """Make broker 1 lead `topic`-0 with replicas and ISR (1, FOLLOWER), on the broker's loop."""
    from odradek.metadata.image import PartitionImage
    from odradek.replication.partition_state import PartitionLeader

    async def install() -> None:
        partition = broker.core.replica_manager.get(topic, 0)
        log_ = partition.log
        state = PartitionImage(partition=0, replicas=(LEADER, FOLLOWER), isr=(LEADER, FOLLOWER), leader=LEADER,
                               leader_epoch=partition.leader_epoch, partition_epoch=0)
        partition.leader_state = PartitionLeader(
            broker_id=LEADER, topic_id=partition.topic_id, partition=state, log_end_offset=log_.log_end_offset,
            high_watermark=log_.high_watermark, min_insync_replicas=1,
            end_offset_for_epoch=lambda epoch, _end: log_.end_offset_for_epoch(epoch), now_ms=now_ms())

    asyncio.run_coroutine_threadsafe(install(), broker._loop).result(5)


def test_follower_copies_a_confluent_produced_partition_byte_for_byte(leader, tmp_path):
    topic = "replicated"
    topic_id = create_topic(leader, topic)
    leader_dir = leader_log(leader, topic).dir

    async def main():
        follower = Follower(tmp_path, topic, topic_id, lambda node: ("127.0.0.1", leader.port) if node == LEADER else None)
        try:
            follower.manager.follow(follower.partition, LEADER, leader.core.replica_manager.get(topic, 0).leader_epoch)
            # acks=all: each produce is answered once the follower has fetched it
            await asyncio.to_thread(produce, leader.bootstrap, topic, 2_000, start=1)
            await until(lambda: follower.log.log_end_offset == leader_log(leader, topic).log_end_offset == 2_001)
            # more while following: the long-polling fetch picks it up
            await asyncio.to_thread(produce, leader.bootstrap, topic, 500, start=2_001, compression="lz4")
            await until(lambda: follower.log.log_end_offset == 2_501)
            await until(lambda: follower.log.high_watermark == 2_501)
            assert follower.manager.following(topic, 0)[2] is FollowerPhase.FETCHING
            assert follower.log.leader_epoch_cache.entries == leader_log(leader, topic).leader_epoch_cache.entries
        finally:
            await follower.close()
        assert segment_bytes(follower.dir) == segment_bytes(leader_dir)

    run(main())


def test_the_fetcher_reconnects_and_resumes_after_the_leader_restarts(tmp_path):
    topic = "restarted"
    broker = Broker(str(tmp_path / "leader")).start_in_thread()
    port = broker.port
    current = {"broker": broker}
    try:
        topic_id = create_topic(broker, topic)

        async def main():
            follower = Follower(tmp_path, topic, topic_id, lambda node: ("127.0.0.1", port) if node == LEADER else None)
            try:
                follower.manager.follow(follower.partition, LEADER, 0)
                await asyncio.to_thread(produce, broker.bootstrap, topic, 300, start=1)
                await until(lambda: follower.log.log_end_offset == 301)
                await asyncio.to_thread(current["broker"].stop_thread)
                await asyncio.sleep(0.3)  # the fetcher meets a dead leader and backs off
                with pytest.raises(InterBrokerError) as failed:
                    await follower.clients.request(LEADER, 18, 3, _api_versions_request(), 1.0)
                assert failed.value.error_code in (ErrorCode.broker_not_available, ErrorCode.network_exception)
                restarted = Broker(str(tmp_path / "leader"), port=port)
                current["broker"] = await asyncio.to_thread(restarted.start_in_thread)
                await asyncio.to_thread(lead_with_follower, restarted, topic)
                await asyncio.to_thread(produce, restarted.bootstrap, topic, 200, start=301)
                await until(lambda: follower.log.log_end_offset == 501)
                await until(lambda: follower.log.high_watermark == 501)
            finally:
                await follower.close()
            assert segment_bytes(follower.dir) == segment_bytes(leader_log(current["broker"], topic).dir)

        run(main())
    finally:
        current["broker"].stop_thread()


def _api_versions_request():
    from odradek.client.connection import payload_class

    return payload_class(18, 3, True)(client_software_name="t", client_software_version="1")


def test_a_follower_with_a_diverging_tail_truncates_and_matches_the_leader(leader, tmp_path):
    topic = "diverged"
    topic_id = create_topic(leader, topic)

    async def main():
        resolve = lambda node: ("127.0.0.1", leader.port) if node == LEADER else None
        follower = Follower(tmp_path, topic, topic_id, resolve)
        follower.manager.follow(follower.partition, LEADER, 0)
        await asyncio.to_thread(produce, leader.bootstrap, topic, 400, start=1)
        await until(lambda: follower.log.log_end_offset == 401)
        await follower.manager.close()
        # This broker led epoch 7 for a moment (say) and wrote batches nobody else has.
        for i in range(3):
            batch = bytearray(records.build_batch([(None, b"lost-%d" % i, [], now_ms())] * 5))
            header = records.validate_batch(batch, 0, len(batch))
            assert follower.log.append(batch, header, leader_epoch=7, now_ms=now_ms()).error is ErrorCode.none
        assert follower.log.log_end_offset == 416
        # acks=1 while the follower is away (acks=all would wait for it)
        await asyncio.to_thread(produce, leader.bootstrap, topic, 100, start=401, idempotent=False)
        follower.manager = ReplicaFetcherManager(None, inter_broker=follower.clients, node_id=FOLLOWER,
                                                 config=Config(**FAST))
        try:
            follower.manager.follow(follower.partition, LEADER, 0)
            await until(lambda: follower.log.log_end_offset == 501
                        and follower.log.leader_epoch_cache.entries == [(0, 0)])
        finally:
            await follower.close()
        assert segment_bytes(follower.dir) == segment_bytes(leader_log(leader, topic).dir)

    run(main())
