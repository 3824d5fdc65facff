"""The log cleaner over the fake filesystem: what it keeps, and a crash at each of its steps."""

import dataclasses

import pytest

from odradek.protocol import records
from odradek.protocol.compression import Compression
from odradek.protocol.records import build_batch, iter_headers, iter_records, validate_batch
from odradek.storage.cleaner import STEPS, OffsetMap, clean_log
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import open_log

COMPACT = LogConfig(segment_bytes=600, cleanup_policy=("compact",), retention_ms=-1,
                    file_delete_delay_ms=0)
NOW_MS = 10_000_000


class Crash(Exception):
    pass


@pytest.fixture
def fs():
    return FakeFileSystem()


def append(log, entries, *, timestamp_ms=1_000, codec=Compression.NONE, headers=()):
    """Append one batch of (key, value) records."""
    batch = bytearray(build_batch([(k, v, list(headers), timestamp_ms) for k, v in entries], compression=codec))
    header = validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    result = log.append(batch, header, leader_epoch=0, now_ms=0)
    assert result.error.value == 0
    log.update_high_watermark(log.log_end_offset)
    return result


def consume(log):
    """Every record from the log start like a consumer: (offset, key, value, headers)."""
    out, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20, max_offset=log.log_end_offset).region.read()
        if not data:
            break
        for header in iter_headers(data):
            batch = data[header.position:header.position + header.size_bytes]
            checked = validate_batch(bytearray(batch), 0, len(batch))
            assert isinstance(checked, records.BatchHeader) or "disagrees" in checked.message  # compacted
            for r in iter_records(batch):
                if r.offset >= offset:
                    out.append((r.offset, r.key, r.value, r.headers))
            offset = max(offset, header.next_offset)
    return out


def latest(entries):
    """The expected view after compaction: the last value of every key, in offset order."""
    last = {}
    for offset, key, value in entries:
        last[key] = (offset, key, value)
    return sorted(last.values())


def run(log, **kwargs):
    checkpoints = []
    args = {"now_ms": NOW_MS, "first_dirty_offset": 0, "offset_map_memory_bytes": 1 << 20,
            "checkpoint": checkpoints.append, "force": True}
    args.update(kwargs)
    return clean_log(log, **args), checkpoints


def fill(log, rounds=6, keys=5, codec=Compression.NONE):
    written = []
    for r in range(rounds):
        entries = [(b"k%d" % k, b"v%d-%d" % (k, r)) for k in range(keys)]
        result = append(log, entries, codec=codec)
        written += [(result.base_offset + i, k, v) for i, (k, v) in enumerate(entries)]
    return written


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_cleaning_keeps_the_latest_value_of_every_key_with_increasing_offsets(fs, codec):
    log = open_log(fs, COMPACT)
    written = fill(log, codec=codec)
    active_base = log.active_segment.base_offset
    before = consume(log)
    result, checkpoints = run(log)
    assert result.records_removed > 0 and result.cleaned_to_offset == active_base
    assert checkpoints == [0, active_base]
    after = consume(log)
    expected = latest([e for e in written if e[0] < active_base]) + [e for e in written if e[0] >= active_base]
    kept = [(o, k, v) for o, k, v, _ in after]
    assert sorted(set(kept)) == kept
    assert {k: v for _, k, v in kept} == {k: v for _, k, v in latest(written)}
    assert [e for e in kept if e[0] < active_base] == [e for e in expected if e[0] < active_base]
    assert len(after) < len(before)
    assert log.active_segment.base_offset == active_base  # the active segment is untouched


def test_tombstones_go_after_delete_retention_ms_and_headers_survive(fs):
    log = open_log(fs, dataclasses.replace(COMPACT, delete_retention_ms=1_000))
    append(log, [(b"a", b"1"), (b"b", b"1")], headers=[("h", b"x")])
    append(log, [(b"a", None)], timestamp_ms=NOW_MS - 10)  # recent tombstone: kept
    append(log, [(b"b", None)], timestamp_ms=1_000)  # old tombstone: removed
    for i in range(6):
        append(log, [(b"c", b"%d" % i)], headers=[("h", b"y")])
    run(log)
    view = {(k, v) for _, k, v, _ in consume(log)}
    assert (b"a", None) in view and (b"a", b"1") not in view
    assert not any(k == b"b" for k, _ in view)
    assert all(h == (("h", b"y"),) for _, k, _, h in consume(log) if k == b"c")


def test_recovery_accepts_the_gaps_compaction_leaves(fs):
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, COMPACT, None)
    written = fill(log)
    log.flush()
    assert manager.clean_logs(NOW_MS, 1 << 20) > 0  # all dirty: ratio 1.0 >= 0.5
    view = consume(log)
    assert len(view) < len(written)
    assert view[0][0] > log.log_start_offset == 0  # a gap: the oldest values are gone
    fs.crash()  # unclean, no recovery-point checkpoint: recovery validates every batch
    reopened = LogManager(fs, ["/data"], now_ms=0)
    reopened.open()
    assert consume(reopened.get_log("t", 0)) == view
    reopened.close()


def test_the_offset_map_bounds_the_dirty_range_to_whole_segments(fs):
    log = open_log(fs, COMPACT)
    fill(log, rounds=8)
    seg_records = sum(h.records_count for _, h in log.segments[0].iter_batch_headers())
    result, _ = run(log, offset_map_memory_bytes=24 * (seg_records + 1))
    assert result.cleaned_to_offset == log.segments[1].base_offset
    with pytest.raises(AssertionError):
        tiny = OffsetMap(24)
        tiny.put(b"a", 1)
        tiny.put(b"b", 2)


def test_the_dirty_ratio_and_min_compaction_lag_gate_a_pass(fs):
    log = open_log(fs, dataclasses.replace(COMPACT, min_compaction_lag_ms=NOW_MS))
    fill(log)
    assert run(log, force=False)[0] is None  # every record is younger than the lag
    log.update_config(COMPACT)
    first, _ = run(log, force=False)
    assert first is not None
    # All of it is now clean: a second pass has no dirty segment.
    assert run(log, first_dirty_offset=first.cleaned_to_offset, force=False)[0] is None


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_recovers_to_the_old_or_the_new_contents(fs, step):
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, dataclasses.replace(COMPACT, segment_bytes=100_000), None)
    fill(log, rounds=6)
    append(log, [(b"k0", b"last")])
    log._roll(0)  # one inactive segment holds all the data: one swap
    log.flush()
    old = consume(log)
    expected_new = [(o, k, v) for o, k, v in latest([(o, k, v) for o, k, v, _ in old])]

    def hook(name):
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        clean_log(log, now_ms=NOW_MS, first_dirty_offset=0, offset_map_memory_bytes=1 << 20,
                  checkpoint=lambda offset: manager.checkpoint_cleaner_offset(log, offset), force=True,
                  step_hook=hook)
    fs.crash()
    reopened = LogManager(fs, ["/data"], now_ms=0)
    reopened.open()
    recovered = reopened.get_log("t", 0)
    view = consume(recovered)
    names = [p for p in fs.files if p.startswith("/data/t-0/")]
    assert not any(p.endswith((".cleaned", ".swap")) for p in names)
    if step == "cleaned_written":
        assert view == old
    else:
        assert [(o, k, v) for o, k, v, _ in view] == expected_new
    assert recovered.log_end_offset == log.log_end_offset
    # The recovered log takes appends and cleans again.
    append(recovered, [(b"k1", b"after")])
    assert consume(recovered)[-1][2] == b"after"
    reopened.close()


@pytest.mark.parametrize("crash_at_swap", [1, 2, 3])
def test_a_crash_in_a_multi_segment_pass_leaves_each_segment_old_or_new_and_every_latest_value(fs, crash_at_swap):
    manager = LogManager(fs, ["/data"], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, COMPACT, None)
    written = fill(log, rounds=24)  # ~6 inactive segments
    log.flush()
    old_segments = {s.base_offset: bytes(fs.files[s.log_path].data) for s in log.segments[:-1]}
    swaps = []

    def hook(name):
        if name == "swapped":
            swaps.append(name)
            if len(swaps) == crash_at_swap:
                raise Crash(name)

    with pytest.raises(Crash):
        clean_log(log, now_ms=NOW_MS, first_dirty_offset=0, offset_map_memory_bytes=1 << 20,
                  checkpoint=lambda offset: manager.checkpoint_cleaner_offset(log, offset), force=True,
                  step_hook=hook)
    fs.crash()
    reopened = LogManager(fs, ["/data"], now_ms=0)
    reopened.open()
    recovered = reopened.get_log("t", 0)
    changed = [base for base, data in old_segments.items()
               if bytes(fs.files[f"/data/t-0/{base:020d}.log"].data) != data]
    assert len(changed) == crash_at_swap  # the swapped ones are new, the others untouched
    view = consume(recovered)
    assert [o for o, *_ in view] == sorted({o for o, *_ in view})
    last = {}
    for _, key, value, _ in view:
        last[key] = value
    assert last == {k: v for _, k, v in latest(written)}
    reopened.close()


def test_appends_continue_while_the_cleaner_runs_in_a_thread_on_a_real_filesystem(tmp_path):
    import threading

    from odradek.storage.fs import RealFileSystem

    manager = LogManager(RealFileSystem(), [str(tmp_path)], now_ms=0)
    manager.open()
    log = manager.get_or_create_log("t", 0, COMPACT, None)
    written = fill(log, rounds=40)
    plans = manager.plan_cleaning()  # on the "loop" (this thread), as the broker does
    done = threading.Event()
    outcome = []

    def cleaner():
        try:
            outcome.append(manager.clean_logs(NOW_MS, 1 << 20, plans))
        finally:
            done.set()

    thread = threading.Thread(target=cleaner)
    thread.start()
    round_ = 0
    while not done.is_set() or round_ < 10:
        entries = [(b"k%d" % k, b"late%d-%d" % (k, round_)) for k in range(5)]
        result = append(log, entries)
        written += [(result.base_offset + i, k, v) for i, (k, v) in enumerate(entries)]
        consume(log)  # reads race with the swaps
        round_ += 1
    thread.join()
    assert outcome and outcome[0] > 0
    view = consume(log)
    assert [o for o, *_ in view] == sorted({o for o, *_ in view})
    assert {k: v for _, k, v, _ in view} == {k: v for _, k, v in latest(written)}
    assert view[-1][0] == log.log_end_offset - 1  # every late append is there
    manager.close()
    reopened = LogManager(RealFileSystem(), [str(tmp_path)], now_ms=0)
    reopened.open()
    assert consume(reopened.get_log("t", 0)) == view
    reopened.close()
