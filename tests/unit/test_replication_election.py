"""Controller decisions of metadata/election.py over a MetadataImage."""

from __future__ import annotations

import uuid

from odradek.metadata.election import (
    AlterPartitionRequest,
    alter_partition,
    controlled_shutdown,
    elect_offline_leaders,
    elect_on_broker_loss,
    elect_preferred_leaders,
)
from odradek.metadata.image import MetadataImage
from odradek.metadata.records import NO_LEADER, PartitionRecord, TopicRecord
from odradek.protocol.errors import ErrorCode

TID = uuid.UUID(int=1)


def image(replicas=(1, 2, 3), isr=(1, 2, 3), leader=1, leader_epoch=0, partition_epoch=0) -> MetadataImage:
    return MetadataImage.from_records([
        TopicRecord("t", TID),
        PartitionRecord(0, TID, tuple(replicas), tuple(isr), leader, leader_epoch, partition_epoch)])


def part(img: MetadataImage):
    return img.topics_by_name["t"].partitions[0]


def apply(img: MetadataImage, records) -> MetadataImage:
    for r in records:
        img.apply(r)
    return img


def test_losing_the_leader_elects_the_next_isr_replica_in_replica_order_and_bumps_the_epoch():
    img = image(replicas=(1, 2, 3), isr=(1, 3, 2))
    apply(img, elect_on_broker_loss(img, 1, {2, 3}))
    p = part(img)
    assert (p.leader, set(p.isr), p.leader_epoch, p.partition_epoch) == (2, {2, 3}, 1, 1)


def test_losing_a_follower_only_shrinks_the_isr():
    img = image()
    apply(img, elect_on_broker_loss(img, 3, {1, 2}))
    p = part(img)
    assert (p.leader, p.isr, p.leader_epoch, p.partition_epoch) == (1, (1, 2), 0, 1)


def test_a_live_replica_outside_the_isr_is_not_elected_unless_unclean():
    img = image(isr=(1,))
    records = elect_on_broker_loss(img, 1, {2, 3})
    apply(img, records)
    p = part(img)
    assert (p.leader, p.isr) == (NO_LEADER, (1,)), "the last ISR member stays in the ISR"
    img2 = image(isr=(1,))
    apply(img2, elect_on_broker_loss(img2, 1, {2, 3}, unclean=True))
    assert (part(img2).leader, part(img2).isr) == (2, (2,))


def test_the_last_isr_member_leads_again_when_it_returns():
    img = image(isr=(1,))
    apply(img, elect_on_broker_loss(img, 1, {2, 3}))
    assert elect_offline_leaders(img, {2, 3}) == []
    apply(img, elect_offline_leaders(img, {1, 2, 3}))
    p = part(img)
    assert (p.leader, p.leader_epoch) == (1, 2)


def test_losing_a_broker_that_is_not_a_replica_changes_nothing():
    img = image(replicas=(1, 2), isr=(1, 2))
    assert elect_on_broker_loss(img, 3, {1, 2}) == []


def test_controlled_shutdown_moves_leadership_and_reports_what_it_cannot_move():
    img = image()
    records, remaining = controlled_shutdown(img, 1, {1, 2, 3})
    apply(img, records)
    assert (part(img).leader, part(img).isr, remaining) == (2, (2, 3), [])
    alone = image(isr=(1,))
    records, remaining = controlled_shutdown(alone, 1, {1, 2, 3})
    assert (records, remaining) == ([], [("t", 0)])


def test_controlled_shutdown_of_a_follower_removes_it_from_the_isr():
    img = image()
    records, remaining = controlled_shutdown(img, 3, {1, 2, 3})
    apply(img, records)
    assert (part(img).leader, part(img).isr, remaining) == (1, (1, 2), [])


def test_preferred_leader_election():
    img = image(leader=2, leader_epoch=3)
    records, results = elect_preferred_leaders(img, [("t", 0), ("nope", 0)], {1, 2, 3})
    assert [r.error for r in results] == [ErrorCode.none, ErrorCode.unknown_topic_or_partition]
    apply(img, records)
    assert (part(img).leader, part(img).leader_epoch) == (1, 4)
    _, results = elect_preferred_leaders(img, [("t", 0)], {1, 2, 3})
    assert results[0].error is ErrorCode.election_not_needed
    img = image(isr=(2, 3), leader=2)
    _, results = elect_preferred_leaders(img, [("t", 0)], {1, 2, 3})
    assert results[0].error is ErrorCode.preferred_leader_not_available


def request(**kw) -> AlterPartitionRequest:
    base = {"topic_id": TID, "partition": 0, "broker_id": 1, "leader_epoch": 0, "partition_epoch": 0, "new_isr": (1, 2)}
    base.update(kw)
    return AlterPartitionRequest(**base)


def test_alter_partition_applies_an_isr_change_with_compare_and_swap():
    img = image()
    records, result = alter_partition(img, request(), {1, 2, 3})
    assert result.error is ErrorCode.none and (result.isr, result.partition_epoch) == ((1, 2), 1)
    apply(img, records)
    assert (part(img).isr, part(img).partition_epoch) == ((1, 2), 1)
    # The same request again (a retry after a lost answer) is stale now.
    records, result = alter_partition(img, request(), {1, 2, 3})
    assert records == [] and result.error is ErrorCode.invalid_update_version
    assert (result.isr, result.partition_epoch) == ((1, 2), 1)


def test_alter_partition_errors():
    img = image(leader_epoch=2)
    live = {1, 2, 3}
    assert alter_partition(img, request(leader_epoch=1), live)[1].error is ErrorCode.fenced_leader_epoch
    assert alter_partition(img, request(leader_epoch=2, broker_id=2), live)[1].error is ErrorCode.invalid_request
    assert alter_partition(img, request(leader_epoch=2, new_isr=(2, 3)), live)[1].error is ErrorCode.invalid_request
    assert alter_partition(img, request(leader_epoch=2, partition=5), live)[1].error \
        is ErrorCode.unknown_topic_or_partition
    shrunk = image(isr=(1,))
    assert alter_partition(shrunk, request(new_isr=(1, 4)), live)[1].error is ErrorCode.ineligible_replica
    assert alter_partition(shrunk, request(new_isr=(1, 3)), {1, 2})[1].error is ErrorCode.ineligible_replica
    records, result = alter_partition(shrunk, request(new_isr=(1,)), live)
    assert records == [] and result.error is ErrorCode.none


def test_broker_loss_touches_every_partition_it_hosts_and_only_those():
    t2 = uuid.UUID(int=2)
    img = MetadataImage.from_records([
        TopicRecord("t", TID),
        PartitionRecord(0, TID, (1, 2, 3), (1, 2, 3), 1, 0, 0),
        PartitionRecord(1, TID, (2, 3, 1), (2, 3), 2, 4, 9),
        TopicRecord("u", t2),
        PartitionRecord(0, t2, (3, 1), (3, 1), 3, 0, 0),
        PartitionRecord(1, t2, (2, 3), (2, 3), 2, 0, 0)])
    records = elect_on_broker_loss(img, 1, {2, 3})
    assert {(r.topic_id, r.partition_id) for r in records} == {(TID, 0), (t2, 0)}
    apply(img, records)
    t, u = img.topics_by_name["t"].partitions, img.topics_by_name["u"].partitions
    assert (t[0].leader, t[0].isr, t[0].leader_epoch) == (2, (2, 3), 1)
    assert (t[1].leader, t[1].isr, t[1].partition_epoch) == (2, (2, 3), 9)
    assert (u[0].leader, u[0].isr, u[0].leader_epoch) == (3, (3,), 0)
