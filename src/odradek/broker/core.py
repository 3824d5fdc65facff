"""BrokerCore: the services one broker offers its handlers.

Holds the broker config, the metadata image (and the store it is replayed from), the hosted
partitions (ReplicaManager over the LogManager's logs), fetch sessions and connection bookkeeping.
Metadata changes go through `apply_metadata(records)`: the records are made durable in the store,
applied to the image, and the hosted partitions follow the image (a new partition gets a log, a
deleted topic's logs are removed).

Owned by the server; all methods run on the event loop. Blocking work (fsync, file deletion)
goes to a small thread pool through `run_blocking`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from odradek.broker.connections import ConnectionRegistry
from odradek.broker.fetch_session import FetchSessionCache
from odradek.broker.replica_manager import Partition, ReplicaManager
from odradek.config import BrokerConfig
from odradek.metadata import controller
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import ProducerIdsRecord
from odradek.metadata.store import MetadataStore
from odradek.protocol.errors import ErrorCode
from odradek.runtime.clock import now_ms
from odradek.storage.fs import RealFileSystem
from odradek.storage.log import AppendResult
from odradek.storage.log_manager import LogManager

log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK_SIZE = 1000  # Kafka's ProducerIdsBlock size
CONTROLLED_SHUTDOWN_TIMEOUT_S = 30.0
CONTROLLED_SHUTDOWN_RETRY_S = 0.5
KAFKA_INTERNAL_REPLICATION_FACTOR = 3  # Kafka's offsets.topic / transaction.state.log default
KAFKA_TRANSACTION_STATE_MIN_ISR = 2
METADATA_DIR = "__cluster_metadata-0"
OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})


class BrokerCore:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.fs = RealFileSystem()
        self.log_manager = LogManager(self.fs, config.log_dirs, now_ms(),
                                      max_open_files=config.odradek_log_max_open_files or None)
        self.replica_manager = ReplicaManager(self)
        self.fetch_sessions = FetchSessionCache()
        self.connections = ConnectionRegistry(config)
        self.metadata: MetadataStore | None = None
        self.endpoints: dict[str, tuple[str, int]] = {}  # listener name -> advertised (host, port)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="odradek-io")
        # Controller decisions read the image and then append; one at a time, so that two
        # requests never decide on the same image (two creations of one topic, say).
        self._controller_lock = asyncio.Lock()
        self._next_producer_id = 0
        self._producer_id_block_end = 0
        # Log lifecycle (issue #4): `config` is the static config with the dynamic broker configs
        # of the metadata image applied (refreshed by _sync_partitions); retention and the cleaner
        # run from flush_due's housekeeping tick, the cleaner in its own thread.
        self.static_config = config
        self._next_retention_check_ms = 0
        self._next_cleaning_ms = 0
        self._cleaner_task: asyncio.Future | None = None
        self._cleaner_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="odradek-cleaner")
        # Group coordinator (issue #3): classic groups and offsets on __consumer_offsets, built
        # on first use (a group request, or __consumer_offsets on disk) to keep start-up light.
        self._groups = None
        # Transaction coordinator (issue #8) on __transaction_state, built the same way.
        self._txns = None
        self._opened = False
        # Cluster mode (issue #7, `metadata.quorum`): the etcd quorum's services, joined by
        # `join_cluster` once the listeners are bound; None on a single node.
        self.cluster = None
        self._empty_image = MetadataImage()

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the data directory, recover logs, replay metadata, host every partition.

        In cluster mode only the logs: the image comes from the quorum (`join_cluster`)."""
        self.log_manager.open()
        if self.config.metadata_quorum:
            self._opened = True
            return
        data_dir = Path(self.config.log_dirs[0])
        self.metadata = MetadataStore.open(data_dir / METADATA_DIR, node_id=self.config.node_id,
                                           cluster_id=self.config.cluster_id, fs=self.fs)
        self._opened = True
        self._sync_partitions()
        block = self.image.producer_ids_next
        self._next_producer_id = self._producer_id_block_end = block

    def close(self) -> None:
        """Flush and checkpoint every log and write the clean-shutdown marker."""
        self.log_manager.stop_cleaning()  # a running cleaner pass stops at its next step
        self._cleaner_executor.shutdown(wait=True)
        if self._groups is not None:
            self._groups.close()  # group coordinator: stop its timer and tasks (issue #3)
        if self._txns is not None:
            self._txns.close()
        self.replica_manager.close()
        self.log_manager.close()
        if self.metadata is not None:
            self.metadata.close()
        self._executor.shutdown(wait=True)

    @property
    def groups(self):
        """The GroupService, created (and opened: loading __consumer_offsets) on first use."""
        if self._groups is None:
            from odradek.broker.group_service import GroupService

            self._groups = GroupService(self)
            if self._opened:
                self._groups.open()
        return self._groups

    @property
    def txns(self):
        """The TxnService, created (and opened: loading __transaction_state) on first use."""
        if self._txns is None:
            from odradek.broker.txn_service import TxnService

            self._txns = TxnService(self)
            if self._opened:
                self._txns.open()
        return self._txns

    async def join_cluster(self) -> None:
        """Cluster mode: register with the quorum under the advertised endpoints, then follow
        its image (host, lead and follow partitions as it says)."""
        from odradek.broker.cluster import ClusterMetadata

        self.cluster = await ClusterMetadata.open(self, self.endpoints)
        self.on_image_published()

    async def controlled_shutdown(self, timeout_s: float = CONTROLLED_SHUTDOWN_TIMEOUT_S) -> None:
        """Cluster mode, on SIGTERM: ask the controller to move this broker's leaderships away
        and wait (bounded) until the image shows none left, so clients move before we stop."""
        cluster = self.cluster
        if cluster is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if not any(p.is_leader for p in self.replica_manager.partitions.values()):
                return
            try:
                remaining = await cluster.controlled_shutdown()
            except Exception as exc:  # no controller reachable: retry until the deadline
                log.info("controlled shutdown: %s", exc)
                remaining = -1
            if remaining == 0:
                return
            await asyncio.sleep(CONTROLLED_SHUTDOWN_RETRY_S)
        log.warning("controlled shutdown did not move every leadership within %.0f s", timeout_s)

    async def leave_cluster(self) -> None:
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            await cluster.close()

    def on_image_published(self) -> None:
        """The quorum published a new image (cluster mode): follow it."""
        self._sync_partitions()

    @property
    def image(self):
        if self.cluster is not None:
            return self.cluster.store.image
        if self.metadata is not None:
            return self.metadata.image
        return self._empty_image

    @property
    def cluster_id(self) -> str:
        return self.image.cluster_id

    @property
    def node_id(self) -> int:
        return self.config.node_id

    def controller_id(self) -> int | None:
        """The active controller: this broker on a single node, else the quorum's."""
        if self.cluster is None:
            return self.config.node_id
        return self.cluster.controller_id

    def broker_endpoint(self, node_id: int, listener_name: str | None = None) -> tuple[str, int] | None:
        """A live broker's advertised (host, port): on the listener of that name, else its first."""
        if node_id == self.config.node_id:
            return self.advertised_endpoint(listener_name) if self.endpoints else None
        if self.cluster is None:
            return None
        broker = self.cluster.live_broker(node_id)
        if broker is None or not broker.endpoints:
            return None
        for endpoint in broker.endpoints:
            if endpoint.name == listener_name:
                return endpoint.host, endpoint.port
        return broker.endpoints[0].host, broker.endpoints[0].port

    def described_brokers(self, listener_name: str) -> list[tuple[int, str, int, str | None]]:
        """(node id, host, port, rack) of every live broker on `listener_name` (Metadata,
        DescribeCluster): this broker on a single node."""
        if self.cluster is None:
            host, port = self.advertised_endpoint(listener_name)
            return [(self.config.node_id, host, port, self.config.broker_rack)]
        described = []
        for node_id, broker in sorted(self.cluster.store.live_brokers.items()):
            endpoint = self.broker_endpoint(node_id, listener_name)
            if endpoint is not None:
                described.append((node_id, endpoint[0], endpoint[1], broker.rack))
        return described

    def live_broker_ids(self) -> list[int]:
        if self.cluster is None:
            return [self.config.node_id]
        return sorted(self.cluster.store.live_brokers)

    def advertised_endpoint(self, listener_name: str) -> tuple[str, int]:
        return self.endpoints.get(listener_name) or next(iter(self.endpoints.values()))

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def storage_error(self, partition: Partition, exc: OSError) -> AppendResult:
        log.error("storage error on %s-%d: %s", partition.topic, partition.index, exc)
        return AppendResult(error=ErrorCode.kafka_storage_error, base_offset=-1, last_offset=-1,
                            log_append_time_ms=-1, log_start_offset=-1,
                            error_message=f"storage error: {exc.strerror or exc}", needs_flush=False)

    # -- metadata ----------------------------------------------------------------------------
    async def apply_metadata(self, records: list) -> None:
        """Make `records` durable in the metadata log, apply them, and host what they describe.

        Callers run inside `_controlled`."""
        if not records:
            return
        assert self.cluster is None, "cluster mode appends through decide_and_apply"
        await self.run_blocking(self.metadata.append, records)
        self._sync_partitions()

    def _sync_partitions(self) -> None:
        image = self.image
        self.config = self.static_config.with_dynamic_configs(
            image.broker_configs.get("", {}), image.broker_configs.get(str(self.static_config.node_id), {}))
        wanted = set()
        me = self.config.node_id
        for topic in image.topics_by_name.values():
            log_config = self.config.log_config(topic.configs)
            for index, p in topic.partitions.items():
                if self.cluster is not None and me not in p.replicas:
                    continue
                wanted.add((topic.name, index))
                hosted = self.replica_manager.get(topic.name, index)
                if hosted is None:
                    try:
                        partition_log = self.log_manager.get_or_create_log(topic.name, index, log_config,
                                                                           topic.topic_id)
                    except OSError as exc:
                        # Out of file descriptors or disk: the partition stays in the image but
                        # is not hosted (clients get NOT_LEADER_OR_FOLLOWER and retry); the next
                        # metadata change tries again. One bad partition never stops the rest.
                        log.error("cannot open the log of %s-%d: %s", topic.name, index, exc)
                        continue
                    if self.cluster is None:
                        # One node: everything in the log is in the ISR (just us).
                        partition_log.update_high_watermark(partition_log.log_end_offset)
                    hosted = Partition(topic.name, index, topic.topic_id, partition_log,
                                       leader_epoch=p.leader_epoch, broker_id=me,
                                       leader_id=me if self.cluster is None else -1)
                    self.replica_manager.add(hosted)
                elif hosted.log.config != log_config:
                    hosted.log.update_config(log_config)
                if self.cluster is None:
                    hosted.leader_epoch = p.leader_epoch
                else:
                    min_isr = int(topic.configs.get("min.insync.replicas", self.config.min_insync_replicas))
                    self.replica_manager.apply_partition_state(hosted, p, min_isr)
        for key in list(self.replica_manager.partitions):
            if key not in wanted:
                self.replica_manager.remove(*key)
                self.log_manager.delete_log(*key)
        if self._groups is not None or OFFSETS_TOPIC in image.topics_by_name:
            self.groups.sync_partitions()  # the coordinator follows __consumer_offsets (issue #3)
        if self._txns is not None or TRANSACTION_STATE_TOPIC in image.topics_by_name:
            self.txns.sync_partitions()  # and the transaction coordinator __transaction_state

    async def create_topics(self, topics: list, validate_only: bool, *, allow_internal: bool = False) -> list:
        """CreateTopics through the controller; returns its per-topic results."""
        return await self.decide_and_apply(lambda image: controller.create_topics(
            image, topics, self.config, validate_only, allow_internal=allow_internal))

    async def delete_topics(self, topics: list) -> list:
        return await self.decide_and_apply(lambda image: controller.delete_topics(image, topics, self.config))

    async def create_partitions(self, topics: list, validate_only: bool) -> list:
        return await self.decide_and_apply(lambda image: controller.create_partitions(
            image, topics, self.config, validate_only))

    async def auto_create_topic(self, name: str) -> ErrorCode:
        """Create `name` with the broker's defaults (Metadata auto-creation); NONE if it exists."""
        if name in INTERNAL_TOPICS:
            request, internal = controller.internal_topic(name, self.config), True
            if self.cluster is not None:
                request = self._replicated_internal_topic(request)
        else:
            request, internal = controller.CreatableTopic(name=name), False
        if self.cluster is not None and self.cluster.controller is None:
            return await self.cluster.create_topic_on_controller(request, internal)
        results = await self.create_topics([request], validate_only=False, allow_internal=internal)
        error = results[0].error
        return ErrorCode.none if error is ErrorCode.topic_already_exists else error

    def _replicated_internal_topic(self, request: Any) -> Any:
        """Cluster mode: an internal topic whose replication factor was not configured gets
        Kafka's default, 3 (at most the live brokers), and for __transaction_state
        min.insync.replicas 2 (at most that factor), so coordinators fail over."""
        rf_key, isr_key = ("offsets.topic.replication.factor", None) if request.name == OFFSETS_TOPIC \
            else ("transaction.state.log.replication.factor", "transaction.state.log.min.isr")
        explicit = self.static_config.static_configs
        if rf_key in explicit:
            return request
        rf = max(1, min(KAFKA_INTERNAL_REPLICATION_FACTOR, len(self.live_broker_ids())))
        configs = dict(request.configs)
        if isr_key is not None and isr_key not in explicit:
            configs["min.insync.replicas"] = str(min(KAFKA_TRANSACTION_STATE_MIN_ISR, rf))
        return dataclasses.replace(request, replication_factor=rf, configs=configs)

    async def decide_and_apply(self, decide: Callable[[Any], tuple[list, Any]]) -> Any:
        """Run `decide(image) -> (records, result)` under the controller lock, apply its records,
        return its result (config changes: AlterConfigs, IncrementalAlterConfigs)."""
        if self.cluster is not None:
            # The controller decides on its own image, in its own order (the image listener
            # makes every broker, this one included, follow the records).
            return await self.cluster.decide_and_append(decide)

        async def decide_then_apply() -> Any:
            records, result = decide(self.image)
            await self.apply_metadata(records)
            return result

        return await self._controlled(decide_then_apply)

    async def _controlled(self, work: Callable[[], Any]) -> Any:
        """Run `work()` under the controller lock, to completion even if the caller is cancelled
        (a client that hangs up): a decision, its durable append and the hosting of what it
        describes happen together, and the next decision sees their image."""

        async def locked() -> Any:
            async with self._controller_lock:
                return await work()

        return await asyncio.shield(asyncio.ensure_future(locked()))

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before; blocks of ids are reserved in the metadata log."""
        return await self._controlled(self._allocate_producer_id)

    async def _allocate_producer_id(self) -> int:
        await self._reserve_producer_ids(1)
        return self.take_producer_id()

    async def ensure_producer_ids(self, count: int) -> None:
        """Make sure `take_producer_id` can hand out `count` ids without a metadata write."""
        if self._producer_id_block_end - self._next_producer_id < count:
            await self._controlled(lambda: self._reserve_producer_ids(count))

    async def _reserve_producer_ids(self, count: int) -> None:
        """Reserve a new block in the metadata log unless `count` ids are left (under the lock).
        In cluster mode the controller hands blocks out (AllocateProducerIds)."""
        if self._producer_id_block_end - self._next_producer_id >= count:
            return
        if self.cluster is not None:
            start, length = await self.cluster.allocate_producer_ids()
            self._next_producer_id, self._producer_id_block_end = start, start + length
            return
        records, start = _producer_id_block(self.image, self.config.node_id)
        await self.apply_metadata(records)
        self._next_producer_id, self._producer_id_block_end = start, start + PRODUCER_ID_BLOCK_SIZE

    async def allocate_producer_id_block(self, broker_id: int) -> int:
        """The controller's side of AllocateProducerIds: the start of a new block of
        PRODUCER_ID_BLOCK_SIZE ids for `broker_id`, recorded in the metadata log."""
        return await self.decide_and_apply(lambda image: _producer_id_block(image, broker_id))

    def take_producer_id(self) -> int:
        """The next id of the reserved block (the transaction coordinator's synchronous
        allocator; `ensure_producer_ids` runs first). Raises RuntimeError when it is used up."""
        if self._next_producer_id >= self._producer_id_block_end:
            raise RuntimeError("no producer id reserved: call ensure_producer_ids first")
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    # -- background work ---------------------------------------------------------------------
    async def flush_due(self) -> None:
        await self.run_blocking(self.log_manager.flush_logs_due, now_ms())

    async def log_lifecycle_due(self) -> None:
        """Retention every log.retention.check.interval.ms (then checkpoint the log start
        offsets); start a cleaner pass when log.cleaner.backoff.ms has passed since the last."""
        now = now_ms()
        if now >= self._next_retention_check_ms:
            self._next_retention_check_ms = now + self.config.log_retention_check_interval_ms
            if self.log_manager.cleanup_logs(now):
                await self.checkpoint()
        if self.config.log_cleaner_enable and now >= self._next_cleaning_ms and (
                self._cleaner_task is None or self._cleaner_task.done()):
            self._next_cleaning_ms = now + self.config.log_cleaner_backoff_ms
            plans = self.log_manager.plan_cleaning()  # on the loop: segment state is the loop's
            self._cleaner_task = asyncio.get_running_loop().run_in_executor(
                self._cleaner_executor, self.log_manager.clean_logs, now,
                self.config.log_cleaner_dedupe_buffer_size, plans)

    async def checkpoint(self) -> None:
        await self.run_blocking(self.log_manager.checkpoint)


def _producer_id_block(image: MetadataImage, broker_id: int) -> tuple[list, int]:
    """The decision that reserves the next block of producer ids for `broker_id`:
    (the ProducerIdsRecord to append, the block's first id). Ids below the image's
    `producer_ids_next` were handed out before, so the block starts there."""
    start = image.producer_ids_next
    return [ProducerIdsRecord(broker_id=broker_id, next_producer_id=start + PRODUCER_ID_BLOCK_SIZE)], start
