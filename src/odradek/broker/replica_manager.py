"""The partitions this broker hosts, their logs, and the waits for new data (fetch purgatory).

`ReplicaManager` owns one `Partition` per hosted topic-partition. The produce path appends a
validated batch to the partition's log and advances the high watermark (on a single node, to
the log end offset at once); then it wakes every Fetch long-polling on that partition. The fetch
path waits on a partition with a cheap per-partition future, never by polling.

Owned by the BrokerCore; every method runs on the event loop, except `Log.flush`, which goes to
the broker's blocking-I/O thread pool.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import BatchHeader
from odradek.storage.log import AppendResult, Log


@dataclass(eq=False)
class Partition:
    """One hosted partition: its log, the leader epoch this broker leads it in, and data waiters."""

    topic: str
    index: int
    topic_id: uuid.UUID
    log: Log
    leader_epoch: int = 0
    waiters: list[asyncio.Future] = field(default_factory=list)

    def wake_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class ReplicaManager:
    def __init__(self, core) -> None:
        self._core = core
        self.partitions: dict[tuple[str, int], Partition] = {}

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
        if partition is None:
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
            removed.wake_waiters()
        return removed

    async def append(self, partition: Partition, batch: bytearray, header: BatchHeader,
                     now_ms: int) -> AppendResult:
        """Append one validated batch as leader; durable per the flush policy before returning."""
        log = partition.log
        return await self._appended(partition, lambda: log.append(
            batch, header, leader_epoch=partition.leader_epoch, now_ms=now_ms))

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
        log.update_high_watermark(log.log_end_offset)
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


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
