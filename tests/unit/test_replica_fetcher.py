"""ReplicaFetcherManager against an in-process fake leader that answers from a real Log.

The fake leader serves OffsetForLeaderEpoch v4 and Fetch v17 the way a Kafka leader does
(epoch fencing, diverging epochs, reads up to its high watermark), through the same
`request(node_id, api_key, api_version, request, timeout_s, channel=)` seam as InterBrokerClients.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest

from odradek.broker.inter_broker import InterBrokerError
from odradek.broker.replica_fetcher import ReplicaFetcherManager
from odradek.broker.replica_manager import Partition
from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.replication.follower import FollowerPhase, answer_offset_for_leader_epoch
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log

CONFIG = SimpleNamespace(replica_fetch_max_bytes=300, replica_fetch_response_max_bytes=1_000,
                         replica_fetch_wait_max_ms=20, replica_fetch_min_bytes=1, replica_fetch_backoff_ms=20,
                         replica_socket_timeout_ms=2_000)
SMALL = LogConfig(segment_bytes=500, retention_ms=-1, retention_bytes=-1)
TOPIC_ID = uuid.UUID(int=7)
LEADER, FOLLOWER = 1, 2


class FakeLeader:
    """Broker LEADER's side of replication, over a real Log; records every request."""

    def __init__(self, log: Log, leader_epoch: int) -> None:
        self.log, self.leader_epoch = log, leader_epoch
        self.requests: list[tuple[int, object]] = []
        self.fail_next = 0  # the next n requests raise InterBrokerError (unreachable)
        self.lie_about_epochs = False  # answer OffsetForLeaderEpoch "no truncation" (to reach the diverging path)
        self.corrupt_next_fetch = False
        self.delay = None  # an Event the next request waits for
        self.data = asyncio.Event()  # set on every append, for the long poll

    def append(self, values: list[bytes], **kwargs) -> None:
        append_values(self.log, values, leader_epoch=self.leader_epoch, **kwargs)
        self.log.update_high_watermark(self.log.log_end_offset)
        self.data.set()

    async def request(self, node_id, api_key, api_version, body, timeout_s, *, channel="control"):
        assert node_id == LEADER and channel == "replica-fetcher" and timeout_s > 0
        self.requests.append((api_key, body))
        if self.delay is not None:
            delay, self.delay = self.delay, None
            await delay.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise InterBrokerError(ErrorCode.broker_not_available, "leader down")
        if api_key == 23:
            assert api_version == 4 and body.replica_id == FOLLOWER
            return self._offset_for_leader_epoch(body)
        assert api_key == 1 and api_version == 17
        assert body.replica_state.replica_id == FOLLOWER and body.isolation_level == 0
        return await self._fetch(body)

    def _offset_for_leader_epoch(self, body):
        from kio.schema.offset_for_leader_epoch.v4 import response as schema

        topics = []
        for topic in body.topics:
            results = []
            for p in topic.partitions:
                error, epoch, end = answer_offset_for_leader_epoch(
                    self.leader_epoch, p.current_leader_epoch, p.leader_epoch, self.log.leader_epoch_cache.entries,
                    self.log.log_end_offset)
                if self.lie_about_epochs and error is ErrorCode.none:
                    epoch, end = p.leader_epoch, 2**40
                results.append(schema.EpochEndOffset(error_code=error, partition=p.partition, leader_epoch=epoch,
                                                     end_offset=end))
            topics.append(schema.OffsetForLeaderTopicResult(topic=topic.topic, partitions=tuple(results)))
        return schema.OffsetForLeaderEpochResponse(throttle_time=timedelta(0), topics=tuple(topics))

    async def _fetch(self, body):
        from kio.schema.fetch.v17 import response as schema

        (topic,) = body.topics
        (p,) = topic.partitions
        assert topic.topic_id == TOPIC_ID and p.partition_max_bytes == CONFIG.replica_fetch_max_bytes
        log = self.log
        error, diverging, data = ErrorCode.none, schema.EpochEndOffset(), b""
        if p.current_leader_epoch < self.leader_epoch:
            error = ErrorCode.fenced_leader_epoch
        else:
            if p.last_fetched_epoch >= 0:
                epoch, end = log.end_offset_for_epoch(p.last_fetched_epoch)
                if epoch < p.last_fetched_epoch or end < p.fetch_offset:
                    diverging = schema.EpochEndOffset(epoch=epoch, end_offset=end)
            if diverging.epoch < 0:
                if p.fetch_offset >= log.log_end_offset:
                    self.data.clear()
                    try:
                        async with asyncio.timeout(body.max_wait.total_seconds()):
                            await self.data.wait()
                    except TimeoutError:
                        pass
                # a leader serves a replica up to its log end offset (consumers: its high watermark)
                result = log.read(p.fetch_offset, p.partition_max_bytes, max_offset=log.log_end_offset)
                if result.error is not ErrorCode.none:
                    error = result.error
                else:
                    data = result.region.read()
                    if self.corrupt_next_fetch and data:
                        self.corrupt_next_fetch = False
                        data = bytearray(data)
                        data[70] ^= 0xFF
                        data = bytes(data)
        partition = schema.PartitionData(
            partition_index=p.partition, error_code=error, high_watermark=log.high_watermark,
            last_stable_offset=log.last_stable_offset, log_start_offset=log.log_start_offset,
            diverging_epoch=diverging, aborted_transactions=None, records=data)
        return schema.FetchResponse(throttle_time=timedelta(0), error_code=ErrorCode.none, session_id=0,
                                    responses=(schema.FetchableTopicResponse(topic_id=TOPIC_ID,
                                                                             partitions=(partition,)),))


def async_test(fn):
    """Run an async test on a fresh event loop, bounded (the project has no asyncio pytest plugin)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 20))
    return run


def make_partition(fs: FakeFileSystem, log: Log | None = None) -> Partition:
    log = log or open_log(fs, SMALL)
    return Partition("topic", 0, TOPIC_ID, log)


def fresh_leader(epoch: int = 0) -> FakeLeader:
    return FakeLeader(open_log(FakeFileSystem(), SMALL), epoch)


def manager_for(leader: FakeLeader) -> ReplicaFetcherManager:
    return ReplicaFetcherManager(None, inter_broker=leader, node_id=FOLLOWER, config=CONFIG)


async def until(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


def log_bytes(log: Log) -> bytes:
    out = b""
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20, max_offset=log.log_end_offset).region.read()
        out += data
        offset = list(records.iter_headers(data))[-1].next_offset
    return out


def caught_up(leader: FakeLeader, partition: Partition) -> bool:
    return (partition.log.log_end_offset == leader.log.log_end_offset
            and partition.log.high_watermark == leader.log.high_watermark)


@async_test
async def test_follower_catches_up_byte_for_byte_and_wakes_fetch_waiters():
    leader = fresh_leader(epoch=0)
    for i in range(30):
        leader.append([b"value-%02d" % i] * (1 + i % 4), compression=i % 3)
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: caught_up(leader, partition))
        assert log_bytes(partition.log) == log_bytes(leader.log)
        assert partition.log.leader_epoch_cache.entries == leader.log.leader_epoch_cache.entries
        assert len(partition.log.segments) > 1
        # long poll: the next append reaches the follower and wakes a consumer waiting on it
        waiter = asyncio.get_running_loop().create_future()
        partition.waiters.append(waiter)
        leader.append([b"late"])
        await asyncio.wait_for(waiter, 5)
        await until(lambda: caught_up(leader, partition))
        assert manager.following("topic", 0) == (LEADER, 0, FollowerPhase.FETCHING)
        kinds = [k for k, _ in leader.requests]
        assert kinds[0] == 23 or partition.log.leader_epoch_cache.entries == []  # truncation first
    finally:
        await manager.close()


@async_test
async def test_the_high_watermark_is_the_leaders_bounded_by_the_own_log_end():
    leader = fresh_leader()
    leader.append([b"a", b"b"])
    leader.append([b"c"])
    leader.log.update_high_watermark(2)  # the third record is not yet committed on the leader
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: partition.log.log_end_offset == 3 and partition.log.high_watermark == 2)
        leader.log.update_high_watermark(3)
        leader.data.set()
        await until(lambda: caught_up(leader, partition))
        # A leader whose high watermark lags ours (a new leader catching up its ISR) never
        # moves ours back, as Kafka's follower.
        leader.log.update_high_watermark(1)
        append_values(leader.log, [b"d"])
        leader.data.set()
        await until(lambda: partition.log.log_end_offset == 4)
        await asyncio.sleep(0.05)
        assert partition.log.high_watermark == 3
    finally:
        await manager.close()


@async_test
async def test_a_diverging_tail_is_truncated_through_offset_for_leader_epoch():
    leader = fresh_leader(epoch=1)
    for i in range(5):
        leader.append([b"common-%d" % i])
    follower_fs = FakeFileSystem()
    partition = make_partition(follower_fs)
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 1)
        await until(lambda: caught_up(leader, partition))
        await manager.close()
        # The follower led epoch 2 for a moment and wrote what nobody else has.
        append_values(partition.log, [b"lost"] * 3, leader_epoch=2)
        append_values(partition.log, [b"lost-too"], leader_epoch=2)
        # The leader won epoch 3 and wrote on from offset 5.
        leader.leader_epoch = 3
        for i in range(3):
            leader.append([b"new-%d" % i, b"more"])
        manager = manager_for(leader)
        manager.follow(partition, LEADER, 3)
        await until(lambda: caught_up(leader, partition) and log_bytes(partition.log) == log_bytes(leader.log))
        assert partition.log.leader_epoch_cache.entries == [(1, 0), (3, 5)]
        epoch_requests = [body for kind, body in leader.requests if kind == 23]
        assert epoch_requests[-1].topics[0].partitions[0].leader_epoch == 2
    finally:
        await manager.close()


@async_test
async def test_a_diverging_epoch_in_a_fetch_answer_truncates():
    leader = fresh_leader(epoch=1)
    for i in range(5):
        leader.append([b"common-%d" % i])
    partition = make_partition(FakeFileSystem())
    for i in range(5):
        append_values(partition.log, [b"common-%d" % i], leader_epoch=1)
    append_values(partition.log, [b"lost"] * 2, leader_epoch=2)
    leader.leader_epoch = 3
    leader.append([b"new"])
    leader.lie_about_epochs = True  # skip truncation by epoch: the Fetch answer must catch it
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 3)
        await until(lambda: caught_up(leader, partition) and log_bytes(partition.log) == log_bytes(leader.log))
        fetches = [body for kind, body in leader.requests if kind == 1]
        assert fetches[0].topics[0].partitions[0].last_fetched_epoch == 2
        assert fetches[0].topics[0].partitions[0].fetch_offset == 7
    finally:
        await manager.close()


@async_test
async def test_a_fenced_epoch_stops_the_partition_until_a_new_epoch_is_followed():
    leader = fresh_leader(epoch=4)
    leader.append([b"x"])
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 3)  # our metadata is behind
        await until(lambda: manager.following("topic", 0)[2] is FollowerPhase.STALE)
        count = len(leader.requests)
        await asyncio.sleep(0.1)
        assert len(leader.requests) == count  # a stale follower asks nothing
        assert partition.log.log_end_offset == 0
        manager.follow(partition, LEADER, 4)
        await until(lambda: caught_up(leader, partition))
    finally:
        await manager.close()


@async_test
async def test_an_unreachable_leader_is_retried_after_a_backoff():
    leader = fresh_leader()
    leader.append([b"x", b"y"])
    leader.fail_next = 3
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: caught_up(leader, partition))
        assert len(leader.requests) >= 4
    finally:
        await manager.close()


@async_test
async def test_corrupt_data_is_refused_and_fetched_again():
    leader = fresh_leader()
    leader.append([b"x" * 40, b"y" * 40])
    leader.corrupt_next_fetch = True
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: caught_up(leader, partition))
        assert log_bytes(partition.log) == log_bytes(leader.log)
        assert not leader.corrupt_next_fetch
    finally:
        await manager.close()


@async_test
async def test_unfollow_drops_the_answer_in_flight():
    leader = fresh_leader()
    leader.append([b"x"])
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: caught_up(leader, partition))
        held = leader.delay = asyncio.Event()
        await until(lambda: leader.delay is None)  # the next Fetch is held by the leader
        leader.append([b"y"])
        manager.unfollow("topic", 0)
        held.set()  # the answer (with "y") arrives after the unfollow
        await asyncio.sleep(0.1)
        assert partition.log.log_end_offset == 1
        assert manager.following("topic", 0) is None and not manager.fetchers
    finally:
        await manager.close()


@async_test
async def test_follow_is_idempotent_and_a_new_leader_moves_the_partition():
    leader = fresh_leader()
    leader.append([b"x"])
    partition = make_partition(FakeFileSystem())
    manager = manager_for(leader)
    try:
        manager.follow(partition, LEADER, 0)
        await until(lambda: caught_up(leader, partition))
        fetcher = manager.fetchers[LEADER]
        followed = fetcher.partitions[("topic", 0)]
        manager.follow(partition, LEADER, 0)
        assert manager.fetchers[LEADER].partitions[("topic", 0)] is followed
        manager.follow(partition, 3, 1)  # broker 3 leads now, in epoch 1
        assert set(manager.fetchers) == {3} and manager.following("topic", 0) == (3, 1, FollowerPhase.TRUNCATING)
        with pytest.raises(AssertionError):
            manager.follow(partition, FOLLOWER, 2)
    finally:
        await manager.close()


def test_the_manager_may_be_built_before_the_cores_inter_broker_clients():
    from odradek.broker.inter_broker import InterBrokerClients

    core = SimpleNamespace(node_id=FOLLOWER, config=SimpleNamespace(replica_fetch_max_bytes=5), cluster=None,
                           broker_endpoint=lambda node: None)
    manager = ReplicaFetcherManager(core)  # as ClusterMetadata does, before core.cluster is set
    core.cluster = SimpleNamespace(inter_broker=InterBrokerClients(core))
    assert manager.inter_broker is core.cluster.inter_broker
    assert (manager.fetch_max_bytes, manager.fetch_wait_max_ms, manager.backoff_ms) == (5, 500, 1_000)
