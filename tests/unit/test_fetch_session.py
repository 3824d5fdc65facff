"""FetchSessionCache and CachedPartition (KIP-227), without sockets: ids, epochs, eviction, and
which partitions an incremental response carries."""

from __future__ import annotations

import random

from odradek.broker.fetch_session import CachedPartition, FetchSessionCache
from odradek.protocol.errors import ErrorCode


def cached(partition=0, offset=0):
    return CachedPartition(
        topic="t",
        topic_id=None,
        partition=partition,
        fetch_offset=offset,
        partition_max_bytes=1 << 20,
    )


def test_new_session_has_a_positive_id_and_expects_epoch_1():
    cache = FetchSessionCache(rng=random.Random(1))
    session = cache.create()
    assert 0 < session.session_id < 2**31
    assert session.epoch == 1
    assert cache.lookup(session.session_id, 1) is session


def test_each_incremental_request_advances_the_epoch_by_one():
    cache = FetchSessionCache(rng=random.Random(2))
    session = cache.create()
    for epoch in range(1, 6):
        assert cache.lookup(session.session_id, epoch) is session
    assert session.epoch == 6


def test_wrong_epoch_is_invalid_and_does_not_advance():
    cache = FetchSessionCache(rng=random.Random(3))
    session = cache.create()
    assert cache.lookup(session.session_id, 2) is ErrorCode.invalid_fetch_session_epoch
    assert cache.lookup(session.session_id, 0) is ErrorCode.invalid_fetch_session_epoch
    assert cache.lookup(session.session_id, 1) is session


def test_unknown_and_closed_sessions_are_not_found():
    cache = FetchSessionCache(rng=random.Random(4))
    session = cache.create()
    assert cache.lookup(session.session_id + 1, 1) is ErrorCode.fetch_session_id_not_found
    cache.close(session.session_id)
    assert cache.lookup(session.session_id, 1) is ErrorCode.fetch_session_id_not_found
    cache.close(session.session_id)  # closing twice is harmless
    assert len(cache) == 0


def test_epoch_wraps_from_int32_max_to_1():
    cache = FetchSessionCache(rng=random.Random(5))
    session = cache.create()
    session.epoch = 2**31 - 1
    assert cache.lookup(session.session_id, 2**31 - 1) is session
    assert session.epoch == 1


def test_cache_is_bounded_and_evicts_the_least_recently_used():
    cache = FetchSessionCache(max_sessions=3, rng=random.Random(6))
    a, b, c = cache.create(), cache.create(), cache.create()
    assert cache.lookup(a.session_id, 1) is a  # a is now the most recently used
    d = cache.create()
    assert len(cache) == 3
    assert cache.lookup(b.session_id, 1) is ErrorCode.fetch_session_id_not_found
    for session in (a, c, d):
        assert not isinstance(cache.lookup(session.session_id, session.epoch), ErrorCode)


def test_zero_slots_means_no_sessions():
    assert FetchSessionCache(max_sessions=0).create() is None


def test_session_ids_are_distinct():
    cache = FetchSessionCache(max_sessions=500, rng=random.Random(7))
    ids = {cache.create().session_id for _ in range(500)}
    assert len(ids) == 500


def test_partition_is_reported_on_first_sight_then_only_when_something_changes():
    p = cached()
    assert p.must_respond(ErrorCode.none, False, 10, 10, 0)  # first response: new values
    assert not p.must_respond(ErrorCode.none, False, 10, 10, 0)  # nothing new
    assert p.must_respond(ErrorCode.none, True, 10, 10, 0)  # records
    assert p.must_respond(ErrorCode.none, False, 11, 10, 0)  # high watermark moved
    assert p.must_respond(ErrorCode.none, False, 11, 11, 0)  # last stable offset moved
    assert p.must_respond(ErrorCode.none, False, 11, 11, 5)  # log start offset moved
    assert not p.must_respond(ErrorCode.none, False, 11, 11, 5)
    assert p.must_respond(ErrorCode.offset_out_of_range, False, 11, 11, 5)  # errors always
    assert p.must_respond(ErrorCode.offset_out_of_range, False, 11, 11, 5)
