"""ClusterController: the controller's duties in cluster mode, on the broker holding the etcd
controller key (issue 7).

Every decision is one of `metadata/election.py`'s pure functions of the image; this module only
chooses when to decide, over which brokers, and writes the records with `store.append` (etcd
compare-and-swap on this broker's controller term, so a deposed controller never writes).

Broker liveness and incarnations. The brokers the controller trusts are the *current* ones:

    store.live_brokers[b] exists   image.brokers[b].incarnation_id == its incarnation   ->  state of b
    no                             (any)                                                    lost
    yes                            no (absent, or another incarnation)                      new incarnation
    yes                            yes                                                      current

and a reconcile pass (at start, on every broker listener event, and every
RECONCILE_INTERVAL_S as a safety net) moves every broker to `current` or forgets it, in a few
appends, each decided on the image the previous one produced:

    1. losses         for every broker that is lost or in a new incarnation, and every id a
                      partition names as leader or ISR member that is not current:
                      `elect_on_broker_loss` (leadership to another ISR member, out of ISRs),
                      then UnregisterBrokerRecord if the image has it registered. A restarted
                      broker is thus first the loss of its old incarnation (the replication
                      simulation's lesson): whatever the old process had is not trusted in sync.
    2. registrations  RegisterBrokerRecord (v1: incarnation id, rack, first endpoint, broker
                      epoch = the log sequence of this entry) for every live broker whose image
                      registration is absent, of another incarnation, or has other endpoints.
                      `image.brokers` is therefore exactly the registered live brokers, which is
                      what `controller.create_topics` places replicas on.
    3. elections      `elect_offline_leaders` over the eligible brokers, then
                      `election.controlled_shutdown` for every broker shutting down.
    4. reassignments  `reassignment.complete_reassignments` over the eligible brokers: every
                      partition whose adding replicas are all in the ISR gets its target
                      replicas (normally done already in the AlterPartition append that added
                      the last one; this catches the rest, e.g. after a controller failover).
    5. balance        every `leader.imbalance.check.interval.seconds` (auto.leader.rebalance.enable,
                      on by default as in Kafka): a preferred election for each partition whose
                      first replica is eligible and in the ISR but does not lead, so that
                      leadership returns to a broker that came back (`_decide_balance`).

Reassignments (AlterPartitionReassignments / ListPartitionReassignments): decided by
`metadata/reassignment.py` on the image; the new replicas start following when their brokers see
the merged replica set, the leader adds them to the ISR as they catch up (AlterPartition), and the
append that adds the last one also completes the reassignment (replicas = target, ISR within it,
leadership moved into it when needed), as Kafka's controller does in one PartitionChangeRecord;
here it is a second record in the same etcd entry, so the leader's AlterPartition answer
describes the ISR change and the completion reaches it through the image.

Eligible brokers (elections, ISR additions) are the current ones minus those in controlled
shutdown. Unclean election follows `unclean.leader.election.enable` (off by default); ElectLeaders
UNCLEAN asks for it per request.

Writes. All appends go through one lock, one at a time, each decided on the image of that moment
(the store's image only changes under this lock while this broker is controller). An append that
fails transiently (etcd unreachable: REQUEST_TIMED_OUT, the entry may have been written; or the
image lagging the log: NOT_CONTROLLER without `deposed`) is decided again on the newer image after
a backoff, for at most APPEND_RETRY_TIMEOUT_S; one refused because another controller holds the
key (`deposed`), or issued after `stop()`, raises MetadataQuorumError NOT_CONTROLLER at once.
Records are appended in entries of at most MAX_RECORDS_PER_APPEND (etcd's value bound).

Controlled shutdown. Kafka 4 no longer serves ControlledShutdown (API 7, ZooKeeper-era); a KRaft
broker asks through BrokerHeartbeat. Here the shutting-down broker either is the controller and
calls `controlled_shutdown(own id)`, or sets `in_controlled_shutdown` in its etcd registration
(`LiveBroker`), which the next reconcile pass reads (see `registration_wants_shutdown`); it then
waits until its image shows it leads nothing (or a bound) and stops.

Owned by the BrokerCore: created once, `start()` when the store says this broker became
controller, `stop()` when it stopped being one; every method runs on the core's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from odradek.metadata import election, reassignment
from odradek.metadata.election import AlterPartitionRequest, AlterPartitionResult, ElectionResult
from odradek.metadata.etcd_store import MetadataQuorumError
from odradek.metadata.image import MetadataImage
from odradek.metadata.reassignment import (
    OngoingReassignment,
    ReassignmentRequest,
    ReassignmentResult,
)
from odradek.metadata.records import (
    NO_LEADER,
    MetadataRecord,
    RegisterBrokerRecord,
    UnregisterBrokerRecord,
)
from odradek.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from odradek.config import BrokerConfig
    from odradek.metadata.etcd_layout import LiveBroker
    from odradek.metadata.etcd_store import EtcdMetadataStore

log = logging.getLogger(__name__)

APPEND_RETRY_TIMEOUT_S = 10.0  # give up an append that keeps failing transiently after this long
RETRY_BACKOFF_MIN_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0
RECONCILE_INTERVAL_S = 10.0  # a pass at least this often, even without broker events
MAX_BALANCE_ELECTIONS = 1000  # preferred elections per automatic rebalance pass (KRaft's bound)
MAX_RECORDS_PER_APPEND = 1000  # ~150 bytes per PartitionChangeRecord: far below etcd's value bound
MAX_ALTER_PARTITION_ITEMS = 100_000  # partitions in one AlterPartition / ElectLeaders request

# ElectLeaders election_type (Kafka's ElectionType).
ELECTION_PREFERRED = 0
ELECTION_UNCLEAN = 1

T = TypeVar("T")
Decision = tuple[list[MetadataRecord], T]


def registration_wants_shutdown(broker: LiveBroker) -> bool:
    """Whether a registration asks for controlled shutdown (`LiveBroker.in_controlled_shutdown`,
    set by `EtcdMetadataStore.request_controlled_shutdown`)."""
    return broker.in_controlled_shutdown


def _first_endpoint(broker: LiveBroker) -> tuple[str, int]:
    if broker.endpoints:
        return broker.endpoints[0].host, broker.endpoints[0].port
    return "", -1  # registered before its listeners were bound; re-registered when they are


def _referenced_brokers(image: MetadataImage) -> set[int]:
    """Every broker id a partition names as leader or ISR member, plus the registered ones."""
    ids = set(image.brokers)
    for topic in image.topics_by_name.values():
        for p in topic.partitions.values():
            ids.update(p.isr)
            if p.leader != NO_LEADER:
                ids.add(p.leader)
    return ids


class ClusterController:
    """The controller's event handling and writes over an EtcdMetadataStore (see the module doc).

    Holds: the store (whose image and live brokers it reads), the broker config (unclean
    election, node id), the brokers in controlled shutdown (node id -> incarnation id that asked),
    one append lock and the reconcile task.
    Invariants: every record it writes was decided, under the append lock, on the image it is
    appended after; nothing is written after `stop()`; a broker is eligible only once the image
    holds a registration of its current incarnation.
    Owned by the BrokerCore on its event loop (module doc).
    """

    def __init__(self, store: EtcdMetadataStore, config: BrokerConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self.unclean_leader_election_enable = bool(config.unclean_leader_election_enable)
        self.auto_leader_rebalance = bool(config.auto_leader_rebalance_enable)
        self.leader_imbalance_check_interval_s = float(config.leader_imbalance_check_interval_seconds)
        self._next_balance_at = 0.0  # clock time of the next automatic rebalance (set at start)
        self.shutting_down: dict[int, str] = {}  # node id -> incarnation id in controlled shutdown
        # Brokers whose registration vanished or changed incarnation since the last losses step,
        # as the broker listener saw it: lost even if registered again by the time a pass runs.
        self._pending_losses: set[int] = set()
        self._lock = asyncio.Lock()
        self._running = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.reconcile_passes = 0  # completed passes (tests wait on it)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Started and, as far as the store can tell, still the controller."""
        return self._running and self.store.is_controller

    def start(self) -> None:
        """Begin acting as controller: a reconcile pass now, then on every broker event."""
        if self._running:
            return
        self._running = True
        self._next_balance_at = self._clock() + self.leader_imbalance_check_interval_s
        self.store.broker_listeners.append(self._on_brokers)
        self._wakeup.set()
        self._task = asyncio.get_running_loop().create_task(
            self._reconcile_loop(), name=f"cluster-controller-{self.store.node_id}")

    def stop(self) -> None:
        """Stop deciding: no append starts after this; one in flight is abandoned."""
        if not self._running:
            return
        self._running = False
        try:
            self.store.broker_listeners.remove(self._on_brokers)
        except ValueError:
            pass
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """`stop()` and wait for the reconcile task to end."""
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _on_brokers(self, old: dict[int, LiveBroker], new: dict[int, LiveBroker]) -> None:
        for b, broker in old.items():
            if b not in new or new[b].incarnation_id != broker.incarnation_id:
                self._pending_losses.add(b)
        self._wakeup.set()

    async def _reconcile_loop(self) -> None:
        while self._running:
            timeout_s = RECONCILE_INTERVAL_S
            if self.auto_leader_rebalance:
                timeout_s = max(0.0, min(timeout_s, self._next_balance_at - self._clock()))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
            except TimeoutError:
                pass
            self._wakeup.clear()
            if not self._running:
                return
            try:
                await self.reconcile()
            except MetadataQuorumError as exc:
                log.warning("controller reconcile pass not completed: %s", exc)
                if not exc.deposed and self._running:
                    await asyncio.sleep(RETRY_BACKOFF_MAX_S)
                    self._wakeup.set()

    # -- the broker sets -------------------------------------------------------------------------
    def current_brokers(self, image: MetadataImage | None = None) -> set[int]:
        """Live brokers whose current incarnation the image has registered."""
        image = self.store.image if image is None else image
        return {b for b, live in self.store.live_brokers.items()
                if (reg := image.brokers.get(b)) is not None and reg.incarnation_id == live.incarnation_id}

    def eligible_brokers(self, image: MetadataImage | None = None) -> set[int]:
        """Current brokers not in controlled shutdown: may lead and join ISRs."""
        return self.current_brokers(image) - set(self.shutting_down)

    def _refresh_shutting_down(self) -> None:
        live = self.store.live_brokers
        for b, incarnation in list(self.shutting_down.items()):
            if b not in live or live[b].incarnation_id != incarnation:
                del self.shutting_down[b]  # gone, or restarted: the request was the old process's
        for b, broker in live.items():
            if registration_wants_shutdown(broker):
                self.shutting_down[b] = broker.incarnation_id

    # -- appending -------------------------------------------------------------------------------
    def _check_active(self) -> None:
        if not self.active:
            raise MetadataQuorumError(ErrorCode.not_controller,
                                      f"broker {self.store.node_id} is not the controller", deposed=True)

    async def _decide_and_append(self, decide: Callable[[MetadataImage, int, bool], Decision[T]]) -> T:
        """Run `decide(image, next_sequence, retrying)` and append its records, under the lock,
        retrying transient failures on the newer image (module doc). Returns the result of the
        last decision that was appended in full."""
        deadline = self._clock() + APPEND_RETRY_TIMEOUT_S
        delay_s = RETRY_BACKOFF_MIN_S
        retrying = False
        async with self._lock:
            while True:
                self._check_active()
                records, result = decide(self.store.image, self.store.applied_sequence + 1, retrying)
                try:
                    for start in range(0, len(records), MAX_RECORDS_PER_APPEND):
                        self._check_active()
                        await self.store.append(records[start:start + MAX_RECORDS_PER_APPEND])
                    return result
                except MetadataQuorumError as exc:
                    if exc.deposed or exc.error_code not in (ErrorCode.request_timed_out, ErrorCode.not_controller):
                        raise
                    if self._clock() + delay_s >= deadline:
                        raise
                    log.info("controller append failed (%s); deciding again in %.2f s", exc, delay_s)
                retrying = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_BACKOFF_MAX_S)

    async def decide_and_append(self, decide: Callable[[MetadataImage], Decision[T]]) -> T:
        """Any other controller write (CreateTopics, DeleteTopics, configs...): `decide(image)`
        returns (records, result); appended under the same lock as every controller decision,
        with the same retries. Raises MetadataQuorumError NOT_CONTROLLER / REQUEST_TIMED_OUT."""
        return await self._decide_and_append(lambda image, next_sequence, retrying: decide(image))

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """One pass over broker liveness and leaderless partitions (the module doc's 3 steps)."""
        self._refresh_shutting_down()
        handled = await self._decide_and_append(self._decide_losses)
        self._pending_losses -= handled
        await self._decide_and_append(self._decide_registrations)
        await self._decide_and_append(self._decide_elections)
        await self._decide_and_append(self._decide_reassignments)
        if self.auto_leader_rebalance and self._clock() >= self._next_balance_at:
            self._next_balance_at = self._clock() + self.leader_imbalance_check_interval_s
            await self._decide_and_append(self._decide_balance)
        self.reconcile_passes += 1

    def _decide_losses(self, image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[set[int]]:
        pending = set(self._pending_losses)
        current = self.current_brokers(image) - pending
        eligible = current - set(self.shutting_down)
        scratch = image.copy()
        records: list[MetadataRecord] = []
        lost = sorted((_referenced_brokers(image) | pending) - current)
        for b in lost:
            changes = election.elect_on_broker_loss(scratch, b, eligible - {b}, self.unclean_leader_election_enable)
            if b in scratch.brokers:
                changes = [*changes, UnregisterBrokerRecord(b)]
            for record in changes:
                scratch.apply(record)
            records.extend(changes)
        if records:
            log.info("controller: brokers %s lost or restarted; %d records", lost, len(records))
        return records, pending

    def _decide_registrations(self, image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[None]:
        records: list[MetadataRecord] = []
        for b, live in sorted(self.store.live_brokers.items()):
            host, port = _first_endpoint(live)
            reg = image.brokers.get(b)
            if reg is None or reg.incarnation_id != live.incarnation_id:
                records.append(RegisterBrokerRecord(b, host, port, live.rack, live.incarnation_id, next_sequence))
            elif (reg.host, reg.port, reg.rack) != (host, port, live.rack):
                records.append(RegisterBrokerRecord(b, host, port, live.rack, live.incarnation_id, reg.broker_epoch))
        return records, None

    def _decide_elections(self, image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[None]:
        eligible = self.eligible_brokers(image)
        scratch = image.copy()
        records = list(election.elect_offline_leaders(image, eligible, self.unclean_leader_election_enable))
        for record in records:
            scratch.apply(record)
        for b in sorted(set(self.shutting_down) & self.current_brokers(image)):
            moves, _ = election.controlled_shutdown(scratch, b, eligible)
            for record in moves:
                scratch.apply(record)
            records.extend(moves)
        return records, None

    def _decide_reassignments(self, image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[None]:
        records = reassignment.complete_reassignments(image, self.eligible_brokers(image))
        if records:
            log.info("controller: completing %d partition reassignments", len(records))
        return list(records), None

    def _decide_balance(self, image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[None]:
        """auto.leader.rebalance.enable: a preferred election for each partition whose first
        replica is eligible and in the ISR but does not lead (at most MAX_BALANCE_ELECTIONS a
        pass; partitions being reassigned are left to their reassignment), as KRaft's
        maybeBalancePartitionLeaders."""
        eligible = self.eligible_brokers(image)
        targets = [(t.name, p.partition) for t in sorted(image.topics_by_name.values(), key=lambda t: t.name)
                   for p in (t.partitions[i] for i in sorted(t.partitions))
                   if p.replicas and p.leader != p.replicas[0] and p.replicas[0] in eligible
                   and p.replicas[0] in p.isr and not p.is_reassigning][:MAX_BALANCE_ELECTIONS]
        records, _ = election.elect_preferred_leaders(image, targets, eligible)
        if records:
            log.info("controller: %d partitions back to their preferred leader (auto.leader.rebalance.enable)",
                     len(records))
        return list(records), None

    # -- requests from brokers and admins --------------------------------------------------------
    async def alter_partition(self, requests: list[AlterPartitionRequest],
                              member_epochs: Sequence[Mapping[int, int] | None] | None = None
                              ) -> list[AlterPartitionResult]:
        """A leader's ISR changes (AlterPartition): each a compare-and-swap on partition_epoch
        (`election.alter_partition`), all appended in one entry; one result per request, in
        order. `member_epochs[i]` (AlterPartition v3, KIP-903) maps proposed ISR members of
        request i to the broker epoch the leader saw them fetch with; a member whose epoch
        (>= 0) is not its current registration's is INELIGIBLE_REPLICA (a restarted broker is
        not the one that caught up). Raises MetadataQuorumError NOT_CONTROLLER /
        REQUEST_TIMED_OUT when nothing could be written."""
        if len(requests) > MAX_ALTER_PARTITION_ITEMS:
            raise ValueError(f"{len(requests)} partitions in one AlterPartition exceed {MAX_ALTER_PARTITION_ITEMS}")
        assert member_epochs is None or len(member_epochs) == len(requests)

        def decide(image: MetadataImage, next_sequence: int, retrying: bool
                   ) -> Decision[list[AlterPartitionResult]]:
            eligible = self.eligible_brokers(image)
            scratch = image.copy()
            records: list[MetadataRecord] = []
            results: list[AlterPartitionResult] = []
            for i, request in enumerate(requests):
                applied = self._already_applied(image, request) if retrying else None
                if applied is not None:
                    results.append(applied)
                    continue
                epochs = member_epochs[i] if member_epochs is not None else None
                live = eligible
                if epochs:  # a member added with another incarnation's epoch is not eligible
                    live = eligible - {b for b, epoch in epochs.items() if epoch >= 0 and (
                        image.brokers.get(b) is None or image.brokers[b].broker_epoch != epoch)}
                changes, result = election.alter_partition(scratch, request, live)
                for record in changes:
                    scratch.apply(record)
                if changes:  # the ISR grew: a reassignment waiting for it completes now
                    done = reassignment.complete_reassignment(scratch, request.topic_id, request.partition, eligible)
                    if done is not None:
                        scratch.apply(done)
                        changes = [*changes, done]
                records.extend(changes)
                results.append(result)
            return records, results

        return await self._decide_and_append(decide)

    @staticmethod
    def _already_applied(image: MetadataImage, request: AlterPartitionRequest) -> AlterPartitionResult | None:
        """After an append that timed out: the request's change, if the image shows it done."""
        topic = image.topics_by_id.get(request.topic_id)
        p = topic.partitions.get(request.partition) if topic is not None else None
        if (p is not None and p.partition_epoch == request.partition_epoch + 1 and p.leader == request.broker_id
                and p.leader_epoch == request.leader_epoch and p.isr == tuple(request.new_isr)):
            return AlterPartitionResult(ErrorCode.none, p.leader, p.leader_epoch, p.isr, p.partition_epoch)
        return None

    async def controlled_shutdown(self, broker_id: int) -> int:
        """Broker `broker_id` is shutting down: move its leaderships to other eligible ISR
        members, take it out of ISRs, keep it out of elections and ISR additions until it is gone
        or restarts. Returns how many partitions it still leads (no other ISR member is live);
        the broker calls again (or just waits: every reconcile pass retries) until 0.
        Raises MetadataQuorumError NOT_CONTROLLER / REQUEST_TIMED_OUT."""
        live = self.store.live_brokers.get(broker_id)
        if live is not None:
            self.shutting_down[broker_id] = live.incarnation_id

        def decide(image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[None]:
            records, _ = election.controlled_shutdown(image, broker_id, self.eligible_brokers(image))
            return records, None

        await self._decide_and_append(decide)
        image = self.store.image
        return sum(1 for topic in image.topics_by_name.values() for p in topic.partitions.values()
                   if p.leader == broker_id)

    async def elect_leaders(self, partitions: Iterable[tuple[str, int]] | None,
                            election_type: int = ELECTION_PREFERRED) -> list[ElectionResult]:
        """ElectLeaders: PREFERRED makes each partition's first replica its leader when it is an
        eligible ISR member; UNCLEAN elects a leader for a leaderless partition, from its ISR if
        one is eligible, else from any eligible replica. `partitions` None means every
        partition, and then only partitions where an election was attempted are reported (as
        Kafka). Errors per partition: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
        ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION; INVALID_REQUEST for another
        election type. Raises MetadataQuorumError NOT_CONTROLLER / REQUEST_TIMED_OUT."""
        requested = None if partitions is None else list(partitions)
        if requested is not None and len(requested) > MAX_ALTER_PARTITION_ITEMS:
            raise ValueError(f"{len(requested)} partitions in one ElectLeaders exceed {MAX_ALTER_PARTITION_ITEMS}")
        first: list[list[ElectionResult]] = []

        def decide(image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[list[ElectionResult]]:
            targets = requested if requested is not None else [
                (t.name, index) for t in sorted(image.topics_by_name.values(), key=lambda t: t.name)
                for index in sorted(t.partitions)]
            eligible = self.eligible_brokers(image)
            if election_type == ELECTION_PREFERRED:
                records, results = election.elect_preferred_leaders(image, targets, eligible)
            elif election_type == ELECTION_UNCLEAN:
                records, results = self._decide_unclean(image, targets, eligible)
            else:
                records, results = [], [ElectionResult(name, index, ErrorCode.invalid_request,
                                                       f"Unknown election type {election_type}")
                                        for name, index in targets]
            if requested is None:
                results = [r for r in results if r.error is not ErrorCode.election_not_needed]
            if not first:
                first.append(results)  # what a retry after a partly written request reports
            return records, results

        await self._decide_and_append(decide)
        return first[0]

    async def alter_partition_reassignments(self, requests: list[ReassignmentRequest],
                                            allow_replication_factor_change: bool = True
                                            ) -> list[ReassignmentResult]:
        """AlterPartitionReassignments: start, change or cancel reassignments
        (`reassignment.alter_reassignments`, all appended in one decision); one result per
        request, in order. Completion follows as the new replicas join the ISR. Raises
        MetadataQuorumError NOT_CONTROLLER / REQUEST_TIMED_OUT when nothing could be written."""
        if len(requests) > MAX_ALTER_PARTITION_ITEMS:
            raise ValueError(f"{len(requests)} partitions in one AlterPartitionReassignments exceed "
                             f"{MAX_ALTER_PARTITION_ITEMS}")
        first: list[list[ReassignmentResult]] = []

        def decide(image: MetadataImage, next_sequence: int, retrying: bool) -> Decision[list[ReassignmentResult]]:
            records, results = reassignment.alter_reassignments(
                image, requests, self.eligible_brokers(image), allow_replication_factor_change)
            if not first:
                first.append(results)  # a retry after a written-but-unanswered append reports these
            return list(records), results

        await self._decide_and_append(decide)
        self._wakeup.set()  # a reconcile pass completes whatever is already in sync
        return first[0]

    def list_partition_reassignments(self, partitions: Iterable[tuple[str, int]] | None = None
                                     ) -> list[OngoingReassignment]:
        """ListPartitionReassignments: the ongoing reassignments in the controller's image among
        `partitions` (None: all)."""
        self._check_active()
        return reassignment.list_reassignments(self.store.image, partitions)

    @staticmethod
    def _decide_unclean(image: MetadataImage, targets: list[tuple[str, int]], eligible: set[int]
                        ) -> tuple[list[MetadataRecord], list[ElectionResult]]:
        wanted = set(targets)
        candidates = {(image.topics_by_id[r.topic_id].name, r.partition_id): r
                      for r in election.elect_offline_leaders(image, eligible, unclean=True)}
        records: list[MetadataRecord] = []
        results: list[ElectionResult] = []
        for name, index in targets:
            topic = image.topics_by_name.get(name)
            p = topic.partitions.get(index) if topic is not None else None
            if p is None:
                results.append(ElectionResult(name, index, ErrorCode.unknown_topic_or_partition,
                                              "The partition does not exist."))
            elif p.leader != NO_LEADER:
                results.append(ElectionResult(name, index, ErrorCode.election_not_needed,
                                              "Leader election not needed for topic partition."))
            elif (name, index) in candidates and (name, index) in wanted:
                records.append(candidates.pop((name, index)))
                results.append(ElectionResult(name, index, ErrorCode.none))
            else:
                results.append(ElectionResult(name, index, ErrorCode.eligible_leaders_not_available,
                                              f"Failed to elect leader for partition {name}-{index} under "
                                              "strategy UncleanLeaderElectionStrategy"))
        return records, results


__all__ = [
    "ELECTION_PREFERRED",
    "ELECTION_UNCLEAN",
    "ClusterController",
    "registration_wants_shutdown",
]
