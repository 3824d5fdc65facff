"""Partition reassignment decisions (metadata/reassignment.py) and the records that carry them."""

from __future__ import annotations

import json
import uuid

from odradek.metadata.election import AlterPartitionRequest, alter_partition
from odradek.metadata.image import MetadataImage
from odradek.metadata.reassignment import (
    ReassignmentRequest,
    alter_reassignments,
    complete_reassignment,
    complete_reassignments,
    list_reassignments,
)
from odradek.metadata.records import (
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
    decode_record,
    encode_record,
)
from odradek.protocol.errors import ErrorCode

TID = uuid.UUID(int=7)
ALL = {1, 2, 3, 4}


def image(replicas=(1, 2), isr=(1, 2), leader=1, brokers=(1, 2, 3, 4)) -> MetadataImage:
    return MetadataImage.from_records([
        *(RegisterBrokerRecord(b, "h", 9000 + b) for b in brokers),
        TopicRecord("t", TID),
        PartitionRecord(0, TID, tuple(replicas), tuple(isr), leader, 5, 10)])


def part(img: MetadataImage):
    return img.topics_by_name["t"].partitions[0]


def reassign(img, target, eligible=ALL, allow_rf_change=True, topic="t", partition=0):
    records, results = alter_reassignments(img, [ReassignmentRequest(topic, partition, target)], eligible,
                                           allow_rf_change)
    for r in records:
        img.apply(r)
    return results[0]


def catch_up(img, broker):
    """The leader adds `broker` to the ISR (AlterPartition), as a caught-up follower."""
    p = part(img)
    records, result = alter_partition(img, AlterPartitionRequest(TID, 0, p.leader, p.leader_epoch, p.partition_epoch,
                                                                 (*p.isr, broker)), ALL)
    assert result.error is ErrorCode.none, result
    for r in records:
        img.apply(r)


def test_start_merges_target_first_and_records_adding_and_removing():
    img = image()
    result = reassign(img, (2, 3))
    assert result.error is ErrorCode.none
    p = part(img)
    assert (p.replicas, p.adding_replicas, p.removing_replicas, p.isr, p.leader) == ((2, 3, 1), (3,), (1,), (1, 2), 1)
    assert (p.leader_epoch, p.partition_epoch) == (5, 11)
    assert list_reassignments(img)[0].adding_replicas == (3,)


def test_completes_when_the_adding_replica_joins_the_isr_and_moves_leadership_into_the_target():
    img = image()
    reassign(img, (2, 3))
    assert complete_reassignment(img, TID, 0, ALL) is None  # 3 is not in the ISR yet
    catch_up(img, 3)
    assert complete_reassignments(img, ALL) == [complete_reassignment(img, TID, 0, ALL)]
    for r in complete_reassignments(img, ALL):
        img.apply(r)
    p = part(img)
    assert (p.replicas, p.isr, p.leader, p.adding_replicas, p.removing_replicas) == ((2, 3), (2, 3), 2, (), ())
    assert p.leader_epoch == 6  # a new leader: a new epoch
    assert list_reassignments(img) == []


def test_completion_keeps_a_leader_that_is_in_the_target():
    img = image()
    reassign(img, (3, 1))
    catch_up(img, 3)
    for r in complete_reassignments(img, ALL):
        img.apply(r)
    p = part(img)
    assert (p.replicas, set(p.isr), p.leader, p.leader_epoch) == ((3, 1), {1, 3}, 1, 5)


def test_completion_waits_while_no_target_isr_member_may_lead():
    img = image()
    reassign(img, (2, 3))
    catch_up(img, 3)
    assert complete_reassignment(img, TID, 0, eligible={1}) is None  # 2 and 3 shutting down
    assert part(img).is_reassigning


def test_a_shrink_whose_target_is_in_sync_completes_in_one_record():
    img = image(replicas=(1, 2, 3), isr=(1, 2, 3))
    records, results = alter_reassignments(img, [ReassignmentRequest("t", 0, (2, 3))], ALL)
    assert results[0].error is ErrorCode.none and len(records) == 1
    img.apply(records[0])
    p = part(img)
    assert (p.replicas, p.isr, p.leader, p.is_reassigning) == ((2, 3), (2, 3), 2, False)


def test_reassigning_to_the_current_replicas_is_a_no_op_and_a_reorder_changes_only_the_order():
    img = image()
    records, results = alter_reassignments(img, [ReassignmentRequest("t", 0, (1, 2))], ALL)
    assert (records, results[0].error) == ([], ErrorCode.none)
    reassign(img, (2, 1))
    p = part(img)
    assert (p.replicas, p.leader, p.is_reassigning) == ((2, 1), 1, False)


def test_cancel_reverts_and_removes_the_adding_replicas_even_from_the_isr():
    img = image()
    reassign(img, (3, 4))
    catch_up(img, 3)  # 4 still catching up
    assert reassign(img, None).error is ErrorCode.none
    p = part(img)
    assert (set(p.replicas), p.isr, p.leader, p.is_reassigning) == ({1, 2}, (1, 2), 1, False)


def test_a_target_equal_to_the_original_replicas_reverts_like_a_cancel():
    img = image()
    reassign(img, (2, 3))
    reassign(img, (1, 2))
    p = part(img)
    assert (p.replicas, p.isr, p.is_reassigning) == ((1, 2), (1, 2), False)


def test_cancel_without_a_reassignment_is_no_reassignment_in_progress():
    img = image()
    assert reassign(img, None).error is ErrorCode.no_reassignment_in_progress


def test_cancel_that_would_need_an_unclean_election_is_refused():
    img = image(replicas=(1,), isr=(1,))
    reassign(img, (3,))
    catch_up(img, 3)
    # Partition moved its leadership to 3 (say 1 was lost and 3 was the only ISR member left).
    img.apply(PartitionChangeRecord(0, TID, isr=(3,), leader=3))
    result = reassign(img, None)
    assert result.error is ErrorCode.invalid_replica_assignment
    assert "unclean" in result.message


def test_invalid_targets():
    img = image()
    assert reassign(img, ()).error is ErrorCode.invalid_replica_assignment
    assert reassign(img, (2, 2)).error is ErrorCode.invalid_replica_assignment
    bad = reassign(img, (2, 9))
    assert bad.error is ErrorCode.invalid_replica_assignment and "broker 9" in bad.message
    assert reassign(img, (3,), topic="nope").error is ErrorCode.unknown_topic_or_partition
    assert reassign(img, (3,), partition=1).error is ErrorCode.unknown_topic_or_partition
    assert not part(img).is_reassigning


def test_replication_factor_change_can_be_refused():
    img = image()
    assert reassign(img, (2, 3, 4), allow_rf_change=False).error is ErrorCode.invalid_replication_factor
    assert reassign(img, (3, 4), allow_rf_change=False).error is ErrorCode.none


def test_a_new_target_during_a_reassignment_keeps_a_still_adding_replica_adding():
    img = image()
    reassign(img, (2, 3))
    reassign(img, (3, 4))
    p = part(img)
    assert set(p.adding_replicas) == {3, 4}
    assert set(p.removing_replicas) == {1, 2}
    assert p.replicas[:2] == (3, 4)
    catch_up(img, 4)
    assert complete_reassignment(img, TID, 0, ALL) is None  # 3 has not caught up
    catch_up(img, 3)
    for r in complete_reassignments(img, ALL):
        img.apply(r)
    p = part(img)
    assert (p.replicas, set(p.isr), p.leader) == ((3, 4), {3, 4}, 3)


def test_several_partitions_in_one_request_are_decided_in_order():
    img = image()
    records, results = alter_reassignments(img, [ReassignmentRequest("t", 0, (2, 3)),
                                                 ReassignmentRequest("t", 0, None)], ALL)
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.none]
    for r in records:
        img.apply(r)
    # As in Kafka, a cancel keeps the merged order of the original replicas (target first).
    assert (part(img).replicas, part(img).is_reassigning) == ((2, 1), False)


def test_records_with_a_reassignment_round_trip_and_old_versions_still_decode():
    change = PartitionChangeRecord(0, TID, replicas=(2, 3, 1), adding_replicas=(3,), removing_replicas=(1,))
    assert decode_record(encode_record(change)) == change
    full = PartitionRecord(0, TID, (2, 3, 1), (1, 2), 1, 0, 0, (3,), (1,))
    assert decode_record(encode_record(full)) == full
    # Without a reassignment the records are written as version 0, which older brokers read.
    plain = json.loads(encode_record(PartitionRecord(0, TID, (1,), (1,), 1)))
    assert plain["v"] == 0 and "adding_replicas" not in plain
    assert json.loads(encode_record(PartitionChangeRecord(0, TID, isr=(1,))))["v"] == 0
    assert json.loads(encode_record(change))["v"] == 1
    old = b'{"t":"PartitionRecord","v":0,"partition_id":0,"topic_id":"%s","replicas":[1],"isr":[1],"leader":1,' \
          b'"leader_epoch":0,"partition_epoch":0}' % str(TID).encode()
    assert decode_record(old).adding_replicas == ()
    # A snapshot of an image with an ongoing reassignment rebuilds it.
    img = image()
    reassign(img, (2, 3))
    again = MetadataImage.from_records(img.to_records())
    assert part(again) == part(img)
