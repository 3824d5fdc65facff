"""Property: after any crash, recovery yields a prefix of what was appended that holds all fsynced data.

Crash models (tests/storage/fakefs.py): "drop" loses every unsynced write, "tear" keeps them all
but tears the last one, "reorder-files" lets every file keep its own random prefix of its unsynced
writes (the next one perhaps torn), independently of the other files, and "reorder" does that and
also lets every directory keep its own random prefix of its unsynced entry operations (creates,
renames, unlinks).

Under every model the log must be a prefix, readable and appendable, and hold everything fsynced
(`Log.flush` fsyncs the directories naming new segments, found missing by the "reorder" model).
"""

import os

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from odradek.protocol.records import iter_headers
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log, read_all

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=4)),
        st.tuples(st.just("flush"), st.none()),
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=int(os.environ.get("ODRADEK_PROPERTY_EXAMPLES", "1000")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, tear_at=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
       segment_bytes=st.sampled_from([200, 500, 1 << 20]), use_checkpointed_recovery_point=st.booleans(),
       flip=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)),
       crash_model=st.sampled_from(["drop", "tear", "reorder-files", "reorder"]), crash_rng=st.randoms(use_true_random=False))
def test_recovery_after_crash_is_a_prefix_holding_every_fsynced_record(
        ops, tear_at, segment_bytes, use_checkpointed_recovery_point, flip, crash_model, crash_rng):
    fs = FakeFileSystem()
    fs.mkdir("/data")
    fs.fsync_dir("/")  # the data dir existed before the broker started
    config = LogConfig(segment_bytes=segment_bytes, index_interval_bytes=64)
    log = open_log(fs, config)
    written: list[tuple[int, bytes]] = []
    durable = 0
    now_ms = 0
    for kind, values in ops:
        now_ms += 10
        if kind == "append":
            result = append_values(log, values, now_ms=now_ms)
            written.extend((result.base_offset + i, v) for i, v in enumerate(values))
        else:
            log.flush()
            durable = log.recovery_point
    recovery_point = log.recovery_point if use_checkpointed_recovery_point else 0
    if crash_model.startswith("reorder"):
        lost = fs.crash(rng=crash_rng, keep_dir_entries=crash_model == "reorder-files")
    else:
        lost = fs.crash(tear_last_write_at=tear_at if crash_model == "tear" else None)
    note(f"crash ({crash_model}) lost: {lost}")
    if flip is not None:
        # Corrupt one byte of the active segment beyond the durable data: the torn region.
        active = log.segments[-1]
        f = fs.files.get(active.log_path)
        if f is not None and f.data:
            synced_len = 0
            if durable > active.base_offset:
                # Durable batches of this segment come first; flip only after them.
                for header in iter_headers(bytes(f.data)):
                    if header.base_offset < durable:
                        synced_len = header.position + header.size_bytes
            if len(f.data) > synced_len:
                f.data[synced_len + flip % (len(f.data) - synced_len)] ^= 0x5A
    recovered = open_log(fs, config, clean_shutdown=False, recovery_point=recovery_point)
    records = read_all(recovered)
    assert records == written[: len(records)], "recovered log is not a prefix of what was written"
    assert recovered.log_end_offset == len(records)
    assert len(records) >= durable, "fsynced records were lost"
    # The recovered log accepts appends and survives a clean reopen unchanged.
    append_values(recovered, [b"after"], now_ms=now_ms + 1)
    recovered.flush()
    recovered.close()
    again = open_log(fs, config, clean_shutdown=True)
    assert read_all(again) == records + [(len(records), b"after")]
