"""CoordinatorRuntime: what the group and the transaction coordinators share on the event loop.

Both coordinator cores (`coordinator/group_coordinator.py`, `coordinator/txn_coordinator.py`) are
synchronous and deterministic, keep their state as records in an internal compacted topic, and
follow one contract: every call returns a result with `responses` (token, response) and
`appends` (PendingAppend); each append must reach the log and be reported with
`on_append_complete`; timers are data (`next_deadline_ms`, `tick`); a partition is loaded with
`begin_loading` / replay of its records / `finish_loading`. This class gives a core the event
loop, the clock and the log:

* `call(method, *args)`: an asyncio Future is the request's token; the core is called with the
  wall clock `now_ms`, and the future resolves when the core answers that token - at once, or
  later (a parked JoinGroup, an answer released after its append);
* every PendingAppend becomes ONE record batch appended to its partition of `topic`, in order per
  partition (one drain task per partition works through a FIFO), then `on_append_complete`;
* one `loop.call_later` handle is (re)armed for `next_deadline_ms()` after every call;
* loading: every partition of `topic` this broker leads is read from its log start offset to its log end
  offset and replayed batch by batch (`_replay_batch`, the subclass's); at start this runs as a
  task, partition by partition, so requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS. A
  partition that appears later (the topic is created by the first FindCoordinator) is empty and
  is loaded at once.

Subclasses (GroupService, TxnService) name the topic and supply the core, the batch of an
append, the replay of a batch, and what finishing and unloading a partition return.
Owner: the BrokerCore; every method runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from odradek.coordinator.group_coordinator import PendingAppend
from odradek.protocol import records
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore

log = logging.getLogger(__name__)

LOAD_READ_BYTES = 1024 * 1024  # bytes read from a coordinator log per step while loading
LOAD_YIELD_EVERY_READS = 16  # a loading task gives the loop a turn after this many reads


class CoordinatorRuntime:
    """Runs one coordinator core on the event loop against the partitions of `topic`.

    Holds: `coordinator` (the core), the armed timer handle and its deadline, a FIFO of
    PendingAppends per partition with at most one drain task each, and the loading task.
    Invariants: appends of one partition reach the log in the order the core returned them, and
    each gets exactly one `on_append_complete`; at most one timer handle is armed; a token
    (Future) is resolved at most once.
    """

    topic: str = ""

    def __init__(self, core: BrokerCore) -> None:
        self._core = core
        self.coordinator = self._new_coordinator(None)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline_ms: int | None = None
        self._queues: dict[int, deque[PendingAppend]] = {}
        self._draining: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._opened = False

    # -- what a subclass supplies -----------------------------------------------------------
    def _new_coordinator(self, num_partitions: int | None) -> Any:
        """A new core for a topic of `num_partitions` partitions (None: the configured count)."""
        raise NotImplementedError

    def _configured_partitions(self) -> int:
        """The partition count the current core maps its keys with."""
        raise NotImplementedError

    def _replay_batch(self, p: int, header: Any, batch: memoryview, from_offset: int,
                      load_ms: int) -> None:
        """Apply one batch (control batches included) of partition p while it loads."""
        raise NotImplementedError

    def _batch_for(self, append: PendingAppend, timestamp_ms: int) -> bytes:
        """The record batch that carries `append`."""
        return records.build_batch(
            [(key, value, [], timestamp_ms) for key, value in append.records]
        )

    def _begin_loading(self, p: int) -> None:
        self.coordinator.begin_loading(p)

    def _finish_loading(self, p: int) -> None:
        self._process_result(self.coordinator.finish_loading(p, now_ms()))

    def _unload(self, p: int) -> None:
        self._process_result(self.coordinator.unload(p, now_ms()))

    def _process_extra(self, result: Any) -> None:
        """Whatever else a result asks for (the transaction coordinator's markers)."""

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Take the partition count of an existing topic (it wins over the config, as in
        Kafka) and load its partitions: as a task when the loop runs."""
        self._opened = True
        self._adopt_partition_count()
        partitions = self._new_partitions()
        for p in partitions:
            self._begin_loading(p)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for p in partitions:
                self._load(p)
            return
        if partitions:
            self._spawn(loop, self._load_all(partitions))
        self.start_timers()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()

    def sync_partitions(self) -> None:
        """Follow the hosted partitions of `topic`: load new ones (empty when the topic was just
        created), unload those no longer hosted. A no-op before `open`."""
        if not self._opened or self._closed:
            return
        hosted = self._hosted_partitions()
        known = self.coordinator.owned | self.coordinator.loading
        for p in sorted(known - hosted):
            self._unload(p)
        new = sorted(hosted - known)
        if not new:
            return
        if not known:
            self._adopt_partition_count()
        for p in new:
            self._begin_loading(p)
            self._load(p)
        self._after_call()

    def _adopt_partition_count(self) -> None:
        """Keys map to partitions by the topic's real partition count (Kafka reads it from the
        metadata); only while no partition is owned, so no key is ever re-mapped."""
        topic = self._core.image.topics_by_name.get(self.topic)
        if topic is None or len(topic.partitions) == self._configured_partitions():
            return
        assert not self.coordinator.owned and not self.coordinator.loading
        self.coordinator = self._new_coordinator(len(topic.partitions))

    def _hosted_partitions(self) -> set[int]:
        """The partitions of `topic` this broker leads (all it hosts, on a single node)."""
        return {
            index for (topic, index), partition in self._core.replica_manager.partitions.items()
            if topic == self.topic and partition.is_leader
        }

    def _new_partitions(self) -> list[int]:
        known = self.coordinator.owned | self.coordinator.loading
        return sorted(self._hosted_partitions() - known)

    # -- loading -----------------------------------------------------------------------------
    async def _load_all(self, partitions: list[int]) -> None:
        started_ms = now_ms()
        for p in partitions:
            if p not in self.coordinator.loading:
                continue  # unloaded meanwhile
            try:
                await self._load_async(p)
            except asyncio.CancelledError:
                raise
            except Exception:  # stays loading: its keys get COORDINATOR_LOAD_IN_PROGRESS
                log.exception("loading %s-%d failed", self.topic, p)
        log.info("loaded %d %s partitions in %d ms", len(partitions), self.topic,
                 now_ms() - started_ms)
        self._after_call()

    async def _load_async(self, p: int) -> None:
        for reads, _ in enumerate(self._replay_steps(p), start=1):
            if reads % LOAD_YIELD_EVERY_READS == 0:
                await asyncio.sleep(0)
                if p not in self.coordinator.loading:
                    return  # unloaded (or reloaded) while we yielded
        self._finish_loading(p)

    def _load(self, p: int) -> None:
        for _ in self._replay_steps(p):
            pass
        self._finish_loading(p)

    def _replay_steps(self, p: int) -> Iterator[None]:
        """Replay partition p's log, from its log start offset to its log end offset; yields
        after each read so the async loader can give the loop a turn (then the caller must
        finish loading with no await after the generator ends)."""
        partition = self._core.replica_manager.get(self.topic, p)
        if partition is None:
            return
        partition_log = partition.log
        offset = partition_log.log_start_offset
        load_ms = now_ms()
        # Up to the log end offset as it is at each step, not as it was at the start: markers
        # written to a loading partition meanwhile (their completion is left to the loader) are
        # replayed too. The last check and `finish_loading` run with no await between them.
        while offset < partition_log.log_end_offset:
            result = partition_log.read(offset, LOAD_READ_BYTES,
                                        max_offset=partition_log.log_end_offset,
                                        min_one_message=True)
            if (
                result.error is not ErrorCode.none
                or result.region is None
                or result.region.size_bytes == 0
            ):
                log.warning("%s-%d: stopped loading at offset %d (%s)", self.topic, p, offset,
                            result.error)
                return
            data = result.region.read()
            advanced = False
            for header in records.iter_headers(data):
                if header.next_offset <= offset:
                    continue
                advanced = True
                batch = memoryview(data)[header.position : header.position + header.size_bytes]
                try:
                    self._replay_batch(p, header, batch, offset, load_ms)
                except ValueError as exc:
                    log.warning("%s-%d: skipped malformed batch at offset %d: %s", self.topic, p,
                                header.base_offset, exc)
                offset = header.next_offset
            if not advanced:
                log.warning("%s-%d: no complete batch at offset %d; stopped loading", self.topic,
                            p, offset)
                return
            yield

    def _replay_records(self, p: int, batch: memoryview, from_offset: int, replay: Any) -> None:
        """Call `replay(record)` for every keyed record of `batch` at or above `from_offset`;
        a record the core refuses is logged and skipped."""
        for record in records.iter_records(batch):
            if record.offset < from_offset or record.key is None:
                continue
            try:
                replay(record)
            except (ValueError, KeyError, AssertionError) as exc:
                log.warning("%s-%d: skipped record at offset %d: %r", self.topic, p,
                            record.offset, exc)

    # -- requests ----------------------------------------------------------------------------
    async def call(self, method_name: str, *args: Any) -> Any:
        """Call the core's `method_name(*args, now_ms, token)` and await the answer to `token`,
        which may come from a later call or a completed append."""
        future = asyncio.get_running_loop().create_future()
        method = getattr(self.coordinator, method_name)
        self._process_result(method(*args, now_ms(), future))
        return await future

    def _process_result(self, result: Any) -> None:
        for token, response in result.responses:
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_result(response)
        if result.appends:
            loop = asyncio.get_running_loop()
            for append in result.appends:
                queue = self._queues.setdefault(append.partition, deque())
                queue.append(append)
                if append.partition not in self._draining:
                    self._draining.add(append.partition)
                    self._spawn(loop, self._drain(append.partition))
        self._process_extra(result)
        self._after_call()

    async def _drain(self, p: int) -> None:
        queue = self._queues[p]
        try:
            while queue:
                append = queue.popleft()
                try:
                    error = await self._write(append)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in the write path must still complete the append
                    log.exception("append to %s-%d failed", self.topic, p)
                    error = ErrorCode.unknown_server_error.value
                self._process_result(
                    self.coordinator.on_append_complete(append.append_id, error, now_ms())
                )
        finally:
            self._draining.discard(p)

    async def _write(self, append: PendingAppend) -> int:
        if not append.records:
            return ErrorCode.none.value
        partition = self._core.replica_manager.get(self.topic, append.partition)
        if partition is None:
            return ErrorCode.not_leader_or_follower.value
        timestamp_ms = now_ms()
        batch = self._batch_for(append, timestamp_ms)
        header = records.read_header(batch)
        # acks=all, as Kafka's coordinators write: answered once the ISR has it.
        result = await self._core.replica_manager.append(
            partition, bytearray(batch), header, timestamp_ms, required_acks=-1
        )
        return result.error.value

    # -- timers ------------------------------------------------------------------------------
    def _after_call(self) -> None:
        if self._closed:
            return
        deadline_ms = self.coordinator.next_deadline_ms()
        if deadline_ms == self._timer_deadline_ms and (
            self._timer is not None or deadline_ms is None
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline_ms = deadline_ms
        if deadline_ms is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not started yet: `open` arms the timer from the loop
        delay_s = max(0, deadline_ms - now_ms()) / 1000
        self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline_ms = None
        if self._closed:
            return
        self._process_result(self.coordinator.tick(now_ms()))

    def start_timers(self) -> None:
        """Arm the first timer (`tick` once at start schedules the periodic checks)."""
        self._process_result(self.coordinator.tick(now_ms()))

    # -- plumbing ----------------------------------------------------------------------------
    def _spawn(self, loop: asyncio.AbstractEventLoop, coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s coordinator task failed", self.topic, exc_info=task.exception())
