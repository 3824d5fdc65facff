"""Crash and corruption: every damaged tail recovers to a valid prefix, never served."""

import os

from odradek.protocol.errors import ErrorCode
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import PARTITION_DIR, append_values, make_batch, open_log, read_all

SEGMENT0_LOG = PARTITION_DIR + "/00000000000000000000.log"


def filled_log(fs, count=10, config=None):
    log = open_log(fs, config)
    for i in range(count):
        append_values(log, [b"value-%03d" % i])
    return log


def test_unsynced_appends_are_lost_in_a_crash_and_synced_ones_kept():
    fs = FakeFileSystem()
    log = filled_log(fs, 5)
    log.flush()
    for i in range(5, 8):
        append_values(log, [b"value-%03d" % i])
    fs.crash()
    recovered = open_log(fs, clean_shutdown=False, recovery_point=log.recovery_point)
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2, 3, 4]
    assert append_values(recovered, [b"next"]).base_offset == 5


def test_torn_last_write_is_truncated():
    fs = FakeFileSystem()
    log = filled_log(fs, 4)
    log.flush()
    append_values(log, [b"torn" * 10])
    fs.crash(tear_last_write_at=30)
    size_before = len(fs.files[SEGMENT0_LOG].data)
    recovered = open_log(fs, clean_shutdown=False)
    assert recovered.log_end_offset == 4
    assert len(fs.files[SEGMENT0_LOG].data) == size_before - 30
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2, 3]


def test_flipped_byte_truncates_from_the_corrupt_batch_on():
    fs = FakeFileSystem()
    log = filled_log(fs, 6)
    _, header = make_batch([b"value-000"])
    log.flush()
    log.close()
    # Flip a byte inside the records of batch 3 (covered by the CRC).
    f = fs.files[SEGMENT0_LOG]
    f.data[3 * header.size_bytes + 65] ^= 0xFF
    recovered = open_log(fs, clean_shutdown=False)
    assert recovered.log_end_offset == 3
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2]
    assert recovered.read(4, 1000, max_offset=10).error is ErrorCode.offset_out_of_range


def test_corrupt_length_field_does_not_allocate_or_serve_garbage():
    fs = FakeFileSystem()
    log = filled_log(fs, 3)
    log.flush()
    log.close()
    f = fs.files[SEGMENT0_LOG]
    f.data += (0).to_bytes(8, "big") + (2**31 - 1).to_bytes(4, "big") + bytes(60)
    recovered = open_log(fs, clean_shutdown=False)
    assert recovered.log_end_offset == 3
    assert len(f.data) == recovered.active_segment.size_bytes


def test_truncated_middle_segment_removes_later_segments():
    fs = FakeFileSystem()
    _, header = make_batch([b"value-000"])
    config = LogConfig(segment_bytes=3 * header.size_bytes)
    log = filled_log(fs, 9, config)
    assert [s.base_offset for s in log.segments] == [0, 3, 6]
    log.flush()
    log.close()
    middle = fs.files[PARTITION_DIR + "/00000000000000000003.log"]
    del middle.data[header.size_bytes + 10:]  # batch 4 torn
    recovered = open_log(fs, config, clean_shutdown=False, recovery_point=3)
    assert recovered.log_end_offset == 4
    assert [s.base_offset for s in recovered.segments] == [0, 3]
    assert not fs.exists(PARTITION_DIR + "/00000000000000000006.log")
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2, 3]


def test_missing_and_corrupt_indexes_are_rebuilt():
    fs = FakeFileSystem()
    config = LogConfig(index_interval_bytes=1, segment_bytes=400)
    log = filled_log(fs, 12, config)
    expected_index = bytes(fs.files[PARTITION_DIR + "/00000000000000000000.index"].data)
    log.flush()
    log.close()
    fs.unlink(PARTITION_DIR + "/00000000000000000000.index")
    fs.unlink(PARTITION_DIR + "/00000000000000000000.timeindex")
    timeindex = fs.files[os.path.join(PARTITION_DIR, next(n for n in fs.listdir(PARTITION_DIR)
                                                          if n.endswith(".timeindex")))]
    del timeindex.data[5:]  # a torn time index: not a multiple of 12
    again = open_log(fs, config, clean_shutdown=True)
    assert [o for o, _ in read_all(again)] == list(range(12))
    assert bytes(fs.files[PARTITION_DIR + "/00000000000000000000.index"].data) == expected_index
    assert again.offset_for_timestamp(1_000) == (0, 1_000)


def test_leftover_files_are_cleaned_up():
    fs = FakeFileSystem()
    log = filled_log(fs, 3)
    log.flush()
    log.close()
    for name in ["00000000000000000000.log.cleaned", "00000000000000000001.log.deleted",
                 "leader-epoch-checkpoint.tmp", "00000000000000000099.index"]:
        fd = fs.open(os.path.join(PARTITION_DIR, name), create=True)
        fs.pwrite(fd, b"junk", 0)
        fs.close(fd)
    again = open_log(fs, clean_shutdown=False)
    assert again.log_end_offset == 3
    names = fs.listdir(PARTITION_DIR)
    assert not [n for n in names if n.endswith((".cleaned", ".deleted", ".tmp")) or n.startswith("00000000000000000099")]


def test_swap_file_is_renamed_into_place():
    fs = FakeFileSystem()
    log = filled_log(fs, 3)
    log.flush()
    log.close()
    fs.rename(SEGMENT0_LOG, SEGMENT0_LOG + ".swap")
    again = open_log(fs, clean_shutdown=False)
    assert again.log_end_offset == 3 and fs.exists(SEGMENT0_LOG)


def test_producer_state_is_rebuilt_after_a_crash():
    fs = FakeFileSystem()
    log = open_log(fs)
    for seq in range(3):
        append_values(log, [b"x"], producer_id=5, producer_epoch=2, base_sequence=seq)
    log.flush()
    fs.crash()
    recovered = open_log(fs, clean_shutdown=False)
    assert recovered.producer_state.producers[5].last_seq == 2
    duplicate = append_values(recovered, [b"x"], producer_id=5, producer_epoch=2, base_sequence=2)
    assert duplicate.base_offset == 2 and recovered.log_end_offset == 3
    gap = append_values(recovered, [b"x"], producer_id=5, producer_epoch=2, base_sequence=9)
    assert gap.error is ErrorCode.out_of_order_sequence_number


def test_log_start_offset_beyond_the_recovered_end_empties_the_log():
    fs = FakeFileSystem()
    filled_log(fs, 3)
    fs.crash()  # nothing was flushed: everything lost
    recovered = open_log(fs, clean_shutdown=False, log_start_offset=2, high_watermark=3)
    assert (recovered.log_start_offset, recovered.log_end_offset, recovered.high_watermark) == (2, 2, 2)
    assert append_values(recovered, [b"a"]).base_offset == 2


def test_enospc_on_append_then_recovery():
    fs = FakeFileSystem()
    log = filled_log(fs, 2)
    fs.fail_next_write(after_bytes=25)
    try:
        append_values(log, [b"lost"])
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("ENOSPC expected")
    log.flush()
    fs.crash(tear_last_write_at=10)
    recovered = open_log(fs, clean_shutdown=False)
    assert [o for o, _ in read_all(recovered)] == [0, 1]


def test_truncation_is_durable_across_a_crash():
    fs = FakeFileSystem()
    log = filled_log(fs, 6)
    log.flush()
    log.truncate_to(3)
    fs.crash()
    recovered = open_log(fs, clean_shutdown=False)
    assert [o for o, _ in read_all(recovered)] == [0, 1, 2]


def test_roll_snapshots_lost_in_a_crash_are_replaced_by_replay():
    fs = FakeFileSystem()
    config = LogConfig(segment_bytes=200)
    log = open_log(fs, config)
    for seq in range(6):
        append_values(log, [b"x" * 30], producer_id=8, producer_epoch=1, base_sequence=seq)
    assert len(log.segments) >= 3
    log.flush()  # segment data durable; the roll snapshots were written without fsync
    fs.crash()
    snapshots = [n for n in fs.listdir(PARTITION_DIR) if n.endswith(".snapshot")]
    assert snapshots and all(len(fs.files[f"{PARTITION_DIR}/{n}"].data) == 0 for n in snapshots)
    recovered = open_log(fs, config, clean_shutdown=False, recovery_point=6)
    assert not [n for n in fs.listdir(PARTITION_DIR) if n.endswith(".snapshot")]
    assert recovered.producer_state.producers[8].last_seq == 5
    assert append_values(recovered, [b"x" * 30], producer_id=8, producer_epoch=1, base_sequence=5).base_offset == 5
