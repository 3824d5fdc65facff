"""The partitions this broker hosts, their logs, and the waits for new data (fetch purgatory).

`ReplicaManager` owns one `Partition` per hosted topic-partition. The produce path appends a
validated batch to the partition's log and advances the high watermark; then it wakes every
Fetch long-polling on that partition. The fetch path waits on a partition with a cheap
per-partition future, never by polling.

On a single node every hosted partition is led here and the high watermark is the log end
offset at once. In cluster mode (issue #7) each partition is led or followed as the metadata
image says (`apply_partition_state`):
* a leader holds a `PartitionLeader` (replication/partition_state.py), the deterministic core of
  follower positions, ISR proposals and the high watermark; this module feeds it local appends,
  replica fetches (`on_follower_fetch`) and ticks, and does what its outputs say: move the log's
  high watermark and wake fetchers, answer acks=all appends (one future each), send
  AlterPartition proposals to the controller and feed the answers back;
* a follower has no PartitionLeader; the replica fetchers (`core.cluster.fetchers`) copy the
  leader's log into it; clients get NOT_LEADER_OR_FOLLOWER.

Owned by the BrokerCore; every method runs on the event loop, except `Log.flush`, which goes to
the broker's blocking-I/O thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import BatchHeader
from odradek.runtime.clock import now_ms as clock_now_ms
from odradek.storage.log import AppendResult, Log

log = logging.getLogger(__name__)

LEADER_TICK_S = 0.25  # how often leaders time out acks=all appends and check ISR lag


@dataclass(eq=False)
class Partition:
    """One hosted partition: its log, the leader epoch this broker leads it in, and data waiters."""

    topic: str
    index: int
    topic_id: uuid.UUID
    log: Log
    leader_epoch: int = 0
    leader_id: int = -1  # the partition's leader as this broker last learned it (-1: none)
    broker_id: int = -1  # this broker
    leader_state: Any = None  # a PartitionLeader while this broker leads it in cluster mode
    waiters: list[asyncio.Future] = field(default_factory=list)

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.broker_id >= 0

    def wake_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class ReplicaManager:
    def __init__(self, core) -> None:
        self._core = core
        self.partitions: dict[tuple[str, int], Partition] = {}
        self._led: set[Partition] = set()  # partitions with a PartitionLeader (cluster mode)
        self._ticker: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    def get(self, topic: str, partition: int) -> Partition | None:
        return self.partitions.get((topic, partition))

    def leader_partition(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition | ErrorCode:
        """The partition if this broker leads it in the client's epoch, else Kafka's error.

        `current_leader_epoch` -1 skips the check; a newer epoch than ours is UNKNOWN_LEADER_EPOCH
        (our metadata is behind), an older one FENCED_LEADER_EPOCH (the client's is).
        """
        topic_image = self._core.image.topics_by_name.get(topic)
        if topic_image is None or index not in topic_image.partitions:
            return ErrorCode.unknown_topic_or_partition
        partition = self.partitions.get((topic, index))
        if partition is None or not partition.is_leader:
            return ErrorCode.not_leader_or_follower
        if current_leader_epoch >= 0:
            if current_leader_epoch > partition.leader_epoch:
                return ErrorCode.unknown_leader_epoch
            if current_leader_epoch < partition.leader_epoch:
                return ErrorCode.fenced_leader_epoch
        return partition

    def add(self, partition: Partition) -> None:
        self.partitions[(partition.topic, partition.index)] = partition

    def remove(self, topic: str, partition: int) -> Partition | None:
        removed = self.partitions.pop((topic, partition), None)
        if removed is not None:
            self._resign(removed)
            if self._core.cluster is not None:
                self._core.cluster.fetchers.unfollow(topic, partition)
            removed.wake_waiters()
        return removed

    async def append(self, partition: Partition, batch: bytearray, header: BatchHeader,
                     now_ms: int, *, required_acks: int = 1, timeout_ms: int = 30_000) -> AppendResult:
        """Append one validated batch as leader and wait for its acknowledgement (see
        `append_local`)."""
        result, acked = await self.append_local(partition, batch, header, now_ms,
                                                required_acks=required_acks, timeout_ms=timeout_ms)
        return result if acked is None else await acked

    async def append_local(self, partition: Partition, batch: bytearray, header: BatchHeader,
                           now_ms: int, *, required_acks: int = 1, timeout_ms: int = 30_000
                           ) -> tuple[AppendResult, asyncio.Future | None]:
        """Append one validated batch to the local log as leader, durable per the flush policy.

        Returns (result, None) when the answer is known, or (result, future) for an acks=all
        append in cluster mode: the future gives the final AppendResult once the high watermark
        passes the batch (REQUEST_TIMED_OUT after `timeout_ms`, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        NOT_LEADER_OR_FOLLOWER when leadership moves meanwhile). acks=all is refused with
        NOT_ENOUGH_REPLICAS before the append when the ISR is below min.insync.replicas. A
        produce request appends all its partitions, then awaits their futures together."""
        log_ = partition.log
        if not partition.is_leader:
            return _failed(ErrorCode.not_leader_or_follower, log_), None
        leader = partition.leader_state
        if leader is not None:
            refused = leader.check_append(required_acks)
            if refused is not ErrorCode.none:
                return _failed(refused, log_), None
        result = await self._appended(partition, lambda: log_.append(
            batch, header, leader_epoch=partition.leader_epoch, now_ms=now_ms))
        if leader is None or required_acks != -1 or result.error is not ErrorCode.none:
            return result, None
        if partition.leader_state is not leader or leader.resigned:
            return _failed(ErrorCode.not_leader_or_follower, log_), None
        # Waits for the high watermark to reach the log end offset as it is now: at least this
        # batch (a duplicate's earlier copy included).
        acked = asyncio.get_running_loop().create_future()
        self._process(partition, leader.on_local_append(log_.log_end_offset, clock_now_ms(),
                                                        request_id=acked, timeout_ms=timeout_ms))
        loop = asyncio.get_running_loop()
        answer = loop.create_future()

        def settle(done: asyncio.Future) -> None:
            if answer.done():
                return
            error = done.result()
            answer.set_result(result if error is ErrorCode.none else _failed(error, log_))

        acked.add_done_callback(settle)
        return result, answer

    async def write_txn_marker(self, partition: Partition, producer_id: int, producer_epoch: int,
                               commit: bool, coordinator_epoch: int, now_ms: int) -> AppendResult:
        """Write one end-transaction marker (COMMIT or ABORT) as leader: Kafka's WriteTxnMarkers
        path for one partition. Moves the high watermark (and with it the last stable offset)
        and wakes fetchers as `append` does."""
        log = partition.log
        return await self._appended(partition, lambda: log.append_control_marker(
            producer_id, producer_epoch, commit, coordinator_epoch, partition.leader_epoch, now_ms))

    async def _appended(self, partition: Partition, write) -> AppendResult:
        """Run `write()` (one append to the partition's log), then advance the high watermark,
        wake fetchers and flush as the policy asks."""
        log = partition.log
        try:
            result = write()
        except OSError as exc:
            return self._core.storage_error(partition, exc)
        if result.error is not ErrorCode.none:
            return result
        # Single node: every replica in the ISR (just us) has the batch once it is in the log.
        # Advanced before any await, so a cancelled request (its client hung up) cannot leave
        # appended data invisible. As in Kafka, the flush policy delays the acknowledgement,
        # not the high watermark.
        leader = partition.leader_state
        if leader is None:
            log.update_high_watermark(log.log_end_offset)
        elif not leader.resigned:
            self._process(partition, leader.on_local_append(log.log_end_offset, clock_now_ms()))
        partition.wake_waiters()
        if result.needs_flush:
            try:
                await self._core.run_blocking(log.flush)
            except OSError as exc:
                return self._core.storage_error(partition, exc)
        return result

    async def wait_for_data(self, partitions: list[Partition], timeout_s: float) -> None:
        """Return when any of `partitions` gets new data or `timeout_s` passes."""
        if timeout_s <= 0 or not partitions:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        for partition in partitions:
            partition.waiters.append(waiter)
        handle = loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            for partition in partitions:
                # Remove our waiter so idle partitions do not accumulate finished futures.
                try:
                    partition.waiters.remove(waiter)
                except ValueError:
                    pass



    # -- cluster mode: leading and following ----------------------------------------------------
    def apply_partition_state(self, partition: Partition, state: Any, min_insync_replicas: int = 1) -> None:
        """Follow the image's state of a partition this broker replicates (a PartitionImage):
        become or stay leader (a new PartitionLeader per leader epoch), or follow its leader."""
        from odradek.replication.partition_state import PartitionLeader

        cluster = self._core.cluster
        me = partition.broker_id
        now = clock_now_ms()
        leader = partition.leader_state
        if state.leader == me:
            if leader is not None and leader.leader_epoch == state.leader_epoch:
                leader.min_insync_replicas = min_insync_replicas
                self._process(partition, leader.on_partition_change(state, now))
                return
            cluster.fetchers.unfollow(partition.topic, partition.index)
            self._resign(partition)
            log_ = partition.log
            # Kafka's makeLeader: the new epoch starts at the log end offset.
            log_.leader_epoch_cache.assign(state.leader_epoch, log_.log_end_offset)
            partition.leader_state = PartitionLeader(
                broker_id=me, topic_id=partition.topic_id, partition=state,
                log_end_offset=log_.log_end_offset,
                high_watermark=min(log_.high_watermark, log_.log_end_offset),
                min_insync_replicas=min_insync_replicas,
                end_offset_for_epoch=lambda epoch, _end: log_.end_offset_for_epoch(epoch),
                now_ms=now, replica_lag_time_max_ms=self._core.config.replica_lag_time_max_ms)
            partition.leader_id, partition.leader_epoch = me, state.leader_epoch
            self._led.add(partition)
            self._arm_ticker()
            log.info("%s-%d: leader in epoch %d, ISR %s", partition.topic, partition.index,
                     state.leader_epoch, list(state.isr))
            self._process(partition, partition.leader_state.on_local_append(log_.log_end_offset, now))
            return
        changed = (partition.leader_id, partition.leader_epoch) != (state.leader, state.leader_epoch)
        self._resign(partition)
        partition.leader_id, partition.leader_epoch = state.leader, state.leader_epoch
        if state.leader < 0:
            cluster.fetchers.unfollow(partition.topic, partition.index)
        elif changed:
            cluster.fetchers.follow(partition, state.leader, state.leader_epoch)
        partition.wake_waiters()

    def _resign(self, partition: Partition) -> None:
        leader, partition.leader_state = partition.leader_state, None
        self._led.discard(partition)
        if leader is not None and not leader.resigned:
            self._complete(leader.resign().completions)

    def on_follower_fetch(self, partition: Partition, replica_id: int, fetch_offset: int,
                          last_fetched_epoch: int, current_leader_epoch: int) -> Any:
        """The leader side of a replica's Fetch: a FollowerFetchResult (error, high watermark,
        diverging epoch); NOT_LEADER_OR_FOLLOWER when this broker does not lead it."""
        from odradek.replication.partition_state import FollowerFetchResult

        leader = partition.leader_state
        if leader is None:
            return FollowerFetchResult(ErrorCode.not_leader_or_follower, partition.log.high_watermark)
        result, outputs = leader.on_follower_fetch(replica_id, fetch_offset, last_fetched_epoch,
                                                   current_leader_epoch, clock_now_ms())
        self._process(partition, outputs)
        return result

    def _process(self, partition: Partition, outputs: Any) -> None:
        """Do what a PartitionLeader's outputs say."""
        leader = partition.leader_state
        if outputs.high_watermark_changed and leader is not None:
            partition.log.update_high_watermark(leader.high_watermark)
            partition.wake_waiters()
        self._complete(outputs.completions)
        if outputs.alter_partition is not None and leader is not None:
            self._spawn(self._alter_partition(partition, leader, outputs.alter_partition))

    @staticmethod
    def _complete(completions: list) -> None:
        for completion in completions:
            future = completion.request_id
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_result(completion.error)

    async def _alter_partition(self, partition: Partition, leader: Any, request: Any) -> None:
        """Send one ISR proposal to the controller; feed its answer back (lost answers are
        re-sent by the leader's tick)."""
        result = await self._core.cluster.alter_partition(request)
        if result is None or partition.leader_state is not leader or leader.resigned:
            return
        self._process(partition, leader.on_alter_partition_result(request, result, clock_now_ms()))
        if result.error is not ErrorCode.none:
            log.info("%s-%d: AlterPartition %s refused: %s", partition.topic, partition.index,
                     list(request.new_isr), result.error.name)

    def _arm_ticker(self) -> None:
        if self._ticker is None and self._led:
            self._ticker = asyncio.get_running_loop().call_later(LEADER_TICK_S, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        now = clock_now_ms()
        for partition in list(self._led):
            leader = partition.leader_state
            if leader is not None and not leader.resigned:
                self._process(partition, leader.tick(now))
        self._arm_ticker()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("replication task failed", exc_info=task.exception())

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for partition in list(self._led):
            self._resign(partition)
        for task in list(self._tasks):
            task.cancel()


def _failed(error: ErrorCode, log_: Log) -> AppendResult:
    return AppendResult(error, -1, -1, -1, log_.log_start_offset, None, False)


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
