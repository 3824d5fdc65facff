"""ClusterMetadata: what a broker in cluster mode has that a single node does not.

In cluster mode (`metadata.quorum=etcd://...`) the metadata image comes from the etcd quorum
(`metadata/etcd_store.py`) instead of the embedded log. This object holds, for the BrokerCore:

* `store`: the EtcdMetadataStore (registration under a lease, controller election, the image);
* `controller`: the ClusterController while this broker holds the controller key, else None
  (started and stopped from the store's controller listener);
* `inter_broker`: pooled connections to the other brokers (replica fetches, AlterPartition,
  forwarded admin requests, producer id blocks, transaction markers);
* `fetchers`: the replica fetchers of the partitions this broker follows.

The image listener makes the core follow every published image (`core.on_image_published`):
host the partitions this broker replicates, lead or follow each as the image says.
Owned by the BrokerCore; everything runs on its event loop.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from odradek.protocol.apis import make, request_module
from odradek.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore

log = logging.getLogger(__name__)

ALTER_PARTITION_KEY = 56
ALLOCATE_PRODUCER_IDS_KEY = 67
CREATE_TOPICS_KEY = 19
CREATE_TOPICS_VERSION = 7
ALTER_PARTITION_VERSION = 2
INTER_BROKER_TIMEOUT_S = 10.0


class NotControllerError(Exception):
    """A metadata change was asked of a broker that is not the controller."""

    error = ErrorCode.not_controller


class ClusterMetadata:
    """The cluster-mode services of one broker (see the module docstring).

    Invariants: `controller` is not None only while `store.is_controller` was last announced
    True; the store's listeners are registered once, at `open`.
    """

    def __init__(self, core: BrokerCore, store: Any) -> None:
        from odradek.broker.inter_broker import InterBrokerClients
        from odradek.broker.replica_fetcher import ReplicaFetcherManager

        self._core = core
        self.store = store
        self.controller: Any = None
        self.inter_broker = InterBrokerClients(core)
        self.fetchers = ReplicaFetcherManager(core)

    @classmethod
    async def open(cls, core: BrokerCore, endpoints: dict[str, tuple[str, int]]) -> ClusterMetadata:
        """Join the quorum named by `metadata.quorum`, registering this broker's advertised
        `endpoints` (listener name -> (host, port))."""
        from odradek.metadata.etcd_layout import BrokerEndpoint
        from odradek.metadata.etcd_store import EtcdMetadataStore

        config = core.config
        store = await EtcdMetadataStore.open(
            config.metadata_quorum,
            config.node_id,
            listeners=tuple(BrokerEndpoint(name, host, port) for name, (host, port) in endpoints.items()),
            rack=config.broker_rack,
            lease_ttl_s=max(1, math.ceil(config.broker_session_timeout_ms / 1000)),
        )
        cluster = cls(core, store)
        store.listeners.append(lambda old, new, changes: core.on_image_published())
        store.controller_listeners.append(cluster._on_controller_change)
        if store.is_controller:
            cluster._on_controller_change(True)
        return cluster

    @property
    def is_controller(self) -> bool:
        return self.store.is_controller

    @property
    def controller_id(self) -> int | None:
        return self.store.controller_id

    def live_broker(self, node_id: int) -> Any:
        return self.store.live_brokers.get(node_id)

    def _on_controller_change(self, is_controller: bool) -> None:
        if is_controller and self.controller is None:
            from odradek.broker.cluster_controller import ClusterController

            log.info("broker %d is the controller (epoch %d)", self._core.config.node_id,
                     self.store.controller_epoch)
            self.controller = ClusterController(self.store, self._core.config)
            self.controller.start()
        elif not is_controller and self.controller is not None:
            log.info("broker %d is no longer the controller", self._core.config.node_id)
            controller, self.controller = self.controller, None
            controller.stop()  # its task ends at its next await; nothing more is appended


    async def alter_partition(self, request: Any) -> Any:
        """Send one ISR proposal (election.AlterPartitionRequest) to the controller: its
        AlterPartitionResult, or None when no controller could be reached (the leader's tick
        re-sends)."""
        from odradek.metadata.election import AlterPartitionResult
        if self.controller is not None:
            return (await self.controller.alter_partition([request]))[0]
        controller_id = self.controller_id
        if controller_id is None:
            return None
        m = request_module(ALTER_PARTITION_KEY, ALTER_PARTITION_VERSION)
        kio_request = make(
            m.AlterPartitionRequest, broker_id=request.broker_id, broker_epoch=-1,
            topics=(make(m.TopicData, topic_id=request.topic_id, partitions=(make(
                m.PartitionData, partition_index=request.partition, leader_epoch=request.leader_epoch,
                new_isr=tuple(request.new_isr), leader_recovery_state=0,
                partition_epoch=request.partition_epoch),)),))
        try:
            response = await self.inter_broker.request(controller_id, ALTER_PARTITION_KEY,
                                                       ALTER_PARTITION_VERSION, kio_request,
                                                       INTER_BROKER_TIMEOUT_S)
        except Exception as exc:  # unreachable, timed out: the tick re-sends
            log.info("AlterPartition to controller %s failed: %s", controller_id, exc)
            return None
        if response.error_code is not ErrorCode.none:
            return AlterPartitionResult(response.error_code)
        for topic in response.topics:
            for p in topic.partitions:
                return AlterPartitionResult(p.error_code, p.leader_id, p.leader_epoch,
                                            tuple(p.isr), p.partition_epoch)
        return None

    async def controlled_shutdown(self) -> int:
        """Ask for this broker's leaderships to move away: at once when it is the controller
        (returns how many remain), else through its registration (returns -1: the caller
        watches the image)."""
        node_id = self._core.config.node_id
        if self.controller is not None and self.controller.active:
            return await self.controller.controlled_shutdown(node_id)
        if not self.store.registration.in_controlled_shutdown:
            await self.store.request_controlled_shutdown()
        return -1

    async def allocate_producer_ids(self) -> tuple[int, int]:
        """A new block of producer ids for this broker from the controller: (start, length)."""
        from odradek.broker.core import PRODUCER_ID_BLOCK_SIZE

        node_id = self._core.config.node_id
        if self.controller is not None and self.controller.active:
            return await self._core.allocate_producer_id_block(node_id), PRODUCER_ID_BLOCK_SIZE
        controller_id = self.controller_id
        if controller_id is None:
            raise NotControllerError("no controller to allocate producer ids")
        m = request_module(ALLOCATE_PRODUCER_IDS_KEY, 0)
        response = await self.inter_broker.request(
            controller_id, ALLOCATE_PRODUCER_IDS_KEY, 0,
            m.AllocateProducerIdsRequest(broker_id=node_id, broker_epoch=-1), INTER_BROKER_TIMEOUT_S)
        if response.error_code is not ErrorCode.none:
            raise NotControllerError(f"AllocateProducerIds: {response.error_code.name}")
        return response.producer_id_start, response.producer_id_len

    async def create_topic_on_controller(self, topic: Any, allow_internal: bool) -> ErrorCode:
        """Auto-creation on a broker that is not the controller: a CreateTopics request to the
        controller for one CreatableTopic, then wait (bounded) until this broker's image has
        the topic. TOPIC_ALREADY_EXISTS counts as done."""
        from datetime import timedelta

        m = request_module(CREATE_TOPICS_KEY, CREATE_TOPICS_VERSION)
        request = m.CreateTopicsRequest(
            topics=(m.CreatableTopic(
                name=topic.name, num_partitions=topic.num_partitions,
                replication_factor=topic.replication_factor, assignments=(),
                configs=tuple(m.CreatableTopicConfig(name=k, value=v)
                              for k, v in sorted(topic.configs.items()))),),
            timeout=timedelta(seconds=INTER_BROKER_TIMEOUT_S), validate_only=False)
        response = await self.forward(CREATE_TOPICS_KEY, CREATE_TOPICS_VERSION, request)
        error = response.topics[0].error_code
        if error not in (ErrorCode.none, ErrorCode.topic_already_exists):
            return error
        try:
            await self.store.wait_until(lambda: topic.name in self.store.image.topics_by_name,
                                        INTER_BROKER_TIMEOUT_S)
        except TimeoutError:
            return ErrorCode.request_timed_out
        return ErrorCode.none

    async def forward(self, api_key: int, api_version: int, request: Any) -> Any:
        """Send a client's metadata-changing request on to the controller and return its
        response (Kafka's forwarding, without the envelope)."""
        controller_id = self.controller_id
        if controller_id is None:
            raise NotControllerError("no controller elected")
        return await self.inter_broker.request(controller_id, api_key, api_version, request,
                                               INTER_BROKER_TIMEOUT_S)

    async def decide_and_append(self, decide: Any) -> Any:
        """A controller decision (`decide(image) -> (records, result)`), appended in the
        controller's order; NOT_CONTROLLER on any other broker."""
        controller = self.controller
        if controller is None or not controller.active:
            raise NotControllerError(f"broker {self._core.config.node_id} is not the controller")
        return await controller.decide_and_append(decide)

    async def close(self) -> None:
        if self.controller is not None:
            controller, self.controller = self.controller, None
            await controller.close()
        await self.fetchers.close()
        await self.inter_broker.close()
        await self.store.close()
