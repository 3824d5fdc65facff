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

from odradek.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from odradek.broker.core import BrokerCore

log = logging.getLogger(__name__)

ALTER_PARTITION_KEY = 56
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
        store.broker_listeners.append(lambda old, new: core.on_brokers_changed())
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
            controller.stop()

    async def append(self, records: list) -> None:
        """Append metadata records as the controller (the image includes them on return)."""
        if not self.store.is_controller:
            raise NotControllerError(f"broker {self._core.config.node_id} is not the controller")
        await self.store.append(records)

    async def alter_partition(self, request: Any) -> Any:
        """Send one ISR proposal (election.AlterPartitionRequest) to the controller: its
        AlterPartitionResult, or None when no controller could be reached (the leader's tick
        re-sends)."""
        from odradek.metadata.election import AlterPartitionResult
        from kio.index import load_payload_module
        from kio.static.constants import EntityType

        from odradek.protocol.apis import make

        if self.controller is not None:
            return (await self.controller.alter_partition([request]))[0]
        controller_id = self.controller_id
        if controller_id is None:
            return None
        m = load_payload_module(ALTER_PARTITION_KEY, ALTER_PARTITION_VERSION, EntityType.request)
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

    async def close(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        self.fetchers.close()
        await self.inter_broker.close()
        await self.store.close()
