"""Log append/read semantics with real batches over the fake filesystem."""

import pytest

from odradek.protocol.errors import ErrorCode
from odradek.protocol.records import iter_headers, iter_records
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import PARTITION_DIR, append_values, make_batch, open_log, read_all


@pytest.fixture
def fs():
    return FakeFileSystem()


def test_append_assigns_offsets_and_patches_the_batch(fs):
    log = open_log(fs)
    first = append_values(log, [b"a", b"b", b"c"], leader_epoch=7)
    second = append_values(log, [b"d"], leader_epoch=7)
    assert (first.error, first.base_offset, first.last_offset) == (ErrorCode.none, 0, 2)
    assert (second.base_offset, second.last_offset, second.log_append_time_ms) == (3, 3, -1)
    assert log.log_end_offset == 4 and log.high_watermark == 0
    data = log.read(0, 10_000, max_offset=4).region.read()
    headers = list(iter_headers(data))
    assert [(h.base_offset, h.partition_leader_epoch) for h in headers] == [(0, 7), (3, 7)]
    assert read_all(log) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
    assert log.end_offset_for_epoch(7) == (7, 4)
    assert log.epoch_for_offset(3) == 7


def test_read_from_inside_a_batch_returns_the_whole_batch(fs):
    log = open_log(fs)
    append_values(log, [b"a", b"b", b"c"])
    append_values(log, [b"d", b"e"])
    region = log.read(1, 10_000, max_offset=5).region
    headers = list(iter_headers(region.read()))
    assert headers[0].base_offset == 0 and len(headers) == 2
    region = log.read(4, 10_000, max_offset=5).region
    assert [h.base_offset for h in iter_headers(region.read())] == [3]


def test_read_respects_max_offset_high_watermark(fs):
    log = open_log(fs)
    for i in range(4):
        append_values(log, [b"v%d" % i])
    log.update_high_watermark(2)
    result = log.read(0, 10_000, max_offset=log.high_watermark)
    assert [h.base_offset for h in iter_headers(result.region.read())] == [0, 1]
    empty = log.read(2, 10_000, max_offset=2)
    assert empty.error is ErrorCode.none and empty.region.size_bytes == 0
    assert log.read(5, 100, max_offset=4).error is ErrorCode.offset_out_of_range
    assert log.read(4, 100, max_offset=4).region.size_bytes == 0  # at the log end: nothing yet


def test_max_bytes_cuts_the_last_batch_and_min_one_message_returns_a_whole_first_batch(fs):
    log = open_log(fs)
    big, _ = make_batch([bytes(500)])
    append_values(log, [bytes(500)])
    append_values(log, [bytes(500)])
    size = len(big)
    partial = log.read(0, size + 100, max_offset=2).region
    assert partial.size_bytes == size + 100  # the second batch is cut; clients drop it
    whole = log.read(0, 10, max_offset=2, min_one_message=True).region
    assert whole.size_bytes == size
    cut = log.read(0, 10, max_offset=2, min_one_message=False).region
    assert cut.size_bytes == 10


def test_roll_by_size_and_reads_across_segments(fs):
    _, header = make_batch([bytes(100)])
    config = LogConfig(segment_bytes=3 * header.size_bytes, index_interval_bytes=1)
    log = open_log(fs, config)
    for i in range(10):
        append_values(log, [b"%03d" % i + bytes(97)])
    assert [s.base_offset for s in log.segments] == [0, 3, 6, 9]
    assert all(s.size_bytes <= config.segment_bytes for s in log.segments)
    values = read_all(log)
    assert [o for o, _ in values] == list(range(10))
    # A read returns batches from one segment only.
    region = log.read(2, 1 << 20, max_offset=10).region
    assert [h.base_offset for h in iter_headers(region.read())] == [2]
    assert sorted(n for n in fs.listdir(PARTITION_DIR) if n.endswith(".snapshot")) == [
        "00000000000000000003.snapshot", "00000000000000000006.snapshot", "00000000000000000009.snapshot"]


def test_roll_by_time_since_the_first_batch(fs):
    log = open_log(fs, LogConfig(segment_ms=1000))
    append_values(log, [b"a"], now_ms=5_000)
    append_values(log, [b"b"], now_ms=5_900)
    assert len(log.segments) == 1
    append_values(log, [b"c"], now_ms=6_001)
    assert [s.base_offset for s in log.segments] == [0, 2]
    append_values(log, [b"d"], now_ms=6_500)
    assert len(log.segments) == 2


def test_segment_jitter_rolls_each_segment_earlier_by_its_own_draw(fs, monkeypatch):
    draws = iter([400, 100, 0])
    monkeypatch.setattr("odradek.storage.segment.random.randrange", lambda bound: next(draws))
    log = open_log(fs, LogConfig(segment_ms=1000, segment_jitter_ms=500))
    assert log.segments[-1].roll_jitter_ms == 400
    append_values(log, [b"a"], now_ms=5_000)
    append_values(log, [b"b"], now_ms=5_600)  # 1000 - 400: due, but nothing rolls before an append
    append_values(log, [b"c"], now_ms=5_601)
    assert [s.base_offset for s in log.segments] == [0, 2]
    assert log.segments[-1].roll_jitter_ms == 100
    append_values(log, [b"d"], now_ms=6_400)  # 1000 - 100 = 900 ms after 5_601: not yet
    assert len(log.segments) == 2
    append_values(log, [b"e"], now_ms=6_502)
    assert [s.base_offset for s in log.segments] == [0, 2, 4]


def test_segment_jitter_draws_below_segment_ms_and_below_the_jitter():
    from odradek.storage.segment import LogSegment

    fs = FakeFileSystem()
    fs.mkdir(PARTITION_DIR)
    for jitter, segment_ms in ((0, 1000), (50, 1000), (5000, 1000)):
        draws = {LogSegment(fs, PARTITION_DIR, 0, LogConfig(segment_ms=segment_ms, segment_jitter_ms=jitter)
                            ).roll_jitter_ms for _ in range(200)}
        assert all(0 <= d < max(1, min(jitter, segment_ms)) for d in draws)
        assert len(draws) > (1 if jitter else 0)


def test_roll_when_the_offset_index_is_full(fs):
    # Room for three offset-index entries but only two time-index entries: the first full rolls.
    config = LogConfig(index_interval_bytes=1, segment_index_bytes=24)
    log = open_log(fs, config)
    for _ in range(6):
        append_values(log, [bytes(10)])
    # Same timestamps: the time index gets one entry only (it indexes increases). Batch 0 gets no
    # offset-index entry (position 0 is implicit); 1, 2, 3 fill the offset index; 4 rolls.
    assert [s.base_offset for s in log.segments] == [0, 4]
    assert log.segments[0].offset_index.entries == 3 and log.segments[0].time_index.entries == 1


def test_batch_larger_than_a_segment_is_refused(fs):
    log = open_log(fs, LogConfig(segment_bytes=200))
    result = append_values(log, [bytes(300)])
    assert result.error is ErrorCode.record_list_too_large and log.log_end_offset == 0


def test_log_append_time(fs):
    log = open_log(fs, LogConfig(message_timestamp_type="LogAppendTime"))
    result = append_values(log, [b"a", b"b"], now_ms=123_456)
    assert result.log_append_time_ms == 123_456
    data = log.read(0, 10_000, max_offset=2).region.read()
    assert [r.timestamp for r in iter_records(data)] == [123_456, 123_456]
    assert log.max_timestamp_offset() == (0, 123_456)


def test_offset_for_timestamp_and_max_timestamp(fs):
    log = open_log(fs, LogConfig(index_interval_bytes=1, segment_bytes=150))
    timestamps = [[10, 20, 30], [25, 40], [50], [45, 60, 55]]
    for ts in timestamps:
        append_values(log, [b"x"] * len(ts), timestamps=ts)
    assert len(log.segments) > 1
    assert log.offset_for_timestamp(0) == (0, 10)
    assert log.offset_for_timestamp(20) == (1, 20)
    assert log.offset_for_timestamp(21) == (2, 30)
    assert log.offset_for_timestamp(31) == (4, 40)
    assert log.offset_for_timestamp(46) == (5, 50)
    assert log.offset_for_timestamp(56) == (7, 60)
    assert log.offset_for_timestamp(61) is None
    assert log.max_timestamp_offset() == (7, 60)
    assert open_log(FakeFileSystem(), dir="/data/empty-0").max_timestamp_offset() is None


def test_idempotent_producer_duplicate_gap_and_fencing_through_the_log(fs):
    log = open_log(fs)
    append_values(log, [b"a", b"b"], producer_id=9, producer_epoch=0, base_sequence=0)
    append_values(log, [b"c"])  # a non-idempotent producer in between
    retry = append_values(log, [b"a", b"b"], producer_id=9, producer_epoch=0, base_sequence=0)
    assert (retry.error, retry.base_offset, retry.last_offset) == (ErrorCode.none, 0, 1)
    assert log.log_end_offset == 3  # nothing appended for the duplicate
    gap = append_values(log, [b"d"], producer_id=9, producer_epoch=0, base_sequence=5)
    assert gap.error is ErrorCode.out_of_order_sequence_number and gap.base_offset == -1
    ok = append_values(log, [b"d"], producer_id=9, producer_epoch=0, base_sequence=2)
    assert ok.base_offset == 3
    bumped = append_values(log, [b"e"], producer_id=9, producer_epoch=1, base_sequence=0)
    assert bumped.error is ErrorCode.none
    fenced = append_values(log, [b"f"], producer_id=9, producer_epoch=0, base_sequence=3)
    assert fenced.error is ErrorCode.invalid_producer_epoch
    unknown = append_values(log, [b"g"], producer_id=10, producer_epoch=0, base_sequence=3)
    assert unknown.error is ErrorCode.none  # no state for producer 10: any first sequence (KIP-360)
    after = append_values(log, [b"h"], producer_id=10, producer_epoch=0, base_sequence=5)
    assert after.error is ErrorCode.out_of_order_sequence_number  # but then in order from there


def test_flush_messages_policy_and_flush_advances_the_recovery_point(fs):
    log = open_log(fs, LogConfig(flush_messages=3))
    assert not append_values(log, [b"a", b"b"]).needs_flush
    assert append_values(log, [b"c"]).needs_flush
    assert log.recovery_point == 0
    log.flush()
    assert log.recovery_point == 3 and log.unflushed_messages == 0
    assert not append_values(log, [b"d"]).needs_flush
    fs.crash()
    recovered = open_log(fs, clean_shutdown=False, recovery_point=3)
    assert recovered.log_end_offset == 3  # the unflushed batch was lost, the flushed ones kept


def test_truncate_to_removes_batches_and_later_segments(fs):
    _, header = make_batch([bytes(50)])
    log = open_log(fs, LogConfig(segment_bytes=2 * header.size_bytes, index_interval_bytes=1))
    for i in range(3):
        append_values(log, [bytes(50)], leader_epoch=1)
    for i in range(3):
        append_values(log, [bytes(50)], leader_epoch=2)
    append_values(log, [bytes(50), bytes(50)], leader_epoch=2)  # offsets 6-7
    log.update_high_watermark(8)
    assert len(log.segments) == 4
    log.truncate_to(7)  # inside the last batch: the whole batch goes
    assert log.log_end_offset == 6 and log.high_watermark == 6
    log.truncate_to(3)
    assert log.log_end_offset == 3
    assert [s.base_offset for s in log.segments] == [0, 2]
    assert log.leader_epoch_cache.entries == [(1, 0)]
    assert [o for o, _ in read_all(log)] == [0, 1, 2]
    assert append_values(log, [b"z"], leader_epoch=3).base_offset == 3
    assert [o for o, _ in read_all(log)] == [0, 1, 2, 3]


def test_truncation_rebuilds_producer_state(fs):
    log = open_log(fs, LogConfig(segment_bytes=300))
    for seq in range(4):
        append_values(log, [b"x" * 40], producer_id=1, producer_epoch=0, base_sequence=seq)
    assert len(log.segments) > 1
    log.truncate_to(2)
    assert log.producer_state.producers[1].last_seq == 1
    assert append_values(log, [b"x" * 40], producer_id=1, producer_epoch=0, base_sequence=2).base_offset == 2


def test_write_failure_leaves_the_log_unchanged(fs):
    log = open_log(fs)
    append_values(log, [b"a"])
    fs.fail_next_write(after_bytes=20)
    with pytest.raises(OSError):
        append_values(log, [b"b"])
    assert log.log_end_offset == 1
    assert log.active_segment.size_bytes == fs.size(log.active_segment.fd)
    assert append_values(log, [b"c"]).base_offset == 1
    assert read_all(log) == [(0, b"a"), (1, b"c")]


def test_reopen_after_clean_close_restores_everything(fs):
    config = LogConfig(segment_bytes=500, index_interval_bytes=100)
    log = open_log(fs, config)
    for i in range(30):
        append_values(log, [b"v%02d" % i], producer_id=3, producer_epoch=0, base_sequence=i, leader_epoch=i // 10,
                      timestamps=[100 + i])
    log.update_high_watermark(25)
    expected = read_all(log)
    log.flush()
    log.close()
    again = open_log(fs, config, clean_shutdown=True, recovery_point=30, high_watermark=25)
    assert (again.log_end_offset, again.high_watermark, again.recovery_point) == (30, 25, 30)
    assert read_all(again) == expected
    assert again.offset_for_timestamp(117) == (17, 117)
    assert again.max_timestamp_offset() == (29, 129)
    assert again.end_offset_for_epoch(1) == (1, 20)
    retry = append_values(again, [b"v29"], producer_id=3, producer_epoch=0, base_sequence=29)
    assert retry.base_offset == 29 and again.log_end_offset == 30
    assert append_values(again, [b"v30"], producer_id=3, producer_epoch=0, base_sequence=30).base_offset == 30


def test_clean_open_does_not_read_sealed_segments(fs):
    config = LogConfig(segment_bytes=300)
    log = open_log(fs, config)
    for i in range(20):
        append_values(log, [bytes(40)])
    log.flush()
    log.close()
    again = open_log(fs, config, clean_shutdown=True, recovery_point=20)
    assert again.log_end_offset == 20
    sealed = again.segments[:-1]
    assert len(sealed) >= 3
    assert all(s._fd is None and not s.offset_index.is_open for s in sealed)


def test_flush_in_a_worker_thread_while_the_loop_thread_appends(tmp_path):
    import threading

    from odradek.storage.fs import RealFileSystem
    from odradek.storage.log import Log

    log = Log.open(RealFileSystem(), str(tmp_path / "t-0"), LogConfig(segment_bytes=2_000), topic_id=None,
                   recovery_point=0, log_start_offset=0, high_watermark=0, clean_shutdown=True, now_ms=0)
    stop = threading.Event()
    errors = []

    def flusher():
        try:
            while not stop.is_set():
                log.flush()
        except Exception as exc:  # noqa: BLE001 - any failure in the thread fails the test
            errors.append(exc)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(300):
            append_values(log, [b"%04d" % i + bytes(40)])
            if i == 150:
                log.truncate_to(100)  # waits for a running flush
    finally:
        stop.set()
        thread.join()
    assert not errors
    log.flush()
    assert log.recovery_point == log.log_end_offset == 249
    assert [o for o, _ in read_all(log)] == list(range(249))
    log.close()
