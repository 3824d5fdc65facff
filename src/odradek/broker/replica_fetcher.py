"""The follower side of replication: one fetcher task per leader broker copies its partitions.

`ReplicaFetcherManager` (`core.replica_fetchers`) keeps one `ReplicaFetcher` per leader broker
(Kafka's ReplicaFetcherManager / ReplicaFetcherThread, here asyncio tasks). Each fetcher drives a
`replication.follower.PartitionFollower` per partition it copies; the core says what to ask:

  TRUNCATING  OffsetForLeaderEpoch v4 (replica_id = this broker) for the follower's latest
              epoch; the answer says where to truncate (`Log.truncate_to`), then fetching starts;
  FETCHING    Fetch v17 (ReplicaState {replica_id: this broker, replica_epoch: -1}, topic ids,
              read_uncommitted, `replica.fetch.*` limits, last fetched epoch); records are
              appended with `Log.append_as_follower`, a diverging epoch in the answer truncates;
  STALE       the leader fenced our epoch: the partition waits until the metadata brings a new
              leader epoch (`follow` again).

All partitions of one leader that want the same request go in one request per round, over the
inter-broker channel `replica-fetcher` (one connection per leader, apart from the control
channel). After an append or a high watermark change the follower's high watermark becomes
min(leader's high watermark, own log end offset) (never lower than it was, as Kafka's
maybeUpdateHighWatermark) and the partition's fetch waiters are woken.
Errors: a failed request (InterBrokerError) or a partition error is a retriable error for the
core (it backs off `replica.fetch.backoff.ms`), except FENCED_LEADER_EPOCH (-> STALE). Data the
log refuses (CORRUPT_MESSAGE; an offset below the log end offset, a bug) backs the partition
off; a storage error (OSError) stops following it and is logged (the log dir needs attention).

Owned by the BrokerCore; `follow`/`unfollow` run on the event loop (from the image listener),
the fetcher tasks run on the same loop. A response is applied only if the partition is still
followed by the same PartitionFollower that sent the request.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from odradek.broker.inter_broker import InterBrokerError
from odradek.protocol.errors import ErrorCode
from odradek.replication.follower import (
    FetchRequest,
    FollowerPhase,
    OffsetForLeaderEpochRequest,
    PartitionFollower,
)
from odradek.runtime import clock

__all__ = ["FETCH_VERSION", "OFFSET_FOR_LEADER_EPOCH_VERSION", "ReplicaFetcher", "ReplicaFetcherManager"]

log = logging.getLogger(__name__)

FETCH_API_KEY = 1
FETCH_VERSION = 17  # ReplicaState (KIP-903) and topic ids; diverging epochs since v12
OFFSET_FOR_LEADER_EPOCH_API_KEY = 23
OFFSET_FOR_LEADER_EPOCH_VERSION = 4
FETCHER_CHANNEL = "replica-fetcher"
IDLE_POLL_MS = 50  # how often an idle fetcher (all partitions backing off) looks again
MAX_PARTITIONS_PER_REQUEST = 2_000  # bound on one request's size; the rest go next round

# Kafka's defaults, used when the core has no config (tests); the broker passes its own.
DEFAULTS = {
    "replica_fetch_max_bytes": 1_048_576,
    "replica_fetch_response_max_bytes": 10_485_760,
    "replica_fetch_wait_max_ms": 500,
    "replica_fetch_min_bytes": 1,
    "replica_fetch_backoff_ms": 1_000,
    "replica_socket_timeout_ms": 30_000,
}


@dataclass(eq=False, slots=True)
class _Followed:
    """One partition a fetcher copies: the hosted Partition and its follower core."""

    partition: Any  # broker.replica_manager.Partition: topic, index, topic_id, log, wake_waiters()
    follower: PartitionFollower
    retry_at_ms: int = 0  # local backoff after the log refused data (the core does not know)
    failed: bool = False  # a storage error: no longer fetched


class ReplicaFetcher:
    """Copies every partition this broker follows from one leader broker, in one task.

    Holds the leader's node id, the followed partitions by (topic, index) and the task.
    Invariants: every partition here has `follower.leader_id == leader_id`; at most one request
    of each kind is in flight (the task awaits it); the task runs while partitions remain.
    Owned by the ReplicaFetcherManager; runs on the event loop.
    """

    def __init__(self, manager: ReplicaFetcherManager, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.partitions: dict[tuple[str, int], _Followed] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._healthy = True

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"replica-fetcher-{self.leader_id}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while self.partitions:
            try:
                sent = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop replication of every partition silently
                log.exception("replica fetcher for leader %d failed; backing off", self.leader_id)
                sent = False
                await asyncio.sleep(self.manager.backoff_ms / 1000)
            if not sent:
                self._wake.clear()
                try:
                    async with asyncio.timeout(IDLE_POLL_MS / 1000):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def run_once(self) -> bool:
        """One round: poll every partition's core, send what they ask, apply the answers.
        Returns False when there was nothing to send (the caller waits a little)."""
        now = self.manager.clock()
        epoch_requests: list[tuple[_Followed, OffsetForLeaderEpochRequest]] = []
        fetch_requests: list[tuple[_Followed, FetchRequest]] = []
        for followed in list(self.partitions.values()):
            if followed.failed or now < followed.retry_at_ms:
                continue
            log_ = followed.partition.log
            request = followed.follower.poll(now, log_.log_end_offset, log_.leader_epoch_cache.entries)
            if isinstance(request, OffsetForLeaderEpochRequest):
                epoch_requests.append((followed, request))
            elif isinstance(request, FetchRequest):
                fetch_requests.append((followed, request))
            if len(epoch_requests) + len(fetch_requests) >= MAX_PARTITIONS_PER_REQUEST:
                break
        if epoch_requests:
            await self._offset_for_leader_epoch(epoch_requests)
        if fetch_requests:
            await self._fetch(fetch_requests)
        return bool(epoch_requests or fetch_requests)

    def _current(self, followed: _Followed) -> bool:
        """Still followed by the same core (not unfollowed or replaced while we awaited)."""
        p = followed.partition
        return self.partitions.get((p.topic, p.index)) is followed and not followed.failed

    def _request_failed(self, error: InterBrokerError) -> None:
        if self._healthy:
            log.warning("replica fetcher: leader %d unreachable: %s", self.leader_id, error)
        self._healthy = False

    # -- OffsetForLeaderEpoch -------------------------------------------------------------------
    async def _offset_for_leader_epoch(self, requests: list[tuple[_Followed, OffsetForLeaderEpochRequest]]) -> None:
        from kio.schema.offset_for_leader_epoch.v4 import request as schema
        from kio.schema.types import BrokerId, TopicName
        from kio.static.primitive import i32

        by_topic: dict[str, list] = {}
        for followed, request in requests:
            by_topic.setdefault(followed.partition.topic, []).append(schema.OffsetForLeaderPartition(
                partition=i32(followed.partition.index), current_leader_epoch=i32(request.current_leader_epoch),
                leader_epoch=i32(request.leader_epoch)))
        body = schema.OffsetForLeaderEpochRequest(
            replica_id=BrokerId(self.manager.node_id),
            topics=tuple(schema.OffsetForLeaderTopic(topic=TopicName(t), partitions=tuple(ps))
                         for t, ps in by_topic.items()))
        answers: dict[tuple[str, int], tuple[ErrorCode, int, int]] = {}
        try:
            response = await self.manager.inter_broker.request(
                self.leader_id, OFFSET_FOR_LEADER_EPOCH_API_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION, body,
                self.manager.request_timeout_ms / 1000, channel=FETCHER_CHANNEL)
        except InterBrokerError as exc:
            self._request_failed(exc)
        else:
            self._healthy = True
            for topic in response.topics:
                for p in topic.partitions:
                    answers[(str(topic.topic), int(p.partition))] = (ErrorCode(p.error_code), int(p.leader_epoch),
                                                                      int(p.end_offset))
        now = self.manager.clock()
        for followed, request in requests:
            if not self._current(followed):
                continue
            p = followed.partition
            error, epoch, end_offset = answers.get((p.topic, p.index), (ErrorCode.network_exception, -1, -1))
            log_ = p.log
            truncate_to = followed.follower.on_offset_for_leader_epoch(
                request.request_id, error, epoch, end_offset, now, log_.leader_epoch_cache.entries,
                log_.log_end_offset, log_.log_start_offset)
            self._after_error(followed, error)
            if truncate_to is not None and truncate_to < log_.log_end_offset:
                self._truncate(followed, truncate_to, f"leader's epoch {epoch} ends at {end_offset}")

    # -- Fetch ------------------------------------------------------------------------------------
    async def _fetch(self, requests: list[tuple[_Followed, FetchRequest]]) -> None:
        from kio.schema.fetch.v17 import request as schema
        from kio.schema.types import BrokerId
        from kio.static.primitive import i8, i32, i64

        manager = self.manager
        by_topic: dict[uuid.UUID, list] = {}
        for followed, request in requests:
            p = followed.partition
            by_topic.setdefault(p.topic_id, []).append(schema.FetchPartition(
                partition=i32(p.index), current_leader_epoch=i32(request.current_leader_epoch),
                fetch_offset=i64(request.fetch_offset), last_fetched_epoch=i32(request.last_fetched_epoch),
                log_start_offset=i64(p.log.log_start_offset), partition_max_bytes=i32(manager.fetch_max_bytes)))
        body = schema.FetchRequest(
            replica_state=schema.ReplicaState(replica_id=BrokerId(manager.node_id), replica_epoch=i64(-1)),
            max_wait=timedelta(milliseconds=manager.fetch_wait_max_ms), min_bytes=i32(manager.fetch_min_bytes),
            max_bytes=i32(manager.fetch_response_max_bytes), isolation_level=i8(0), session_id=i32(0),
            session_epoch=i32(-1),
            topics=tuple(schema.FetchTopic(topic_id=topic_id, partitions=tuple(ps)) for topic_id, ps in by_topic.items()),
            forgotten_topics_data=(), rack_id="")
        answers: dict[tuple[uuid.UUID, int], Any] = {}
        top_error = ErrorCode.network_exception
        try:
            response = await manager.inter_broker.request(
                self.leader_id, FETCH_API_KEY, FETCH_VERSION, body,
                (manager.fetch_wait_max_ms + manager.request_timeout_ms) / 1000, channel=FETCHER_CHANNEL)
        except InterBrokerError as exc:
            self._request_failed(exc)
        else:
            self._healthy = True
            top_error = ErrorCode(response.error_code)
            for topic in response.responses:
                for pd in topic.partitions:
                    answers[(topic.topic_id, int(pd.partition_index))] = pd
        wall_now_ms = clock.now_ms()
        for followed, request in requests:
            if not self._current(followed):
                continue
            p = followed.partition
            pd = answers.get((p.topic_id, p.index))
            if pd is None:
                error = top_error if top_error is not ErrorCode.none else ErrorCode.unknown_server_error
                self._fetched(followed, request, error, None)
                continue
            await self._apply_partition_data(followed, request, pd, wall_now_ms)

    def _fetched(self, followed: _Followed, request: FetchRequest, error: ErrorCode,
                 diverging: tuple[int, int] | None) -> tuple[bool, int | None]:
        log_ = followed.partition.log
        if error is ErrorCode.none and request.fetch_offset != log_.log_end_offset:
            error = ErrorCode.unknown_server_error  # the log moved under the fetch: ask again
        result = followed.follower.on_fetch(request.request_id, error, diverging, self.manager.clock(),
                                            log_.leader_epoch_cache.entries, log_.log_end_offset,
                                            log_.log_start_offset)
        self._after_error(followed, error)
        return result

    async def _apply_partition_data(self, followed: _Followed, request: FetchRequest, pd: Any,
                                    wall_now_ms: int) -> None:
        p = followed.partition
        log_ = p.log
        error = ErrorCode(pd.error_code)
        leader_log_start = int(pd.log_start_offset)
        if error is ErrorCode.offset_out_of_range and leader_log_start > log_.log_end_offset:
            # The leader's log starts above ours (retention or DeleteRecords ran while we were
            # away): start over at its log start offset (Kafka's truncateFullyAndStartAt).
            log.info("%s-%d: leader %d starts at %d, above our log end %d; starting over there",
                     p.topic, p.index, self.leader_id, leader_log_start, log_.log_end_offset)
            try:
                log_.truncate_fully_and_start_at(leader_log_start)  # on the loop, as truncate_to
            except OSError as exc:
                self._storage_failed(followed, exc)
                return
        diverging = None
        if int(pd.diverging_epoch.epoch) >= 0:
            diverging = (int(pd.diverging_epoch.epoch), int(pd.diverging_epoch.end_offset))
        append, truncate_to = self._fetched(followed, request, error, diverging)
        if truncate_to is not None and truncate_to < log_.log_end_offset:
            self._truncate(followed, truncate_to, f"diverging epoch {diverging}")
            return
        if not append:
            return
        records = pd.records
        high_watermark_before = log_.high_watermark
        appended = False
        if records:
            try:
                result = log_.append_as_follower(records, wall_now_ms)
            except OSError as exc:
                self._storage_failed(followed, exc)
                return
            except ValueError as exc:  # an offset below the log end offset: a bug, logged loudly
                log.error("%s-%d: follower append refused: %s", p.topic, p.index, exc)
                followed.retry_at_ms = self.manager.clock() + self.manager.backoff_ms
                return
            if result.error is not ErrorCode.none:
                log.warning("%s-%d: data from leader %d refused (%s: %s); backing off", p.topic, p.index,
                            self.leader_id, result.error.name, result.error_message)
                followed.retry_at_ms = self.manager.clock() + self.manager.backoff_ms
                return
            appended = result.last_offset >= 0
            if result.needs_flush:
                try:
                    await self.manager.run_blocking(log_.flush)
                except OSError as exc:
                    self._storage_failed(followed, exc)
                    return
                if not self._current(followed):
                    return
        # Kafka's follower: the high watermark only moves up (a new leader's may lag for a while).
        high_watermark = min(int(pd.high_watermark), log_.log_end_offset)
        if high_watermark > log_.high_watermark:
            log_.update_high_watermark(high_watermark)
        if appended or log_.high_watermark != high_watermark_before:
            p.wake_waiters()

    # -- helpers --------------------------------------------------------------------------------
    def _after_error(self, followed: _Followed, error: ErrorCode) -> None:
        if error is ErrorCode.none:
            return
        p = followed.partition
        if followed.follower.phase is FollowerPhase.STALE:
            log.info("%s-%d: leader %d fenced our leader epoch %d; waiting for new metadata", p.topic, p.index,
                     self.leader_id, followed.follower.leader_epoch)
        else:
            log.debug("%s-%d: leader %d answered %s; backing off", p.topic, p.index, self.leader_id, error.name)

    def _truncate(self, followed: _Followed, offset: int, reason: str) -> None:
        p = followed.partition
        log.info("%s-%d: truncating from %d to %d (%s)", p.topic, p.index, p.log.log_end_offset, offset, reason)
        try:
            p.log.truncate_to(offset)
        except OSError as exc:
            self._storage_failed(followed, exc)

    def _storage_failed(self, followed: _Followed, exc: OSError) -> None:
        p = followed.partition
        log.error("%s-%d: storage error while following leader %d; no longer fetching: %s", p.topic, p.index,
                  self.leader_id, exc)
        followed.failed = True


class ReplicaFetcherManager:
    """Which leader each followed partition is fetched from: one ReplicaFetcher per leader.

    Holds the fetchers by leader id and the settings they share (`replica.fetch.*`).
    Invariants: a partition is in at most one fetcher; a fetcher with no partitions is stopped.
    Owned by the BrokerCore (`core.replica_fetchers`); every method runs on the event loop.
    `follow` is idempotent for the same leader and epoch, so the image listener may call it on
    every published image.
    """

    def __init__(self, core: Any, *, inter_broker: Any = None, node_id: int | None = None,
                 config: Any = None, clock_ms: Any = None) -> None:
        self.core = core
        self._inter_broker = inter_broker
        self.node_id = node_id if node_id is not None else core.node_id
        config = config if config is not None else getattr(core, "config", None)

        def setting(name: str) -> int:
            return int(getattr(config, name, DEFAULTS[name]))

        self.fetch_max_bytes = setting("replica_fetch_max_bytes")
        self.fetch_response_max_bytes = setting("replica_fetch_response_max_bytes")
        self.fetch_wait_max_ms = setting("replica_fetch_wait_max_ms")
        self.fetch_min_bytes = setting("replica_fetch_min_bytes")
        self.backoff_ms = setting("replica_fetch_backoff_ms")
        self.request_timeout_ms = setting("replica_socket_timeout_ms")
        self.clock = clock_ms or clock.monotonic_ms
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._leader_of: dict[tuple[str, int], int] = {}
        self._closed = False

    @property
    def inter_broker(self) -> Any:
        """The InterBrokerClients given, else the core's (`core.inter_broker`, or
        `core.cluster.inter_broker`), looked up when first needed: the manager may be built
        before them."""
        if self._inter_broker is None:
            found = getattr(self.core, "inter_broker", None)
            if found is None:
                found = getattr(getattr(self.core, "cluster", None), "inter_broker", None)
            if found is None:
                raise RuntimeError("replica fetchers have no inter-broker clients")
            self._inter_broker = found
        return self._inter_broker

    async def run_blocking(self, fn: Any) -> Any:
        run = getattr(self.core, "run_blocking", None)
        if run is not None:
            return await run(fn)
        return await asyncio.to_thread(fn)

    def follow(self, partition: Any, leader_id: int, leader_epoch: int) -> None:
        """Fetch `partition` (a replica_manager.Partition hosted here) from `leader_id` in
        `leader_epoch`. A new leader or epoch starts over with a new PartitionFollower (which
        truncates first, as Kafka after every leader change); the same leader and epoch keep the
        current one."""
        assert not self._closed, "replica fetchers are closed"
        assert leader_id != self.node_id, "a broker does not follow itself"
        key = (partition.topic, partition.index)
        current_leader = self._leader_of.get(key)
        if current_leader is not None:
            followed = self.fetchers[current_leader].partitions[key]
            if (current_leader == leader_id and followed.follower.leader_epoch == leader_epoch
                    and followed.partition is partition and not followed.failed):
                return
            self._remove(key)
        fetcher = self.fetchers.get(leader_id)
        if fetcher is None:
            fetcher = self.fetchers[leader_id] = ReplicaFetcher(self, leader_id)
        follower = PartitionFollower(self.node_id, leader_id, leader_epoch,
                                     fetch_backoff_ms=self.backoff_ms, request_timeout_ms=self.request_timeout_ms
                                     + self.fetch_wait_max_ms)
        fetcher.partitions[key] = _Followed(partition, follower)
        self._leader_of[key] = leader_id
        log.info("%s-%d: following leader %d in epoch %d from offset %d", partition.topic, partition.index,
                 leader_id, leader_epoch, partition.log.log_end_offset)
        fetcher.start()
        fetcher.wake()

    def unfollow(self, topic: str, index: int) -> None:
        """Stop fetching the partition (it became leader, or is no longer a replica here). A
        response in flight for it is dropped when it arrives."""
        self._remove((topic, index))

    def _remove(self, key: tuple[str, int]) -> None:
        leader_id = self._leader_of.pop(key, None)
        if leader_id is None:
            return
        fetcher = self.fetchers[leader_id]
        fetcher.partitions.pop(key, None)
        if not fetcher.partitions:
            del self.fetchers[leader_id]
            # The task ends by itself at its next round (it loops while partitions remain); a
            # long-poll Fetch in flight is cancelled now so that the connection is not left busy.
            asyncio.get_running_loop().create_task(fetcher.stop())

    def following(self, topic: str, index: int) -> tuple[int, int, FollowerPhase] | None:
        """(leader id, leader epoch, phase) of a followed partition, or None (tests, status)."""
        leader_id = self._leader_of.get((topic, index))
        if leader_id is None:
            return None
        follower = self.fetchers[leader_id].partitions[(topic, index)].follower
        return leader_id, follower.leader_epoch, follower.phase

    async def close(self) -> None:
        """Stop every fetcher task (does not close the inter-broker connections: the core owns them)."""
        self._closed = True
        fetchers, self.fetchers = list(self.fetchers.values()), {}
        self._leader_of.clear()
        for fetcher in fetchers:
            fetcher.partitions.clear()
            await fetcher.stop()
