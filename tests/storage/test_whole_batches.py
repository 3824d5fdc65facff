"""A fetch cut by its byte limit ends at its last whole batch (segment.whole_batches)."""

from __future__ import annotations

import random

import pytest

from odradek.protocol.records import iter_headers
from odradek.storage.log_config import LogConfig
from odradek.storage.segment import whole_batches
from tests.storage.fakefs import FakeFileSystem
from tests.storage.helpers import append_values, open_log


def _log_with_batches(seed: int):
    rng = random.Random(seed)
    log = open_log(FakeFileSystem(), LogConfig(segment_bytes=1 << 20, index_interval_bytes=rng.choice([64, 512, 4096])))
    for i in range(rng.randint(5, 60)):
        append_values(log, [bytes([i % 256]) * rng.randint(1, 400) for _ in range(rng.randint(1, 5))])
    return log, rng


@pytest.mark.parametrize("seed", range(40))
def test_a_cut_read_ends_at_a_batch_boundary_and_loses_no_whole_batch(seed):
    log, rng = _log_with_batches(seed)
    for _ in range(50):
        offset = rng.randrange(log.log_end_offset)
        limit = rng.randint(1, 6000)
        min_one = rng.random() < 0.5
        result = log.read(offset, limit, max_offset=log.log_end_offset, min_one_message=min_one)
        raw = result.region.read() if result.region is not None else b""
        trimmed = whole_batches(result.region) if result.region is not None else None
        data = trimmed.read() if trimmed is not None else b""
        assert raw.startswith(data)
        headers = list(iter_headers(data))
        # Every byte kept belongs to a whole batch.
        assert sum(h.size_bytes for h in headers) == len(data)
        # Nothing whole was dropped: what was cut off is less than one batch of the raw read.
        raw_headers = list(iter_headers(raw))
        assert len(headers) == len(raw_headers), (len(headers), len(raw_headers))
        # KIP-74: with min_one_message the first batch always comes, whole.
        if min_one and offset < log.log_end_offset:
            assert headers, "the first batch must be sent"


def test_an_uncut_read_is_returned_as_is():
    log, _ = _log_with_batches(7)
    result = log.read(0, 1 << 30, max_offset=log.log_end_offset)
    assert whole_batches(result.region) is result.region
