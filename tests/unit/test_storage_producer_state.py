"""Kafka's idempotent producer rules, on ProducerStateManager directly."""

from odradek.protocol.errors import ErrorCode
from odradek.storage.producer_state import ProducerStateManager
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import make_batch

PID = 4242


def manager():
    fs = FakeFileSystem()
    fs.mkdir("/p")
    return fs, ProducerStateManager(fs, "/p")


def header(seq, n=1, epoch=0, pid=PID):
    return make_batch([b"x"] * n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)[1]


def appended(state, h, first_offset):
    assert state.check(h, log_start_offset=0).error is ErrorCode.none
    state.update(h, first_offset, first_offset + h.last_offset_delta, 0)


def test_unknown_producer_may_start_at_any_sequence_as_in_kafka():
    # KIP-360: a producer the partition has no state for (expired, or removed with the log's
    # head) is accepted at any sequence; its state starts from that batch.
    _, state = manager()
    assert state.check(header(5), log_start_offset=0).error is ErrorCode.none
    assert state.check(header(0), log_start_offset=0).error is ErrorCode.none


def test_unknown_producer_with_any_sequence_is_accepted_once_the_log_start_moved():
    _, state = manager()
    assert state.check(header(5), log_start_offset=100).error is ErrorCode.none


def test_in_sequence_gap_and_duplicate():
    _, state = manager()
    appended(state, header(0, n=3), 0)
    appended(state, header(3, n=2), 3)
    assert state.check(header(6), log_start_offset=0).error is ErrorCode.out_of_order_sequence_number
    duplicate = state.check(header(0, n=3), log_start_offset=0)
    assert duplicate.error is ErrorCode.none and duplicate.duplicate.first_offset == 0
    assert duplicate.duplicate.last_offset == 2
    assert state.check(header(5), log_start_offset=0).duplicate is None


def test_only_the_last_five_batches_are_recognised_as_duplicates():
    _, state = manager()
    for i in range(6):
        appended(state, header(i), i)
    assert state.check(header(1), log_start_offset=0).duplicate is not None
    old = state.check(header(0), log_start_offset=0)
    assert old.duplicate is None and old.error is ErrorCode.out_of_order_sequence_number


def test_fencing_by_epoch():
    _, state = manager()
    appended(state, header(0, epoch=3), 0)
    assert state.check(header(1, epoch=2), log_start_offset=0).error is ErrorCode.invalid_producer_epoch
    assert state.check(header(1, epoch=4), log_start_offset=0).error is ErrorCode.out_of_order_sequence_number
    appended(state, header(0, epoch=4), 1)
    assert state.check(header(1, epoch=3), log_start_offset=0).error is ErrorCode.invalid_producer_epoch


def test_sequence_wraps_at_int32_max():
    _, state = manager()
    appended(state, header(0), 0)
    state.producers[PID].batches.clear()
    top = 2**31 - 2
    h = header(top, n=2)  # sequences 2^31-2 .. 2^31-1
    state.update(h, 10, 11, 0)
    assert h.last_sequence == 2**31 - 1
    assert state.check(header(0), log_start_offset=0).error is ErrorCode.none
    wrapped = header(2**31 - 1, n=3)  # a batch that itself wraps: last sequence 1
    assert wrapped.last_sequence == 1


def test_snapshot_round_trip_keeps_the_last_batch_per_producer():
    fs, state = manager()
    appended(state, header(0, n=2, epoch=1), 0)
    appended(state, header(2, n=3, epoch=1), 2)
    appended(state, header(0, pid=7, epoch=0), 5)
    state.take_snapshot(6)
    assert fs.listdir("/p") == ["00000000000000000006.snapshot"]
    raw = fs.read_file("/p/00000000000000000006.snapshot")
    assert raw[:2] == b"\x00\x01" and len(raw) == 2 + 4 + 4 + 2 * 46
    again = ProducerStateManager(fs, "/p")
    assert again.load(10) == 6
    entry = again.producers[PID]
    assert entry.producer_epoch == 1 and len(entry.batches) == 1
    last = entry.batches[-1]
    assert (last.first_seq, last.last_seq, last.first_offset, last.last_offset) == (2, 4, 2, 4)
    assert again.check(header(2, n=3, epoch=1), log_start_offset=0).duplicate is not None
    assert again.check(header(5, epoch=1), log_start_offset=0).error is ErrorCode.none


def test_corrupt_snapshot_is_deleted_and_an_older_one_used():
    fs, state = manager()
    appended(state, header(0), 0)
    state.take_snapshot(1)
    appended(state, header(1), 1)
    state.take_snapshot(2)
    fd = fs.open("/p/00000000000000000002.snapshot")
    fs.pwrite(fd, b"\xff", 12)
    again = ProducerStateManager(fs, "/p")
    assert again.load(10) == 1
    assert again.snapshot_offsets() == [1]
    assert again.producers[PID].last_seq == 0


def test_a_batch_without_sequence_is_still_fenced_by_an_older_epoch():
    _, state = manager()
    appended(state, header(0, n=2, epoch=3), 0)
    stale = header(-1, epoch=2)  # base sequence -1: no sequence
    assert state.check(stale, log_start_offset=0).error is ErrorCode.invalid_producer_epoch
    assert state.check(header(-1, epoch=3), log_start_offset=0).error is ErrorCode.none
