"""The leader's ISR / high watermark / acks=all core (replication/partition_state.py)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from odradek.metadata.election import AlterPartitionResult
from odradek.metadata.image import PartitionImage
from odradek.protocol.errors import ErrorCode
from odradek.replication.follower import end_offset_for_epoch
from odradek.replication.partition_state import IsrState, PartitionLeader

TID = uuid.UUID(int=1)
LAG_MS = 1_000


def leader(isr=(1, 2, 3), min_isr=2, leo=0, hw=0, epochs=((0, 0),), leader_epoch=0, now_ms=0) -> PartitionLeader:
    partition = PartitionImage(0, (1, 2, 3), tuple(isr), 1, leader_epoch, 0)
    entries = list(epochs)
    return PartitionLeader(broker_id=1, topic_id=TID, partition=partition, log_end_offset=leo, high_watermark=hw,
                           min_insync_replicas=min_isr, now_ms=now_ms,
                           end_offset_for_epoch=lambda e, end: end_offset_for_epoch(entries, e, end),
                           replica_lag_time_max_ms=LAG_MS, alter_partition_retry_ms=100)


def fetch(p: PartitionLeader, replica: int, offset: int, now_ms: int, last_epoch: int = 0, epoch: int | None = None):
    return p.on_follower_fetch(replica, offset, last_epoch if offset else -1,
                               p.leader_epoch if epoch is None else epoch, now_ms)


def test_high_watermark_is_the_smallest_isr_log_end_offset_and_acks_all_waits_for_it():
    p = leader()
    out = p.on_local_append(5, now_ms=0, request_id="r1")
    assert out.completions == [] and p.high_watermark == 0
    fetch(p, 2, 5, 10)
    assert p.high_watermark == 0, "replica 3 has not fetched in this leader epoch"
    _, out = fetch(p, 3, 3, 11)
    assert p.high_watermark == 3 and out.completions == []
    _, out = fetch(p, 3, 5, 12)
    assert p.high_watermark == 5
    assert [(c.request_id, c.error) for c in out.completions] == [("r1", ErrorCode.none)]


def test_acks_all_below_min_insync_is_refused_before_the_append():
    p = leader(isr=(1,), min_isr=2)
    assert p.check_append(-1) is ErrorCode.not_enough_replicas
    assert p.check_append(1) is ErrorCode.none
    assert leader(isr=(1, 2), min_isr=2).check_append(-1) is ErrorCode.none


def test_a_lagging_follower_is_proposed_for_removal_and_counts_until_the_controller_agrees():
    p = leader()
    p.on_local_append(10, now_ms=0, request_id="r1")
    fetch(p, 2, 10, 100)
    fetch(p, 3, 4, 100)
    assert p.tick(LAG_MS).alter_partition is None, "not yet past replica.lag.time.max.ms"
    out = p.tick(LAG_MS + 1)
    request = out.alter_partition
    assert request is not None and request.new_isr == (1, 2) and request.partition_epoch == 0
    assert p.isr_state is IsrState.PENDING_SHRINK and p.maximal_isr == {1, 2, 3}
    assert p.high_watermark == 4, "the removed member still holds the high watermark back"
    assert p.tick(LAG_MS + 50).alter_partition is None
    assert p.tick(LAG_MS + 101).alter_partition == request, "an unanswered proposal is re-sent"
    out = p.on_alter_partition_result(request, AlterPartitionResult(ErrorCode.none, 1, 0, (1, 2), 1), LAG_MS + 200)
    assert p.isr == (1, 2) and p.high_watermark == 10
    assert [(c.request_id, c.error) for c in out.completions] == [("r1", ErrorCode.none)]


def test_a_follower_that_keeps_up_is_not_removed():
    p = leader()
    for t in range(0, 5 * LAG_MS, 200):
        p.on_local_append(t + 1, now_ms=t)
        fetch(p, 2, t + 1, t + 50)
        fetch(p, 3, t, t + 50)  # one behind, but at the leader's end of its previous fetch
        assert p.tick(t + 100).alter_partition is None


def test_a_caught_up_follower_is_added_after_the_controller_commits_it():
    p = leader(isr=(1, 2), leo=10, hw=10, epochs=((0, 0), (3, 10)), leader_epoch=3)
    fetch(p, 2, 10, 5, last_epoch=3)
    _, out = fetch(p, 3, 8, 10, last_epoch=0)
    assert out.alter_partition is None, "below the high watermark"
    p.on_local_append(12, now_ms=11, request_id="r")
    fetch(p, 2, 12, 12, last_epoch=3)
    assert p.high_watermark == 12
    _, out = fetch(p, 3, 12, 13, last_epoch=3)
    assert out.alter_partition is not None and out.alter_partition.new_isr == (1, 2, 3)
    assert p.maximal_isr == {1, 2, 3} and p.isr == (1, 2)
    p.on_local_append(20, now_ms=14)
    fetch(p, 2, 20, 15, last_epoch=3)
    assert p.high_watermark == 12, "a pending member counts for the high watermark"
    out = p.on_partition_change(replace(p.partition, isr=(1, 2, 3), partition_epoch=1), 16)
    assert p.isr_state is IsrState.COMMITTED and p.isr == (1, 2, 3)


def test_a_follower_must_reach_the_start_of_this_leader_epoch_to_join():
    p = leader(isr=(1,), leo=10, hw=4, epochs=((0, 0), (2, 10)), leader_epoch=2)
    _, out = fetch(p, 2, 6, 1, last_epoch=0)
    assert out.alter_partition is None and p.isr == (1,)


def test_a_rejected_proposal_waits_for_metadata_and_stale_metadata_is_ignored():
    p = leader()
    p.on_local_append(3, now_ms=0)
    fetch(p, 2, 3, 1)
    request = p.tick(LAG_MS + 1).alter_partition
    assert request is not None
    p.on_alter_partition_result(request, AlterPartitionResult(ErrorCode.invalid_update_version, 1, 0, (1, 2, 3), 4),
                                LAG_MS + 2)
    assert p.tick(LAG_MS + 500).alter_partition is None, "not retried: waits for metadata"
    assert p.isr_state is IsrState.PENDING_SHRINK
    p.on_partition_change(replace(p.partition, partition_epoch=0), LAG_MS + 600)
    assert p.isr_state is IsrState.PENDING_SHRINK, "not newer"
    p.on_partition_change(replace(p.partition, isr=(1, 2), partition_epoch=4), LAG_MS + 700)
    assert p.isr_state is IsrState.COMMITTED and p.isr == (1, 2) and p.high_watermark == 3


def test_acks_all_after_the_isr_shrank_below_min_insync_gets_not_enough_replicas_after_append():
    p = leader(isr=(1, 2), min_isr=2)
    p.on_local_append(2, now_ms=0, request_id="r")
    fetch(p, 2, 1, 10)
    request = p.tick(LAG_MS + 11).alter_partition
    out = p.on_alter_partition_result(request, AlterPartitionResult(ErrorCode.none, 1, 0, (1,), 1), LAG_MS + 12)
    assert [(c.request_id, c.error) for c in out.completions] == [("r", ErrorCode.not_enough_replicas_after_append)]


def test_acks_all_times_out_and_fails_on_resign():
    p = leader()
    p.on_local_append(1, now_ms=0, request_id="a", timeout_ms=100)
    p.on_local_append(2, now_ms=50, request_id="b", timeout_ms=100)
    assert [c.request_id for c in p.tick(100).completions] == ["a"]
    out = p.resign()
    assert [(c.request_id, c.error) for c in out.completions] == [("b", ErrorCode.not_leader_or_follower)]


def test_fetch_fencing_and_divergence():
    p = leader(leo=10, hw=0, epochs=((0, 0), (2, 6)), leader_epoch=4)
    assert fetch(p, 2, 0, 1, epoch=3)[0].error is ErrorCode.fenced_leader_epoch
    assert fetch(p, 2, 0, 1, epoch=5)[0].error is ErrorCode.unknown_leader_epoch
    assert fetch(p, 9, 0, 1)[0].error is ErrorCode.not_leader_or_follower
    assert fetch(p, 2, 11, 1, last_epoch=2)[0].diverging_epoch == (2, 10), "past the end of epoch 2"
    assert p.on_follower_fetch(2, 11, -1, 4, 1)[0].error is ErrorCode.offset_out_of_range
    result, _ = fetch(p, 2, 8, 1, last_epoch=1)  # the follower has epoch 1 records the leader lacks
    assert result.error is ErrorCode.none and result.diverging_epoch == (0, 6)
    assert p.replicas[2].log_end_offset == -1, "a diverging fetch does not move the follower"
    result, _ = fetch(p, 2, 8, 1, last_epoch=2)
    assert result.diverging_epoch is None and p.replicas[2].log_end_offset == 8


def test_high_watermark_never_moves_back_when_a_follower_truncates():
    p = leader(isr=(1, 2), leo=10, hw=0)
    fetch(p, 2, 10, 1)
    assert p.high_watermark == 10
    fetch(p, 2, 7, 2)
    assert p.high_watermark == 10
