"""Shared helpers for storage tests: real batches from build_batch, logs over the fake fs."""

from __future__ import annotations

from odradek.protocol import records
from odradek.protocol.records import build_batch, iter_headers, iter_records, validate_batch
from odradek.storage.log import Log
from odradek.storage.log_config import LogConfig

PARTITION_DIR = "/data/topic-0"


def make_batch(values: list[bytes], *, timestamps: list[int] | None = None, producer_id: int = -1,
               producer_epoch: int = -1, base_sequence: int = -1, compression: int = 0):
    timestamps = timestamps or [1_000 + i for i in range(len(values))]
    batch = bytearray(build_batch([(None, v, [], t) for v, t in zip(values, timestamps)], producer_id=producer_id,
                                  producer_epoch=producer_epoch, base_sequence=base_sequence,
                                  compression=compression))
    header = validate_batch(batch, 0, len(batch))
    assert isinstance(header, records.BatchHeader)
    return batch, header


def append_values(log: Log, values: list[bytes], *, now_ms: int = 0, leader_epoch: int = 0, **kwargs):
    batch, header = make_batch(values, **kwargs)
    return log.append(batch, header, leader_epoch=leader_epoch, now_ms=now_ms)


def open_log(fs, config: LogConfig | None = None, *, clean_shutdown: bool = True, recovery_point: int = 0,
             log_start_offset: int = 0, high_watermark: int = 0, now_ms: int = 0, dir: str = PARTITION_DIR) -> Log:
    fs.mkdir("/data")
    return Log.open(fs, dir, config or LogConfig(), topic_id=None, recovery_point=recovery_point,
                    log_start_offset=log_start_offset, high_watermark=high_watermark,
                    clean_shutdown=clean_shutdown, now_ms=now_ms)


def read_all(log: Log, *, max_offset: int | None = None) -> list[tuple[int, bytes]]:
    """Every (offset, value) from log start to `max_offset` (default: LEO), fetching like a consumer."""
    max_offset = log.log_end_offset if max_offset is None else max_offset
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < max_offset:
        result = log.read(offset, 1 << 20, max_offset=max_offset)
        assert result.error.value == 0, result
        data = result.region.read()
        progressed = False
        for header in iter_headers(data):
            batch = data[header.position:header.position + header.size_bytes]
            for record in iter_records(batch):
                if record.offset >= offset:
                    out.append((record.offset, record.value))
            offset = max(offset, header.next_offset)
            progressed = True
        assert progressed, f"no progress at {offset}"
    return out
