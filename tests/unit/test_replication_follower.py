"""The follower core (replication/follower.py): requests, truncation on divergence, phases."""

from __future__ import annotations

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.replication.follower import (
    FetchRequest,
    FollowerPhase,
    OffsetForLeaderEpochRequest,
    OffsetTruncation,
    PartitionFollower,
    answer_offset_for_leader_epoch,
    end_offset_for_epoch,
    truncation_offset,
)

LEADER = [(0, 0), (2, 10), (5, 20)]  # epoch 0 at 0, epoch 2 at 10, epoch 5 at 20; LEO 30


@pytest.mark.parametrize("requested, answer", [
    (-1, (-1, -1)), (0, (0, 10)), (1, (0, 10)), (2, (2, 20)), (4, (2, 20)), (5, (5, 30)), (6, (-1, -1)),
])
def test_end_offset_for_epoch_matches_kafka(requested, answer):
    assert end_offset_for_epoch(LEADER, requested, 30) == answer


def test_end_offset_for_epoch_before_the_first_epoch_is_undefined():
    assert end_offset_for_epoch([(3, 5)], 2, 9) == (-1, -1)
    assert end_offset_for_epoch([], 2, 9) == (-1, -1)


def test_leader_answer_fences_and_clamps():
    assert answer_offset_for_leader_epoch(5, 4, 2, LEADER, 30)[0] is ErrorCode.fenced_leader_epoch
    assert answer_offset_for_leader_epoch(5, 6, 2, LEADER, 30)[0] is ErrorCode.unknown_leader_epoch
    assert answer_offset_for_leader_epoch(5, 5, 3, LEADER, 30) == (ErrorCode.none, 2, 20)


def test_a_follower_with_the_leaders_epoch_truncates_to_the_smaller_end_offset():
    # The follower wrote epoch 2 further than the leader kept it (the old leader's lost tail).
    follower = [(0, 0), (2, 10)]
    assert truncation_offset(2, 20, follower, log_end_offset=25) == OffsetTruncation(20, True)
    assert truncation_offset(2, 20, follower, log_end_offset=15) == OffsetTruncation(15, True)


def test_a_follower_with_an_epoch_the_leader_never_had_truncates_and_asks_again():
    # KIP-279: the follower led epochs 1 (offsets 8-14) and 3 (15-17) that the leader never saw.
    follower = [(0, 0), (1, 8), (3, 15)]
    leader_answer = end_offset_for_epoch(LEADER, 3, 30)
    assert leader_answer == (2, 20)
    first = truncation_offset(*leader_answer, follower, log_end_offset=18)
    assert first == OffsetTruncation(15, False)
    follower = [(e, s) for e, s in follower if s < first.truncate_to]
    assert end_offset_for_epoch(LEADER, follower[-1][0], 30) == (0, 10)
    second = truncation_offset(0, 10, follower, 15)
    assert second == OffsetTruncation(8, True)


def test_a_follower_whose_epoch_ends_earlier_than_the_leaders_keeps_its_shorter_log():
    assert truncation_offset(2, 20, [(0, 0), (2, 10), (3, 15)], 18) == OffsetTruncation(15, True)


def test_undefined_answers_truncate_to_the_log_start():
    assert truncation_offset(-1, -1, [(0, 0)], 10, log_start_offset=0) == OffsetTruncation(0, True)
    assert truncation_offset(1, 7, [(4, 0)], 10) == OffsetTruncation(0, True)


def test_follower_first_asks_for_the_end_of_its_epoch_then_fetches():
    f = PartitionFollower(2, leader_id=1, leader_epoch=5, fetch_backoff_ms=100, request_timeout_ms=1_000)
    entries, leo = [(0, 0), (1, 8), (3, 15)], 18
    request = f.poll(0, leo, entries)
    assert isinstance(request, OffsetForLeaderEpochRequest)
    assert (request.leader_id, request.current_leader_epoch, request.leader_epoch) == (1, 5, 3)
    assert f.poll(1, leo, entries) is None, "one request in flight"
    assert f.on_offset_for_leader_epoch(request.request_id + 1, ErrorCode.none, 2, 20, 2, entries, leo) is None
    truncate_to = f.on_offset_for_leader_epoch(request.request_id, ErrorCode.none, 2, 20, 2, entries, leo)
    assert truncate_to == 15 and f.phase is FollowerPhase.TRUNCATING
    entries, leo = entries[:2], 15
    request = f.poll(3, leo, entries)
    assert isinstance(request, OffsetForLeaderEpochRequest) and request.leader_epoch == 1
    assert f.on_offset_for_leader_epoch(request.request_id, ErrorCode.none, 0, 10, 4, entries, leo) == 8
    assert f.phase is FollowerPhase.FETCHING
    entries, leo = entries[:1], 8
    fetch = f.poll(5, leo, entries)
    assert isinstance(fetch, FetchRequest) and (fetch.fetch_offset, fetch.last_fetched_epoch) == (8, 0)
    assert f.on_fetch(fetch.request_id, ErrorCode.none, None, 6, entries, leo) == (True, None)


def test_follower_truncates_on_a_diverging_epoch_in_a_fetch_answer():
    f = PartitionFollower(2, leader_id=1, leader_epoch=5)
    f.phase = FollowerPhase.FETCHING
    entries = [(0, 0), (2, 10)]
    fetch = f.poll(0, 25, entries)
    assert f.on_fetch(fetch.request_id, ErrorCode.none, (2, 20), 1, entries, 25) == (False, 20)
    assert f.phase is FollowerPhase.FETCHING


def test_follower_backs_off_on_errors_goes_stale_when_fenced_and_resends_lost_requests():
    f = PartitionFollower(2, leader_id=1, leader_epoch=5, fetch_backoff_ms=100, request_timeout_ms=1_000)
    request = f.poll(0, 0, [])
    assert f.on_offset_for_leader_epoch(request.request_id, ErrorCode.unknown_leader_epoch, -1, -1, 10, [], 0) is None
    assert f.poll(50, 0, []) is None and f.poll(110, 0, []) is not None
    assert f.poll(500, 0, []) is None
    resent = f.poll(1_110, 0, [])
    assert resent is not None, "an unanswered request is re-sent after the request timeout"
    f.on_offset_for_leader_epoch(resent.request_id, ErrorCode.fenced_leader_epoch, -1, -1, 1_200, [], 0)
    assert f.phase is FollowerPhase.STALE and f.poll(10_000, 0, []) is None


def _epochs_of(log: list[tuple[int, int]]) -> list[tuple[int, int]]:
    entries: list[tuple[int, int]] = []
    for offset, (epoch, _) in enumerate(log):
        if not entries or entries[-1][0] != epoch:
            entries.append((epoch, offset))
    return entries


def _random_histories(rng) -> list[list[tuple[int, int]]]:
    """Logs of a few brokers after a random history of leaders, one per increasing epoch, each
    appending on its own log while others copy a prefix of some leader's log (after cutting back
    to the common prefix): the shapes that unclean/lossy failovers leave behind."""
    logs: list[list[tuple[int, int]]] = [[] for _ in range(rng.randint(2, 4))]
    payload = 0
    for epoch in range(1, rng.randint(2, 9)):
        leader = rng.randrange(len(logs))
        if rng.random() < 0.3:  # the leader lost part of its tail first
            del logs[leader][rng.randint(0, len(logs[leader])):]
        for _ in range(rng.randint(0, 5)):
            payload += 1
            logs[leader].append((epoch, payload))
        for b, log in enumerate(logs):
            if b != leader and rng.random() < 0.6:
                common = 0
                while common < min(len(log), len(logs[leader])) and log[common] == logs[leader][common]:
                    common += 1
                del log[common:]
                log.extend(logs[leader][common:rng.randint(common, len(logs[leader]))])
    return logs


@pytest.mark.parametrize("seed", range(300))
def test_iterated_truncation_leaves_the_longest_common_prefix(seed):
    import random

    rng = random.Random(seed)
    logs = _random_histories(rng)
    leader = max(range(len(logs)), key=lambda b: (_epochs_of(logs[b])[-1][0] if logs[b] else -1))
    leader_log = logs[leader]
    leader_entries = _epochs_of(leader_log)
    for b, log in enumerate(logs):
        if b == leader:
            continue
        follower = list(log)
        for _ in range(20):
            entries = _epochs_of(follower)
            if not entries:
                break
            answer = end_offset_for_epoch(leader_entries, min(entries[-1][0], leader_entries[-1][0] if leader_entries
                                                              else -1), len(leader_log))
            truncation = truncation_offset(*answer, entries, len(follower))
            del follower[truncation.truncate_to:]
            if truncation.complete:
                break
        else:
            pytest.fail(f"seed={seed}: truncation did not converge")
        common = 0
        while common < min(len(log), len(leader_log)) and log[common] == leader_log[common]:
            common += 1
        assert follower == leader_log[:len(follower)], f"seed={seed}: truncated log is not a prefix"
        assert len(follower) == common, f"seed={seed}: truncated to {len(follower)}, common prefix {common}"
