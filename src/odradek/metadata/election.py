"""The controller's partition leadership and ISR decisions, as pure functions of the image.

Cluster mode (issue 7): the controller (one broker, elected through etcd) watches broker
liveness and AlterPartition requests and decides partition leadership. Every function here reads
a `MetadataImage` and returns `PartitionChangeRecord`s to append (the store writes them with
compare-and-swap) plus per-partition results with Kafka error codes; nothing is written here.

    elect_on_broker_loss(image, broker_id, live_brokers, unclean)   a broker fenced/lost
    elect_offline_leaders(image, live_brokers, unclean)             leaderless partitions
    controlled_shutdown(image, broker_id, live_brokers)             move leadership away
    elect_preferred_leaders(image, partitions, live_brokers)        ElectLeaders (PREFERRED)
    alter_partition(image, request, live_brokers)                   AlterPartition (ISR change)

`live_brokers` is the set the controller considers eligible: registered in their current
incarnation, not fenced (session alive) and, for ISR additions and elections, not in controlled
shutdown.

Kafka's rules (ReplicationControlManager / PartitionChangeBuilder):
- a new leader comes from the ISR, in replica order (preferred first), and must be live;
  with `unclean.leader.election.enable` (off by default) any live replica may lead when no ISR
  member can, and the ISR becomes just that replica;
- the last ISR member is never removed from the ISR: a partition whose only in-sync replica is
  lost keeps it in the ISR with leader NO_LEADER (-1), and gets it back as leader when it
  returns (ELR and unclean recovery of KIP-966 are not implemented);
- applying a PartitionChangeRecord bumps partition_epoch, and a leader change bumps
  leader_epoch (image.py); an ISR change is accepted only from the current leader in the
  current leader epoch at the current partition epoch (compare-and-swap), so a stale leader's
  or a retried request never overwrites a newer state.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from odradek.metadata.image import MetadataImage, PartitionImage
from odradek.metadata.records import NO_LEADER, NO_LEADER_CHANGE, PartitionChangeRecord
from odradek.protocol.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class ElectionResult:
    """The outcome for one partition of an election request (ElectLeaders' per-partition result)."""

    topic: str
    partition: int
    error: ErrorCode
    message: str | None = None


@dataclass(frozen=True, slots=True)
class AlterPartitionRequest:
    """One partition of an AlterPartition request, as the leader sends it.

    broker_id        the requesting broker (must be the partition's leader)
    leader_epoch     the leader epoch the leader believes current
    partition_epoch  the partition epoch its ISR proposal is based on (the CAS version)
    new_isr          the proposed ISR; must contain the leader
    """

    topic_id: uuid.UUID
    partition: int
    broker_id: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AlterPartitionResult:
    """The answer to one AlterPartitionRequest: error, and on success the state now committed.

    On success `leader`, `leader_epoch`, `isr`, `partition_epoch` are the partition's state after
    the change (what the leader adopts); on error they are the controller's current state (or -1
    / () when the partition is unknown).
    """

    error: ErrorCode
    leader: int = NO_LEADER
    leader_epoch: int = -1
    isr: tuple[int, ...] = ()
    partition_epoch: int = -1


def _choose_leader(p: PartitionImage, live: Collection[int], exclude: Collection[int],
                   unclean: bool) -> tuple[int, tuple[int, ...]]:
    """(leader, isr) for a partition whose leader must change; leader NO_LEADER if none fits."""
    isr = tuple(b for b in p.isr if b not in exclude)
    for replica in p.replicas:
        if replica in isr and replica in live:
            return replica, isr
    if unclean:
        for replica in p.replicas:
            if replica in live and replica not in exclude:
                return replica, (replica,)
    # Nobody can lead: the last ISR member stays in the ISR (Kafka never empties the ISR).
    return NO_LEADER, isr if isr else p.isr[:1] if p.isr else ()


def _change(topic_id: uuid.UUID, p: PartitionImage, leader: int, isr: tuple[int, ...]
            ) -> PartitionChangeRecord | None:
    if leader == p.leader and isr == p.isr:
        return None
    return PartitionChangeRecord(p.partition, topic_id, isr=None if isr == p.isr else isr,
                                 leader=NO_LEADER_CHANGE if leader == p.leader else leader)


def _partitions(image: MetadataImage) -> Iterable[tuple[uuid.UUID, PartitionImage]]:
    for topic in sorted(image.topics_by_name.values(), key=lambda t: t.name):
        for index in sorted(topic.partitions):
            yield topic.topic_id, topic.partitions[index]


def elect_on_broker_loss(image: MetadataImage, broker_id: int, live_brokers: Collection[int],
                         unclean: bool = False) -> list[PartitionChangeRecord]:
    """A broker was lost (session expired, or a new incarnation registered): for every partition
    it leads, elect a new leader from the rest of the ISR; remove it from every other ISR (unless
    it is the last member). `live_brokers` must not contain `broker_id`."""
    assert broker_id not in live_brokers, "a lost broker cannot be live"
    records: list[PartitionChangeRecord] = []
    for topic_id, p in _partitions(image):
        if p.leader == broker_id or (p.leader == NO_LEADER and broker_id in p.isr):
            leader, isr = _choose_leader(p, live_brokers, (broker_id,), unclean)
        elif broker_id in p.isr:
            leader, isr = p.leader, tuple(b for b in p.isr if b != broker_id)
        else:
            continue
        record = _change(topic_id, p, leader, isr)
        if record is not None:
            records.append(record)
    return records


def elect_offline_leaders(image: MetadataImage, live_brokers: Collection[int],
                          unclean: bool = False) -> list[PartitionChangeRecord]:
    """Elect a leader for every partition without one whose ISR (or, unclean, replicas) has a
    live member: what the controller runs when a broker (re)registers."""
    records: list[PartitionChangeRecord] = []
    for topic_id, p in _partitions(image):
        if p.leader != NO_LEADER:
            continue
        leader, isr = _choose_leader(p, live_brokers, (), unclean)
        if leader != NO_LEADER:
            record = _change(topic_id, p, leader, isr)
            if record is not None:
                records.append(record)
    return records


def controlled_shutdown(image: MetadataImage, broker_id: int, live_brokers: Collection[int]
                        ) -> tuple[list[PartitionChangeRecord], list[tuple[str, int]]]:
    """A broker asks to shut down: move leadership of the partitions it leads to another live
    ISR member and take it out of ISRs it follows in. Returns (records, partitions it still
    leads because no other ISR member is live); the broker waits while that list is non-empty."""
    records: list[PartitionChangeRecord] = []
    remaining: list[tuple[str, int]] = []
    others = [b for b in live_brokers if b != broker_id]
    for topic_id, p in _partitions(image):
        if broker_id not in p.isr and p.leader != broker_id:
            continue
        if p.leader == broker_id:
            leader, isr = _choose_leader(p, others, (broker_id,), unclean=False)
            if leader == NO_LEADER:
                remaining.append((image.topics_by_id[topic_id].name, p.partition))
                continue
        else:
            leader = p.leader
            isr = tuple(b for b in p.isr if b != broker_id) or p.isr
        record = _change(topic_id, p, leader, isr)
        if record is not None:
            records.append(record)
    return records, remaining


def elect_preferred_leaders(image: MetadataImage, partitions: Iterable[tuple[str, int]],
                            live_brokers: Collection[int]
                            ) -> tuple[list[PartitionChangeRecord], list[ElectionResult]]:
    """ElectLeaders with election type PREFERRED: make each partition's first replica its leader
    when it is live and in the ISR. ELECTION_NOT_NEEDED when it already leads,
    PREFERRED_LEADER_NOT_AVAILABLE when it cannot, UNKNOWN_TOPIC_OR_PARTITION when absent."""
    records: list[PartitionChangeRecord] = []
    results: list[ElectionResult] = []
    for name, index in partitions:
        topic = image.topics_by_name.get(name)
        p = topic.partitions.get(index) if topic is not None else None
        if p is None:
            results.append(ElectionResult(name, index, ErrorCode.unknown_topic_or_partition,
                                          "The partition does not exist."))
            continue
        preferred = p.replicas[0] if p.replicas else NO_LEADER
        if p.leader == preferred:
            results.append(ElectionResult(name, index, ErrorCode.election_not_needed,
                                          "Leader election not needed for topic partition."))
        elif preferred not in live_brokers or preferred not in p.isr:
            results.append(ElectionResult(name, index, ErrorCode.preferred_leader_not_available,
                                          f"Failed to elect leader for partition {name}-{index} under "
                                          "strategy PreferredReplicaPartitionLeaderElectionStrategy"))
        else:
            records.append(PartitionChangeRecord(index, topic.topic_id, leader=preferred))
            results.append(ElectionResult(name, index, ErrorCode.none))
    return records, results


def alter_partition(image: MetadataImage, request: AlterPartitionRequest, live_brokers: Collection[int]
                    ) -> tuple[list[PartitionChangeRecord], AlterPartitionResult]:
    """Validate a leader's ISR change against the current state (compare-and-swap on
    partition_epoch) and decide it. Errors, in Kafka's order of checks:
    UNKNOWN_TOPIC_OR_PARTITION; FENCED_LEADER_EPOCH (request's leader epoch is not current);
    INVALID_REQUEST (sender is not the leader, or the new ISR lacks the leader);
    INVALID_UPDATE_VERSION (partition_epoch is not current: a stale or already-applied request);
    INELIGIBLE_REPLICA (a proposed member is not a replica or not live).
    An ISR equal to the current one succeeds without a record."""
    topic = image.topics_by_id.get(request.topic_id)
    p = topic.partitions.get(request.partition) if topic is not None else None
    if p is None:
        return [], AlterPartitionResult(ErrorCode.unknown_topic_or_partition)

    def current(error: ErrorCode) -> AlterPartitionResult:
        return AlterPartitionResult(error, p.leader, p.leader_epoch, p.isr, p.partition_epoch)

    if request.leader_epoch != p.leader_epoch:
        return [], current(ErrorCode.fenced_leader_epoch)
    if request.broker_id != p.leader:
        return [], current(ErrorCode.invalid_request)
    if request.partition_epoch != p.partition_epoch:
        return [], current(ErrorCode.invalid_update_version)
    new_isr = tuple(request.new_isr)
    if p.leader not in new_isr or len(set(new_isr)) != len(new_isr):
        return [], current(ErrorCode.invalid_request)
    added = set(new_isr) - set(p.isr)
    if any(b not in p.replicas or b not in live_brokers for b in added):
        return [], current(ErrorCode.ineligible_replica)
    if set(new_isr) == set(p.isr):
        return [], current(ErrorCode.none)
    record = PartitionChangeRecord(p.partition, request.topic_id, isr=new_isr)
    return [record], AlterPartitionResult(ErrorCode.none, p.leader, p.leader_epoch, new_isr,
                                          p.partition_epoch + 1)
