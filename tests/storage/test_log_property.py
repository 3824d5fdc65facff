"""Property: the log behaves like a list of batches under append, truncate, read and reopen."""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odradek.protocol.records import iter_headers
from odradek.storage.log_config import LogConfig
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log, read_all

steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.binary(max_size=30), min_size=1, max_size=5)),
        st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=60)),
        st.tuples(st.just("read"), st.tuples(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=400),
                                             st.integers(min_value=0, max_value=60))),
        st.tuples(st.just("reopen"), st.none()),
    ),
    min_size=1, max_size=30,
)


@settings(max_examples=int(os.environ.get("ODRADEK_PROPERTY_EXAMPLES", "1000")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, segment_bytes=st.sampled_from([300, 600, 1 << 20]), index_interval_bytes=st.sampled_from([1, 100, 4096]))
def test_log_matches_a_model_of_batches(steps, segment_bytes, index_interval_bytes):
    fs = FakeFileSystem()
    config = LogConfig(segment_bytes=segment_bytes, index_interval_bytes=index_interval_bytes)
    log = open_log(fs, config)
    model: list[list[tuple[int, bytes]]] = []  # batches of (offset, value)

    def end() -> int:
        return model[-1][-1][0] + 1 if model else 0

    for kind, arg in steps:
        if kind == "append":
            result = append_values(log, arg)
            assert result.base_offset == end()
            model.append([(result.base_offset + i, v) for i, v in enumerate(arg)])
        elif kind == "truncate":
            log.truncate_to(arg)
            # Truncation removes every batch whose last offset is >= arg.
            model = [b for b in model if b[-1][0] < arg]
        elif kind == "read":
            fetch_offset, max_bytes, max_offset = arg
            max_offset = min(max_offset, end())
            result = log.read(fetch_offset, max_bytes, max_offset=max_offset)
            if fetch_offset > end():
                assert result.error.name == "offset_out_of_range"
                continue
            data = result.region.read()
            headers = list(iter_headers(data))
            if fetch_offset >= max_offset:
                assert data == b""
                continue
            # Starts at the batch holding fetch_offset; whole batches below max_offset only.
            holding = next(b for b in model if b[-1][0] >= fetch_offset)
            if holding[-1][0] >= max_offset:  # the batch straddles max_offset: not served yet
                assert data == b""
                continue
            assert headers, "at least one whole batch (min_one_message)"
            assert headers[0].base_offset == holding[0][0]
            assert all(h.last_offset < max_offset for h in headers)
            assert len(data) <= max(max_bytes, headers[0].size_bytes)
        else:
            log.flush()
            log.close()
            log = open_log(fs, config, clean_shutdown=True)
        assert log.log_end_offset == end()
    assert read_all(log) == [record for batch in model for record in batch]
