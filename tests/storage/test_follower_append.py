"""Log.append_as_follower: a follower's log copies the leader's byte for byte (Kafka's appendAsFollower)."""

from __future__ import annotations

import os
import random

import pytest

from odradek.protocol import records
from odradek.protocol.compression import Compression
from odradek.protocol.errors import ErrorCode
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log, read_all

SMALL = LogConfig(segment_bytes=400, retention_ms=-1, retention_bytes=-1, file_delete_delay_ms=0,
                  index_interval_bytes=100)


class Producer:
    """An idempotent (optionally transactional) producer writing to the leader log."""

    def __init__(self, log: Log, producer_id: int, epoch: int = 0, *, transactional: bool = True,
                 compression: int = 0) -> None:
        self.log, self.producer_id, self.epoch, self.sequence = log, producer_id, epoch, 0
        self.transactional, self.compression = transactional, compression

    def send(self, *values: bytes, leader_epoch: int = 0, now_ms: int = 1_000):
        batch = bytearray(records.build_batch([(None, v, [], now_ms) for v in values], producer_id=self.producer_id,
                                              producer_epoch=self.epoch, base_sequence=self.sequence,
                                              transactional=self.transactional, compression=self.compression))
        header = records.validate_batch(batch, 0, len(batch))
        result = self.log.append(batch, header, leader_epoch=leader_epoch, now_ms=now_ms)
        assert result.error is ErrorCode.none, result
        self.sequence += len(values)
        return result

    def end(self, commit: bool, *, leader_epoch: int = 0, coordinator_epoch: int = 0):
        result = self.log.append_control_marker(self.producer_id, self.epoch, commit, coordinator_epoch,
                                                leader_epoch, 1_000)
        assert result.error is ErrorCode.none, result
        return result


def fetch_bytes(log: Log, fetch_offset: int, max_bytes: int = 1 << 20) -> bytes:
    """What a replica Fetch at `fetch_offset` gets: whole batches from one segment up to the LEO."""
    result = log.read(fetch_offset, max_bytes, max_offset=log.log_end_offset)
    assert result.error is ErrorCode.none, result
    return result.region.read()


def replicate(leader: Log, follower: Log, *, max_bytes: int = 1 << 20, now_ms: int = 1_000) -> int:
    """Fetch and append until the follower reaches the leader's LEO; returns the number of fetches."""
    fetches = 0
    while follower.log_end_offset < leader.log_end_offset:
        data = fetch_bytes(leader, follower.log_end_offset, max_bytes)
        result = follower.append_as_follower(data, now_ms)
        assert result.error is ErrorCode.none, result
        fetches += 1
        assert fetches < 10_000
    follower.update_high_watermark(min(leader.high_watermark, follower.log_end_offset))
    return fetches


def segment_files(fs: FakeFileSystem, log: Log) -> dict[str, bytes]:
    return {os.path.basename(s.log_path): fs.read_file(s.log_path) for s in log.segments}


def assert_same_log(leader_fs, leader: Log, follower_fs, follower: Log) -> None:
    assert follower.log_end_offset == leader.log_end_offset
    assert segment_files(follower_fs, follower) == segment_files(leader_fs, leader)
    assert follower.leader_epoch_cache.entries == leader.leader_epoch_cache.entries
    assert {pid: (e.producer_epoch, e.current_txn_first_offset, e.coordinator_epoch,
                  [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in e.batches][-1:])
            for pid, e in follower.producer_state.producers.items()} == \
        {pid: (e.producer_epoch, e.current_txn_first_offset, e.coordinator_epoch,
               [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in e.batches][-1:])
         for pid, e in leader.producer_state.producers.items()}
    end = leader.log_end_offset
    assert follower.collect_aborted_transactions(0, end) == leader.collect_aborted_transactions(0, end)


def write_mixed_history(leader: Log) -> None:
    """Plain, compressed, idempotent and transactional batches, commits and aborts, three leader epochs."""
    a = Producer(leader, 1)
    b = Producer(leader, 2, compression=Compression.ZSTD)
    c = Producer(leader, 3, transactional=False, compression=Compression.GZIP)
    append_values(leader, [b"plain-0", b"plain-1"], leader_epoch=0)
    a.send(b"a0", b"a1")
    b.send(b"b0" * 30, b"b1" * 30)
    c.send(b"c0", b"c1", b"c2")
    a.end(commit=True)
    append_values(leader, [b"plain-2"], leader_epoch=2)   # a new leader in epoch 2
    b.send(b"b2", leader_epoch=2)
    b.end(commit=False, leader_epoch=2, coordinator_epoch=1)
    a.send(b"a2", leader_epoch=2)                          # still open at the end
    c.send(b"c3", leader_epoch=5)                          # epoch 5
    append_values(leader, [b"x" * 50] * 4, leader_epoch=5, compression=Compression.SNAPPY)


def test_follower_log_is_byte_identical_with_transactions_markers_compression_and_epochs():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    write_mixed_history(leader)
    leader.update_high_watermark(leader.log_end_offset - 3)
    assert len(leader.segments) > 2, "the history should roll segments"
    replicate(leader, follower)
    assert_same_log(leader_fs, leader, follower_fs, follower)
    assert [s.base_offset for s in follower.segments] == [s.base_offset for s in leader.segments]
    assert follower.leader_epoch_cache.entries == [(0, 0), (2, 10), (5, 14)]
    # the open transaction of producer 1 holds the follower's LSO as on the leader
    assert follower.first_unstable_offset == leader.first_unstable_offset
    follower.update_high_watermark(leader.high_watermark)
    assert follower.high_watermark == leader.high_watermark
    assert follower.last_stable_offset == leader.last_stable_offset
    assert read_all(follower) == read_all(leader)


def test_fetches_cut_at_any_size_leave_a_torn_last_batch_that_is_ignored():
    leader_fs = FakeFileSystem()
    leader = open_log(leader_fs, SMALL)
    write_mixed_history(leader)
    for max_bytes in (61, 100, 173, 257):
        follower_fs = FakeFileSystem()
        follower = open_log(follower_fs, SMALL)
        offset = 0
        while offset < leader.log_end_offset:
            data = fetch_bytes(leader, offset, 1 << 20)
            data = data[:records.read_header(data, 0).size_bytes + max_bytes]  # whole first batch, then torn
            before = follower.log_end_offset
            result = follower.append_as_follower(data, 1_000)
            assert result.error is ErrorCode.none
            assert follower.log_end_offset > before  # at least the first whole batch (KIP-74)
            assert result.base_offset == before
            assert result.last_offset == follower.log_end_offset - 1
            offset = follower.log_end_offset
        assert_same_log(leader_fs, leader, follower_fs, follower)


def test_only_a_torn_batch_appends_nothing():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    append_values(leader, [b"v" * 40])
    data = fetch_bytes(leader, 0)
    for cut in (0, 10, 61, len(data) - 1):
        result = follower.append_as_follower(data[:cut], 1_000)
        assert (result.error, result.base_offset, result.last_offset) == (ErrorCode.none, -1, -1)
        assert follower.log_end_offset == 0 and follower.active_segment.size_bytes == 0


def test_a_corrupt_batch_refuses_the_whole_append_and_changes_nothing():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    append_values(leader, [b"one"])
    append_values(leader, [b"two"])
    data = bytearray(fetch_bytes(leader, 0))
    data[-2] ^= 0xFF  # a record byte of the second batch: its CRC fails
    result = follower.append_as_follower(bytes(data), 1_000)
    assert result.error is ErrorCode.corrupt_message
    assert follower.log_end_offset == 0 and follower.active_segment.size_bytes == 0
    assert follower.leader_epoch_cache.entries == []


def test_a_batch_below_the_log_end_offset_is_a_bug_and_raises():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    append_values(leader, [b"one", b"two"])
    data = fetch_bytes(leader, 0)
    assert follower.append_as_follower(data, 1_000).last_offset == 1
    with pytest.raises(ValueError):
        follower.append_as_follower(data, 1_000)
    assert follower.log_end_offset == 2


def test_a_gap_is_refused_unless_the_log_is_compacted():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    append_values(leader, [b"one"])
    append_values(leader, [b"two"])
    second = fetch_bytes(leader, 1)
    assert records.read_header(second, 0).base_offset == 1
    assert follower.append_as_follower(second, 1_000).error is ErrorCode.corrupt_message
    compacted_fs = FakeFileSystem()
    compacted = open_log(compacted_fs, LogConfig(cleanup_policy="compact"))
    assert compacted.append_as_follower(second, 1_000).error is ErrorCode.none
    assert compacted.log_end_offset == 2


def test_follower_truncates_its_diverging_tail_and_re_appends_the_leaders():
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    for i in range(5):
        append_values(leader, [b"common-%d" % i], leader_epoch=1)
    replicate(leader, follower)
    # The follower was briefly leader in epoch 2 and wrote a tail the new leader never saw.
    p = Producer(follower, 9)
    p.send(b"lost-0", leader_epoch=2)
    append_values(follower, [b"lost-1"] * 3, leader_epoch=2)
    p.end(commit=False, leader_epoch=2)
    # Meanwhile the leader (epoch 3) took over at offset 5.
    for i in range(4):
        append_values(leader, [b"new-%d" % i, b"more"], leader_epoch=3)
    epoch, end = leader.end_offset_for_epoch(2)
    assert (epoch, end) == (1, 5)
    follower.truncate_to(end)
    assert follower.log_end_offset == 5 and follower.leader_epoch_cache.entries == [(1, 0)]
    assert 9 not in follower.producer_state.producers
    replicate(leader, follower)
    assert_same_log(leader_fs, leader, follower_fs, follower)
    assert follower.collect_aborted_transactions(0, follower.log_end_offset) == []


def test_follower_rolls_segments_as_the_leader_and_indexes_them():
    config = LogConfig(segment_bytes=300, retention_ms=-1, retention_bytes=-1, index_interval_bytes=1)
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, config), open_log(follower_fs, config)
    for i in range(40):
        append_values(leader, [b"value-%03d" % i] * (1 + i % 3), leader_epoch=i // 10)
    replicate(leader, follower, max_bytes=150)
    assert len(follower.segments) > 5
    assert [s.base_offset for s in follower.segments] == [s.base_offset for s in leader.segments]
    assert_same_log(leader_fs, leader, follower_fs, follower)
    for offset in range(0, follower.log_end_offset, 7):  # the offset index finds every batch
        assert fetch_bytes(follower, offset, 100) == fetch_bytes(leader, offset, 100)


def test_needs_flush_follows_flush_messages():
    config = LogConfig(flush_messages=5)
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, config), open_log(follower_fs, config)
    append_values(leader, [b"a", b"b"])
    append_values(leader, [b"c", b"d", b"e"])
    assert follower.append_as_follower(fetch_bytes(leader, 0)[:80], 1_000).needs_flush is False
    assert follower.append_as_follower(fetch_bytes(leader, 2), 1_000).needs_flush is True
    follower.flush()
    assert follower.recovery_point == 5 and follower.unflushed_messages == 0


@pytest.mark.parametrize("seed", range(6))
def test_a_crashed_follower_recovers_a_valid_prefix_and_catches_up(seed):
    rng = random.Random(seed)
    leader_fs, follower_fs = FakeFileSystem(), FakeFileSystem()
    leader, follower = open_log(leader_fs, SMALL), open_log(follower_fs, SMALL)
    write_mixed_history(leader)
    leader.update_high_watermark(leader.log_end_offset)
    replicate(leader, follower, max_bytes=rng.choice([100, 200, 1 << 20]))
    follower.flush(up_to_offset=rng.randrange(follower.log_end_offset + 1))
    lost = follower_fs.crash(tear_last_write_at=rng.choice([None, 30]))
    print(f"seed {seed}: {lost}")
    recovered = open_log(follower_fs, SMALL, clean_shutdown=False, recovery_point=follower.recovery_point)
    assert recovered.log_end_offset <= leader.log_end_offset
    # what survived is a prefix of the leader's log
    assert read_all(recovered) == read_all(leader, max_offset=recovered.log_end_offset)
    recovered.truncate_to(recovered.log_end_offset)  # the follower core may cut nothing
    replicate(leader, recovered)
    assert_same_log(leader_fs, leader, follower_fs, recovered)
    assert recovered.high_watermark == leader.high_watermark
    assert recovered.first_unstable_offset == leader.first_unstable_offset == 13  # producer 1's open transaction
