"""Partition reassignment decisions (AlterPartitionReassignments, ListPartitionReassignments), as
pure functions of the image, like election.py.

Cluster mode (issue 7): moving a partition's replicas to other brokers (scale-out, a broker
leaving). Every function reads a `MetadataImage` and returns `PartitionChangeRecord`s for the
controller to append plus per-partition results with Kafka error codes; nothing is written here.

    alter_reassignments(image, requests, eligible, allow_rf_change)   start / change / cancel
    complete_reassignment(image, topic_id, partition, eligible)       finish one if caught up
    complete_reassignments(image, eligible)                           ... every one that is
    list_reassignments(image, partitions)                             the ongoing ones

A reassignment, as Kafka's KRaft controller does it (ReplicationControlManager,
PartitionReassignmentReplicas), of a partition with replicas R to target replicas T:

    state        replicas              adding_replicas   removing_replicas   ISR            leader
    none         R                     ()                ()                  I              L
    started      T + (R - T)           T - R             R - T               I              L
    completed    T                     ()                ()                  I & T          L if L in T, else the
                                                                                            first of T in I & T
                                                                                            that is eligible

- started -> completed once every adding replica is in the ISR (the leader adds them through
  AlterPartition as they catch up; the controller completes in the same append, or in its
  reconcile pass); a start whose adding replicas are all in the ISR already (a shrink, a
  reorder) completes at once, in one record.
- completion waits (the reassignment stays in progress) while I & T is empty or the leader is
  not in T and no member of I & T is eligible to lead: a reassignment never takes a partition
  offline.
- a new target while one is in progress is computed from the merged replicas (Kafka's rule),
  except that a replica still being added stays in adding_replicas when the new target keeps it
  (Kafka would drop it from adding and might complete before it caught up).
- a target equal to the merged replicas' original set (R), or a cancellation (target null),
  reverts: replicas R, ISR without the adding replicas, adding/removing cleared; a revert that
  would empty the ISR or leave no eligible leader is refused (INVALID_REPLICA_ASSIGNMENT: it
  would need an unclean election).

Errors per partition: UNKNOWN_TOPIC_OR_PARTITION; INVALID_REPLICA_ASSIGNMENT (empty target,
a broker named twice, a broker that is not registered, a revert that needs an unclean election);
INVALID_REPLICATION_FACTOR (v1's allow_replication_factor_change false and the target's size
differs from the original replica count); NO_REASSIGNMENT_IN_PROGRESS (cancel of none).

Kafka also bumps the leader epoch when a reassignment removes replicas; here a leader epoch
changes only with the leader (image.py), and removed replicas are fenced by no longer being
replicas (the leader answers their fetches NOT_LEADER_OR_FOLLOWER, their broker drops the log).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from odradek.metadata.image import MetadataImage, PartitionImage
from odradek.metadata.records import NO_LEADER, NO_LEADER_CHANGE, PartitionChangeRecord
from odradek.protocol.errors import ErrorCode

MAX_REPLICAS_PER_PARTITION = 1000  # a bound on one target's length (Kafka has none; brokers are fewer)


@dataclass(frozen=True, slots=True)
class ReassignmentRequest:
    """One partition of AlterPartitionReassignments: target replicas, or None to cancel."""

    topic: str
    partition: int
    target_replicas: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class ReassignmentResult:
    """The outcome for one partition (AlterPartitionReassignments' per-partition result)."""

    topic: str
    partition: int
    error: ErrorCode
    message: str | None = None


@dataclass(frozen=True, slots=True)
class OngoingReassignment:
    """A partition with a reassignment in progress (ListPartitionReassignments' entry)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...]
    removing_replicas: tuple[int, ...]


def original_replicas(p: PartitionImage) -> tuple[int, ...]:
    """The replicas before the ongoing reassignment (all replicas when there is none)."""
    return tuple(b for b in p.replicas if b not in p.adding_replicas)


def target_replicas(p: PartitionImage) -> tuple[int, ...]:
    """The replicas once the ongoing reassignment completes (all replicas when there is none)."""
    return tuple(b for b in p.replicas if b not in p.removing_replicas)


def _completed_state(p: PartitionImage, eligible: Collection[int]) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """(replicas, isr, leader) when `p`'s reassignment can complete now, else None."""
    if not p.is_reassigning or any(b not in p.isr for b in p.adding_replicas):
        return None
    target = target_replicas(p)
    isr = tuple(b for b in p.isr if b in target)
    if not isr:
        return None
    leader = p.leader
    if leader not in target or leader == NO_LEADER:
        leader = next((b for b in target if b in isr and b in eligible), NO_LEADER)
        if leader == NO_LEADER:
            return None
    return target, isr, leader


def _record(topic_id: uuid.UUID, p: PartitionImage, replicas: tuple[int, ...], isr: tuple[int, ...], leader: int,
            adding: tuple[int, ...], removing: tuple[int, ...]) -> PartitionChangeRecord | None:
    if (replicas, isr, leader, adding, removing) == (p.replicas, p.isr, p.leader, p.adding_replicas,
                                                     p.removing_replicas):
        return None
    return PartitionChangeRecord(
        p.partition, topic_id,
        isr=None if isr == p.isr else isr,
        leader=NO_LEADER_CHANGE if leader == p.leader else leader,
        replicas=None if replicas == p.replicas else replicas,
        adding_replicas=None if adding == p.adding_replicas else adding,
        removing_replicas=None if removing == p.removing_replicas else removing)


def complete_reassignment(image: MetadataImage, topic_id: uuid.UUID, partition: int,
                          eligible: Collection[int]) -> PartitionChangeRecord | None:
    """The record completing the partition's reassignment, if every adding replica is in the
    ISR and a leader in the target can lead (module doc); None otherwise."""
    topic = image.topics_by_id.get(topic_id)
    p = topic.partitions.get(partition) if topic is not None else None
    if p is None:
        return None
    state = _completed_state(p, eligible)
    if state is None:
        return None
    replicas, isr, leader = state
    return _record(topic_id, p, replicas, isr, leader, (), ())


def complete_reassignments(image: MetadataImage, eligible: Collection[int]) -> list[PartitionChangeRecord]:
    """Completion records for every partition whose reassignment can complete now."""
    records: list[PartitionChangeRecord] = []
    for topic in sorted(image.topics_by_name.values(), key=lambda t: t.name):
        for index in sorted(topic.partitions):
            if topic.partitions[index].is_reassigning:
                record = complete_reassignment(image, topic.topic_id, index, eligible)
                if record is not None:
                    records.append(record)
    return records


def invalid_target(target: Sequence[int], registered: Collection[int]) -> str | None:
    """Why `target` is not a valid replica assignment over the `registered` brokers (Kafka's
    messages), or None when it is."""
    if not target:
        return "The manual partition assignment includes an empty replica list."
    if len(target) > MAX_REPLICAS_PER_PARTITION:
        return f"The manual partition assignment names more than {MAX_REPLICAS_PER_PARTITION} replicas."
    seen: set[int] = set()
    for b in target:
        if b in seen:
            return f"The manual partition assignment includes the broker {b} more than once."
        seen.add(b)
        if b not in registered:
            return f"The manual partition assignment includes broker {b}, but no such broker is registered."
    return None


def _start(image: MetadataImage, topic_id: uuid.UUID, p: PartitionImage, target: tuple[int, ...],
           eligible: Collection[int]) -> tuple[PartitionChangeRecord | None, ErrorCode, str | None]:
    current = p.replicas
    if p.is_reassigning and set(target) == set(original_replicas(p)):
        return _revert(topic_id, p, eligible, target_order=target)
    removing = tuple(b for b in current if b not in target)
    adding = tuple(b for b in target if b not in current or b in p.adding_replicas)
    replicas = target + removing
    started = PartitionImage(p.partition, replicas, p.isr, p.leader, p.leader_epoch, p.partition_epoch,
                             adding, removing)
    state = _completed_state(started, eligible) if started.is_reassigning else (replicas, p.isr, p.leader)
    if state is not None:  # nothing to wait for: complete in the same record
        replicas, isr, leader = state
        return _record(topic_id, p, replicas, isr, leader, (), ()), ErrorCode.none, None
    return _record(topic_id, p, replicas, p.isr, p.leader, adding, removing), ErrorCode.none, None


def _revert(topic_id: uuid.UUID, p: PartitionImage, eligible: Collection[int],
            target_order: tuple[int, ...] | None = None
            ) -> tuple[PartitionChangeRecord | None, ErrorCode, str | None]:
    replicas = target_order if target_order is not None else original_replicas(p)
    isr = tuple(b for b in p.isr if b in replicas)
    leader = p.leader
    if leader not in replicas or leader == NO_LEADER:
        leader = next((b for b in replicas if b in isr and b in eligible), NO_LEADER)
    if not isr or leader == NO_LEADER:
        return None, ErrorCode.invalid_replica_assignment, (
            f"Unable to revert partition assignment for partition {p.partition} because it would require "
            "an unclean leader election.")
    return _record(topic_id, p, replicas, isr, leader, (), ()), ErrorCode.none, None


def alter_reassignments(image: MetadataImage, requests: Iterable[ReassignmentRequest], eligible: Collection[int],
                        allow_replication_factor_change: bool = True
                        ) -> tuple[list[PartitionChangeRecord], list[ReassignmentResult]]:
    """AlterPartitionReassignments: start, change or cancel each partition's reassignment
    (module doc), each decided on the image the previous ones produced. `eligible`: brokers
    that may lead (current, not shutting down). One result per request, in order."""
    scratch = image.copy()
    records: list[PartitionChangeRecord] = []
    results: list[ReassignmentResult] = []
    for request in requests:
        topic = scratch.topics_by_name.get(request.topic)
        p = topic.partitions.get(request.partition) if topic is not None else None
        if p is None:
            results.append(ReassignmentResult(request.topic, request.partition, ErrorCode.unknown_topic_or_partition,
                                              "The partition does not exist."))
            continue
        target = request.target_replicas
        if target is None:
            if not p.is_reassigning:
                results.append(ReassignmentResult(request.topic, request.partition,
                                                  ErrorCode.no_reassignment_in_progress,
                                                  "No ongoing reassignment for this partition."))
                continue
            record, error, message = _revert(topic.topic_id, p, eligible)
        else:
            target = tuple(int(b) for b in target)
            message = invalid_target(target, scratch.brokers)
            if message is not None:
                results.append(ReassignmentResult(request.topic, request.partition,
                                                  ErrorCode.invalid_replica_assignment, message))
                continue
            original = original_replicas(p)
            if not allow_replication_factor_change and len(target) != len(original):
                results.append(ReassignmentResult(
                    request.topic, request.partition, ErrorCode.invalid_replication_factor,
                    f"The replication factor is changed from {len(original)} to {len(target)}"))
                continue
            record, error, message = _start(scratch, topic.topic_id, p, target, eligible)
        if record is not None:
            scratch.apply(record)
            records.append(record)
        results.append(ReassignmentResult(request.topic, request.partition, error, message))
    return records, results


def list_reassignments(image: MetadataImage, partitions: Iterable[tuple[str, int]] | None = None
                       ) -> list[OngoingReassignment]:
    """The ongoing reassignments among `partitions` (None: every partition), in topic and
    partition order; partitions that do not exist or are not reassigning are left out (Kafka)."""
    if partitions is None:
        wanted = [(t.name, index) for t in image.topics_by_name.values() for index in t.partitions]
    else:
        wanted = list(partitions)
    ongoing: list[OngoingReassignment] = []
    for name, index in sorted(set(wanted)):
        topic = image.topics_by_name.get(name)
        p = topic.partitions.get(index) if topic is not None else None
        if p is not None and p.is_reassigning:
            ongoing.append(OngoingReassignment(name, index, p.replicas, p.adding_replicas, p.removing_replicas))
    return ongoing
